//! # engine — the recording state machine
//!
//! Job: turn what is observed of a running CPython target into an [`analysis::Profile`]. While
//! the target runs, the [`Recorder`] (a [`profiler::Sink`]) takes each record as it is drained:
//! it reads the sampled thread's Python stack and parked-on lock while the sample is fresh,
//! unwinds the native stack, and interns it all in an [`analysis::collect::Collector`]; between
//! drain passes its wait-sampling tick reads every live thread's scheduler accounting, snapshots
//! the blocked ones, and searches who holds what they wait on ([`holders`], the one holder search,
//! also used by `ftprof dump`); the [`gil_watch`] notices the GIL turning on. It follows child
//! processes (`subprocesses`). Afterwards [`profile_of`] symbolizes, classifies and aggregates
//! the collection into a profile, either once at the end ([`record`]) or repeatedly from a copy
//! while recording goes on ([`Recorder::profile_now`], for `ftprof top`).
//!
//! Input: an [`EngineConfig`] and three sources, each behind a trait so that the engine can run
//! on recorded or synthetic inputs, and so that another collector (e.g. BPF) is one more
//! implementation:
//!
//! - [`EventSource`]: the stream of [`profiler::Record`]s (samples with registers and stack
//!   bytes, switches, mmaps, comm/fork/exit, lost counts, drain marks), handed to a
//!   [`profiler::Sink`]. Live implementation: [`PerfSource`] (perf rings via [`profiler::record`]).
//! - [`ThreadSource`]: what `/proc` says about a process and its threads now (thread list,
//!   state, names, command line, children, mappings, scheduler accounting, the system call a
//!   blocked thread is in with its registers). Live implementation: [`ProcThreads`].
//! - [`MemorySource`]: the target's memory — its CPython runtime (a [`PyProcess`], whose reads
//!   go through [`symbolizer::python::ReadMemory`]) and copies of thread stacks. Live
//!   implementation: [`LiveMemory`] (`process_vm_readv`).
//!
//! Output: an [`analysis::Profile`] and the [`profiler::RecordingOutcome`]. It knows nothing of
//! output files, formats, terminals or signals (the CLI, `crates/ftprof`, does those).

use std::sync::atomic::AtomicBool;

use profiler::threads::{SchedStat, ThreadProbe};
use profiler::{Record, RecordingOutcome, Regs, Sink};
use symbolizer::native::Mapping;
use symbolizer::python::{PyError, PyProcess};

pub mod gil_watch;
pub mod holders;
pub mod kernel_sched;
pub mod procfs;
mod profile;
mod recorder;

pub use profile::{capture_of, index_debug_data, preload, profile_of, Symbols, UNOBSERVED_MARKER};
pub use recorder::{cache_dir, record, BpfLoading, Preloading, Recorder, WAIT_CHECK_BUDGET};

/// How off-CPU waits are recorded (`--no-waits`, default, `--exact-waits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Waits {
    /// No off-CPU time at all (CPU samples only).
    Off,
    /// Blocked threads are sampled from `/proc` by the tick (the default; blame works here).
    #[default]
    Sampled,
    /// A stack at every switch-out (the kernel samples each one): exact wait counts, at a cost
    /// that grows with the switch rate.
    Exact,
}

impl Waits {
    /// Whether off-CPU time is recorded at all.
    pub fn recorded(self) -> bool {
        self != Waits::Off
    }

    /// The profile's `summary.wait_mode`.
    pub fn name(self) -> &'static str {
        match self {
            Waits::Off => "off",
            Waits::Sampled => "sampled",
            Waits::Exact => "exact",
        }
    }
}

/// What the engine is asked to record. No output file, format or rendering option: those are
/// the caller's.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// CPU samples per second per thread.
    pub rate_hz: u64,
    /// Bytes of user stack copied with each sample.
    pub stack_bytes: u32,
    pub waits: Waits,
    /// Follow child processes and `exec`s: each process gets its own CPython reader and
    /// mappings, and its threads are rooted under `process PID (command)`.
    pub subprocesses: bool,
    /// The target was running before recording began (attach), rather than launched.
    pub attached: bool,
    /// The command as launched (empty when attached: it is read from `/proc` when recording
    /// starts).
    pub command: Vec<String>,
    /// Read CPU samples' Python stacks in the kernel at the sample instant (the `bpf` crate);
    /// when refused, [`Recorder::python_stacks`] says why and stacks are read after the sample.
    pub bpf_stacks: Bpf,
    /// Launched: where the target may be held after its `exec` while the BPF programs load
    /// (`_PyInterpreterState_SetRunningMain`, called just before the program's own code: the
    /// interpreter's start-up overlaps their loading, and none of the program's code runs
    /// before them); `None`: it waits before its `exec`.
    pub hold_at: Option<profiler::hold::HoldAt>,
}

