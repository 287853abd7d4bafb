#!/usr/bin/env bash
# Fetch and unpack the test kernel's source: Debian's linux-source-7.x package.
#
# usage: scripts/fetch-kernel.sh DESTDIR
#
# Downloads one .deb with apt-get run on private state (own source list, lists and
# cache under the cache dir), so the system's apt configuration is never touched.
# The mirror is the one the machine's own apt sources use. The pinned version is
# sha256-checked; if the archive has moved on, the newest 7.x offered is taken and
# a warning says so. Prints the unpacked source directory on stdout.
set -euo pipefail

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
[ $# -eq 1 ] || usage
dest=$1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=kernel/pin.sh
. "$here/../kernel/pin.sh"

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

deb=$(ls "$dest"/linux-source-"$KERNEL_SERIES"*_all.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ] || [ "$(sha256sum <"$deb" | cut -d' ' -f1)" != "$KERNEL_DEB_SHA256" ]; then
	say "querying $mirror $KERNEL_SUITE for $KERNEL_PKG"
	apt-get "${apt_opts[@]}" update -qq >&2
	pkg=$KERNEL_PKG
	if ! apt-cache "${apt_opts[@]}" show "$pkg=$KERNEL_DEB_VERSION" >/dev/null 2>&1; then
		newest=$(apt-cache "${apt_opts[@]}" pkgnames linux-source-7. | sort -V | tail -n1)
		[ -n "$newest" ] || { say "no linux-source-7.x in $KERNEL_SUITE"; exit 1; }
		say "WARNING: $KERNEL_PKG $KERNEL_DEB_VERSION is no longer served; using the newest: $newest"
		say "WARNING: update kernel/pin.sh once it builds and passes"
		pkg=$newest
		KERNEL_DEB_VERSION=
	fi
	(cd "$dest" && apt-get "${apt_opts[@]}" download "$pkg${KERNEL_DEB_VERSION:+=$KERNEL_DEB_VERSION}" >&2)
	deb=$(ls -t "$dest"/"$pkg"_*_all.deb | head -n1)
	sum=$(sha256sum <"$deb" | cut -d' ' -f1)
	if [ -n "$KERNEL_DEB_VERSION" ] && [ "$sum" != "$KERNEL_DEB_SHA256" ]; then
		say "sha256 mismatch for $deb: got $sum, pinned $KERNEL_DEB_SHA256"
		rm -f "$deb"
		exit 1
	fi
fi

src=$(find "$dest" -maxdepth 1 -type d -name 'linux-source-7.*' | head -n1)
if [ -z "$src" ] || [ ! -f "$src/Makefile" ]; then
	say "unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$dest/unpack.XXXX")
	dpkg-deb -x "$deb" "$tmp"
	tarball=$(find "$tmp/usr/src" -name 'linux-source-*.tar.*' | head -n1)
	tar -C "$dest" -xf "$tarball"
	rm -rf "$tmp"
	src=$(find "$dest" -maxdepth 1 -type d -name 'linux-source-7.*' | head -n1)
fi
echo "$src"
