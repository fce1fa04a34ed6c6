//! `perf_event_open` sessions and their ring buffers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, Ordering};

use perf_event_open_sys::bindings as b;

use crate::records::{self, Record, SampleSource, REGS_MASK};

/// How to sample.
#[derive(Clone, Debug)]
pub struct SamplingConfig {
    /// Samples per second of CPU time, per thread.
    pub rate_hz: u64,
    /// Bytes of user stack copied with each sample (multiple of 8, ≤ 65000).
    pub stack_bytes: u32,
    /// Ring buffer size per CPU, in pages (a power of two). 1024 pages (4 MiB) hold ~250
    /// samples with 16 KiB stack copies: over half a second of sampling on 2 CPUs at 199 Hz, for
    /// when the reader is kept off the CPU by a target with a hundred runnable threads.
    pub ring_pages: usize,
    /// Wake the reader after every sample (so the caller can read live state, such as Python
    /// frames, while it is still current) instead of when the buffer fills up.
    pub wake_every_sample: bool,
    /// Also sample every switch-out (blocked, yielded or preempted threads) with registers and
    /// a stack copy, and record every switch-in/out (`PERF_RECORD_SWITCH`), waking the reader
    /// at each sample. Exact off-CPU attribution, at a cost that grows with the switch rate.
    /// Needs kernel sampling.
    pub switch_samples: bool,
    /// Also follow the target's child processes: when attaching, the processes it already
    /// started (and theirs) are followed from the start; new ones are followed as they are
    /// forked (CPU-wide events; inherited per-task events follow them anyway).
    pub follow_children: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate_hz: 199,
            stack_bytes: 16 * 1024,
            ring_pages: 1024,
            wake_every_sample: true,
            switch_samples: false,
            follow_children: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "perf_event_open was refused ({source}); kernel.perf_event_paranoid is {paranoid}. \
         Run as root, grant CAP_PERFMON (setcap cap_perfmon,cap_sys_ptrace+ep ftprof), or lower it: \
         sudo sysctl kernel.perf_event_paranoid=1"
    )]
    Permission { source: io::Error, paranoid: String },
    #[error("perf_event_open failed: {0}")]
    Other(io::Error),
    #[error(
        "mapping the perf ring buffer failed: {0} (raise `ulimit -l` or kernel.perf_event_mlock_kb, or run as root)"
    )]
    Mmap(io::Error),
}

/// Current `kernel.perf_event_paranoid`, as text.
pub fn paranoid_level() -> String {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// CPUs that are online now.
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut it = part.splitn(2, '-');
        let lo: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let hi: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(lo);
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
        cpus.extend(0..n);
    }
    cpus
}

fn perf_open(attr: &mut b::perf_event_attr, pid: i32, cpu: i32) -> Result<OwnedFd, PerfError> {
    // SAFETY: `attr` is a valid, exclusively borrowed perf_event_attr whose `size` is set; the
    // kernel only reads it (and writes back `size` on E2BIG).
    let fd = unsafe { perf_event_open_sys::perf_event_open(attr, pid, cpu, -1, b::PERF_FLAG_FD_CLOEXEC as _) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => PerfError::Permission { source: e, paranoid: paranoid_level() },
            _ => PerfError::Other(e),
        });
    }
    // SAFETY: `fd` was just returned by perf_event_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What every sampling event records: ip, tid, time, cpu, period, the kernel call chain, user
/// registers and a user-stack copy, timestamps on CLOCK_MONOTONIC.
fn sampling_attr(config: u32, period: u64, cfg: &SamplingConfig, enable_on_exec: bool) -> b::perf_event_attr {
    let mut a = b::perf_event_attr {
        type_: b::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<b::perf_event_attr>() as u32,
        config: config as u64,
        ..Default::default()
    };
    a.__bindgen_anon_1.sample_period = period;
    a.sample_type = (b::PERF_SAMPLE_IP
        | b::PERF_SAMPLE_TID
        | b::PERF_SAMPLE_TIME
        | b::PERF_SAMPLE_CPU
        | b::PERF_SAMPLE_PERIOD
        | b::PERF_SAMPLE_CALLCHAIN
        | b::PERF_SAMPLE_REGS_USER
        | b::PERF_SAMPLE_STACK_USER) as u64;
    a.sample_regs_user = REGS_MASK;
    a.sample_stack_user = cfg.stack_bytes & !7;
    a.set_disabled(1);
    a.set_inherit(1);
    a.set_exclude_hv(1);
    a.set_exclude_callchain_user(1);
    a.set_sample_id_all(1);
    a.set_use_clockid(1);
    a.clockid = libc::CLOCK_MONOTONIC;
    a.set_enable_on_exec(enable_on_exec as u64);
    set_wakeup(&mut a, cfg);
    a
}

