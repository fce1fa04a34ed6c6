//! Python stacks read at the sample instant (`src/bpf/pystack.bpf.c`).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use libbpf_rs::{MapCore, MapFlags, Object, RingBuffer, RingBufferBuilder};
use symbolizer::python::{PyFrame, PyProcess, PyStack};

use crate::loader::{self, Pod, ProgStats, Refusal};

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pystack.bpf.o"));

/// Frames one record can hold (`PY_MAX_FRAMES` in src/bpf/pystack.h).
pub const MAX_FRAMES: usize = 128;
const FRAME_BUF: u64 = 256;
const TRUNCATED: u32 = 1;
const READ_ERROR: u32 = 2;
const NO_TSTATE: u32 = 4;
const WAKER: u32 = 8;

/// Where the program finds the fields, for one process. Mirrors `struct py_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    pub ts_current_frame: u64,
    pub ts_base_frame: u64,
    pub frame_previous: u32,
    pub frame_executable: u32,
    pub frame_instr_ptr: u32,
    pub frame_owner: u32,
    pub frame_tlbc_index: u32,
    pub frame_read_len: u32,
    pub max_depth: u32,
    pub _pad: u32,
}
// SAFETY: repr(C) integers only; every bit pattern is valid.
unsafe impl Pod for PyOffsets {}

impl PyOffsets {
    /// The offsets of `proc`'s CPython, from its `_Py_DebugOffsets` (the symbolizer's one layout
    /// source); `None` when a field lies past what the program reads per frame.
    pub fn of(proc: &PyProcess, max_depth: u32) -> Option<PyOffsets> {
        let o = &proc.offsets;
        let fields = [o.frame_previous, o.frame_executable, o.frame_instr_ptr, o.frame_owner];
        let tlbc = o.frame_tlbc_index;
        let end = fields.iter().map(|f| f + 8).chain(tlbc.map(|t| t + 4)).max()?;
        if end > FRAME_BUF {
            return None;
        }
        Some(PyOffsets {
            ts_current_frame: o.ts_current_frame,
            ts_base_frame: o.ts_base_frame.unwrap_or(u64::MAX),
            frame_previous: o.frame_previous as u32,
            frame_executable: o.frame_executable as u32,
            frame_instr_ptr: o.frame_instr_ptr as u32,
            frame_owner: o.frame_owner as u32,
            frame_tlbc_index: tlbc.map(|t| t as u32).unwrap_or(u32::MAX),
            // Only up to the owner byte may be past the last 8-byte field.
            frame_read_len: end.max(o.frame_owner + 1) as u32,
            max_depth: max_depth.min(MAX_FRAMES as u32),
            _pad: 0,
        })
    }
}

/// One frame as the program read it. Mirrors `struct py_frame`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyRawFrame {
    pub executable: u64,
    pub instr_ptr: u64,
    pub tlbc_index: i32,
    pub owner: u8,
    pub _pad: [u8; 3],
}
// SAFETY: repr(C) integers only; every bit pattern is valid.
unsafe impl Pod for PyRawFrame {}

/// The header of `struct py_sample`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawHeader {
    time: u64,
    tid: u32,
    tgid: u32,
    user_ip: u64,
    user_sp: u64,
    tstate: u64,
    depth: u32,
    flags: u32,
    wait_addr: u64,
    wakee: u32,
    _pad: u32,
}
// SAFETY: repr(C) integers only; every bit pattern is valid.
unsafe impl Pod for RawHeader {}

/// The wake-up a waker record was taken at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakeup {
    /// The thread woken (it was blocked in a futex wait).
    pub wakee: u32,
    /// The address it waited on, by the rule of [`crate::WaitKind::Futex`].
    pub addr: u64,
}

/// One thread's Python frame chain at one sample instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PySample {
    /// CLOCK_MONOTONIC ns, read by the program just before perf takes its sample time.
    pub time_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    /// The thread's user ip and sp (at its last kernel entry when sampled in the kernel).
    pub user_ip: u64,
    pub user_sp: u64,
    /// The thread state the walk started from (0 when the thread has none in the map).
    pub tstate: u64,
    /// Innermost first.
    pub frames: Vec<PyRawFrame>,
    /// The depth limit was reached with frames left.
    pub truncated: bool,
    /// A frame could not be read: the chain ends early.
    pub read_error: bool,
    /// The thread has no thread state in the map (not a Python thread, or not registered yet).
    pub no_tstate: bool,
    /// A waker record: `tid`'s stack when it woke `wakee` (the release site), not a perf sample.
    pub waker_of: Option<Wakeup>,
}

