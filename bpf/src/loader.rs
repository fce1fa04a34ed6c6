//! Loading the embedded objects, the permission check, one-line refusals, program statistics.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::{libbpf_sys, Object, ObjectBuilder, PrintLevel};

/// Why the BPF path cannot be used here, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("BPF not permitted: {0} (run as root, or grant CAP_BPF and CAP_PERFMON)")]
    NotPermitted(String),
    #[error("BPF unavailable: this kernel has no BTF (/sys/kernel/btf/vmlinux missing; needs CONFIG_DEBUG_INFO_BTF)")]
    NoBtf,
    #[error("BPF program {program} refused by the kernel: {reason}")]
    Load { program: String, reason: String },
    #[error("BPF program {program} could not be attached: {reason}")]
    Attach { program: String, reason: String },
    #[error("BPF map {map}: {reason}")]
    Map { map: String, reason: String },
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may load and attach the programs: root, or CAP_BPF and CAP_PERFMON in
/// its effective set; and a kernel with BTF. The `Err` says why not, in one line.
pub fn check_permitted() -> Result<(), Refusal> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|e| Refusal::NotPermitted(format!("cannot read /proc/thread-self/status ({e})")))?;
    let caps = cap_eff(&status).ok_or_else(|| Refusal::NotPermitted("no CapEff in /proc/thread-self/status".into()))?;
    if let Some(missing) = missing_caps(caps) {
        let who = if nix::unistd::geteuid().is_root() { "root without" } else { "not root and without" };
        return Err(Refusal::NotPermitted(format!("{who} {missing}")));
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Refusal::NoBtf);
    }
    Ok(())
}

