//! Table tests of [`derive`] over hand-built profiles: one bad profile per pitfall row (the
//! finding, its site and remedy), and the variants that must stay silent (another version or
//! build, one thread, below the threshold).

use super::*;
use crate::blame::HeldBy;
use crate::profile::{CategoryTime, LockStat, PythonInfo, Stack, Summary, TargetInfo};
use crate::wait::LockIdentity;

const APP: &str = "/srv/app/app.py";
const LOGGING: &str = "/opt/python/lib/python3.13t/logging/__init__.py";

/// A profile built stack by stack (1 ms per CPU sample).
struct P {
    p: Profile,
}

/// One stack: thread, category, innermost Python frame `(qualname, file, line)`, native frames
/// (leaf last), the wait leaf's object (without the category), time in ms.
struct S<'a> {
    thread: u32,
    cat: Category,
    py: (&'a str, &'a str, u32),
    native: &'a [&'a str],
    object: Option<&'a str>,
    ms: u64,
}

impl P {
    fn new(version: &str, free_threaded: bool) -> P {
        let p = Profile {
            schema_version: crate::SCHEMA_VERSION,
            target: TargetInfo {
                python: Some(PythonInfo {
                    version: version.into(),
                    free_threaded,
                    gil_enabled: Some(!free_threaded),
                    runtime_module: "/opt/python/bin/python3".into(),
                    gil_reenabled: None,
                }),
                ..Default::default()
            },
            summary: Summary { period_ns: 1_000_000, rate_hz: 1000, ..Default::default() },
            ..Default::default()
        };
        P { p }
    }

    fn frame(&mut self, f: Frame) -> u32 {
        match self.p.frames.iter().position(|g| *g == f) {
            Some(i) => i as u32,
            None => {
                self.p.frames.push(f);
                self.p.frames.len() as u32 - 1
            }
        }
    }

    fn add(self, s: S) -> P {
        self.add_called(None, s)
    }

    /// [`P::add`] with a calling Python frame `(qualname, file, line)` above the innermost one.
    fn add_called(mut self, caller: Option<(&str, &str, u32)>, s: S) -> P {
        let mut ids = vec![self.frame(Frame {
            kind: FrameKind::Thread,
            name: format!("worker ({})", s.thread),
            file: None,
            line: None,
            start_line: None,
            module: None,
            offset: None,
            inlined: false,
        })];
        for (name, file, line) in caller.into_iter().chain([s.py]) {
            ids.push(self.frame(Frame {
                kind: FrameKind::Python,
                name: name.into(),
                file: Some(file.into()),
                line: Some(line),
                start_line: None,
                module: None,
                offset: None,
                inlined: false,
            }));
        }
        for n in s.native {
            ids.push(self.frame(Frame {
                kind: FrameKind::Native,
                name: n.to_string(),
                file: None,
                line: None,
                start_line: None,
                module: Some("/opt/python/bin/python3".into()),
                offset: None,
                inlined: false,
            }));
        }
        if let Some(o) = s.object {
            ids.push(self.frame(Frame {
                kind: FrameKind::Wait,
                name: format!("{}: {o}", s.cat.name()),
                file: None,
                line: None,
                start_line: None,
                module: None,
                offset: None,
                inlined: false,
            }));
        }
        let (samples, wait_us) = if s.cat.on_cpu() { (s.ms, 0) } else { (0, s.ms * 1000) };
        match self.p.threads.iter_mut().find(|t| t.tid == s.thread) {
            Some(t) => t.samples += samples,
            None => self.p.threads.push(crate::profile::ThreadInfo { tid: s.thread, samples, ..Default::default() }),
        }
        self.p.stacks.push(Stack { thread: s.thread, frames: ids, category: s.cat, samples, wait_us, waits: 1 });
        self.p.summary.thread_time_us += s.ms * 1000;
        let cats = &mut self.p.summary.categories;
        match cats.iter_mut().find(|c| c.category == s.cat) {
            Some(c) => c.time_us += s.ms * 1000,
            None => cats.push(CategoryTime { category: s.cat, time_us: s.ms * 1000, share: 0.0, contention: false }),
        }
        self
    }

    /// `ms` of plain Python work on `thread` (dilutes shares).
    fn work(self, thread: u32, ms: u64) -> P {
        self.add(S { thread, cat: Category::Python, py: ("work", APP, 5), native: &[], object: None, ms })
    }

