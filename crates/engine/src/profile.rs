//! From a collection to a profile: symbolize every distinct key, classify, aggregate
//! ([`profile_of`]), with the symbol tables parsed while the target runs ([`preload`]).

use std::collections::HashSet;
use std::time::Instant;

use analysis::collect::{Collection, EntryKind};
use analysis::{Observation, Profile, ProfileBuilder, PythonInfo, SampleInput, TargetInfo};
use profiler::{RecordingOutcome, StopReason};
use symbolizer::kernel::Kallsyms;
use symbolizer::native::Native;

use crate::recorder::{cache_dir, timing, LostTally, PyState, Recorder};
use crate::Waits;

/// Marker above the leaf of blocked time that no observation explains.
pub const UNOBSERVED_MARKER: &str = "[off-CPU, not observed]";

/// What symbolization needs: ELF/DWARF indexes (the target's mappings are added as the
/// recorder saw them), the interpreter's opcode names, the kernel's symbols.
#[derive(Default)]
pub struct Symbols {
    pub native: Native,
    pub opnames: Vec<String>,
    pub kallsyms: Kallsyms,
    /// How many of the recorder's mappings `native` has.
    mapped: usize,
}

impl Symbols {
    /// Hand `native` the mappings `rec` has seen since the last call.
    pub fn sync(&mut self, rec: &Recorder) {
        for (pid, m) in rec.mappings().iter().skip(self.mapped) {
            self.native.add_mapping(*pid, m.clone());
        }
        self.mapped = rec.mappings().len();
    }
}

/// What symbolization needs, parsed from the interpreter `interp` (canonical path): its ELF and
/// DWARF indexes and those of the libraries it links, its opcode names, the kernel's symbols.
pub fn preload(interp: &str) -> Symbols {
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
    let kallsyms = Kallsyms::load_cached(&cache_dir());
    Symbols { native, opnames, kallsyms, mapped: 0 }
}

/// How the recording went, as far as the profile is concerned: from the source's outcome at the
/// end, or from the recorder's own state while it still runs.
struct Run {
    pid: u32,
    exit: Option<String>,
    interrupted: bool,
    target_exited: bool,
    duration_s: f64,
    start_ns: u64,
    lost_records: u64,
    target_cpu_s: Option<f64>,
}

impl Run {
    fn of(rec: &Recorder, outcome: Option<&RecordingOutcome>) -> Run {
        match outcome {
            Some(o) => Run {
                pid: o.pid as u32,
                exit: o.exit.map(|e| e.to_string()),
                interrupted: o.stop == StopReason::Interrupted,
                target_exited: o.stop == StopReason::TargetExited,
                duration_s: o.duration.as_secs_f64(),
                start_ns: o.start_ns,
                lost_records: o.lost + o.lost_switches,
                target_cpu_s: o.target_cpu_seconds,
            },
            None => {
                let (samples, switches) = rec.lost();
                Run {
                    pid: rec.target.unwrap_or(0),
                    exit: None,
                    interrupted: false,
                    target_exited: false,
                    duration_s: profiler::monotonic_ns().saturating_sub(rec.start_ns) as f64 / 1e9,
                    start_ns: rec.start_ns,
                    lost_records: samples + switches,
                    target_cpu_s: None,
                }
            }
        }
    }
}

/// Symbolize, classify and aggregate `collection` (collected by `rec`; `symbols` gets its
/// mappings here). `outcome`: how the recording ended, `None` while it goes on (`ftprof top`).
pub fn profile_of(
    rec: &Recorder,
    mut collection: Collection,
    symbols: &mut Symbols,
    outcome: Option<&RecordingOutcome>,
) -> Profile {
    let t = Instant::now();
    symbols.sync(rec);
    let run = Run::of(rec, outcome);
    let target_info = target_info(rec, &run);
    let mut builder = ProfileBuilder::new(profiler::perf::sample_period_ns(rec.cfg.rate_hz));
    builder.set_core_modules(core_modules(rec, run.pid));
    builder.set_opnames(symbols.opnames.clone());
    if let Some(waits) = rec.threads.kernel_waits() {
        let mut by: std::collections::HashMap<(u32, u64), analysis::KernelWaits> = Default::default();
        for w in waits {
            if let bpf::WaitKind::Futex { addr } = w.kind {
                let e = by.entry((w.tid, addr)).or_default();
                e.count += w.count;
                e.total_ns += w.total_ns;
                e.max_ns = e.max_ns.max(w.max_ns);
                e.runq_ns += w.runq_ns;
            }
        }
        builder.set_kernel_waits(by);
    }
    let (skipped, processes) = name_processes(rec, &mut builder, run.pid);
    for (tid, (pid, comm)) in rec.names.iter().filter(|(_, (p, _))| !skipped.contains(p)) {
        // The Python thread name when there is one (3.13 does not pass it to the OS).
        builder.set_thread(*tid, *pid, rec.py_names.get(tid).unwrap_or(comm));
    }
    if timing() {
        eprintln!(
            "ftprof timing: unwound {} stacks in {:.6} s while recording",
            rec.unwound,
            rec.unwind_time.as_secs_f64()
        );
    }
    analysis::objects::settle_operands(&mut collection.entries);
    let blame = rec.holders.clone().finish();
    if timing() {
        eprintln!(
            "ftprof timing: mappings + kallsyms ready after {:?} ({} distinct keys to symbolize)",
            t.elapsed(),
            collection.entries.len()
        );
    }
    add_entries(&mut builder, &collection, symbols, &skipped, t);
    let waits = rec.cfg.waits;
    let sum = &mut builder.summary;
    sum.duration_s = run.duration_s;
    sum.rate_hz = rec.cfg.rate_hz;
    sum.lost_records = run.lost_records;
    sum.lost = lost_ranges(rec, run.start_ns);
    sum.target_cpu_s = run.target_cpu_s;
    sum.switch_outs = collection.stats.intervals;
    sum.observed_waits = collection.stats.observed_intervals;
    sum.unobserved_us = collection.unobserved_us;
    sum.sched_corrected_threads = collection.stats.sched_corrected;
    sum.wait_mode = waits.name().into();
    let wait_rate = rec.tick.min_rate;
    sum.wait_rate_hz = (waits == Waits::Sampled && wait_rate.is_finite()).then_some(wait_rate);
    sum.processes = processes;
    sum.cpus = Some(profiler::perf::online_cpus().len().max(1));
    sum.python_stacks = Some(rec.python_stacks());
    sum.sched_accounting = waits.recorded().then(|| rec.sched_accounting());
    let mut profile = builder.finish(target_info);
    if waits == Waits::Sampled {
        analysis::blame::attach(&mut profile, &blame);
    }
    profile.with_findings()
}

