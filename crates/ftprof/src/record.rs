//! `ftprof record`: launch, sample (on and off CPU), read Python stacks and parked-lock
//! identities live, then unwind, classify, merge and render.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use analysis::collect::{Collector, EntryKind, SampleKey, SchedTotals};
use analysis::{Observation, Profile, ProfileBuilder, PythonInfo, SampleInput, TargetInfo};
use anyhow::{Context, Result};
use flamegraph::{Format, Mode};
use profiler::threads::{parked_addr, SchedStat, ThreadProbe};
use profiler::{Record, RecordingOutcome, Regs, SampleSource, SamplingConfig, Target};
use symbolizer::native::{Mapping, Native};
use symbolizer::python::PyProcess;

use crate::check::{check_interpreter, Interpreter, OutputFile};

/// Options of `ftprof record`.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// The command to launch (empty with `pid`).
    pub command: Vec<OsString>,
    /// Attach to this running process instead of launching.
    pub pid: Option<u32>,
    /// Stop attaching after this long.
    pub duration: Option<std::time::Duration>,
    pub output: PathBuf,
    pub format: Format,
    pub mode: Mode,
    /// Keep idle kinds (sleep, join, idle) in flamegraphs.
    pub idle: bool,
    pub rate_hz: u64,
    pub stack_bytes: u32,
    /// Record switch-outs (off-CPU time, lock waits).
    pub off_cpu: bool,
    /// Take a stack at every switch-out (exact reference mode; expensive at high switch rates)
    /// instead of sampling blocked threads.
    pub exact_waits: bool,
    pub title: Option<String>,
    /// Follow child processes and `exec`s (`--subprocesses`): each process gets its own CPython
    /// reader and mappings, and its threads are rooted under `process PID (command)`.
    pub subprocesses: bool,
}

/// Per-process Python state during recording.
enum PyState {
    Located(Box<PyProcess>),
    /// Not found yet; retry when the process maps more files (e.g. a shared libpython).
    Pending {
        mmaps_at_last_try: usize,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM stop the recording (the target gets them too, as in a terminal).
fn install_signal_handlers() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { signal(sig, SigHandler::Handler(on_signal)) };
    }
}

/// After recording, Ctrl-C interrupts ftprof itself again.
fn restore_signal_handlers() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
}

/// Thread checks per second that the wait-sampling tick may spend (each check of a running
/// thread is one `pread`; a blocked, not yet explained thread costs a stack copy and a Python
/// stack read, ~20 µs). With more threads the per-thread tick rate goes down.
pub const WAIT_CHECK_BUDGET: f64 = 4000.0;

/// A thread's scheduler accounting when first and last read, for exact per-thread totals.
#[derive(Clone, Copy, Default)]
struct SchedTrack {
    first: Option<(u64, SchedStat)>,
    last: (u64, SchedStat),
    first_ctxt: Option<(u64, u64)>,
    last_ctxt: (u64, u64),
    /// `timeslices` when it was last seen blocked, and the key it was blocked with: unchanged
    /// means it has not run since, so it still waits on the same thing.
    seen_blocked: Option<(u64, u32)>,
}

impl SchedTrack {
    fn totals(&self) -> SchedTotals {
        let Some((t0, s0)) = self.first else { return SchedTotals::default() };
        let (t1, s1) = self.last;
        let run = s1.run_ns.saturating_sub(s0.run_ns);
        let runq = s1.runqueue_ns.saturating_sub(s0.runqueue_ns);
        let (v0, n0) = self.first_ctxt.unwrap_or(self.last_ctxt);
        SchedTotals {
            blocked_ns: t1.saturating_sub(t0).saturating_sub(run + runq),
            blocked_count: self.last_ctxt.0.saturating_sub(v0),
            runqueue_ns: runq,
            runqueue_count: self.last_ctxt.1.saturating_sub(n0),
        }
    }
}

/// Records lost by one ring kind.
#[derive(Default)]
struct LostTally {
    count: u64,
    first: u64,
    last: u64,
}

/// The wait-sampling tick.
struct Tick {
    /// When the last tick ran (ns, monotonic); 0 before the first.
    last_ns: u64,
    next: Instant,
    period: std::time::Duration,
    /// Lowest per-thread rate used.
    min_rate: f64,
    count: u64,
    /// When threads were last listed from `/proc` (new ones are also known from fork records).
    listed: Option<Instant>,
}

