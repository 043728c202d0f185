#!/usr/bin/env bash
# Kernel harness: runs one command inside a User-Mode Linux kernel (Debian's
# user-mode-linux package), which has the modules the host kernel lacks (ip_vs,
# ip_vs_mh, ipip, dummy, veth, nf_tables, legacy iptables NAT).
#
# The guest boots with the host's root through hostfs, so node, the repository and every
# installed program are visible inside. Everything the guest writes to (/run, /tmp, /var,
# /dev, ...) is a tmpfs of its own: it leaves nothing on the host except what the
# command deliberately writes to the host's directories (e.g. benchmark results).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/uml-run.sh [options] -- COMMAND [ARGS...]

Boots a User-Mode Linux kernel with the host root (read-write through hostfs, every
written directory on tmpfs), loads the IPVS/IPIP/dummy/veth/netfilter modules, runs
COMMAND in the current directory with the current environment, and exits with its exit
code. The kernel package is fetched and unpacked into the cache on first use.

Options:
  --timeout SECONDS  kill the guest after this long (default 900); exit code 124
  --mem SIZE         guest memory (default 1536M)
  --modules LIST     extra modules to load, space separated
  --no-ipvs          do not load the ip_vs modules at boot (the kernel loads them on
                     demand, as on a node that does not load them at boot)
  --cache DIR        cache directory (default $PORTLB_CACHE or ~/.cache/portlb)
  -h, --help         this help

Environment:
  PORTLB_UML_KERNEL   use this linux.uml instead of the cached package
  PORTLB_UML_MODULES  with PORTLB_UML_KERNEL: its modules directory (lib/modules/<version>)
EOF
}

timeout_s=900
mem=1536M
extra_modules=""
no_ipvs=0
cache="${PORTLB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portlb}"
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s="$2"; shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --modules) extra_modules="$2"; shift 2 ;;
    --no-ipvs) no_ipvs=1; shift ;;
    --cache) cache="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "uml-run: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "uml-run: no command given (see --help)" >&2; exit 2; }
case "$timeout_s" in ''|*[!0-9]*) echo "uml-run: --timeout must be a whole number of seconds, got '$timeout_s'" >&2; exit 2 ;; esac

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "uml-run: '$1' is missing; install the Debian package '$2' (apt-get install $2)" >&2
    exit 3
  }
}
need modprobe kmod
need ip iproute2

# --- the kernel: cached unpack of Debian's user-mode-linux package ---------------------
fetch_kernel() {
  local dir="$cache/uml" tmp deb
  mkdir -p "$dir"
  if [ -x "$dir/current/usr/bin/linux.uml" ]; then return 0; fi
  need apt-get apt
  need dpkg-deb dpkg
  tmp=$(mktemp -d "$dir/fetch.XXXXXX")
  echo "uml-run: fetching Debian's user-mode-linux package into $dir (once)" >&2
  if ! (cd "$tmp" && apt-get download user-mode-linux >/dev/null 2>&1); then
    apt-get update >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download user-mode-linux >/dev/null) || {
      echo "uml-run: cannot download user-mode-linux (apt-get download failed); check the Debian mirror" >&2
      rm -rf "$tmp"; exit 3
    }
  fi
  deb=$(ls "$tmp"/user-mode-linux_*.deb)
  local version
  version=$(basename "$deb" .deb)
  mkdir -p "$dir/$version"
  dpkg-deb -x "$deb" "$dir/$version"
  rm -rf "$tmp"
  ln -sfn "$version" "$dir/current"
}

if [ -n "${PORTLB_UML_KERNEL:-}" ]; then
  kernel="$PORTLB_UML_KERNEL"
  moddir="${PORTLB_UML_MODULES:?PORTLB_UML_MODULES must name the modules directory of PORTLB_UML_KERNEL}"