/// The target: its command, its CPython, how it ended.
fn target_info(rec: &Recorder, run: &Run) -> TargetInfo {
    let pid = run.pid;
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
    let command = rec.cfg.command.clone();
    let attached = rec.cfg.attached;
    TargetInfo {
        command,
        pid,
        python,
        exit: run.exit.clone(),
        interrupted: run.interrupted,
        attached,
        partial: attached && run.target_exited,
    }
}

/// The CPython runtime modules of every process, the launched process's first: it decides
/// "running Python" vs "native".
fn core_modules(rec: &Recorder, pid: u32) -> Vec<String> {
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
    core
}

/// `--subprocesses`: every process followed, rooted under `process PID (command)`; processes
/// without a CPython runtime are skipped (returned) and listed.
fn name_processes(
    rec: &Recorder,
    builder: &mut ProfileBuilder,
    pid: u32,
) -> (HashSet<u32>, Vec<analysis::ProcessInfo>) {
    let mut skipped: HashSet<u32> = Default::default();
    let mut processes = Vec::new();
    let mut followed = rec.processes.clone();
    if rec.cfg.subprocesses {
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
        builder.set_process(*p, &format!("process {p} ({})", short_command(rec_cmd)));
        processes.push(analysis::ProcessInfo { pid: *p, command: rec_cmd.clone(), python });
    }
    (skipped, processes)
}

/// The program's base name and its arguments, at most 80 characters.
fn short_command(cmd: &str) -> String {
    let cmd = match cmd.split_once(' ') {
        Some((argv0, rest)) => format!("{} {rest}", argv0.rsplit('/').next().unwrap_or(argv0)),
        None => cmd.rsplit('/').next().unwrap_or(cmd).to_string(),
    };
    if cmd.chars().count() > 80 {
        cmd.chars().take(79).chain(std::iter::once('…')).collect()
    } else {
        cmd
    }
}

/// Records lost per ring, with when (seconds from `start_ns`).
fn lost_ranges(rec: &Recorder, start_ns: u64) -> Vec<analysis::LostRange> {
    let start_ns = rec.start_ns.max(start_ns);
    let lost_range = |ring: &str, l: &LostTally| {
        (l.count > 0).then(|| analysis::LostRange {
            ring: ring.into(),
            count: l.count,
            first_s: l.first.saturating_sub(start_ns) as f64 / 1e9,
            last_s: l.last.saturating_sub(start_ns) as f64 / 1e9,
        })
    };
    [lost_range("samples", &rec.lost_samples), lost_range("switches", &rec.lost_switches)]
        .into_iter()
        .flatten()
        .collect()
}

/// Symbolize each entry of `collection` (but those of `skipped` processes) and add it.
fn add_entries(
    builder: &mut ProfileBuilder,
    collection: &Collection,
    symbols: &mut Symbols,
    skipped: &HashSet<u32>,
    t: Instant,
) {
    let t_sym = Instant::now();
    let mut symbolized = 0usize;
    let native = &mut symbols.native;
    for e in collection.entries.iter().filter(|e| !skipped.contains(&e.key.pid)) {
        let kernel: Vec<String> = e
            .key
            .kernel
            .iter()
            .map(|&a| symbols.kallsyms.lookup(a).map(str::to_string).unwrap_or_else(|| format!("{a:#x}")))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commands() {
        assert_eq!(short_command("/usr/bin/python3 -c pass"), "python3 -c pass");
        assert_eq!(short_command("/usr/bin/python3"), "python3");
        let long = format!("python {}", "x".repeat(100));
        let s = short_command(&long);
        assert_eq!(s.chars().count(), 80);
        assert!(s.ends_with('…'));
    }
}
