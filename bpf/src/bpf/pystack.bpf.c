/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/*
 * The sampled thread's Python frame chain, read at the sample instant.
 *
 * Attached to the sampling perf event (PERF_EVENT_IOC_SET_BPF): it runs in the overflow handler,
 * in the context of the sampled thread, just before perf writes the sample. It walks
 * tstate->current_frame -> previous and sends, per frame, the code object address, the
 * instruction pointer and the owner (which tells the C-stack entry frames) into a ring buffer.
 * It always returns 1, so perf still writes its own sample; userspace joins the two by thread,
 * user registers and time.
 *
 * With a budget set (py_waker_cfg), the same walk also runs at sched_waking for the thread that
 * wakes a futex waiter of its own process: the release site of the lock the waiter waited on.
 */
#include "ftprof.h"
#include "pystack.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Per process: tgid -> offsets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct py_offsets);
} py_procs SEC(".maps");

/* Per thread: tid -> PyThreadState*, kept current by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Entries allocated when used (see loader.rs: preallocating zeroed ~40 MB at load). */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u64);
} py_threads SEC(".maps");

struct scratch {
	struct py_sample rec;
	u8 buf[PY_FRAME_BUF + 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} py_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} py_samples SEC(".maps");

/* Records the ring had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} py_lost SEC(".maps");

static __always_inline u64 field64(u8 *buf, u32 off)
{
	return *(u64 *)(buf + (off & (PY_FRAME_BUF - 1)));
}

/* The state of one frame walk, shared with its loop body. */
struct walk_state {
	struct scratch *s;
	struct py_offsets *o;
	u64 frame;
	u64 base;
	u32 len;
	u32 n;
};

/* One frame: read it, keep its fields, move to the previous one. 1 ends the walk. */
static long walk_frame(u64 i, struct walk_state *w)
{
	struct scratch *s = w->s;
	struct py_offsets *o = w->o;
	struct py_sample *r = &s->rec;
	if (w->frame == 0 || w->frame == w->base)
		return 1;
	if (w->n >= o->max_depth) {
		r->flags |= PY_TRUNCATED;
		return 1;
	}
	u32 len = w->len;
	if (len > PY_FRAME_BUF) /* bounds do not survive the trip through the loop's context */
		len = PY_FRAME_BUF;
	if (bpf_probe_read_user(s->buf, len, (void *)w->frame)) {
		r->flags |= PY_READ_ERROR;
		return 1;
	}
	struct py_frame *f = &r->frames[w->n & (PY_MAX_FRAMES - 1)];
	f->executable = field64(s->buf, o->frame_executable);
	f->instr_ptr = field64(s->buf, o->frame_instr_ptr);
	f->owner = s->buf[o->frame_owner & (PY_FRAME_BUF - 1)];
	f->tlbc_index = o->frame_tlbc_index == ~0U
				? 0
				: *(s32 *)(s->buf + (o->frame_tlbc_index & (PY_FRAME_BUF - 1)));
	w->frame = field64(s->buf, o->frame_previous);
	w->n++;
	return 0;
}

/* Walk `tstate`'s frame chain into r->frames; sets r->depth and the flags. The loop is a
 * bpf_loop (verified once, not once per frame: loading takes milliseconds, not ~100 ms). */
static __always_inline void walk(struct scratch *s, struct py_offsets *o, u64 *ts)
{
	struct py_sample *r = &s->rec;
	struct walk_state w = { .s = s, .o = o };
	if (!ts) {
		r->flags |= PY_NO_TSTATE;
	} else {
		r->tstate = *ts;
		if (bpf_probe_read_user(&w.frame, 8, (void *)(*ts + o->ts_current_frame)))
			r->flags |= PY_READ_ERROR;
		if (o->ts_base_frame != ~0ULL &&
		    bpf_probe_read_user(&w.base, 8, (void *)(*ts + o->ts_base_frame)))
			r->flags |= PY_READ_ERROR;
	}
	w.len = o->frame_read_len;
	if (w.len > PY_FRAME_BUF)
		w.len = PY_FRAME_BUF;
	bpf_loop(PY_MAX_FRAMES, walk_frame, &w, 0);
	if (w.n == PY_MAX_FRAMES && w.frame != 0 && w.frame != w.base)
		r->flags |= PY_TRUNCATED;
	r->depth = w.n;
}