/// Whether to read the CPU samples' Python stacks in the kernel at the sample instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bpf {
    /// Not at all (`FTPROF_BPF=0`): stacks are read after the sample.
    Off,
    /// When permitted (the default); when refused, stacks are read after the sample and the
    /// run says why.
    Auto,
    /// Required (`FTPROF_BPF=1`): a refusal at start is an error, not a fallback.
    Required,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rate_hz: 999,
            stack_bytes: 16384,
            waits: Waits::Sampled,
            subprocesses: false,
            attached: false,
            command: Vec::new(),
            bpf_stacks: Bpf::Off,
            hold_at: None,
        }
    }
}

/// The BPF path asked for by the environment: `FTPROF_BPF=0` turns it off, `FTPROF_BPF=1`
/// requires it; by default it is used when permitted.
pub fn bpf_requested() -> Bpf {
    match std::env::var("FTPROF_BPF").as_deref() {
        Ok("0") => Bpf::Off,
        Ok("1") => Bpf::Required,
        _ => Bpf::Auto,
    }
}

impl EngineConfig {
    /// The perf sampling set-up for this configuration: switch-outs are sampled by the kernel
    /// only with [`Waits::Exact`]; by default blocked threads are sampled from `/proc` by the tick.
    pub fn sampling(&self) -> profiler::SamplingConfig {
        profiler::SamplingConfig {
            rate_hz: self.rate_hz,
            stack_bytes: self.stack_bytes,
            switch_samples: self.waits == Waits::Exact,
            follow_children: self.subprocesses,
            ..Default::default()
        }
    }
}

/// The event stream of a recording.
///
/// An implementation runs until the target ends, `stop` becomes true, or its own duration
/// elapses. It calls `sink.started(pid)` once the target's events are live (before the launched
/// target `exec`s, or right after attaching), then `sink.record(r)` for every record and
/// `sink.tick()` between passes (sleeping at most what `tick` returns), and ends each pass with
/// [`Record::Drained`] (records up to that time were all delivered). Records of different CPUs
/// may come out of time order within a pass.
pub trait EventSource {
    fn run(&mut self, sink: &mut dyn Sink, stop: &AtomicBool) -> anyhow::Result<RecordingOutcome>;
}

/// The live [`EventSource`]: perf rings (`perf_event_open`), through [`profiler::record`].
pub struct PerfSource {
    pub target: profiler::Target,
    pub sampling: profiler::SamplingConfig,
}

impl EventSource for PerfSource {
    fn run(&mut self, sink: &mut dyn Sink, stop: &AtomicBool) -> anyhow::Result<RecordingOutcome> {
        Ok(profiler::record(&self.target, &self.sampling, stop, sink)?)
    }
}

/// A recorded [`EventSource`]: replays `records` in order (one pass, then one tick), as if the
/// target `pid` had run for `outcome.duration`.
pub struct Replay {
    pub pid: i32,
    pub records: Vec<Record>,
    pub outcome: RecordingOutcome,
}

impl EventSource for Replay {
    fn run(&mut self, sink: &mut dyn Sink, _stop: &AtomicBool) -> anyhow::Result<RecordingOutcome> {
        sink.started(self.pid);
        for r in std::mem::take(&mut self.records) {
            sink.record(r);
        }
        sink.tick();
        Ok(self.outcome.clone())
    }
}

/// What `/proc` says about processes and their threads, read at the moment of the call.
/// Every method answers "nothing" (`None`, empty) for a process or thread that is gone.
pub trait ThreadSource: Send {
    /// The threads of process `pid`.
    fn tids(&mut self, pid: u32) -> Vec<u32>;
    /// Scheduler state letter of a thread (R, S, D, T, Z, …).
    fn state(&mut self, pid: u32, tid: u32) -> Option<char>;
    /// Thread name (`comm`).
    fn thread_name(&mut self, pid: u32, tid: u32) -> String;
    /// A process's command line.
    fn cmdline(&mut self, pid: u32) -> Vec<String>;
    /// Child processes of `pid`, recursively.
    fn descendants(&mut self, pid: u32) -> Vec<u32>;
    /// The executable mappings process `pid` has now.
    fn executable_mappings(&mut self, pid: u32) -> Vec<Mapping>;
    /// A thread's scheduler accounting (running, runqueue time; timeslices).
    fn schedstat(&mut self, pid: u32, tid: u32) -> Option<SchedStat>;
    /// A thread's (voluntary, involuntary) context switches.
    fn ctxt_switches(&mut self, pid: u32, tid: u32) -> Option<(u64, u64)>;
    /// The system call a blocked thread is in (number, when in one) and its user registers;
    /// `None` while it runs.
    fn syscall(&mut self, pid: u32, tid: u32) -> Option<(Option<u64>, Regs)>;
    /// A thread waiting for a CPU after a preemption or a yield (not after a wake-up) since
    /// before `before_ns` (CLOCK_MONOTONIC), as of its last [`ThreadSource::schedstat`]: its
    /// user registers at that preemption. Known from the kernel's events only. (A tick passes
    /// its own start: a thread that ftprof itself preempted would otherwise be seen waiting
    /// wherever it happened to run.)
    fn preempted(&mut self, _pid: u32, _tid: u32, _before_ns: u64) -> Option<Regs> {
        None
    }
    /// Thread `tid` exited: drop what is cached for it.
    fn forget(&mut self, _tid: u32) {}
    /// Process `pid` is followed from now on (a source that accounts in the kernel starts
    /// here rather than at the first reading).
    fn follow(&mut self, _pid: u32) {}
    /// When the scheduler accounting comes from the kernel's events
    /// ([`kernel_sched::KernelSched`]): how many threads it answered for.
    fn kernel_accounted(&self) -> Option<usize> {
        None
    }
    /// Whether `tid`'s accounting comes from the kernel's events (exact, not to be corrected).
    fn sched_exact(&self, _tid: u32) -> bool {
        false
    }
    /// With the kernel's accounting: schedstat's run delay beside the kernel events' runnable
    /// time over the same periods, summed over threads: (threads, schedstat ns, events ns).
    fn sched_cross_check(&self) -> Option<(u64, u64, u64)> {
        None
    }
    /// With the kernel's accounting: every thread's blocked periods per (kind, address), exact.
    fn kernel_waits(&self) -> Option<Vec<bpf::Wait>> {
        None
    }
}

