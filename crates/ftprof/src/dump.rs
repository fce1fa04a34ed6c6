//! `ftprof dump --pid PID`: what every thread of a running process is doing right now — its state,
//! what it waits on and who holds that, its Python stack (merged with native frames on request) —
//! and any deadlock cycle. Reads `/proc` and the process's memory; never stops the process.

use std::collections::{HashMap, HashSet};

use analysis::{classify, merge_stacks, Category, Evidence, Frame, FrameKind, LockIdentity};
use anyhow::Result;
use serde::Serialize;
use symbolizer::native::{Native, NativeFrame};
use symbolizer::python::{PyFrame, PyProcess};

use engine::holders::{innermost, HolderSampler, WaitedLock, Waiter};
use engine::procfs as snapshot;

use crate::check::check_process;

/// One thread, as `dump` reports it.
#[derive(Debug, Serialize)]
pub struct ThreadDump {
    pub tid: u32,
    pub name: String,
    /// running, waiting, paused, sleeping, in I/O, joining, idle, runnable, stopped.
    pub state: String,
    /// Why it waits (the categories of `record`), when it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<Category>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockIdentity>,
    /// The thread holding what this one waits on, when it can be determined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<u32>,
    /// When no holder was found: where and by whom what it waits on was released during the
    /// release watch (the most frequent release site, other threads' releases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<ReleasedBy>,
    /// Python frames, innermost first: `qualname (file:line)`.
    pub python: Vec<String>,
    /// With `--native`: the merged stack, innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<String>,
}

/// See [`ThreadDump::released_by`].
#[derive(Debug, Serialize)]
pub struct ReleasedBy {
    /// The releasing threads' Python frames at the wake-up (the latest), innermost first:
    /// `qualname (file:line)`.
    pub python: Vec<String>,
    /// The threads that released there, most wake-ups first.
    pub tids: Vec<u32>,
    /// Wake-ups at the address during the watch: at this site, and in all.
    pub wakeups: u64,
    pub all_wakeups: u64,
}

/// The release watch: run when threads wait with no holder found (see [`watch_releases`]).
#[derive(Debug, Serialize)]
pub struct ReleaseWatch {
    pub window_ms: u64,
    /// Wake-ups seen at the addresses those threads wait on.
    pub wakeups: u64,
    /// Why there was no watch (BPF off, not permitted, refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How long `dump` watches releases (the process keeps running meanwhile).
const RELEASE_WATCH: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, Serialize)]
pub struct Dump {
    pub pid: u32,
    pub command: Vec<String>,
    pub python_version: String,
    pub free_threaded: bool,
    pub gil_enabled: Option<bool>,
    pub threads: Vec<ThreadDump>,
    /// Each deadlock cycle as the TIDs involved, in wait-for order.
    pub deadlocks: Vec<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_watch: Option<ReleaseWatch>,
}

fn state_word(c: Option<Category>, sched: Option<char>) -> &'static str {
    match (c, sched) {
        (_, Some('R')) => "running",
        (_, Some('T')) | (_, Some('t')) => "stopped",
        (Some(Category::StopTheWorld), _) => "paused (stop-the-world)",
        (Some(Category::Sleep), _) => "sleeping",
        (Some(Category::Io), _) => "in I/O",
        (Some(Category::Join), _) => "joining a thread",
        (Some(Category::Idle), _) => "idle",
        (Some(Category::Runqueue), _) => "runnable",
        (Some(_), _) => "waiting",
        (None, _) => "blocked",
    }
}

