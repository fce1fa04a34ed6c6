//! Parsing of perf ring-buffer records into owned [`Record`]s.

/// Registers captured with every sample (x86-64 `PERF_REG_X86_*` order of the mask below).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub ax: u64,
    pub bx: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub bp: u64,
    pub sp: u64,
    pub ip: u64,
}

/// `sample_regs_user` mask: AX BX CX DX SI DI BP SP IP (bits 0..=8).
pub const REGS_MASK: u64 = 0x1ff;

/// Which event produced a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleSource {
    /// Periodic cpu-clock sample (the thread was running).
    CpuClock,
    /// The thread was switched out (it blocked, yielded or was preempted).
    SwitchOut,
}

/// One sample taken from the target.
#[derive(Clone, Debug)]
pub struct Sample {
    pub source: SampleSource,
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time: u64,
    pub cpu: u32,
    pub period: u64,
    pub ip: u64,
    /// User registers; `None` when the sample hit a kernel thread or no user context.
    pub regs: Option<Regs>,
    /// Copy of the user stack starting at `regs.sp` (only the bytes the kernel filled in).
    pub stack: Vec<u8>,
    /// Kernel or user mode at the sample (PERF_RECORD_MISC_KERNEL).
    pub kernel: bool,
    /// Kernel call chain, leaf first (empty in user mode or when kernel sampling is not allowed).
    pub kernel_stack: Vec<u64>,
}

/// An executable mapping created in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mmap {
    pub pid: u32,
    pub tid: u32,
    pub start: u64,
    pub len: u64,
    pub pgoff: u64,
    pub path: String,
    pub executable: bool,
}

/// Everything the collector reports.
#[derive(Clone, Debug)]
pub enum Record {
    Sample(Sample),
    Mmap(Mmap),
    Comm {
        pid: u32,
        tid: u32,
        name: String,
        exec: bool,
    },
    Fork {
        pid: u32,
        ppid: u32,
        tid: u32,
        ptid: u32,
        time: u64,
    },
    Exit {
        pid: u32,
        tid: u32,
        time: u64,
    },
    /// The kernel dropped `count` records of this ring (it was full); `time` is when it could
    /// write again.
    Lost {
        count: u64,
        time: u64,
        source: SampleSource,
    },
    /// Every record stamped at or before `upto` (CLOCK_MONOTONIC ns) has been delivered: a
    /// consumer that orders records of different CPUs by time can process up to there.
    Drained {
        upto: u64,
    },
    /// A thread was switched in or out of a CPU (PERF_RECORD_SWITCH).
    Switch {
        pid: u32,
        tid: u32,
        time: u64,
        out: bool,
        preempt: bool,
    },
}

const PERF_RECORD_MMAP: u32 = 1;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_SAMPLE: u32 = 9;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_SWITCH: u32 = 14;
const PERF_RECORD_MISC_SWITCH_OUT: u16 = 1 << 13;
const PERF_RECORD_MISC_SWITCH_OUT_PREEMPT: u16 = 1 << 14;
const PERF_RECORD_MISC_CPUMODE_MASK: u16 = 7;
const PERF_RECORD_MISC_KERNEL: u16 = 1;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;
const PROT_EXEC: u32 = 4;

/// Little cursor over a record body.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    /// The next `n` bytes (None past the end; `n` comes from the record and may be anything).
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let v = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn cstr(&mut self) -> String {
        let rest = &self.b[self.pos.min(self.b.len())..];
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }
}