/// Everything the recording loop touches while the target runs: it turns each record into
/// interned keys at once (Python stack read, native stack unwound, stack copy dropped).
/// `ftprof top` drives one too, and builds a profile from a copy of it every second.
pub(crate) struct Recorder {
    rate_hz: u64,
    stack_bytes: usize,
    off_cpu: bool,
    exhaustive: bool,
    attached: bool,
    collector: Collector,
    /// Unwinds at drain time (CFI only; DWARF for symbols is parsed by the preload thread).
    unwinder: Native,
    mmaps: Vec<(u32, Mapping)>,
    mmap_count: HashMap<u32, usize>,
    py: HashMap<u32, PyState>,
    names: HashMap<u32, (u32, String)>,
    py_errors: usize,
    last_time: u64,
    /// Last GIL state read from each process (it can change at run time).
    gil: HashMap<u32, bool>,
    gil_countdown: u32,
    /// `threading.Thread` names by TID, and when they were last read.
    py_names: HashMap<u32, String>,
    names_read_at: Option<Instant>,
    probe: ThreadProbe,
    tick: Tick,
    sched: HashMap<u32, SchedTrack>,
    lost_samples: LostTally,
    lost_switches: LostTally,
    start_ns: u64,
    /// Who held what blocked threads waited on (blame).
    holders: crate::holders::HolderSampler,
    /// Stacks unwound at drain time, and the time it took.
    unwound: u64,
    unwind_time: std::time::Duration,
    /// The GIL turning on in a free-threaded target, and the module that did it.
    gil_watch: crate::gil_watch::GilWatch,
    /// Names the object a CPU sample's instruction works on (refcount stalls).
    operands: symbolizer::python::OperandReader,
    /// `--subprocesses`; without it, only the target process's records are kept.
    subprocesses: bool,
    /// The process launched or attached to (known once started).
    target: Option<u32>,
    /// With `--subprocesses`: each followed process's command line (read when first seen, again
    /// after an exec), in the order they were seen.
    processes: Vec<(u32, String)>,
    /// Processes that exec'd: their mappings come from mmap records, never from `/proc`.
    execed: std::collections::HashSet<u32>,
}

impl Recorder {
    pub(crate) fn new(opts: &RecordOptions, exhaustive: bool) -> Recorder {
        Recorder {
            rate_hz: opts.rate_hz.max(1),
            stack_bytes: opts.stack_bytes as usize,
            off_cpu: opts.off_cpu,
            exhaustive,
            attached: opts.pid.is_some(),
            collector: {
                let mut c = Collector::new();
                // Two threads' samples this close were on CPUs at the same moment.
                c.set_overlap_window(profiler::perf::sample_period_ns(opts.rate_hz.max(1)));
                c
            },
            unwinder: Native::new(),
            mmaps: Vec::new(),
            mmap_count: HashMap::new(),
            py: HashMap::new(),
            names: HashMap::new(),
            py_errors: 0,
            last_time: 0,
            gil: HashMap::new(),
            gil_countdown: 0,
            py_names: HashMap::new(),
            names_read_at: None,
            probe: ThreadProbe::new(),
            tick: Tick {
                last_ns: 0,
                next: Instant::now(),
                period: std::time::Duration::from_millis(10),
                min_rate: f64::INFINITY,
                count: 0,
                listed: None,
            },
            sched: HashMap::new(),
            lost_samples: LostTally::default(),
            lost_switches: LostTally::default(),
            start_ns: 0,
            holders: crate::holders::HolderSampler::new(),
            unwound: 0,
            unwind_time: std::time::Duration::ZERO,
            gil_watch: Default::default(),
            operands: Default::default(),
            subprocesses: opts.subprocesses,
            target: None,
            processes: Vec::new(),
            execed: Default::default(),
        }
    }

    /// Whether records of process `pid` are kept: the target's always, others' with
    /// `--subprocesses`.
    fn follows(&self, pid: u32) -> bool {
        self.subprocesses || self.target.is_none_or(|t| t == pid)
    }

    /// `--subprocesses`: first sight of a process (forked, or found at attach): its command
    /// line, and the mappings it has now when none were reported (a forked child inherits its
    /// parent's without mmap records).
    fn note_process(&mut self, pid: u32) {
        if !self.subprocesses || self.processes.iter().any(|(p, _)| *p == pid) {
            return;
        }
        let cmd = crate::snapshot::cmdline(pid).join(" ");
        self.processes.push((pid, cmd));
        if self.mmap_count.get(&pid).copied().unwrap_or(0) == 0 && !self.execed.contains(&pid) {
            self.add_mappings_now(pid);
        }
    }

    /// `--subprocesses`: process `pid` replaced its image: forget its mappings (the new ones
    /// arrive as mmap records), its CPython reader and its command line.
    fn on_exec(&mut self, pid: u32, comm: &str) {
        self.execed.insert(pid);
        self.unwinder.remove_process(pid);
        self.mmaps.retain(|(p, _)| *p != pid);
        self.mmap_count.insert(pid, 0);
        self.py.insert(pid, PyState::Pending { mmaps_at_last_try: usize::MAX });
        self.gil.remove(&pid);
        // The command line of the new image; its name when it already exited.
        let cmd = crate::snapshot::cmdline(pid).join(" ");
        let cmd = if cmd.is_empty() { comm.to_string() } else { cmd };
        match self.processes.iter_mut().find(|(p, _)| *p == pid) {
            Some(e) => e.1 = cmd,
            None => self.processes.push((pid, cmd)),
        }
    }

    fn python_process(&mut self, pid: u32) -> Option<&mut PyProcess> {
        let maps_now = self.mmap_count.get(&pid).copied().unwrap_or(0);
        let state = self.py.entry(pid).or_insert(PyState::Pending { mmaps_at_last_try: usize::MAX });
        if let PyState::Pending { mmaps_at_last_try } = state {
            if *mmaps_at_last_try == maps_now {
                return None;
            }
            match PyProcess::locate(pid) {
                Ok(p) => *state = PyState::Located(Box::new(p)),
                Err(_) => {
                    *state = PyState::Pending { mmaps_at_last_try: maps_now };
                    return None;
                }
            }
        }
        match state {
            PyState::Located(p) => Some(p),
            PyState::Pending { .. } => None,
        }
    }

