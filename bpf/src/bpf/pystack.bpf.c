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

SEC("perf_event")
int ftprof_pystack(struct bpf_perf_event_data *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32, tid = (u32)id, zero = 0;
	struct py_offsets *o = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!o)
		return 1;
	struct scratch *s = bpf_map_lookup_elem(&py_scratch, &zero);
	if (!s)
		return 1;
	struct py_sample *r = &s->rec;
	r->time = bpf_ktime_get_ns();
	r->tid = tid;
	r->tgid = tgid;
	struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
	r->user_ip = regs->ip;
	r->user_sp = regs->sp;
	r->depth = 0;
	r->flags = 0;
	r->tstate = 0;

	u64 *ts = bpf_map_lookup_elem(&py_threads, &tid);
	u64 frame = 0, base = 0;
	if (!ts) {
		r->flags |= PY_NO_TSTATE;
	} else {
		r->tstate = *ts;
		if (bpf_probe_read_user(&frame, 8, (void *)(*ts + o->ts_current_frame)))
			r->flags |= PY_READ_ERROR;
		if (o->ts_base_frame != ~0ULL &&
		    bpf_probe_read_user(&base, 8, (void *)(*ts + o->ts_base_frame)))
			r->flags |= PY_READ_ERROR;
	}
	u32 len = o->frame_read_len;
	if (len > PY_FRAME_BUF)
		len = PY_FRAME_BUF;
	u32 max_depth = o->max_depth;
	u32 n = 0;
#pragma clang loop unroll(disable)
	for (u32 i = 0; i < PY_MAX_FRAMES; i++) {
		if (frame == 0 || frame == base)
			break;
		if (n >= max_depth) {
			r->flags |= PY_TRUNCATED;
			break;
		}
		if (bpf_probe_read_user(s->buf, len, (void *)frame)) {
			r->flags |= PY_READ_ERROR;
			break;
		}
		struct py_frame *f = &r->frames[n & (PY_MAX_FRAMES - 1)];
		f->executable = field64(s->buf, o->frame_executable);
		f->instr_ptr = field64(s->buf, o->frame_instr_ptr);
		f->owner = s->buf[o->frame_owner & (PY_FRAME_BUF - 1)];
		f->tlbc_index = o->frame_tlbc_index == ~0U
					? 0
					: *(s32 *)(s->buf + (o->frame_tlbc_index & (PY_FRAME_BUF - 1)));
		frame = field64(s->buf, o->frame_previous);
		n++;
	}
	if (n == PY_MAX_FRAMES && frame != 0 && frame != base)
		r->flags |= PY_TRUNCATED;
	r->depth = n;
	u64 size = sizeof(*r) - sizeof(r->frames) + (u64)(n & (2 * PY_MAX_FRAMES - 1)) * sizeof(struct py_frame);
	if (size > sizeof(*r))
		size = sizeof(*r);
	if (bpf_ringbuf_output(&py_samples, r, size, 0)) {
		u64 *lost = bpf_map_lookup_elem(&py_lost, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
	}
	return 1;
}
