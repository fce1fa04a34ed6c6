/* SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0 */
/*
 * A program the verifier must refuse (a read at an unbounded offset into a map value), for the
 * test that a verifier refusal comes back as one line (bpf/tests/offcpu.rs). Never loaded
 * otherwise.
 */
#include "ftprof.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} invalid_map SEC(".maps");

SEC("tp_btf/sched_wakeup")
int ftprof_invalid(u64 *ctx)
{
	u32 zero = 0;
	u64 *v = bpf_map_lookup_elem(&invalid_map, &zero);
	if (!v)
		return 0;
	u64 off = bpf_ktime_get_ns();
	return *(u8 *)((u8 *)v + off);
}
