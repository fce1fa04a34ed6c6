//! # analysis — attribution
//!
//! Job: turn symbolized observations into a profile. It merges each sample's native frames with
//! the Python frames read from the target (every `_PyEval_EvalFrameDefault` activation is replaced
//! by the Python frames it was running, split at entry frames), flags samples whose two stacks
//! disagree, and aggregates identical stacks per thread.
//!
//! Input: [`SampleInput`] (native inline chains from `symbolizer::native`, a
//! `symbolizer::python::PyStack`, thread identity). Output: a [`Profile`] (interned [`Frame`]s,
//! per-thread [`Stack`]s with sample counts, [`ThreadInfo`], a [`Summary`]), serializable as the
//! documented JSON profile.

pub mod merge;
pub mod profile;

pub use merge::{merge_stacks, MergeStatus, EVAL_FRAME_FN};
pub use profile::{
    Frame, FrameKind, Profile, ProfileBuilder, PythonInfo, SampleInput, Stack, Summary, TargetInfo,
    ThreadInfo, SCHEMA_VERSION,
};
