//! The profile data model and its builder.

use std::collections::HashMap;

use frames::native::NativeFrame;
use frames::python::{ParkedInfo, PyStack};
use serde::{Deserialize, Serialize};

use crate::merge::{merge_stacks, MergeStatus};
use crate::wait::{classify, Category, Evidence, LockIdentity};

/// Version of the JSON profile layout (bump on incompatible changes).
pub const SCHEMA_VERSION: u32 = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// The root frame of a thread: `name (TID)`.
    Thread,
    Python,
    Native,
    Kernel,
    /// Something ftprof inserted: `[python/native mismatch]`, `[truncated]`.
    Marker,
    /// The leaf of a wait, spin or refcount stack: `lock: _thread.lock @ 0x…`.
    Wait,
}

/// One frame of a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub kind: FrameKind,
    /// Python: qualname. Native: function name (demangled) or `[unknown]`.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Python: first line of the function (`co_firstlineno`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    /// Native: path of the ELF module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Native: offset in the module (only kept for unresolved frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    pub inlined: bool,
}

impl Frame {
    pub fn marker(text: &str) -> Frame {
        Frame::simple(FrameKind::Marker, text.into())
    }

    /// A thread's root frame, labelled `name (TID)` ([`thread_label`]).
    pub fn thread(label: String) -> Frame {
        Frame::simple(FrameKind::Thread, label)
    }

    fn simple(kind: FrameKind, name: String) -> Frame {
        Frame { kind, name, file: None, line: None, start_line: None, module: None, offset: None, inlined: false }
    }

    /// The label used in flamegraphs and folded stacks.
    pub fn label(&self) -> String {
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        match self.kind {
            FrameKind::Python => match self.line {
                Some(l) => format!("{} ({}:{l})", self.name, base(self.file.as_deref().unwrap_or("?"))),
                None => format!("{} ({})", self.name, base(self.file.as_deref().unwrap_or("?"))),
            },
            FrameKind::Native if self.name == "[unknown]" => match (&self.module, self.offset) {
                (Some(m), Some(o)) => format!("[unknown] ({}+{o:#x})", base(m)),
                _ => "[unknown]".into(),
            },
            FrameKind::Native if self.inlined => format!("{} [inlined]", self.name),
            FrameKind::Kernel => format!("{}_[k]", self.name),
            FrameKind::Wait => format!("[{}]", self.name),
            _ => self.name.clone(),
        }
    }

    pub fn from_native(f: &NativeFrame) -> Frame {
        Frame {
            kind: FrameKind::Native,
            name: f.function.clone().unwrap_or_else(|| "[unknown]".into()),
            file: f.file.clone(),
            line: f.line,
            start_line: None,
            module: Some(f.module.clone()),
            offset: f.function.is_none().then_some(f.module_offset),
            inlined: f.inlined,
        }
    }
}

/// How a (possibly aggregated) sample was observed, with its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// `samples` periodic CPU samples of this stack (the thread was running).
    Cpu { samples: u64 },
    /// The thread was off CPU: `wait_us` in `waits` intervals, the longest `max_us` (estimates
    /// when waits are sampled, see `collect`); `preempted`: still runnable.
    OffCpu { wait_us: u64, waits: u64, max_us: u64, preempted: bool },
}

/// One observed sample, symbolized.
pub struct SampleInput<'a> {
    pub tid: u32,
    /// Per unwound address (leaf first), its inline chain innermost first.
    pub native: &'a [Vec<NativeFrame>],
    /// The native unwinder reached the outermost frame.
    pub native_complete: bool,
    /// Python stack read at sample time (None: not a Python thread or unreadable).
    pub python: Option<&'a PyStack>,
    /// Kernel functions, leaf first (the sample was taken in a system call or fault).
    pub kernel: &'a [String],
    /// Inline chain at the instruction before the sampled one (for CPU samples).
    pub leaf_prev: &'a [NativeFrame],
    /// What the thread was parked on, when it was in the parking lot.
    pub parked: Option<&'a ParkedInfo>,
    pub observation: Observation,
    /// No other thread of the process was alive at the sample.
    pub alone: bool,
    /// A marker frame to put above the leaf (e.g. blocked time that no observation explains).
    pub marker: Option<&'a str>,
    /// The system call a blocked thread was in, when read from `/proc` (no kernel stack).
    pub syscall: Option<u64>,
    /// CPU samples: the object the innermost Python frame's instruction names.
    pub operand: Option<&'a frames::python::ObjectRef>,
    /// CPU samples: taken while another thread of the process worked on the same object or
    /// function (see `crate::concurrency`); refcount stalls without it are `atomic_refcount`.
    pub concurrent: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stack {
    pub thread: u32,
    /// Indexes into `Profile::frames`, root → leaf (the thread frame first).
    pub frames: Vec<u32>,
    /// Why the thread was here (running Python, spinning, waiting on a lock, …).
    pub category: Category,
    /// CPU samples of this stack.
    pub samples: u64,
    /// Off-CPU time spent in this stack (µs).
    pub wait_us: u64,
    /// Off-CPU intervals (switch-outs) of this stack.
    pub waits: u64,
}

