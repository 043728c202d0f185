#!/bin/sh
# portlb bfd: a BFD-only BIRD 2 beside gobgpd (gobgpd 3.10 has no BFD). It announces and
# learns no routes: it only answers the routers' BFD, so that a replica that dies
# silently, or whose agent stops (the dead-man switch), leaves ECMP within the BFD
# detection time instead of the BGP hold time. lb-agent owns its configuration: it writes
# it from its own peers into the volume the containers share and reloads it over the
# control socket (again after every restart of this container). Until it has, BIRD runs
# the bootstrap configuration below, with no session.
set -eu

DIR="${PORTLB_BFD_DIR:-/run/portlb}"
CONF="$DIR/bird-bfd.conf"
SOCKET="$DIR/bird-bfd.ctl"

if [ ! -d "$DIR" ] || [ ! -w "$DIR" ]; then
  echo "portlb-bfd: $DIR must be a writable directory (the volume shared with lb-agent)" >&2
  exit 3
fi
# The socket is created rw for this user's group (which lb-agent joins), as gobgpd's.
umask 0007
if [ ! -s "$CONF" ]; then
  printf '%s\n' '# portlb bootstrap: lb-agent replaces this with its peers' 'router id 0.0.0.1;' \
    'log stderr { warning, error, fatal };' 'protocol device { scan time 10; }' >"$CONF"
fi
rm -f "$SOCKET"
exec bird -f -c "$CONF" -s "$SOCKET" "$@"
