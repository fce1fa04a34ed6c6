//! From a collection to a profile: symbolize every distinct key, classify, aggregate
//! ([`profile_of`]), with the symbol tables parsed while the target runs ([`preload`]).

use std::collections::HashSet;
use std::time::Instant;

use analysis::capture::{Capture, CapturedSample, Interner, RunFacts};
use analysis::collect::{Collection, EntryKind};
use analysis::{Observation, Profile, PythonInfo, TargetInfo};
use profiler::{RecordingOutcome, StopReason};
use symbolizer::kernel::Kallsyms;
use symbolizer::native::Native;

use crate::recorder::{cache_dir, timing, LostTally, PyState, Recorder};
use crate::Waits;

/// Marker above the leaf of blocked time that no observation explains.
pub use analysis::reconcile::UNOBSERVED_MARKER;

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
/// DWARF indexes and those of the libraries it links, the kernel's symbols; `opnames`, its
/// opcode names (`symbolizer::python::opcodes::base_opnames_cached`, asked by the caller:
/// starting the interpreter is not for an idle-priority thread).
pub fn preload(interp: &str, opnames: Vec<String>) -> Symbols {
    let t = Instant::now();
    let mut native = Native::new();
    // Full DWARF (with a separate debug file's, e.g. a distribution's -dbg package) for the
    // interpreter; only names from other modules' debug files.
    native.set_separate_dwarf(false);
    // What earlier runs symbolized of the same files (the interpreter's start-up and hot
    // paths): no DWARF decoding for those addresses.
    native.set_persistent_cache(cache_dir());
    native.preload_with(interp, &[analysis::EVAL_FRAME_FN], true);
    let t_interp = t.elapsed();
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
    let t_libs = t.elapsed();
    let kallsyms = Kallsyms::load_cached(&cache_dir());
    if timing() {
        eprintln!(
            "ftprof timing: preload: interpreter {t_interp:?}, its libraries after {t_libs:?}, kernel symbols after {:?}",
            t.elapsed()
        );
    }
    Symbols { native, opnames, kallsyms, mapped: 0 }
}

/// Index the interpreter's DWARF into the cache directory for later runs (see
/// [`Native::build_line_index`]): once per interpreter and ftprof build, it takes about a
/// second; then a run parses none of its debug data. `None` when there was nothing to do, and
/// always when ftprof runs with privileges its caller lacks (the index would hold what the
/// caller may not be able to read).
pub fn index_debug_data(interp: &str) -> Option<(usize, std::time::Duration)> {
    if profiler::access::privilege().elevated().is_some() {
        return None;
    }
    let mut native = Native::new();
    native.set_persistent_cache(cache_dir());
    native.build_line_index(interp)
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
    collection: Collection,
    symbols: &mut Symbols,
    outcome: Option<&RecordingOutcome>,
) -> Profile {
    capture_of(rec, collection, symbols, outcome).profile()
}