    /// A Python frame from its label, `name (file:line)`.
    fn python_frame(&mut self, label: &str) -> u32 {
        let (name, rest) = label.rsplit_once(" (").unwrap();
        let (file, line) = rest.trim_end_matches(')').rsplit_once(':').unwrap();
        self.frame(Frame {
            kind: FrameKind::Python,
            name: name.into(),
            file: Some(file.into()),
            line: line.parse().ok(),
            start_line: None,
            module: None,
            offset: None,
            inlined: false,
        })
    }

    /// Blame of the last lock: its holder `Holder (9)` at the Python frames `lines` (outermost
    /// first; `marker`: a marker after them) for `us` of others' waiting.
    fn blame(self, lines: &[&str], marker: Option<&str>, us: u64) -> P {
        self.blame_by("Holder (9)", lines, marker, us)
    }

    /// [`P::blame`] with the holder thread `thread`.
    fn blame_by(mut self, thread: &str, lines: &[&str], marker: Option<&str>, us: u64) -> P {
        let lock = self.p.locks.len() - 1;
        let mut frames = vec![self.frame(Frame::thread(thread.into()))];
        for l in lines {
            let f = self.python_frame(l);
            frames.push(f);
        }
        if let Some(m) = marker {
            frames.push(self.frame(Frame::marker(m)));
        }
        self.p.blame.push(crate::blame::BlameStack { lock, holder: Some(9), frames, time_us: us, observations: 1 });
        self
    }

    /// A lock with its top holder line (and its blame: that line for `share` of 1000 µs of
    /// waiting, the rest `[holder not found]`).
    fn lock(mut self, kind: Category, description: &str, holder: Option<(&str, f64)>) -> P {
        self.p.locks.push(LockStat {
            kind,
            identity: LockIdentity { address: Some(0x7f00), type_name: None, symbol: None },
            description: description.into(),
            waits: 10,
            samples: 0,
            total_us: 0,
            spin_us: 0,
            max_us: 0,
            mean_us: 0,
            threads: vec![2],
            top_lines: Vec::new(),
            held_by: holder
                .map(|(line, share)| HeldBy { line: line.into(), thread: "Holder (9)".into(), time_us: 1000, share })
                .into_iter()
                .collect(),
            kernel_wait_us: None,
            kernel_runqueue_us: None,
        });
        if let Some((line, share)) = holder {
            let lock = self.p.locks.len() - 1;
            let frames = vec![self.frame(Frame::marker(crate::blame::NOT_FOUND))];
            let rest = ((1.0 - share) * 1000.0).round() as u64;
            self.p.blame.push(crate::blame::BlameStack { lock, holder: None, frames, time_us: rest, observations: 1 });
            self = self.blame(&[line], None, (share * 1000.0).round() as u64);
        }
        self
    }

    fn gil_reenabled(mut self, module: &str) -> P {
        self.p.target.python.as_mut().unwrap().gil_reenabled = Some(crate::gil::GilReenabled {
            module: Some(module.into()),
            cause: format!("import of extension module `{module}`"),
            remedy: format!("upgrade `{module}`"),
            ..Default::default()
        });
        self
    }
}

/// Refcount stalls on `object` at `line` of APP, `ms` on each of `threads` threads.
fn refcount(p: P, object: &str, threads: u32, ms: u64) -> P {
    (1..=threads).fold(p, |p, t| {
        p.add(S { thread: t, cat: Category::Refcount, py: ("hot", APP, 12), native: &[], object: Some(object), ms })
    })
}

fn waits(p: P, cat: Category, object: &str, py: (&str, &str, u32), native: &[&str], threads: u32, ms: u64) -> P {
    (1..=threads).fold(p, |p, t| p.add(S { thread: t, cat, py, native, object: Some(object), ms }))
}

fn ids(p: &P) -> Vec<String> {
    derive(&p.p).into_iter().map(|f| f.id).collect()
}

fn only(p: &P) -> Finding {
    let f = derive(&p.p);
    assert_eq!(f.len(), 1, "{f:#?}");
    f.into_iter().next().unwrap()
}

#[test]
fn the_shipped_table_parses_and_names_real_categories() {
    let t = pitfalls();
    assert!(t.len() >= 18, "{} rows", t.len());
    for p in t {
        assert!(!p.remedy.is_empty() && !p.citation.is_empty() && !p.title.is_empty(), "{}", p.id);
    }
}

