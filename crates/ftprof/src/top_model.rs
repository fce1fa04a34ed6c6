//! The model behind `ftprof top`, without a terminal: cumulative [`Totals`] reduced from the
//! profile the recording engine builds every second, their difference over the last interval,
//! and the sorted, filtered rows the view shows.

use std::collections::{BTreeMap, HashMap, HashSet};

use analysis::{Category, FrameKind, Profile};

/// What the function table weighs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// CPU samples (time on CPU).
    Cpu,
    /// Time off CPU waiting (locks, stop-the-world, runqueue, I/O…; not sleep, join or idle).
    Wait,
    /// Both.
    Wall,
}

impl Metric {
    pub fn next(self) -> Metric {
        match self {
            Metric::Cpu => Metric::Wait,
            Metric::Wait => Metric::Wall,
            Metric::Wall => Metric::Cpu,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Wait => "wait",
            Metric::Wall => "wall",
        }
    }
}

/// The column the function and lock tables are sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    OwnInterval,
    TotalInterval,
    OwnOverall,
    TotalOverall,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::OwnInterval => SortKey::TotalInterval,
            SortKey::TotalInterval => SortKey::OwnOverall,
            SortKey::OwnOverall => SortKey::TotalOverall,
            SortKey::TotalOverall => SortKey::OwnInterval,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::OwnInterval => "own, last interval",
            SortKey::TotalInterval => "total, last interval",
            SortKey::OwnOverall => "own, overall",
            SortKey::TotalOverall => "total, overall",
        }
    }

    /// Sorting by the last interval (else by the whole run).
    pub fn interval(self) -> bool {
        matches!(self, SortKey::OwnInterval | SortKey::TotalInterval)
    }
}

/// CPU and waiting time (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Times {
    pub cpu_us: f64,
    /// Off-CPU time other than the idle kinds (sleep, join, idle).
    pub wait_us: f64,
}

impl Times {
    pub fn get(&self, m: Metric) -> f64 {
        match m {
            Metric::Cpu => self.cpu_us,
            Metric::Wait => self.wait_us,
            Metric::Wall => self.cpu_us + self.wait_us,
        }
    }

    fn add(&mut self, o: Times) {
        self.cpu_us += o.cpu_us;
        self.wait_us += o.wait_us;
    }

    fn minus(self, o: Times) -> Times {
        Times { cpu_us: (self.cpu_us - o.cpu_us).max(0.0), wait_us: (self.wait_us - o.wait_us).max(0.0) }
    }
}

/// A function's own time (it was the innermost function) and total time (it was on the stack).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FuncTimes {
    pub own: Times,
    pub total: Times,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadTotals {
    pub name: String,
    /// Thread time per category (µs), idle kinds included.
    pub by_category: BTreeMap<Category, f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LockTotals {
    pub kind: Category,
    /// Time waiting for it or spinning on it (µs).
    pub wait_us: f64,
    pub waits: u64,
    /// Threads that waited for it.
    pub threads: Vec<u32>,
    /// The line that waited longest for it.
    pub top_line: Option<String>,
}

/// Totals since the start of the recording (or over an interval, see [`Totals::minus`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Seconds since the target was released or attached.
    pub elapsed_s: f64,
    pub samples: u64,
    pub threads: BTreeMap<u32, ThreadTotals>,
    /// By thread and function label.
    pub funcs: HashMap<(u32, String), FuncTimes>,
    /// By lock description.
    pub locks: HashMap<String, LockTotals>,
}

/// How a function is named in the table: `name (file)` for Python, the symbol for native code.
fn label(f: &analysis::Frame) -> String {
    match (&f.kind, &f.file) {
        (FrameKind::Python, Some(file)) => {
            let base = std::path::Path::new(file).file_name().map(|b| b.to_string_lossy()).unwrap_or_default();
            format!("{} ({base})", f.name)
        }
        _ => f.name.clone(),
    }
}