/// The live [`ThreadSource`]: `/proc/PID/task/TID/{stat,comm,schedstat,status,syscall}`.
pub struct ProcThreads {
    probe: ThreadProbe,
}

impl Default for ProcThreads {
    fn default() -> Self {
        ProcThreads { probe: ThreadProbe::new() }
    }
}

impl ThreadSource for ProcThreads {
    fn tids(&mut self, pid: u32) -> Vec<u32> {
        profiler::perf::process_tids(pid as i32).into_iter().map(|t| t as u32).collect()
    }
    fn state(&mut self, pid: u32, tid: u32) -> Option<char> {
        procfs::thread_state(pid, tid)
    }
    fn thread_name(&mut self, pid: u32, tid: u32) -> String {
        procfs::thread_name(pid, tid)
    }
    fn cmdline(&mut self, pid: u32) -> Vec<String> {
        procfs::cmdline(pid)
    }
    fn descendants(&mut self, pid: u32) -> Vec<u32> {
        profiler::threads::descendants(pid)
    }
    fn executable_mappings(&mut self, pid: u32) -> Vec<Mapping> {
        symbolizer::python::read_maps(pid)
            .map(|maps| {
                maps.into_iter()
                    .filter(|m| m.perms.contains('x'))
                    .map(|m| Mapping { start: m.start, end: m.end, pgoff: m.pgoff, path: m.path })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn schedstat(&mut self, pid: u32, tid: u32) -> Option<SchedStat> {
        self.probe.schedstat(pid, tid)
    }
    fn ctxt_switches(&mut self, pid: u32, tid: u32) -> Option<(u64, u64)> {
        self.probe.ctxt_switches(pid, tid)
    }
    fn syscall(&mut self, pid: u32, tid: u32) -> Option<(Option<u64>, Regs)> {
        self.probe.syscall(pid, tid)
    }
    fn forget(&mut self, tid: u32) {
        self.probe.forget(tid)
    }
}

/// The target's memory.
pub trait MemorySource: Send {
    /// Locate the CPython runtime of process `pid` (an error while it has none mapped yet: the
    /// engine asks again when the process maps more files). Its reads go through
    /// [`PyProcess::mem`].
    fn python(&mut self, pid: u32) -> Result<PyProcess, PyError>;
    /// Up to `len` bytes of thread stack from `sp` upwards (fewer at the end of the mapping;
    /// empty when unreadable).
    fn stack(&mut self, pid: u32, sp: u64, len: usize) -> Vec<u8>;
}

/// The live [`MemorySource`]: `/proc/PID/maps` and `process_vm_readv`; with privileges the
/// caller lacks, stacks are read through a `/proc/PID/mem` descriptor pinned to the checked
/// address space ([`symbolizer::python::Mem::for_process`]), kept per process.
#[derive(Default)]
pub struct LiveMemory {
    pinned: std::collections::HashMap<u32, symbolizer::python::Mem>,
}

impl MemorySource for LiveMemory {
    fn python(&mut self, pid: u32) -> Result<PyProcess, PyError> {
        PyProcess::locate(pid)
    }
    fn stack(&mut self, pid: u32, sp: u64, len: usize) -> Vec<u8> {
        if !profiler::access::is_elevated() {
            return profiler::threads::read_stack(pid, sp, len);
        }
        let mem = match self.pinned.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match symbolizer::python::Mem::for_process(pid) {
                Ok(m) => e.insert(m),
                Err(_) => return Vec::new(),
            },
        };
        let bytes = mem.read_upto(sp, len);
        if bytes.is_empty() {
            // Exec'd or gone: check again (and pin the new image) at the next read.
            self.pinned.remove(&pid);
        }
        bytes
    }
}

#[cfg(test)]
mod tests;
