//! # ftprof — the command-line tool
//!
//! Job: compose the pipeline. `ftprof record` launches the target through `profiler` (reading
//! each sampled thread's Python stack with `symbolizer::python` while the sample is fresh), then
//! unwinds and symbolizes with `symbolizer::native`, merges and aggregates with `analysis`, and
//! renders with `flamegraph`; `ftprof report` renders a saved JSON profile again. Input: command-line arguments. Output: the requested file, a
//! terminal summary on stderr, and the target's exit status as ours.

pub mod check;
pub mod dump;
pub mod record;
pub mod report;
pub mod scale;
pub mod top;
pub mod top_model;
