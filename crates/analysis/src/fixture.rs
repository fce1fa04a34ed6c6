//! Synthetic inputs: native frames, Python stacks and a fixed [`Profile`] built through
//! [`ProfileBuilder`] with one stack of every kind the renderers draw. The unit tests of the
//! classifier and the builder and the golden-file tests of `flamegraph` use it; nothing here
//! reads a process.

use std::sync::Arc;

use frames::native::NativeFrame;
use frames::python::{CodeInfo, ParkedInfo, PyFrame, PyStack};

use crate::profile::{Observation, Profile, ProfileBuilder, SampleInput, TargetInfo};
use crate::PythonInfo;

/// The module that holds the CPython runtime in the fixtures.
pub const RUNTIME: &str = "/opt/python/lib/libpython3.13t.so.1.0";
/// libc in the fixtures.
pub const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
/// An extension module outside the runtime.
pub const EXT: &str = "/opt/app/_native.cpython-313t-x86_64-linux-gnu.so";

/// Sampling rate of the fixture profile (one CPU sample stands for 1 ms).
pub const RATE_HZ: u64 = 1000;

/// A native frame of `module` (not inlined).
pub fn nf(name: &str, module: &str) -> NativeFrame {
    NativeFrame {
        function: Some(name.into()),
        file: None,
        line: None,
        module: module.into(),
        module_offset: 0x1000,
        inlined: false,
    }
}

/// A native frame of the runtime, inlined into its caller.
pub fn inlined(name: &str) -> NativeFrame {
    NativeFrame { inlined: true, ..nf(name, RUNTIME) }
}

/// A frame no symbol covers, at `offset` in `module`.
pub fn unknown(module: &str, offset: u64) -> NativeFrame {
    NativeFrame { function: None, module_offset: offset, ..nf("", module) }
}

/// One inline chain per name (leaf first), all in the runtime.
pub fn runtime_stack(names: &[&str]) -> Vec<Vec<NativeFrame>> {
    names.iter().map(|n| vec![nf(n, RUNTIME)]).collect()
}

/// A Python frame of `file` at `line`.
pub fn code(qualname: &str, file: &str, line: i32) -> PyFrame {
    PyFrame::Code {
        code: Arc::new(CodeInfo::synthetic(qualname, file, 1)),
        code_addr: 0x7f00_0000_0000,
        lasti: 0,
        line: Some(line),
        instr: None,
    }
}

/// A Python stack of one eval activation: `frames` innermost first, then the entry frame.
pub fn pystack(frames: Vec<PyFrame>) -> PyStack {
    let mut frames = frames;
    frames.push(PyFrame::Entry);
    PyStack { frames, truncated: false, state: 1 }
}

/// A sample with no evidence but `observation` (fill in the rest with struct update syntax).
pub fn input<'a>(tid: u32, native: &'a [Vec<NativeFrame>], observation: Observation) -> SampleInput<'a> {
    SampleInput {
        tid,
        native,
        native_complete: true,
        python: None,
        kernel: &[],
        leaf_prev: &[],
        parked: None,
        observation,
        alone: false,
        marker: None,
        syscall: None,
        operand: None,
        concurrent: true,
    }
}

pub fn cpu(samples: u64) -> Observation {
    Observation::Cpu { samples }
}

pub fn off(wait_us: u64, waits: u64, max_us: u64) -> Observation {
    Observation::OffCpu { wait_us, waits, max_us, preempted: false }
}