impl Stack {
    /// Thread time (µs) this stack stands for: CPU samples × period, plus off-CPU time.
    pub fn time_us(&self, period_us: f64) -> f64 {
        self.samples as f64 * period_us + self.wait_us as f64
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub tid: u32,
    pub pid: u32,
    pub name: String,
    pub samples: u64,
    pub wait_us: u64,
}

/// A thread's label: `name (TID)`, or `thread (TID)` when it has no name.
pub fn thread_label(name: &str, tid: u32) -> String {
    if name.is_empty() {
        format!("thread ({tid})")
    } else {
        format!("{name} ({tid})")
    }
}

/// A process followed with `--subprocesses`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Its command line (after its last `exec`).
    pub command: String,
    /// It ran CPython (a process without is skipped: none of its stacks are in the profile).
    pub python: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PythonInfo {
    pub version: String,
    pub free_threaded: bool,
    pub gil_enabled: Option<bool>,
    pub runtime_module: String,
    /// Free-threaded build whose GIL was found enabled during the recording (see [`crate::gil`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_reenabled: Option<crate::gil::GilReenabled>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetInfo {
    pub command: Vec<String>,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Recording was stopped before the target finished (Ctrl-C).
    pub interrupted: bool,
    /// ftprof attached to a running process (`--pid`) instead of launching it.
    pub attached: bool,
    /// The target exited while ftprof was attached: the profile covers only part of the period.
    pub partial: bool,
}

/// Time in one category, over all threads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoryTime {
    pub category: Category,
    pub time_us: u64,
    /// Share of all thread time (CPU + off-CPU) in the recording, 0..1.
    pub share: f64,
    pub contention: bool,
}

/// A Python line where threads waited (or spun).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineStat {
    /// `qualname (file:line)` of the innermost Python frame.
    pub line: String,
    pub time_us: u64,
    pub waits: u64,
}

/// One lock (or other contention site) and who waited on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockStat {
    pub kind: Category,
    pub identity: LockIdentity,
    /// `list @ 0x7f…`, `_thread.lock @ 0x…`, `stop-the-world (paused thread)`, …
    pub description: String,
    /// Off-CPU intervals spent waiting on it.
    pub waits: u64,
    /// CPU samples spent on it (spinning, refcount stalls, a collector's pause).
    pub samples: u64,
    /// Off-CPU time plus CPU samples × period, including the spinning before parking on it.
    pub total_us: u64,
    /// Time spent spinning (`sched_yield` in the PyMutex slow path) before parking on it.
    pub spin_us: u64,
    /// Longest and mean off-CPU wait.
    pub max_us: u64,
    pub mean_us: u64,
    /// TIDs of the threads that waited.
    pub threads: Vec<u32>,
    /// Where they waited, most time first (top 5).
    pub top_lines: Vec<LineStat>,
    /// What the threads holding it were doing while others waited, most waiting time first
    /// (top 5; see [`crate::blame`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<crate::blame::HeldBy>,
    /// Blocked time at its parked-on addresses timed in the kernel (BPF; µs): the exact
    /// reference for the off-CPU part of `total_us`, which the sampled stacks estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_wait_us: Option<u64>,
    /// Time its waiters then waited for a CPU after the wake-ups that ended those waits, timed
    /// in the kernel (BPF; µs): shown as `runqueue` at the waiting lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_runqueue_us: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub duration_s: f64,
    /// CPUs online on the machine it was recorded on (predicted gains depend on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    pub rate_hz: u64,
    /// CPU samples.
    pub samples: u64,
    pub lost_records: u64,
    pub threads: usize,
    /// CPU samples whose stack has at least one Python frame.
    pub with_python: u64,
    /// CPU samples the native unwinder could not follow to the outermost frame.
    pub unwind_incomplete: u64,
    /// CPU samples whose Python and native stacks disagreed (marked `[python/native mismatch]`).
    pub mismatched: u64,
    /// CPU samples that have a frame in libpython/the interpreter or libc that did not resolve.
    pub unresolved_core: u64,
    /// Off-CPU intervals (switch-outs), from the switch records (exact unless records were lost).
    pub switch_outs: u64,
    /// How off-CPU stacks were taken: `sampled` (blocked threads snapshotted by a periodic
    /// tick), `exact` (`--exact-waits`: a stack at every switch-out) or `off`.
    pub wait_mode: String,
    /// Sampled mode: ticks per second (per thread) actually used, lowest over the recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_rate_hz: Option<f64>,
    /// Off-CPU intervals that got a stack (all of them with exact waits).
    pub observed_waits: u64,
    /// Blocked time (µs) of threads none of whose intervals got a stack (`[not observed]`).
    pub unobserved_us: u64,
    /// Threads whose split of off-CPU time between blocked and runqueue follows the sampling
    /// ticks because the kernel's run-delay accounting counted blocking as runqueue time.
    pub sched_corrected_threads: u64,
    /// Records the kernel dropped, per ring kind and time range (see `LostRange`).
    pub lost: Vec<LostRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cpu_s: Option<f64>,
    /// All thread time observed (µs): CPU samples × period + off-CPU time.
    pub thread_time_us: u64,
    /// Thread time per category, largest first.
    pub categories: Vec<CategoryTime>,
    /// With `--subprocesses`: every process followed, the target first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessInfo>,
    /// CPU time one sample stands for (ns), as given to [`ProfileBuilder::new`]: the profile's
    /// totals and everything rendered from it use this one value (not in the JSON, which has
    /// `rate_hz`).
    #[serde(skip)]
    pub period_ns: u64,
    /// Holder sampling counters, when blame was recorded (see [`crate::blame`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<crate::blame::BlameStats>,
    /// How the CPU samples' Python stacks were read (absent in profiles of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_stacks: Option<PythonStacks>,
    /// Where each thread's blocked/runqueue split came from (absent in older profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched_accounting: Option<SchedAccounting>,
}

/// Where the threads' scheduler accounting (time blocked, time waiting for a CPU) came from:
/// the kernel's switch and wake-up events, timed in BPF (`bpf`), or the kernel's per-thread
/// `schedstat` counters (`schedstat`), whose run delay on 6.12+ kernels also counts blocked time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedAccounting {
    /// `bpf` or `schedstat`.
    pub source: String,
    /// Why the BPF accounting was not used, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `bpf`: threads accounted from the kernel's events (the others, seen before their
    /// first switch, from schedstat until then).
    pub kernel_threads: u64,
    /// With `bpf`: the kernel's schedstat run delay read beside the events' runnable time, over
    /// the same periods of the same threads (schedstat counts blocked time too on 6.12+
    /// kernels: the difference is how much it would have overstated waiting for a CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_check: Option<SchedCrossCheck>,
}

