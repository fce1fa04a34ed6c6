/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/*
 * The few kernel types, map macros and helper declarations ftprof's BPF programs use, written
 * here so that the build needs only clang (no bpftool, no generated vmlinux.h, no libbpf-dev).
 *
 * Kernel structs (but pt_regs, below) carry preserve_access_index: clang emits CO-RE relocations for each field
 * access and the loader (libbpf) resolves them against the running kernel's BTF, so only the
 * fields named here must exist, at whatever offset this kernel has them.
 */
#pragma once

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/*
 * x86-64 user registers saved at kernel entry (arch/x86/include/asm/ptrace.h), whole and without
 * preserve_access_index: the layout is the kernel's ABI with user space (ptrace's
 * user_regs_struct, perf's sample registers), so the fields need no CO-RE relocation, and libbpf
 * need not search the kernel's BTF for this type at every load (milliseconds). The verifier
 * still checks each access against the kernel's own `struct pt_regs`.
 */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip,
		cs, flags, sp, ss;
};

/* include/uapi/linux/bpf_perf_event.h: what a BPF_PROG_TYPE_PERF_EVENT program sees. */
struct bpf_user_pt_regs_t {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip,
		cs, flags, sp, ss;
};
struct bpf_perf_event_data {
	struct bpf_user_pt_regs_t regs;
	u64 sample_period;
	u64 addr;
};

/* Map types and flags (include/uapi/linux/bpf.h). */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };
/* bpf_ringbuf_output flags: the reader polls, it needs no wake-up per record. */
enum { BPF_RB_NO_WAKEUP = 1 };

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
/* Map flag: allocate hash map entries on update (not all at load). */
#define BPF_F_NO_PREALLOC 1
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

/* Helpers by number (enum bpf_func_id in include/uapi/linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_probe_read_user)(void *dst, u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, u64 size, u64 flags) = (void *)130;
/* Linux 5.17+: the callback is verified once, not once per iteration. */
static long (*bpf_loop)(u32 nr_loops, void *callback_fn, void *callback_ctx, u64 flags) = (void *)181;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;
static struct pt_regs *(*bpf_task_pt_regs)(struct task_struct *task) = (void *)175;
