//! # ftprof — the command-line tool
//!
//! Job: parse, compose, render, handle signals and the terminal. `ftprof record` turns its
//! options into an [`engine::EngineConfig`], records through [`engine::record`] (perf rings,
//! `/proc`, target memory) into an [`analysis::capture::Capture`] (written with `--capture`),
//! and renders its [`analysis::Profile`] with `flamegraph`; `report` renders a saved JSON
//! profile again, or re-analyses a capture; `top` draws the engine's profile every interval; `dump`
//! snapshots a running process (with the engine's holder search); `scale` records a command at
//! several thread counts. Input: command-line arguments. Output: the requested file, a terminal
//! summary on stderr, and the target's exit status as ours.

pub mod check;
pub mod dump;
pub mod record;
pub mod report;
pub mod scale;
pub mod top;
pub mod top_model;
