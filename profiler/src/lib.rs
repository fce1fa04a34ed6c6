//! # profiler — collection
//!
//! Job: get raw observations of a target process out of the kernel. It launches a command (held
//! at a gate until its perf events exist, so nothing before `exec` is missed) or follows an
//! existing pid, opens `perf_event_open` sessions (per-CPU cpu-clock sampling with user registers
//! and a user-stack copy, inherited by every thread the target creates), and drains the ring
//! buffers continuously.
//!
//! Input: a [`Target`] and a [`SamplingConfig`]. Output: a stream of [`Record`]s (samples with
//! pid/tid/time/cpu/registers/stack bytes, executable mmaps, comm, fork/exit, lost counts) handed
//! to a caller-supplied sink while the target runs, and a [`RecordingOutcome`] (exit status,
//! duration, lost records, why it stopped).
//!
//! This crate knows nothing about Python, symbols or rendering.

pub mod launch;
pub mod perf;
#[cfg(test)]
mod props;
pub mod records;
pub mod session;
pub mod threads;

pub use launch::{LaunchError, LaunchSpec, Launched};
pub use perf::{PerfError, SamplingConfig};
pub use records::{Mmap, Record, Regs, Sample, SampleSource};
pub use session::{alive, monotonic_ns, record, ExitStatus, RecordError, RecordingOutcome, Sink, StopReason, Target};
