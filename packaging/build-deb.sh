#!/usr/bin/env bash
# Builds the pool-managerd Debian package, reproducibly:
#
#   packaging/build-deb.sh            # -> dist/pool-managerd_VERSION-1_ARCH.deb
#
# Needs Go and gcc (go-nvml uses cgo) and the module proxy; nfpm is a Go tool
# dependency of packaging/go.mod (`go tool nfpm`), so nothing else is
# downloaded or installed. The same commit gives the same .deb, byte for byte:
# SOURCE_DATE_EPOCH is the commit's time (every mtime in the package), the
# binaries are built with -trimpath and with the commit stamped in
# (-buildvcs=true; `pool-managerd -version` prints it).
#
# Environment: VERSION (default: from `git describe --tags` on a v* tag, else
# supervisor.Version's base + ~git<date>.<commit>), GOARCH (default: the
# host's), SOURCE_DATE_EPOCH (default: the last commit's time), DIST (default:
# dist/). Prints the package's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
export CGO_ENABLED=1
export GOARCH="${GOARCH:-$(go env GOARCH)}"
commit=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct "$commit")}"
dirty=
if [ -n "$(git status --porcelain)" ]; then
  dirty=+dirty
  echo "build-deb: warning: the work tree has uncommitted changes; the package is not that of a commit" >&2
fi

if [ -z "${VERSION:-}" ]; then
  if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=12 2>/dev/null); then
    # v1.2.0 -> 1.2.0; v1.2.0-3-gabcdef123456 -> 1.2.0+git3.abcdef123456
    VERSION=$(echo "${tag#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+git\1.\2/')
  else
    base=$(sed -nE 's/^var Version = "([0-9][0-9.]*)[^"]*"$/\1/p' supervisor/daemon.go)
    VERSION="${base:-0.0.0}~git$(TZ=UTC date -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).${commit:0:12}"
  fi
  VERSION="$VERSION$dirty"
fi
export VERSION

DIST="${DIST:-$root/dist}"
export BUILD="$DIST/build-$GOARCH"
rm -rf "$BUILD"
mkdir -p "$BUILD"

bi=github.com/pool-managerd/pool-managerd/internal/buildinfo
modified=false
[ -n "$dirty" ] && modified=true
ctime=$(TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd "$commit")
# The commit is stamped with -X too: the go command records no VCS
# information in a git worktree. -buildvcs=true on the command line wins over
# a GOFLAGS=-buildvcs=false.
ldflags="-s -w -X $bi.Version=$VERSION -X $bi.Commit=$commit -X $bi.CommitTime=$ctime -X $bi.Modified=$modified"
go build -trimpath -buildvcs=true -ldflags "$ldflags" -o "$BUILD/" ./cmd/pool-managerd ./cmd/poolctl

# The unit in configs/ is for a manual install into /usr/local/bin; the
# package installs into /usr/bin.
sed -E 's#^ExecStart=/usr/local/bin/pool-managerd #ExecStart=/usr/bin/pool-managerd #' \
  configs/pool-managerd.service >"$BUILD/pool-managerd.service"
if ! grep -q '^ExecStart=/usr/bin/pool-managerd ' "$BUILD/pool-managerd.service"; then
  echo "build-deb: configs/pool-managerd.service has no ExecStart=/usr/local/bin/pool-managerd line to point at /usr/bin" >&2
  exit 1
fi

deb="$DIST/pool-managerd_${VERSION}-1_${GOARCH}.deb"
rm -f "$deb"
# nfpm reads relative paths from packaging/.
(cd packaging && go tool nfpm package --config nfpm.yaml --packager deb --target "$deb" >&2)
echo "$deb"
