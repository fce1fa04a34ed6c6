//! What a thread of a live process is doing right now, read from `/proc` and its memory without
//! stopping it: scheduler state, the system call it is blocked in (with its arguments, stack and
//! instruction pointers), and a copy of its stack.

use profiler::Regs;
use symbolizer::python::ReadMemory;

/// One thread's blocked-in-the-kernel view.
#[derive(Clone, Debug)]
pub struct Blocked {
    /// System call number, when blocked in one.
    pub syscall: Option<u64>,
    /// Registers good enough to unwind from (ip, sp) and to identify a futex (di = first arg).
    pub regs: Regs,
    /// Copy of the user stack from `regs.sp`.
    pub stack: Vec<u8>,
}

/// Scheduler state letter from `/proc/PID/task/TID/stat` (R, S, D, T, Z, …).
pub fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// Process state letter from `/proc/PID/stat`.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
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

/// Copy up to `max` bytes of stack from `sp` (fewer near the top of the stack mapping).
pub fn read_stack(pid: u32, sp: u64, max: usize) -> Vec<u8> {
    let mem = symbolizer::python::Mem::new(pid);
    let mut len = max;
    while len >= 512 {
        match mem.read_vec(sp, len) {
            Ok(v) => return v,
            // The thread or process is gone: no point retrying.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EPERM)) => break,
            Err(_) => {}
        }
        // Do not cross the end of the stack mapping: shrink (always strictly) and retry.
        let to_page_end = (4096 - (sp as usize % 4096)) % 4096;
        let next = if len > to_page_end + 4096 { len / 2 } else { to_page_end.max(len / 2) };
        if next >= len {
            break;
        }
        len = next;
    }
    Vec::new()
}

/// The thread's system call state from `/proc/PID/task/TID/syscall` (needs ptrace access).
/// `None` while it runs.
pub fn blocked(pid: u32, tid: u32, stack_bytes: usize) -> Option<Blocked> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (syscall, args, sp, pc) = match fields.as_slice() {
        [nr, a0, a1, a2, a3, a4, a5, sp, pc] => {
            (nr.parse::<u64>().ok(), [hex(a0)?, hex(a1)?, hex(a2)?, hex(a3)?, hex(a4)?, hex(a5)?], hex(sp)?, hex(pc)?)
        }
        // "-1 SP PC": blocked, but not in a system call.
        [_, sp, pc] => (None, [0; 6], hex(sp)?, hex(pc)?),
        _ => return None, // "running"
    };
    let regs = Regs { di: args[0], si: args[1], dx: args[2], sp, ip: pc, ..Default::default() };
    Some(Blocked { syscall, regs, stack: read_stack(pid, sp, stack_bytes) })
}