    /// The executable mappings process `pid` has now (`/proc/PID/maps`).
    fn add_mappings_now(&mut self, pid: u32) {
        if let Ok(maps) = symbolizer::python::read_maps(pid) {
            for m in maps.into_iter().filter(|m| m.perms.contains('x')) {
                self.add_mapping(pid, Mapping { start: m.start, end: m.end, pgoff: m.pgoff, path: m.path });
            }
        }
    }

    fn add_mapping(&mut self, pid: u32, m: Mapping) {
        self.gil_watch.mapped(pid, &m.path);
        *self.mmap_count.entry(pid).or_default() += 1;
        self.unwinder.add_mapping(pid, m.clone());
        self.mmaps.push((pid, m));
    }

    /// Read what the target's memory says about thread `tid` now (Python stack, the parked-on
    /// lock), unwind the native stack and intern it all.
    #[allow(clippy::too_many_arguments)]
    fn key(
        &mut self,
        pid: u32,
        tid: u32,
        regs: Option<Regs>,
        stack: &[u8],
        kernel: Vec<u64>,
        parked_lookup: bool,
        syscall: Option<u64>,
        on_cpu: bool,
    ) -> u32 {
        self.note_process(pid);
        if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(tid) {
            e.insert((pid, crate::snapshot::thread_name(pid, tid)));
        }
        let mut python = None;
        let mut parked = None;
        let mut failed = false;
        let refresh_gil = self.gil_countdown == 0 || !self.gil.contains_key(&pid);
        let mut gil = None;
        // A thread not named yet: read the names again (at most every 100 ms).
        let refresh_names =
            !self.py_names.contains_key(&tid) && self.names_read_at.is_none_or(|t| t.elapsed().as_millis() >= 100);
        let mut names = None;
        let mut operand = None;
        let mut operands = std::mem::take(&mut self.operands);
        if let (Some(r), Some(p)) = (regs, self.python_process(pid)) {
            match p.stack_for_tid(tid) {
                Ok(st) => python = st,
                Err(_) => failed = true,
            }
            // Shared reference counts exist in free-threaded builds only.
            if on_cpu && p.offsets.free_threaded {
                operand = python.as_ref().and_then(|st| operands.read(p, tid, st));
            }
            if parked_lookup {
                parked = parked_addr(&r, stack).map(|a| p.probe_parked(tid, a));
            }
            if refresh_gil {
                gil = p.gil_enabled().ok();
            }
            if refresh_names {
                names = Some(p.thread_names_by_tid());
            }
        }
        self.operands = operands;
        self.gil_countdown = if refresh_gil { 64 } else { self.gil_countdown - 1 };
        if let Some(n) = names {
            self.py_names.extend(n);
            self.names_read_at = Some(Instant::now());
        }
        if let Some(g) = gil {
            self.gil.insert(pid, g);
        }
        self.py_errors += failed as usize;
        let (native, native_complete) = match regs {
            Some(r) => {
                let t = Instant::now();
                let uw = self.unwinder.unwind(pid, r, stack);
                self.unwind_time += t.elapsed();
                self.unwound += 1;
                (uw.addrs, uw.complete)
            }
            None => (Vec::new(), false),
        };
        let python = python.map(|p| self.collector.python_id(p));
        let alone = self.collector.live_threads_of(pid) <= 1;
        self.collector.key_id(SampleKey {
            pid,
            tid,
            native,
            native_complete,
            python,
            kernel,
            parked,
            syscall,
            on_cpu,
            alone,
            operand,
        })
    }

    fn on_sample(&mut self, s: profiler::Sample) {
        self.last_time = self.last_time.max(s.time);
        match s.source {
            SampleSource::CpuClock => {
                let k = self.key(s.pid, s.tid, s.regs, &s.stack, s.kernel_stack, false, None, true);
                self.collector.cpu_sample_at(k, s.time);
            }
            SampleSource::SwitchOut => {
                let k = self.key(s.pid, s.tid, s.regs, &s.stack, Vec::new(), true, None, false);
                self.collector.push_observe(s.tid, s.time, k, true, 0);
            }
        }
    }

    /// Read the target's GIL state (free-threaded builds) every few milliseconds.
    fn watch_gil(&mut self) {
        let now = profiler::monotonic_ns();
        let pid = self.gil_watch.pid;
        if pid == 0 || !self.gil_watch.due(now) || self.python_process(pid).is_none() {
            return;
        }
        if let Some(PyState::Located(p)) = self.py.get(&pid) {
            self.gil_watch.check(p, now);
        }
    }

    /// Threads already blocked when ftprof attaches: their wait began before the first
    /// switch-out we can see, so take their stacks now (as if observed at a switch-out).
    fn snapshot_blocked_at_attach(&mut self, pid: u32) {
        let now = profiler::monotonic_ns();
        for tid in profiler::perf::process_tids(pid as i32) {
            let tid = tid as u32;
            self.collector.thread_seen(pid, tid);
            if !matches!(crate::snapshot::thread_state(pid, tid), Some('S') | Some('D')) {
                continue;
            }
            let Some(b) = self.probe.blocked(pid, tid, self.stack_bytes) else { continue };
            let k = self.key(pid, tid, Some(b.regs), &b.stack, Vec::new(), true, b.syscall, false);
            self.collector.assume_blocked(pid, tid, now);
            self.collector.observe(tid, now, k, true, 0);
        }
    }