/// Which capabilities are missing for BPF, if any: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN
/// (which kernels also accept for both).
pub(crate) fn missing_caps(eff: u64) -> Option<String> {
    if eff & (1 << CAP_SYS_ADMIN) != 0 {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// The effective capability set from the text of `/proc/PID/status`.
pub(crate) fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// CLOCK_MONOTONIC now, in ns: the clock of the programs' timestamps (`bpf_ktime_get_ns`) and of
/// ftprof's perf samples.
pub fn now_ns() -> u64 {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64)
}

thread_local! {
    /// libbpf's messages of the load in progress on this thread (libbpf calls the print
    /// callback on the loading thread, so two objects can load at once): the verifier's last
    /// words make the refusal's reason.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn log_line(_level: PrintLevel, msg: String) {
    LOG.with_borrow_mut(|log| {
        if log.len() > 4096 {
            log.drain(..2048);
        }
        log.extend(msg.lines().map(str::to_owned));
    });
}

/// The most telling line of a failed load: the verifier's complaint (the line before
/// "processed N insns"), else libbpf's last message.
pub(crate) fn reason_from_log(log: &[String], fallback: &str) -> String {
    let lines: Vec<&str> = log.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    if let Some(i) = lines.iter().rposition(|l| l.starts_with("processed ") && l.contains(" insns")) {
        if i > 0 {
            return format!("verifier: {}", lines[i - 1]);
        }
    }
    let libbpf =
        lines.iter().rev().find(|l| l.starts_with("libbpf:") && !l.contains("-- BEGIN") && !l.contains("-- END"));
    match libbpf {
        Some(l) => format!("{fallback} ({})", l.trim_start_matches("libbpf:").trim()),
        None => fallback.to_owned(),
    }
}

/// Open and load one embedded object; every program in it must pass the verifier.
pub(crate) fn load(name: &str, bytes: &[u8], setup: impl Fn(&mut libbpf_rs::OpenObject)) -> Result<Object, Refusal> {
    check_permitted()?;
    libbpf_rs::set_print(Some((PrintLevel::Debug, log_line)));
    LOG.with_borrow_mut(Vec::clear);
    let open_object = || {
        ObjectBuilder::default()
            .open_memory(bytes)
            .map_err(|e| Refusal::Load { program: name.into(), reason: e.to_string() })
    };
    let mut open = open_object()?;
    setup(&mut open);
    let mut loaded = open.load();
    let mut log = LOG.with_borrow(Vec::clone);
    // Before Linux 6.1 tracing programs may use only preallocated hash maps: load again with
    // every map preallocated (slower to load: the entries are allocated and zeroed now).
    if loaded.is_err() && log.iter().any(|l| l.contains("preallocated")) {
        let mut open = open_object()?;
        setup(&mut open);
        // ftprof's maps have no other flag.
        for mut map in open.maps_mut() {
            let _ = map.set_map_flags(0);
        }
        LOG.with_borrow_mut(Vec::clear);
        loaded = open.load();
        log = LOG.with_borrow(Vec::clone);
    }
    loaded.map_err(|e| Refusal::Load { program: name.into(), reason: reason_from_log(&log, &e.to_string()) })
}

/// A program the verifier refuses (`src/bpf/invalid.bpf.c`), loaded only by [`verify_refused`].
static INVALID: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/invalid.bpf.o"));

/// Load the deliberately invalid program: `Err` with the verifier's one-line reason. For the
/// test that verifier refusals are reported, not hidden.
pub fn verify_refused() -> Result<(), Refusal> {
    load("invalid", INVALID, |_| {}).map(|_| ())
}

/// Run time of one program since statistics were enabled (see [`StatsGuard`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl ProgStats {
    /// Mean ns per run.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// While held, the kernel counts every BPF program's runs and run time (`BPF_ENABLE_STATS`);
/// it costs two clock reads per run, so keep it only for measurements.
pub struct StatsGuard(#[allow(dead_code)] OwnedFd);

impl StatsGuard {
    pub fn enable() -> Result<StatsGuard, Refusal> {
        check_permitted()?;
        // SAFETY: plain syscall wrapper; a non-negative return is a new descriptor we own.
        let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
        if fd < 0 {
            return Err(Refusal::NotPermitted(format!(
                "BPF_ENABLE_STATS failed ({})",
                std::io::Error::from_raw_os_error(-fd)
            )));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(StatsGuard(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// Run counts and times of every program of `obj`.
pub(crate) fn prog_stats(obj: &Object) -> Vec<ProgStats> {
    obj.progs()
        .map(|p| {
            // SAFETY: zeroed bpf_prog_info is a valid out-parameter; `len` holds its size.
            let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
            // SAFETY: the program's descriptor is live; `info` is writable for `len` bytes.
            let rc = unsafe {
                libbpf_sys::bpf_prog_get_info_by_fd(p.as_fd().as_raw_fd(), &mut info as *mut _ as *mut _, &mut len)
            };
            let (run_cnt, run_time_ns) = if rc == 0 { (info.run_cnt, info.run_time_ns) } else { (0, 0) };
            ProgStats { name: p.name().to_string_lossy().into_owned(), run_cnt, run_time_ns }
        })
        .collect()
}

/// A `#[repr(C)]` plain-old-data value read from (or written to) a map as bytes.
///
/// # Safety
/// Implement only for `#[repr(C)]` types of integers with no padding-dependent invariants, for
/// which every bit pattern is valid.
pub(crate) unsafe trait Pod: Copy + Default {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: Self is repr(C) plain data (trait contract); the slice covers exactly it.
        unsafe { std::slice::from_raw_parts(self as *const Self as *const u8, std::mem::size_of::<Self>()) }
    }
    fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < std::mem::size_of::<Self>() {
            return None;
        }
        let mut v = Self::default();
        // SAFETY: every bit pattern is a valid Self (trait contract); the source holds enough bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), &mut v as *mut Self as *mut u8, std::mem::size_of::<Self>())
        };
        Some(v)
    }
}

unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}
unsafe impl Pod for u8 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_capabilities_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(cap_eff("Name: x\n"), None);
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(missing_caps(0x1ff_ffff_ffff), None);
        assert_eq!(missing_caps(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        assert_eq!(missing_caps(1 << CAP_BPF).as_deref(), Some("CAP_PERFMON"));
        assert_eq!(missing_caps(0).as_deref(), Some("CAP_BPF and CAP_PERFMON"));
    }

    #[test]
    fn refusal_reason_is_the_verifiers_last_complaint() {
        let log: Vec<String> = [
            "libbpf: prog 'ftprof_switch': BPF program load failed: Permission denied",
            "libbpf: prog 'ftprof_switch': -- BEGIN PROG LOAD LOG --",
            "0: R1=ctx() R10=fp0",
            "; u64 x = *(u64 *)(buf + off);",
            "R2 unbounded memory access, make sure to bounds check any such access",
            "processed 41 insns (limit 1000000) max_states_per_insn 0",
            "-- END PROG LOAD LOG --",
            "libbpf: failed to load object 'offcpu'",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            reason_from_log(&log, "Permission denied"),
            "verifier: R2 unbounded memory access, make sure to bounds check any such access"
        );
        let log = vec!["libbpf: failed to find BTF for extern 'x'".to_string()];
        assert_eq!(reason_from_log(&log, "Invalid argument"), "Invalid argument (failed to find BTF for extern 'x')");
        assert_eq!(reason_from_log(&[], "Invalid argument"), "Invalid argument");
    }

    #[test]
    fn refusals_are_one_line() {
        for r in [
            Refusal::NotPermitted("missing CAP_BPF".into()),
            Refusal::NoBtf,
            Refusal::Load { program: "offcpu".into(), reason: "verifier: x".into() },
        ] {
            assert!(!r.to_string().contains('\n'), "{r}");
        }
    }
}
