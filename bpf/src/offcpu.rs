//! Exact off-CPU accounting in the kernel (`src/bpf/offcpu.bpf.c`).

use libbpf_rs::{Link, MapCore, MapFlags, Object};

use crate::loader::{self, Pod, ProgStats, Refusal};

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/offcpu.bpf.o"));

/// Mirrors `struct thread_times` (src/bpf/offcpu.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawTimes {
    oncpu_ns: u64,
    blocked_ns: u64,
    runq_ns: u64,
    runq_max_ns: u64,
    blocked_count: u64,
    runq_count: u64,
    since: u64,
    wait_addr: u64,
    futex: u64,
    wake_runq_ns: u64,
    user_ip: u64,
    user_sp: u64,
    user_bp: u64,
    wait_kind: u32,
    state: u32,
    tgid: u32,
    after_wake: u32,
}
// SAFETY: repr(C) integers only; every bit pattern is valid.
unsafe impl Pod for RawTimes {}

/// Mirrors `struct wait_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawWaitKey {
    tid: u32,
    kind: u32,
    addr: u64,
}
// SAFETY: repr(C) integers only, no padding; every bit pattern is valid.
unsafe impl Pod for RawWaitKey {}

/// Mirrors `struct wait_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawWaitVal {
    total_ns: u64,
    count: u64,
    max_ns: u64,
    futex: u64,
    runq_ns: u64,
}
// SAFETY: repr(C) integers only; every bit pattern is valid.
unsafe impl Pod for RawWaitVal {}

/// What a thread is doing now, as the scheduler events last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// No event seen yet.
    Unknown,
    OnCpu,
    /// Switched out while not runnable (waiting for something).
    Blocked,
    /// Woken or preempted, waiting for a CPU.
    Runnable,
}

impl ThreadState {
    fn from_raw(v: u32) -> ThreadState {
        match v {
            1 => ThreadState::OnCpu,
            2 => ThreadState::Blocked,
            3 => ThreadState::Runnable,
            _ => ThreadState::Unknown,
        }
    }
}

/// What a blocked period waited in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitKind {
    /// A blocking futex: `addr` is the parked-on address (for a CPython parking-lot wait entry,
    /// its `addr` field: the PyMutex or object mutex), else the futex word itself.
    Futex { addr: u64 },
    /// Another system call, by number (x86-64).
    Syscall { nr: u64 },
    /// Not in a system call (a page fault, a kernel-internal wait).
    NotInSyscall,
}

impl WaitKind {
    fn from_raw(kind: u32, addr: u64) -> WaitKind {
        match kind {
            1 => WaitKind::Futex { addr },
            2 => WaitKind::Syscall { nr: addr },
            _ => WaitKind::NotInSyscall,
        }
    }
}

/// One thread's scheduler times since the accounting started (or since it was first seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadTimes {
    pub tid: u32,
    pub tgid: u32,
    /// Time on a CPU, finished periods only.
    pub oncpu_ns: u64,
    /// Time blocked, finished waits only (from switch-out to wake-up).
    pub blocked_ns: u64,
    /// Time runnable but not on a CPU, finished periods only (from wake-up or preemption to
    /// switch-in).
    pub runq_ns: u64,
    /// Of `runq_ns`, the periods that followed a wake-up (the rest followed a preemption).
    pub wake_runq_ns: u64,
    /// The runnable period in progress (if `state` is `Runnable`) followed a wake-up.
    pub after_wake: bool,
    /// User registers (ip, sp, bp) saved when it was last preempted or yielded.
    pub preempted_at: (u64, u64, u64),
    /// Longest single runnable period.
    pub runq_max_ns: u64,
    /// Times the thread blocked.
    pub blocked_count: u64,
    /// Times the thread became runnable (woken or preempted).
    pub runq_count: u64,
    pub state: ThreadState,
    /// CLOCK_MONOTONIC ns when `state` began (see [`crate::now_ns`]).
    pub since_ns: u64,
    /// What the thread waits in now (if `state` is `Blocked`) or last waited in.
    pub wait: WaitKind,
}

impl ThreadTimes {
    /// Blocked time including the wait in progress at `now_ns`.
    pub fn blocked_at(&self, now_ns: u64) -> u64 {
        self.blocked_ns + self.ongoing(ThreadState::Blocked, now_ns)
    }
    /// Runnable time including the period in progress at `now_ns`.
    pub fn runq_at(&self, now_ns: u64) -> u64 {
        self.runq_ns + self.ongoing(ThreadState::Runnable, now_ns)
    }
    /// Runnable time after wake-ups including the period in progress at `now_ns`.
    pub fn wake_runq_at(&self, now_ns: u64) -> u64 {
        self.wake_runq_ns + if self.after_wake { self.ongoing(ThreadState::Runnable, now_ns) } else { 0 }
    }
    /// On-CPU time including the period in progress at `now_ns`.
    pub fn oncpu_at(&self, now_ns: u64) -> u64 {
        self.oncpu_ns + self.ongoing(ThreadState::OnCpu, now_ns)
    }
    fn ongoing(&self, state: ThreadState, now_ns: u64) -> u64 {
        if self.state == state {
            now_ns.saturating_sub(self.since_ns)
        } else {
            0
        }
    }
}