impl Totals {
    /// Reduce a cumulative profile.
    pub fn from_profile(p: &Profile, elapsed_s: f64) -> Totals {
        let period_us = p.summary.period_us();
        let mut t = Totals { elapsed_s, samples: p.summary.samples, ..Default::default() };
        for th in &p.threads {
            t.threads.insert(th.tid, ThreadTotals { name: th.name.clone(), by_category: BTreeMap::new() });
        }
        for (st, frames) in p.iter_stacks() {
            let time = st.time_us(period_us);
            let th = t.threads.entry(st.thread).or_default();
            *th.by_category.entry(st.category).or_default() += time;
            let times = Times {
                cpu_us: st.samples as f64 * period_us,
                wait_us: if st.category.is_idle() { 0.0 } else { st.wait_us as f64 },
            };
            if times.cpu_us == 0.0 && times.wait_us == 0.0 {
                continue;
            }
            // Own: the innermost Python function, else the innermost native or kernel one.
            let own = frames
                .iter()
                .rev()
                .find(|f| f.kind == FrameKind::Python)
                .or_else(|| frames.iter().rev().find(|f| matches!(f.kind, FrameKind::Native | FrameKind::Kernel)));
            let Some(own) = own else { continue };
            let own = label(own);
            let mut on_stack: HashSet<String> =
                frames.iter().filter(|f| f.kind == FrameKind::Python).map(|f| label(f)).collect();
            on_stack.insert(own.clone());
            for l in on_stack {
                let e = t.funcs.entry((st.thread, l.clone())).or_default();
                e.total.add(times);
                if l == own {
                    e.own.add(times);
                }
            }
        }
        for l in &p.locks {
            t.locks.insert(
                l.description.clone(),
                LockTotals {
                    kind: l.kind,
                    wait_us: l.total_us as f64,
                    waits: l.waits,
                    threads: l.threads.clone(),
                    top_line: l.top_lines.first().map(|x| x.line.clone()),
                },
            );
        }
        t
    }

    /// What happened between `earlier` and `self` (both cumulative).
    pub fn minus(&self, earlier: &Totals) -> Totals {
        let mut d = self.clone();
        d.elapsed_s = (self.elapsed_s - earlier.elapsed_s).max(0.0);
        d.samples = self.samples.saturating_sub(earlier.samples);
        for (tid, th) in d.threads.iter_mut() {
            if let Some(e) = earlier.threads.get(tid) {
                for (c, v) in th.by_category.iter_mut() {
                    *v = (*v - e.by_category.get(c).copied().unwrap_or(0.0)).max(0.0);
                }
            }
        }
        for (k, f) in d.funcs.iter_mut() {
            if let Some(e) = earlier.funcs.get(k) {
                f.own = f.own.minus(e.own);
                f.total = f.total.minus(e.total);
            }
        }
        for (k, l) in d.locks.iter_mut() {
            if let Some(e) = earlier.locks.get(k) {
                l.wait_us = (l.wait_us - e.wait_us).max(0.0);
                l.waits = l.waits.saturating_sub(e.waits);
            }
        }
        d
    }
}

/// What the user chose to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub metric: Metric,
    pub sort: SortKey,
    /// Only this thread's functions and the locks it waited for.
    pub thread: Option<u32>,
    pub paused: bool,
}

impl Default for View {
    fn default() -> Self {
        View { metric: Metric::Wall, sort: SortKey::OwnInterval, thread: None, paused: false }
    }
}

