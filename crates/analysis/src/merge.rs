//! Merging a native stack with the Python frames the interpreter was running.

use frames::native::NativeFrame;
use frames::python::{PyFrame, PyStack};

use crate::profile::{Frame, FrameKind};

/// The C function that runs Python frames (GCC may split off `.cold` parts).
pub const EVAL_FRAME_FN: &str = "_PyEval_EvalFrameDefault";

pub const MISMATCH_MARKER: &str = "[python/native mismatch]";
pub const TRUNCATED_MARKER: &str = "[truncated]";

/// How one sample's stacks came together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStatus {
    /// The merged stack has at least one Python frame.
    pub has_python: bool,
    /// The number of eval activations on the native stack did not match the Python entry frames.
    pub mismatch: bool,
}

fn is_eval(f: &NativeFrame) -> bool {
    !f.inlined && f.function.as_deref().is_some_and(|n| n.starts_with(EVAL_FRAME_FN))
}

fn python_frame(f: &PyFrame) -> Option<Frame> {
    match f {
        PyFrame::Code { code, line, .. } => Some(Frame {
            kind: FrameKind::Python,
            name: code.qualname.clone(),
            file: Some(code.filename.clone()),
            line: line.map(|l| l.max(0) as u32),
            start_line: (code.firstlineno > 0).then_some(code.firstlineno as u32),
            module: None,
            offset: None,
            inlined: false,
        }),
        PyFrame::Entry => None,
    }
}

/// Split a Python stack (innermost first) into one group per eval activation, innermost
/// activation first; each group is root → leaf.
fn python_groups(py: &PyStack) -> Vec<Vec<Frame>> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    for f in &py.frames {
        match f {
            PyFrame::Entry => {
                cur.reverse();
                groups.push(std::mem::take(&mut cur));
            }
            other => cur.extend(python_frame(other)),
        }
    }
    if !cur.is_empty() {
        cur.reverse();
        groups.push(cur);
    }
    groups
}

/// Merge. `native` holds, per unwound address (leaf first), the inline chain innermost first.
/// Returns frames root → leaf (without the thread frame).
pub fn merge_stacks(
    native: &[Vec<NativeFrame>],
    native_complete: bool,
    py: Option<&PyStack>,
) -> (Vec<Frame>, MergeStatus) {
    // Native frames root → leaf, remembering which ones are eval activations.
    let mut flat: Vec<(Frame, bool)> = Vec::new();
    for chain in native.iter().rev() {
        for f in chain.iter().rev() {
            flat.push((Frame::from_native(f), is_eval(f)));
        }
    }
    let mut status = MergeStatus::default();
    let groups = py.map(python_groups).unwrap_or_default();
    let evals = flat.iter().filter(|(_, e)| *e).count();
    let g = groups.len();
    if g == 0 {
        return (flat.into_iter().map(|(f, _)| f).collect(), status);
    }
    status.has_python = groups.iter().any(|g| !g.is_empty());
    // Activations are paired innermost-first. Python groups left over belong to outer activations
    // the native unwinder did not reach (fine when it stopped early, a mismatch otherwise);
    // native activations left over have no Python frames to show (a mismatch).
    status.mismatch = evals > g || (evals < g && native_complete);
    let mut out = Vec::with_capacity(flat.len() + 16);
    if status.mismatch {
        out.push(Frame::marker(MISMATCH_MARKER));
    }
    if evals < g {
        for grp in groups[evals..].iter().rev() {
            out.extend(grp.iter().cloned());
        }
        if !native_complete {
            out.push(Frame::marker(TRUNCATED_MARKER));
        }
    }
    // Eval activation k counted from the root has index (evals-1-k) from the leaf.
    let mut k = 0;
    for (f, is_eval) in flat {
        if is_eval {
            let from_leaf = evals - 1 - k;
            k += 1;
            if from_leaf < g {
                out.extend(groups[from_leaf].iter().cloned());
                continue;
            }
        }
        out.push(f);
    }
    (out, status)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use frames::python::CodeInfo;

    use super::*;

    fn nf(name: &str, inlined: bool) -> NativeFrame {
        NativeFrame {
            function: Some(name.into()),
            file: None,
            line: None,
            module: "/py".into(),
            module_offset: 0,
            inlined,
        }
    }
    fn chain(names: &[&str]) -> Vec<NativeFrame> {
        // innermost first; all but the last are inlined
        names.iter().enumerate().map(|(i, n)| nf(n, i + 1 < names.len())).collect()
    }
    fn code(q: &str, line: i32) -> PyFrame {
        PyFrame::Code {
            code: Arc::new(CodeInfo::synthetic(q, "/app/x.py", 1)),
            code_addr: 0,
            lasti: 0,
            line: Some(line),
            instr: None,
        }
    }
    fn labels(frames: &[Frame]) -> Vec<String> {
        frames.iter().map(|f| f.label()).collect()
    }

    /// main → eval[run, outer] → PyObject_Call → eval[cb] → sha256 (leaf first below)
    fn nested_native() -> Vec<Vec<NativeFrame>> {
        vec![
            chain(&["sha256_update"]),
            chain(&["_PyEval_EvalFrameDefault"]),
            chain(&["PyObject_Call"]),
            chain(&["Py_INCREF", "_PyEval_EvalFrameDefault"]),
            chain(&["main"]),
        ]
    }

    #[test]
    fn nested_activations_are_spliced_in_order() {
        let py = PyStack {
            frames: vec![code("cb", 7), PyFrame::Entry, code("run", 3), code("outer", 12), PyFrame::Entry],
            truncated: false,
            state: 1,
        };
        let (m, st) = merge_stacks(&nested_native(), true, Some(&py));
        assert_eq!(
            labels(&m),
            [
                "main",
                "outer (x.py:12)",
                "run (x.py:3)",
                "Py_INCREF [inlined]",
                "PyObject_Call",
                "cb (x.py:7)",
                "sha256_update"
            ]
        );
        assert_eq!(st, MergeStatus { has_python: true, mismatch: false });
    }

    #[test]
    fn disagreement_is_marked_not_guessed() {
        // Python shows one activation, native two, native complete → mismatch.
        let py = PyStack { frames: vec![code("cb", 7), PyFrame::Entry], truncated: false, state: 1 };
        let (m, st) = merge_stacks(&nested_native(), true, Some(&py));
        assert!(st.mismatch);
        assert_eq!(m[0].label(), MISMATCH_MARKER);
        assert!(labels(&m).contains(&"cb (x.py:7)".to_string()));
        assert!(labels(&m).contains(&EVAL_FRAME_FN.to_string()), "unpaired activation stays visible");
    }

    #[test]
    fn outer_python_frames_survive_a_truncated_native_unwind() {
        // Native unwinding stopped after the inner activation.
        let native = &nested_native()[..3];
        let py = PyStack {
            frames: vec![code("cb", 7), PyFrame::Entry, code("run", 3), PyFrame::Entry],
            truncated: false,
            state: 1,
        };
        let (m, st) = merge_stacks(native, false, Some(&py));
        assert!(!st.mismatch);
        assert_eq!(labels(&m), ["run (x.py:3)", TRUNCATED_MARKER, "PyObject_Call", "cb (x.py:7)", "sha256_update"]);
    }

    #[test]
    fn no_python_keeps_native() {
        let (m, st) = merge_stacks(&nested_native(), true, None);
        assert!(!st.has_python);
        assert_eq!(m.len(), 6);
    }
}
