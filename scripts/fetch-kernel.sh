#!/usr/bin/env bash
# Fetch and unpack a test kernel's source: Debian's linux-source-SERIES package.
#
# usage: scripts/fetch-kernel.sh [--series SERIES] DESTDIR
#
# Downloads one .deb with apt-get run on private state (own source list, lists and
# cache under the cache dir), so the system's apt configuration is never touched.
# The mirror is the one the machine's own apt sources use. SERIES (default: the newest in
# kernel/pin.sh) picks the pins in kernel/pins/SERIES.sh; the pinned version is
# sha256-checked; if the archive has moved on, the newest version of that series offered is
# taken and a warning says so. Each series unpacks into DESTDIR/linux-source-SERIES, side by
# side. Prints the unpacked source directory on stdout.
set -euo pipefail

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=kernel/pin.sh
. "$here/../kernel/pin.sh"
series=$KERNEL_SERIES_NEWEST
if [ "${1:-}" = --series ]; then
	[ $# -ge 2 ] || usage
	series=$2
	shift 2
fi
[ $# -eq 1 ] || usage
dest=$1
kernel_pins "$series" || exit 2

say() { printf 'fetch-kernel: %s\n' "$*" >&2; }

# The machine's Debian mirror: first non-security URI in its apt sources.
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) |
	grep -v '^[[:space:]]*#' |
	grep -oE '(https?|file)://[^ ]*debian/?' | grep -v -- '-security' | head -n1)
mirror=${mirror%/}
[ -n "$mirror" ] || { say "no Debian mirror found in /etc/apt/sources*"; exit 1; }

apt_dir="$dest/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dest"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $KERNEL_SUITE main" >"$apt_dir/sources.list"
apt_opts=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
	-o Dir::State::Status="$apt_dir/status" -o Debug::NoLocking=1)
touch "$apt_dir/status"

deb=$(ls "$dest"/"$KERNEL_PKG"_*_all.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ] || [ "$(sha256sum <"$deb" | cut -d' ' -f1)" != "$KERNEL_DEB_SHA256" ]; then
	say "querying $mirror $KERNEL_SUITE for $KERNEL_PKG"
	apt-get "${apt_opts[@]}" update -qq >&2
	pkg=$KERNEL_PKG
	if ! apt-cache "${apt_opts[@]}" show "$pkg=$KERNEL_DEB_VERSION" >/dev/null 2>&1; then
		newest=$(apt-cache "${apt_opts[@]}" policy "$pkg" | sed -n 's/^ *Candidate: //p')
		if [ -z "$newest" ] || [ "$newest" = "(none)" ]; then
			say "no $pkg in $KERNEL_SUITE"
			exit 1
		fi
		say "WARNING: $KERNEL_PKG $KERNEL_DEB_VERSION is no longer served; using the newest: $newest"
		say "WARNING: update kernel/pins/$series.sh once it builds and passes"
		KERNEL_DEB_VERSION=$newest
		KERNEL_DEB_SHA256=
	fi
	(cd "$dest" && apt-get "${apt_opts[@]}" download "$pkg${KERNEL_DEB_VERSION:+=$KERNEL_DEB_VERSION}" >&2)
	deb=$(ls -t "$dest"/"$pkg"_*_all.deb | head -n1)
	sum=$(sha256sum <"$deb" | cut -d' ' -f1)
	if [ -n "$KERNEL_DEB_SHA256" ] && [ "$sum" != "$KERNEL_DEB_SHA256" ]; then
		say "sha256 mismatch for $deb: got $sum, pinned $KERNEL_DEB_SHA256"
		rm -f "$deb"
		exit 1
	fi
fi

src="$dest/linux-source-$series"
if [ ! -f "$src/Makefile" ]; then
	say "unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$dest/unpack.XXXX")
	dpkg-deb -x "$deb" "$tmp"
	tarball=$(find "$tmp/usr/src" -name 'linux-source-*.tar.*' | head -n1)
	tar -C "$dest" -xf "$tarball"
	rm -rf "$tmp"
	[ -f "$src/Makefile" ] || { say "$(basename "$tarball") did not unpack into $src"; exit 1; }
fi
echo "$src"
