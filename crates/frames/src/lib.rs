//! # frames — the frame and stack data types, shared by the symbolizer, analysis and the renderers
//!
//! Job: hold the data types of frames and stacks that flow from the symbolizer to analysis and
//! the renderers, so that a crate that only consumes them does not depend on the symbolizer's
//! ELF/DWARF code (goblin, gimli, framehop, addr2line). No ELF/DWARF code and no reading of a
//! process lives here.
//! * [`native`]: [`native::NativeFrame`] (one symbolized machine-code frame) and
//!   [`native::UNKNOWN_MODULE`].
//! * [`python`]: [`python::PyStack`]s of [`python::PyFrame`]s, each naming a
//!   [`python::CodeInfo`] (with its line table, [`python::linetable`]); [`python::ParkedInfo`]
//!   (what a blocked thread waits on); [`python::ObjectRef`] (the object an instruction works on)
//!   and [`python::describe_instr`] (what an instruction touches, in words).
//!
//! Input: values built by `symbolizer` (which re-exports every type here from its old path,
//! e.g. `symbolizer::python::PyStack`) or by tests and captures (serde). Output: the same values,
//! read by `analysis` and the renderers.

pub mod native;
pub mod python;
