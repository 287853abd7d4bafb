# The test kernel's source, pinned. Sourced by scripts/fetch-kernel.sh.
KERNEL_SUITE=trixie-backports
KERNEL_SERIES=7.3
KERNEL_PKG=linux-source-7.3
KERNEL_DEB_VERSION=7.3.4-1~bpo13+1
KERNEL_DEB_SHA256=703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3