    /// The wait-sampling tick: read every live thread's scheduler accounting (exact running,
    /// runqueue and blocked time) and snapshot the ones blocked now, unless they have not run
    /// since their last snapshot (then it is still the same wait). Returns how long until the
    /// next tick.
    fn sample_blocked(&mut self, snapshots: bool) -> std::time::Duration {
        let now_i = Instant::now();
        if now_i < self.tick.next {
            return self.tick.next - now_i;
        }
        let now = profiler::monotonic_ns();
        let gap = if self.tick.last_ns == 0 { self.tick.period.as_nanos() as u64 } else { now - self.tick.last_ns };
        self.tick.last_ns = now;
        self.tick.count += 1;
        if self.tick.listed.is_none_or(|t| t.elapsed().as_millis() >= 500) {
            self.tick.listed = Some(now_i);
            let pids: Vec<u32> = self.py.keys().copied().collect();
            for pid in pids {
                for tid in profiler::perf::process_tids(pid as i32) {
                    self.collector.thread_seen(pid, tid as u32);
                }
            }
        }
        // The context-switch counters are text to format: read them every 8th tick.
        let read_ctxt = self.tick.count % 8 == 1;
        let mut waiters: Vec<(u32, crate::holders::Waiter)> = Vec::new();
        for (pid, tid) in self.collector.live_thread_list() {
            let t = profiler::monotonic_ns();
            let Some(st) = self.probe.schedstat(pid, tid) else { continue };
            let ctxt = if read_ctxt { self.probe.ctxt_switches(pid, tid) } else { None };
            let track = self.sched.entry(tid).or_default();
            track.first.get_or_insert((t, st));
            track.last = (t, st);
            if let Some(c) = ctxt {
                track.first_ctxt.get_or_insert(c);
                track.last_ctxt = c;
            }
            let totals = track.totals();
            let seen = track.seen_blocked;
            self.collector.set_sched(pid, tid, totals);
            if !snapshots {
                continue;
            }
            let Some((syscall, regs)) = self.probe.syscall(pid, tid) else { continue };
            let (key, continued) = match seen {
                Some((slices, key)) if slices == st.timeslices => (key, true),
                _ => {
                    let stack = profiler::threads::read_stack(pid, regs.sp, self.stack_bytes);
                    (self.key(pid, tid, Some(regs), &stack, Vec::new(), true, syscall, false), false)
                }
            };
            self.collector.observe_blocked(pid, tid, key, gap, continued);
            let notification = analysis::wait::is_notification_wait(self.collector.python_of(key));
            let parked = self.collector.parked_of(key).filter(|_| !notification);
            if let Some(lock) = parked.and_then(crate::holders::WaitedLock::from_parked) {
                let at = self.collector.python_of(key).and_then(crate::holders::innermost);
                waiters.push((pid, crate::holders::Waiter { tid, lock, weight_ns: gap, at }));
            }
            if let Some(track) = self.sched.get_mut(&tid) {
                track.seen_blocked = Some((st.timeslices, key));
            }
        }
        self.sample_holders(&waiters);
        let live = self.collector.live_threads().max(1) as f64;
        let rate = (self.rate_hz as f64).min(WAIT_CHECK_BUDGET / live);
        self.tick.min_rate = self.tick.min_rate.min(rate);
        self.tick.period = std::time::Duration::from_secs_f64(1.0 / rate);
        self.tick.next = now_i + self.tick.period;
        self.tick.period
    }
}

impl Recorder {
    /// Blame: find who holds what this tick's waiters wait on (see [`crate::holders`]).
    /// `FTPROF_NO_BLAME=1` turns it off (to measure its cost).
    fn sample_holders(&mut self, waiters: &[(u32, crate::holders::Waiter)]) {
        if self.holders.disabled || waiters.is_empty() {
            return;
        }
        let mut pids: Vec<u32> = waiters.iter().map(|w| w.0).collect();
        pids.dedup();
        let live = self.collector.live_thread_list();
        for pid in pids {
            let Some(PyState::Located(py)) = self.py.get_mut(&pid) else { continue };
            let threads: Vec<u32> = live.iter().filter(|t| t.0 == pid).map(|t| t.1).collect();
            let ws: Vec<crate::holders::Waiter> = waiters.iter().filter(|w| w.0 == pid).map(|w| w.1).collect();
            // Woken since a tick saw it blocked, and not run since: it may have been handed a lock.
            let (probe, sched) = (&mut self.probe, &self.sched);
            let mut woken_not_run = |tid: u32| {
                let Some((slices, _)) = sched.get(&tid).and_then(|t| t.seen_blocked) else { return false };
                !matches!(crate::snapshot::thread_state(pid, tid), Some('S') | Some('D'))
                    && probe.schedstat(pid, tid).is_some_and(|s| s.timeslices == slices)
            };
            self.holders.sample(py, &threads, &ws, &mut woken_not_run);
        }
    }
}