/// Take the dump.
pub fn collect(pid: u32, native_frames: bool) -> Result<Dump> {
    let target = check_process(pid)?;
    let mut py = PyProcess::locate(pid)?;
    let mut native = Native::new();
    native.load_proc_maps(pid)?;
    let opnames = Vec::new();
    let tids = profiler::perf::process_tids(pid as i32);
    let py_names = py.thread_names_by_tid();
    let mut threads = Vec::new();
    let mut parked_on = HashMap::new();
    for tid in tids {
        let tid = tid as u32;
        let sched = snapshot::thread_state(pid, tid);
        let python = py.stack_for_tid(tid).ok().flatten();
        let blocked = if sched == Some('R') { None } else { snapshot::blocked(pid, tid, 32 * 1024) };
        let (mut wait, mut lock, mut merged) = (None, None, Vec::new());
        if let Some(b) = &blocked {
            let uw = native.unwind(pid, b.regs, &b.stack);
            let chains: Vec<Vec<NativeFrame>> = if native_frames {
                uw.addrs.iter().enumerate().map(|(i, &a)| native.symbolize(pid, a, i > 0)).collect()
            } else {
                uw.addrs.iter().enumerate().map(|(i, &a)| vec![native.symbolize_quick(pid, a, i > 0)]).collect()
            };
            let parked = snapshot::parked_addr(&b.regs, &b.stack).map(|a| py.probe_parked(tid, a));
            let ev = Evidence {
                native: chains.iter().flatten().collect(),
                leaf_prev: &[],
                kernel: &[],
                python: python.as_ref(),
                parked: parked.as_ref(),
                on_cpu: false,
                preempted: false,
                alone: false,
                runtime_module: Some(&target.runtime_module),
                opnames: &opnames,
                syscall: b.syscall,
                operand: None,
                concurrent: true,
            };
            let (c, id) = classify(&ev);
            if let Some(p) = parked {
                parked_on.insert(tid, (p, python.as_ref().and_then(innermost)));
            }
            wait = Some(c);
            lock = id;
            if native_frames {
                let (frames, _) = merge_stacks(&chains, uw.complete, python.as_ref());
                merged = frames.iter().rev().map(Frame::label).collect();
            }
        }
        if native_frames && merged.is_empty() {
            // Running (or unreadable) thread: its Python frames are all we can show.
            let (frames, _) = merge_stacks(&[], false, python.as_ref());
            merged = frames.iter().rev().filter(|f| f.kind == FrameKind::Python).map(Frame::label).collect();
        }
        let python_labels = python.as_ref().map(labels).unwrap_or_default();
        threads.push(ThreadDump {
            tid,
            name: py_names.get(&tid).cloned().unwrap_or_else(|| snapshot::thread_name(pid, tid)),
            state: state_word(if sched == Some('R') { None } else { wait }, sched).to_string(),
            wait: if sched == Some('R') { None } else { wait },
            lock,
            holder: None,
            released_by: None,
            python: python_labels,
            merged,
        });
    }
    find_holders(&mut py, &mut threads, &parked_on);
    let deadlocks = cycles(&threads);
    let release_watch = watch_releases(&mut py, &mut threads, &parked_on);
    // With privileges the caller lacks: the process may have exec'd a set-id program while it
    // was read (the runtime's reads are pinned to the checked image, /proc reads are not); show
    // nothing unless it is still one the caller may trace.
    profiler::access::check(pid)?;
    Ok(Dump {
        pid,
        command: target.command,
        python_version: py.offsets.version_string(),
        free_threaded: py.offsets.free_threaded,
        gil_enabled: py.gil_enabled().ok(),
        threads,
        deadlocks,
        release_watch,
    })
}

/// Python frames, innermost first: `qualname (file:line)`.
fn labels(stack: &symbolizer::python::PyStack) -> Vec<String> {
    stack
        .frames
        .iter()
        .filter_map(|f| match f {
            PyFrame::Code { code, line, .. } => {
                let file = code.filename.rsplit('/').next().unwrap_or(&code.filename);
                Some(match line {
                    Some(l) => format!("{} ({file}:{l})", code.qualname),
                    None => format!("{} ({file})", code.qualname),
                })
            }
            PyFrame::Entry => None,
        })
        .collect()
}

