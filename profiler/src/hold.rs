//! Holding a launched target at one instruction of its executable until the caller lets it go,
//! so that the target's start-up runs while ftprof finishes its own (the kernel verifying BPF
//! programs) and none of the program's own code runs before ftprof is ready.
//!
//! The child is seized (`PTRACE_SEIZE`) while it waits at its launch gate and stops at its
//! `exec` (`PTRACE_O_TRACEEXEC`). A breakpoint (`int3`) is written over the instruction at the
//! given file offset of the executable, found in the target's mappings by device and inode, and
//! the child runs on. On release the original byte is put back and the child detached: stopped
//! at the breakpoint, with its instruction pointer moved back onto the instruction; still
//! running, interrupted first (`PTRACE_INTERRUPT`). Signals the child receives while traced are
//! passed on to it. When the breakpoint cannot be set (the file is not mapped at the exec), the
//! child is held at its exec stop instead: never later than a launch that waits before `exec`.
//!
//! Input: the child's pid and a [`HoldAt`]. Output: a [`Hold`] to service and release; it knows
//! when the target stopped where it is held.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Where to hold a launched target: the instruction at file offset `offset` of the executable
/// `file` (the target's mapping of it is found by device and inode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldAt {
    pub file: PathBuf,
    pub offset: u64,
}

/// A launched child seized before its `exec`; see the module docs.
pub struct Hold {
    pid: Pid,
    state: State,
    /// When the target stopped where it is held (its exec, or the breakpoint).
    held_since: Option<Instant>,
    /// Why the breakpoint was not set, when it was not.
    pub fallback: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Seized; its exec not seen yet.
    Seized,
    /// Stopped at its exec.
    AtExec,
    /// Running toward the breakpoint at `addr`; `word` is the original word there.
    Running { addr: u64, word: i64 },
    /// Stopped at the breakpoint.
    AtBreakpoint { addr: u64, word: i64 },
    /// Exited, or released.
    Done,
}

/// A stop (or the exit) of the traced child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Exited,
    /// A signal-delivery stop (`event` 0) or an event stop (`PTRACE_EVENT_*`, `signal` SIGTRAP
    /// or the group-stop's signal).
    Stopped {
        signal: i32,
        event: i32,
    },
}

impl Hold {
    /// Seize `pid` (ftprof's child, held at its launch gate). `None` when ptrace is refused
    /// (Yama, a seccomp filter, a container without the capability): the caller waits before
    /// the child's `exec` instead.
    pub fn seize(pid: i32) -> Option<Hold> {
        let pid = Pid::from_raw(pid);
        let opts = ptrace::Options::PTRACE_O_TRACEEXEC | ptrace::Options::PTRACE_O_EXITKILL;
        ptrace::seize(pid, opts).ok()?;
        Some(Hold { pid, state: State::Seized, held_since: None, fallback: None })
    }

    /// After the child was released: wait for its exec, set the breakpoint and let it run to it
    /// (else keep it stopped at the exec).
    pub fn after_exec(&mut self, at: &HoldAt) {
        loop {
            match self.next_stop(true) {
                None | Some(Stop::Exited) => {
                    self.state = State::Done;
                    return;
                }
                Some(Stop::Stopped { event, .. }) if event == libc::PTRACE_EVENT_EXEC => break,
                Some(Stop::Stopped { signal, .. }) => {
                    // A signal before the exec (the exec failed, or a signal raced it): deliver it.
                    let _ = ptrace::cont(self.pid, Signal::try_from(signal).ok());
                }
            }
        }
        self.state = State::AtExec;
        self.held_since = Some(Instant::now());
        let set = breakpoint_address(self.pid.as_raw(), at).and_then(|addr| {
            let a = addr as ptrace::AddressType;
            let word = ptrace::read(self.pid, a).map_err(|e| format!("reading the instruction at {addr:#x}: {e}"))?;
            let trap = (word & !0xff) | 0xcc;
            ptrace::write(self.pid, a, trap).map_err(|e| format!("writing the breakpoint at {addr:#x}: {e}"))?;
            Ok((addr, word))
        });
        match set {
            Ok((addr, word)) => {
                self.state = State::Running { addr, word };
                self.held_since = None;
                if ptrace::cont(self.pid, None).is_err() {
                    self.state = State::Done;
                }
            }
            Err(why) => self.fallback = Some(why),
        }
    }