impl PySample {
    /// Parse one ring record; `None` when it is shorter than its header says.
    pub fn parse(b: &[u8]) -> Option<PySample> {
        let h = RawHeader::from_bytes(b)?;
        let hdr = std::mem::size_of::<RawHeader>();
        let fsz = std::mem::size_of::<PyRawFrame>();
        let depth = (h.depth as usize).min(MAX_FRAMES);
        let frames = (0..depth)
            .map(|i| PyRawFrame::from_bytes(b.get(hdr + i * fsz..hdr + (i + 1) * fsz)?))
            .collect::<Option<Vec<_>>>()?;
        Some(PySample {
            time_ns: h.time,
            tid: h.tid,
            tgid: h.tgid,
            user_ip: h.user_ip,
            user_sp: h.user_sp,
            tstate: h.tstate,
            frames,
            truncated: h.flags & TRUNCATED != 0,
            read_error: h.flags & READ_ERROR != 0,
            no_tstate: h.flags & NO_TSTATE != 0,
            waker_of: (h.flags & WAKER != 0).then_some(Wakeup { wakee: h.wakee, addr: h.wait_addr }),
        })
    }

    /// The stack as the symbolizer shows it: code objects named (cached and checked by the
    /// symbolizer), entry frames kept. A frame that is not a code object ends it (truncated).
    pub fn to_stack(&self, proc: &mut PyProcess) -> PyStack {
        let mut stack = PyStack { frames: Vec::new(), truncated: self.truncated || self.read_error, state: -1 };
        for f in &self.frames {
            match proc.frame_from_raw(f.executable, f.instr_ptr, f.tlbc_index, f.owner) {
                Ok(Some(mut frame)) => {
                    // The innermost Python frame's instruction says what it was touching.
                    let innermost = !stack.frames.iter().any(|g| matches!(g, PyFrame::Code { .. }));
                    if let (true, PyFrame::Code { instr, .. }) = (innermost, &mut frame) {
                        *instr = proc.code_unit(f.instr_ptr);
                    }
                    stack.frames.push(frame)
                }
                Ok(None) => {}
                Err(_) => {
                    stack.truncated = true;
                    break;
                }
            }
        }
        stack
    }

    /// Qualified names of the Python frames, innermost first (entry frames left out).
    pub fn names(&self, proc: &mut PyProcess) -> Vec<String> {
        self.to_stack(proc)
            .frames
            .iter()
            .filter_map(|f| match f {
                PyFrame::Code { code, .. } => Some(code.qualname.clone()),
                PyFrame::Entry => None,
            })
            .collect()
    }
}

/// Which of `pending` (one thread's records, oldest first) belongs to the perf sample taken at
/// `time_ns` with user registers (`ip`, `sp`): the record with the same registers nearest in
/// time, within `window_ns` either side (perf reads its sample time a few µs before the program
/// runs, on the same clock). Only the match is removed: samples come from per-CPU rings, so a
/// thread that moved between CPUs has its samples drained out of time order, and an older
/// record may still find its sample later (see [`Joiner`] for the ones that never do).
pub fn join_sample(
    pending: &mut VecDeque<PySample>,
    time_ns: u64,
    ip: u64,
    sp: u64,
    window_ns: u64,
) -> Option<PySample> {
    let idx = pending
        .iter()
        .enumerate()
        .filter(|(_, s)| s.user_ip == ip && s.user_sp == sp && s.time_ns.abs_diff(time_ns) <= window_ns)
        .min_by_key(|(_, s)| s.time_ns.abs_diff(time_ns))?
        .0;
    pending.remove(idx)
}

/// Records waiting for their perf samples, per thread, and the waker records apart.
///
/// Feed it what [`PyStacks::drain`] returns before draining the perf rings; then
/// [`Joiner::take`] gives each perf sample its record. A record whose sample never comes (lost,
/// filtered) is dropped once it is [`Joiner::STALE_NS`] older than a sample of its thread, or by
/// [`Joiner::expire`], and counted in `unmatched`.
#[derive(Default)]
pub struct Joiner {
    pending: std::collections::HashMap<u32, VecDeque<PySample>>,
    wakers: Vec<PySample>,
    /// Records dropped without a sample.
    pub unmatched: u64,
}