/// A fixed profile of three threads with one stack of every kind: Python and native CPU time,
/// kernel frames, an unresolved runtime frame, a python/native mismatch, a lock wait with the
/// spinning before it (claimed by the lock), spinning nobody parked after, a critical section,
/// shared refcounts, a stop-the-world pause, sleep, I/O, an `Event.wait`, the runqueue,
/// unobserved blocked time, and the holders of the lock and the list (blame).
pub fn profile() -> Profile {
    let mut b = ProfileBuilder::new(1_000_000_000 / RATE_HZ);
    b.set_core_modules(vec![RUNTIME.into()]);
    b.set_thread(101, 100, "MainThread");
    b.set_thread(102, 100, "worker-1");
    b.set_thread(103, 100, "worker-2");

    let (app, threading) = (APP, THREADING);
    let main_py = pystack(vec![code("main", app, 30), code("<module>", app, 40)]);
    let work_py = pystack(vec![code("work", app, 12), code("main", app, 31), code("<module>", app, 40)]);
    let w1_py = pystack(vec![code("worker", app, 20), code("Thread.run", threading, 1012)]);
    let w2_py = pystack(vec![code("append_all", app, 25), code("Thread.run", threading, 1012)]);
    let w2_wait = pystack(vec![
        code("Event.wait", threading, 655),
        code("Condition.wait", threading, 359),
        code("consume", app, 27),
    ]);

    main_thread(&mut b, &main_py, &work_py);
    worker_1(&mut b, &w1_py);
    worker_2(&mut b, &w2_py, &w2_wait);
    b.summary.duration_s = 0.25;
    b.summary.rate_hz = RATE_HZ;
    b.summary.switch_outs = 30;
    b.summary.wait_mode = "sampled".into();
    b.summary.wait_rate_hz = Some(250.0);
    b.summary.observed_waits = 30;
    b.summary.unobserved_us = 6_000;
    b.summary.sched_corrected_threads = 1;
    b.summary.lost_records = 2;
    b.summary.lost = vec![crate::LostRange { ring: "switches".into(), count: 2, first_s: 0.1, last_s: 0.2 }];
    let mut p = b.finish(TargetInfo {
        command: vec!["python".into(), "app.py".into()],
        pid: 100,
        python: Some(PythonInfo {
            version: "3.13.1".into(),
            free_threaded: true,
            gil_enabled: Some(false),
            runtime_module: RUNTIME.into(),
            gil_reenabled: None,
        }),
        exit: Some("exited with status 0".into()),
        interrupted: false,
        attached: false,
        partial: false,
    });
    blame(&mut p, &work_py, &main_py);
    p.with_findings()
}

const EVAL: &str = "_PyEval_EvalFrameDefault";
const APP: &str = "/opt/app/app.py";
const THREADING: &str = "/opt/python/lib/python3.13t/threading.py";

/// MainThread's samples and waits (see [`profile`]).
fn main_thread(b: &mut ProfileBuilder, main_py: &PyStack, work_py: &PyStack) {
    let (eval, app) = (EVAL, APP);
    // MainThread: Python, native, kernel, an unresolved frame, a mismatch, sleep, I/O.
    let n = runtime_stack(&[eval, "pymain_run_python", "main"]);
    b.add(&SampleInput { python: Some(work_py), ..input(101, &n, cpu(40)) });
    let n = vec![vec![nf("compress_block", EXT)], vec![nf(eval, RUNTIME)], vec![nf("main", RUNTIME)]];
    b.add(&SampleInput { python: Some(work_py), ..input(101, &n, cpu(10)) });
    let kernel = ["clear_page_erms".to_string(), "asm_exc_page_fault".to_string()];
    let n = vec![vec![nf("__memset_avx2", LIBC)], vec![nf(eval, RUNTIME)], vec![nf("main", RUNTIME)]];
    b.add(&SampleInput { python: Some(work_py), kernel: &kernel, ..input(101, &n, cpu(3)) });
    let n = vec![vec![unknown(RUNTIME, 0x1a2b3c)], vec![nf(eval, RUNTIME)], vec![nf("main", RUNTIME)]];
    b.add(&SampleInput { python: Some(main_py), ..input(101, &n, cpu(2)) });
    let two = PyStack {
        frames: vec![code("cb", app, 50), PyFrame::Entry, code("main", app, 30), PyFrame::Entry],
        truncated: false,
        state: 1,
    };
    let n = runtime_stack(&[eval, "main"]);
    b.add(&SampleInput { python: Some(&two), ..input(101, &n, cpu(1)) });
    let n = vec![vec![nf("clock_nanosleep", LIBC)], vec![nf(eval, RUNTIME)], vec![nf("main", RUNTIME)]];
    b.add(&SampleInput { python: Some(main_py), syscall: Some(230), ..input(101, &n, off(100_000, 4, 25_000)) });
    let n = vec![vec![nf("read", LIBC)], vec![nf(eval, RUNTIME)], vec![nf("main", RUNTIME)]];
    b.add(&SampleInput { python: Some(main_py), syscall: Some(0), ..input(101, &n, off(8_000, 2, 6_000)) });
}

