# SPDX-License-Identifier: GPL-2.0
#
# mini_pipe: `make help` lists the targets.
#
# As a plain out-of-tree module: `make KDIR=/path/to/rust-enabled/kernel/build`. KDIR defaults to
# the running kernel's build directory. For a kernel built with clang, LLVM defaults to -19 when
# clang-19 is installed (Debian's naming), else to 1; pass LLVM=... to override.
#
# The project targets (kernel, demo, check, ...) use the test kernel that
# scripts/build-kernel.sh builds and caches.

KDIR ?= /lib/modules/$(shell uname -r)/build
ifeq ($(LLVM),)
LLVM := $(if $(shell grep -s '^CONFIG_CC_IS_CLANG=y' $(KDIR)/.config),$(if $(shell command -v clang-19),-19,1))
endif
kbuild = $(MAKE) -C $(KDIR) M=$(top) $(if $(LLVM),LLVM=$(LLVM))

top := $(CURDIR)
# rustfmt follows the crate root's `mod` items to the other files.
rustfmt = rustfmt --edition 2021 --color never --config-path $(top)/kernel/rustfmt.toml mini_pipe.rs

.PHONY: modules clean fmt fmtcheck clippy rust-analyzer kernel demo check mutants logs insns help

## modules: build mini_pipe.ko against KDIR (the default target)
modules:
	$(kbuild) modules

## clean: remove the module's build output
clean:
	$(kbuild) clean
	rm -rf tests/target

## fmt: format the module's Rust code with the kernel's rustfmt settings
fmt:
	$(rustfmt)
	cd tests && cargo fmt

## fmtcheck: fail if `make fmt` would change anything
fmtcheck:
	$(rustfmt) --check
	cd tests && cargo fmt --check -- --color never

## clippy: build the module with clippy against KDIR; any warning fails
clippy:
	$(kbuild) CLIPPY=1 KRUSTFLAGS=-Dwarnings modules

## rust-analyzer: write rust-project.json for editors (against KDIR)
rust-analyzer:
	$(kbuild) rust-analyzer

## kernel: build (or find in the cache) the standard test kernel; prints its directory
kernel:
	@scripts/build-kernel.sh standard

## demo: boot the test kernel, load mini_pipe, and show cat and echo meeting in it
demo:
	@scripts/demo.sh

## check: the whole test suite: formatting, warnings, clippy, and the tests in the VM, on every kernel series (SERIES=7.2: that one)
check:
	@scripts/check.sh

## mutants: mutation check: one-line bugs, one at a time, each must fail a test; writes logs/mutants.md (minutes)
mutants:
	@scripts/mutants.sh

## logs: regenerate logs/ from real runs of demo and check, stamped with the commit
logs:
	@scripts/logs.sh

## bench: benchmark mini_pipe against a FIFO in the VM; writes logs/bench/ (minutes; SERIES=7.2: logs/bench/7.2/)
bench:
	@scripts/bench.sh

## insns: count the instructions each pipe executes per KiB in the bench's transfers, 1 vCPU; writes logs/bench/insns-1cpu.md (minutes; SERIES=7.2, SMP=2)
insns:
	@scripts/insn-count.sh $(if $(SERIES),--series $(SERIES)) $(if $(SMP),--smp $(SMP))

## help: list the targets
help:
	@sed -n 's/^## //p' Makefile | sed 's/: /\t/' | expand -t 16