impl profiler::Sink for Recorder {
    fn started(&mut self, pid: i32) {
        let pid = pid as u32;
        self.start_ns = profiler::monotonic_ns();
        self.target = Some(pid);
        self.collector.thread_seen(pid, pid);
        self.gil_watch.start(pid, self.attached, self.start_ns);
        if self.attached {
            // Mappings made before we arrived are not reported by perf: read them now that the
            // events are live (later ones arrive as mmap records).
            self.add_mappings_now(pid);
            if self.off_cpu {
                self.snapshot_blocked_at_attach(pid);
            }
        }
        if self.subprocesses {
            self.note_process(pid);
            // Attached: the processes it started before we arrived (launched: none yet).
            for child in profiler::threads::descendants(pid) {
                self.note_process(child);
                self.collector.thread_seen(child, child);
                if self.attached && self.off_cpu {
                    self.snapshot_blocked_at_attach(child);
                }
            }
        }
    }

    fn record(&mut self, r: Record) {
        let pid = match &r {
            Record::Sample(s) => Some(s.pid),
            Record::Mmap(m) => Some(m.pid),
            Record::Switch { pid, .. }
            | Record::Comm { pid, .. }
            | Record::Fork { pid, .. }
            | Record::Exit { pid, .. } => Some(*pid),
            _ => None,
        };
        if pid.is_some_and(|p| !self.follows(p)) {
            return;
        }
        match r {
            Record::Sample(s) => self.on_sample(s),
            Record::Switch { pid, tid, time, out, preempt } => {
                self.last_time = self.last_time.max(time);
                self.collector.push_switch(pid, tid, time, out, preempt);
            }
            Record::Mmap(m) if m.executable => {
                self.add_mapping(m.pid, Mapping { start: m.start, end: m.start + m.len, pgoff: m.pgoff, path: m.path })
            }
            Record::Comm { pid, tid, name, exec } => {
                if exec && self.subprocesses {
                    self.on_exec(pid, &name);
                }
                self.names.insert(tid, (pid, name));
            }
            Record::Fork { pid, ppid, tid, .. } => {
                if self.subprocesses && pid != ppid && self.mmap_count.get(&pid).copied().unwrap_or(0) == 0 {
                    // A new process: it inherits its parent's mappings (no mmap records for them).
                    let inherited: Vec<Mapping> =
                        self.mmaps.iter().filter(|(p, _)| *p == ppid).map(|(_, m)| m.clone()).collect();
                    for m in inherited {
                        self.add_mapping(pid, m);
                    }
                    self.note_process(pid);
                }
                self.collector.thread_seen(pid, tid)
            }
            Record::Exit { tid, time, .. } => {
                self.collector.push_exit(tid, time);
                self.probe.forget(tid);
            }
            Record::Lost { count, time, source } => {
                let tally = match source {
                    SampleSource::CpuClock => &mut self.lost_samples,
                    SampleSource::SwitchOut => {
                        self.collector.push_lost(time);
                        &mut self.lost_switches
                    }
                };
                if tally.count == 0 {
                    tally.first = time;
                }
                tally.count += count;
                tally.last = time;
            }
            Record::Drained { upto } => self.collector.release(upto),
            _ => {}
        }
    }

    fn tick(&mut self) -> std::time::Duration {
        self.watch_gil();
        if self.off_cpu {
            // In the exhaustive mode switch-out samples give the stacks; the kernel's totals still
            // say how much of each interval was blocked and how much was waiting for a CPU.
            self.sample_blocked(!self.exhaustive)
        } else {
            std::time::Duration::from_millis(10)
        }
    }
}

/// ftprof's cache directory (`$FTPROF_CACHE`, else `~/.cache/ftprof`), shared with the
/// CPython provisioning script.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTPROF_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"));
    base.join("ftprof")
}

fn timing() -> bool {
    std::env::var_os("FTPROF_TIMING").is_some()
}

/// The ELF holding the CPython runtime of the target: the running process `pid` (checked, and
/// returned as the attach target) or else the interpreter `command` launches.
pub(crate) fn resolve_interpreter(
    pid: Option<u32>,
    command: &[OsString],
) -> Result<(PathBuf, Option<crate::check::AttachTarget>)> {
    Ok(match pid {
        Some(pid) => {
            let t = crate::check::check_process(pid)?;
            (PathBuf::from(&t.runtime_module), Some(t))
        }
        None => {
            let Interpreter::CPython { path, .. } = check_interpreter(command)?;
            (path, None)
        }
    })
}

/// Run `ftprof record`. Returns the exit code ftprof should exit with (the target's).
pub fn run(opts: &RecordOptions) -> Result<i32> {
    let t0 = Instant::now();
    let (interp, attach) = resolve_interpreter(opts.pid, &opts.command)?;
    if timing() {
        eprintln!("ftprof timing: interpreter check {:?}", t0.elapsed());
    }
    let out = OutputFile::open(&opts.output)?;
    install_signal_handlers();
    let target = match &attach {
        Some(t) => Target::Attach { pid: t.pid as i32, duration: opts.duration },
        None => Target::Launch(opts.command.clone()),
    };
    let t_post = Instant::now();
    let recorded = record_profile(&target, &interp, opts);
    restore_signal_handlers();
    let (profile, outcome) = recorded?;
    let bytes = render(&profile, opts)?;
    if timing() {
        eprintln!("ftprof timing: recording + post-processing {:?}", t_post.elapsed());
    }
    let path = out.path.clone();
    out.write_all(&bytes).with_context(|| format!("writing {}", path.display()))?;
    eprint!("{}", flamegraph::summary_text(&profile));
    eprintln!("ftprof: wrote {}", path.display());
    crate::report::how_to_open(opts.format);
    if opts.subprocesses && !outcome.followed_children {
        eprintln!(
            "ftprof: warning: --subprocesses: child processes were not followed (attaching without CPU-wide events; run as root or grant CAP_PERFMON)"
        );
    }
    if let Some(t) = &attach {
        let how = match outcome.stop {
            profiler::StopReason::TargetExited => "the target exited during recording: the profile is partial",
            profiler::StopReason::Interrupted => "interrupted; the target keeps running",
            profiler::StopReason::Duration => "detached; the target keeps running",
        };
        eprintln!("ftprof: attached to pid {} for {:.1} s — {how}", t.pid, outcome.duration.as_secs_f64());
        return Ok(0);
    }
    Ok(outcome.exit.map_or(0, profiler::ExitStatus::shell_code))
}

