//! # analysis — the collector and the decisions (the engine, `crates/engine`, drives them)
//!
//! Job, while recording: [`collect`] reduces each drained sample (unwound native addresses, the
//! Python stack read from the target) to an interned [`collect::SampleKey`] with a count, and
//! weighs off-CPU observations — wall-clock snapshots of blocked threads scaled to the kernel's
//! exact per-thread totals, or (reference mode) a stack at every switch-out paired with its
//! switch records by the [`offcpu`] state machine. Input: keys, switch records, scheduler
//! totals. Output: a [`collect::Collection`] of distinct keys with their CPU samples and
//! off-CPU time, memory bounded by the number of distinct stacks.
//!
//! Job, afterwards: turn symbolized observations into a profile. It merges each sample's native frames with
//! the Python frames read from the target (every `_PyEval_EvalFrameDefault` activation is replaced
//! by the Python frames it was running, split at entry frames), flags samples whose two stacks
//! disagree, classifies each sample (running Python or native code, spinning, shared refcounts,
//! waiting on a critical section, a thread lock, a PyMutex, stop-the-world, the GIL, or idle
//! kinds) with the identity of the lock involved, and aggregates per stack and per lock.
//!
//! [`blame`] adds the holders' side: each lock's waiting time split between the stacks of the
//! threads that held it (observations taken while recording), and per lock its top "held by" lines.
//!
//! Input: [`SampleInput`] (one per distinct key, with its weight: native inline chains of
//! `frames::native::NativeFrame`s, a `frames::python::PyStack`, thread identity — the data types
//! of the `frames` crate, filled by `symbolizer`, on which this crate does not depend). Output: a [`Profile`] (interned [`Frame`]s,
//! per-thread [`Stack`]s with CPU samples and off-CPU time, each with a [`Category`] saying why
//! the thread was there, a per-lock table of [`LockStat`]s, [`ThreadInfo`], a [`Summary`] with the
//! share of thread time per category), serializable as the documented JSON profile.
//!
//! [`capture::Capture`] is the whole input of those decisions for one recording (what the engine
//! symbolized), kept in a versioned file by `record --capture`; `Capture::profile` is the one
//! path from it to a [`Profile`]; [`reconcile`] first gives the blocked samples at addresses the
//! kernel timed (BPF) those exact times.
//!
//! [`scaling`] turns `ftprof scale`'s runs into speedups, fits and the category whose thread time
//! per unit of work grew most; [`baseline`] compares two such results (a regression verdict);
//! [`gain`] predicts what removing one contention (a category, a lock, an object) would gain.

pub mod baseline;
pub mod blame;
pub mod capture;
pub mod collect;
pub mod concurrency;
pub mod findings;
pub mod fixture;
pub mod gain;
pub mod gil;
pub mod merge;
pub mod objects;
pub mod offcpu;
pub mod profile;
pub mod reconcile;
pub mod scaling;
pub mod wait;

pub use frames::python::ObjectRef;
pub use merge::{merge_stacks, MergeStatus, EVAL_FRAME_FN};
pub use profile::{
    CategoryTime, Frame, FrameKind, KernelWaits, LineStat, LockStat, LostRange, Observation, ProcessInfo, Profile,
    ProfileBuilder, PythonInfo, PythonStacks, SampleInput, SchedAccounting, SchedCrossCheck, Stack, Summary,
    TargetInfo, ThreadInfo, SCHEMA_VERSION,
};
pub use wait::{classify, syscall_name, Category, Evidence, LockIdentity};