/// The body of a `PERF_RECORD_SAMPLE` (after its header), as laid out by `sample_type`.
fn parse_sample(c: &mut Cur<'_>, misc: u16, sample_type: u64, source: SampleSource) -> Option<Record> {
    use perf_event_open_sys::bindings as b;
    let st = sample_type;
    let has = |f: u32| st & f as u64 != 0;
    if has(b::PERF_SAMPLE_IDENTIFIER) {
        c.u64()?;
    }
    let ip = if has(b::PERF_SAMPLE_IP) { c.u64()? } else { 0 };
    let (pid, tid) = if has(b::PERF_SAMPLE_TID) { (c.u32()?, c.u32()?) } else { (0, 0) };
    let time = if has(b::PERF_SAMPLE_TIME) { c.u64()? } else { 0 };
    let cpu = if has(b::PERF_SAMPLE_CPU) {
        let v = c.u32()?;
        c.u32()?;
        v
    } else {
        0
    };
    let period = if has(b::PERF_SAMPLE_PERIOD) { c.u64()? } else { 0 };
    let mut kernel_stack = Vec::new();
    if has(b::PERF_SAMPLE_CALLCHAIN) {
        let nr = c.u64()?;
        for _ in 0..nr {
            let ip = c.u64()?;
            // PERF_CONTEXT_* markers live in the last 4095 values of the address space.
            if ip < (-4095i64) as u64 {
                kernel_stack.push(ip);
            }
        }
    }
    let mut regs = None;
    if has(b::PERF_SAMPLE_REGS_USER) {
        let abi = c.u64()?;
        if abi != 0 {
            let mut v = [0u64; 9];
            for r in v.iter_mut() {
                *r = c.u64()?;
            }
            regs =
                Some(Regs { ax: v[0], bx: v[1], cx: v[2], dx: v[3], si: v[4], di: v[5], bp: v[6], sp: v[7], ip: v[8] });
        }
    }
    let mut stack = Vec::new();
    if has(b::PERF_SAMPLE_STACK_USER) {
        let size = usize::try_from(c.u64()?).ok()?;
        if size > 0 {
            let data = c.bytes(size)?;
            let dyn_size = usize::try_from(c.u64()?).unwrap_or(usize::MAX);
            stack.extend_from_slice(&data[..dyn_size.min(size)]);
        }
    }
    let kernel = misc & PERF_RECORD_MISC_CPUMODE_MASK == PERF_RECORD_MISC_KERNEL;
    Some(Record::Sample(Sample { source, pid, tid, time, cpu, period, ip, regs, stack, kernel, kernel_stack }))
}