/// The perf sampling set-up for `opts`.
pub(crate) fn sampling_config(opts: &RecordOptions) -> SamplingConfig {
    SamplingConfig {
        rate_hz: opts.rate_hz,
        stack_bytes: opts.stack_bytes,
        // Switch-outs are sampled by the kernel only in the exhaustive mode; by default blocked
        // threads are sampled from /proc by the tick (see `Recorder::sample_blocked`).
        off_cpu: opts.off_cpu && opts.exact_waits,
        follow_children: opts.subprocesses,
        ..Default::default()
    }
}

/// Record `target` and build its profile (no output written). `interp` is the ELF holding the
/// CPython runtime (its debug data is parsed while the target runs).
pub fn record_profile(
    target: &Target,
    interp: &std::path::Path,
    opts: &RecordOptions,
) -> Result<(Profile, RecordingOutcome)> {
    let cfg = sampling_config(opts);

    // Parse the interpreter's ELF and DWARF on the other core while the target runs.
    let interp = interp.canonicalize().unwrap_or(interp.to_path_buf()).to_string_lossy().into_owned();
    // Opcode names (a cache file, or one run of the interpreter) name the objects that refcount
    // stalls work on while the target runs.
    let opnames_now = symbolizer::python::opcodes::base_opnames_cached(std::path::Path::new(&interp), &cache_dir())
        .unwrap_or_default();
    let caches_now = symbolizer::python::opcodes::inline_caches_cached(std::path::Path::new(&interp), &cache_dir())
        .unwrap_or_default();
    let preload = std::thread::spawn(move || {
        // SCHED_IDLE: only use a CPU the target leaves idle, never delay the target (a nice-19
        // thread still runs whole slices before a woken target thread gets the CPU, which the
        // target would see as runqueue time). Starved for a whole recording, it needs ~50 ms
        // (the ELF and DWARF indexes; compilation units are parsed lazily) once the target exits.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter block.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        preload(&interp)
    });
    let mut rec = Recorder::new(opts, cfg.off_cpu);
    rec.operands = symbolizer::python::OperandReader::new(opnames_now, caches_now);
    let outcome = profiler::record(target, &cfg, &STOP, &mut rec)?;
    if timing() {
        use nix::sys::resource::{getrusage, UsageWho};
        let ru = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF) cannot fail");
        let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let (keys, pys) = rec.collector.distinct();
        eprintln!(
            "ftprof timing: ftprof CPU while recording {:.3} s user, {:.3} s sys ({} CPU samples, {} distinct keys, {} Python stacks, {} py read errors)",
            tv(ru.user_time()),
            tv(ru.system_time()),
            rec.collector.stats.cpu_samples,
            keys,
            pys,
            rec.py_errors
        );
    }
    let t_post = Instant::now();
    let (native, opnames, kallsyms) = preload.join().unwrap_or_default();
    if timing() {
        eprintln!("ftprof timing: preload joined after {:?}", t_post.elapsed());
    }
    let profile = build_profile(rec, native, opnames, &kallsyms, &outcome, opts);
    Ok((profile, outcome))
}

/// What symbolization needs, parsed from the interpreter `interp` (canonical path): its ELF and
/// DWARF indexes and those of the libraries it links, its opcode names, the kernel's symbols.
pub(crate) fn preload(interp: &str) -> (Native, Vec<String>, symbolizer::kernel::Kallsyms) {
    let mut native = Native::new();
    // Full DWARF (with a separate debug file's, e.g. a distribution's -dbg package) for the
    // interpreter; only names from other modules' debug files.
    native.set_separate_dwarf(false);
    native.preload_with(interp, &[analysis::EVAL_FRAME_FN], true);
    // The libraries it links (libc above all) appear in almost every stack.
    for lib in
        symbolizer::native::ElfFile::open_shared(std::path::Path::new(interp)).map(|e| e.needed()).unwrap_or_default()
    {
        let found = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib", "/lib"]
            .iter()
            .map(|d| std::path::Path::new(d).join(&lib))
            .find(|p| p.exists());
        if let Some(path) = found.and_then(|p| p.canonicalize().ok()) {
            native.preload_with(&path.to_string_lossy(), &[], false);
        }
    }
    let opnames = symbolizer::python::opcodes::base_opnames_cached(std::path::Path::new(interp), &cache_dir())
        .unwrap_or_default();
    let kallsyms = symbolizer::kernel::Kallsyms::load_cached(&cache_dir());
    (native, opnames, kallsyms)
}

