//! What a thread of a live process is doing right now, read from `/proc` without stopping it.
//! The parsing lives in `profiler::threads` (shared with `record`); these are the few readers
//! `dump` and the attach checks need.

pub use profiler::threads::{parked_addr, Blocked};

/// Scheduler state letter of a thread (R, S, D, T, Z, …).
pub fn thread_state(pid: u32, tid: u32) -> Option<char> {
    profiler::threads::read_stat(pid, Some(tid)).map(|s| s.state)
}

/// Thread name (`comm`).
pub fn thread_name(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The command line of a process (`/proc/PID/cmdline`), empty when unreadable.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default()
}

/// The thread's system call state and a copy of `stack_bytes` of its stack; `None` while it
/// runs (needs ptrace access).
pub fn blocked(pid: u32, tid: u32, stack_bytes: usize) -> Option<Blocked> {
    profiler::threads::ThreadProbe::new().blocked(pid, tid, stack_bytes)
}