#[test]
fn a_bad_table_is_refused_with_the_row_named() {
    let bad = r#"{"about": "", "pitfalls": [{"id": "x", "title": "t", "when": [{"categories": ["refcnt"]}],
        "min_share": 0.1, "remedy": "r", "citation": "c"}]}"#;
    assert_eq!(parse_table(bad).unwrap_err(), "pitfall x: unknown category \"refcnt\"");
    let bad = r#"{"about": "", "pitfalls": [{"id": "x", "title": "t", "when": [{"categories": ["lock"]}],
        "min_share": 0.1, "remedy": "r", "citation": "c", "python_max": "three"}]}"#;
    assert_eq!(parse_table(bad).unwrap_err(), "pitfall x: bad version \"three\"");
    let bad = r#"{"about": "", "pitfalls": [{"id": "x", "title": "t", "when": [{"categories": ["lock"], "frame": ["a"]}],
        "min_share": 0.1, "remedy": "r", "citation": "c"}]}"#;
    assert!(parse_table(bad).unwrap_err().contains("unknown field `frame`"));
}

#[test]
fn versions_compare_on_the_components_given() {
    assert_eq!(version("3.13.1"), Some(vec![3, 13, 1]));
    assert_eq!(version("3.14.0rc2"), Some(vec![3, 14, 0]));
    assert_eq!(version("x"), None);
    use std::cmp::Ordering::*;
    assert_eq!(cmp_prefix(&[3, 13, 4], &[3, 13]), Equal);
    assert_eq!(cmp_prefix(&[3, 13, 4], &[3, 14]), Less);
    assert_eq!(cmp_prefix(&[3, 15], &[3, 14, 2]), Greater);
    assert_eq!(cmp_prefix(&[3, 14], &[3, 14, 2]), Less);
}

