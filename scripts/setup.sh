#!/usr/bin/env bash
# Installs what portlb's lab, tests and benchmarks need on Debian 12 (as root): the Debian
# packages below and the npm packages (including Node 24 LTS from the npm registry, which
# every npm script then runs on). Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<'EOT'
Usage: scripts/setup.sh [--quiet]
Installs the Debian packages portlb needs (apt-get, as root) and runs `npm ci` when
node_modules is missing or older than package-lock.json. Safe to run again.
EOT
  exit 0
fi
quiet=${1:-}
say() { [ "$quiet" = "--quiet" ] || echo "setup: $*"; }

# Debian packages: the kernel harness (kmod, iproute2; the UML kernel itself is fetched by
# scripts/uml-run.sh), the data plane tools, the BGP speaker and its protos, the router,
# what builds the netlink addon, and the container engine that builds and runs the images
# (podman with runc; catatonit for its pods; debootstrap for the local base image).
PACKAGES=(
  kmod iproute2 procps ipvsadm iptables nftables
  gobgpd golang-github-osrg-gobgp-dev bird2 frr
  make g++ python3 ca-certificates
  podman runc catatonit debootstrap jq unzip ipset iputils-ping
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them as root: apt-get install -y ${missing[*]}" >&2
    exit 3
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Daemons are started by portlb's own scripts, never by the package (no init here).
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
  [ ! -f lb-agent/native/build/Release/portlb_netlink.node ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/node -e 'if (+process.versions.node.split(".")[0] < 24) { console.error("setup: node_modules has no Node 24"); process.exit(1) }'
say "ready: $(node_modules/.bin/node --version), $(gobgpd --version 2>/dev/null | head -n1), $(bird --version 2>&1 | head -n1)"
