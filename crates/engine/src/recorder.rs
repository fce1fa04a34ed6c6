//! The recording state machine: [`Recorder`] turns each drained record into interned sample
//! keys at once (Python stack read, native stack unwound, stack copy dropped), and its tick
//! samples blocked threads and their lock holders. [`record`] drives one from an
//! [`EventSource`] and builds the profile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use analysis::collect::{Collector, SampleKey, SchedTotals};
use analysis::Profile;
use anyhow::Result;
use profiler::threads::{parked_addr, SchedStat};
use profiler::{Record, RecordingOutcome, Regs, SampleSource};
use symbolizer::native::{Mapping, Native};
use symbolizer::python::PyProcess;

use crate::{EngineConfig, EventSource, LiveMemory, MemorySource, ProcThreads, ThreadSource, Waits};

/// Per-process Python state during recording.
pub(crate) enum PyState {
    Located(Box<PyProcess>),
    /// Not found yet; retry when the process maps more files (e.g. a shared libpython).
    Pending {
        mmaps_at_last_try: usize,
    },
}

/// Thread checks per second that the wait-sampling tick may spend (each check of a running
/// thread is one `pread`; a blocked, not yet explained thread costs a stack copy and a Python
/// stack read, ~20 µs). With more threads the per-thread tick rate goes down.
pub const WAIT_CHECK_BUDGET: f64 = 4000.0;

/// How long before a tick was due a preemption must have begun to count as a sample of where a
/// thread waits for a CPU (see `sample_blocked`).
const PREEMPT_GUARD_NS: u64 = 300_000;
/// How far before a drain's `upto` a kernel stack record that found no sample is dropped (its
/// sample is stamped in the same overflow handler; the slack covers the two clock reads).
const DRAINED_RECORD_SLACK_NS: u64 = 50_000_000;

/// A Python stack read this long after its CPU sample, with no thread state left, was read too
/// late (ftprof drains every 10 ms or sooner when it keeps up).
const TOO_LATE_NS: u64 = 20_000_000;

/// A thread's scheduler accounting when first and last read, for exact per-thread totals.
#[derive(Clone, Copy, Default)]
pub(crate) struct SchedTrack {
    first: Option<(u64, SchedStat)>,
    last: (u64, SchedStat),
    first_ctxt: Option<(u64, u64)>,
    last_ctxt: (u64, u64),
    /// `timeslices` when it was last seen blocked, and the key it was blocked with: unchanged
    /// means it has not run since, so it still waits on the same thing.
    seen_blocked: Option<(u64, u32)>,
    /// The same for a thread last seen waiting for a CPU after a preemption.
    seen_preempted: Option<(u64, u32)>,
    /// Its accounting comes from the kernel's events (`ThreadSource::sched_exact`).
    exact: bool,
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
            woken_runqueue_ns: s1.woken_runqueue_ns.saturating_sub(s0.woken_runqueue_ns).min(runq),
            exact: self.exact,
        }
    }
}

