//! `ftprof record`: launch, sample (on and off CPU), read Python stacks and parked-lock
//! identities live, then unwind, classify, merge and render.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use analysis::{Observation, Profile, ProfileBuilder, PythonInfo, SampleInput, TargetInfo};
use anyhow::{Context, Result};
use flamegraph::{Format, Mode};
use profiler::{Record, RecordingOutcome, Regs, SampleSource, SamplingConfig, Target};
use symbolizer::native::{Mapping, Native};
use symbolizer::python::{ParkedInfo, PyProcess, PyStack};

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
    pub title: Option<String>,
}

/// A sample kept until the recording ends.
struct RawSample {
    source: SampleSource,
    pid: u32,
    tid: u32,
    time: u64,
    regs: Option<Regs>,
    stack: Vec<u8>,
    kernel_stack: Vec<u64>,
    python: Option<PyStack>,
    parked: Option<ParkedInfo>,
    /// For threads found blocked at attach time: their system call.
    syscall: Option<u64>,
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

fn install_signal_handlers() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// After recording, Ctrl-C interrupts ftprof itself again.
fn restore_signal_handlers() {
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// One PERF_RECORD_SWITCH.
#[derive(Clone, Copy)]
struct Switch {
    time: u64,
    out: bool,
    preempt: bool,
}

/// Memory for stack copies kept until the end of a recording (about 48 000 samples of 16 KiB).
const STACK_BYTES_LIMIT: usize = 768 << 20;

/// Collector-side state: everything the sink touches while the target runs.
#[derive(Default)]
struct Collected {
    samples: Vec<RawSample>,
    switches: HashMap<u32, Vec<Switch>>,
    mmaps: Vec<(u32, Mapping)>,
    mmap_count: HashMap<u32, usize>,
    py: HashMap<u32, PyState>,
    names: HashMap<u32, (u32, String)>,
    py_errors: usize,
    last_time: u64,
    /// Last GIL state read from each process (it can change at run time).
    gil: HashMap<u32, bool>,
    /// Bytes of stack copies kept; past STACK_BYTES_LIMIT new samples keep no stack copy.
    stack_bytes: usize,
    stacks_dropped: u64,
    /// `threading.Thread` names by TID, and when they were last read.
    py_names: HashMap<u32, String>,
    names_read_at: Option<Instant>,
    pending_switch: Option<profiler::Sample>,
    yield_ranges: HashMap<u32, Vec<(u64, u64)>>,
}

/// Where a thread parked in the parking lot keeps the parked-on address: `_PyParkingLot_Park`
/// sleeps on the semaphore inside its on-stack `wait_entry {park_arg, addr, sema, …}`, so the
/// futex address (first syscall argument, `rdi`) minus 8 holds `addr`. Read it from the stack
/// copy of the sample.
pub fn parked_addr(regs: &Regs, stack: &[u8]) -> Option<u64> {
    let slot = regs.di.checked_sub(8)?;
    let on_stack = slot.checked_sub(regs.sp).and_then(|off| stack.get(off as usize..off as usize + 8));
    let Some(bytes) = on_stack else {
        // Not a parking-lot wait entry: the futex word itself (e.g. the GIL's condition variable).
        return (regs.di > 4096).then_some(regs.di);
    };
    let addr = u64::from_le_bytes(bytes.try_into().ok()?);
    (addr > 4096).then_some(addr)
}

impl Collected {
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

    /// Address ranges of libc's `sched_yield` in `pid` (how a spinning PyMutex gives up the CPU).
    fn in_sched_yield(&mut self, pid: u32, ip: u64) -> bool {
        if !self.yield_ranges.contains_key(&pid) {
            let mut ranges = Vec::new();
            for (p, m) in &self.mmaps {
                let name = m.path.rsplit('/').next().unwrap_or("");
                if *p != pid || !(name.starts_with("libc.so") || name.starts_with("libc-")) {
                    continue;
                }
                let Ok(elf) = symbolizer::native::ElfFile::open_shared(std::path::Path::new(&m.path)) else { continue };
                let bias = elf.bias_for_mapping(m.start, m.pgoff);
                for sym in ["sched_yield", "__sched_yield"] {
                    if let Some((v, size)) = elf.symbol(sym) {
                        ranges.push((v.wrapping_add(bias), v.wrapping_add(bias).wrapping_add(size.max(1))));
                    }
                }
            }
            if ranges.is_empty() {
                return true; // libc not known (yet): assume the worst, keep the sample
            }
            self.yield_ranges.insert(pid, ranges);
        }
        self.yield_ranges[&pid].iter().any(|&(a, b)| ip >= a && ip < b)
    }

    fn on_record(&mut self, r: Record) {
        // A switch-out sample is followed by its PERF_RECORD_SWITCH (same scheduler call, same
        // ring): wait for it, to learn whether the thread blocked or was only preempted.
        if let Some(pending) = self.pending_switch.take() {
            let preempted = match &r {
                Record::Switch { tid, out: true, preempt, .. } if *tid == pending.tid => Some(*preempt),
                _ => None,
            };
            self.on_sample(pending, preempted);
        }
        match r {
            Record::Sample(s) if s.source == SampleSource::SwitchOut => self.pending_switch = Some(s),
            Record::Sample(s) => self.on_sample(s, None),
            other => self.on_other(other),
        }
    }

    /// Handle a switch-out sample still waiting for its switch record.
    fn flush(&mut self) {
        if let Some(p) = self.pending_switch.take() {
            self.on_sample(p, None);
        }
    }

    fn on_sample(&mut self, s: profiler::Sample, preempted: Option<bool>) {
        // Preempted while running (not yielding in a PyMutex spin): only the time matters —
        // skip reading its Python stack and keeping its native one.
        if preempted == Some(true) && !s.regs.is_some_and(|r| self.in_sched_yield(s.pid, r.ip)) {
            self.last_time = self.last_time.max(s.time);
            self.samples.push(RawSample {
                source: s.source,
                pid: s.pid,
                tid: s.tid,
                time: s.time,
                regs: None,
                stack: Vec::new(),
                kernel_stack: Vec::new(),
                python: None,
                parked: None,
                syscall: None,
            });
            return;
        }
        self.last_time = self.last_time.max(s.time);
        if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(s.tid) {
            let comm = std::fs::read_to_string(format!("/proc/{}/task/{}/comm", s.pid, s.tid)).unwrap_or_default();
            e.insert((s.pid, comm.trim().to_string()));
        }
        let mut python = None;
        let mut parked = None;
        let mut failed = false;
        let refresh_gil = self.samples.len() % 64 == 0 || !self.gil.contains_key(&s.pid);
        let mut gil = None;
        // A thread not named yet: read the names again (at most every 100 ms).
        let refresh_names =
            !self.py_names.contains_key(&s.tid) && self.names_read_at.is_none_or(|t| t.elapsed().as_millis() >= 100);
        let mut names = None;
        if let (Some(regs), Some(p)) = (s.regs, self.python_process(s.pid)) {
            match p.stack_for_tid(s.tid) {
                Ok(st) => python = st,
                Err(_) => failed = true,
            }
            if s.source == SampleSource::SwitchOut {
                parked = parked_addr(&regs, &s.stack).map(|a| p.probe_parked(s.tid, a));
            }
            if refresh_gil {
                gil = p.gil_enabled().ok();
            }
            if refresh_names {
                names = Some(p.thread_names_by_tid());
            }
        }
        if let Some(n) = names {
            self.py_names.extend(n);
            self.names_read_at = Some(Instant::now());
        }
        if let Some(g) = gil {
            self.gil.insert(s.pid, g);
        }
        self.py_errors += failed as usize;
        let mut stack = s.stack;
        if self.stack_bytes + stack.len() > STACK_BYTES_LIMIT {
            if self.stacks_dropped == 0 {
                eprintln!(
                    "ftprof: warning: {} MiB of stack copies kept; later samples keep Python frames only (record a shorter period or lower --rate)",
                    STACK_BYTES_LIMIT >> 20
                );
            }
            self.stacks_dropped += 1;
            stack = Vec::new();
        }
        self.stack_bytes += stack.len();
        self.samples.push(RawSample {
            source: s.source,
            pid: s.pid,
            tid: s.tid,
            time: s.time,
            regs: s.regs,
            stack,
            kernel_stack: s.kernel_stack,
            python,
            parked,
            syscall: None,
        });
    }

    fn on_other(&mut self, r: Record) {
        match r {
            Record::Switch { tid, time, out, preempt, .. } => {
                self.last_time = self.last_time.max(time);
                self.switches.entry(tid).or_default().push(Switch { time, out, preempt });
            }
            Record::Mmap(m) if m.executable => {
                *self.mmap_count.entry(m.pid).or_default() += 1;
                self.mmaps
                    .push((m.pid, Mapping { start: m.start, end: m.start + m.len, pgoff: m.pgoff, path: m.path }));
            }
            Record::Comm { pid, tid, name, .. } => {
                self.names.insert(tid, (pid, name));
            }
            _ => {}
        }
    }

    /// How long the thread stayed off CPU after a switch-out sample at `time`, and whether it
    /// was preempted (still runnable) rather than blocked.
    fn off_cpu_interval(&self, tid: u32, time: u64, end: u64) -> (u64, bool) {
        let Some(sw) = self.switches.get(&tid) else { return (0, false) };
        // The SWITCH-out record is emitted next to the sample, in the same scheduler call: take
        // the nearest one in time (threads that yield in a loop switch out many times a ms).
        let i = sw.partition_point(|s| s.time < time);
        let near = |k: usize| sw.get(k).filter(|s| s.out).map(|s| (s.time.abs_diff(time), k));
        let best = [i.checked_sub(1).and_then(near), near(i), near(i + 1)]
            .into_iter()
            .flatten()
            .min()
            .filter(|(d, _)| *d < 50_000);
        let preempt = best.is_some_and(|(_, k)| sw[k].preempt);
        let from = best.map(|(_, k)| sw[k].time.max(time)).unwrap_or(time);
        let back = sw[i..].iter().find(|s| !s.out && s.time >= from).map(|s| s.time).unwrap_or(end);
        (back.saturating_sub(time), preempt)
    }
}

/// A switch-out sample for every thread of `pid` that is blocked right now.
fn blocked_threads(pid: u32, stack_bytes: usize) -> Vec<RawSample> {
    let Ok(mut py) = PyProcess::locate(pid) else { return Vec::new() };
    let now = profiler::monotonic_ns();
    let mut out = Vec::new();
    for tid in profiler::perf::process_tids(pid as i32) {
        let tid = tid as u32;
        if !matches!(crate::snapshot::thread_state(pid, tid), Some('S') | Some('D')) {
            continue;
        }
        let Some(b) = crate::snapshot::blocked(pid, tid, stack_bytes) else { continue };
        let python = py.stack_for_tid(tid).ok().flatten();
        let parked = parked_addr(&b.regs, &b.stack).map(|a| py.probe_parked(tid, a));
        out.push(RawSample {
            source: SampleSource::SwitchOut,
            pid,
            tid,
            time: now,
            regs: Some(b.regs),
            stack: b.stack,
            kernel_stack: Vec::new(),
            python,
            parked,
            syscall: b.syscall,
        });
    }
    out
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

/// Run `ftprof record`. Returns the exit code ftprof should exit with (the target's).
pub fn run(opts: &RecordOptions) -> Result<i32> {
    let t0 = Instant::now();
    let (interp, attach) = match opts.pid {
        Some(pid) => {
            let t = crate::check::check_process(pid)?;
            (PathBuf::from(&t.runtime_module), Some(t))
        }
        None => {
            let Interpreter::CPython { path, .. } = check_interpreter(&opts.command)?;
            (path, None)
        }
    };
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
    if let Some(t) = &attach {
        let how = match outcome.stop {
            profiler::StopReason::TargetExited => "the target exited during recording: the profile is partial",
            profiler::StopReason::Interrupted => "interrupted; the target keeps running",
            profiler::StopReason::Duration => "detached; the target keeps running",
        };
        eprintln!("ftprof: attached to pid {} for {:.1} s — {how}", t.pid, outcome.duration.as_secs_f64());
        return Ok(0);
    }
    Ok(match outcome.exit {
        Some(profiler::ExitStatus::Code(c)) => c,
        Some(profiler::ExitStatus::Signal(s)) => 128 + s,
        None => 0,
    })
}

/// Record `target` and build its profile (no output written). `interp` is the ELF holding the
/// CPython runtime (its debug data is parsed while the target runs).
pub fn record_profile(
    target: &Target,
    interp: &std::path::Path,
    opts: &RecordOptions,
) -> Result<(Profile, RecordingOutcome)> {
    let cfg = SamplingConfig {
        rate_hz: opts.rate_hz,
        stack_bytes: opts.stack_bytes,
        off_cpu: opts.off_cpu,
        ..Default::default()
    };

    // Parse the interpreter's ELF and DWARF on the other core while the target runs.
    let interp = interp.canonicalize().unwrap_or(interp.to_path_buf()).to_string_lossy().into_owned();
    let preload = std::thread::spawn(move || {
        // SCHED_IDLE: only use a CPU the target leaves idle, never slow the target down.
        let param = libc::sched_param { sched_priority: 0 };
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        let mut native = Native::new();
        native.preload(&interp, &[analysis::EVAL_FRAME_FN]);
        // The libraries it links (libc above all) appear in almost every stack.
        for lib in symbolizer::native::ElfFile::open_shared(std::path::Path::new(&interp))
            .map(|e| e.needed())
            .unwrap_or_default()
        {
            let found =
                ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib", "/lib"]
                    .iter()
                    .map(|d| std::path::Path::new(d).join(&lib))
                    .find(|p| p.exists());
            if let Some(path) = found.and_then(|p| p.canonicalize().ok()) {
                native.preload(&path.to_string_lossy(), &[]);
            }
        }
        let opnames = symbolizer::python::opcodes::base_opnames_cached(std::path::Path::new(&interp), &cache_dir())
            .unwrap_or_default();
        let kallsyms = symbolizer::kernel::Kallsyms::load_cached(&cache_dir());
        (native, opnames, kallsyms)
    });
    let mut col = Collected::default();
    let mut initial = Vec::new();
    let attached = matches!(target, Target::Attach { .. });
    let mut early_maps = Vec::new();
    let outcome =
        profiler::record(
            target,
            &cfg,
            &STOP,
            &mut |pid| {
                if attached {
                    // Mappings made before we arrived are not reported by perf: read them now that
                    // the events are live (later ones arrive as mmap records).
                    if let Ok(maps) = symbolizer::python::read_maps(pid as u32) {
                        early_maps.extend(maps.into_iter().filter(|m| m.perms.contains('x')).map(|m| {
                            (pid as u32, Mapping { start: m.start, end: m.end, pgoff: m.pgoff, path: m.path })
                        }));
                    }
                }
                if attached && opts.off_cpu {
                    // Threads already blocked when we arrive: their wait began before the first
                    // switch-out we can see, so take their stacks now.
                    initial = blocked_threads(pid as u32, opts.stack_bytes as usize);
                }
            },
            &mut |r| col.on_record(r),
        )?;
    col.flush();
    col.samples.splice(0..0, initial);
    col.mmaps.splice(0..0, early_maps);
    if timing() {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        eprintln!(
            "ftprof timing: ftprof CPU while recording {:.3} s user, {:.3} s sys ({} samples, {} py read errors)",
            tv(ru.ru_utime),
            tv(ru.ru_stime),
            col.samples.len(),
            col.py_errors
        );
    }
    let t_post = Instant::now();
    let (native, opnames, kallsyms) = preload.join().unwrap_or_default();
    if timing() {
        eprintln!("ftprof timing: preload joined after {:?}", t_post.elapsed());
    }
    let profile = build_profile(col, native, opnames, &kallsyms, &outcome, opts);
    Ok((profile, outcome))
}

/// Unwind, symbolize, classify and aggregate everything collected.
fn build_profile(
    mut col: Collected,
    mut native: Native,
    opnames: Vec<String>,
    kallsyms: &symbolizer::kernel::Kallsyms,
    outcome: &RecordingOutcome,
    opts: &RecordOptions,
) -> Profile {
    let t = Instant::now();
    let pid = outcome.pid as u32;
    let python = match col.py.get(&pid) {
        Some(PyState::Located(p)) => Some(PythonInfo {
            version: p.offsets.version_string(),
            free_threaded: p.offsets.free_threaded,
            gil_enabled: col.gil.get(&pid).copied().or_else(|| p.gil_enabled().ok()),
            runtime_module: p.module.clone(),
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
    for (pid, m) in std::mem::take(&mut col.mmaps) {
        native.add_mapping(pid, m);
    }
    for sw in col.switches.values_mut() {
        sw.sort_by_key(|s| s.time);
    }
    let mut builder = ProfileBuilder::new(1_000_000_000 / opts.rate_hz.max(1));
    // The launched process's runtime module first: it decides "running Python" vs "native".
    let mut core: Vec<String> = col
        .py
        .values()
        .filter_map(|s| match s {
            PyState::Located(py) => Some(py.module.clone()),
            PyState::Pending { .. } => None,
        })
        .collect();
    if let Some(PyState::Located(p)) = col.py.get(&pid) {
        core.retain(|m| m != &p.module);
        core.insert(0, p.module.clone());
    }
    builder.set_core_modules(core);
    builder.set_opnames(opnames);
    for (tid, (pid, comm)) in &col.names {
        // The Python thread name when there is one (3.13 does not pass it to the OS).
        builder.set_thread(*tid, *pid, col.py_names.get(tid).unwrap_or(comm));
    }
    if timing() {
        eprintln!(
            "ftprof timing: mappings + kallsyms ready after {:?} ({} samples to process)",
            t.elapsed(),
            col.samples.len()
        );
    }
    let end = col.last_time.max(outcome.start_ns + outcome.duration.as_nanos() as u64);
    // Rings of different CPUs interleave: put each thread's samples in time order.
    col.samples.sort_by_key(|s| s.time);
    for s in &col.samples {
        let kernel: Vec<String> = s
            .kernel_stack
            .iter()
            .map(|&a| kallsyms.lookup(a).map(str::to_string).unwrap_or_else(|| format!("{a:#x}")))
            .collect();
        let (chains, complete, leaf_prev) = match s.regs {
            Some(regs) => {
                let uw =
                    native.unwind(s.pid, symbolizer::native::Regs { ip: regs.ip, sp: regs.sp, bp: regs.bp }, &s.stack);
                let chains: Vec<_> =
                    uw.addrs.iter().enumerate().map(|(i, &a)| native.symbolize(s.pid, a, i > 0)).collect();
                // The instruction before the sampled one: a stalled atomic shows up there.
                let prev = match s.source {
                    SampleSource::CpuClock => native.symbolize(s.pid, regs.ip, true),
                    SampleSource::SwitchOut => Vec::new(),
                };
                (chains, uw.complete, prev)
            }
            None => (Vec::new(), false, Vec::new()),
        };
        let observation = match s.source {
            SampleSource::CpuClock => Observation::Cpu,
            SampleSource::SwitchOut => {
                let (duration_ns, preempted) = col.off_cpu_interval(s.tid, s.time, end);
                Observation::OffCpu { duration_ns, preempted }
            }
        };
        builder.add(&SampleInput {
            tid: s.tid,
            native: &chains,
            native_complete: complete,
            python: s.python.as_ref(),
            kernel: &kernel,
            leaf_prev: &leaf_prev,
            parked: s.parked.as_ref(),
            observation,
            time: s.time,
            syscall: s.syscall,
        });
    }
    if timing() {
        eprintln!("ftprof timing: samples processed after {:?}", t.elapsed());
    }
    builder.summary.duration_s = outcome.duration.as_secs_f64();
    builder.summary.rate_hz = opts.rate_hz;
    builder.summary.lost_records = outcome.lost;
    builder.summary.target_cpu_s = outcome.target_cpu_seconds;
    builder.finish(target_info)
}

fn render(profile: &Profile, opts: &RecordOptions) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match opts.format {
        Format::Svg => {
            let title = opts.title.clone().unwrap_or_else(|| format!("ftprof: {}", profile.target.command.join(" ")));
            flamegraph::svg(profile, &title, opts.mode, opts.idle, &mut bytes)?
        }
        Format::Folded => bytes = flamegraph::folded(profile, opts.mode, opts.idle).into_bytes(),
        Format::Json => flamegraph::json(profile, &mut bytes)?,
    }
    Ok(bytes)
}
