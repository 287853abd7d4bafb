// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin that counts the guest instructions executed between two markers, on all
 * vCPUs: `xchg %bx,%bx` (66 87 db) opens a window, `xchg %cx,%cx` (66 87 c9) closes it and
 * writes "insns N" to the plugin log (`-d plugin -D FILE`). Both are no-ops on any CPU, and
 * no kernel or libc code uses them. The bench executes them around each transfer when run
 * with --count-insns (tests/src/insns.rs); scripts/insn-count.sh builds this and reads the log.
 *
 * Unlike a time under TCG, which varies by a third from run to run, the count is the same to
 * about 1%: it says how much work a pipe does per byte, not how fast the emulator ran it.
 * A `rep movs` counts once per iteration, so copies count per byte (or per word).
 *
 * Debian ships QEMU with plugin support but without <qemu/qemu-plugin.h>: the declarations
 * below are the few this uses, from QEMU's plugin API version 1 (QEMU 7.2, Debian 12), whose
 * loader checks `qemu_plugin_version`.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
					  enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
					    qemu_plugin_vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define MAX_VCPUS 64

/* Each vCPU adds to its own counter, so no count is lost to a race between vCPU threads. */
static _Atomic uint64_t executed[MAX_VCPUS];
/* Written by whichever vCPU executes the opening marker, read by the one that closes. */
static _Atomic uint64_t window_start;

static uint64_t total(void)
{
	uint64_t sum = 0;

	for (int i = 0; i < MAX_VCPUS; i++)
		sum += atomic_load_explicit(&executed[i], memory_order_relaxed);
	return sum;
}

static void on_block(unsigned int vcpu, void *n_insns)
{
	atomic_fetch_add_explicit(&executed[vcpu % MAX_VCPUS], (uintptr_t)n_insns,
				  memory_order_relaxed);
}

static void on_open(unsigned int vcpu, void *unused)
{
	atomic_store_explicit(&window_start, total(), memory_order_relaxed);
}

static void on_close(unsigned int vcpu, void *unused)
{
	char line[64];

	snprintf(line, sizeof(line), "insns %llu\n",
		 (unsigned long long)(total() -
				      atomic_load_explicit(&window_start, memory_order_relaxed)));
	qemu_plugin_outs(line);
}

static const uint8_t OPEN[3] = { 0x66, 0x87, 0xdb }, CLOSE[3] = { 0x66, 0x87, 0xc9 };

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);

	/* A block left early (an exception, an interrupt) still counts whole: a few at most. */
	qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		const uint8_t *bytes = qemu_plugin_insn_data(insn);

		if (qemu_plugin_insn_size(insn) != 3)
			continue;
		if (!memcmp(bytes, OPEN, 3))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_open, QEMU_PLUGIN_CB_NO_REGS, NULL);
		else if (!memcmp(bytes, CLOSE, 3))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_close, QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
					   char **argv)
{
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	return 0;
}
