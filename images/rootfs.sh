#!/bin/sh
# Builds a distroless-style root filesystem in /rootfs from Debian packages: the packages
# named (as name=version: pinned) and the closure of their Depends and Pre-Depends,
# unpacked with dpkg -x (no maintainer scripts), minus the package-management and init
# plumbing that no daemon of ours executes. Runs in a Debian build stage of a Dockerfile.
set -eu
out=/rootfs
pins="$*"
skip=" debconf dpkg perl-base adduser passwd init-system-helpers ucf debianutils libc-bin
  sensible-utils lsb-base sysvinit-utils libpam-runtime libpam-modules libpam-modules-bin
  libpam0g libaudit1 libaudit-common libsemanage2 libsemanage-common libselinux1 libsepol2
  libcap-ng0 libcrypt1 libdb5.3 login mount util-linux tzdata install-info "
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
todo=""
for spec in $pins; do todo="$todo ${spec%%=*}"; done
seen=" "
while [ -n "$(echo $todo)" ]; do
  set -- $todo
  p=$1
  shift
  todo="$*"
  case "$seen$skip" in *" $p "*) continue ;; esac
  seen="$seen$p "
  deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$p" | awk '/^ *(Pre)?Depends: [^<]/ {print $2}')
  todo="$todo $deps"
done
want=""
for p in $seen; do
  v=""
  for spec in $pins; do [ "${spec%%=*}" = "$p" ] && [ "$spec" != "$p" ] && v="=${spec#*=}"; done
  want="$want $p$v"
done
mkdir -p /debs "$out"
cd /debs
apt-get download -qq $want
for deb in /debs/*.deb; do dpkg -x "$deb" "$out"; done
mkdir -p "$out/etc" "$out/tmp" "$out/run"
chmod 1777 "$out/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nportlb:x:65532:65532:portlb:/nonexistent:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nportlb:x:65532:\n' >"$out/etc/group"
ldconfig -r "$out"
rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/info" "$out/usr/share/lintian" \
  "$out/usr/share/locale" "$out/etc/init.d" "$out/lib/systemd" "$out/usr/lib/systemd"
# What exactly is inside, for the record (and the image test).
for deb in /debs/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd' '; done | sort >"$out/.packages"