/// Records lost by one ring kind.
#[derive(Default)]
pub(crate) struct LostTally {
    pub(crate) count: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// The wait-sampling tick.
pub(crate) struct Tick {
    /// When the last tick ran (ns, monotonic); 0 before the first.
    last_ns: u64,
    next: Instant,
    period: std::time::Duration,
    /// Lowest per-thread rate used.
    pub(crate) min_rate: f64,
    count: u64,
    /// When threads were last listed from `/proc` (new ones are also known from fork records).
    listed: Option<Instant>,
    /// When the recording loop last woke up (ns, monotonic; `u64::MAX` when not told).
    woke_ns: u64,
}

/// Everything the recording loop touches while the target runs: it turns each record into
/// interned keys at once (Python stack read, native stack unwound, stack copy dropped).
/// `ftprof top` drives one too, and builds a profile from a copy of it every interval
/// ([`Recorder::profile_now`]).
pub struct Recorder {
    pub(crate) cfg: EngineConfig,
    /// `/proc` observations of threads.
    pub(crate) threads: Box<dyn ThreadSource>,
    /// The target's memory.
    pub(crate) memory: Box<dyn MemorySource>,
    pub(crate) collector: Collector,
    /// Unwinds at drain time (CFI only; DWARF for symbols is parsed by the preload thread).
    pub(crate) unwinder: Native,
    pub(crate) mmaps: Vec<(u32, Mapping)>,
    pub(crate) mmap_count: HashMap<u32, usize>,
    pub(crate) py: HashMap<u32, PyState>,
    pub(crate) names: HashMap<u32, (u32, String)>,
    pub(crate) py_errors: usize,
    pub(crate) last_time: u64,
    /// Last GIL state read from each process (it can change at run time).
    pub(crate) gil: HashMap<u32, bool>,
    pub(crate) gil_countdown: u32,
    /// `threading.Thread` names by TID, and when they were last read.
    pub(crate) py_names: HashMap<u32, String>,
    pub(crate) names_read_at: Option<Instant>,
    pub(crate) tick: Tick,
    pub(crate) sched: HashMap<u32, SchedTrack>,
    pub(crate) lost_samples: LostTally,
    pub(crate) lost_switches: LostTally,
    pub(crate) start_ns: u64,
    /// Who held what blocked threads waited on (blame).
    pub(crate) holders: crate::holders::HolderSampler,
    /// Stacks unwound at drain time, and the time it took.
    pub(crate) unwound: u64,
    pub(crate) unwind_time: std::time::Duration,
    /// The GIL turning on in a free-threaded target, and the module that did it.
    pub(crate) gil_watch: crate::gil_watch::GilWatch,
    /// Names the object a CPU sample's instruction works on (refcount stalls).
    pub(crate) operands: symbolizer::python::OperandReader,
    /// The native addresses of new stacks, passed to the preload thread, which symbolizes
    /// them while the target runs (see [`Preloading`]); and those passed so far.
    warm: Option<(WarmSender, std::collections::HashSet<(u32, u64)>)>,
    /// The process launched or attached to (known once started).
    pub(crate) target: Option<u32>,
    /// With `--subprocesses`: each followed process's command line (read when first seen, again
    /// after an exec), in the order they were seen.
    pub(crate) processes: Vec<(u32, String)>,
    /// Processes that exec'd: their mappings come from mmap records, never from `/proc`.
    pub(crate) execed: std::collections::HashSet<u32>,
    /// With privileges the caller lacks: whether each process seen may be observed
    /// (`profiler::access`), and the refusals to report.
    access: HashMap<u32, bool>,
    refused: Vec<(u32, String)>,
    /// A launched target whose exec may not have decided its dumpability yet: until then it
    /// shows ftprof's own non-dumpable state. It is ftprof's own fork running with no_new_privs,
    /// so it cannot become another user's meanwhile. It is decided once its exec's comm record
    /// arrives or its name is no longer [`profiler::launch::HELD_NAME`] (the kernel renames it
    /// after deciding), whichever comes first; never by a clock (a loaded machine can take
    /// seconds to get there).
    exec_pending: Option<u32>,
    /// The BPF path for Python stacks (`EngineConfig::bpf_stacks`): the stack each CPU sample's
    /// thread had at the sample instant, read in the kernel. `None` when off or refused.
    pub(crate) instant: Option<bpf::InstantStacks>,
    /// Launched: the BPF programs still loading (the target started without waiting for the
    /// kernel to verify them); taken up at the first tick after they are ready.
    bpf_pending: Option<std::thread::JoinHandle<BpfLoaded>>,
    /// Launched with waits recorded: the pending programs are waited for just before the
    /// target's `exec` (see [`Recorder::with_loading`]).
    bpf_before_exec: bool,
    /// The launched target is held after its exec until the BPF programs are attached.
    bpf_hold: bool,
    /// The sampling events, kept (duplicated) until the pending programs attach to them.
    sampling_fds: Vec<std::os::fd::OwnedFd>,
    /// Samples whose Python stack was read after the sample while the programs were loading.
    before_bpf_ready: u64,
    /// CPU samples read after the sample too late (see `analysis::PythonStacks::too_late`), and
    /// how late the latest was (ns); the threads whose Python stack was read at least once.
    too_late: u64,
    too_late_max_ns: u64,
    had_python: std::collections::HashSet<u32>,
    /// Why the BPF path is not used, when it was asked for (one line).
    pub bpf_refusal: Option<String>,
    /// The CPU sample being keyed: (time, user ip, user sp), for the BPF record join.
    sample_at: Option<(u64, u64, u64)>,
    /// Why the off-CPU accounting does not come from the kernel's events (BPF), when the rest
    /// of the BPF path is used.
    sched_refusal: Option<String>,
}

impl Recorder {
    /// A recorder reading the live target (`/proc` and its memory).
    pub fn new(cfg: &EngineConfig) -> Recorder {
        Recorder::with_sources(cfg, Box::new(ProcThreads::default()), Box::new(LiveMemory::default()))
    }

    /// A recorder reading threads and memory through the given sources.
    pub fn with_sources(cfg: &EngineConfig, threads: Box<dyn ThreadSource>, memory: Box<dyn MemorySource>) -> Recorder {
        Recorder::with_sources_only(cfg, threads, memory).with_bpf()
    }