/// See [`SchedAccounting::cross_check`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedCrossCheck {
    pub threads: u64,
    pub schedstat_runqueue_us: u64,
    pub events_runqueue_us: u64,
}

/// How the CPU samples' Python stacks were read: in the kernel at the sample instant (BPF), or
/// from the target's memory after the sample, when its ring was drained (then they may
/// disagree with the native stack taken at the sample: `mismatched`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PythonStacks {
    /// `bpf` (at the sample instant) or `after-sample`.
    pub path: String,
    /// Why the BPF path was not taken, or stopped, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Samples whose Python stack was read at the instant.
    pub at_instant: u64,
    /// Samples of the BPF path with no kernel record (a thread not registered yet, a full
    /// ring), read after the sample.
    pub after_sample: u64,
    /// Launched targets start while the kernel still verifies the programs: samples taken
    /// before they were ready, read after the sample.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub before_ready: u64,
    /// Of `after_sample`: samples whose kernel record said the thread was not registered yet
    /// (a new thread's first samples, until ftprof re-reads the thread states).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub new_thread: u64,
    /// Kernel records lost because their ring was full (ftprof drained it too late).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ring_lost: u64,
    /// Kernel records that found no sample (dropped once the samples of their time were all in).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unmatched: u64,
    /// Samples whose Python stack was read after the sample, too late: ftprof had fallen behind
    /// (20 ms or more) and their thread, seen in Python before, had no Python frame left by then
    /// (it had finished or exited). They have no Python frames.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub too_late: u64,
    /// How far behind ftprof read the latest of those, in ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub too_late_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Summary {
    /// [`Summary::period_ns`] in microseconds.
    pub fn period_us(&self) -> f64 {
        self.period_ns as f64 / 1000.0
    }
}

/// Records lost by one kind of ring (the kernel could not write them: ftprof drained too late).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LostRange {
    /// `samples` (CPU samples; also mmap/comm records) or `switches` (off-CPU records: the
    /// affected intervals are discarded, so off-CPU totals are low by up to that span).
    pub ring: String,
    pub count: u64,
    /// Seconds from the start of the recording of the first and last loss.
    pub first_s: f64,
    pub last_s: f64,
}

/// The whole result of a recording (serialized as the JSON profile).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Profile {
    pub schema_version: u32,
    pub target: TargetInfo,
    pub summary: Summary,
    pub threads: Vec<ThreadInfo>,
    pub frames: Vec<Frame>,
    pub stacks: Vec<Stack>,
    /// Contention sites, most time first.
    pub locks: Vec<LockStat>,
    /// Python lines where threads waited or spun (contention categories), most time first.
    pub top_lines: Vec<LineStat>,
    /// The holders' side of lock waits: time others waited on each lock, by the holder's stack
    /// (see [`crate::blame`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blame: Vec<crate::blame::BlameStack>,
    /// Known pitfalls (and unexplained contention) recognised in this profile, best first, each
    /// with its remedy (see [`crate::findings`]; filled in by [`Profile::with_findings`]).
    #[serde(default)]
    pub findings: Vec<crate::findings::Finding>,
}

impl Profile {
    /// Finish a profile read back from its JSON (serde): check the layout version and restore
    /// what the JSON does not carry (the sample period, from `rate_hz` as the recorder computed
    /// it). Errors name the remedy.
    pub fn loaded(mut self) -> Result<Profile, String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "this JSON profile has layout version {} but this ftprof reads version {SCHEMA_VERSION}; record it again with this ftprof",
                self.schema_version
            ));
        }
        if self.summary.period_ns == 0 {
            self.summary.period_ns = 1_000_000_000 / self.summary.rate_hz.max(1);
        }
        if let Some(bad) = self.stacks.iter().flat_map(|s| &s.frames).find(|&&f| f as usize >= self.frames.len()) {
            return Err(format!("this JSON profile is damaged: a stack names frame {bad} of {}", self.frames.len()));
        }
        Ok(self)
    }

    /// The profile with its [`Profile::findings`] derived (call once the profile is complete,
    /// blame attached).
    pub fn with_findings(mut self) -> Profile {
        self.findings = crate::findings::derive(&self);
        self
    }

    /// `(thread label, frames root→leaf, samples)` for each stack.
    pub fn iter_stacks(&self) -> impl Iterator<Item = (&Stack, Vec<&Frame>)> {
        self.stacks.iter().map(|s| (s, s.frames.iter().map(|&i| &self.frames[i as usize]).collect()))
    }
}

#[derive(Default)]
struct StackAgg {
    samples: u64,
    wait_us: u64,
    waits: u64,
}

/// Spinning whose lock is decided at the end (see [`ProfileBuilder::settle_spins`]).
struct PendingSpin {
    tid: u32,
    identity: LockIdentity,
    line: Option<String>,
    time_us: u64,
    samples: u64,
}

#[derive(Default)]
struct LockAgg {
    spin_us: u64,
    waits: u64,
    samples: u64,
    wait_us: u64,
    total_us: u64,
    max_us: u64,
    threads: std::collections::BTreeSet<u32>,
    lines: HashMap<String, (u64, u64)>,
    /// The parked-on addresses of its off-CPU waits, to find their exact counts.
    parked: std::collections::BTreeSet<u64>,
    kernel_wait_us: Option<u64>,
    kernel_runqueue_us: Option<u64>,
}

/// One thread's blocked waits at one address, counted in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelWaits {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Runnable time after the wake-ups that ended them.
    pub runq_ns: u64,
}

/// Per lock, the waits a thread parked on it at one line.
type ParkCounts = HashMap<(Category, LockIdentity), u64>;

