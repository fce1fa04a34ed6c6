//! `ftprof record`: launch, sample, read Python stacks live, then unwind, merge and render.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use analysis::{ProfileBuilder, PythonInfo, SampleInput, TargetInfo};
use anyhow::{Context, Result};
use flamegraph::Format;
use profiler::{Record, Regs, SamplingConfig, Target};
use symbolizer::native::{Mapping, Native};
use symbolizer::python::{PyError, PyProcess, PyStack};

use crate::check::{check_interpreter, OutputFile};

/// Options of `ftprof record`.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub command: Vec<OsString>,
    pub output: PathBuf,
    pub format: Format,
    pub rate_hz: u64,
    pub stack_bytes: u32,
    pub title: Option<String>,
}

/// A sample kept until the recording ends.
struct RawSample {
    pid: u32,
    tid: u32,
    regs: Option<Regs>,
    stack: Vec<u8>,
    kernel_stack: Vec<u64>,
    python: Option<PyStack>,
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

/// Collector-side state: everything the sink touches while the target runs.
#[derive(Default)]
struct Collected {
    samples: Vec<RawSample>,
    mmaps: Vec<(u32, Mapping)>,
    mmap_count: HashMap<u32, usize>,
    py: HashMap<u32, PyState>,
    names: HashMap<u32, (u32, String)>,
    py_errors: usize,
}

impl Collected {
    fn python_stack(&mut self, pid: u32, tid: u32) -> Option<PyStack> {
        let maps_now = self.mmap_count.get(&pid).copied().unwrap_or(0);
        let state = self.py.entry(pid).or_insert(PyState::Pending {
            mmaps_at_last_try: usize::MAX,
        });
        if let PyState::Pending { mmaps_at_last_try } = state {
            if *mmaps_at_last_try == maps_now {
                return None;
            }
            match PyProcess::locate(pid) {
                Ok(p) => *state = PyState::Located(Box::new(p)),
                Err(_) => {
                    *state = PyState::Pending {
                        mmaps_at_last_try: maps_now,
                    };
                    return None;
                }
            }
        }
        let PyState::Located(p) = state else {
            return None;
        };
        match p.stack_for_tid(tid) {
            Ok(s) => s,
            Err(PyError::Read(_)) | Err(_) => {
                self.py_errors += 1;
                None
            }
        }
    }

    fn on_record(&mut self, r: Record) {
        match r {
            Record::Sample(s) => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(s.tid) {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{}/task/{}/comm", s.pid, s.tid))
                            .unwrap_or_default();
                    e.insert((s.pid, comm.trim().to_string()));
                }
                let python = if s.kernel && s.regs.is_none() {
                    None
                } else {
                    self.python_stack(s.pid, s.tid)
                };
                self.samples.push(RawSample {
                    pid: s.pid,
                    tid: s.tid,
                    regs: s.regs,
                    stack: s.stack,
                    kernel_stack: s.kernel_stack,
                    python,
                });
            }
            Record::Mmap(m) if m.executable => {
                *self.mmap_count.entry(m.pid).or_default() += 1;
                self.mmaps.push((
                    m.pid,
                    Mapping {
                        start: m.start,
                        end: m.start + m.len,
                        pgoff: m.pgoff,
                        path: m.path,
                    },
                ));
            }
            Record::Comm { pid, tid, name, .. } => {
                self.names.insert(tid, (pid, name));
            }
            _ => {}
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
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        });
    base.join("ftprof")
}

