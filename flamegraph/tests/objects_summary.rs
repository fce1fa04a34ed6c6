//! The terminal summary for refcount stalls on a named object, contended and not, and for a GIL
//! re-enabled by an extension module, from profiles built through `ProfileBuilder`.

use analysis::fixture::{code, cpu, inlined, input, nf, pystack, RUNTIME};
use analysis::gil::{remedy, GilReenabled};
use analysis::{Category, ObjectRef, ProfileBuilder, PythonInfo, SampleInput, TargetInfo};

const EVAL: &str = "_PyEval_EvalFrameDefault";

fn profile(contended: u64, uncontended: u64) -> analysis::Profile {
    let mut b = ProfileBuilder::new(1_000_000);
    b.set_core_modules(vec![RUNTIME.into()]);
    b.set_thread(2, 1, "worker");
    let py = pystack(vec![code("worker", "/app/w.py", 12)]);
    let prev = [inlined("_Py_atomic_add_ssize"), inlined("Py_INCREF"), nf(EVAL, RUNTIME)];
    let n = vec![vec![nf(EVAL, RUNTIME)]];
    let list = ObjectRef {
        addr: 0x7f00,
        type_name: "list".into(),
        value: None,
        reached: "global `SHARED`".into(),
        immortal: false,
        owned: false,
    };
    for (samples, concurrent) in [(contended, true), (uncontended, false)] {
        if samples > 0 {
            b.add(&SampleInput {
                python: Some(&py),
                leaf_prev: &prev,
                operand: Some(&list),
                concurrent,
                ..input(2, &n, cpu(samples))
            });
        }
    }
    b.add(&SampleInput { python: Some(&py), ..input(2, &n, cpu(100 - contended - uncontended)) });
    b.finish(TargetInfo {
        pid: 1,
        python: Some(PythonInfo {
            version: "3.13.5".into(),
            free_threaded: true,
            gil_enabled: Some(true),
            runtime_module: RUNTIME.into(),
            gil_reenabled: Some(GilReenabled {
                time_s: 1.5,
                clock_monotonic_s: 100.0,
                at_start: false,
                module: Some("gilmod".into()),
                module_path: None,
                module_confirmed: true,
                other_modules: Vec::new(),
                cause: "the import of extension module `gilmod`, which does not declare Py_mod_gil".into(),
                remedy: remedy(Some("gilmod")),
            }),
        }),
        ..Default::default()
    })
}

#[test]
fn uncontended_refcounts_are_a_cost_of_sharing_not_contention() {
    let p = profile(0, 30);
    let cat = p.summary.categories.iter().find(|c| c.category == Category::AtomicRefcount).unwrap();
    assert!(!cat.contention);
    assert!(p.locks.is_empty(), "not a contention site: {:?}", p.locks);
    let s = flamegraph::summary_text(&p);
    assert!(!s.contains("lost to contention"), "{s}");
    assert!(s.contains("30 % of thread time is atomic reference-count updates"), "{s}");
    assert!(s.contains("list @ 0x7f00 (global `SHARED`)"), "{s}");
    assert!(s.contains("GIL re-enabled at 1.50 s by the import of extension module `gilmod`"), "{s}");
    assert!(s.contains("PYTHON_GIL=0"), "{s}");
}

#[test]
fn contended_refcounts_name_the_object_in_the_lock_table() {
    let p = profile(20, 5);
    assert_eq!(p.locks.len(), 1);
    let l = &p.locks[0];
    assert_eq!(
        (l.kind, l.description.as_str(), l.samples),
        (Category::Refcount, "list @ 0x7f00 (global `SHARED`)", 20)
    );
    assert_eq!((l.identity.address, l.identity.type_name.as_deref()), (Some(0x7f00), Some("list")));
    let s = flamegraph::summary_text(&p);
    assert!(s.contains("20 % of thread time is lost to contention"), "{s}");
    assert!(s.contains("reference counts of shared objects at the same time"), "{s}");
}