impl Recorder {
    /// Mappings seen so far (`ftprof top` hands new ones to its symbolizer).
    pub(crate) fn mappings(&self) -> &[(u32, Mapping)] {
        &self.mmaps
    }

    /// Threads alive now (seen and not exited), by TID.
    pub(crate) fn live_threads(&self) -> Vec<u32> {
        self.collector.live_thread_list().into_iter().map(|(_, tid)| tid).collect()
    }

    /// Records lost so far (samples' and switches' rings).
    pub(crate) fn lost(&self) -> (u64, u64) {
        (self.lost_samples.count, self.lost_switches.count)
    }

    /// Everything collected so far, with open intervals closed at `end`; recording goes on.
    pub(crate) fn snapshot(&self, end: u64) -> analysis::collect::Collection {
        self.collector.clone().finish(end)
    }
}

/// Marker above the leaf of blocked time that no observation explains.
const UNOBSERVED_MARKER: &str = "[off-CPU, not observed]";

/// Symbolize, classify and aggregate everything collected.
fn build_profile(
    mut rec: Recorder,
    mut native: Native,
    opnames: Vec<String>,
    kallsyms: &symbolizer::kernel::Kallsyms,
    outcome: &RecordingOutcome,
    opts: &RecordOptions,
) -> Profile {
    for (pid, m) in &rec.mmaps {
        native.add_mapping(*pid, m.clone());
    }
    let end = rec.last_time.max(outcome.start_ns + outcome.duration.as_nanos() as u64);
    let collection = std::mem::take(&mut rec.collector).finish(end);
    profile_of(&rec, collection, &mut native, opnames, kallsyms, outcome, opts)
}