    fn with_sources_only(
        cfg: &EngineConfig,
        threads: Box<dyn ThreadSource>,
        memory: Box<dyn MemorySource>,
    ) -> Recorder {
        let rate_hz = cfg.rate_hz.max(1);
        Recorder {
            cfg: EngineConfig { rate_hz, ..cfg.clone() },
            threads,
            memory,
            collector: {
                let mut c = Collector::new();
                // Two threads' samples this close were on CPUs at the same moment.
                c.set_overlap_window(profiler::perf::sample_period_ns(rate_hz));
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
            tick: Tick {
                last_ns: 0,
                next: Instant::now(),
                period: std::time::Duration::from_millis(10),
                min_rate: f64::INFINITY,
                count: 0,
                listed: None,
                woke_ns: u64::MAX,
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
            warm: None,
            target: None,
            processes: Vec::new(),
            execed: Default::default(),
            access: HashMap::new(),
            refused: Vec::new(),
            exec_pending: None,
            instant: None,
            bpf_pending: None,
            bpf_before_exec: false,
            bpf_hold: false,
            sampling_fds: Vec::new(),
            before_bpf_ready: 0,
            too_late: 0,
            too_late_max_ns: 0,
            had_python: std::collections::HashSet::new(),
            bpf_refusal: None,
            sample_at: None,
            sched_refusal: None,
        }
    }

    /// Load the BPF stack program unless turned off; a refusal is kept as one line (never a
    /// silent fallback: the caller reports it, and with [`crate::Bpf::Required`] fails).
    fn with_bpf(self) -> Recorder {
        let loading = BpfLoading::start(&self.cfg);
        self.with_bpf_loaded(loading)
    }

    /// A recorder reading the live target, with the BPF programs `loading` (started earlier,
    /// with the same configuration, so that their verification overlapped ftprof's other
    /// start-up work).
    ///
    /// A launched target without wait recording (`--no-waits`) does not wait for them either: it
    /// starts at once, its first samples' stacks are read after the sample, and the programs
    /// attach at the first tick after the kernel has verified them. With waits recorded (the
    /// default: the kernel's per-lock wait counts must include the first wait), a launched target
    /// waits for them before its `exec` (in [`profiler::Sink::sampling_events`]: the target is
    /// forked and its perf events opened meanwhile). Attached, and with
    /// [`crate::Bpf::Required`], they are waited for here.
    pub fn with_loading(cfg: &EngineConfig, loading: BpfLoading) -> Recorder {
        let r = Recorder::with_sources_only(cfg, Box::new(ProcThreads::default()), Box::new(LiveMemory::default()));
        match loading {
            BpfLoading::Loading(h) if !cfg.attached && cfg.bpf_stacks != crate::Bpf::Required => {
                // Waits recorded: the kernel's per-lock wait counts must see the first wait too.
                Recorder { bpf_pending: Some(h), bpf_before_exec: cfg.waits.recorded(), ..r }
            }
            other => r.with_bpf_loaded(other),
        }
    }

    fn with_bpf_loaded(mut self, loading: BpfLoading) -> Recorder {
        match loading {
            BpfLoading::Refused(why) => self.bpf_refusal = Some(why),
            BpfLoading::Loading(h) => self.apply_bpf(h.join().expect("loading the BPF programs does not panic")),
        }
        self
    }

    /// Take up the pending BPF programs when they are ready (or now, with `wait`): attach them
    /// to the sampling events and register the runtimes located so far.
    fn poll_bpf(&mut self, wait: bool) {
        let Some(h) = self.bpf_pending.take_if(|h| wait || h.is_finished()) else { return };
        self.apply_bpf(h.join().expect("loading the BPF programs does not panic"));
        let fds = std::mem::take(&mut self.sampling_fds);
        let Some(i) = &self.instant else { return };
        let borrowed: Vec<std::os::fd::BorrowedFd<'_>> = fds.iter().map(std::os::fd::AsFd::as_fd).collect();
        let mut result = i.attach(&borrowed);
        for state in self.py.values() {
            if let (PyState::Located(p), Ok(())) = (state, &result) {
                result = i.add_process(p);
            }
        }
        if let Err(e) = result {
            self.bpf_refusal = Some(e.to_string());
            self.instant = None;
        }
    }

    /// The recording ended with the programs still pending: not waited for, and not taken up
    /// (they would have measured nothing); a refusal's reason is kept.
    fn abandon_bpf(&mut self) {
        let Some(h) = self.bpf_pending.take() else { return };
        self.sampling_fds.clear();
        let loaded = if h.is_finished() { h.join().ok() } else { None };
        self.bpf_refusal = Some(match loaded {
            Some(BpfLoaded { stacks: Err(why), .. }) => why,
            Some(loaded) => {
                // Detaching what loaded takes milliseconds: not on the way to the output.
                std::thread::spawn(move || drop(loaded));
                "the target ended before the BPF programs were attached (a run this short needs none)".into()
            }
            None => {
                "the target ended before the kernel had verified the BPF programs (a run this short needs none)".into()
            }
        });
    }

    fn apply_bpf(&mut self, loaded: BpfLoaded) {
        match loaded.stacks {
            Ok(i) => self.instant = Some(i),
            Err(e) => self.bpf_refusal = Some(e),
        }
        if timing() {
            eprintln!("ftprof timing: BPF stack programs loaded in {:?}", loaded.stacks_took);
        }
        if let Some((o, took)) = loaded.off_cpu.filter(|_| self.bpf_refusal.is_none()) {
            match o {
                Ok(o) => {
                    let inner = std::mem::replace(&mut self.threads, Box::new(crate::ProcThreads::default()));
                    self.threads = Box::new(crate::kernel_sched::KernelSched::new(inner, o));
                }
                Err(e) => self.sched_refusal = Some(e),
            }
            if timing() {
                eprintln!(
                    "ftprof timing: BPF off-CPU programs loaded in {took:?} (beside the stack programs), both after {:?}",
                    loaded.took
                );
            }
        }
    }

    /// Where the threads' blocked/runqueue split came from (the JSON's `summary.sched_accounting`).
    pub fn sched_accounting(&self) -> analysis::SchedAccounting {
        match self.threads.kernel_accounted() {
            Some(n) => analysis::SchedAccounting {
                source: "bpf".into(),
                reason: None,
                kernel_threads: n as u64,
                cross_check: self.threads.sched_cross_check().filter(|c| c.0 > 0).map(|(threads, s, e)| {
                    analysis::SchedCrossCheck { threads, schedstat_runqueue_us: s / 1000, events_runqueue_us: e / 1000 }
                }),
            },
            None => analysis::SchedAccounting {
                source: "schedstat".into(),
                reason: self.sched_refusal.clone().or_else(|| self.bpf_refusal.clone()),
                kernel_threads: 0,
                cross_check: None,
            },
        }
    }

    /// With [`crate::Bpf::Required`]: the one-line refusal, when the BPF path was refused.
    pub fn bpf_required_but_refused(&self) -> Option<String> {
        (self.cfg.bpf_stacks == crate::Bpf::Required)
            .then(|| self.bpf_refusal.clone())
            .flatten()
            .map(|why| format!("the BPF path was required (FTPROF_BPF=1) but refused: {why}; unset FTPROF_BPF to fall back to reading stacks after the sample"))
    }

    /// How the CPU samples' Python stacks were read (the JSON's `summary.python_stacks`).
    pub fn python_stacks(&self) -> analysis::PythonStacks {
        match &self.instant {
            Some(i) if self.bpf_refusal.is_none() => {
                let c = i.counts();
                analysis::PythonStacks {
                    path: "bpf".into(),
                    reason: None,
                    at_instant: c.joined,
                    after_sample: c.missing,
                    before_ready: self.before_bpf_ready,
                    new_thread: c.no_tstate,
                    ring_lost: c.ring_lost,
                    unmatched: i.unmatched(),
                    too_late: self.too_late,
                    too_late_ms: self.too_late_max_ns / 1_000_000,
                }
            }
            _ => {
                let (at_instant, after_sample) =
                    self.instant.as_ref().map(|i| (i.counts().joined, i.counts().missing)).unwrap_or((0, 0));
                analysis::PythonStacks {
                    path: "after-sample".into(),
                    reason: self.bpf_refusal.clone(),
                    at_instant,
                    after_sample,
                    before_ready: self.before_bpf_ready,
                    too_late: self.too_late,
                    too_late_ms: self.too_late_max_ns / 1_000_000,
                    ..Default::default()
                }
            }
        }
    }

    /// Whether process `pid` may be observed: always, unless ftprof runs with privileges its
    /// caller lacks; then the caller must be able to trace it (`profiler::access::check`),
    /// decided before anything of it is read and remembered.
    fn admitted(&mut self, pid: u32) -> bool {
        if !profiler::access::is_elevated() {
            return true;
        }
        if let Some(&ok) = self.access.get(&pid) {
            return ok;
        }
        let ok = self.recheck(pid, profiler::access::check(pid));
        self.access.insert(pid, ok);
        ok
    }

    /// Check process `pid` again (its credentials can change at an exec); on a refusal, forget
    /// everything read of it and stop observing it.
    fn recheck(&mut self, pid: u32, checked: Result<(), profiler::access::AccessError>) -> bool {
        let e = match checked {
            // Gone: nothing of it can be read any more; its records come from events the kernel
            // keeps only while the caller may trace the process (a set-id exec removes them, and
            // launched programs run with no_new_privs).
            Ok(()) | Err(profiler::access::AccessError::Gone(_)) => return true,
            Err(e) => e,
        };
        self.refused.push((pid, e.to_string()));
        self.access.insert(pid, false);
        self.forget_process(pid);
        false
    }

    /// Drop what was read of process `pid`'s image: mappings, CPython reader, GIL state.
    fn forget_process_image(&mut self, pid: u32) {
        self.unwinder.remove_process(pid);
        self.mmaps.retain(|(p, _)| *p != pid);
        self.mmap_count.insert(pid, 0);
        self.py.insert(pid, PyState::Pending { mmaps_at_last_try: usize::MAX });
        self.gil.remove(&pid);
    }

    /// Stop observing process `pid` (the caller may not trace it): forget its image and end its
    /// threads.
    fn forget_process(&mut self, pid: u32) {
        self.forget_process_image(pid);
        self.py.remove(&pid);
        let now = profiler::monotonic_ns();
        for (p, tid) in self.collector.live_thread_list() {
            if p == pid {
                self.collector.push_exit(tid, now);
            }
        }
    }

    /// Processes that were not observed because the caller may not trace them, with why.
    pub fn refused(&self) -> &[(u32, String)] {
        &self.refused
    }

    /// With privileges the caller lacks: check every process about to be read at this tick
    /// again (an exec can make one set-id), before its threads are read.
    fn recheck_live(&mut self) {
        if !profiler::access::is_elevated() {
            return;
        }
        let mut pids: Vec<u32> = self.collector.live_thread_list().into_iter().map(|(p, _)| p).collect();
        if let Some(t) = self.target {
            pids.push(t);
        }
        pids.sort_unstable();
        pids.dedup();
        if let Some(p) = self.exec_pending {
            let name = self.threads.thread_name(p, p);
            let held = profiler::launch::HELD_NAME.to_str().unwrap_or_default();
            if name != held {
                // Renamed by its exec (dumpability decided), or gone (nothing left to read).
                self.exec_pending = None;
            }
        }
        for pid in pids {
            if self.access.get(&pid) == Some(&false) || self.exec_pending == Some(pid) {
                continue;
            }
            // A process that exited meanwhile has nothing left to read.
            let checked = profiler::access::check(pid);
            if matches!(checked, Err(profiler::access::AccessError::Denied { .. })) {
                self.recheck(pid, checked);
            }
        }
    }

    /// Whether records of process `pid` are kept: the target's always, others' with
    /// `--subprocesses`; and only of processes the caller may trace (see [`Self::admitted`]).
    fn follows(&mut self, pid: u32) -> bool {
        (self.cfg.subprocesses || self.target.is_none_or(|t| t == pid)) && self.admitted(pid)
    }

    /// `--subprocesses`: first sight of a process (forked, or found at attach): its command
    /// line, and the mappings it has now when none were reported (a forked child inherits its
    /// parent's without mmap records).
    fn note_process(&mut self, pid: u32) {
        if !self.cfg.subprocesses || self.processes.iter().any(|(p, _)| *p == pid) || !self.admitted(pid) {
            return;
        }
        self.threads.follow(pid);
        let cmd = self.threads.cmdline(pid).join(" ");
        self.processes.push((pid, cmd));
        if self.mmap_count.get(&pid).copied().unwrap_or(0) == 0 && !self.execed.contains(&pid) {
            self.add_mappings_now(pid);
        }
    }

    /// `--subprocesses`: process `pid` replaced its image: forget its mappings (the new ones
    /// arrive as mmap records), its CPython reader and its command line.
    fn on_exec(&mut self, pid: u32, comm: &str) {
        self.execed.insert(pid);
        self.forget_process_image(pid);
        // The command line of the new image; its name when it already exited.
        let cmd = self.threads.cmdline(pid).join(" ");
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
            match self.memory.python(pid) {
                Ok(p) => {
                    if let Some(i) = &self.instant {
                        if let Err(e) = i.add_process(&p) {
                            self.bpf_refusal = Some(e.to_string());
                            self.instant = None;
                        }
                    }
                    *state = PyState::Located(Box::new(p))
                }
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
        for m in self.threads.executable_mappings(pid) {
            self.add_mapping(pid, m);
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
            e.insert((pid, self.threads.thread_name(pid, tid)));
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
        // Locate the runtime first, while the BPF path is in place to register it (it is taken
        // out below for the borrow).
        let _ = self.python_process(pid);
        let mut instant = self.instant.take();
        let sample_at = self.sample_at.take();
        let pending = self.bpf_pending.is_some();
        let mut before_ready = false;
        let mut read_now = false;
        if let (Some(r), Some(p)) = (regs, self.python_process(pid)) {
            // The stack at the sample instant (BPF), else read now.
            let at_instant = match (&mut instant, sample_at) {
                (Some(i), Some((time, ip, sp))) => i.stack_for_sample(p, tid, time, ip, sp),
                _ => None,
            };
            read_now = at_instant.is_none();
            before_ready = instant.is_none() && pending;
            match at_instant {
                Some(st) => python = Some(st),
                None => match p.stack_for_tid(tid) {
                    Ok(st) => python = st,
                    Err(_) => failed = true,
                },
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
        self.before_bpf_ready += u64::from(before_ready);
        if read_now {
            let found = python.as_ref().is_some_and(|st| !st.frames.is_empty());
            // A read that failed because the thread was gone is not a read error.
            failed &= !self.note_read_after_sample(tid, found, sample_at.map(|s| s.0));
        }
        if self.instant.is_none() {
            self.instant = instant;
        }
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
        let known = self.collector.key_count();
        let id = self.collector.key_id(SampleKey {
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
        });
        // Only a new key can hold addresses not passed on yet: a known one costs nothing here.
        if self.collector.key_count() > known {
            self.warm(pid, id);
        }
        id
    }

    /// Pass the addresses of key `id`'s native stack not seen before to the preload thread.
    fn warm(&mut self, pid: u32, id: u32) {
        let Some((tx, sent)) = self.warm.as_mut() else { return };
        for (i, a) in self.collector.native_of(id).enumerate() {
            // Return addresses are looked up one byte back (in the call).
            if sent.len() < WARM_LIMIT && sent.insert((pid, if i > 0 { a.saturating_sub(1) } else { a })) {
                if let Some(at) = self.unwinder.module_address(pid, a, i > 0) {
                    let _ = tx.send(at);
                }
            }
        }
    }

    /// A Python stack read after the sample (`found`: with frames) of a CPU sample taken at
    /// `time`: a thread seen in Python before that has no frames, or no state (the read
    /// failed), when ftprof reads its sample well after it was taken lost them to ftprof
    /// falling behind (counted, and said). Returns whether the sample was read too late.
    fn note_read_after_sample(&mut self, tid: u32, found: bool, time: Option<u64>) -> bool {
        if found {
            self.had_python.insert(tid);
            return false;
        }
        let Some(time) = time.filter(|_| self.had_python.contains(&tid)) else { return false };
        let late = profiler::monotonic_ns().saturating_sub(time);
        if late < TOO_LATE_NS {
            return false;
        }
        self.too_late += 1;
        self.too_late_max_ns = self.too_late_max_ns.max(late);
        true
    }

    fn on_sample(&mut self, s: profiler::Sample) {
        self.last_time = self.last_time.max(s.time);
        match s.source {
            SampleSource::CpuClock => {
                self.sample_at = s.regs.map(|r| (s.time, r.ip, r.sp));
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
        for tid in self.threads.tids(pid) {
            self.collector.thread_seen(pid, tid);
            if !matches!(self.threads.state(pid, tid), Some('S') | Some('D')) {
                continue;
            }
            let Some((syscall, regs)) = self.threads.syscall(pid, tid) else { continue };
            let stack = self.memory.stack(pid, regs.sp, self.cfg.stack_bytes as usize);
            let k = self.key(pid, tid, Some(regs), &stack, Vec::new(), true, syscall, false);
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
        // A thread preempted since ftprof's loop woke up for this tick may have been preempted
        // by ftprof itself, at wherever it was running, and stays runnable for as long as the
        // tick (not a fair sample of where it waits for a CPU: counting them put 3-4 % of the
        // wait at an oversubscribed lock's acquire line on the lines the threads ran instead).
        let preempted_before = self.tick.woke_ns.min(now).saturating_sub(PREEMPT_GUARD_NS);
        let gap = if self.tick.last_ns == 0 { self.tick.period.as_nanos() as u64 } else { now - self.tick.last_ns };
        self.tick.last_ns = now;
        self.tick.count += 1;
        if self.tick.listed.is_none_or(|t| t.elapsed().as_millis() >= 500) {
            self.tick.listed = Some(now_i);
            let pids: Vec<u32> = self.py.keys().copied().collect();
            for pid in pids {
                for tid in self.threads.tids(pid) {
                    self.collector.thread_seen(pid, tid);
                }
            }
        }
        // The context-switch counters are text to format: read them every 8th tick.
        let read_ctxt = self.tick.count % 8 == 1;
        let mut waiters: Vec<(u32, crate::holders::Waiter)> = Vec::new();
        for (pid, tid) in self.collector.live_thread_list() {
            let t = profiler::monotonic_ns();
            let Some(st) = self.threads.schedstat(pid, tid) else { continue };
            let ctxt = if read_ctxt { self.threads.ctxt_switches(pid, tid) } else { None };
            let exact = self.threads.sched_exact(tid);
            let track = self.sched.entry(tid).or_default();
            track.exact = exact;
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
            let Some((syscall, regs)) = self.threads.syscall(pid, tid) else {
                // Not blocked: running, or (known from the kernel's events) waiting for a CPU
                // after a preemption, at the registers saved then.
                if let Some(regs) = self.threads.preempted(pid, tid, preempted_before) {
                    let key = match self.sched.get(&tid).and_then(|t| t.seen_preempted) {
                        Some((slices, key)) if slices == st.timeslices => key,
                        _ => {
                            let stack = self.memory.stack(pid, regs.sp, self.cfg.stack_bytes as usize);
                            self.key(pid, tid, Some(regs), &stack, Vec::new(), false, None, false)
                        }
                    };
                    self.collector.observe_preempted(pid, tid, key, gap);
                    if let Some(track) = self.sched.get_mut(&tid) {
                        track.seen_preempted = Some((st.timeslices, key));
                    }
                }
                continue;
            };
            let (key, continued) = match seen {
                Some((slices, key)) if slices == st.timeslices => (key, true),
                _ => {
                    let stack = self.memory.stack(pid, regs.sp, self.cfg.stack_bytes as usize);
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
        let rate = (self.cfg.rate_hz as f64).min(WAIT_CHECK_BUDGET / live);
        self.tick.min_rate = self.tick.min_rate.min(rate);
        self.tick.period = std::time::Duration::from_secs_f64(1.0 / rate);
        self.tick.next = now_i + self.tick.period;
        self.tick.period
    }
}

impl Recorder {
    /// The BPF path's waker records (who woke a thread blocked on a lock, at its release):
    /// handed to blame, where they stand in for holders the search did not find. Records of
    /// the stacks at the sample instant that found no sample are dropped once the drain has
    /// delivered every sample of their time (`Record::Drained`), not by the clock: an ftprof
    /// behind on a busy machine still pairs its late samples.
    fn take_wakers(&mut self) {
        let Some(instant) = self.instant.as_mut() else { return };
        let wakers = instant.take_wakers();
        if !self.cfg.waits.recorded() {
            return;
        }
        for r in wakers {
            let Some(w) = r.waker_of else { continue };
            let Some(PyState::Located(py)) = self.py.get_mut(&r.tgid) else { continue };
            let stack = r.to_stack(py);
            self.holders.wake(py, w.wakee, w.addr, r.tid, stack);
        }
    }

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
            let (source, sched) = (&mut self.threads, &self.sched);
            let mut woken_not_run = |tid: u32| {
                let Some((slices, _)) = sched.get(&tid).and_then(|t| t.seen_blocked) else { return false };
                !matches!(source.state(pid, tid), Some('S') | Some('D'))
                    && source.schedstat(pid, tid).is_some_and(|s| s.timeslices == slices)
            };
            self.holders.sample(py, &threads, &ws, &mut woken_not_run);
        }
    }
}

impl profiler::Sink for Recorder {
    fn sampling_events(&mut self, events: &[std::os::fd::BorrowedFd<'_>]) {
        // Launched with waits recorded: the programs are waited for now, the target forked and
        // its events open but not enabled (they are on its exec, or just before its release).
        // Or, when it can be held after its exec (`EngineConfig::hold_at`), they load while it
        // starts up, and it is held until they are attached (see `hold_at` below).
        if std::mem::take(&mut self.bpf_before_exec) {
            if self.cfg.hold_at.is_some() {
                self.bpf_hold = true;
            } else {
                self.poll_bpf(true);
            }
        }
        if self.bpf_pending.is_some() {
            self.sampling_fds = events.iter().filter_map(|fd| fd.try_clone_to_owned().ok()).collect();
            return;
        }
        if let Some(i) = &self.instant {
            if let Err(e) = i.attach(events) {
                self.bpf_refusal = Some(e.to_string());
                self.instant = None;
            }
        }
    }

    fn hold_at(&mut self) -> Option<profiler::hold::HoldAt> {
        self.cfg.hold_at.clone().filter(|_| self.bpf_hold && self.bpf_pending.is_some())
    }

    fn holding(&mut self, wait: bool) -> bool {
        self.poll_bpf(wait);
        self.bpf_pending.is_some()
    }

    fn before_enable(&mut self, pid: i32) {
        // Attached: locate the runtime now, so that the BPF program knows the process from the
        // first sample on (it writes no record for a process it does not know; located at the
        // first drained sample instead, a busy machine left hundreds of milliseconds of samples
        // with their stacks read late).
        let pid = pid as u32;
        if self.admitted(pid) {
            let _ = self.python_process(pid);
        }
    }

    fn woke(&mut self, at_ns: u64) {
        self.tick.woke_ns = at_ns;
    }

    fn started(&mut self, pid: i32) {
        let pid = pid as u32;
        self.start_ns = profiler::monotonic_ns();
        self.target = Some(pid);
        if !self.cfg.attached {
            // Launched: ftprof's own child, held before exec (with privileges the caller lacks
            // it inherits ftprof's non-dumpable state until then, and runs with no_new_privs, so
            // it cannot become another user's). Its exec and every tick check it again.
            self.access.insert(pid, true);
            self.exec_pending = Some(pid);
        }
        if !self.admitted(pid) {
            return;
        }
        if self.cfg.command.is_empty() {
            // Attached: the command line, read while the process surely exists.
            self.cfg.command = self.threads.cmdline(pid);
        }
        self.threads.follow(pid);
        self.collector.thread_seen(pid, pid);
        self.gil_watch.start(pid, self.cfg.attached, self.start_ns);
        if self.cfg.attached {
            // Mappings made before we arrived are not reported by perf: read them now that the
            // events are live (later ones arrive as mmap records).
            self.add_mappings_now(pid);
            if self.cfg.waits.recorded() {
                self.snapshot_blocked_at_attach(pid);
            }
        }
        if self.cfg.subprocesses {
            self.note_process(pid);
            // Attached: the processes it started before we arrived (launched: none yet).
            for child in self.threads.descendants(pid) {
                if !self.admitted(child) {
                    continue;
                }
                self.note_process(child);
                self.collector.thread_seen(child, child);
                if self.cfg.attached && self.cfg.waits.recorded() {
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
                // An exec can make a process set-id: check it again, whatever the mode.
                if exec && self.exec_pending == Some(pid) {
                    // The launched target's own exec: its dumpability is decided before this
                    // record is written; the check below sees the outcome.
                    self.exec_pending = None;
                }
                if exec && profiler::access::is_elevated() && !self.recheck(pid, profiler::access::check(pid)) {
                    return;
                }
                if exec && self.cfg.subprocesses {
                    self.on_exec(pid, &name);
                }
                self.names.insert(tid, (pid, name));
            }
            Record::Fork { pid, ppid, tid, .. } => {
                if self.cfg.subprocesses && pid != ppid && self.mmap_count.get(&pid).copied().unwrap_or(0) == 0 {
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
                self.threads.forget(tid);
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
            Record::Drained { upto } => {
                if upto == u64::MAX {
                    self.abandon_bpf();
                }
                self.collector.release(upto);
                if let Some(instant) = self.instant.as_mut() {
                    // A record is written in the sample's own overflow handler: once every
                    // sample up to `upto` is delivered, older records found none (lost).
                    instant.expire(upto.saturating_sub(DRAINED_RECORD_SLACK_NS));
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self) -> std::time::Duration {
        self.poll_bpf(false);
        // Before anything of the target is read at this tick, whatever the wait mode.
        self.recheck_live();
        self.watch_gil();
        self.take_wakers();
        if self.cfg.waits.recorded() {
            // With exact waits switch-out samples give the stacks; the kernel's totals still
            // say how much of each interval was blocked and how much was waiting for a CPU.
            self.sample_blocked(self.cfg.waits != Waits::Exact)
        } else {
            std::time::Duration::from_millis(10)
        }
    }
}

/// Wake-ups of a blocked target thread whose waker's Python stack is read in the kernel, at
/// most, per CPU per second (the BPF path; each is a frame walk of up to 128 frames).
pub const WAKER_BUDGET: u64 = 2000;

/// Where the recorder passes addresses to symbolize ahead: (file path as mapped, svma).
type WarmSender = std::sync::mpsc::Sender<(String, u64)>;

/// At most this many distinct addresses are passed to the preload thread to symbolize ahead
/// (the rest are symbolized after the recording, as they would be anyway).
const WARM_LIMIT: usize = 200_000;

/// The target's interpreter parsed on a thread of its own (its ELF symbol tables, its DWARF
/// unit index, the symbol cache of earlier runs, its libraries, the kernel's symbols), started
/// at ftprof's first step so that it overlaps the kernel's verifying of the BPF programs and the
/// target's run; and the interpreter's opcode names, which name the objects that refcount stalls
/// work on while the target runs.
///
/// The thread runs at `SCHED_IDLE`: it only uses a CPU the target and the BPF loading leave idle,
/// never delaying them (a nice-19 thread still runs whole slices before a woken target thread
/// gets the CPU, which the target would see as runqueue time). Once the recording ends it runs
/// at normal priority again (`ftprof` then waits for it).
pub struct Preloading {
    handle: std::thread::JoinHandle<crate::Symbols>,
    /// Addresses to symbolize ahead (new native stacks' addresses), and the flag that ends it.
    warm: WarmSender,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The thread's TID while it runs at idle priority, and whether the recording ended.
    idle: std::sync::Arc<std::sync::Mutex<(Option<i32>, bool)>>,
    opnames: Vec<String>,
    caches: Vec<u8>,
}

impl Preloading {
    /// Start parsing `interp`, the ELF holding the CPython runtime of the target.
    pub fn start(interp: &std::path::Path) -> Preloading {
        let interp = interp.canonicalize().unwrap_or(interp.to_path_buf()).to_string_lossy().into_owned();
        // Opcode names: a cache file, or one run of the interpreter.
        let opnames = symbolizer::python::opcodes::base_opnames_cached(std::path::Path::new(&interp), &cache_dir())
            .unwrap_or_default();
        let caches = symbolizer::python::opcodes::inline_caches_cached(std::path::Path::new(&interp), &cache_dir())
            .unwrap_or_default();
        let idle = std::sync::Arc::new(std::sync::Mutex::new((None::<i32>, false)));
        let idle_in = idle.clone();
        let opnames_preload = opnames.clone();
        let (warm, addresses) = std::sync::mpsc::channel::<(String, u64)>();
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ended_in = ended.clone();
        let handle = std::thread::spawn(move || {
            // Reset on fork: a process it starts (the interpreter asked for its opcode names)
            // runs at normal priority, never starved by a loaded machine while ftprof waits.
            if let Ok(mut g) = idle_in.lock() {
                if !g.1 {
                    set_scheduler(0, libc::SCHED_IDLE | libc::SCHED_RESET_ON_FORK);
                    g.0 = Some(nix::unistd::gettid().as_raw());
                }
            }
            let mut symbols = crate::preload(&interp, opnames_preload);
            // Then the addresses of the stacks seen so far and from now on, until the recording
            // ends (what is left then is symbolized after it, as without this).
            while let Ok((path, svma)) = addresses.recv() {
                if ended_in.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                symbols.native.warm_address(&path, svma);
            }
            symbols
        });
        Preloading { handle, warm, ended, idle, opnames, caches }
    }

    /// The recording ended: back to normal priority, and wait for the thread.
    fn finish(self) -> crate::Symbols {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the thread if it waits for addresses (it then sees the flag).
        let _ = self.warm.send((String::new(), 0));
        if let Ok(mut g) = self.idle.lock() {
            g.1 = true;
            if let Some(tid) = g.0 {
                // The flag stays (only a privileged thread may clear it).
                set_scheduler(tid, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK);
            }
        }
        self.handle.join().unwrap_or_default()
    }
}

/// Record from `source` with `rec`, then symbolize what it collected into a
/// [`analysis::capture::Capture`] (its `profile()` is the profile). `preload`: the target's
/// interpreter, parsed meanwhile (see [`Preloading`]). `stop`: set it (e.g. from a signal
/// handler) to end the recording early.
pub fn record(
    source: &mut dyn EventSource,
    mut rec: Recorder,
    preload: Preloading,
    stop: &AtomicBool,
) -> Result<(analysis::capture::Capture, RecordingOutcome)> {
    if let Some(why) = rec.bpf_required_but_refused() {
        anyhow::bail!("{why}");
    }
    rec.operands = symbolizer::python::OperandReader::new(preload.opnames.clone(), preload.caches.clone());
    rec.warm = Some((preload.warm.clone(), Default::default()));
    let outcome = source.run(&mut rec, stop)?;
    for (_, why) in rec.refused() {
        eprintln!("ftprof: warning: not observed: {why}");
    }
    // Threads whose samples stayed unregistered in the kernel's map (their stacks were read
    // after the sample, as counted in the summary): why, for a report.
    // (Named by `threading`, or seen with Python frames when its stack was read after a sample.)
    let is_python = |tid: u32| rec.py_names.contains_key(&tid) || rec.had_python.contains(&tid);
    if let Some(why) = rec.instant.as_ref().and_then(|i| i.sync_trouble(is_python)) {
        eprintln!("ftprof: warning: threads left unregistered for the kernel's stack reads: {why}");
    }
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
    let mut symbols = preload.finish();
    if timing() {
        eprintln!("ftprof timing: preload joined after {:?}", t_post.elapsed());
    }
    let end = rec.last_time.max(outcome.start_ns + outcome.duration.as_nanos() as u64);
    let collection = std::mem::take(&mut rec.collector).finish(end);
    let capture = crate::capture_of(&rec, collection, &mut symbols, Some(&outcome));
    symbols.native.save_persistent_cache();
    if timing() {
        eprintln!("ftprof timing: capture built and symbol cache saved after {:?}", t_post.elapsed());
    }
    // Detaching the kernel programs and closing the rings takes milliseconds (the kernel patches
    // its tracepoints back): on another thread, off the way to the output.
    std::thread::spawn(move || drop(rec));
    Ok((capture, outcome))
}

/// Set the scheduling policy of thread `tid` (0: the calling thread), priority 0.
fn set_scheduler(tid: i32, policy: libc::c_int) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on one of our own threads with a valid parameter block; a
    // failure leaves its policy as it was.
    unsafe { libc::sched_setscheduler(tid, policy, &param) };
}

impl Recorder {
    /// Mappings seen so far.
    pub fn mappings(&self) -> &[(u32, Mapping)] {
        &self.mmaps
    }

    /// Threads alive now (seen and not exited), by TID.
    pub fn live_threads(&self) -> Vec<u32> {
        self.collector.live_thread_list().into_iter().map(|(_, tid)| tid).collect()
    }

    /// Records lost so far (samples' and switches' rings).
    pub fn lost(&self) -> (u64, u64) {
        (self.lost_samples.count, self.lost_switches.count)
    }

    /// The profile of everything collected so far (open intervals closed now); recording goes
    /// on. `symbols` gets the mappings seen since the last call.
    pub fn profile_now(&self, symbols: &mut crate::Symbols) -> Profile {
        let collection = self.collector.clone().finish(profiler::monotonic_ns());
        crate::profile_of(self, collection, symbols, None)
    }
}

/// ftprof's cache directory (`$FTPROF_CACHE`, else `~/.cache/ftprof`), shared with the
/// CPython provisioning script.
///
/// With privileges its caller lacks (`profiler::access`), ftprof ignores these variables and uses
/// the caller's home directory from the password database.
pub fn cache_dir() -> PathBuf {
    if let Some(caller) = profiler::access::privilege().elevated() {
        let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller.uid))
            .ok()
            .flatten()
            .map(|u| u.dir)
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        return home.join(".cache").join("ftprof");
    }
    if let Some(d) = std::env::var_os("FTPROF_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"));
    base.join("ftprof")
}

pub(crate) fn timing() -> bool {
    std::env::var_os("FTPROF_TIMING").is_some()
}

/// What the BPF programs' loading gave (see [`BpfLoading`]).
pub struct BpfLoaded {
    stacks: Result<bpf::InstantStacks, String>,
    stacks_took: std::time::Duration,
    /// The off-CPU programs, when waits are recorded, and how long they took.
    off_cpu: Option<(Result<bpf::OffCpu, String>, std::time::Duration)>,
    took: std::time::Duration,
}

/// The BPF programs of a recording, loading (the kernel verifies them: tens of milliseconds) on
/// a thread of their own from ftprof's first step, beside the interpreter check, or refused at
/// once (turned off, or ftprof runs with privileges its caller lacks).
pub enum BpfLoading {
    Refused(String),
    Loading(std::thread::JoinHandle<BpfLoaded>),
}

impl BpfLoading {
    /// Start loading what `cfg` asks for ([`Recorder::with_loading`] takes it).
    pub fn start(cfg: &EngineConfig) -> BpfLoading {
        match cfg.bpf_stacks {
            crate::Bpf::Off => return BpfLoading::Refused("turned off (FTPROF_BPF=0)".into()),
            _ if profiler::access::is_elevated() => {
                return BpfLoading::Refused(
                    "ftprof runs with privileges its caller lacks (it reads only what the caller may)".into(),
                )
            }
            _ => {}
        }
        let waits = cfg.waits.recorded();
        BpfLoading::Loading(std::thread::spawn(move || {
            // With the wakers' stacks when waits are recorded (blame); without, if only that
            // part is refused.
            let wakers = if waits { WAKER_BUDGET } else { 0 };
            let t = Instant::now();
            // Off-CPU accounting from the kernel's events, when the waits are recorded: loaded
            // on another thread meanwhile.
            let off_cpu = waits.then(|| {
                std::thread::spawn(move || {
                    let o = bpf::OffCpu::start().map_err(|e| e.to_string());
                    (o, t.elapsed())
                })
            });
            let stacks = bpf::InstantStacks::new(128, wakers)
                .or_else(|_| bpf::InstantStacks::new(128, 0))
                .map_err(|e| e.to_string());
            let stacks_took = t.elapsed();
            let off_cpu = off_cpu.map(|h| h.join().expect("loading the off-CPU programs does not panic"));
            // For tests: the programs ready this much later (a loaded machine's slow verifier),
            // so that a target running before they are attached would show.
            if let Some(ms) = std::env::var("FTPROF_TEST_BPF_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            BpfLoaded { stacks, stacks_took, off_cpu, took: t.elapsed() }
        }))
    }
}
