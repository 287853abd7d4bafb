# The test kernel's source, pinned. Sourced by scripts/fetch-kernel.sh.
KERNEL_SUITE=trixie-backports
KERNEL_SERIES=7.2
KERNEL_PKG=linux-source-7.2
KERNEL_DEB_VERSION=7.2.12-1~bpo13+1
KERNEL_DEB_SHA256=73ca6c22599ba411ab3179642d33501ca2c90174e13c3c8d86e996ea1cbf2a8f