/// Accumulates samples into a [`Profile`].
pub struct ProfileBuilder {
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, u32>,
    stacks: HashMap<(u32, Vec<u32>, Category), StackAgg>,
    threads: HashMap<u32, ThreadInfo>,
    locks: HashMap<(Category, LockIdentity), LockAgg>,
    spins: Vec<PendingSpin>,
    /// Per (thread, line): the locks it parked on there, with their waits.
    parks: HashMap<(u32, Option<String>), ParkCounts>,
    lines: HashMap<String, (u64, u64)>,
    period_ns: u64,
    period_us: f64,
    pub summary: Summary,
    /// Modules whose unresolved frames count as `unresolved_core`; the first is the runtime.
    core_modules: Vec<String>,
    opnames: Vec<String>,
    /// Exact blocked waits per (thread, parked-on address), from the kernel's events.
    kernel_waits: Option<HashMap<(u32, u64), KernelWaits>>,
    /// Root frame label per process (`--subprocesses`).
    process_roots: HashMap<u32, String>,
}

impl ProfileBuilder {
    /// `period_ns`: CPU time one cpu-clock sample stands for.
    pub fn new(period_ns: u64) -> Self {
        ProfileBuilder {
            frames: Vec::new(),
            frame_ids: HashMap::new(),
            stacks: HashMap::new(),
            threads: HashMap::new(),
            locks: HashMap::new(),
            spins: Vec::new(),
            parks: HashMap::new(),
            lines: HashMap::new(),
            period_ns,
            period_us: period_ns as f64 / 1000.0,
            summary: Summary::default(),
            core_modules: Vec::new(),
            opnames: Vec::new(),
            kernel_waits: None,
            process_roots: HashMap::new(),
        }
    }

    /// Modules (paths) whose unresolved frames are counted in `Summary::unresolved_core`; the
    /// first one is the module holding the CPython runtime.
    pub fn set_core_modules(&mut self, modules: Vec<String>) {
        self.core_modules = modules;
    }

    /// Exact blocked waits per (thread, parked-on address), counted from the kernel's switch and
    /// wake-up events: the locks' wait counts and longest waits come from these where their
    /// waits were parked at a known address (the sampled stacks only split the time).
    pub fn set_kernel_waits(&mut self, waits: HashMap<(u32, u64), KernelWaits>) {
        self.kernel_waits = Some(waits);
    }

    /// Base opcode names of the target's CPython (see `symbolizer::python::opcodes`).
    pub fn set_opnames(&mut self, opnames: Vec<String>) {
        self.opnames = opnames;
    }

    /// Root the stacks of process `pid`'s threads under a frame named `label`
    /// (`process PID (command)`, with `--subprocesses`).
    pub fn set_process(&mut self, pid: u32, label: &str) {
        self.process_roots.insert(pid, label.to_string());
    }

    pub fn set_thread(&mut self, tid: u32, pid: u32, name: &str) {
        let t = self.threads.entry(tid).or_insert_with(|| ThreadInfo { tid, pid, ..Default::default() });
        t.pid = pid;
        if !name.is_empty() {
            t.name = name.to_string();
        }
    }

    fn intern(&mut self, f: Frame) -> u32 {
        if let Some(&i) = self.frame_ids.get(&f) {
            return i;
        }
        let i = self.frames.len() as u32;
        self.frames.push(f.clone());
        self.frame_ids.insert(f, i);
        i
    }

    fn is_core(&self, module: &str) -> bool {
        let name = module.rsplit('/').next().unwrap_or(module);
        name.starts_with("libc.so") || name.starts_with("libc-") || self.core_modules.iter().any(|m| m == module)
    }

    /// Add one sample (or one aggregate of identical samples, with its weight); returns how its
    /// stacks merged.
    pub fn add(&mut self, s: &SampleInput) -> MergeStatus {
        let (mut frames, status) = merge_stacks(s.native, s.native_complete, s.python);
        let (on_cpu, samples, wait_us, waits, max_us, preempted) = match s.observation {
            Observation::Cpu { samples } => (true, samples, 0, 0, 0, false),
            Observation::OffCpu { wait_us, waits, max_us, preempted } => (false, 0, wait_us, waits, max_us, preempted),
        };
        let evidence = Evidence {
            native: s.native.iter().flatten().collect(),
            leaf_prev: s.leaf_prev,
            kernel: s.kernel,
            python: s.python,
            parked: s.parked,
            on_cpu,
            preempted,
            alone: s.alone,
            runtime_module: self.core_modules.first().map(String::as_str),
            opnames: &self.opnames,
            syscall: s.syscall,
            operand: s.operand,
            concurrent: s.concurrent,
        };
        let (category, identity) = classify(&evidence);
        if on_cpu {
            // The kernel path of a switch-out is always the scheduler: only CPU samples keep it.
            frames.extend(s.kernel.iter().rev().map(|k| Frame::simple(FrameKind::Kernel, k.clone())));
        }
        let leaf = match (&identity, category) {
            (Some(id), c) => Some(format!("{}: {}", c.name(), id.describe())),
            (None, c) if !on_cpu || c == Category::Gc => Some(c.name().to_string()),
            _ => None,
        };
        let line = frames.iter().rev().find(|f| f.kind == FrameKind::Python).map(Frame::label);
        if let Some(m) = s.marker {
            frames.push(Frame::marker(m));
        }
        if let Some(l) = leaf {
            frames.push(Frame::simple(FrameKind::Wait, l));
        }

        let time_us = if on_cpu { (samples as f64 * self.period_us).round() as u64 } else { wait_us };
        // What the line and lock tables count: CPU samples, or off-CPU intervals.
        let events = if on_cpu { samples } else { waits };
        let thread = self.threads.entry(s.tid).or_insert_with(|| ThreadInfo { tid: s.tid, ..Default::default() });
        if on_cpu {
            thread.samples += samples;
            let sum = &mut self.summary;
            sum.samples += samples;
            if status.has_python {
                sum.with_python += samples;
            }
            if !s.native_complete {
                sum.unwind_incomplete += samples;
            }
            if status.mismatch {
                sum.mismatched += samples;
            }
            if frames.iter().any(|f| f.name == "[unknown]" && f.module.as_deref().is_some_and(|m| self.is_core(m))) {
                self.summary.unresolved_core += samples;
            }
        } else {
            thread.wait_us += time_us;
        }

        if category.is_contention() {
            if let Some(id) = identity {
                if category == Category::Spin {
                    // Whose lock it was is only known if the thread parks at the same line.
                    self.spins.push(PendingSpin { tid: s.tid, identity: id, line: line.clone(), time_us, samples });
                } else {
                    if !on_cpu && matches!(category, Category::Lock | Category::CriticalSection | Category::Pymutex) {
                        *self
                            .parks
                            .entry((s.tid, line.clone()))
                            .or_default()
                            .entry((category, id.clone()))
                            .or_default() += waits;
                    }
                    let agg = self.locks.entry((category, id)).or_default();
                    if let (false, Some(p)) = (on_cpu, s.parked) {
                        agg.parked.insert(p.addr);
                    }
                    agg.samples += samples;
                    agg.waits += waits;
                    agg.wait_us += wait_us;
                    agg.max_us = agg.max_us.max(max_us);
                    agg.total_us += time_us;
                    agg.threads.insert(s.tid);
                    if let Some(l) = &line {
                        let e = agg.lines.entry(l.clone()).or_default();
                        e.0 += time_us;
                        e.1 += events;
                    }
                }
            }
            if let Some(l) = line {
                let e = self.lines.entry(l).or_default();
                e.0 += time_us;
                e.1 += events;
            }
        }

        let ids: Vec<u32> = frames.into_iter().map(|f| self.intern(f)).collect();
        let agg = self.stacks.entry((s.tid, ids, category)).or_default();
        agg.samples += samples;
        agg.wait_us += wait_us;
        agg.waits += waits;
        status
    }

