//! What a blocked thread is doing right now, read without stopping it: the system call it is
//! blocked in (`/proc/PID/task/TID/syscall`: number, arguments, stack and instruction pointers)
//! and a copy of its user stack (`process_vm_readv`). Used for wall-clock snapshots of blocked
//! threads and for threads already blocked when ftprof attaches.

use std::collections::HashMap;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::records::Regs;

/// One blocked thread's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// System call number, when blocked in one.
    pub syscall: Option<u64>,
    /// `ip`, `sp` and the first three arguments (`di`, `si`, `dx`); the rest are zero.
    pub regs: Regs,
    /// Copy of the user stack from `regs.sp`.
    pub stack: Vec<u8>,
}

/// Parse `/proc/PID/task/TID/syscall`: `NR ARG1..ARG6 SP PC` while blocked in a system call,
/// `-1 SP PC` when blocked outside one, `running` otherwise (→ `None`).
pub fn parse_syscall(text: &str) -> Option<(Option<u64>, Regs)> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (nr, args, sp, ip) = match fields.as_slice() {
        [nr, a0, a1, a2, _, _, _, sp, pc] => {
            (nr.parse::<u64>().ok(), [hex(a0)?, hex(a1)?, hex(a2)?], hex(sp)?, hex(pc)?)
        }
        [_, sp, pc] => (None, [0; 3], hex(sp)?, hex(pc)?),
        _ => return None,
    };
    Some((nr, Regs { di: args[0], si: args[1], dx: args[2], sp, ip, ..Default::default() }))
}