/// One line of the thread table: shares of the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadRow {
    pub tid: u32,
    pub name: String,
    /// `exited`, else the category it spent most of the interval in.
    pub state: String,
    pub running: f64,
    pub waiting: f64,
    /// Categories with their share of the interval, largest first.
    pub parts: Vec<(Category, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FuncRow {
    pub label: String,
    pub interval: FuncTimes,
    pub overall: FuncTimes,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LockRow {
    pub description: String,
    pub kind: Category,
    pub interval_us: f64,
    pub interval_waits: u64,
    pub overall_us: f64,
    pub overall_waits: u64,
    pub top_line: Option<String>,
}

/// The model: the latest cumulative totals and the interval before them.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub overall: Totals,
    pub interval: Totals,
    /// Threads alive at the latest update.
    pub live: HashSet<u32>,
    pub updates: u64,
}

impl Model {
    /// A new cumulative snapshot arrived.
    pub fn update(&mut self, totals: Totals, live: impl IntoIterator<Item = u32>) {
        self.interval = totals.minus(&self.overall);
        self.overall = totals;
        self.live = live.into_iter().collect();
        self.updates += 1;
    }

    /// Threads, by TID (exited ones after the live ones).
    pub fn thread_rows(&self) -> Vec<ThreadRow> {
        let span_us = self.interval.elapsed_s * 1e6;
        let mut rows: Vec<ThreadRow> = self
            .overall
            .threads
            .iter()
            .map(|(&tid, th)| {
                let cats = self.interval.threads.get(&tid).map(|t| t.by_category.clone()).unwrap_or_default();
                let sum: f64 = cats.values().sum();
                // Shares of the interval's wall time (the sum when the estimates exceed it).
                let denom = span_us.max(sum).max(1.0);
                let mut parts: Vec<(Category, f64)> =
                    cats.iter().filter(|(_, &v)| v > 0.0).map(|(&c, &v)| (c, v / denom)).collect();
                parts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                // (`+ 0.0`: an empty f64 sum is -0.0.)
                let running = parts.iter().filter(|(c, _)| c.on_cpu()).map(|p| p.1).sum::<f64>() + 0.0;
                let waiting = parts.iter().filter(|(c, _)| !c.on_cpu()).map(|p| p.1).sum::<f64>() + 0.0;
                let state = if !self.live.contains(&tid) {
                    "exited".to_string()
                } else {
                    parts.first().map(|(c, _)| c.name().to_string()).unwrap_or_else(|| "-".into())
                };
                ThreadRow { tid, name: th.name.clone(), state, running, waiting, parts }
            })
            .collect();
        rows.sort_by_key(|r| (r.state == "exited", r.tid));
        rows
    }

    /// The top `n` functions for `view` (rows with no time in the metric over the sorted window
    /// are left out).
    pub fn function_rows(&self, view: &View, n: usize) -> Vec<FuncRow> {
        let mut by: HashMap<&str, FuncRow> = HashMap::new();
        let keep = |tid: u32| view.thread.is_none_or(|t| t == tid);
        for ((tid, l), f) in &self.overall.funcs {
            if !keep(*tid) {
                continue;
            }
            let row = by.entry(l).or_insert_with(|| FuncRow {
                label: l.clone(),
                interval: FuncTimes::default(),
                overall: FuncTimes::default(),
            });
            row.overall.own.add(f.own);
            row.overall.total.add(f.total);
            if let Some(i) = self.interval.funcs.get(&(*tid, l.clone())) {
                row.interval.own.add(i.own);
                row.interval.total.add(i.total);
            }
        }
        let m = view.metric;
        let key = |r: &FuncRow| match view.sort {
            SortKey::OwnInterval => r.interval.own.get(m),
            SortKey::TotalInterval => r.interval.total.get(m),
            SortKey::OwnOverall => r.overall.own.get(m),
            SortKey::TotalOverall => r.overall.total.get(m),
        };
        // Sorted by the last interval: only what ran or waited in it; else all that ever did.
        let shown =
            |r: &FuncRow| if view.sort.interval() { r.interval.total.get(m) } else { r.overall.total.get(m) } > 0.0;
        let mut rows: Vec<FuncRow> = by.into_values().filter(shown).collect();
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.label.cmp(&b.label)));
        rows.truncate(n);
        rows
    }

    /// The top `n` locks (by waiting time over the interval or overall, as the sort says).
    pub fn lock_rows(&self, view: &View, n: usize) -> Vec<LockRow> {
        let mut rows: Vec<LockRow> = self
            .overall
            .locks
            .iter()
            .filter(|(_, l)| view.thread.is_none_or(|t| l.threads.contains(&t)))
            .map(|(d, l)| {
                let i = self.interval.locks.get(d);
                LockRow {
                    description: d.clone(),
                    kind: l.kind,
                    interval_us: i.map_or(0.0, |i| i.wait_us),
                    interval_waits: i.map_or(0, |i| i.waits),
                    overall_us: l.wait_us,
                    overall_waits: l.waits,
                    top_line: l.top_line.clone(),
                }
            })
            .collect();
        let interval = view.sort.interval();
        let key = |r: &LockRow| if interval { r.interval_us } else { r.overall_us };
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.description.cmp(&b.description)));
        rows.truncate(n);
        rows
    }

    /// The thread after `current` in TID order for the filter key (`None` after the last).
    pub fn next_thread(&self, current: Option<u32>) -> Option<u32> {
        let tids: Vec<u32> = self.thread_rows().iter().filter(|r| r.state != "exited").map(|r| r.tid).collect();
        match current {
            None => tids.first().copied(),
            Some(c) => tids.iter().copied().find(|&t| t > c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(name: &str) -> analysis::Frame {
        analysis::Frame {
            kind: FrameKind::Python,
            name: name.into(),
            file: Some("/app/app.py".into()),
            line: Some(3),
            start_line: None,
            module: None,
            offset: None,
            inlined: false,
        }
    }

    fn thread_frame(tid: u32) -> analysis::Frame {
        analysis::Frame { kind: FrameKind::Thread, name: format!("t ({tid})"), file: None, line: None, ..py("") }
    }

    /// A profile with `cpu` samples of main→hot on thread 1 and `wait_us` of main→waiter waiting
    /// on a lock on thread 2 (period 1 ms).
    fn profile(cpu: u64, wait_us: u64, sleep_us: u64) -> Profile {
        let frames = vec![thread_frame(1), thread_frame(2), py("main"), py("hot"), py("waiter")];
        let st = |thread, frames, category, samples, wait_us| analysis::Stack {
            thread,
            frames,
            category,
            samples,
            wait_us,
            waits: 1,
        };
        let mut summary = analysis::Summary { samples: cpu, period_ns: 1_000_000, ..Default::default() };
        summary.rate_hz = 1000;
        Profile {
            schema_version: analysis::SCHEMA_VERSION,
            target: Default::default(),
            summary,
            threads: vec![
                analysis::ThreadInfo { tid: 1, pid: 1, name: "MainThread".into(), samples: cpu, wait_us: 0 },
                analysis::ThreadInfo { tid: 2, pid: 1, name: "w".into(), samples: 0, wait_us },
            ],
            frames,
            stacks: vec![
                st(1, vec![0, 2, 3], Category::Python, cpu, 0),
                st(2, vec![1, 2, 4], Category::Lock, 0, wait_us),
                st(2, vec![1, 2], Category::Sleep, 0, sleep_us),
            ],
            locks: vec![analysis::LockStat {
                kind: Category::Lock,
                identity: analysis::LockIdentity {
                    address: Some(0x10),
                    type_name: Some("_thread.lock".into()),
                    symbol: None,
                },
                description: "_thread.lock @ 0x10".into(),
                waits: wait_us / 100,
                samples: 0,
                total_us: wait_us,
                spin_us: 0,
                max_us: 100,
                mean_us: 100,
                threads: vec![2],
                top_lines: vec![],
                held_by: vec![],
                kernel_wait_us: None,
                kernel_runqueue_us: None,
            }],
            top_lines: vec![],
            blame: vec![],
            findings: vec![],
        }
    }

    #[test]
    fn own_and_total_per_function() {
        let t = Totals::from_profile(&profile(100, 50_000, 0), 1.0);
        let hot = t.funcs[&(1, "hot (app.py)".to_string())];
        assert_eq!(hot.own.cpu_us, 100_000.0);
        assert_eq!(hot.total.cpu_us, 100_000.0);
        let main1 = t.funcs[&(1, "main (app.py)".to_string())];
        assert_eq!(main1.own.cpu_us, 0.0);
        assert_eq!(main1.total.cpu_us, 100_000.0);
        let waiter = t.funcs[&(2, "waiter (app.py)".to_string())];
        assert_eq!(waiter.own.wait_us, 50_000.0);
        // Sleep is no waiting time for the function table (it is in the thread's shares).
        let main2 = t.funcs[&(2, "main (app.py)".to_string())];
        assert_eq!(main2.total.wait_us, 50_000.0);
    }

    #[test]
    fn interval_is_the_difference_of_cumulative_totals() {
        let mut m = Model::default();
        m.update(Totals::from_profile(&profile(100, 50_000, 0), 1.0), [1, 2]);
        m.update(Totals::from_profile(&profile(350, 80_000, 500_000), 2.0), [1, 2]);
        assert!((m.interval.elapsed_s - 1.0).abs() < 1e-9);
        assert_eq!(m.interval.samples, 250);
        let hot = m.interval.funcs[&(1, "hot (app.py)".to_string())];
        assert_eq!(hot.own.cpu_us, 250_000.0);
        assert_eq!(m.interval.locks["_thread.lock @ 0x10"].wait_us, 30_000.0);
        assert_eq!(m.overall.locks["_thread.lock @ 0x10"].wait_us, 80_000.0);
        let rows = m.thread_rows();
        assert_eq!(rows.len(), 2);
        // Thread 2: 30 ms lock, 500 ms sleep over a 1 s interval.
        let w = &rows[1];
        assert_eq!(w.tid, 2);
        assert_eq!(w.state, "sleep");
        assert!((w.waiting - 0.53).abs() < 1e-9, "{w:?}");
        assert_eq!(w.running, 0.0);
        assert_eq!(w.parts[0].0, Category::Sleep);
        assert!((w.parts[1].1 - 0.03).abs() < 1e-9);
        let r = &rows[0];
        assert_eq!(r.state, "python");
        assert!((r.running - 0.25).abs() < 1e-9);
        // A thread gone since: marked exited, listed last.
        m.update(Totals::from_profile(&profile(350, 80_000, 500_000), 3.0), [2]);
        let rows = m.thread_rows();
        assert_eq!((rows[1].tid, rows[1].state.as_str()), (1, "exited"));
        assert_eq!(rows[1].running, 0.0);
    }

    #[test]
    fn sorting_filtering_and_metrics() {
        let mut m = Model::default();
        m.update(Totals::from_profile(&profile(100, 900_000, 0), 1.0), [1, 2]);
        m.update(Totals::from_profile(&profile(900, 950_000, 0), 2.0), [1, 2]);
        let mut v = View::default();
        // Wall, own, last interval: hot (800 ms) before waiter (50 ms).
        let rows = m.function_rows(&v, 10);
        assert_eq!(rows[0].label, "hot (app.py)");
        assert_eq!(rows[1].label, "waiter (app.py)");
        // A function with nothing in the last interval is not listed when sorting by it.
        let mut quiet = m.clone();
        quiet.update(Totals::from_profile(&profile(900, 950_000, 0), 3.0), [1, 2]);
        assert!(quiet.function_rows(&v, 10).is_empty());
        assert!(!quiet.function_rows(&View { sort: SortKey::OwnOverall, ..v }, 10).is_empty());
        // Overall: waiter (950 ms) before hot (900 ms).
        v.sort = SortKey::OwnOverall;
        assert_eq!(m.function_rows(&v, 10)[0].label, "waiter (app.py)");
        // Total, overall: main is on every stack.
        v.sort = SortKey::TotalOverall;
        assert_eq!(m.function_rows(&v, 10)[0].label, "main (app.py)");
        assert_eq!(m.function_rows(&v, 10)[0].overall.total.get(Metric::Wall), 1_850_000.0);
        // CPU only: waiter has no CPU time and is left out.
        v.metric = Metric::Cpu;
        assert!(m.function_rows(&v, 10).iter().all(|r| r.label != "waiter (app.py)"));
        // Thread 2 only: no hot, and main counts its waits.
        v.metric = Metric::Wall;
        v.thread = Some(2);
        let rows = m.function_rows(&v, 10);
        assert!(rows.iter().all(|r| r.label != "hot (app.py)"));
        assert_eq!(rows.iter().find(|r| r.label == "main (app.py)").unwrap().overall.total.wait_us, 950_000.0);
        // Locks: thread 1 never waited.
        assert_eq!(m.lock_rows(&v, 5).len(), 1);
        v.thread = Some(1);
        assert!(m.lock_rows(&v, 5).is_empty());
        v.thread = None;
        v.sort = SortKey::OwnInterval;
        let l = &m.lock_rows(&v, 5)[0];
        assert_eq!((l.interval_us, l.overall_us), (50_000.0, 950_000.0));
        assert_eq!(m.function_rows(&v, 1).len(), 1);
    }

    #[test]
    fn key_cycles() {
        let mut m = Model::default();
        m.update(Totals::from_profile(&profile(1, 1, 0), 1.0), [1, 2]);
        assert_eq!(m.next_thread(None), Some(1));
        assert_eq!(m.next_thread(Some(1)), Some(2));
        assert_eq!(m.next_thread(Some(2)), None);
        let mut s = SortKey::OwnInterval;
        for _ in 0..4 {
            s = s.next();
        }
        assert_eq!(s, SortKey::OwnInterval);
        assert_eq!(Metric::Wall.next(), Metric::Cpu);
    }
}
