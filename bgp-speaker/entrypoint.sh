#!/bin/sh
# portlb bgp-speaker: gobgpd with no configuration file. Everything it does (global
# config, peers, policies, one path per VIP) is provisioned by lb-agent over gRPC, on a
# unix socket in a volume the two containers share. The API is never on a TCP port: it
# is unauthenticated. pprof is off.
set -eu

SOCKET="${PORTLB_GOBGP_SOCKET:-/run/portlb/gobgp.sock}"
LOG_LEVEL="${PORTLB_GOBGP_LOG_LEVEL:-info}"

case "$SOCKET" in
  /*) ;;
  *) echo "portlb-speaker: PORTLB_GOBGP_SOCKET must be an absolute path, got '$SOCKET'" >&2; exit 2 ;;
esac
dir=${SOCKET%/*}
if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
  echo "portlb-speaker: $dir must be a writable directory (the volume shared with lb-agent)" >&2
  exit 3
fi
# A previous instance that was killed leaves its socket file behind (the volume outlives
# container restarts), and gobgpd refuses to start on it.
rm -f "$SOCKET"
# The socket is created rw for this user's group (which lb-agent joins): the agent runs
# as root but without CAP_DAC_OVERRIDE, so a 0755 socket would refuse it.
umask 0007

# The BGP listener (if any) is not configured here: lb-agent sets it with StartBgp
# (listenPort -1 = none), from the agent's config file.
exec gobgpd \
  --api-hosts "unix://$SOCKET" \
  --pprof-disable \
  --log-plain \
  --log-level "$LOG_LEVEL" \
  "$@"