/// worker-1's samples and waits (see [`profile`]).
fn worker_1(b: &mut ProfileBuilder, w1_py: &PyStack) {
    let eval = EVAL;
    // worker-1: a `threading.Lock`, spinning before parking on it at the same line, runqueue.
    let lock = ParkedInfo {
        addr: 0x7f10_0000_1018,
        lock_object: Some((0x7f10_0000_1000, "_thread.lock".into())),
        ..Default::default()
    };
    let n = runtime_stack(&[
        "__futex_abstimed_wait_common",
        "_PySemaphore_Wait",
        "_PyParkingLot_Park",
        "_PyMutex_LockTimed",
        "lock_PyThread_acquire_lock",
        eval,
        "thread_run",
    ]);
    b.add(&SampleInput { python: Some(w1_py), parked: Some(&lock), ..input(102, &n, off(30_000, 12, 5_000)) });
    let n = vec![
        vec![nf("sched_yield", LIBC)],
        vec![inlined("_Py_yield"), nf("_PyMutex_LockTimed", RUNTIME)],
        vec![nf("lock_PyThread_acquire_lock", RUNTIME)],
        vec![nf(eval, RUNTIME)],
        vec![nf("thread_run", RUNTIME)],
    ];
    b.add(&SampleInput { python: Some(w1_py), ..input(102, &n, cpu(5)) });
    let n = runtime_stack(&[eval, "thread_run"]);
    b.add(&SampleInput {
        python: Some(w1_py),
        ..input(102, &n, Observation::OffCpu { wait_us: 2_500, waits: 3, max_us: 1_200, preempted: true })
    });
}

/// worker-2's samples and waits (see [`profile`]).
fn worker_2(b: &mut ProfileBuilder, w2_py: &PyStack, w2_wait: &PyStack) {
    let (eval, app, threading) = (EVAL, APP, THREADING);
    // worker-2: a critical section on a list, spinning for it elsewhere, shared refcounts,
    // a stop-the-world pause it collected for, an `Event.wait`, unobserved blocked time.
    let cs =
        ParkedInfo { addr: 0x7f20_0000_2008, cs_object: Some((0x7f20_0000_2000, "list".into())), ..Default::default() };
    let n = runtime_stack(&[
        "__futex_abstimed_wait_common",
        "_PyParkingLot_Park",
        "_PyMutex_LockTimed",
        "_PyCriticalSection_BeginSlow",
        "list_append",
        eval,
        "thread_run",
    ]);
    b.add(&SampleInput { python: Some(w2_py), parked: Some(&cs), ..input(103, &n, off(20_000, 8, 4_000)) });
    let spin_py = pystack(vec![code("append_all", app, 26), code("Thread.run", threading, 1012)]);
    let n = vec![
        vec![nf("sched_yield", LIBC)],
        vec![nf("_PyMutex_LockSlow", RUNTIME)],
        vec![nf("list_extend", RUNTIME)],
        vec![nf(eval, RUNTIME)],
        vec![nf("thread_run", RUNTIME)],
    ];
    b.add(&SampleInput { python: Some(&spin_py), ..input(103, &n, cpu(4)) });
    let prev = [inlined("_Py_atomic_add_ssize"), inlined("Py_INCREF"), nf(eval, RUNTIME)];
    let n = vec![vec![inlined("_Py_atomic_add_ssize"), inlined("Py_INCREF"), nf(eval, RUNTIME)]];
    b.add(&SampleInput { python: Some(w2_py), leaf_prev: &prev, ..input(103, &n, cpu(7)) });
    let n = runtime_stack(&["gc_visit_heaps", "gc_collect_main", "_PyGC_Collect", eval, "thread_run"]);
    b.add(&SampleInput { python: Some(w2_py), ..input(103, &n, cpu(3)) });
    let event = ParkedInfo {
        addr: 0x7f30_0000_3018,
        lock_object: Some((0x7f30_0000_3000, "_thread.lock".into())),
        ..Default::default()
    };
    let n = runtime_stack(&["_PyParkingLot_Park", "lock_PyThread_acquire_lock", eval, "thread_run"]);
    b.add(&SampleInput { python: Some(w2_wait), parked: Some(&event), ..input(103, &n, off(50_000, 1, 50_000)) });
    b.add(&SampleInput { marker: Some("[off-CPU, not observed]"), ..input(103, &[], off(6_000, 0, 0)) });
}

/// The holder observations of blame (see [`profile`]).
fn blame(p: &mut Profile, work_py: &PyStack, main_py: &PyStack) {
    // Blame: MainThread held worker-1's lock in `work` (3 ticks) and at `main` (1 tick, once
    // handed the lock and not run yet); the list's holder was found once of two ticks.
    let mut blame = crate::blame::BlameCollector::new();
    for _ in 0..3 {
        blame.observe(102, 0x7f10_0000_1000, Some((101, Some(work_py.clone()))), false, 4_000_000);
    }
    blame.observe(102, 0x7f10_0000_1000, Some((101, Some(main_py.clone()))), true, 4_000_000);
    blame.observe(103, 0x7f20_0000_2000, Some((101, Some(work_py.clone()))), false, 4_000_000);
    blame.observe(103, 0x7f20_0000_2000, None, false, 4_000_000);
    blame.stats.threads_scanned = 9;
    blame.stats.search_ms = 0.25;
    crate::blame::attach(p, &blame.finish());
}
