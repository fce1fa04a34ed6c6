//! `ftprof record`: parse-level options, the interrupt handling and the output file; the
//! recording itself is the engine's ([`engine::record`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use analysis::capture::Capture;
use analysis::Profile;
use anyhow::{Context, Result};
use engine::{EngineConfig, PerfSource, Recorder, Waits};
use flamegraph::{Format, Mode};
use profiler::{RecordingOutcome, Target};

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
    /// Off-CPU waits: off (`--no-waits`), sampled (default) or exact (`--exact-waits`).
    pub waits: Waits,
    pub title: Option<String>,
    /// Follow child processes and `exec`s (`--subprocesses`).
    pub subprocesses: bool,
    /// Also write the capture (`--capture FILE`).
    pub capture: Option<PathBuf>,
}

impl RecordOptions {
    /// What the engine needs of these options.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            rate_hz: self.rate_hz,
            stack_bytes: self.stack_bytes,
            waits: self.waits,
            subprocesses: self.subprocesses,
            attached: self.pid.is_some(),
            command: self.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            bpf_stacks: engine::bpf_requested(),
            hold_at: None,
        }
    }
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

fn timing() -> bool {
    std::env::var_os("FTPROF_TIMING").is_some()
}

/// Record `target` with `cfg` and symbolize what was collected (no output written); the
/// capture's `profile()` is its profile. `interp` is the ELF holding the CPython runtime. Ends
/// early when [`STOP`] is set (signals, once installed).
pub fn record_capture(
    target: Target,
    interp: &std::path::Path,
    cfg: &EngineConfig,
) -> Result<(Capture, RecordingOutcome)> {
    record_capture_loaded(target, interp, cfg, engine::BpfLoading::start(cfg))
}

/// [`record_capture`] with the BPF programs already loading (started with the same `cfg`).
fn record_capture_loaded(
    target: Target,
    interp: &std::path::Path,
    cfg: &EngineConfig,
    loading: engine::BpfLoading,
) -> Result<(Capture, RecordingOutcome)> {
    let mut source = PerfSource { target, sampling: cfg.sampling() };
    // Started before the recorder waits for the BPF programs: the parse overlaps their loading.
    let preload = engine::Preloading::start(interp);
    engine::record(&mut source, Recorder::with_loading(cfg, loading), preload, &STOP)
}

/// Record `target` with `cfg` and build its profile (see [`record_capture`]).
pub fn record_profile(
    target: Target,
    interp: &std::path::Path,
    cfg: &EngineConfig,
) -> Result<(Profile, RecordingOutcome)> {
    record_capture(target, interp, cfg).map(|(c, o)| (c.profile(), o))
}

/// The ELF holding the CPython runtime of the target: the running process `pid` (checked, and
/// returned as the attach target) or else the interpreter `command` launches, with where that
/// launch may be held while ftprof gets ready (see [`EngineConfig::hold_at`]).
pub(crate) fn resolve_interpreter(
    pid: Option<u32>,
    command: &[OsString],
) -> Result<(PathBuf, Option<crate::check::AttachTarget>, Option<profiler::hold::HoldAt>)> {
    Ok(match pid {
        Some(pid) => {
            let t = crate::check::check_process(pid)?;
            (PathBuf::from(&t.runtime_module), Some(t), None)
        }
        None => {
            let Interpreter::CPython { path, main_start, .. } = check_interpreter(command)?;
            // FTPROF_HOLD=0: wait before the exec instead (for comparisons).
            let hold = main_start
                .filter(|_| std::env::var_os("FTPROF_HOLD").is_none_or(|v| v != "0"))
                .map(|offset| profiler::hold::HoldAt { file: path.clone(), offset });
            (path, None, hold)
        }
    })
}

/// Run `ftprof record`. Returns the exit code ftprof should exit with (the target's).
pub fn run(opts: &RecordOptions) -> Result<i32> {
    let t0 = Instant::now();
    let mut cfg = opts.engine_config();
    // The kernel verifies the BPF programs meanwhile (on a refusal below they are dropped).
    let loading = engine::BpfLoading::start(&cfg);
    let (interp, attach, hold_at) = resolve_interpreter(opts.pid, &opts.command)?;
    cfg.hold_at = hold_at;
    if timing() {
        eprintln!("ftprof timing: interpreter check {:?}", t0.elapsed());
    }
    let out = OutputFile::open(&opts.output)?;
    let capture_out = match &opts.capture {
        Some(p) if p == &opts.output => {
            anyhow::bail!("the capture {} would overwrite the output; give --capture another file", p.display())
        }
        Some(p) => Some(OutputFile::open(p).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().replace("with -o", "with --capture").replace("the output", "the capture")
            )
        })?),
        None => None,
    };
    install_signal_handlers();
    let target = match &attach {
        Some(t) => Target::Attach { pid: t.pid as i32, duration: opts.duration },
        None => Target::Launch(opts.command.clone()),
    };
    let t_post = Instant::now();
    let recorded = record_capture_loaded(target, &interp, &cfg, loading);
    restore_signal_handlers();
    let (capture, outcome) = recorded?;
    if timing() {
        eprintln!(
            "ftprof timing: recorded after {:?} since ftprof's start (the target ran {:?})",
            t0.elapsed(),
            outcome.duration
        );
    }
    let profile = capture.profile();
    if timing() {
        eprintln!("ftprof timing: profile built after {:?}", t0.elapsed());
    }
    if let Some(out) = capture_out {
        let path = out.path.clone();
        let bytes = analysis::capture::encode(&capture, env!("CARGO_PKG_VERSION"));
        out.write_all(&bytes).with_context(|| format!("writing the capture {}", path.display()))?;
        eprintln!(
            "ftprof: wrote the capture {} ({} KiB); `ftprof report {}` renders it again",
            path.display(),
            bytes.len() / 1024,
            path.display()
        );
    }
    drop(capture);
    let bytes = flamegraph::render(&profile, opts.format, opts.title.as_deref(), opts.mode, opts.idle)?;
    if timing() {
        eprintln!("ftprof timing: recording + post-processing {:?}", t_post.elapsed());
    }
    let path = out.path.clone();
    out.write_all(&bytes).with_context(|| format!("writing {}", path.display()))?;
    if timing() {
        eprintln!("ftprof timing: rendered and written after {:?}", t0.elapsed());
    }
    eprint!("{}", flamegraph::summary_text(&profile));
    if outcome.held >= std::time::Duration::from_millis(1) {
        let at = if outcome.held_at_exec {
            "at its exec, before its start-up"
        } else {
            "after its start-up, before its own code"
        };
        eprintln!(
            "ftprof: the target was held {} ms {at}, while the kernel verified the BPF programs (shown as its main thread's idle time)",
            outcome.held.as_millis()
        );
    }
    eprintln!("ftprof: wrote {}", path.display());
    crate::report::how_to_open(opts.format);
    // After the output: the first run with an interpreter built with DWARF pays for the rest.
    if let Some((rows, took)) = engine::index_debug_data(&interp.to_string_lossy()) {
        eprintln!(
            "ftprof: indexed the debug data of {} for later runs ({rows} address ranges in {:.1} s; once per interpreter and ftprof build)",
            interp.display(),
            took.as_secs_f64()
        );
    }
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
