/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/* Types shared with userspace (bpf/src/pystack.rs mirrors them, #[repr(C)]). */
#pragma once

#define PY_MAX_FRAMES 128
#define PY_FRAME_BUF 256

/* Record flags. */
#define PY_TRUNCATED 1   /* the depth limit was reached with frames left */
#define PY_READ_ERROR 2  /* a frame could not be read (the walk stopped there) */
#define PY_NO_TSTATE 4   /* the sampled thread has no thread state in `py_threads` */
#define PY_WAKER 8       /* a waker's stack at a wake-up (sched_waking), not a perf sample */

/* Where the fields are, for one process (from _Py_DebugOffsets and the per-version tables). */
struct py_offsets {
	u64 ts_current_frame;
	/* PyThreadState.base_frame (3.15+), or ~0 when there is none. */
	u64 ts_base_frame;
	u32 frame_previous;
	u32 frame_executable;
	u32 frame_instr_ptr;
	u32 frame_owner;
	/* _PyInterpreterFrame.tlbc_index (3.14t), or ~0. */
	u32 frame_tlbc_index;
	/* Bytes read per frame: past the last of the fields above, at most PY_FRAME_BUF. */
	u32 frame_read_len;
	u32 max_depth;
	u32 _pad;
};

struct py_frame {
	u64 executable; /* f_executable (3.14+: low bits tagged) */
	u64 instr_ptr;
	s32 tlbc_index;
	u8 owner;
	u8 _pad[3];
};

struct py_sample {
	/* CLOCK_MONOTONIC ns, taken by the program (just before perf writes its own sample). */
	u64 time;
	u32 tid;
	u32 tgid;
	/* User registers of the sampled thread (at its last entry to the kernel if it was sampled
	 * there): with tid, the key that joins this record to the perf sample. */
	u64 user_ip;
	u64 user_sp;
	u64 tstate;
	u32 depth;
	u32 flags;
	/* PY_WAKER records: the woken thread and the address it waited on (as offcpu.bpf.c). */
	u64 wait_addr;
	u32 wakee;
	u32 _pad;
	struct py_frame frames[PY_MAX_FRAMES];
};

/* Waker stacks: at most `per_sec` records per CPU and second (0: off). */
struct py_waker_cfg {
	u64 per_sec;
};
struct py_waker_budget {
	u64 window; /* second (CLOCK_MONOTONIC / 1e9) the count is for */
	u64 used;
};
