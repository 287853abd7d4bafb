#!/usr/bin/env bash
# Show mini_pipe working: boot the test kernel, load the module, let cat and echo meet in it.
#
# usage: scripts/demo.sh
#
# Installs and builds whatever is missing first (scripts/setup.sh, build-kernel.sh).
set -euo pipefail

[ $# -eq 0 ] || { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
"$top/scripts/build-kernel.sh" standard >/dev/null
exec "$top/scripts/vm.sh" --timeout 300 -- demo.sh
