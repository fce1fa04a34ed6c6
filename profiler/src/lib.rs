//! # profiler — collection
//!
//! Job: get raw observations of a target process out of the kernel. It launches a command (held
//! at a gate until its perf events exist, so nothing before `exec` is missed) or follows an
//! existing pid, opens `perf_event_open` sessions (cpu-clock sampling with user registers and a
//! user-stack copy: one CPU-wide event per CPU filtered to the target's processes when permitted,
//! else per-task events inherited by every thread the target creates; with
//! [`SamplingConfig::switch_samples`], also a sample at every switch-out), and drains the ring buffers
//! continuously. [`threads`] reads what a blocked thread is doing, and its scheduler accounting,
//! from `/proc` without stopping it.
//!
//! Input: a [`Target`] and a [`SamplingConfig`]. Output: a stream of [`Record`]s (samples with
//! pid/tid/time/cpu/registers/stack bytes, executable mmaps, comm, fork/exit, switches, lost
//! counts with their ring and time, and a [`Record::Drained`] mark after each drain pass) handed
//! to a caller-supplied [`Sink`] while the target runs (its `tick` runs between passes), and a
//! [`RecordingOutcome`] (exit status, duration, lost records per ring kind, why it stopped).
//!
//! This crate knows nothing about Python, symbols or rendering.

pub mod access;
pub mod hold;
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
