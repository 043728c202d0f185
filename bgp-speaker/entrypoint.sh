#!/bin/sh
# portlb bgp-speaker: gobgpd with no configuration file. Everything it does (global
# config, peers, one path per VIP) is provisioned by lb-agent over gRPC, on a unix socket
# in a volume the two containers share. The API is never on a TCP port: it is
# unauthenticated. pprof is off.
set -eu

SOCKET="${PORTLB_GOBGP_SOCKET:-/run/portlb/gobgp.sock}"
LOG_LEVEL="${PORTLB_GOBGP_LOG_LEVEL:-info}"

case "$SOCKET" in
  /*) ;;
  *) echo "portlb-speaker: PORTLB_GOBGP_SOCKET must be an absolute path, got '$SOCKET'" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$SOCKET")"
# A previous instance that was killed leaves its socket file behind.
rm -f "$SOCKET"

# The BGP listener (if any) is not configured here: lb-agent sets it with StartBgp
# (listenPort -1 = none), from the agent's config file.
exec gobgpd \
  --api-hosts "unix://$SOCKET" \
  --pprof-disable \
  --log-plain \
  --log-level "$LOG_LEVEL" \
  "$@"