/// For threads waiting on a lock, a critical section, an internal mutex or the GIL with no
/// holder found (a bare `acquire()`, a mutex that records no owner): watch who releases it for
/// [`RELEASE_WATCH`] ([`engine::holders::watch_releases`]). Nothing when every waiter has its
/// holder (a deadlock among them is already named).
fn watch_releases(py: &mut PyProcess, threads: &mut [ThreadDump], parked_on: &ParkedOn) -> Option<ReleaseWatch> {
    let waiting = |t: &ThreadDump| {
        t.holder.is_none()
            && matches!(t.wait, Some(Category::Lock | Category::CriticalSection | Category::Pymutex | Category::Gil))
    };
    let addrs: HashSet<u64> =
        threads.iter().filter(|t| waiting(t)).filter_map(|t| parked_on.get(&t.tid).map(|(p, _)| p.addr)).collect();
    if addrs.is_empty() {
        return None;
    }
    let window_ms = RELEASE_WATCH.as_millis() as u64;
    let releases = match engine::holders::watch_releases(py, &addrs, RELEASE_WATCH) {
        Ok(r) => r,
        Err(reason) => return Some(ReleaseWatch { window_ms, wakeups: 0, reason: Some(reason) }),
    };
    for t in threads.iter_mut().filter(|t| waiting(t)) {
        let Some((p, _)) = parked_on.get(&t.tid) else { continue };
        // Other threads' releases of it (a thread of a hand-off pool released it too, before it
        // waited again), grouped by site: the most frequent one.
        let here: Vec<(String, u32, Vec<String>)> = releases
            .iter()
            .filter(|r| r.addr == p.addr && r.waker != t.tid)
            .map(|r| {
                let l = labels(&r.stack);
                (l.first().cloned().unwrap_or_default(), r.waker, l)
            })
            .collect();
        let mut sites: HashMap<&str, u64> = HashMap::new();
        for (site, _, _) in &here {
            *sites.entry(site).or_default() += 1;
        }
        let Some((site, n)) = sites.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))) else { continue };
        let mut by: HashMap<u32, u64> = HashMap::new();
        for (_, tid, _) in here.iter().filter(|(s, _, _)| s == site) {
            *by.entry(*tid).or_default() += 1;
        }
        let mut tids: Vec<(u32, u64)> = by.into_iter().collect();
        tids.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let python = here.iter().rev().find(|(s, _, _)| s == site).map(|(_, _, l)| l.clone()).unwrap_or_default();
        t.released_by = Some(ReleasedBy {
            python,
            tids: tids.into_iter().map(|(tid, _)| tid).collect(),
            wakeups: n,
            all_wakeups: here.len() as u64,
        });
    }
    Some(ReleaseWatch { window_ms, wakeups: releases.len() as u64, reason: None })
}

/// Each blocked thread's parked-on lock and its innermost Python frame, by TID.
type ParkedOn = HashMap<u32, (symbolizer::python::ParkedInfo, Option<(u64, u32)>)>;

/// Who holds what the waiting threads wait on: the holder search of `record`
/// ([`engine::holders`]) on this one snapshot, without its budget. `parked_on`: each blocked
/// thread's parked-on lock and its innermost Python frame.
fn find_holders(py: &mut PyProcess, threads: &mut [ThreadDump], parked_on: &ParkedOn) {
    let mut waiters = Vec::new();
    for t in threads.iter_mut() {
        if !matches!(t.wait, Some(Category::Lock) | Some(Category::CriticalSection)) {
            continue;
        }
        let Some((parked, at)) = parked_on.get(&t.tid) else { continue };
        // RLocks record their owner; 3.13 RLock waits need the object found on the frame.
        let rlock = t.lock.as_ref().is_some_and(|l| l.type_name.as_deref() == Some("_thread.RLock"));
        let lock = if rlock && t.wait == Some(Category::Lock) {
            let obj = t.lock.as_ref().and_then(|l| l.address).or_else(|| py.rlock_being_acquired(t.tid));
            match (obj, t.lock.as_mut()) {
                (Some(obj), Some(l)) => {
                    l.address = Some(obj);
                    Some(WaitedLock::RLock { obj })
                }
                _ => None,
            }
        } else {
            WaitedLock::from_parked(parked)
        };
        if let Some(lock) = lock {
            waiters.push(Waiter { tid: t.tid, lock, weight_ns: 0, at: *at });
        }
    }
    let all: Vec<u32> = threads.iter().map(|t| t.tid).collect();
    let holders = HolderSampler::unbounded().sample(py, &all, &waiters, &mut |_| false);
    for t in threads.iter_mut() {
        t.holder = holders.get(&t.tid).copied();
    }
}

