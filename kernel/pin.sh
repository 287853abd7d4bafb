# The kernel series mini_pipe supports, newest first, each pinned in kernel/pins/SERIES.sh
# (Debian suite, package, version, sha256). The newest is the default everywhere, and the one
# the debug kernel is built from. Sourced by the scripts; `kernel_pins SERIES` loads one.
KERNEL_SERIES_LIST="7.3 7.2"
KERNEL_SERIES_NEWEST=${KERNEL_SERIES_LIST%% *}

kernel_pins() { # kernel_pins SERIES: sets KERNEL_SUITE, KERNEL_SERIES, KERNEL_PKG, KERNEL_DEB_*
	local pins
	pins="$(dirname "${BASH_SOURCE[0]}")/pins/$1.sh"
	if [ ! -f "$pins" ]; then
		echo "unknown kernel series '$1': supported are $KERNEL_SERIES_LIST (kernel/pins/)" >&2
		return 1
	fi
	# shellcheck source=/dev/null
	. "$pins"
}