/// Run `ftprof record`. Returns the exit code ftprof should exit with (the target's).
pub fn run(opts: &RecordOptions) -> Result<i32> {
    let t0 = std::time::Instant::now();
    let crate::check::Interpreter::CPython { path: interp, .. } = check_interpreter(&opts.command)?;
    if std::env::var_os("FTPROF_TIMING").is_some() {
        eprintln!("ftprof timing: interpreter check {:?}", t0.elapsed());
    }
    let out = OutputFile::open(&opts.output)?;
    let cfg = SamplingConfig {
        rate_hz: opts.rate_hz,
        stack_bytes: opts.stack_bytes,
        ..Default::default()
    };
    install_signal_handlers();

    // Parse the interpreter's ELF and DWARF on the other core while the target runs.
    let interp = interp
        .canonicalize()
        .unwrap_or(interp)
        .to_string_lossy()
        .into_owned();
    let preload = std::thread::spawn(move || {
        // SCHED_IDLE: only use a CPU the target leaves idle, never slow the target down.
        let param = libc::sched_param { sched_priority: 0 };
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        let mut native = Native::new();
        native.preload(&interp, &[analysis::EVAL_FRAME_FN]);
        native
    });
    let mut col = Collected::default();
    let target = Target::Launch(opts.command.clone());
    let outcome = profiler::record(&target, &cfg, &STOP, &mut |_| {}, &mut |r| col.on_record(r))?;

    // Python facts for the summary, from the launched process.
    let pid = outcome.pid as u32;
    let python = match col.py.get(&pid) {
        Some(PyState::Located(p)) => Some(PythonInfo {
            version: p.offsets.version_string(),
            free_threaded: p.offsets.free_threaded,
            gil_enabled: p.gil_enabled().ok(),
            runtime_module: p.module.clone(),
        }),
        _ => None,
    };
    let command: Vec<String> = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let target_info = TargetInfo {
        command: command.clone(),
        pid,
        python,
        exit: outcome.exit.map(|e| e.to_string()),
        interrupted: outcome.stop == profiler::StopReason::Interrupted,
    };

    let timing = std::env::var_os("FTPROF_TIMING").is_some();
    if timing {
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
    let t_post = std::time::Instant::now();
    let mut native = preload.join().unwrap_or_default();
    for (pid, m) in std::mem::take(&mut col.mmaps) {
        native.add_mapping(pid, m);
    }
    let mut builder = ProfileBuilder::new();
    let core: Vec<String> = col
        .py
        .values()
        .filter_map(|s| match s {
            PyState::Located(p) => Some(p.module.clone()),
            _ => None,
        })
        .collect();
    builder.set_core_modules(core);
    for (tid, (pid, name)) in &col.names {
        builder.set_thread(*tid, *pid, name);
    }
    // /proc/kallsyms is slow to read (the kernel formats ~100k lines): only when needed.
    let kallsyms = if col.samples.iter().any(|s| !s.kernel_stack.is_empty()) {
        symbolizer::kernel::Kallsyms::load_cached(&cache_dir())
    } else {
        Default::default()
    };
    for s in &col.samples {
        let kernel: Vec<String> = s
            .kernel_stack
            .iter()
            .map(|&a| {
                kallsyms
                    .lookup(a)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{a:#x}"))
            })
            .collect();
        let (chains, complete) = match s.regs {
            Some(regs) => {
                let uw = native.unwind(
                    s.pid,
                    symbolizer::native::Regs {
                        ip: regs.ip,
                        sp: regs.sp,
                        bp: regs.bp,
                    },
                    &s.stack,
                );
                let chains: Vec<_> = uw
                    .addrs
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| native.symbolize(s.pid, a, i > 0))
                    .collect();
                (chains, uw.complete)
            }
            None => (Vec::new(), false),
        };
        builder.add(&SampleInput {
            tid: s.tid,
            native: &chains,
            native_complete: complete,
            python: s.python.as_ref(),
            kernel: &kernel,
            weight: 1,
        });
    }
    if timing {
        eprintln!(
            "ftprof timing: unwind+symbolize+merge {:?} for {} samples",
            t_post.elapsed(),
            col.samples.len()
        );
    }
    builder.summary.duration_s = outcome.duration.as_secs_f64();
    builder.summary.rate_hz = opts.rate_hz;
    builder.summary.lost_records = outcome.lost;
    builder.summary.target_cpu_s = outcome.target_cpu_seconds;
    let profile = builder.finish(target_info);

    let mut bytes = Vec::new();
    match opts.format {
        Format::Svg => {
            let title = opts
                .title
                .clone()
                .unwrap_or_else(|| format!("ftprof: {}", command.join(" ")));
            flamegraph::svg(&profile, &title, &mut bytes)?
        }
        Format::Folded => bytes = flamegraph::folded(&profile).into_bytes(),
        Format::Json => flamegraph::json(&profile, &mut bytes)?,
    }
    if timing {
        eprintln!(
            "ftprof timing: post-processing total {:?}",
            t_post.elapsed()
        );
    }
    let path = out.path.clone();
    out.write_all(&bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    eprint!("{}", flamegraph::summary_text(&profile));
    eprintln!("ftprof: wrote {}", path.display());
    Ok(match outcome.exit {
        Some(profiler::ExitStatus::Code(c)) => c,
        Some(profiler::ExitStatus::Signal(s)) => 128 + s,
        None => 0,
    })
}