/// Wait-for cycles (each reported once, starting from its smallest TID).
fn cycles(threads: &[ThreadDump]) -> Vec<Vec<u32>> {
    let next: HashMap<u32, u32> = threads.iter().filter_map(|t| Some((t.tid, t.holder?))).collect();
    let mut found: Vec<Vec<u32>> = Vec::new();
    let mut seen = HashSet::new();
    for &start in next.keys() {
        let mut path = vec![start];
        let mut cur = start;
        while let Some(&n) = next.get(&cur) {
            if let Some(i) = path.iter().position(|&p| p == n) {
                let mut cycle = path[i..].to_vec();
                let min = cycle.iter().enumerate().min_by_key(|(_, t)| **t).map(|(i, _)| i).unwrap_or(0);
                cycle.rotate_left(min);
                if seen.insert(cycle.clone()) {
                    found.push(cycle);
                }
                break;
            }
            path.push(n);
            cur = n;
        }
    }
    found.sort();
    found
}

/// Human-readable dump.
pub fn text(d: &Dump) -> String {
    let mut o = format!(
        "Process {}: {}\nCPython {} ({}, GIL {}); {} threads\n",
        d.pid,
        d.command.join(" "),
        d.python_version,
        if d.free_threaded { "free-threaded" } else { "default build" },
        match d.gil_enabled {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "unknown",
        },
        d.threads.len()
    );
    for t in &d.threads {
        o += &format!("\nThread {} \"{}\": {}", t.tid, t.name, t.state);
        if let (Some(c), Some(l)) = (t.wait, &t.lock) {
            o += &format!(" — {} on {}", c.name(), l.describe());
        }
        if let Some(h) = t.holder {
            o += &format!(", held by thread {h}");
        }
        if let Some(r) = &t.released_by {
            let at = r.python.first().map(|l| format!(" at {l}")).unwrap_or_default();
            let mut by: Vec<String> = r.tids.iter().take(3).map(u32::to_string).collect();
            if r.tids.len() > 3 {
                by.push(format!("{} more", r.tids.len() - 3));
            }
            o += &format!(
                ", released{at} by thread{} {} ({} of {} wake-ups in {} ms)",
                if r.tids.len() == 1 { "" } else { "s" },
                by.join(", "),
                r.wakeups,
                r.all_wakeups,
                d.release_watch.as_ref().map_or(0, |w| w.window_ms)
            );
        }
        o += "\n";
        let frames = if t.merged.is_empty() { &t.python } else { &t.merged };
        if frames.is_empty() {
            o += "    (no Python frames)\n";
        }
        for f in frames {
            o += &format!("    {f}\n");
        }
    }
    for c in &d.deadlocks {
        let by_tid: HashMap<u32, &ThreadDump> = d.threads.iter().map(|t| (t.tid, t)).collect();
        let steps: Vec<String> = c
            .iter()
            .map(|tid| {
                let t = by_tid[tid];
                let what = t.lock.as_ref().map(|l| l.describe()).unwrap_or_else(|| "?".into());
                let at = t.python.first().map(|l| format!(" at {l}")).unwrap_or_default();
                format!("thread {tid} waits for {what}{at}, held by thread {}", t.holder.unwrap_or(0))
            })
            .collect();
        o += &format!("\nDEADLOCK: {}\n", steps.join("; "));
    }
    if let Some(w) = &d.release_watch {
        o += &match &w.reason {
            Some(why) => format!("\nSome waiting threads have no holder found; releases were not watched: {why}\n"),
            None => format!(
                "\nReleases watched for {} ms for the waiting threads with no holder found (the kernel's waker stacks): {} wake-ups\n",
                w.window_ms, w.wakeups
            ),
        };
    }
    o
}

/// Run `ftprof dump`.
pub fn run(pid: u32, native: bool, json: bool) -> Result<i32> {
    let d = collect(pid, native)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", text(&d));
    }
    Ok(0)
}