    /// Handle the child's pending stops without waiting: a signal is passed on to it, the
    /// breakpoint's trap holds it there; an event stop (a `SIGSTOP` group-stop) ends the hold.
    pub fn service(&mut self) {
        while let State::Running { addr, word } = self.state {
            match self.next_stop(false) {
                None => return,
                Some(Stop::Exited) => self.state = State::Done,
                Some(Stop::Stopped { signal, event: 0 }) if signal == libc::SIGTRAP && self.at(addr) => {
                    self.state = State::AtBreakpoint { addr, word };
                    self.held_since = Some(Instant::now());
                }
                Some(Stop::Stopped { signal, event: 0 }) => {
                    let _ = ptrace::cont(self.pid, Signal::try_from(signal).ok());
                }
                Some(Stop::Stopped { .. }) => {
                    self.restore(addr, word, false);
                    let _ = ptrace::detach(self.pid, None);
                    self.state = State::Done;
                }
            }
        }
    }

    /// Whether the child is stopped where it is held (so far).
    pub fn held_for(&self) -> Option<Duration> {
        self.held_since.map(|t| t.elapsed())
    }

    /// Let the child go: the original instruction back, detached. Returns how long it was held
    /// stopped (zero when it had not reached the breakpoint yet).
    pub fn release(mut self) -> Duration {
        self.finish()
    }

    /// [`Hold::release`], for `Drop` too.
    fn finish(&mut self) -> Duration {
        let held = self.held_for().unwrap_or_default();
        self.service();
        match self.state {
            State::Seized | State::Done => {}
            State::AtExec => {
                let _ = ptrace::detach(self.pid, None);
            }
            State::AtBreakpoint { addr, word } => {
                self.restore(addr, word, true);
                let _ = ptrace::detach(self.pid, None);
            }
            State::Running { addr, word } => {
                // Stopped by the interrupt (an event stop), at the breakpoint, or by a signal
                // (passed on at the detach); gone (nothing to undo). The interrupt's stop comes
                // before a signal already pending: when the breakpoint's `int3` has just run, its
                // SIGTRAP is still to come (detached now, it would kill the target), so the
                // target goes on to that stop first.
                let mut stopped = ptrace::interrupt(self.pid).ok().and_then(|()| self.next_stop(true));
                for attempt in 0..8 {
                    let Some(Stop::Stopped { signal, event }) = stopped else { break };
                    let ran = self.at(addr);
                    if ran && !(event == 0 && signal == libc::SIGTRAP) && attempt < 7 {
                        let pass = (event == 0).then(|| Signal::try_from(signal).ok()).flatten();
                        stopped = ptrace::cont(self.pid, pass).ok().and_then(|()| self.next_stop(true));
                        continue;
                    }
                    self.restore(addr, word, ran);
                    let pass = (event == 0 && !ran).then(|| Signal::try_from(signal).ok()).flatten();
                    let _ = ptrace::detach(self.pid, pass);
                    break;
                }
            }
        }
        self.state = State::Done;
        held
    }

    /// Whether the child is stopped just after the breakpoint at `addr`.
    fn at(&self, addr: u64) -> bool {
        ptrace::getregs(self.pid).is_ok_and(|r| r.rip == addr + 1)
    }

    /// Put the original word back at `addr`; with `rewind`, the instruction pointer too.
    fn restore(&self, addr: u64, word: i64, rewind: bool) {
        let _ = ptrace::write(self.pid, addr as ptrace::AddressType, word);
        if rewind {
            if let Ok(mut r) = ptrace::getregs(self.pid) {
                r.rip = addr;
                let _ = ptrace::setregs(self.pid, r);
            }
        }
    }

    /// The child's next stop (consumed) or its exit (left for the recording loop to reap);
    /// `None` when nothing is pending and `block` is false, or when it is no longer our child.
    fn next_stop(&self, block: bool) -> Option<Stop> {
        let nohang = if block { 0 } else { libc::WNOHANG };
        let peek = libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT | libc::__WALL | nohang;
        loop {
            // SAFETY: `siginfo_t` is plain data (all zeroes valid); waitid writes into it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above, with a pid of our own child.
            let r = unsafe { libc::waitid(libc::P_PID, self.pid.as_raw() as libc::id_t, &mut info, peek) };
            if r < 0 {
                if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                    continue;
                }
                return None;
            }
            // SAFETY: waitid filled `info` for a child event (si_pid 0: none pending).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return None;
            }
            if matches!(info.si_code, libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED) {
                return Some(Stop::Exited);
            }
            // Consume the stop just seen (a traced child has one pending at a time).
            let mut again: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid.as_raw() as libc::id_t,
                    &mut again,
                    libc::WSTOPPED | libc::__WALL | libc::WNOHANG,
                )
            };
            return Some(Stop::Stopped { signal: status & 0xff, event: status >> 8 });
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.state != State::Done {
            self.finish();
        }
    }
}