/// One row per pitfall: the profile that shows it, the finding's id and site.
/// A pitfall's id, the profile that shows it, the site and the waited-at line it names.
type PitfallRow = (&'static str, P, &'static str, Option<&'static str>);

/// Rows whose evidence is a shared object or a contended lock at the waiting line.
fn object_rows() -> Vec<PitfallRow> {
    let cs = Category::CriticalSection;
    vec![
        (
            "shared-constant",
            refcount(P::new("3.13.1", true), "str 'a string' (constant of `hot`)", 2, 50),
            "hot (app.py:12)",
            None,
        ),
        (
            "threading-local",
            refcount(P::new("3.13.1", true), "_thread._local @ 0x7f01 (global `tls`)", 2, 50),
            "hot (app.py:12)",
            None,
        ),
        (
            "class-static-method",
            refcount(
                P::new("3.14.0", true),
                "staticmethod @ 0x7f02 (in `C.__dict__`, attribute `.f` of global `C`)",
                2,
                50,
            ),
            "hot (app.py:12)",
            None,
        ),
        (
            "generated-init",
            refcount(
                P::new("3.14.0", true),
                "function Point.__init__ (in `Point.__dict__`, attribute `.__init__` of global `Point`)",
                2,
                50,
            ),
            "hot (app.py:12)",
            None,
        ),
        (
            "type-lookup-lock",
            waits(
                P::new("3.13.1", true),
                Category::Pymutex,
                "PyMutex @ 0x7f03",
                ("visit", APP, 30),
                &["_PyType_LookupRef", "_PyMutex_LockTimed"],
                2,
                50,
            ),
            "visit (app.py:30)",
            None,
        ),
        (
            "closure-cell",
            refcount(P::new("3.13.1", true), "list @ 0x7f04 (closure variable `acc`)", 2, 50),
            "hot (app.py:12)",
            None,
        ),
        (
            "shared-random",
            waits(P::new("3.13.1", true), cs, "Random @ 0x7f05", ("roll", APP, 40), &["_random_Random_random"], 2, 50),
            "roll (app.py:40)",
            None,
        ),
        (
            "lru-cache",
            waits(
                P::new("3.13.1", true),
                cs,
                "functools._lru_cache_wrapper @ 0x7f06",
                ("cached", APP, 41),
                &["lru_cache_call"],
                2,
                50,
            ),
            "cached (app.py:41)",
            None,
        ),
        (
            "logging-handler-lock",
            waits(
                P::new("3.13.1", true),
                Category::Lock,
                "_thread.RLock @ 0x7f07",
                ("Handler.handle", LOGGING, 1027),
                &[],
                2,
                50,
            ),
            "Handler.handle (__init__.py:1027)",
            None,
        ),
        (
            "logging-record",
            waits(P::new("3.13.1", true), cs, "dict @ 0x7f08", ("LogRecord.__init__", LOGGING, 363), &[], 2, 50),
            "LogRecord.__init__ (__init__.py:363)",
            None,
        ),
        (
            "logging-disabled-call",
            refcount(P::new("3.13.1", true), "Logger @ 0x7f09 (global `log`)", 2, 50),
            "hot (app.py:12)",
            None,
        ),
    ]
}

/// Rows whose site is where the lock's holder was (the waiting line is named apart).
fn holder_rows() -> Vec<PitfallRow> {
    vec![
        (
            "logging-under-lock",
            waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0a", ("add_task", APP, 66), &[], 2, 50)
                .lock(Category::Lock, "_thread.lock @ 0x7f0a", Some(("Logger.warning (__init__.py:1520)", 0.8))),
            "Logger.warning (__init__.py:1520)",
            Some("add_task (app.py:66)"),
        ),
        // The holder's innermost frames are spread over many lines, some outside the logging
        // module (an `isinstance` from a LogRecord): its stack is logging all the same, and the
        // innermost logging frame is the site.
        (
            "logging-under-lock",
            waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0c", ("add_task", APP, 66), &[], 2, 50)
                .lock(Category::Lock, "_thread.lock @ 0x7f0c", Some(("add_task (app.py:67)", 0.6)))
                .blame(
                    &[
                        "add_task (app.py:67)",
                        "Logger.warning (__init__.py:1520)",
                        "LogRecord.__init__ (__init__.py:324)",
                    ],
                    None,
                    400,
                )
                .blame(
                    &[
                        "add_task (app.py:67)",
                        "Logger.warning (__init__.py:1520)",
                        "LogRecord.__init__ (__init__.py:324)",
                        "ABCMeta.__instancecheck__ (<frozen abc>:119)",
                    ],
                    None,
                    300,
                ),
            "LogRecord.__init__ (__init__.py:324)",
            Some("add_task (app.py:66)"),
        ),
        (
            "lock-held-across-work",
            waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0b", ("waiter", APP, 48), &[], 1, 50)
                .lock(Category::Lock, "_thread.lock @ 0x7f0b", Some(("slow_section (app.py:24)", 0.9))),
            "slow_section (app.py:24)",
            Some("waiter (app.py:48)"),
        ),
    ]
}

/// Rows of shared objects, stop-the-world pauses, the GIL and native hot spots.
fn runtime_rows() -> Vec<PitfallRow> {
    let cs = Category::CriticalSection;
    vec![
        ("list-arithmetic", refcount(P::new("3.13.1", true), "float 1.5 (local `x`)", 2, 50), "hot (app.py:12)", None),
        (
            "shared-mutable",
            refcount(P::new("3.13.1", true), "list @ 0x7f0c (global `SHARED`)", 2, 50),
            "hot (app.py:12)",
            None,
        ),
        (
            "shared-container-writes",
            waits(P::new("3.13.1", true), cs, "dict @ 0x7f0d", ("store", APP, 50), &["insertdict"], 2, 50),
            "store (app.py:50)",
            None,
        ),
        (
            "stop-the-world-gc",
            waits(
                P::new("3.13.1", true),
                Category::StopTheWorld,
                "stop-the-world (paused thread)",
                ("alloc", APP, 60),
                &[],
                2,
                50,
            )
            .work(1, 100)
            .work(2, 100),
            "alloc (app.py:60)",
            None,
        ),
        (
            "gil-reenabled",
            waits(P::new("3.13.1", true), Category::Gil, "GIL", ("crunch", APP, 70), &["take_gil"], 2, 50)
                .gil_reenabled("oldext"),
            "crunch (app.py:70)",
            None,
        ),
        (
            "tracemalloc",
            waits(
                P::new("3.13.1", true),
                Category::Pymutex,
                "PyMutex @ 0x7f0e",
                ("alloc", APP, 61),
                &["tracemalloc_alloc", "_PyMutex_LockTimed"],
                2,
                50,
            ),
            "alloc (app.py:61)",
            None,
        ),
        (
            "numpy-ufunc-dispatch",
            waits(
                P::new("3.13.1", true),
                cs,
                "numpy.ufunc @ 0x7f0f",
                ("np_hot", APP, 80),
                &["promote_and_get_ufuncimpl"],
                2,
                50,
            ),
            "np_hot (app.py:80)",
            None,
        ),
    ]
}

#[test]
fn each_pitfall_is_found_on_its_evidence() {
    let rows: Vec<PitfallRow> = [object_rows(), holder_rows(), runtime_rows()].into_iter().flatten().collect();
    let table_ids: BTreeSet<&str> = pitfalls().iter().map(|p| p.id.as_str()).collect();
    let tested: BTreeSet<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(table_ids, tested, "every row of the table has its case here");
    for (id, p, site, waited) in rows {
        let p = p.work(1, 500).work(2, 500);
        let f = only(&p);
        assert_eq!(f.id, id, "{f:#?}");
        assert_eq!(f.site.as_deref(), Some(site), "{id}");
        assert_eq!(f.waited_at.as_deref(), waited, "{id}");
        assert!(!f.generic && f.citation.is_some(), "{id}");
        let row = pitfalls().iter().find(|r| r.id == id).unwrap();
        assert!(f.remedy.starts_with(&row.remedy), "{id}: {}", f.remedy);
        assert!(f.evidence.contains(&f.object) || id == "gil-reenabled", "{id}: {}", f.evidence);
    }
}

#[test]
fn the_remedy_knows_the_targets_version() {
    let obj = "_thread._local @ 0x7f01 (global `tls`)";
    let f = only(&refcount(P::new("3.13.1", true), obj, 2, 50).work(1, 500));
    assert!(
        f.remedy.ends_with("Fixed in CPython 3.14: 3.14 uses deferred reference counting for `_thread._local`."),
        "{}",
        f.remedy
    );
    // 3.14: the row does not apply (fixed); the contention is still reported, as a shared
    // global, with no upgrade advice.
    let f = only(&refcount(P::new("3.14.0", true), obj, 2, 50).work(1, 500));
    assert_eq!(f.id, "shared-mutable");
    assert!(!f.remedy.contains("3.14"), "{f:#?}");
    let f = only(&refcount(P::new("3.14.0", true), "_thread._local @ 0x7f01", 2, 50).work(1, 500));
    assert_eq!(f.id, "generic-refcount");
    assert!(f.generic && !f.remedy.contains("3.14"), "{f:#?}");
    // A row without an upper bound: no upgrade advice once the target has the fix.
    let obj = "classmethod @ 0x7f02 (in `C.__dict__`, attribute `.f` of global `C`)";
    let f = only(&refcount(P::new("3.14.0", true), obj, 2, 50).work(1, 500));
    assert!(f.remedy.contains("Fixed in CPython 3.15"), "{}", f.remedy);
    let f = only(&refcount(P::new("3.15.0a1", true), obj, 2, 50).work(1, 500));
    assert_eq!(f.id, "class-static-method");
    assert!(!f.remedy.contains("Fixed in"), "{}", f.remedy);
}

#[test]
fn silent_without_the_evidence() {
    let obj = "str 'a string' (constant of `hot`)";
    // One thread: no contention to speak of.
    assert!(ids(&refcount(P::new("3.13.1", true), obj, 1, 50).work(1, 500)).is_empty());
    // One worker's pauses, and the main thread's few at start-up: one participant.
    let p = waits(
        P::new("3.13.1", true),
        Category::StopTheWorld,
        "stop-the-world (paused thread)",
        ("alloc", APP, 60),
        &[],
        1,
        200,
    );
    let p = p.add(S {
        thread: 7,
        cat: Category::StopTheWorld,
        py: ("<module>", APP, 1),
        native: &[],
        object: Some("stop-the-world (paused thread)"),
        ms: 10,
    });
    assert!(ids(&p.work(1, 500)).is_empty());
    // One worker collecting while an idle main thread (in `join()`, no CPU to speak of) sat
    // paused for long (a loaded machine kept the collector off its CPU): no second working
    // thread was slowed down.
    let p = waits(
        P::new("3.13.1", true),
        Category::StopTheWorld,
        "stop-the-world (collecting thread's pause)",
        ("alloc", APP, 60),
        &[],
        1,
        200,
    )
    .add(S {
        thread: 7,
        cat: Category::StopTheWorld,
        py: ("<module>", APP, 1),
        native: &[],
        object: Some("stop-the-world (paused thread)"),
        ms: 300,
    });
    assert!(ids(&p.work(1, 500)).is_empty());
    // Two threads' own collections, nobody else paused: their own work, not a finding.
    let p = waits(
        P::new("3.13.1", true),
        Category::StopTheWorld,
        "stop-the-world (collecting thread's pause)",
        ("alloc", APP, 60),
        &[],
        2,
        200,
    );
    assert!(ids(&p.work(1, 500)).is_empty());
    // A thread-start handshake is not contention.
    let p = waits(P::new("3.13.1", true), Category::Pymutex, "PyEvent_WaitTimed @ 0x1", ("start", APP, 3), &[], 1, 100);
    assert!(ids(&p.work(1, 500)).is_empty());
    // Below the threshold: 2 × 5 ms of 1010 ms.
    assert!(ids(&refcount(P::new("3.13.1", true), obj, 2, 5).work(1, 1000)).is_empty());
    // Uncontended shared refcounts are not contention.
    let p = (1..=2).fold(P::new("3.13.1", true), |p, t| {
        p.add(S {
            thread: t,
            cat: Category::AtomicRefcount,
            py: ("hot", APP, 12),
            native: &[],
            object: Some(obj),
            ms: 300,
        })
    });
    assert!(ids(&p).is_empty());
    // A free-threaded-only row on a GIL build: the waiting is reported, but not as the row.
    let p = waits(P::new("3.13.1", false), Category::CriticalSection, "Random @ 0x1", ("roll", APP, 40), &[], 2, 50);
    assert_eq!(ids(&p.work(1, 500)), ["generic-critical_section"]);
    // No Python information: version-bound rows do not apply; generic guidance remains.
    let mut p = refcount(P::new("3.13.1", true), obj, 2, 50).work(1, 500);
    p.p.target.python = None;
    assert_eq!(ids(&p), ["generic-refcount"]);
    // The GIL row needs the GIL to have been turned back on; on a free-threaded build, GIL waits
    // without it were transient (a module initialising): nothing; on a GIL build, generic.
    let p = waits(P::new("3.13.1", true), Category::Gil, "GIL", ("crunch", APP, 70), &[], 2, 50).work(1, 500);
    assert!(ids(&p).is_empty());
    let p = waits(P::new("3.13.1", false), Category::Gil, "GIL", ("crunch", APP, 70), &[], 2, 50).work(1, 500);
    assert_eq!(ids(&p), ["generic-gil"]);
    // A marker before the holder's code does not hide it.
    let mut p = waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0b", ("w", APP, 48), &[], 2, 50)
        .lock(Category::Lock, "_thread.lock @ 0x7f0b", Some(("slow (app.py:24)", 0.4)))
        .work(1, 500);
    p.p.locks[0].held_by.insert(
        0,
        HeldBy {
            line: "[handed the lock, waiting for a CPU]".into(),
            thread: "Holder (9)".into(),
            time_us: 1,
            share: 0.5,
        },
    );
    p = p.blame(&["slow (app.py:24)"], Some(crate::blame::HANDED_OVER), 500);
    p.p.blame[0].time_us = 100;
    assert_eq!(ids(&p), ["lock-held-across-work"]);
    // A lock without a main holder is not "held across slow work".
    let p = waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0b", ("w", APP, 48), &[], 2, 50)
        .lock(Category::Lock, "_thread.lock @ 0x7f0b", Some(("slow (app.py:24)", 0.1)))
        .work(1, 500);
    assert_eq!(ids(&p), ["generic-lock"]);
    // An empty profile.
    assert!(derive(&P::new("3.13.1", true).p).is_empty());
}

/// The holder line of a lock held across work is the line with the most holding summed over
/// the holder threads: on a loaded machine one thread's release line (`with`, preempted while
/// waking a waiter) outweighed each thread's share of the work line, never their sum.
#[test]
fn a_held_lock_is_found_at_the_line_its_holders_held_it_most_in_all() {
    const WORK: &str = "slow (app.py:24)";
    const RELEASE: &str = "step (app.py:30)";
    let p = waits(P::new("3.13.1", true), Category::Lock, "_thread.lock @ 0x7f0b", ("step", APP, 30), &[], 2, 50)
        .lock(Category::Lock, "_thread.lock @ 0x7f0b", None)
        .blame_by("worker-0 (8)", &["step (app.py:30)", WORK], None, 250)
        .blame_by("worker-1 (9)", &["step (app.py:30)", WORK], None, 240)
        .blame_by("worker-1 (9)", &[RELEASE], None, 300)
        .work(1, 500);
    let f = derive(&p.p);
    let held = f.iter().find(|f| f.id == "lock-held-across-work").unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!(held.site.as_deref(), Some(WORK), "{held:#?}");
    assert_eq!(held.line, Some(24));
    assert!(
        held.evidence.contains("held by worker-0 (8) and 1 other thread at slow (app.py:24) (62.0 % of the waiting)"),
        "{}",
        held.evidence
    );
}

#[test]
fn findings_are_ranked_by_predicted_gain_else_share() {
    let p = refcount(P::new("3.13.1", true), "_thread._local @ 0x1 (global `tls`)", 2, 30);
    let p = refcount(p, "str 'x' (constant of `hot`)", 2, 80).work(1, 500);
    let f = derive(&p.p);
    assert_eq!(f.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["shared-constant", "threading-local"]);
    let mut f = f;
    f[1].predicted_gain = Some(Gain { factor: 2.0, low: 1.5, high: 2.5 });
    f.sort_by(|a, b| b.rank_value().total_cmp(&a.rank_value()));
    assert_eq!(f[0].id, "threading-local");
}

#[test]
fn each_object_is_its_own_finding_and_a_stack_counts_once() {
    // Two shared lists written by two threads: two findings. The constant's stacks are claimed
    // by its row and do not reappear as generic refcount contention.
    let cs = Category::CriticalSection;
    let p = waits(P::new("3.13.1", true), cs, "list @ 0x1", ("a", APP, 1), &[], 2, 40);
    let p = waits(p, cs, "list @ 0x2", ("b", APP, 2), &[], 2, 30);
    let p = refcount(p, "str 'x' (constant of `hot`)", 2, 40).work(1, 500);
    let mut f = derive(&p.p);
    // (Their order is by predicted gain, tested in `findings_are_ranked_by_predicted_gain_else_share`.)
    f.sort_by(|a, b| a.id.cmp(&b.id).then(a.object.cmp(&b.object)));
    let got: Vec<(&str, &str)> = f.iter().map(|f| (f.id.as_str(), f.object.as_str())).collect();
    assert_eq!(
        got,
        [
            ("shared-constant", "str 'x' (constant of `hot`)"),
            ("shared-container-writes", "list @ 0x1"),
            ("shared-container-writes", "list @ 0x2")
        ]
    );
    assert!(
        f.iter().all(|f| f.predicted_gain.is_some_and(|g| g.low <= g.factor && g.factor <= g.high && g.factor > 1.0)),
        "{f:#?}"
    );
    assert_eq!(f[0].threads, 2);
    assert_eq!(f[0].time_us, 80_000);
    assert!((f[0].share - 80.0 / 720.0).abs() < 1e-9);
    assert_eq!(f[0].file.as_deref(), Some(APP));
    assert_eq!(f[0].line, Some(12)); // A one-finding row: a classmethod and its class are one finding, named after the larger.
    let p =
        refcount(P::new("3.13.1", true), "classmethod @ 0x1 (in `C.__dict__`, attribute `.m` of global `C`)", 2, 20);
    let p = refcount(p, "type C (global `C`)", 2, 12).work(1, 500);
    let f = derive(&p.p);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0].id.as_str(), f[0].time_us), ("class-static-method", 64_000));
    assert!(f[0].object.starts_with("classmethod @ 0x1"), "{}", f[0].object);
}

