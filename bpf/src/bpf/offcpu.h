/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/* Types shared with userspace (bpf/src/offcpu.rs mirrors them, #[repr(C)]). */
#pragma once

#define OFFCPU_MAX_THREADS 65536
#define OFFCPU_MAX_WAITS 262144
/* A futex word this close above the stack pointer is a parking-lot wait entry's semaphore. */
#define OFFCPU_PARK_WINDOW 65536

enum { STATE_UNKNOWN = 0, STATE_ON_CPU = 1, STATE_BLOCKED = 2, STATE_RUNNABLE = 3 };
enum { WAIT_FUTEX = 1, WAIT_SYSCALL = 2, WAIT_NO_SYSCALL = 3 };
enum {
	OFFCPU_STAT_THREADS_FULL = 0,
	OFFCPU_STAT_WAITS_FULL = 1,
	OFFCPU_STAT_NO_WAKEUP = 2,
	OFFCPU_STAT_UNSEEN_BLOCK = 3,
	OFFCPU_STATS = 4,
};

struct thread_times {
	u64 oncpu_ns;
	u64 blocked_ns;
	u64 runq_ns;
	u64 runq_max_ns;
	u64 blocked_count;
	u64 runq_count;
	/* CLOCK_MONOTONIC ns of the last change of `state`. */
	u64 since;
	/* The current (or last) wait: its key in `waits` and the futex word, if any. */
	u64 wait_addr;
	u64 futex;
	/* Of runq_ns, the periods that followed a wake-up (the rest followed a preemption). */
	u64 wake_runq_ns;
	/* User registers at the last preemption (or yield): where the thread waits for a CPU. */
	u64 user_ip;
	u64 user_sp;
	u64 user_bp;
	u32 wait_kind;
	u32 state;
	u32 tgid;
	/* The current runnable period followed a wake-up from the wait `wait_kind`/`wait_addr`. */
	u32 after_wake;
};

struct wait_key {
	u32 tid;
	u32 kind;
	u64 addr;
};

struct wait_val {
	u64 total_ns;
	u64 count;
	u64 max_ns;
	/* The futex word of the last wait (0 if not a futex wait). */
	u64 futex;
	/* Time runnable after the wake-ups that ended these waits, until back on a CPU. */
	u64 runq_ns;
};