/// Symbolize, classify and aggregate `collection` (collected by `rec`, whose mappings `native`
/// already has).
pub(crate) fn profile_of(
    rec: &Recorder,
    mut collection: analysis::collect::Collection,
    native: &mut Native,
    opnames: Vec<String>,
    kallsyms: &symbolizer::kernel::Kallsyms,
    outcome: &RecordingOutcome,
    opts: &RecordOptions,
) -> Profile {
    let t = Instant::now();
    let pid = outcome.pid as u32;
    let python = match rec.py.get(&pid) {
        Some(PyState::Located(p)) => Some(PythonInfo {
            version: p.offsets.version_string(),
            free_threaded: p.offsets.free_threaded,
            gil_enabled: rec.gil.get(&pid).copied().or_else(|| p.gil_enabled().ok()),
            runtime_module: p.module.clone(),
            gil_reenabled: rec.gil_watch.result(),
        }),
        _ => None,
    };
    let command = if opts.command.is_empty() {
        crate::snapshot::cmdline(pid)
    } else {
        opts.command.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let attached = opts.pid.is_some();
    let target_info = TargetInfo {
        command,
        pid,
        python,
        exit: outcome.exit.map(|e| e.to_string()),
        interrupted: outcome.stop == profiler::StopReason::Interrupted,
        attached,
        partial: attached && outcome.stop == profiler::StopReason::TargetExited,
    };
    let mut builder = ProfileBuilder::new(profiler::perf::sample_period_ns(opts.rate_hz));
    // The launched process's runtime module first: it decides "running Python" vs "native".
    let mut core: Vec<String> = rec
        .py
        .values()
        .filter_map(|s| match s {
            PyState::Located(py) => Some(py.module.clone()),
            PyState::Pending { .. } => None,
        })
        .collect();
    if let Some(PyState::Located(p)) = rec.py.get(&pid) {
        core.retain(|m| m != &p.module);
        core.insert(0, p.module.clone());
    }
    builder.set_core_modules(core);
    builder.set_opnames(opnames);
    // --subprocesses: every process followed, rooted under `process PID (command)`; processes
    // without a CPython runtime are skipped and listed.
    let mut skipped: std::collections::HashSet<u32> = Default::default();
    let mut processes = Vec::new();
    let mut followed = rec.processes.clone();
    if opts.subprocesses {
        // A process known only from its threads (never sampled nor forked in view): its name.
        for (p, comm) in rec.names.values() {
            if !followed.iter().any(|(q, _)| q == p) {
                followed.push((*p, comm.clone()));
            }
        }
    }
    for (p, rec_cmd) in &followed {
        // Exited before its command line was read: the name of its main thread.
        let named;
        let rec_cmd = if rec_cmd.is_empty() {
            named = rec.names.get(p).map(|(_, n)| n.clone()).unwrap_or_default();
            &named
        } else {
            rec_cmd
        };
        let python = matches!(rec.py.get(p), Some(PyState::Located(_)));
        if !python && *p != pid {
            skipped.insert(*p);
        }
        // The program's base name and its arguments, at most 80 characters.
        let cmd = match rec_cmd.split_once(' ') {
            Some((argv0, rest)) => format!("{} {rest}", argv0.rsplit('/').next().unwrap_or(argv0)),
            None => rec_cmd.rsplit('/').next().unwrap_or(rec_cmd).to_string(),
        };
        let short: String =
            if cmd.chars().count() > 80 { cmd.chars().take(79).chain(std::iter::once('…')).collect() } else { cmd };
        builder.set_process(*p, &format!("process {p} ({short})"));
        processes.push(analysis::ProcessInfo { pid: *p, command: rec_cmd.clone(), python });
    }
    for (tid, (pid, comm)) in rec.names.iter().filter(|(_, (p, _))| !skipped.contains(p)) {
        // The Python thread name when there is one (3.13 does not pass it to the OS).
        builder.set_thread(*tid, *pid, rec.py_names.get(tid).unwrap_or(comm));
    }
    let start_ns = rec.start_ns.max(outcome.start_ns);
    let lost_range = |ring: &str, l: &LostTally| {
        (l.count > 0).then(|| analysis::LostRange {
            ring: ring.into(),
            count: l.count,
            first_s: l.first.saturating_sub(start_ns) as f64 / 1e9,
            last_s: l.last.saturating_sub(start_ns) as f64 / 1e9,
        })
    };
    let lost: Vec<analysis::LostRange> =
        [lost_range("samples", &rec.lost_samples), lost_range("switches", &rec.lost_switches)]
            .into_iter()
            .flatten()
            .collect();
    let wait_rate = rec.tick.min_rate;
    if timing() {
        eprintln!(
            "ftprof timing: unwound {} stacks in {:.6} s while recording",
            rec.unwound,
            rec.unwind_time.as_secs_f64()
        );
    }
    analysis::objects::settle_operands(&mut collection.entries);
    let blame = rec.holders.clone().finish();
    let t_sym = Instant::now();
    let mut symbolized = 0usize;
    if timing() {
        eprintln!(
            "ftprof timing: mappings + kallsyms ready after {:?} ({} distinct keys to symbolize)",
            t.elapsed(),
            collection.entries.len()
        );
    }
    for e in collection.entries.iter().filter(|e| !skipped.contains(&e.key.pid)) {
        let kernel: Vec<String> = e
            .key
            .kernel
            .iter()
            .map(|&a| kallsyms.lookup(a).map(str::to_string).unwrap_or_else(|| format!("{a:#x}")))
            .collect();
        let chains: Vec<_> =
            e.key.native.iter().enumerate().map(|(i, &a)| native.symbolize(e.key.pid, a, i > 0)).collect();
        symbolized += chains.len();
        // The instruction before the sampled one: a stalled atomic shows up there.
        let leaf_prev = match (e.kind, e.key.native.first()) {
            (EntryKind::Cpu, Some(&ip)) => native.symbolize(e.key.pid, ip, true),
            _ => Vec::new(),
        };
        // CPU samples taken while another thread worked on the same thing, and the others.
        let parts = match e.kind {
            EntryKind::Cpu => vec![
                (Observation::Cpu { samples: e.concurrent }, true),
                (Observation::Cpu { samples: e.samples - e.concurrent }, false),
            ],
            kind => vec![(
                Observation::OffCpu {
                    wait_us: e.wait.time_us,
                    waits: e.wait.waits,
                    max_us: e.wait.max_us,
                    preempted: matches!(kind, EntryKind::Preempted | EntryKind::Runqueue),
                },
                true,
            )],
        };
        for (observation, concurrent) in parts {
            if observation == (Observation::Cpu { samples: 0 }) {
                continue;
            }
            builder.add(&SampleInput {
                tid: e.key.tid,
                native: &chains,
                native_complete: e.key.native_complete,
                python: e.python.as_ref(),
                kernel: &kernel,
                leaf_prev: &leaf_prev,
                parked: e.key.parked.as_ref(),
                observation,
                alone: e.key.alone,
                marker: (e.kind == EntryKind::Unobserved).then_some(UNOBSERVED_MARKER),
                syscall: e.key.syscall,
                operand: e.key.operand.as_ref(),
                concurrent,
            });
        }
    }
    if timing() {
        eprintln!(
            "ftprof timing: symbolized {symbolized} addresses in {:.6} s (with classification); samples processed after {:?}",
            t_sym.elapsed().as_secs_f64(),
            t.elapsed()
        );
    }
    let sum = &mut builder.summary;
    sum.duration_s = outcome.duration.as_secs_f64();
    sum.rate_hz = opts.rate_hz;
    sum.lost_records = outcome.lost + outcome.lost_switches;
    sum.lost = lost;
    sum.target_cpu_s = outcome.target_cpu_seconds;
    sum.switch_outs = collection.stats.intervals;
    sum.observed_waits = collection.stats.observed_intervals;
    sum.unobserved_us = collection.unobserved_us;
    sum.sched_corrected_threads = collection.stats.sched_corrected;
    sum.wait_mode = match (opts.off_cpu, opts.exact_waits) {
        (false, _) => "off",
        (true, true) => "exhaustive",
        (true, false) => "sampled",
    }
    .into();
    sum.wait_rate_hz = (opts.off_cpu && !opts.exact_waits && wait_rate.is_finite()).then_some(wait_rate);
    sum.processes = processes;
    let mut profile = builder.finish(target_info);
    if opts.off_cpu && !opts.exact_waits {
        analysis::blame::attach(&mut profile, &blame);
    }
    profile.with_findings()
}

fn render(profile: &Profile, opts: &RecordOptions) -> Result<Vec<u8>> {
    flamegraph::render(profile, opts.format, opts.title.as_deref(), opts.mode, opts.idle)
}