/// Symbolize `collection` (collected by `rec`) into what the decisions are given: a
/// [`Capture`], whose [`Capture::profile`] classifies and aggregates. `symbols` gets its
/// mappings here; `outcome`: how the recording ended, `None` while it goes on.
pub fn capture_of(
    rec: &Recorder,
    mut collection: Collection,
    symbols: &mut Symbols,
    outcome: Option<&RecordingOutcome>,
) -> Capture {
    let t = Instant::now();
    symbols.sync(rec);
    let run = Run::of(rec, outcome);
    let mut cap = Capture {
        period_ns: profiler::perf::sample_period_ns(rec.cfg.rate_hz),
        core_modules: core_modules(rec, run.pid),
        opnames: symbols.opnames.clone(),
        target: target_info(rec, &run),
        ..Default::default()
    };
    if let Some(waits) = rec.threads.kernel_waits() {
        let mut by: std::collections::BTreeMap<(u32, u64), analysis::KernelWaits> = Default::default();
        for w in waits {
            if let bpf::WaitKind::Futex { addr } = w.kind {
                let e = by.entry((w.tid, addr)).or_default();
                e.count += w.count;
                e.total_ns += w.total_ns;
                e.max_ns = e.max_ns.max(w.max_ns);
                e.runq_ns += w.runq_ns;
            }
        }
        cap.kernel_waits = Some(by.into_iter().map(|((tid, addr), k)| (tid, addr, k)).collect());
    }
    let (skipped, processes) = name_processes(rec, &mut cap, run.pid);
    for (tid, (pid, comm)) in rec.names.iter().filter(|(_, (p, _))| !skipped.contains(p)) {
        // The Python thread name when there is one (3.13 does not pass it to the OS).
        cap.threads.push((*tid, *pid, rec.py_names.get(tid).unwrap_or(comm).clone()));
    }
    cap.threads.sort();
    if timing() {
        eprintln!(
            "ftprof timing: unwound {} stacks in {:.6} s while recording",
            rec.unwound,
            rec.unwind_time.as_secs_f64()
        );
    }
    analysis::objects::settle_operands(&mut collection.entries);
    if timing() {
        eprintln!(
            "ftprof timing: mappings + kallsyms ready after {:?} ({} distinct keys to symbolize)",
            t.elapsed(),
            collection.entries.len()
        );
    }
    add_entries(&mut cap, collection.entries.drain(..), symbols, &skipped, t);
    let waits = rec.cfg.waits;
    let wait_rate = rec.tick.min_rate;
    cap.run = RunFacts {
        duration_s: run.duration_s,
        rate_hz: rec.cfg.rate_hz,
        lost_records: run.lost_records,
        lost: lost_ranges(rec, run.start_ns),
        target_cpu_s: run.target_cpu_s,
        switch_outs: collection.stats.intervals,
        observed_waits: collection.stats.observed_intervals,
        unobserved_us: collection.unobserved_us,
        sched_corrected_threads: collection.stats.sched_corrected,
        wait_mode: waits.name().into(),
        wait_rate_hz: (waits == Waits::Sampled && wait_rate.is_finite()).then_some(wait_rate),
        processes,
        cpus: Some(profiler::perf::online_cpus().len().max(1)),
        python_stacks: Some(rec.python_stacks()),
        sched_accounting: waits.recorded().then(|| rec.sched_accounting()),
    };
    if waits == Waits::Sampled {
        cap.blame = Some(rec.holders.clone().finish());
    }
    cap
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
fn name_processes(rec: &Recorder, cap: &mut Capture, pid: u32) -> (HashSet<u32>, Vec<analysis::ProcessInfo>) {
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
        cap.processes.push((*p, format!("process {p} ({})", short_command(rec_cmd))));
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

/// Symbolize each entry of `entries` (but those of `skipped` processes) into `cap`.
fn add_entries(
    cap: &mut Capture,
    entries: impl Iterator<Item = analysis::collect::Entry>,
    symbols: &mut Symbols,
    skipped: &HashSet<u32>,
    t: Instant,
) {
    let t_sym = Instant::now();
    let mut symbolized = 0usize;
    let mut interner = Interner::default();
    let native = &mut symbols.native;
    let decoded_before = native.decoded();
    let kallsyms = &symbols.kallsyms;
    for e in entries.filter(|e| !skipped.contains(&e.key.pid)) {
        let pid = e.key.pid;
        let kernel: Vec<u32> = e
            .key
            .kernel
            .iter()
            .map(|&a| {
                cap.name(&mut interner, kallsyms.lookup(a).map(str::to_string).unwrap_or_else(|| format!("{a:#x}")))
            })
            .collect();
        let chains: Vec<u32> = e
            .key
            .native
            .iter()
            .enumerate()
            .map(|(i, &a)| cap.chain(&mut interner, pid, a, i > 0, || native.symbolize(pid, a, i > 0)))
            .collect();
        symbolized += chains.len();
        // The instruction before the sampled one: a stalled atomic shows up there.
        let leaf_prev = match (e.kind, e.key.native.first()) {
            (EntryKind::Cpu, Some(&ip)) => {
                Some(cap.chain(&mut interner, pid, ip, true, || native.symbolize(pid, ip, true)))
            }
            _ => None,
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
            cap.samples.push(CapturedSample {
                tid: e.key.tid,
                native: chains.clone(),
                native_complete: e.key.native_complete,
                python: e.python.clone(),
                kernel: kernel.clone(),
                leaf_prev,
                parked: e.key.parked.clone(),
                observation,
                alone: e.key.alone,
                marker: (e.kind == EntryKind::Unobserved).then(|| UNOBSERVED_MARKER.to_string()),
                syscall: e.key.syscall,
                operand: e.key.operand.clone(),
                concurrent,
            });
        }
    }
    if timing() {
        eprintln!(
            "ftprof timing: symbolized {symbolized} addresses ({} decoded from debug data) in {:.6} s; samples processed after {:?}",
            native.decoded() - decoded_before,
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