/// CPU time (ns) one cpu-clock sample stands for at `rate_hz`: the period the kernel is given.
/// The one definition: the profile's CPU times (`analysis::ProfileBuilder::new`) and everything
/// rendered from it use this value.
pub fn sample_period_ns(rate_hz: u64) -> u64 {
    1_000_000_000 / rate_hz.max(1)
}

/// The cpu-clock sampling attribute. Kernel-mode samples keep the user registers and stack of
/// the system call that entered the kernel; their kernel call chain says what it did there. It
/// also reports mmaps, comm changes and forks/exits.
pub fn cpu_clock_attr(cfg: &SamplingConfig, enable_on_exec: bool) -> b::perf_event_attr {
    let mut a = sampling_attr(b::PERF_COUNT_SW_CPU_CLOCK, sample_period_ns(cfg.rate_hz), cfg, enable_on_exec);
    a.set_mmap(1);
    a.set_mmap2(1);
    a.set_comm(1);
    a.set_comm_exec(1);
    a.set_task(1);
    a
}

fn set_wakeup(a: &mut b::perf_event_attr, cfg: &SamplingConfig) {
    if cfg.wake_every_sample {
        a.__bindgen_anon_2.wakeup_events = 1;
    } else {
        a.set_watermark(1);
        a.__bindgen_anon_2.wakeup_watermark = (cfg.ring_pages * page_size() / 4) as u32;
    }
}

/// Sampling of every switch-out (the software `context-switches` event with period 1): user
/// registers and stack at the moment a thread stops running, plus PERF_RECORD_SWITCH records
/// (in and out, with preemption) for the durations. The reader is woken at every sample.
pub fn switch_attr(cfg: &SamplingConfig, enable_on_exec: bool) -> b::perf_event_attr {
    let mut a = sampling_attr(b::PERF_COUNT_SW_CONTEXT_SWITCHES, 1, cfg, enable_on_exec);
    a.set_context_switch(1);
    a
}

pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as usize
}

/// One opened event with its mmap'd ring buffer.
pub struct Ring {
    fd: OwnedFd,
    /// The shared mapping: one header page (`perf_event_mmap_page`), then the data area.
    map: memmap2::MmapRaw,
    data_size: usize,
    sample_type: u64,
    source: SampleSource,
    scratch: Vec<u8>,
}