/// The synthetic profile of the golden files: its critical section, lock and refcount stalls.
#[test]
fn the_fixture_profile_has_its_findings() {
    let p = crate::fixture::profile();
    let f = derive(&p);
    let got: Vec<(&str, &str)> = f.iter().map(|f| (f.id.as_str(), f.site.as_deref().unwrap_or(""))).collect();
    assert_eq!(
        got,
        [
            ("lock-held-across-work", "work (app.py:12)"),
            ("shared-container-writes", "append_all (app.py:25)"),
            ("generic-spin", "append_all (app.py:26)")
        ],
        "{f:#?}"
    );
    // The lock's finding includes the spinning before parking at the same line (5 samples).
    assert_eq!(f[0].time_us, 35_000);
    assert_eq!(f[2].object, "list_extend");
}

/// Arithmetic over a shared list: every number's count is updated atomically by each thread,
/// rarely two at the same moment; the row counts that cost without contention, over all the
/// numbers as one finding. Other refcount rows still ask for contention.
#[test]
fn shared_numbers_cost_without_contention_as_one_finding() {
    let p = (0..40u32).fold(P::new("3.13.1", true), |p, i| {
        let obj = format!("float @ {:#x} (local `x`)", 0x7000 + i * 0x20);
        (1..=2).fold(p, |p, t| {
            p.add(S {
                thread: t,
                cat: Category::AtomicRefcount,
                py: ("hot", APP, 12),
                native: &[],
                object: Some(&obj),
                ms: 3,
            })
        })
    });
    let f = only(&p.work(1, 500));
    assert_eq!(f.id, "list-arithmetic");
    assert_eq!(f.site.as_deref(), Some("hot (app.py:12)"));
    // The same cost on a shared constant: not contention, no finding.
    let obj = "str 'x' (constant of `hot`)";
    let p = (1..=2).fold(P::new("3.13.1", true), |p, t| {
        p.add(S {
            thread: t,
            cat: Category::AtomicRefcount,
            py: ("hot", APP, 12),
            native: &[],
            object: Some(obj),
            ms: 120,
        })
    });
    assert!(ids(&p.work(1, 500)).is_empty());
}