impl Joiner {
    /// Window either side of the perf sample time: perf reads its time a few µs before the
    /// program runs (on older kernels just after); 5 ms leaves room for a virtual CPU
    /// descheduled in between. Within it the nearest record wins: another record of the thread
    /// with the same registers (a tight loop) lies a sampling period away, so it is only taken
    /// when the sample's own record is missing.
    pub const WINDOW_NS: u64 = 5_000_000;
    /// A record this much older than a sample of its thread has lost its sample: the rings are
    /// drained at least every 50 ms, so out-of-order samples are never that far apart.
    pub const STALE_NS: u64 = 1_000_000_000;

    pub fn feed(&mut self, records: Vec<PySample>) {
        for r in records {
            if r.waker_of.is_some() {
                self.wakers.push(r);
            } else {
                self.pending.entry(r.tid).or_default().push_back(r);
            }
        }
    }

    /// The record of the perf sample of `tid` at `time_ns` with user registers (`ip`, `sp`).
    pub fn take(&mut self, tid: u32, time_ns: u64, ip: u64, sp: u64) -> Option<PySample> {
        let q = self.pending.get_mut(&tid)?;
        let found = join_sample(q, time_ns, ip, sp, Self::WINDOW_NS);
        let stale = q.iter().take_while(|r| r.time_ns.saturating_add(Self::STALE_NS) < time_ns).count();
        q.drain(..stale);
        self.unmatched += stale as u64;
        found
    }

    /// The records of `tid` still waiting for their samples, oldest first.
    pub fn pending(&self, tid: u32) -> impl Iterator<Item = &PySample> {
        self.pending.get(&tid).into_iter().flatten()
    }

    /// The waker records fed so far (taken out).
    pub fn take_wakers(&mut self) -> Vec<PySample> {
        std::mem::take(&mut self.wakers)
    }

    /// Drop records older than `before_ns` (their samples are not coming); counted in
    /// `unmatched`.
    pub fn expire(&mut self, before_ns: u64) {
        for q in self.pending.values_mut() {
            let n = q.iter().take_while(|r| r.time_ns < before_ns).count();
            q.drain(..n);
            self.unmatched += n as u64;
        }
        self.pending.retain(|_, q| !q.is_empty());
    }
}

/// The loaded stack-walking program and its maps and ring.
pub struct PyStacks {
    obj: Object,
    waker_link: Option<libbpf_rs::Link>,
    ring: RingBuffer<'static>,
    queue: Arc<Mutex<VecDeque<PySample>>>,
}

impl PyStacks {
    /// Load and verify the program. It runs once attached to sampling events
    /// ([`PyStacks::attach`]), for the processes given to [`PyStacks::set_process`].
    pub fn load() -> Result<PyStacks, Refusal> {
        let obj = loader::load("pystack", OBJECT, |_| {})?;
        let queue: Arc<Mutex<VecDeque<PySample>>> = Arc::default();
        let ring = {
            let map = obj
                .maps()
                .find(|m| m.name() == "py_samples")
                .ok_or_else(|| Refusal::Map { map: "py_samples".into(), reason: "not in the object".into() })?;
            let q = queue.clone();
            let mut b = RingBufferBuilder::new();
            b.add(&map, move |data: &[u8]| {
                if let (Some(s), Ok(mut q)) = (PySample::parse(data), q.lock()) {
                    q.push_back(s);
                }
                0
            })
            .map_err(|e| Refusal::Map { map: "py_samples".into(), reason: e.to_string() })?;
            b.build().map_err(|e| Refusal::Map { map: "py_samples".into(), reason: e.to_string() })?
        };
        Ok(PyStacks { obj, waker_link: None, ring, queue })
    }

