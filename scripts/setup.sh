#!/usr/bin/env bash
# Install what building and testing mini_pipe needs, and only what is missing.
#
# usage: scripts/setup.sh
#
# Debian 12 packages (build deps, clang/lld/llvm 19, QEMU, busybox), rust-src for the
# active toolchain (rustup, falling back to Debian's rustc-web + rust-web-src) and
# bindgen-cli from crates.io. Never touches the system's apt sources.
set -euo pipefail

[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n 2,8p "$0" | sed 's/^# \{0,1\}//'; exit 0; }

say() { printf 'setup: %s\n' "$*" >&2; }
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

pkgs=(build-essential flex bison bc libelf-dev libssl-dev cpio kmod rsync xz-utils
      python3 clang-19 lld-19 llvm-19 libclang-19-dev qemu-system-x86 busybox-static
      dpkg-dev ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing Debian packages: ${missing[*]}"
	$SUDO apt-get update -qq
	if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
		say "apt-get install failed; repairing with dpkg --configure -a and trying once more"
		$SUDO dpkg --configure -a
		$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
else
	say "Debian packages: all present"
fi

# Rust: the kernel needs the standard library's source to build `core` itself.
if command -v rustup >/dev/null 2>&1; then
	if rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
		say "rust-src: present ($(rustc --version))"
	elif rustup component add rust-src; then
		say "rust-src: added with rustup"
	else
		say "rustup could not fetch rust-src; falling back to Debian's rustc-web + rust-web-src"
		$SUDO apt-get install -y -qq rustc-web rust-web-src >/dev/null
	fi
elif ! command -v rustc >/dev/null 2>&1; then
	say "no Rust toolchain: installing Debian's rustc-web + rust-web-src"
	$SUDO apt-get install -y -qq rustc-web rust-web-src cargo-web >/dev/null
fi

# bindgen generates the kernel crate's C bindings; 7.3 needs >= 0.71.1.
need_bindgen=1
if command -v bindgen >/dev/null 2>&1; then
	v=$(bindgen --version | awk '{print $2}')
	if [ "$(printf '%s\n0.71.1\n' "$v" | sort -V | head -n1)" = "0.71.1" ]; then
		need_bindgen=0
		say "bindgen: $v present"
	fi
fi
if [ $need_bindgen -eq 1 ]; then
	say "installing bindgen-cli from crates.io (a few minutes)"
	cargo install --quiet --locked bindgen-cli
fi
command -v bindgen >/dev/null 2>&1 || {
	say "bindgen is not on PATH; add \$HOME/.cargo/bin to PATH"
	exit 1
}
say "done"
