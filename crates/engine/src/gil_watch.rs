//! Watching a free-threaded target's GIL during `record`: the moment it turns on, and the
//! extension module mapped just before (the import that re-enabled it).

use analysis::gil::{extension_module_name, remedy, GilReenabled};
use symbolizer::python::PyProcess;

/// How often the GIL state is read (one chain of three 8-byte reads).
const CHECK_EVERY_NS: u64 = 2_000_000;
/// Once the GIL is on, how often `sys.modules` is searched for the module that needs it (the
/// module is added there only after its initialisation), and how many times at most.
const SCAN_EVERY_NS: u64 = 20_000_000;
const MAX_SCANS: u32 = 250;

/// See the module documentation.
#[derive(Default)]
pub struct GilWatch {
    /// The launched or attached process.
    pub pid: u32,
    pub attached: bool,
    start_ns: u64,
    last_check_ns: u64,
    /// The state at the previous read (`None` before the first).
    last: Option<bool>,
    /// The extension module mapped most recently (path), and the one before the GIL turned on.
    last_extension: Option<String>,
    found: Option<GilReenabled>,
    /// The GIL went off again after being seen on (transient enables while importing).
    off_again: bool,
    scans: u32,
    last_scan_ns: u64,
}

impl GilWatch {
    pub fn start(&mut self, pid: u32, attached: bool, start_ns: u64) {
        self.pid = pid;
        self.attached = attached;
        self.start_ns = start_ns;
    }

    /// An executable mapping of the target (perf mmap record, or `/proc/PID/maps` at attach).
    pub fn mapped(&mut self, pid: u32, path: &str) {
        if pid == self.pid && extension_module_name(path).is_some() {
            self.last_extension = Some(path.to_string());
        }
    }

    /// Whether it is time to read the GIL state again.
    pub fn due(&self, now_ns: u64) -> bool {
        now_ns >= self.last_check_ns + CHECK_EVERY_NS
    }

    /// Read the GIL state of a free-threaded target at `now_ns` (CLOCK_MONOTONIC).
    pub fn check(&mut self, py: &PyProcess, now_ns: u64) {
        self.last_check_ns = now_ns;
        if !py.offsets.free_threaded {
            return;
        }
        let Ok(on) = py.gil_enabled() else { return };
        let first = self.last.is_none();
        let was = self.last.replace(on);
        match (was, on) {
            (Some(true), false) => self.off_again = true,
            (_, true) if self.found.is_none() || (self.off_again && was == Some(false)) => {
                self.off_again = false;
                self.found = Some(self.describe(first, now_ns));
                self.scans = 0;
                self.last_scan_ns = 0;
            }
            _ => {}
        }
        self.confirm(py, now_ns);
    }

    /// Name the module from the target's `sys.modules`: the extension module that has no
    /// `Py_mod_gil` (preferring the one mapped last before the change).
    fn confirm(&mut self, py: &PyProcess, now_ns: u64) {
        let Some(found) = self.found.as_mut() else { return };
        if found.module_confirmed
            || found.cause.starts_with("PYTHON_GIL")
            || self.scans >= MAX_SCANS
            || now_ns < self.last_scan_ns + SCAN_EVERY_NS
        {
            return;
        }
        self.scans += 1;
        self.last_scan_ns = now_ns;
        let needing = py.modules_needing_gil();
        let mapped = found.module.clone();
        let leaf = |name: &str| name.rsplit('.').next().unwrap_or(name).to_string();
        let best = needing
            .iter()
            .find(|(n, _)| mapped.as_deref() == Some(leaf(n).as_str()))
            .or(if mapped.is_none() || found.at_start { needing.last() } else { None });
        let Some((name, file)) = best.cloned() else { return };
        found.module_confirmed = true;
        found.other_modules = needing.iter().map(|(n, _)| n.clone()).filter(|n| *n != name).collect();
        found.module_path = file.or(found.module_path.take());
        if found.at_start {
            found.cause =
                format!("extension module `{name}`, which does not declare Py_mod_gil (loaded before ftprof started)");
        } else {
            found.cause = format!("the import of extension module `{name}`, which does not declare Py_mod_gil");
        }
        found.remedy = remedy(Some(&name));
        found.module = Some(name);
    }

    fn describe(&self, first: bool, now_ns: u64) -> GilReenabled {
        // Enabled from the start by the environment or the command line, not by a module.
        let forced = first && gil_forced_on(self.pid);
        let at_start = first && (self.attached || forced || self.last_extension.is_none());
        let path = if forced { None } else { self.last_extension.clone() };
        let module = path.as_deref().and_then(extension_module_name);
        let cause = match (&module, forced) {
            (_, true) => "PYTHON_GIL=1 / -X gil=1 in the target's environment or command line".to_string(),
            (Some(m), false) if first && self.attached => format!(
                "an extension module without Py_mod_gil, loaded before ftprof attached (the last one mapped is `{m}`)"
            ),
            (Some(m), false) => format!("the import of extension module `{m}`, which does not declare Py_mod_gil"),
            (None, false) => "an extension module without Py_mod_gil (not identified)".to_string(),
        };
        GilReenabled {
            time_s: if at_start { 0.0 } else { now_ns.saturating_sub(self.start_ns) as f64 / 1e9 },
            clock_monotonic_s: now_ns as f64 / 1e9,
            at_start,
            remedy: remedy(if forced { None } else { module.as_deref() }),
            module,
            module_path: path,
            module_confirmed: false,
            other_modules: Vec::new(),
            cause,
        }
    }

    /// What was found, if the GIL is on at the end or was on for a while (a transient enable
    /// while a module initialises, turned off again at once, is not reported).
    pub fn result(&self) -> Option<GilReenabled> {
        self.found.clone().filter(|_| self.last == Some(true))
    }
}

/// `PYTHON_GIL=1` in the environment of `pid`, or `-X gil=1` on its command line.
fn gil_forced_on(pid: u32) -> bool {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    env.split(|&b| b == 0).any(|v| v == b"PYTHON_GIL=1")
        || cmd.split(|&b| b == 0).any(|v| v == b"gil=1" || v == b"-Xgil=1")
}
