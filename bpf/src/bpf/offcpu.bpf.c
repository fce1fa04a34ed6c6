/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/*
 * Exact off-CPU accounting for the threads of the target processes, kept in the kernel.
 *
 * sched_switch and sched_wakeup move each target thread between three states: on a CPU,
 * blocked (switched out while not runnable) and runnable (woken, or preempted, and waiting for
 * a CPU). The time spent in each is added to the thread's totals in `threads`; each blocked
 * period is also added to `waits` under (thread, kind, address): for a futex wait the
 * parked-on address (see classify_wait), for another system call its number; the time runnable
 * after the wake-up that ended such a wait (until back on a CPU) is added to the same entry and,
 * per thread, to `wake_runq_ns` (the rest of the runnable time followed preemptions). Nothing is sent
 * to userspace per switch: userspace reads the maps when it wants the totals.
 */
#include "ftprof.h"
#include "offcpu.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Target processes: tgid -> 1. Written by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u8);
} targets SEC(".maps");

/* Per-thread totals and current state: tid -> struct thread_times. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Entries allocated when used (see loader.rs: preallocating zeroed ~40 MB at load). */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, OFFCPU_MAX_THREADS);
	__type(key, u32);
	__type(value, struct thread_times);
} threads SEC(".maps");

/* Blocked time per (tid, kind, address). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Entries allocated when used (see loader.rs: preallocating zeroed ~40 MB at load). */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, OFFCPU_MAX_WAITS);
	__type(key, struct wait_key);
	__type(value, struct wait_val);
} waits SEC(".maps");

/* Events that could not be accounted (indices: OFFCPU_STAT_*). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OFFCPU_STATS);
	__type(key, u32);
	__type(value, u64);
} stats SEC(".maps");

static __always_inline void count(u32 which)
{
	u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline bool is_target(struct task_struct *t)
{
	u32 tgid = t->tgid;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

static __always_inline struct thread_times *times_of(u32 tid, u32 tgid, bool create)
{
	struct thread_times *t = bpf_map_lookup_elem(&threads, &tid);
	if (t || !create)
		return t;
	struct thread_times zero = {};
	zero.tgid = tgid;
	if (bpf_map_update_elem(&threads, &tid, &zero, BPF_NOEXIST) && bpf_map_lookup_elem(&threads, &tid) == NULL) {
		count(OFFCPU_STAT_THREADS_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&threads, &tid);
}

/* futex(2) operations that block the caller (include/uapi/linux/futex.h). */
static __always_inline bool futex_blocks(u64 op)
{
	u64 cmd = op & 127; /* without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256) */
	return cmd == 0 /* WAIT */ || cmd == 6 /* LOCK_PI */ || cmd == 9 /* WAIT_BITSET */ ||
	       cmd == 11 /* WAIT_REQUEUE_PI */ || cmd == 13 /* LOCK_PI2 */;
}

/*
 * What the thread that is switching out (the current task) blocks in, from the user registers
 * saved at its system-call entry. A futex word inside a CPython parking-lot wait entry (on the
 * waiter's own stack, just above its stack pointer) is replaced by the entry's `addr` field 8
 * bytes below it: the address the thread parked on (a PyMutex, an object's ob_mutex...), the
 * same rule as profiler::threads::parked_addr.
 */
static __always_inline void classify_wait(struct task_struct *task, struct thread_times *t)
{
	struct pt_regs *regs = bpf_task_pt_regs(task);
	long nr = regs->orig_ax;
	u64 di = regs->di;
	u64 sp = regs->sp;
	t->futex = 0;
	if (nr == 202 /* futex */ && futex_blocks(regs->si)) {
		t->wait_kind = WAIT_FUTEX;
		t->wait_addr = di;
		t->futex = di;
		if (di >= sp + 8 && di - sp < OFFCPU_PARK_WINDOW) {
			u64 addr = 0;
			if (bpf_probe_read_user(&addr, sizeof(addr), (void *)(di - 8)) == 0 && addr > 4096)
				t->wait_addr = addr;
		}
	} else if (nr < 0) {
		t->wait_kind = WAIT_NO_SYSCALL;
		t->wait_addr = 0;
	} else {
		t->wait_kind = WAIT_SYSCALL;
		t->wait_addr = nr;
	}
}