/// Blocked time of one thread in one kind of wait at one address (finished waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub tid: u32,
    pub kind: WaitKind,
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
    /// The futex word of the last such wait (0 when not a futex wait).
    pub futex: u64,
    /// Time runnable after the wake-ups that ended these waits, until back on a CPU (finished
    /// periods only).
    pub runq_ns: u64,
}

impl Wait {
    fn from_raw(k: &RawWaitKey, v: &RawWaitVal) -> Wait {
        Wait {
            tid: k.tid,
            kind: WaitKind::from_raw(k.kind, k.addr),
            total_ns: v.total_ns,
            count: v.count,
            max_ns: v.max_ns,
            futex: v.futex,
            runq_ns: v.runq_ns,
        }
    }
}

/// Events the programs could not account; all zero in a complete measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuLost {
    /// A target thread not accounted because the thread map was full.
    pub threads_full: u64,
    /// A finished wait not added to `waits` because the map was full (still in the thread's total).
    pub waits_full: u64,
    /// A thread switched in from a blocked state with no wake-up seen (its wait is not counted).
    pub no_wakeup: u64,
    /// A wake-up of a thread whose wait began before the accounting (not counted).
    pub unseen_block: u64,
}

/// The loaded and attached off-CPU programs. Dropping it detaches them.
pub struct OffCpu {
    obj: Object,
    _links: Vec<Link>,
}