/* Start a record for the current task; NULL when its process is not walked. */
static __always_inline struct scratch *begin(struct py_offsets **o, u32 *tid)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, zero = 0;
	*tid = (u32)id;
	*o = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!*o)
		return NULL;
	struct scratch *s = bpf_map_lookup_elem(&py_scratch, &zero);
	if (!s)
		return NULL;
	struct py_sample *r = &s->rec;
	r->time = bpf_ktime_get_ns();
	r->tid = *tid;
	r->tgid = tgid;
	struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
	r->user_ip = regs->ip;
	r->user_sp = regs->sp;
	r->depth = 0;
	r->flags = 0;
	r->tstate = 0;
	r->wait_addr = 0;
	r->wakee = 0;
	return s;
}

static __always_inline void send(struct py_sample *r)
{
	u32 zero = 0;
	u64 n = r->depth;
	if (n > PY_MAX_FRAMES)
		n = PY_MAX_FRAMES;
	u64 size = sizeof(*r) - sizeof(r->frames) + n * sizeof(struct py_frame);
	if (size > sizeof(*r))
		size = sizeof(*r);
	if (bpf_ringbuf_output(&py_samples, r, size, BPF_RB_NO_WAKEUP)) {
		u64 *lost = bpf_map_lookup_elem(&py_lost, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
	}
}

SEC("perf_event")
int ftprof_pystack(struct bpf_perf_event_data *ctx)
{
	struct py_offsets *o;
	u32 tid;
	struct scratch *s = begin(&o, &tid);
	if (!s)
		return 1;
	walk(s, o, bpf_map_lookup_elem(&py_threads, &tid));
	send(&s->rec);
	return 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct py_waker_cfg);
} py_waker_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct py_waker_budget);
} py_waker_budget SEC(".maps");

/* Wake-ups of a futex waiter not recorded because the budget was spent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} py_waker_skipped SEC(".maps");

/*
 * Who woke a thread blocked in a futex wait: sched_waking runs in the waker's context (the
 * thread releasing the lock), so its Python stack is the release site. Only wake-ups between
 * threads of one walked process, within the per-CPU budget.
 */
SEC("tp_btf/sched_waking")
int ftprof_waker(u64 *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	u32 zero = 0;
	struct py_waker_cfg *cfg = bpf_map_lookup_elem(&py_waker_cfg, &zero);
	if (!cfg || cfg->per_sec == 0)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	if (p->tgid != (u32)(id >> 32) || p->pid == (u32)id)
		return 0;
	struct pt_regs *wregs = bpf_task_pt_regs(p);
	if ((long)wregs->orig_ax != 202 /* futex */)
		return 0;
	u64 futex = wregs->di, sp = wregs->sp;
	struct py_offsets *o;
	u32 tid;
	struct scratch *s = begin(&o, &tid);
	if (!s)
		return 0;
	struct py_waker_budget *b = bpf_map_lookup_elem(&py_waker_budget, &zero);
	if (!b)
		return 0;
	u64 second = s->rec.time / 1000000000ULL;
	if (b->window != second) {
		b->window = second;
		b->used = 0;
	}
	if (b->used >= cfg->per_sec) {
		u64 *skipped = bpf_map_lookup_elem(&py_waker_skipped, &zero);
		if (skipped)
			__sync_fetch_and_add(skipped, 1);
		return 0;
	}
	b->used += 1;
	/* The parked-on address, as offcpu.bpf.c (the waker shares the waiter's memory). */
	u64 addr = futex;
	if (futex >= sp + 8 && futex - sp < 65536) {
		u64 a = 0;
		if (bpf_probe_read_user(&a, sizeof(a), (void *)(futex - 8)) == 0 && a > 4096)
			addr = a;
	}
	s->rec.flags = PY_WAKER;
	s->rec.wakee = p->pid;
	s->rec.wait_addr = addr;
	walk(s, o, bpf_map_lookup_elem(&py_threads, &tid));
	send(&s->rec);
	return 0;
}