impl Ring {
    /// Open `attr` for (`pid`, `cpu`) and map its ring buffer.
    pub fn open(
        attr: &mut b::perf_event_attr,
        pid: i32,
        cpu: i32,
        pages: usize,
        source: SampleSource,
    ) -> Result<Ring, PerfError> {
        let fd = perf_open(attr, pid, cpu)?;
        // Without privileges the kernel caps locked ring memory (perf_event_mlock_kb per CPU plus
        // RLIMIT_MEMLOCK): halve the ring until it fits.
        let mut pages = pages.next_power_of_two();
        let (map, data_size) = loop {
            let data_size = pages * page_size();
            match memmap2::MmapOptions::new().len(data_size + page_size()).map_raw(&fd) {
                Ok(map) => break (map, data_size),
                Err(e) if pages > 8 && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOMEM)) => pages /= 2,
                Err(e) => return Err(PerfError::Mmap(e)),
            }
        };
        Ok(Ring { fd, map, data_size, sample_type: attr.sample_type, source, scratch: Vec::new() })
    }

    /// Which kind of records this ring carries.
    pub fn source(&self) -> SampleSource {
        self.source
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn enable(&self) -> io::Result<()> {
        enable(&self.fd)
    }

    pub fn disable(&self) {
        // SAFETY: DISABLE takes no argument pointer; the descriptor is a live perf event.
        unsafe { perf_event_open_sys::ioctls::DISABLE(self.fd(), 0) };
    }

    fn header(&self) -> *mut b::perf_event_mmap_page {
        self.map.as_mut_ptr() as *mut b::perf_event_mmap_page
    }

    /// Hand every complete record currently in the buffer to `sink`. Returns how many.
    pub fn drain(&mut self, sink: &mut dyn FnMut(Record)) -> usize {
        let hdr = self.header();
        // SAFETY: `hdr` points to the first page of our live mapping (perf_event_mmap_page);
        // `data_head` is written by the kernel, hence the volatile read and the fence after it.
        let head = unsafe { std::ptr::read_volatile(&(*hdr).data_head) };
        fence(Ordering::Acquire);
        // SAFETY: as above; only this process writes `data_tail`.
        let tail = unsafe { std::ptr::read_volatile(&(*hdr).data_tail) };
        // SAFETY: the data area is the `data_size` bytes after the header page of the mapping,
        // which lives as long as `self`. The kernel does not write the part between tail and head
        // (the only part read) until `data_tail` moves past it below.
        let data = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(page_size()), self.data_size) };
        let (sample_type, source) = (self.sample_type, self.source);
        let mut n = 0;
        let tail = read_ring(data, tail, head, &mut self.scratch, &mut |rec| {
            if let Some(r) = records::parse(rec, sample_type, source) {
                sink(r);
                n += 1;
            }
        });
        fence(Ordering::Release);
        // SAFETY: as for the reads above.
        unsafe { std::ptr::write_volatile(&mut (*hdr).data_tail, tail) };
        n
    }
}

/// Hand each complete record between `tail` and `head` (free-running byte counters) of the ring
/// data area `data` (a power of two long) to `f`, copying records that wrap around the end into
/// `scratch`. Returns the new tail: `head`, or where a corrupt header stopped the walk.
pub(crate) fn read_ring(data: &[u8], mut tail: u64, head: u64, scratch: &mut Vec<u8>, f: &mut dyn FnMut(&[u8])) -> u64 {
    let len = data.len();
    debug_assert!(len.is_power_of_two());
    let mask = (len - 1) as u64;
    while tail < head {
        let off = (tail & mask) as usize;
        // The 8-byte header may itself wrap.
        let mut h = [0u8; 8];
        for (i, b) in h.iter_mut().enumerate() {
            *b = data[(off + i) & (len - 1)];
        }
        let size = u16::from_ne_bytes([h[6], h[7]]) as usize;
        if size < 8 || size > len || (head - tail) < size as u64 {
            // Corrupt (or not fully written): skip to head rather than read garbage.
            return head;
        }
        let rec: &[u8] = if off + size <= len {
            &data[off..off + size]
        } else {
            scratch.clear();
            scratch.extend_from_slice(&data[off..]);
            scratch.extend_from_slice(&data[..size - (len - off)]);
            scratch
        };
        f(rec);
        tail += size as u64;
    }
    tail
}