impl OffCpu {
    /// Load, verify and attach the programs (`tp_btf/sched_switch`, `sched_wakeup`,
    /// `sched_wakeup_new`). They account nothing until [`OffCpu::add_target`].
    pub fn start() -> Result<OffCpu, Refusal> {
        let obj = loader::load("offcpu", OBJECT, |_| {})?;
        let mut links = Vec::new();
        for prog in obj.progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            links.push(prog.attach().map_err(|e| Refusal::Attach { program: name, reason: e.to_string() })?);
        }
        Ok(OffCpu { obj, _links: links })
    }

    fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>, Refusal> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| Refusal::Map { map: name.into(), reason: "not in the object".into() })
    }

    /// Account the threads of process `tgid` (existing and future ones) from now on.
    pub fn add_target(&self, tgid: u32) -> Result<(), Refusal> {
        self.map("targets")?
            .update(tgid.as_bytes(), 1u8.as_bytes(), MapFlags::ANY)
            .map_err(|e| Refusal::Map { map: "targets".into(), reason: e.to_string() })
    }

    /// Stop accounting process `tgid` (its threads' totals stay until [`OffCpu::forget_thread`]).
    pub fn remove_target(&self, tgid: u32) -> Result<(), Refusal> {
        let _ = self.map("targets")?.delete(tgid.as_bytes());
        Ok(())
    }

    /// Totals of every thread seen.
    pub fn threads(&self) -> Result<Vec<ThreadTimes>, Refusal> {
        let map = self.map("threads")?;
        let mut out = Vec::new();
        for key in map.keys() {
            if let Some(t) = self.thread_from(&map, &key) {
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.tid);
        Ok(out)
    }

    /// Totals of one thread, if it has been seen.
    pub fn thread(&self, tid: u32) -> Result<Option<ThreadTimes>, Refusal> {
        let map = self.map("threads")?;
        Ok(self.thread_from(&map, tid.as_bytes()))
    }

    fn thread_from(&self, map: &libbpf_rs::Map<'_>, key: &[u8]) -> Option<ThreadTimes> {
        let tid = u32::from_bytes(key)?;
        let raw = RawTimes::from_bytes(&map.lookup(key, MapFlags::ANY).ok()??)?;
        Some(ThreadTimes {
            tid,
            tgid: raw.tgid,
            oncpu_ns: raw.oncpu_ns,
            blocked_ns: raw.blocked_ns,
            runq_ns: raw.runq_ns,
            wake_runq_ns: raw.wake_runq_ns,
            after_wake: raw.after_wake != 0,
            preempted_at: (raw.user_ip, raw.user_sp, raw.user_bp),
            runq_max_ns: raw.runq_max_ns,
            blocked_count: raw.blocked_count,
            runq_count: raw.runq_count,
            state: ThreadState::from_raw(raw.state),
            since_ns: raw.since,
            wait: WaitKind::from_raw(raw.wait_kind, raw.wait_addr),
        })
    }

    /// Every (thread, kind, address) with finished waits.
    pub fn waits(&self) -> Result<Vec<Wait>, Refusal> {
        let map = self.map("waits")?;
        let mut out = Vec::new();
        for key in map.keys() {
            let (Some(k), Ok(Some(v))) = (RawWaitKey::from_bytes(&key), map.lookup(&key, MapFlags::ANY)) else {
                continue;
            };
            let Some(v) = RawWaitVal::from_bytes(&v) else { continue };
            out.push(Wait::from_raw(&k, &v));
        }
        out.sort_by_key(|w| (w.tid, w.kind));
        Ok(out)
    }

    /// The thread's scheduler accounting in the shape of `/proc/PID/task/TID/schedstat`, exact
    /// and at `now_ns` (periods in progress included): on-CPU time, runnable-but-waiting time
    /// (which, unlike the kernel's run delay on 6.12+, never includes blocked time) and the
    /// number of times it became runnable. A drop-in for `ThreadSource::schedstat`.
    pub fn schedstat(&self, tid: u32, now_ns: u64) -> Result<Option<profiler::threads::SchedStat>, Refusal> {
        Ok(self.thread(tid)?.map(|t| profiler::threads::SchedStat {
            run_ns: t.oncpu_at(now_ns),
            runqueue_ns: t.runq_at(now_ns),
            timeslices: t.runq_count,
            woken_runqueue_ns: t.wake_runq_at(now_ns),
        }))
    }

    /// Remove a thread's totals and waits (an exited thread), returning its waits.
    pub fn take_thread(&self, tid: u32) -> Result<Vec<Wait>, Refusal> {
        let _ = self.map("threads")?.delete(tid.as_bytes());
        let map = self.map("waits")?;
        let keys: Vec<Vec<u8>> =
            map.keys().filter(|k| RawWaitKey::from_bytes(k).is_some_and(|k| k.tid == tid)).collect();
        let mut out = Vec::new();
        for key in keys {
            if let (Some(k), Ok(Some(v))) = (RawWaitKey::from_bytes(&key), map.lookup(&key, MapFlags::ANY)) {
                if let Some(v) = RawWaitVal::from_bytes(&v) {
                    out.push(Wait::from_raw(&k, &v));
                }
            }
            let _ = map.delete(&key);
        }
        Ok(out)
    }

    /// Remove a thread's totals and waits (an exited thread, once read).
    pub fn forget_thread(&self, tid: u32) -> Result<(), Refusal> {
        let _ = self.map("threads")?.delete(tid.as_bytes());
        let waits = self.map("waits")?;
        let keys: Vec<Vec<u8>> =
            waits.keys().filter(|k| RawWaitKey::from_bytes(k).is_some_and(|k| k.tid == tid)).collect();
        for k in keys {
            let _ = waits.delete(&k);
        }
        Ok(())
    }

    /// What could not be accounted so far.
    pub fn lost(&self) -> Result<OffCpuLost, Refusal> {
        let map = self.map("stats")?;
        let at = |i: u32| {
            map.lookup(i.as_bytes(), MapFlags::ANY).ok().flatten().and_then(|v| u64::from_bytes(&v)).unwrap_or(0)
        };
        Ok(OffCpuLost { threads_full: at(0), waits_full: at(1), no_wakeup: at(2), unseen_block: at(3) })
    }

    /// Runs and run time of each program (counted while a [`crate::StatsGuard`] is held).
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        loader::prog_stats(&self.obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_layouts_match_the_c_structs() {
        // src/bpf/offcpu.h: 13 u64 + 4 u32; key u32 u32 u64; value 5 u64.
        assert_eq!(std::mem::size_of::<RawTimes>(), 13 * 8 + 4 * 4);
        assert_eq!(std::mem::size_of::<RawWaitKey>(), 16);
        assert_eq!(std::mem::size_of::<RawWaitVal>(), 40);
    }

    #[test]
    fn ongoing_periods_count_only_in_their_state() {
        let t = ThreadTimes {
            tid: 1,
            tgid: 1,
            oncpu_ns: 10,
            blocked_ns: 100,
            runq_ns: 1000,
            wake_runq_ns: 600,
            after_wake: false,
            preempted_at: (0, 0, 0),
            runq_max_ns: 0,
            blocked_count: 1,
            runq_count: 1,
            state: ThreadState::Blocked,
            since_ns: 5_000,
            wait: WaitKind::Futex { addr: 0x1000 },
        };
        assert_eq!(t.blocked_at(5_250), 350);
        assert_eq!(t.runq_at(5_250), 1000);
        assert_eq!(t.wake_runq_at(5_250), 600);
        assert_eq!(t.oncpu_at(5_250), 10);
        // A clock read before `since` (another CPU's event raced the read) adds nothing.
        assert_eq!(t.blocked_at(4_000), 100);
        assert_eq!(WaitKind::from_raw(1, 7), WaitKind::Futex { addr: 7 });
        assert_eq!(WaitKind::from_raw(2, 7), WaitKind::Syscall { nr: 7 });
        assert_eq!(WaitKind::from_raw(3, 0), WaitKind::NotInSyscall);
        assert_eq!(ThreadState::from_raw(9), ThreadState::Unknown);
    }
}