/// A stray uncontended refcount sample in a group of critical-section waits (the same line of
/// `LogRecord.__init__`) does not turn the group into "uncontended refcounts": the finding stays,
/// as a critical section.
#[test]
fn a_stray_uncontended_refcount_sample_does_not_hide_contention() {
    let py = ("LogRecord.__init__", LOGGING, 363);
    let p = waits(P::new("3.13.1", true), Category::CriticalSection, "dict @ 0x7f10", py, &["dict_get"], 2, 60);
    let p = p.add(S {
        thread: 1,
        cat: Category::AtomicRefcount,
        py,
        native: &[],
        object: Some("shared refcount of global `hasattr`"),
        ms: 1,
    });
    let f = only(&p.work(1, 500));
    assert_eq!(f.id, "logging-record");
    assert_eq!(f.category, Category::CriticalSection);
}

/// A disabled `log.debug()` on two threads: the stalls are inside `logging` (the class-wide
/// `Logger._tls` in `Logger._is_disabled`, the level cache in `Logger.isEnabledFor`) and on the
/// Logger at the program's call; the finding is one, at the program's line that calls the logger
/// (the row's `site_outside`), whichever object had the most time.
#[test]
fn a_disabled_log_call_is_found_at_the_programs_call() {
    let call = ("step", APP, 40);
    let mut p = P::new("3.13.1", true);
    for t in 1..=2 {
        for (py, object, ms) in [
            (("Logger._is_disabled", LOGGING, 1829), "_thread._local @ 0x7f20 (attribute `._tls` of local `self`)", 30),
            (("Logger.isEnabledFor", LOGGING, 1780), "dict @ 0x7f21 (attribute `._cache` of local `self`)", 20),
        ] {
            p = p.add_called(
                Some(call),
                S { thread: t, cat: Category::Refcount, py, native: &[], object: Some(object), ms },
            );
        }
        p = p.add(S {
            thread: t,
            cat: Category::Refcount,
            py: call,
            native: &[],
            object: Some("Logger @ 0x7f22 (global `log`)"),
            ms: 10,
        });
    }
    let f = only(&p.work(1, 500));
    assert_eq!(f.id, "logging-disabled-call");
    assert_eq!(f.site.as_deref(), Some("step (app.py:40)"));
    assert_eq!((f.file.as_deref(), f.line), (Some(APP), Some(40)));
    assert_eq!(f.time_us, 120_000, "the three objects' stalls are one finding");
    assert!(f.object.starts_with("_thread._local @ 0x7f20"), "{}", f.object);
    // The same `threading.local` read by the program itself is the threading-local row's.
    let p = refcount(P::new("3.13.1", true), "_thread._local @ 0x7f01 (global `tls`)", 2, 50);
    assert_eq!(only(&p.work(1, 500)).id, "threading-local");
}