/// Copy up to `max` bytes of `pid`'s memory from `sp` (fewer near the top of the stack mapping).
pub fn read_stack(pid: u32, sp: u64, max: usize) -> Vec<u8> {
    let mut len = max;
    let mut buf = vec![0u8; max];
    while len >= 512 {
        let remote = [RemoteIoVec { base: sp as usize, len }];
        match process_vm_readv(Pid::from_raw(pid as i32), &mut [IoSliceMut::new(&mut buf[..len])], &remote) {
            Ok(n) if n == len => {
                buf.truncate(len);
                return buf;
            }
            // Gone, or not ours to read: retrying will not help.
            Err(Errno::ESRCH | Errno::EPERM) => break,
            _ => {}
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

/// What ftprof uses of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`): the one parser of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Scheduler state letter (R, S, D, T, Z, …).
    pub state: char,
    pub ppid: u32,
}

/// Parse a `stat` file: `PID (COMM) STATE PPID …`; the command name may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat { state, ppid })
}

/// The live descendants of process `pid` (children, their children, …), from `/proc/*/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(st) = read_stat(p, None).filter(|s| s.state != 'Z') {
                parent_of.push((p, st.ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && c != pid && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.sort_unstable();
    out
}

/// `stat` of process `pid`, or of its thread `tid`.
pub fn read_stat(pid: u32, tid: Option<u32>) -> Option<ProcStat> {
    let path = match tid {
        Some(tid) => format!("/proc/{pid}/task/{tid}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Where a thread parked in CPython's parking lot keeps the parked-on address:
/// `_PyParkingLot_Park` sleeps on the semaphore inside its on-stack
/// `wait_entry {park_arg, addr, sema, …}`, so the futex address (first system call argument,
/// `rdi`) minus 8 holds `addr`. Read it from the stack copy; for a futex word not on the stack
/// (e.g. the GIL's condition variable), that word itself.
pub fn parked_addr(regs: &Regs, stack: &[u8]) -> Option<u64> {
    let slot = regs.di.checked_sub(8)?;
    let on_stack = slot
        .checked_sub(regs.sp)
        .and_then(|off| usize::try_from(off).ok())
        .and_then(|off| stack.get(off..off.checked_add(8)?));
    let Some(bytes) = on_stack else {
        return (regs.di > 4096).then_some(regs.di);
    };
    let addr = u64::from_le_bytes(bytes.try_into().ok()?);
    (addr > 4096).then_some(addr)
}

/// A thread's scheduler accounting (`/proc/PID/task/TID/schedstat` and the context-switch
/// counters of `status`): exact, kept by the kernel at no cost to the thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Time on a CPU (ns).
    pub run_ns: u64,
    /// Time runnable but waiting for a CPU (ns).
    pub runqueue_ns: u64,
    /// Times it was put on a CPU.
    pub timeslices: u64,
    /// Of `runqueue_ns`, the time after wake-ups (the rest after preemptions); known only from
    /// the kernel's switch and wake-up events, 0 from `/proc`.
    pub woken_runqueue_ns: u64,
}

/// Parse `/proc/PID/task/TID/schedstat`: `RUN_NS WAIT_NS TIMESLICES`.
pub fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(SchedStat { run_ns: it.next()??, runqueue_ns: it.next()??, timeslices: it.next()??, woken_runqueue_ns: 0 })
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from `/proc/PID/task/TID/status`:
/// how often the thread blocked, and how often it was preempted (or yielded to another thread).
pub fn parse_ctxt_switches(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim_start_matches(':').trim().parse::<u64>().ok())
    };
    Some((field("voluntary_ctxt_switches")?, field("nonvoluntary_ctxt_switches")?))
}

/// One kept-open `/proc/PID/task/TID/*` file per thread and kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ProcFile {
    Syscall,
    Schedstat,
    Status,
}

/// Reads threads' state from `/proc`, keeping each file open (a `pread` at offset 0 regenerates
/// it), so a check costs one system call.
#[derive(Default)]
pub struct ThreadProbe {
    files: HashMap<(u32, ProcFile), (u32, File)>,
    buf: Vec<u8>,
}

impl ThreadProbe {
    pub fn new() -> Self {
        ThreadProbe { files: HashMap::new(), buf: vec![0; 4096] }
    }

    fn read(&mut self, pid: u32, tid: u32, kind: ProcFile) -> Option<&str> {
        let file = match self.files.get(&(tid, kind)) {
            Some((p, f)) if *p == pid => f,
            _ => {
                let name = match kind {
                    ProcFile::Syscall => "syscall",
                    ProcFile::Schedstat => "schedstat",
                    ProcFile::Status => "status",
                };
                let f = File::open(format!("/proc/{pid}/task/{tid}/{name}")).ok()?;
                &self.files.entry((tid, kind)).insert_entry((pid, f)).into_mut().1
            }
        };
        let n = file.read_at(&mut self.buf, 0).ok()?;
        std::str::from_utf8(&self.buf[..n]).ok()
    }

    /// The system call state of thread `tid` of `pid`; `None` while it runs (or is runnable),
    /// or when it cannot be read.
    pub fn syscall(&mut self, pid: u32, tid: u32) -> Option<(Option<u64>, Regs)> {
        parse_syscall(self.read(pid, tid, ProcFile::Syscall)?)
    }

    /// The thread's scheduler accounting.
    pub fn schedstat(&mut self, pid: u32, tid: u32) -> Option<SchedStat> {
        parse_schedstat(self.read(pid, tid, ProcFile::Schedstat)?)
    }

    /// (voluntary, involuntary) context switches of the thread so far.
    pub fn ctxt_switches(&mut self, pid: u32, tid: u32) -> Option<(u64, u64)> {
        parse_ctxt_switches(self.read(pid, tid, ProcFile::Status)?)
    }

    /// Like [`ThreadProbe::syscall`], plus a copy of `stack_bytes` of its stack.
    pub fn blocked(&mut self, pid: u32, tid: u32, stack_bytes: usize) -> Option<Blocked> {
        let (syscall, regs) = self.syscall(pid, tid)?;
        Some(Blocked { syscall, regs, stack: read_stack(pid, regs.sp, stack_bytes) })
    }

    /// Close what is kept open for `tid` (it exited).
    pub fn forget(&mut self, tid: u32) {
        for kind in [ProcFile::Syscall, ProcFile::Schedstat, ProcFile::Status] {
            self.files.remove(&(tid, kind));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_include_grandchildren_and_not_the_process_itself() {
        // A shell (child) that starts a sleep (grandchild) and waits for it.
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(sh.stdout.take().unwrap()), &mut line).unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let me = std::process::id();
        let d = descendants(me);
        let _ = std::process::Command::new("kill").arg(grandchild.to_string()).status();
        let _ = sh.wait();
        assert!(d.contains(&sh.id()) && d.contains(&grandchild), "{d:?} lacks {} or {grandchild}", sh.id());
        assert!(!d.contains(&me));
        assert!(descendants(grandchild).is_empty());
    }

    #[test]
    fn parses_the_three_forms() {
        let (nr, r) = parse_syscall("202 0x7f00deadbee8 0x80 0x0 0x0 0x0 0x0 0x7ffd1000 0x7f0012345678\n").unwrap();
        assert_eq!(nr, Some(202));
        assert_eq!((r.di, r.si, r.sp, r.ip), (0x7f00deadbee8, 0x80, 0x7ffd1000, 0x7f0012345678));
        let (nr, r) = parse_syscall("-1 0x7ffd2000 0x401000\n").unwrap();
        assert_eq!(nr, None);
        assert_eq!((r.sp, r.ip), (0x7ffd2000, 0x401000));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("202 zz 0 0 0 0 0 0 0"), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let st = parse_stat("4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 120 0 0 0").unwrap();
        assert_eq!(st, ProcStat { state: 'S', ppid: 17 });
        assert_eq!(parse_stat("1 (a b) Z 0").map(|s| s.state), Some('Z'));
        assert_eq!(parse_stat("1 (x"), None);
        assert_eq!(parse_stat("1 (x) S notanumber"), None);
        let tid = nix::unistd::gettid().as_raw() as u32;
        let own = read_stat(std::process::id(), Some(tid)).unwrap();
        assert_eq!(own.state, 'R', "this thread is running while it reads its own stat");
        assert_eq!(read_stat(std::process::id(), None).unwrap().ppid, nix::unistd::getppid().as_raw() as u32);
    }

    #[test]
    fn parked_address_from_the_wait_entry_or_the_futex_word() {
        let sp = 0x7ffc_0000_1000u64;
        let mut stack = vec![0u8; 256];
        // The wait entry's `addr` field at futex - 8, i.e. at sp + 0x40.
        stack[0x40..0x48].copy_from_slice(&0x7f00_dead_0000u64.to_le_bytes());
        let regs = Regs { di: sp + 0x48, sp, ..Default::default() };
        assert_eq!(parked_addr(&regs, &stack), Some(0x7f00_dead_0000));
        // A futex word elsewhere (a condition variable): the word itself.
        let regs = Regs { di: 0x5555_0000_0040, sp, ..Default::default() };
        assert_eq!(parked_addr(&regs, &stack), Some(0x5555_0000_0040));
        // Past the end of the copy, a null slot, no futex at all.
        assert_eq!(parked_addr(&Regs { di: sp + 0x1000, sp, ..Default::default() }, &stack), Some(sp + 0x1000));
        assert_eq!(parked_addr(&Regs { di: sp + 0x10, sp, ..Default::default() }, &stack), None);
        assert_eq!(parked_addr(&Regs { di: 4, sp, ..Default::default() }, &stack), None);
        assert_eq!(parked_addr(&Regs { di: u64::MAX, sp: 0, ..Default::default() }, &stack), Some(u64::MAX));
    }

    #[test]
    fn parses_schedstat_and_switch_counters() {
        assert_eq!(
            parse_schedstat("189369094 115624082 562\n"),
            Some(SchedStat { run_ns: 189369094, runqueue_ns: 115624082, timeslices: 562, woken_runqueue_ns: 0 })
        );
        assert_eq!(parse_schedstat("1 2\n"), None);
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t435\nnonvoluntary_ctxt_switches:\t127\n";
        assert_eq!(parse_ctxt_switches(status), Some((435, 127)));
        assert_eq!(parse_ctxt_switches("Name: x\n"), None);
    }

    /// A real blocked thread of this process: its futex wait shows up with its arguments and a
    /// readable stack; a running one reads as running.
    #[test]
    fn reads_a_real_blocked_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        let pid = std::process::id();
        let mut probe = ThreadProbe::new();
        // It blocks in recv() soon after sending its tid.
        let mut seen = None;
        for _ in 0..2000 {
            if let Some(b) = probe.blocked(pid, tid, 4096) {
                seen = Some(b);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let b = seen.expect("the thread never showed as blocked");
        assert_eq!(b.syscall, Some(202), "a channel receive waits in futex");
        let before = probe.ctxt_switches(pid, tid).expect("status readable");
        assert!(before.0 >= 1, "it blocked at least once: {before:?}");
        let st = probe.schedstat(pid, tid).expect("schedstat readable");
        assert!(st.timeslices >= 1 && st.run_ns > 0, "{st:?}");
        assert!(!b.stack.is_empty());
        assert!(b.regs.sp != 0 && b.regs.ip != 0);
        tx.send(()).unwrap();
        h.join().unwrap();

        // A spinning thread reads as running (most of the time: it can be preempted).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let tid = tid_rx.recv().unwrap();
        let running = (0..200).filter(|_| probe.syscall(pid, tid).is_none()).count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        assert!(running > 100, "a spinning thread read as running {running} times of 200");
    }
}