else
  fetch_kernel
  kernel="$cache/uml/current/usr/bin/linux.uml"
  moddir=$(ls -d "$cache"/uml/current/usr/lib/uml/modules/*/ | head -n 1)
  moddir="${moddir%/}"
fi
[ -x "$kernel" ] || { echo "uml-run: no kernel at $kernel" >&2; exit 3; }
kver=$(basename "$moddir")

# --- one run directory per boot (outside /tmp: the guest hides /tmp under a tmpfs) ----
mkdir -p "$cache/runs"
run=$(mktemp -d "$cache/runs/run.XXXXXX")
cleanup() {
  local rc=$?
  rm -rf "$run"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$run/modroot/lib/modules" "$run/bin" "$run/uml"
ln -s "$moddir" "$run/modroot/lib/modules/$kver"
# modprobe inside the guest (and the kernel's own auto-loading) reads the package's modules.
cat >"$run/bin/modprobe" <<EOF
#!/bin/sh
exec /sbin/modprobe -d "$run/modroot" "\$@"
EOF
chmod +x "$run/bin/modprobe"

printf '%q ' "$@" >"$run/cmd"
# The caller's environment, minus what describes the host shell itself.
export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_|TERM|TMPDIR)=' >"$run/env" || true
# The guest's console is a terminal even when ours is not: keep its output plain then.
if [ ! -t 1 ] && [ -z "${FORCE_COLOR:-}" ]; then echo 'export NO_COLOR=1' >>"$run/env"; fi
start_marker="@@portlb-uml-start-$$@@"
end_marker="@@portlb-uml-end-$$@@"

ipvs_modules="ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh ip_vs_dh ip_vs_sed ip_vs_nq
  ip_vs_fo ip_vs_ovf ip_vs_lblc ip_vs_lblcr ip_vs_twos xt_ipvs"
[ "$no_ipvs" = 1 ] && ipvs_modules=""
modules="$ipvs_modules ipip ip6_tunnel dummy veth bridge nf_conntrack
  ip_tables iptable_nat iptable_filter ip6_tables ip6table_nat xt_MASQUERADE xt_conntrack
  xt_comment xt_mark xt_statistic nf_tables nft_masq nft_nat sch_netem $extra_modules"

cat >"$run/init" <<EOF
#!/bin/bash
export PATH=$run/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel may have mounted devtmpfs already; a tmpfs over it would hide every device
# node (containers bind-mount /dev/null, /dev/random, ...).
grep -q '^devtmpfs /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev || mount -t tmpfs -o mode=755 tmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# Paths the guest must keep seeing (the working directory and this run's files) survive the
# tmpfs mounts below when they live under one of them (a clone in /tmp, say).
mkdir -p /run/keep
i=0
for p in "$PWD" "$run"; do
  for d in /tmp /var; do
    case "\$p/" in "\$d"/*)
      i=\$((i + 1)); mkdir -p /run/keep/\$i; mount --bind "\$p" /run/keep/\$i
      echo "\$p" >/run/keep/\$i.path ;;
    esac
  done
done
for d in /tmp /var/tmp /var/log /var/lib /var/cache /etc/bird /etc/frr; do
  [ -d "\$d" ] && mount -t tmpfs tmpfs "\$d"
done
for f in /run/keep/*.path; do
  [ -e "\$f" ] || continue
  p=\$(cat "\$f"); mkdir -p "\$p"; mount --bind "\${f%.path}" "\$p"
done
mkdir -p /run/lock /var/lib/misc
echo $run/bin/modprobe >/proc/sys/kernel/modprobe
for m in $(echo $modules); do modprobe "\$m" 2>/dev/null || echo "uml-run: module \$m did not load" >&2; done
ip link set lo up
hostname portlb-uml
set -a
. $run/env
set +a
export PATH="$run/bin:\$PATH" PORTLB_IN_UML=1 TMPDIR=/tmp
cd "$PWD"
echo "$start_marker"
bash -c "\$(cat $run/cmd)" </dev/null 2>&1
echo \$? >$run/rc
echo "$end_marker"
sync
echo o >/proc/sysrq-trigger
sleep 30
EOF
chmod +x "$run/init"

# The guest console is this process's stdout; pass through only what the command printed,
# line by line (mawk buffers its input from a pipe unless told otherwise).
filter=(awk)
if awk -W version 2>&1 | grep -q mawk; then filter=(awk -W interactive); fi
# UML maps the guest's pages into its host processes, a mapping each: a guest using
# gigabytes (the agent benchmark at 50,000 Services) passes the host's default
# vm.max_map_count (65,530) and dies ("UML ran out of memory on the host side").
if [ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt 1048576 ]; then
  sysctl -qw vm.max_map_count=1048576 2>/dev/null ||
    echo "uml-run: could not raise vm.max_map_count (a large guest may run out of host mappings)" >&2
fi
set +e
timeout --kill-after=10 "$timeout_s" "$kernel" mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw \
  init="$run/init" con=null con0=null,fd:1 quiet loglevel=3 uml_dir="$run/uml" </dev/null 2>"$run/stderr" |
  "${filter[@]}" -v s="$start_marker" -v e="$end_marker" '
    { sub(/\r$/, "") }
    $0 == s { on = 1; next }
    $0 == e { on = 0; next }
    on { print; fflush() }'
uml_status=${PIPESTATUS[0]}
set -e
if [ ! -f "$run/rc" ]; then
  if [ "$uml_status" = 124 ]; then
    echo "uml-run: the guest did not finish within ${timeout_s}s (--timeout)" >&2
    exit 124
  fi
  echo "uml-run: the guest stopped before the command finished (linux.uml exit $uml_status); its stderr:" >&2
  tail -n 20 "$run/stderr" >&2
  exit 125
fi
exit "$(cat "$run/rc")"