/// Parse one complete record (header included). `sample_type` is the attr's sample_type; only
/// the layout produced by [`crate::perf::SamplingConfig`] is supported. Unknown types → `None`.
pub fn parse(rec: &[u8], sample_type: u64, source: SampleSource) -> Option<Record> {
    let ty = u32::from_ne_bytes(rec.get(0..4)?.try_into().ok()?);
    let misc = u16::from_ne_bytes(rec.get(4..6)?.try_into().ok()?);
    let mut c = Cur { b: rec, pos: 8 };
    match ty {
        PERF_RECORD_SAMPLE => parse_sample(&mut c, misc, sample_type, source),
        PERF_RECORD_MMAP | PERF_RECORD_MMAP2 => {
            let pid = c.u32()?;
            let tid = c.u32()?;
            let start = c.u64()?;
            let len = c.u64()?;
            let pgoff = c.u64()?;
            let mut executable = true;
            if ty == PERF_RECORD_MMAP2 {
                if misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
                    c.bytes(24)?; // build id size + pad + 20 bytes
                } else {
                    c.bytes(24)?; // maj, min, ino, ino_generation
                }
                let prot = c.u32()?;
                c.u32()?; // flags
                executable = prot & PROT_EXEC != 0;
            }
            let path = c.cstr();
            Some(Record::Mmap(Mmap { pid, tid, start, len, pgoff, path, executable }))
        }
        PERF_RECORD_COMM => {
            let pid = c.u32()?;
            let tid = c.u32()?;
            let name = c.cstr();
            Some(Record::Comm { pid, tid, name, exec: misc & PERF_RECORD_MISC_COMM_EXEC != 0 })
        }
        PERF_RECORD_FORK | PERF_RECORD_EXIT => {
            let pid = c.u32()?;
            let ppid = c.u32()?;
            let tid = c.u32()?;
            let ptid = c.u32()?;
            let time = c.u64()?;
            Some(if ty == PERF_RECORD_FORK {
                Record::Fork { pid, ppid, tid, ptid, time }
            } else {
                Record::Exit { pid, tid, time }
            })
        }
        PERF_RECORD_SWITCH => {
            // Only the sample_id trailer: pid/tid, time (sample_type has TID and TIME).
            let pid = c.u32()?;
            let tid = c.u32()?;
            let time = c.u64()?;
            Some(Record::Switch {
                pid,
                tid,
                time,
                out: misc & PERF_RECORD_MISC_SWITCH_OUT != 0,
                preempt: misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
            })
        }
        PERF_RECORD_LOST => {
            c.u64()?; // id
            let count = c.u64()?;
            // sample_id trailer (sample_id_all): pid/tid, then time.
            c.u64()?;
            let time = c.u64().unwrap_or(0);
            Some(Record::Lost { count, time, source })
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The sample layout ftprof asks the kernel for.
    pub(crate) fn sample_type() -> u64 {
        crate::perf::cpu_clock_attr(&crate::perf::SamplingConfig::default(), false).sample_type
    }

    /// A record: header (`ty`, `misc`, size) and `body`.
    pub(crate) fn record(ty: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&ty.to_ne_bytes());
        r.extend_from_slice(&misc.to_ne_bytes());
        r.extend_from_slice(&((8 + body.len()) as u16).to_ne_bytes());
        r.extend_from_slice(body);
        r
    }

    #[derive(Default)]
    struct Body(Vec<u8>);
    impl Body {
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_ne_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_ne_bytes());
            self
        }
        fn bytes(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
    }

    /// A cpu-clock sample as the kernel lays it out for [`sample_type`].
    pub(crate) fn sample_record(tid: u32, time: u64, stack: &[u8], dyn_size: u64) -> Vec<u8> {
        const PERF_CONTEXT_KERNEL: u64 = (-128i64) as u64;
        let mut b = Body::default()
            .u64(0x40_1000) // ip
            .u32(100) // pid
            .u32(tid)
            .u64(time)
            .u32(3) // cpu
            .u32(0) // reserved
            .u64(5_025_125) // period
            .u64(3) // callchain nr
            .u64(PERF_CONTEXT_KERNEL)
            .u64(0xffff_ffff_8100_0010)
            .u64(0xffff_ffff_8100_0020)
            .u64(2); // regs abi: 64-bit
        for r in 1..=9u64 {
            b = b.u64(r * 0x10);
        }
        b = b.u64(stack.len() as u64).bytes(stack);
        if !stack.is_empty() {
            b = b.u64(dyn_size);
        }
        record(PERF_RECORD_SAMPLE, PERF_RECORD_MISC_KERNEL, &b.0)
    }

    #[test]
    fn a_sample_has_every_field_in_place() {
        let stack: Vec<u8> = (0..64).collect();
        let rec = sample_record(101, 7_000, &stack, 40);
        let Some(Record::Sample(s)) = parse(&rec, sample_type(), SampleSource::CpuClock) else {
            panic!("not a sample")
        };
        assert_eq!((s.ip, s.pid, s.tid, s.time, s.cpu, s.period), (0x40_1000, 100, 101, 7_000, 3, 5_025_125));
        assert_eq!(s.kernel_stack, [0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020], "context markers dropped");
        assert!(s.kernel);
        let r = s.regs.unwrap();
        assert_eq!(
            (r.ax, r.bx, r.cx, r.dx, r.si, r.di, r.bp, r.sp, r.ip),
            (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90)
        );
        assert_eq!(s.stack, &stack[..40], "only the bytes the kernel filled in");
        assert_eq!(s.source, SampleSource::CpuClock);
    }

    #[test]
    fn a_sample_without_user_context_has_no_registers() {
        let mut b = Body::default().u64(1).u32(1).u32(2).u64(3).u32(0).u32(0).u64(1).u64(0);
        b = b.u64(0).u64(0); // regs abi none, stack size 0
        let rec = record(PERF_RECORD_SAMPLE, 0, &b.0);
        let Some(Record::Sample(s)) = parse(&rec, sample_type(), SampleSource::SwitchOut) else { panic!() };
        assert!(s.regs.is_none());
        assert!(s.stack.is_empty());
        assert!(!s.kernel);
        assert_eq!(s.source, SampleSource::SwitchOut);
    }

    #[test]
    fn truncated_records_are_refused_not_misread() {
        let rec = sample_record(101, 7_000, &[1; 32], 32);
        for cut in 0..rec.len() {
            assert!(parse(&rec[..cut], sample_type(), SampleSource::CpuClock).is_none(), "cut at {cut}");
        }
        // A stack size larger than the record.
        let mut huge = sample_record(101, 7_000, &[], 0);
        let at = huge.len() - 8;
        huge[at..].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(parse(&huge, sample_type(), SampleSource::CpuClock).is_none());
    }

    #[test]
    fn mmaps_with_and_without_build_ids() {
        let mmap2 = |misc, prot: u32| {
            let b = Body::default().u32(100).u32(100).u64(0x7f00_0000).u64(0x2000).u64(0x1000);
            let b = b.bytes(&[0xab; 24]).u32(prot).u32(2).bytes(b"/usr/lib/lib with space.so\0\0\0\0\0\0");
            parse(&record(PERF_RECORD_MMAP2, misc, &b.0), sample_type(), SampleSource::CpuClock)
        };
        let want = Mmap {
            pid: 100,
            tid: 100,
            start: 0x7f00_0000,
            len: 0x2000,
            pgoff: 0x1000,
            path: "/usr/lib/lib with space.so".into(),
            executable: true,
        };
        for misc in [0, PERF_RECORD_MISC_MMAP_BUILD_ID] {
            let Some(Record::Mmap(m)) = mmap2(misc, 5) else { panic!() };
            assert_eq!(m, want);
        }
        let Some(Record::Mmap(m)) = mmap2(0, 1) else { panic!() };
        assert!(!m.executable);
        let b = Body::default().u32(7).u32(8).u64(0x1000).u64(0x10).u64(0).bytes(b"/bin/x\0\0");
        let Some(Record::Mmap(m)) = parse(&record(PERF_RECORD_MMAP, 0, &b.0), sample_type(), SampleSource::CpuClock)
        else {
            panic!()
        };
        assert_eq!((m.pid, m.tid, m.path.as_str(), m.executable), (7, 8, "/bin/x", true));
    }

    #[test]
    fn task_records() {
        let st = sample_type();
        let comm = Body::default().u32(100).u32(101).bytes(b"worker-1\0\0\0\0\0\0\0\0");
        match parse(&record(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &comm.0), st, SampleSource::CpuClock) {
            Some(Record::Comm { pid: 100, tid: 101, name, exec: true }) => assert_eq!(name, "worker-1"),
            other => panic!("{other:?}"),
        }
        let task = Body::default().u32(100).u32(1).u32(102).u32(101).u64(55);
        assert!(matches!(
            parse(&record(PERF_RECORD_FORK, 0, &task.0), st, SampleSource::CpuClock),
            Some(Record::Fork { pid: 100, ppid: 1, tid: 102, ptid: 101, time: 55 })
        ));
        assert!(matches!(
            parse(&record(PERF_RECORD_EXIT, 0, &task.0), st, SampleSource::CpuClock),
            Some(Record::Exit { pid: 100, tid: 102, time: 55 })
        ));
        let switch = Body::default().u32(100).u32(101).u64(77);
        let misc = PERF_RECORD_MISC_SWITCH_OUT | PERF_RECORD_MISC_SWITCH_OUT_PREEMPT;
        assert!(matches!(
            parse(&record(PERF_RECORD_SWITCH, misc, &switch.0), st, SampleSource::SwitchOut),
            Some(Record::Switch { pid: 100, tid: 101, time: 77, out: true, preempt: true })
        ));
        assert!(matches!(
            parse(&record(PERF_RECORD_SWITCH, 0, &switch.0), st, SampleSource::SwitchOut),
            Some(Record::Switch { out: false, preempt: false, .. })
        ));
        let lost = Body::default().u64(1).u64(42).u64(0).u64(99);
        assert!(matches!(
            parse(&record(PERF_RECORD_LOST, 0, &lost.0), st, SampleSource::SwitchOut),
            Some(Record::Lost { count: 42, time: 99, source: SampleSource::SwitchOut })
        ));
        assert!(parse(&record(99, 0, &[0; 16]), st, SampleSource::CpuClock).is_none(), "unknown type");
    }
}