/// The address of `at` in process `pid`: the executable mapping of `at.file` (same device and
/// inode) that covers its file offset.
fn breakpoint_address(pid: i32, at: &HoldAt) -> Result<u64, String> {
    let meta = std::fs::metadata(&at.file).map_err(|e| format!("{}: {e}", at.file.display()))?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("its mappings: {e}"))?;
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(off), Some(dev), Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| Some((hex(a)?, hex(b)?))) else { continue };
        let Some((dmaj, dmin)) = dev.split_once(':').and_then(|(a, b)| Some((hex(a)?, hex(b)?))) else { continue };
        let (Some(off), Ok(ino)) = (hex(off), ino.parse::<u64>()) else { continue };
        let same = ino == meta.ino() && dmaj == u64::from(major) && dmin == u64::from(minor);
        if same && perms.contains('x') && (off..off + (end - start)).contains(&at.offset) {
            return Ok(start + (at.offset - off));
        }
    }
    Err(format!("{} is not mapped executable at the target's exec", at.file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::Launched;
    use std::time::Instant;

    /// The file offset of `path`'s entry point (its first instruction after the dynamic loader).
    fn entry_offset(path: &std::path::Path) -> u64 {
        let b = std::fs::read(path).unwrap();
        let u16_at = |at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize;
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let (entry, phoff, phentsize, phnum) = (u64_at(24), u64_at(32) as usize, u16_at(54), u16_at(56));
        (0..phnum)
            .map(|i| phoff + i * phentsize)
            .filter(|&ph| u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap()) == 1) // PT_LOAD
            .map(|ph| (u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32)))
            .find(|&(_, vaddr, filesz)| (vaddr..vaddr + filesz).contains(&entry))
            .map(|(offset, vaddr, _)| offset + (entry - vaddr))
            .expect("the entry point lies in a PT_LOAD segment")
    }

    fn state(pid: i32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }

    fn exit_code(pid: i32) -> i32 {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("the target did not exit normally: {other:?}"),
        }
    }

    fn shell() -> std::path::PathBuf {
        std::fs::canonicalize("/bin/sh").unwrap()
    }

    /// Launch `sh -c 'exit 7'` held at `at`; wait until it is held; return it and its hold.
    fn held_shell(at: &HoldAt) -> (i32, Hold) {
        let mut child = Launched::spawn(&["/bin/sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        let mut hold = Hold::seize(child.pid).expect("ptrace of our own child (the tests run as root)");
        child.release().unwrap();
        hold.after_exec(at);
        let deadline = Instant::now() + Duration::from_secs(60);
        while hold.held_for().is_none() {
            hold.service();
            assert!(Instant::now() < deadline, "the target never reached its hold");
            std::thread::sleep(Duration::from_millis(1));
        }
        (child.pid, hold)
    }

    #[test]
    fn holds_at_the_breakpoint_until_released() {
        let sh = shell();
        let at = HoldAt { offset: entry_offset(&sh), file: sh };
        let (pid, hold) = held_shell(&at);
        assert_eq!(hold.fallback, None);
        // Stopped there (traced), and it stays so.
        assert_eq!(state(pid), 't');
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(pid), 't');
        let held = hold.release();
        assert!(held >= Duration::from_millis(50), "{held:?}");
        // The instruction put back, it runs on as if never stopped.
        assert_eq!(exit_code(pid), 7);
    }

    #[test]
    fn a_file_not_mapped_holds_at_the_exec() {
        // Not the launched program: it is never mapped, so the target waits at its exec.
        let at = HoldAt { file: std::fs::canonicalize("/bin/ls").unwrap(), offset: 0x1000 };
        let (pid, hold) = held_shell(&at);
        assert!(hold.fallback.as_deref().is_some_and(|w| w.contains("is not mapped")), "{:?}", hold.fallback);
        assert_eq!(state(pid), 't');
        hold.release();
        assert_eq!(exit_code(pid), 7);
    }

    #[test]
    fn released_before_the_breakpoint_runs_on() {
        // Released while it still runs toward the breakpoint (interrupted, the byte put back).
        let sh = shell();
        let at = HoldAt { offset: entry_offset(&sh), file: sh };
        let mut child = Launched::spawn(&["/bin/sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        let mut hold = Hold::seize(child.pid).unwrap();
        child.release().unwrap();
        hold.after_exec(&at);
        assert_eq!(hold.fallback, None);
        hold.release();
        assert_eq!(exit_code(child.pid), 7);
    }
}
