//! ftprof's measurements taken in the kernel, with BPF.
//!
//! - [`OffCpu`]: exact off-CPU accounting (`sched_switch` / `sched_wakeup`): per target thread its
//!   time on a CPU, blocked and runnable-but-waiting, and per (thread, wait kind, address) the
//!   blocked time, count and maximum. Aggregated in kernel maps; read them when needed.
//! - [`PyStacks`]: the sampled thread's Python frame chain read at the sample instant, by a
//!   program attached to the sampling perf event (`PERF_EVENT_IOC_SET_BPF`); optionally, on a
//!   budget, the stack of the thread that wakes a futex waiter (the release site).
//!
//! The programs are C in `src/bpf/`, compiled by clang at build time (see `build.rs`) and loaded
//! with libbpf (CO-RE against the running kernel's BTF). [`check_permitted`] and every
//! constructor say in one line why BPF cannot be used here (privileges, no BTF, verifier).

mod instant;
mod loader;
pub mod offcpu;
pub mod pystack;

pub use instant::{InstantCounts, InstantStacks};
pub use loader::{check_permitted, now_ns, verify_refused, ProgStats, Refusal, StatsGuard};
pub use offcpu::{OffCpu, OffCpuLost, ThreadState, ThreadTimes, Wait, WaitKind};
pub use pystack::{join_sample, Joiner, PyOffsets, PyRawFrame, PySample, PyStacks, Wakeup};