    /// Spinning at a line where the same thread also parked belongs to the lock it parked on
    /// there (the one it parked on most); other spinning counts under the C function that spun.
    fn settle_spins(&mut self) {
        for p in std::mem::take(&mut self.spins) {
            let parked = self.parks.get(&(p.tid, p.line.clone())).and_then(|locks| {
                locks
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0 .1.describe().cmp(&a.0 .1.describe())))
                    .map(|(k, _)| k.clone())
            });
            let claimed = parked.is_some();
            let agg = self.locks.entry(parked.unwrap_or((Category::Spin, p.identity))).or_default();
            agg.samples += p.samples;
            agg.spin_us += p.time_us;
            agg.total_us += p.time_us;
            agg.threads.insert(p.tid);
            if let Some(l) = p.line {
                let e = agg.lines.entry(l).or_default();
                e.0 += p.time_us;
                if !claimed {
                    e.1 += p.samples;
                }
            }
        }
    }

    pub fn finish(mut self, target: TargetInfo) -> Profile {
        self.settle_spins();
        let mut threads: Vec<ThreadInfo> = std::mem::take(&mut self.threads).into_values().collect();
        threads.sort_by_key(|t| t.tid);
        let mut thread_frame = HashMap::new();
        for t in &threads {
            let id = self.intern(Frame::thread(thread_label(&t.name, t.tid)));
            // With --subprocesses, the process's root frame comes first (also of kind `thread`:
            // a root that merged views drop with the thread frames).
            let root =
                self.process_roots.get(&t.pid).cloned().map(|p| self.intern(Frame::simple(FrameKind::Thread, p)));
            thread_frame.insert(t.tid, (root, id));
        }
        let mut stacks: Vec<Stack> = std::mem::take(&mut self.stacks)
            .into_iter()
            .map(|((thread, ids, category), agg)| {
                let mut frames = Vec::with_capacity(ids.len() + 2);
                let (root, thread_id) = thread_frame[&thread];
                frames.extend(root);
                frames.push(thread_id);
                frames.extend(ids);
                Stack { thread, frames, category, samples: agg.samples, wait_us: agg.wait_us, waits: agg.waits }
            })
            .collect();
        stacks.sort_by(|a, b| {
            b.time_us(self.period_us)
                .total_cmp(&a.time_us(self.period_us))
                .then(a.frames.cmp(&b.frames))
                .then(a.category.cmp(&b.category))
        });
        // Summed in the stacks' order (not a hash map's): the same inputs give the same bits.
        let mut per_cat: std::collections::BTreeMap<Category, f64> = Default::default();
        for st in &stacks {
            *per_cat.entry(st.category).or_default() += st.time_us(self.period_us);
        }
        let mut summary = self.summary;
        summary.period_ns = self.period_ns;
        summary.threads = threads.iter().filter(|t| t.samples > 0 || t.wait_us > 0).count();
        let total: f64 = per_cat.values().sum();
        summary.thread_time_us = total.round() as u64;
        let mut cats: Vec<CategoryTime> = per_cat
            .into_iter()
            .map(|(category, us)| CategoryTime {
                category,
                time_us: us.round() as u64,
                share: if total > 0.0 { us / total } else { 0.0 },
                contention: category.is_contention(),
            })
            .collect();
        cats.sort_by(|a, b| b.time_us.cmp(&a.time_us).then(a.category.cmp(&b.category)));
        summary.categories = cats;

        let top = |m: HashMap<String, (u64, u64)>, n: usize| {
            let mut v: Vec<LineStat> =
                m.into_iter().map(|(line, (time_us, waits))| LineStat { line, time_us, waits }).collect();
            v.sort_by(|a, b| b.time_us.cmp(&a.time_us).then(a.line.cmp(&b.line)));
            v.truncate(n);
            v
        };
        let kernel = self.kernel_waits.take();
        let mut locks: Vec<LockStat> = std::mem::take(&mut self.locks)
            .into_iter()
            .map(|((kind, identity), mut a)| {
                if let Some(k) = &kernel {
                    // Every thread's waits at its addresses, sampled on it or not.
                    let exact: Vec<&KernelWaits> =
                        k.iter().filter(|((_, addr), _)| a.parked.contains(addr)).map(|(_, w)| w).collect();
                    if !exact.is_empty() {
                        a.waits = exact.iter().map(|w| w.count).sum();
                        a.max_us = exact.iter().map(|w| w.max_ns / 1000).max().unwrap_or(0);
                        a.kernel_wait_us = Some(exact.iter().map(|w| w.total_ns).sum::<u64>() / 1000);
                        a.kernel_runqueue_us = Some(exact.iter().map(|w| w.runq_ns).sum::<u64>() / 1000);
                    }
                }
                (kind, identity, a)
            })
            .map(|(kind, identity, a)| LockStat {
                kind,
                description: identity.describe(),
                identity,
                waits: a.waits,
                samples: a.samples,
                spin_us: a.spin_us,
                total_us: a.total_us,
                max_us: a.max_us,
                mean_us: a.wait_us / a.waits.max(1),
                threads: a.threads.into_iter().collect(),
                top_lines: top(a.lines, 5),
                held_by: Vec::new(),
                kernel_wait_us: a.kernel_wait_us,
                kernel_runqueue_us: a.kernel_runqueue_us,
            })
            .collect();
        locks.sort_by(|a, b| b.total_us.cmp(&a.total_us).then(a.description.cmp(&b.description)));
        let top_lines = top(std::mem::take(&mut self.lines), 20);
        Profile {
            schema_version: SCHEMA_VERSION,
            target,
            summary,
            threads,
            frames: self.frames,
            stacks,
            locks,
            top_lines,
            blame: Vec::new(),
            findings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{code, cpu, input, nf, off, pystack, runtime_stack, LIBC, RUNTIME};

    const APP: &str = "/app/app.py";

    fn lock(obj: u64) -> ParkedInfo {
        ParkedInfo { addr: obj + 0x18, lock_object: Some((obj, "_thread.lock".into())), ..Default::default() }
    }

    fn parked_stack() -> Vec<Vec<NativeFrame>> {
        runtime_stack(&["_PyParkingLot_Park", "_PyMutex_LockTimed", "lock_PyThread_acquire_lock", EVAL])
    }

    fn spin_stack() -> Vec<Vec<NativeFrame>> {
        vec![
            vec![nf("sched_yield", LIBC)],
            vec![nf("_PyMutex_LockTimed", RUNTIME)],
            vec![nf("lock_PyThread_acquire_lock", RUNTIME)],
            vec![nf(EVAL, RUNTIME)],
        ]
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";

    fn lock_named<'a>(p: &'a Profile, description: &str) -> &'a LockStat {
        p.locks.iter().find(|l| l.description == description).unwrap_or_else(|| {
            panic!("no lock {description}; have {:?}", p.locks.iter().map(|l| &l.description).collect::<Vec<_>>())
        })
    }

    #[test]
    fn identical_samples_aggregate_into_one_stack() {
        let mut b = ProfileBuilder::new(1_000_000);
        let py = pystack(vec![code("work", APP, 3)]);
        let n = runtime_stack(&[EVAL, "main"]);
        for k in [2, 3, 5] {
            b.add(&SampleInput { python: Some(&py), ..input(7, &n, cpu(k)) });
        }
        b.add(&SampleInput { python: Some(&py), ..input(8, &n, cpu(1)) });
        let p = b.finish(TargetInfo::default());
        assert_eq!(p.stacks.len(), 2, "one stack per thread");
        assert_eq!(p.stacks[0].samples, 10);
        assert_eq!(p.stacks[0].thread, 7);
        assert_eq!(p.summary.samples, 11);
        assert_eq!(p.summary.with_python, 11);
        assert_eq!(p.threads.iter().map(|t| (t.tid, t.samples)).collect::<Vec<_>>(), [(7, 10), (8, 1)]);
        // Frames are interned: both threads' stacks share the Python frame.
        let frames: Vec<&str> = p.frames.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(frames.iter().filter(|&&f| f == "work").count(), 1);
        assert_eq!(p.summary.categories.len(), 1);
        assert_eq!(p.summary.categories[0].category, Category::Python);
        assert_eq!(p.summary.thread_time_us, 11_000);
    }

    #[test]
    fn threads_of_followed_processes_are_rooted_under_their_process() {
        let mut b = ProfileBuilder::new(1_000_000);
        let n = runtime_stack(&[EVAL, "main"]);
        let py = pystack(vec![code("work", APP, 3)]);
        b.set_thread(11, 10, "MainThread");
        b.set_thread(21, 20, "MainThread");
        b.set_thread(22, 20, "worker");
        b.set_process(10, "process 10 (python3.13t app.py)");
        b.set_process(20, "process 20 (python3.13t -c spawn)");
        for tid in [11, 21, 22] {
            b.add(&SampleInput { python: Some(&py), ..input(tid, &n, cpu(1)) });
        }
        let p = b.finish(TargetInfo::default());
        let roots: Vec<(u32, String, String)> = p
            .iter_stacks()
            .map(|(s, f)| (s.thread, f[0].name.clone(), f[1].name.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            roots,
            [
                (11, "process 10 (python3.13t app.py)".into(), "MainThread (11)".into()),
                (21, "process 20 (python3.13t -c spawn)".into(), "MainThread (21)".into()),
                (22, "process 20 (python3.13t -c spawn)".into(), "worker (22)".into()),
            ]
        );
        for (_, f) in p.iter_stacks() {
            assert_eq!((f[0].kind, f[1].kind), (FrameKind::Thread, FrameKind::Thread));
        }
        // Without set_process, the thread frame is the root (the default).
        let mut b = ProfileBuilder::new(1_000_000);
        b.add(&SampleInput { python: Some(&py), ..input(7, &n, cpu(1)) });
        let p = b.finish(TargetInfo::default());
        assert_eq!(p.iter_stacks().next().unwrap().1[0].name, "thread (7)");
    }

    /// With the kernel's exact waits per (thread, parked-on address): a lock's wait count and
    /// longest wait come from every thread's waits at the addresses its sampled waits parked on
    /// (the sampled waits only split the time); a lock without kernel waits keeps the estimate.
    #[test]
    fn kernel_waits_give_each_lock_its_exact_count_and_longest_wait() {
        let mut b = ProfileBuilder::new(1_000_000);
        let n = parked_stack();
        let py = pystack(vec![code("a", APP, 10)]);
        let (l, other) = (lock(0x1000), lock(0x2000));
        b.add(&SampleInput { python: Some(&py), parked: Some(&l), ..input(1, &n, off(9_000, 3, 5_000)) });
        b.add(&SampleInput { python: Some(&py), parked: Some(&l), ..input(2, &n, off(1_000, 1, 1_000)) });
        b.add(&SampleInput { python: Some(&py), parked: Some(&other), ..input(1, &n, off(4_000, 2, 3_000)) });
        let k = |count, max_ns| KernelWaits { count, total_ns: 2 * max_ns, max_ns, runq_ns: max_ns / 10 };
        b.set_kernel_waits(HashMap::from([
            ((1, 0x1018), k(7, 6_500_000)),
            ((2, 0x1018), k(2, 800_000)),
            // Another thread's short waits at the address, never sampled: this lock's too.
            ((3, 0x1018), k(3, 1_000)),
            ((1, 0x9999), k(4, 1)),
        ]));
        let p = b.finish(TargetInfo::default());
        let s = lock_named(&p, "_thread.lock @ 0x1000");
        assert_eq!((s.waits, s.max_us, s.total_us, s.mean_us), (12, 6_500, 10_000, 833));
        assert_eq!(s.kernel_wait_us, Some(14_602));
        assert_eq!(s.kernel_runqueue_us, Some(730));
        let s = lock_named(&p, "_thread.lock @ 0x2000");
        assert_eq!((s.waits, s.max_us, s.kernel_wait_us, s.kernel_runqueue_us), (2, 3_000, None, None));
    }

    #[test]
    fn waits_add_up_per_lock_with_max_and_mean() {
        let mut b = ProfileBuilder::new(1_000_000);
        let n = parked_stack();
        let py_a = pystack(vec![code("a", APP, 10)]);
        let py_b = pystack(vec![code("b", APP, 20)]);
        let l = lock(0x1000);
        b.add(&SampleInput { python: Some(&py_a), parked: Some(&l), ..input(1, &n, off(9_000, 3, 5_000)) });
        b.add(&SampleInput { python: Some(&py_b), parked: Some(&l), ..input(2, &n, off(1_000, 1, 1_000)) });
        b.add(&SampleInput { python: Some(&py_a), parked: Some(&l), ..input(1, &n, off(2_000, 1, 2_000)) });
        let p = b.finish(TargetInfo::default());
        let s = lock_named(&p, "_thread.lock @ 0x1000");
        assert_eq!(s.kind, Category::Lock);
        assert_eq!((s.waits, s.samples, s.total_us, s.max_us, s.mean_us), (5, 0, 12_000, 5_000, 2_400));
        assert_eq!(s.threads, [1, 2]);
        let lines: Vec<(&str, u64, u64)> = s.top_lines.iter().map(|l| (l.line.as_str(), l.time_us, l.waits)).collect();
        assert_eq!(lines, [("a (app.py:10)", 11_000, 4), ("b (app.py:20)", 1_000, 1)]);
        assert_eq!(p.top_lines.len(), 2);
        assert_eq!(p.summary.samples, 0);
        assert_eq!(p.threads.iter().map(|t| t.wait_us).sum::<u64>(), 12_000);
        let lock_share = p.summary.categories.iter().find(|c| c.category == Category::Lock).unwrap();
        assert!(lock_share.contention);
        assert!((lock_share.share - 1.0).abs() < 1e-12);
    }

    #[test]
    fn spinning_where_the_thread_parked_is_claimed_by_that_lock() {
        let mut b = ProfileBuilder::new(1_000_000);
        let py = pystack(vec![code("take", APP, 5)]);
        let (p1, p2) = (lock(0x1000), lock(0x2000));
        let n = parked_stack();
        // The thread parks at line 5 on two locks, more often on 0x2000.
        b.add(&SampleInput { python: Some(&py), parked: Some(&p1), ..input(1, &n, off(50_000, 1, 50_000)) });
        b.add(&SampleInput { python: Some(&py), parked: Some(&p2), ..input(1, &n, off(10_000, 4, 4_000)) });
        let s = spin_stack();
        b.add(&SampleInput { python: Some(&py), ..input(1, &s, cpu(3)) });
        let p = b.finish(TargetInfo::default());
        let claimed = lock_named(&p, "_thread.lock @ 0x2000");
        assert_eq!((claimed.samples, claimed.spin_us, claimed.total_us, claimed.waits), (3, 3_000, 13_000, 4));
        // The spin's line time goes to the lock's line; its samples do not count as waits there.
        assert_eq!(claimed.top_lines[0].time_us, 13_000);
        assert_eq!(claimed.top_lines[0].waits, 4);
        assert_eq!(lock_named(&p, "_thread.lock @ 0x1000").spin_us, 0);
        assert!(p.locks.iter().all(|l| l.kind != Category::Spin), "a claimed spin leaves no spin entry");
        // The stack itself stays a spin stack: the flamegraph shows where the time went.
        assert!(p.stacks.iter().any(|s| s.category == Category::Spin && s.samples == 3));
    }

    #[test]
    fn ties_between_parked_locks_go_to_the_lowest_description() {
        let mut b = ProfileBuilder::new(1_000_000);
        let py = pystack(vec![code("take", APP, 5)]);
        let n = parked_stack();
        for obj in [0x3000, 0x2000, 0x4000] {
            let l = lock(obj);
            b.add(&SampleInput { python: Some(&py), parked: Some(&l), ..input(1, &n, off(1_000, 2, 500)) });
        }
        let s = spin_stack();
        b.add(&SampleInput { python: Some(&py), ..input(1, &s, cpu(1)) });
        let p = b.finish(TargetInfo::default());
        assert_eq!(lock_named(&p, "_thread.lock @ 0x2000").spin_us, 1_000);
    }

    #[test]
    fn spinning_elsewhere_stays_with_the_function_that_spun() {
        let mut b = ProfileBuilder::new(1_000_000);
        let l = lock(0x1000);
        let n = parked_stack();
        let at5 = pystack(vec![code("take", APP, 5)]);
        let at6 = pystack(vec![code("take", APP, 6)]);
        // Parked at line 5 by thread 1; spinning at line 6 by thread 1 and at line 5 by thread 2.
        b.add(&SampleInput { python: Some(&at5), parked: Some(&l), ..input(1, &n, off(1_000, 1, 1_000)) });
        let s = spin_stack();
        b.add(&SampleInput { python: Some(&at6), ..input(1, &s, cpu(2)) });
        b.add(&SampleInput { python: Some(&at5), ..input(2, &s, cpu(4)) });
        let p = b.finish(TargetInfo::default());
        assert_eq!(lock_named(&p, "_thread.lock @ 0x1000").spin_us, 0);
        let spin = lock_named(&p, "lock_PyThread_acquire_lock");
        assert_eq!(spin.kind, Category::Spin);
        assert_eq!((spin.samples, spin.spin_us, spin.total_us), (6, 6_000, 6_000));
        assert_eq!(spin.threads, [1, 2]);
        // Unclaimed spinning counts its samples as the line's events.
        let lines: Vec<(&str, u64, u64)> =
            spin.top_lines.iter().map(|l| (l.line.as_str(), l.time_us, l.waits)).collect();
        assert_eq!(lines, [("take (app.py:5)", 4_000, 4), ("take (app.py:6)", 2_000, 2)]);
    }

    #[test]
    fn category_shares_cover_all_thread_time() {
        let p = crate::fixture::profile();
        let total: f64 = p.summary.categories.iter().map(|c| c.share).sum();
        assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
        let period = p.summary.period_us();
        assert_eq!(period, 1e6 / crate::fixture::RATE_HZ as f64);
        let stacks: f64 = p.stacks.iter().map(|s| s.time_us(period)).sum();
        assert_eq!(p.summary.thread_time_us, stacks as u64);
        assert!(p.summary.categories.windows(2).all(|w| w[0].time_us >= w[1].time_us), "largest first");
        assert!(p.stacks.windows(2).all(|w| w[0].time_us(period) >= w[1].time_us(period)), "most time first");
        assert!(p.locks.windows(2).all(|w| w[0].total_us >= w[1].total_us), "most time first");
    }

    #[test]
    fn cpu_samples_carry_the_kernel_path_and_waits_do_not() {
        let mut b = ProfileBuilder::new(1_000_000);
        let kernel = ["clear_page_erms".to_string(), "asm_exc_page_fault".to_string()];
        let n = vec![vec![nf("memset", LIBC)]];
        b.add(&SampleInput { kernel: &kernel, ..input(1, &n, cpu(1)) });
        let sched = ["schedule".to_string(), "__x64_sys_futex".to_string()];
        b.add(&SampleInput { kernel: &sched, ..input(1, &n, off(10, 1, 10)) });
        let p = b.finish(TargetInfo::default());
        let labels: Vec<Vec<String>> = p.iter_stacks().map(|(_, f)| f.iter().map(|f| f.label()).collect()).collect();
        assert!(labels.contains(&vec![
            "thread (1)".to_string(),
            "memset".into(),
            "asm_exc_page_fault_[k]".into(),
            "clear_page_erms_[k]".into()
        ]));
        assert!(labels.contains(&vec!["thread (1)".to_string(), "memset".into(), "[idle]".into()]));
    }

    #[test]
    fn lock_and_category_totals_use_the_same_period() {
        // 199 Hz: a period of 5025125 ns, not a whole number of microseconds.
        let mut b = ProfileBuilder::new(1_000_000_000 / 199);
        let py = pystack(vec![code("work", APP, 3)]);
        let prev = [nf("_Py_atomic_add_ssize", RUNTIME), nf("Py_INCREF", RUNTIME)];
        let n = runtime_stack(&[EVAL]);
        b.add(&SampleInput { python: Some(&py), leaf_prev: &prev, ..input(1, &n, cpu(7)) });
        let p = b.finish(TargetInfo::default());
        let cat = p.summary.categories.iter().find(|c| c.category == Category::Refcount).unwrap();
        assert_eq!(p.locks[0].total_us, 35_176);
        assert_eq!(cat.time_us, p.locks[0].total_us);
        assert_eq!(p.summary.thread_time_us, p.locks[0].total_us);
        assert_eq!(p.summary.period_ns, 5_025_125);
    }

    #[test]
    fn unresolved_runtime_frames_are_counted() {
        let mut b = ProfileBuilder::new(1_000_000);
        b.set_core_modules(vec![RUNTIME.into()]);
        let core = vec![vec![crate::fixture::unknown(RUNTIME, 0x10)]];
        let ext = vec![vec![crate::fixture::unknown(crate::fixture::EXT, 0x10)]];
        let libc = vec![vec![crate::fixture::unknown(LIBC, 0x10)]];
        b.add(&input(1, &core, cpu(2)));
        b.add(&input(1, &ext, cpu(4)));
        b.add(&SampleInput { native_complete: false, ..input(1, &libc, cpu(8)) });
        let p = b.finish(TargetInfo::default());
        assert_eq!(p.summary.unresolved_core, 10, "runtime and libc, not the extension");
        assert_eq!(p.summary.unwind_incomplete, 8);
    }
}