    fn map(&self, name: &str) -> Result<libbpf_rs::Map<'_>, Refusal> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| Refusal::Map { map: name.into(), reason: "not in the object".into() })
    }

    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), Refusal> {
        self.map(map)?
            .update(key, value, MapFlags::ANY)
            .map_err(|e| Refusal::Map { map: map.into(), reason: e.to_string() })
    }

    /// Attach the program to a sampling perf event (`PERF_EVENT_IOC_SET_BPF`); it stays attached
    /// until the event is closed, and is inherited with it. The event is not enabled here.
    pub fn attach(&self, perf_fd: BorrowedFd<'_>) -> Result<(), Refusal> {
        let prog = self
            .obj
            .progs()
            .next()
            .ok_or_else(|| Refusal::Attach { program: "ftprof_pystack".into(), reason: "not in the object".into() })?;
        // SAFETY: SET_BPF takes a program descriptor by value; both descriptors are live.
        let rc = unsafe { perf_event_open_sys::ioctls::SET_BPF(perf_fd.as_raw_fd(), prog.as_fd().as_raw_fd() as u32) };
        if rc < 0 {
            return Err(Refusal::Attach {
                program: "ftprof_pystack".into(),
                reason: format!("PERF_EVENT_IOC_SET_BPF: {}", std::io::Error::last_os_error()),
            });
        }
        Ok(())
    }

    /// Also record the waker's stack when a thread of a walked process wakes another one blocked
    /// in a futex wait (`tp_btf/sched_waking`), at most `per_cpu_per_sec` records per CPU and
    /// second (0 turns it off; wake-ups past the budget are counted in
    /// [`PyStacks::wakers_skipped`]).
    pub fn record_wakers(&mut self, per_cpu_per_sec: u64) -> Result<(), Refusal> {
        if self.waker_link.is_none() && per_cpu_per_sec > 0 {
            let prog = self.obj.progs_mut().find(|p| p.name() == "ftprof_waker").ok_or_else(|| Refusal::Attach {
                program: "ftprof_waker".into(),
                reason: "not in the object".into(),
            })?;
            let link =
                prog.attach().map_err(|e| Refusal::Attach { program: "ftprof_waker".into(), reason: e.to_string() })?;
            self.waker_link = Some(link);
        }
        self.update("py_waker_cfg", 0u32.as_bytes(), per_cpu_per_sec.as_bytes())
    }

    /// Wake-ups not recorded because the budget was spent.
    pub fn wakers_skipped(&self) -> u64 {
        self.counter("py_waker_skipped")
    }

    /// Walk the stacks of process `tgid`'s threads with these offsets.
    pub fn set_process(&self, tgid: u32, offsets: &PyOffsets) -> Result<(), Refusal> {
        self.update("py_procs", tgid.as_bytes(), offsets.as_bytes())
    }

    pub fn forget_process(&self, tgid: u32) -> Result<(), Refusal> {
        let _ = self.map("py_procs")?.delete(tgid.as_bytes());
        Ok(())
    }

    /// Thread `tid`'s `PyThreadState*` (keep current: a new thread, or a thread state reused).
    pub fn set_thread(&self, tid: u32, tstate: u64) -> Result<(), Refusal> {
        self.update("py_threads", tid.as_bytes(), tstate.as_bytes())
    }

    pub fn forget_thread(&self, tid: u32) -> Result<(), Refusal> {
        let _ = self.map("py_threads")?.delete(tid.as_bytes());
        Ok(())
    }

    /// Register every thread state of `proc` (its thread list, read by the symbolizer); returns
    /// the threads registered.
    pub fn sync_threads(&self, proc: &PyProcess) -> Result<Vec<u32>, Refusal> {
        let threads = proc.threads().map_err(|e| Refusal::Map { map: "py_threads".into(), reason: e.to_string() })?;
        for t in &threads {
            self.set_thread(t.native_tid, t.tstate)?;
        }
        Ok(threads.iter().map(|t| t.native_tid).collect())
    }

    /// Every record the ring holds now, oldest first.
    pub fn drain(&self) -> Vec<PySample> {
        let _ = self.ring.consume();
        self.queue.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default()
    }

    /// Records the ring had no room for.
    pub fn lost(&self) -> u64 {
        self.counter("py_lost")
    }

    fn counter(&self, name: &str) -> u64 {
        self.map(name)
            .ok()
            .and_then(|m| m.lookup(0u32.as_bytes(), MapFlags::ANY).ok().flatten())
            .and_then(|v| u64::from_bytes(&v))
            .unwrap_or(0)
    }

    /// Runs and run time of the program (counted while a [`crate::StatsGuard`] is held).
    pub fn prog_stats(&self) -> Vec<ProgStats> {
        loader::prog_stats(&self.obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time: u64, ip: u64, sp: u64) -> PySample {
        PySample { time_ns: time, tid: 7, user_ip: ip, user_sp: sp, ..Default::default() }
    }

    #[test]
    fn joiner_pairs_per_thread_and_counts_what_it_drops() {
        let sec = Joiner::STALE_NS;
        let mut j = Joiner::default();
        let mut w = rec(150, 5, 5);
        w.waker_of = Some(Wakeup { wakee: 9, addr: 1 });
        let mut other = rec(120, 1, 1);
        other.tid = 8;
        j.feed(vec![rec(100, 1, 1), other, w, rec(200, 2, 2), rec(sec + 300, 3, 3)]);
        assert_eq!(j.take_wakers().len(), 1);
        // Samples out of time order (two CPUs' rings): each finds its record.
        assert_eq!(j.take(7, 199, 2, 2).map(|r| r.time_ns), Some(200));
        assert_eq!(j.take(7, 98, 1, 1).map(|r| r.time_ns), Some(100));
        assert_eq!(j.unmatched, 0);
        // Thread 8's record is not thread 7's.
        assert_eq!(j.take(7, 120, 1, 1), None);
        assert_eq!(j.take(9, 120, 1, 1), None);
        // A record whose sample never came is dropped once a sample a second later is taken.
        j.feed(vec![rec(400, 4, 4)]);
        assert_eq!(j.take(7, sec + 299, 3, 3).map(|r| r.time_ns), Some(sec + 300));
        assert_eq!(j.pending(7).count(), 1, "400 is not a second older yet");
        assert_eq!(j.take(7, sec + 401, 9, 9), None);
        assert_eq!(j.pending(7).count(), 0);
        assert_eq!(j.unmatched, 1);
        j.expire(1_000);
        assert_eq!(j.unmatched, 2, "thread 8's record expired");
        assert_eq!(j.take(8, 120, 1, 1), None);
    }

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<PyOffsets>(), 2 * 8 + 8 * 4);
        assert_eq!(std::mem::size_of::<PyRawFrame>(), 24);
        assert_eq!(std::mem::size_of::<RawHeader>(), 64);
    }

    #[test]
    fn parse_reads_the_frames_the_header_counts() {
        let h = RawHeader {
            time: 5,
            tid: 7,
            tgid: 6,
            user_ip: 1,
            user_sp: 2,
            tstate: 3,
            depth: 2,
            flags: TRUNCATED | WAKER,
            wait_addr: 0x1234,
            wakee: 8,
            _pad: 0,
        };
        let f1 = PyRawFrame { executable: 0x10, instr_ptr: 0x20, tlbc_index: 0, owner: 0, _pad: [0; 3] };
        let f2 = PyRawFrame { executable: 0, instr_ptr: 0, tlbc_index: 0, owner: 3, _pad: [0; 3] };
        let mut b = h.as_bytes().to_vec();
        b.extend_from_slice(f1.as_bytes());
        b.extend_from_slice(f2.as_bytes());
        let s = PySample::parse(&b).unwrap();
        assert_eq!((s.time_ns, s.tid, s.tgid, s.tstate), (5, 7, 6, 3));
        assert_eq!(s.frames, vec![f1, f2]);
        assert!(s.truncated && !s.read_error && !s.no_tstate);
        assert_eq!(s.waker_of, Some(Wakeup { wakee: 8, addr: 0x1234 }));
        // A record cut short is refused, not read past its end.
        assert_eq!(PySample::parse(&b[..b.len() - 1]), None);
        assert_eq!(PySample::parse(&b[..10]), None);
    }

    #[test]
    fn join_takes_the_nearest_matching_record_only() {
        let mut q: VecDeque<PySample> = [rec(100, 1, 1), rec(200, 2, 2), rec(300, 3, 3), rec(400, 4, 4)].into();
        // The sample at 296 (perf's time precedes the program's) with registers (3, 3): record
        // 300; the older ones stay (their samples may come later, from another CPU's ring).
        assert_eq!(join_sample(&mut q, 296, 3, 3, 50).map(|s| s.time_ns), Some(300));
        assert_eq!(q.iter().map(|s| s.time_ns).collect::<Vec<_>>(), vec![100, 200, 400]);
        assert_eq!(join_sample(&mut q, 198, 2, 2, 50).map(|s| s.time_ns), Some(200));
        // Registers that match no record, a record outside the window either side.
        assert_eq!(join_sample(&mut q, 400, 9, 9, 50), None);
        assert_eq!(join_sample(&mut q, 300, 4, 4, 50), None);
        assert_eq!(join_sample(&mut q, 500, 4, 4, 50), None);
        assert_eq!(q.len(), 2);
        assert_eq!(join_sample(&mut q, 410, 4, 4, 10).map(|s| s.time_ns), Some(400));
        assert_eq!(q.iter().map(|s| s.time_ns).collect::<Vec<_>>(), vec![100]);
        // Two records with the same registers (a tight loop): the nearest one.
        let mut q: VecDeque<PySample> = [rec(100, 1, 1), rec(190, 1, 1), rec(260, 1, 1)].into();
        assert_eq!(join_sample(&mut q, 185, 1, 1, 100).map(|s| s.time_ns), Some(190));
        assert_eq!(q.iter().map(|s| s.time_ns).collect::<Vec<_>>(), vec![100, 260]);
    }
}
