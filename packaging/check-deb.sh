#!/usr/bin/env bash
# CI check of the Debian package (.ci/run calls it): build it twice and
# compare (reproducible), show its contents and control data, then install
# it, run the installed binaries, remove and purge it, and check that nothing
# is left behind. Skips what the machine cannot do: everything without
# dpkg-deb, the install without root or when pool-managerd is already
# installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "skip: dpkg-deb not found (not a Debian-family machine)"
  exit 0
fi

deb=$(packaging/build-deb.sh)
first=$(sha256sum "$deb" | cut -d' ' -f1)
deb2=$(packaging/build-deb.sh)
second=$(sha256sum "$deb2" | cut -d' ' -f1)
echo "$first  $deb"
if [ "$deb" != "$deb2" ] || [ "$first" != "$second" ]; then
  echo "not reproducible: $deb $first, then $deb2 $second"; exit 1
fi

dpkg-deb -I "$deb"
listing=$(dpkg-deb -c "$deb")
echo "$listing"
for f in ./usr/bin/pool-managerd ./usr/bin/poolctl ./usr/lib/systemd/system/pool-managerd.service \
  ./usr/lib/sysusers.d/pool-managerd.conf ./etc/pool-managerd/config.yaml; do
  grep -q " $f\$" <<<"$listing" || { echo "package lacks $f"; exit 1; }
done
rm -rf "$(dirname "$deb")/control"
dpkg-deb -e "$deb" "$(dirname "$deb")/control"
grep -qx /etc/pool-managerd/config.yaml "$(dirname "$deb")/control/conffiles" || { echo "config.yaml is not a conffile"; exit 1; }

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "skip: installing needs root and dpkg"; exit 0
fi
if dpkg-query -W -f='${Status}' pool-managerd 2>/dev/null | grep -q installed; then
  echo "skip: pool-managerd is installed on this machine already; not touching it"; exit 0
fi
had_user=false
getent passwd pool-managerd >/dev/null && had_user=true

set -x
dpkg -i "$deb"
/usr/bin/pool-managerd -version
/usr/bin/poolctl --version
/usr/bin/pool-managerd -check-config /etc/pool-managerd/config.yaml
getent passwd pool-managerd
set +x
# Every docs/ file the installed README links to is installed beside it.
doc=/usr/share/doc/pool-managerd
for f in $(grep -o 'docs/[a-z]*\.md' "$doc/README.md" | sort -u); do
  [ "$f" = docs/soak.md ] && continue # the soak tool is not in the package
  [ -f "$doc/$f" ] || { echo "installed README links to $f, which the package lacks"; dpkg --purge pool-managerd; exit 1; }
done
set -x
dpkg -r pool-managerd
dpkg --purge pool-managerd
set +x

left=
for p in /usr/bin/pool-managerd /usr/bin/poolctl /usr/lib/systemd/system/pool-managerd.service \
  /usr/lib/sysusers.d/pool-managerd.conf /etc/pool-managerd /var/lib/pool-managerd /usr/share/doc/pool-managerd; do
  [ -e "$p" ] && left="$left $p"
done
if dpkg-query -W pool-managerd >/dev/null 2>&1; then left="$left (dpkg still knows the package)"; fi
# Debian keeps system users after a purge; the one this check created goes.
if ! $had_user && getent passwd pool-managerd >/dev/null; then
  userdel pool-managerd
  getent group pool-managerd >/dev/null && groupdel pool-managerd
fi
if [ -n "$left" ]; then echo "left behind:$left"; exit 1; fi
echo "installed, ran, removed and purged: nothing left behind"
