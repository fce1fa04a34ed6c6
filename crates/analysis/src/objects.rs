//! One name per object behind refcount stalls.
//!
//! The object a CPU sample's instruction worked on is read from the target at sample time
//! (`symbolizer::python::operand`), with how the instruction reached it. The same object is
//! often reached several ways (a `str` constant loaded by `LOAD_CONST`, then released by the
//! `STORE_FAST` that overwrites the local holding it): [`settle_operands`] gives every sample of
//! one object the same name, the most telling way it was reached (a global, a constant, a
//! closure variable or a builtin before a local, which is only a copy). Instructions whose
//! operand does not name the object (`BINARY_SUBSCR` releasing the list it indexed) take the
//! object the other samples of the same line named, when they named one.

use std::collections::HashMap;

use frames::python::{ObjectRef, PyFrame};

use crate::collect::{Entry, EntryKind};

/// How telling a way of reaching an object is (higher first).
fn rank(o: &ObjectRef) -> u8 {
    if o.reached.starts_with("local ") {
        0
    } else {
        1
    }
}

/// `(pid, code object, line)` of an entry's innermost Python frame.
fn line_of(e: &Entry) -> Option<(u32, u64, i32)> {
    e.python.as_ref()?.frames.iter().find_map(|f| match f {
        PyFrame::Code { code_addr, line: Some(l), .. } => Some((e.key.pid, *code_addr, *l)),
        _ => None,
    })
}

/// See the module documentation.
pub fn settle_operands(entries: &mut [Entry]) {
    // Per object, the best name: most telling way reached, then most samples.
    let mut names: HashMap<(u32, u64), HashMap<ObjectRef, u64>> = HashMap::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Cpu) {
        if let Some(o) = &e.key.operand {
            *names.entry((e.key.pid, o.addr)).or_default().entry(o.clone()).or_default() += e.samples;
        }
    }
    let best: HashMap<(u32, u64), ObjectRef> = names
        .into_iter()
        .filter_map(|(k, v)| {
            let o = v
                .into_iter()
                .max_by(|a, b| (rank(&a.0), a.1).cmp(&(rank(&b.0), b.1)).then_with(|| b.0.reached.cmp(&a.0.reached)))?
                .0;
            Some((k, o))
        })
        .collect();
    // Per line, the object its samples named most.
    let mut per_line: HashMap<(u32, u64, i32), HashMap<u64, u64>> = HashMap::new();
    for e in entries.iter_mut().filter(|e| e.kind == EntryKind::Cpu) {
        let Some(o) = e.key.operand.as_mut() else { continue };
        if let Some(b) = best.get(&(e.key.pid, o.addr)) {
            *o = b.clone();
        }
        let addr = o.addr;
        if let Some(l) = line_of(e) {
            *per_line.entry(l).or_default().entry(addr).or_default() += e.samples;
        }
    }
    for e in entries.iter_mut().filter(|e| e.kind == EntryKind::Cpu && e.key.operand.is_none()) {
        let Some(l) = line_of(e) else { continue };
        let Some(objects) = per_line.get(&l) else { continue };
        let top = objects.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).map(|(&a, _)| a);
        e.key.operand = top.and_then(|a| best.get(&(l.0, a)).cloned());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use frames::python::{CodeInfo, PyStack};

    use super::*;
    use crate::collect::{SampleKey, WaitTotals};

    fn entry(line: i32, operand: Option<(&str, u64)>, samples: u64) -> Entry {
        let code = Arc::new(CodeInfo::synthetic("worker", "/app/w.py", 1));
        Entry {
            kind: EntryKind::Cpu,
            key: SampleKey {
                pid: 1,
                tid: 2,
                on_cpu: true,
                operand: operand.map(|(reached, addr)| ObjectRef {
                    addr,
                    type_name: "list".into(),
                    value: None,
                    reached: reached.into(),
                    immortal: false,
                    owned: false,
                }),
                ..Default::default()
            },
            python: Some(PyStack {
                frames: vec![PyFrame::Code { code, code_addr: 0xc0, lasti: 0, line: Some(line), instr: None }],
                truncated: false,
                state: 1,
            }),
            samples,
            concurrent: 0,
            wait: WaitTotals::default(),
        }
    }

    #[test]
    fn one_object_gets_its_most_telling_name_and_its_lines_unnamed_samples() {
        let mut e = vec![
            entry(5, Some(("local `x`", 0xa0)), 10),
            entry(5, Some(("global `SHARED`", 0xa0)), 3),
            entry(5, None, 4),                      // BINARY_SUBSCR on the same line
            entry(6, None, 4),                      // another line: left alone
            entry(7, Some(("local `y`", 0xb0)), 1), // another object keeps its name
        ];
        settle_operands(&mut e);
        let got: Vec<Option<String>> = e.iter().map(|e| e.key.operand.as_ref().map(|o| o.describe())).collect();
        assert_eq!(
            got,
            vec![
                Some("list @ 0xa0 (global `SHARED`)".into()),
                Some("list @ 0xa0 (global `SHARED`)".into()),
                Some("list @ 0xa0 (global `SHARED`)".into()),
                None,
                Some("list @ 0xb0 (local `y`)".into()),
            ]
        );
    }
}
