//! `perf_event_open` sessions and their ring buffers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    pub off_cpu: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate_hz: 199,
            stack_bytes: 16 * 1024,
            ring_pages: 1024,
            wake_every_sample: true,
            off_cpu: false,
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
    let fd = unsafe { perf_event_open_sys::perf_event_open(attr, pid, cpu, -1, b::PERF_FLAG_FD_CLOEXEC as _) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => PerfError::Permission { source: e, paranoid: paranoid_level() },
            _ => PerfError::Other(e),
        });
    }
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

/// The cpu-clock sampling attribute. Kernel-mode samples keep the user registers and stack of
/// the system call that entered the kernel; their kernel call chain says what it did there. It
/// also reports mmaps, comm changes and forks/exits.
pub fn cpu_clock_attr(cfg: &SamplingConfig, enable_on_exec: bool) -> b::perf_event_attr {
    let mut a = sampling_attr(b::PERF_COUNT_SW_CPU_CLOCK, 1_000_000_000 / cfg.rate_hz.max(1), cfg, enable_on_exec);
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
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One opened event with its mmap'd ring buffer.
pub struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_size: usize,
    sample_type: u64,
    source: SampleSource,
    scratch: Vec<u8>,
}

// The mapping is owned exclusively by this struct.
unsafe impl Send for Ring {}

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
        let (base, data_size, map_len) = loop {
            let data_size = pages * page_size();
            let map_len = data_size + page_size();
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if base != libc::MAP_FAILED {
                break (base, data_size, map_len);
            }
            let e = io::Error::last_os_error();
            if pages <= 8 || !matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOMEM)) {
                return Err(PerfError::Mmap(e));
            }
            pages /= 2;
        };
        Ok(Ring {
            fd,
            base: base as *mut u8,
            map_len,
            data_size,
            sample_type: attr.sample_type,
            source,
            scratch: Vec::new(),
        })
    }

    /// Which kind of records this ring carries.
    pub fn source(&self) -> SampleSource {
        self.source
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn enable(&self) -> io::Result<()> {
        if unsafe { perf_event_open_sys::ioctls::ENABLE(self.fd(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn disable(&self) {
        unsafe { perf_event_open_sys::ioctls::DISABLE(self.fd(), 0) };
    }

    fn header(&self) -> *mut b::perf_event_mmap_page {
        self.base as *mut b::perf_event_mmap_page
    }

    /// Hand every complete record currently in the buffer to `sink`. Returns how many.
    pub fn drain(&mut self, sink: &mut dyn FnMut(Record)) -> usize {
        let hdr = self.header();
        let head = unsafe { std::ptr::read_volatile(&(*hdr).data_head) };
        fence(Ordering::Acquire);
        let mut tail = unsafe { std::ptr::read_volatile(&(*hdr).data_tail) };
        let data = unsafe { self.base.add(page_size()) };
        let mask = (self.data_size - 1) as u64;
        let mut n = 0;
        while tail < head {
            let off = (tail & mask) as usize;
            // Header may itself wrap; copy 8 bytes carefully.
            let mut h = [0u8; 8];
            for (i, byte) in h.iter_mut().enumerate() {
                *byte = unsafe { *data.add((off + i) & mask as usize) };
            }
            let size = u16::from_ne_bytes([h[6], h[7]]) as usize;
            if size < 8 {
                break; // corrupt; give up on this batch
            }
            let rec: &[u8] = if off + size <= self.data_size {
                unsafe { std::slice::from_raw_parts(data.add(off), size) }
            } else {
                self.scratch.clear();
                let first = self.data_size - off;
                self.scratch.extend_from_slice(unsafe { std::slice::from_raw_parts(data.add(off), first) });
                self.scratch.extend_from_slice(unsafe { std::slice::from_raw_parts(data, size - first) });
                &self.scratch
            };
            if let Some(r) = records::parse(rec, self.sample_type, self.source) {
                sink(r);
                n += 1;
            }
            tail += size as u64;
        }
        fence(Ordering::Release);
        unsafe { std::ptr::write_volatile(&mut (*hdr).data_tail, tail) };
        n
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.map_len) };
    }
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
        if cfg.off_cpu && !user_only {
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
    followers: Vec<OwnedFd>,
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
                        if switch && (!cfg.off_cpu || user_only) {
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
                                let r = unsafe {
                                    perf_event_open_sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), ev.rings[i].fd())
                                };
                                if r < 0 {
                                    return Err(PerfError::Other(io::Error::last_os_error()));
                                }
                                ev.followers.push(fd);
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
        for fd in &self.followers {
            if unsafe { perf_event_open_sys::ioctls::ENABLE(fd.as_raw_fd(), 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Attaching needs threads × CPUs × 2 descriptors: lift the soft open-file limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