/// Start counting on a perf event.
fn enable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: ENABLE takes no argument pointer; `fd` is a live perf event descriptor.
    if unsafe { perf_event_open_sys::ioctls::ENABLE(fd.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Open one cpu-clock event per online CPU that samples every task on it (`pid = -1`): the
/// events stay on their CPU, so the target's context switches cost nothing extra (per-task
/// events are switched in and out with every thread, which is what makes profilers slow on
/// programs that switch tens of thousands of times a second). The caller keeps only the
/// records of the processes it follows. Needs CAP_PERFMON (or root, or
/// `kernel.perf_event_paranoid` ≤ 0): a [`PerfError::Permission`] means "use per-task events".
/// Opened disabled.
pub fn open_cpu_wide_rings(cfg: &SamplingConfig) -> Result<Vec<Ring>, PerfError> {
    let mut rings = Vec::new();
    for cpu in online_cpus() {
        let mut attr = cpu_clock_attr(cfg, false);
        attr.set_inherit(0);
        rings.push(Ring::open(&mut attr, -1, cpu as i32, cfg.ring_pages, SampleSource::CpuClock)?);
    }
    Ok(rings)
}

/// Open one inherited cpu-clock event per online CPU for `pid` (and all threads and children it
/// creates from now on). Per-CPU events are required: the kernel refuses to mmap inherited
/// per-task (cpu = -1) events.
pub fn open_process_rings(pid: i32, cfg: &SamplingConfig, enable_on_exec: bool) -> Result<Vec<Ring>, PerfError> {
    let mut rings = Vec::new();
    let mut user_only = false;
    for cpu in online_cpus() {
        let mut attr = cpu_clock_attr(cfg, enable_on_exec);
        if user_only {
            attr.set_exclude_kernel(1);
        }
        match Ring::open(&mut attr, pid, cpu as i32, cfg.ring_pages, SampleSource::CpuClock) {
            Err(PerfError::Permission { .. }) if !user_only => {
                // perf_event_paranoid ≥ 2 forbids kernel sampling without CAP_PERFMON: fall back
                // to user-mode samples only (and no off-CPU view, which needs the scheduler).
                user_only = true;
                attr.set_exclude_kernel(1);
                rings.push(Ring::open(&mut attr, pid, cpu as i32, cfg.ring_pages, SampleSource::CpuClock)?);
            }
            r => rings.push(r?),
        }
        if cfg.switch_samples && !user_only {
            let mut attr = switch_attr(cfg, enable_on_exec);
            rings.push(Ring::open(&mut attr, pid, cpu as i32, cfg.ring_pages, SampleSource::SwitchOut)?);
        }
    }
    Ok(rings)
}

/// Tasks (threads) of a process, from `/proc/PID/task`.
pub fn process_tids(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// Events that follow the threads of a running process: one event per (thread, CPU, kind),
/// inherited by the threads each of them creates, with their output redirected into one ring per
/// (CPU, kind). Closing them (drop) detaches completely.
pub struct ThreadEvents {
    pub rings: Vec<Ring>,
    /// Events whose output goes to a leader's ring, with their kind.
    followers: Vec<(OwnedFd, SampleSource)>,
}

impl ThreadEvents {
    /// Open events for every thread of `pid` (rescanning until no new thread appears).
    pub fn open(pid: i32, cfg: &SamplingConfig) -> Result<ThreadEvents, PerfError> {
        raise_fd_limit();
        let mut ev = ThreadEvents { rings: Vec::new(), followers: Vec::new() };
        // (cpu, kind) → index of the ring that collects it.
        let mut leaders: std::collections::HashMap<(u32, bool), usize> = Default::default();
        let mut done: std::collections::HashSet<i32> = Default::default();
        let mut user_only = false;
        for _round in 0..8 {
            let fresh: Vec<i32> = process_tids(pid).into_iter().filter(|t| !done.contains(t)).collect();
            if fresh.is_empty() {
                break;
            }
            for tid in fresh {
                done.insert(tid);
                for cpu in online_cpus() {
                    for switch in [false, true] {
                        if switch && (!cfg.switch_samples || user_only) {
                            continue;
                        }
                        let mut attr = if switch { switch_attr(cfg, false) } else { cpu_clock_attr(cfg, false) };
                        if user_only {
                            attr.set_exclude_kernel(1);
                        }
                        let source = if switch { SampleSource::SwitchOut } else { SampleSource::CpuClock };
                        let opened = match leaders.get(&(cpu, switch)) {
                            None => match Ring::open(&mut attr, tid, cpu as i32, cfg.ring_pages, source) {
                                Ok(r) => {
                                    leaders.insert((cpu, switch), ev.rings.len());
                                    ev.rings.push(r);
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            },
                            Some(&i) => perf_open(&mut attr, tid, cpu as i32).and_then(|fd| {
                                // SAFETY: SET_OUTPUT takes the target descriptor by value; both
                                // are live perf events of this process.
                                let r = unsafe {
                                    perf_event_open_sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), ev.rings[i].fd())
                                };
                                if r < 0 {
                                    return Err(PerfError::Other(io::Error::last_os_error()));
                                }
                                ev.followers.push((fd, source));
                                Ok(())
                            }),
                        };
                        match opened {
                            Ok(()) => {}
                            // The thread exited meanwhile.
                            Err(PerfError::Other(e)) if e.raw_os_error() == Some(libc::ESRCH) => break,
                            Err(PerfError::Permission { .. }) if !user_only && !switch && leaders.is_empty() => {
                                user_only = true;
                                let mut attr = cpu_clock_attr(cfg, false);
                                attr.set_exclude_kernel(1);
                                let r = Ring::open(&mut attr, tid, cpu as i32, cfg.ring_pages, source)?;
                                leaders.insert((cpu, false), ev.rings.len());
                                ev.rings.push(r);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
        if ev.rings.is_empty() {
            return Err(PerfError::Other(io::Error::from_raw_os_error(libc::ESRCH)));
        }
        Ok(ev)
    }

    /// Start counting on every event.
    pub fn enable(&self) -> io::Result<()> {
        for r in &self.rings {
            r.enable()?;
        }
        for (fd, _) in &self.followers {
            enable(fd)?;
        }
        Ok(())
    }

    /// The cpu-clock sampling events, leaders and followers (see [`crate::Sink::sampling_events`]).
    pub fn sampling_fds(&self) -> Vec<BorrowedFd<'_>> {
        let leaders = self.rings.iter().filter(|r| r.source() == SampleSource::CpuClock).map(|r| r.as_fd());
        let followers = self.followers.iter().filter(|(_, s)| *s == SampleSource::CpuClock).map(|(fd, _)| fd.as_fd());
        leaders.chain(followers).collect()
    }
}

/// Attaching needs threads × CPUs × 2 descriptors: lift the soft open-file limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::{record, sample_record, sample_type};

    /// A ring data area of `len` bytes holding `records` from byte counter `start` on.
    fn ring_with(len: usize, start: u64, records: &[Vec<u8>]) -> (Vec<u8>, u64) {
        let mut data = vec![0xeeu8; len];
        let mut pos = start;
        for r in records {
            for &b in r {
                data[(pos % len as u64) as usize] = b;
                pos += 1;
            }
        }
        (data, pos)
    }

    fn drained(data: &[u8], tail: u64, head: u64) -> (Vec<Vec<u8>>, u64) {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let end = read_ring(data, tail, head, &mut scratch, &mut |r| got.push(r.to_vec()));
        (got, end)
    }

    #[test]
    fn records_come_out_whole_wherever_the_ring_wraps() {
        let recs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| record(3, 0, &vec![i; 8 + 8 * i as usize]))
            .chain([sample_record(7, 9, &[5; 24], 24)])
            .collect();
        let total: usize = recs.iter().map(Vec::len).sum();
        // Every start offset: records wrap at every byte, headers included; counters past 2^32.
        for start in (0..512u64).map(|s| s + (1 << 33)) {
            let (data, head) = ring_with(512, start, &recs);
            assert_eq!(head - start, total as u64);
            let (got, end) = drained(&data, start, head);
            assert_eq!(got, recs, "start {start}");
            assert_eq!(end, head);
        }
        // The wrapped sample still parses.
        let (data, head) = ring_with(256, 250, &recs[5..]);
        let (got, _) = drained(&data, 250, head);
        assert!(matches!(
            records::parse(&got[0], sample_type(), SampleSource::CpuClock),
            Some(Record::Sample(s)) if s.tid == 7 && s.stack == [5; 24]
        ));
    }

    #[test]
    fn an_empty_ring_yields_nothing() {
        let (got, end) = drained(&[0; 64], 128, 128);
        assert!(got.is_empty());
        assert_eq!(end, 128);
    }

    #[test]
    fn a_corrupt_header_skips_to_head_instead_of_stalling() {
        let recs = [record(3, 0, &[1; 8]), record(3, 0, &[2; 8])];
        let (mut data, head) = ring_with(64, 0, &recs);
        data[16 + 6] = 3; // second record's size: 3 < header
        data[16 + 7] = 0;
        let (got, end) = drained(&data, 0, head);
        assert_eq!(got, recs[..1]);
        assert_eq!(end, head);
        // A size larger than the data left before head.
        let (mut data, head) = ring_with(64, 0, &recs[..1]);
        data[6] = 60;
        assert_eq!(drained(&data, 0, head), (vec![], head));
    }
}