SEC("tp_btf/sched_switch")
int ftprof_switch(u64 *ctx)
{
	bool preempt = ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	u32 prev_state = ctx[3];
	u64 now = bpf_ktime_get_ns();

	if (is_target(prev)) {
		struct thread_times *t = times_of(prev->pid, prev->tgid, true);
		if (t) {
			if (t->state == STATE_ON_CPU)
				t->oncpu_ns += now - t->since;
			t->after_wake = 0;
			if (preempt || prev_state == 0) {
				/* Preempted (or yielded): the user registers saved at its entry into the
				 * kernel say where it waits for a CPU, for userspace to read its stack. */
				struct pt_regs *regs = bpf_task_pt_regs(prev);
				t->user_ip = regs->ip;
				t->user_sp = regs->sp;
				t->user_bp = regs->bp;
				t->state = STATE_RUNNABLE;
				t->runq_count += 1;
			} else {
				t->state = STATE_BLOCKED;
				t->blocked_count += 1;
				classify_wait(prev, t);
			}
			t->since = now;
		}
	}
	if (is_target(next)) {
		struct thread_times *t = times_of(next->pid, next->tgid, true);
		if (t) {
			if (t->state == STATE_RUNNABLE) {
				u64 d = now - t->since;
				t->runq_ns += d;
				if (d > t->runq_max_ns)
					t->runq_max_ns = d;
				if (t->after_wake) {
					/* Woken from a wait and waiting for a CPU since: part of that wait's cost. */
					t->wake_runq_ns += d;
					struct wait_key key = { .tid = next->pid, .kind = t->wait_kind, .addr = t->wait_addr };
					struct wait_val *w = bpf_map_lookup_elem(&waits, &key);
					if (w)
						w->runq_ns += d;
				}
			} else if (t->state == STATE_BLOCKED) {
				/* Back on a CPU with no wake-up seen: its blocked time is not known. */
				count(OFFCPU_STAT_NO_WAKEUP);
			}
			t->state = STATE_ON_CPU;
			t->after_wake = 0;
			t->since = now;
		}
	}
	return 0;
}

static __always_inline void woken(struct task_struct *p)
{
	if (!is_target(p))
		return;
	u32 tid = p->pid;
	u64 now = bpf_ktime_get_ns();
	struct thread_times *t = times_of(tid, p->tgid, false);
	if (!t) {
		/* Blocked since before the accounting started: that wait is not counted. */
		count(OFFCPU_STAT_UNSEEN_BLOCK);
		t = times_of(tid, p->tgid, true);
		if (!t)
			return;
		t->state = STATE_RUNNABLE;
		t->runq_count += 1;
		t->since = now;
		return;
	}
	if (t->state != STATE_BLOCKED)
		return; /* still on its CPU (woken before it switched out), or already runnable */
	u64 d = now - t->since;
	t->blocked_ns += d;
	struct wait_key key = { .tid = tid, .kind = t->wait_kind, .addr = t->wait_addr };
	struct wait_val *w = bpf_map_lookup_elem(&waits, &key);
	if (!w) {
		struct wait_val zero = {};
		/* NOEXIST: another CPU may have created it meanwhile; either way look it up. */
		bpf_map_update_elem(&waits, &key, &zero, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&waits, &key);
	}
	if (w) {
		w->total_ns += d;
		w->count += 1;
		if (d > w->max_ns)
			w->max_ns = d;
		w->futex = t->futex;
	} else {
		count(OFFCPU_STAT_WAITS_FULL);
	}
	t->state = STATE_RUNNABLE;
	t->after_wake = 1;
	t->runq_count += 1;
	t->since = now;
}

SEC("tp_btf/sched_wakeup")
int ftprof_wakeup(u64 *ctx)
{
	woken((struct task_struct *)ctx[0]);
	return 0;
}

/* A new thread: runnable from its first wake-up. */
SEC("tp_btf/sched_wakeup_new")
int ftprof_wakeup_new(u64 *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	if (!is_target(p))
		return 0;
	struct thread_times *t = times_of(p->pid, p->tgid, true);
	if (t) {
		t->state = STATE_RUNNABLE;
		t->runq_count += 1;
		t->since = bpf_ktime_get_ns();
	}
	return 0;
}
