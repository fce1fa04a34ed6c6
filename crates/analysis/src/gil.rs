//! The GIL turned back on in a free-threaded build: when, and which extension module did it.
//!
//! CPython 3.13t/3.14t re-enable the GIL when an extension module that does not declare
//! `Py_mod_gil = Py_MOD_GIL_NOT_USED` is imported (one warning line on stderr); from then on only
//! one thread runs Python at a time. The recorder watches the interpreter's GIL state and the
//! extension modules the target maps, and reports the change here.

use serde::{Deserialize, Serialize};

/// A GIL that was found enabled in a free-threaded build.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GilReenabled {
    /// Seconds from the start of the recording when it was first seen enabled (0 when it already
    /// was at the start).
    pub time_s: f64,
    /// The same moment on the target's `CLOCK_MONOTONIC` (`time.monotonic()` in Python).
    pub clock_monotonic_s: f64,
    /// It was already enabled when ftprof first read the GIL state (attached, or enabled at
    /// start-up).
    pub at_start: bool,
    /// The extension module that turned it on: the one mapped last before the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Path of that module's shared object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_path: Option<String>,
    /// The module object in the target's `sys.modules` confirms it: an extension module whose
    /// `md_gil` says it did not declare `Py_mod_gil = Py_MOD_GIL_NOT_USED`.
    pub module_confirmed: bool,
    /// Other extension modules in `sys.modules` without `Py_mod_gil` (each would have turned the
    /// GIL on by itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_modules: Vec<String>,
    /// What turned it on, in words (`import of extension module `x``, `PYTHON_GIL=1`).
    pub cause: String,
    /// What to do about it.
    pub remedy: String,
}

impl GilReenabled {
    /// One line for the terminal summary.
    pub fn sentence(&self) -> String {
        let when = if self.at_start {
            "already enabled when ftprof started".to_string()
        } else {
            format!("re-enabled at {:.2} s", self.time_s)
        };
        let others = if self.other_modules.is_empty() {
            String::new()
        } else {
            format!(" (also without Py_mod_gil: {})", self.other_modules.join(", "))
        };
        format!(
            "GIL {when} by {}{others}: threads no longer run Python in parallel. Remedy: {}",
            self.cause, self.remedy
        )
    }
}

/// The importable name of an extension module's shared object (`/x/_speedups.cpython-313t-x86_64-linux-gnu.so`
/// → `_speedups`), or `None` for libraries (`libfoo.so.1`) and files that are not shared objects.
pub fn extension_module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    if file.starts_with("lib") && !file.contains(".cpython-") && !file.contains(".abi3.") {
        return None;
    }
    if !file.ends_with(".so") {
        return None;
    }
    let stem = file.split('.').next()?;
    let ok = !stem.is_empty() && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| stem.to_string())
}

/// The remedy text for module `name` (or for a GIL forced on by the environment).
pub fn remedy(name: Option<&str>) -> String {
    match name {
        Some(m) => format!(
            "run with PYTHON_GIL=0 (or -X gil=0) if `{m}` is safe without the GIL, or install a free-threaded release of `{m}` (one that declares Py_mod_gil = Py_MOD_GIL_NOT_USED)"
        ),
        None => "unset PYTHON_GIL / -X gil=1, or find the extension module without Py_mod_gil".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_from_json_without_its_optional_fields() {
        let g = GilReenabled { module: Some("gilmod".into()), time_s: 1.5, ..Default::default() };
        let text = serde_json::to_string(&g).unwrap();
        assert!(!text.contains("other_modules"), "{text}");
        let back: GilReenabled = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn extension_names_from_paths() {
        assert_eq!(extension_module_name("/tmp/x/gilmod.cpython-313t-x86_64-linux-gnu.so").as_deref(), Some("gilmod"));
        assert_eq!(extension_module_name("/p/_speedups.abi3.so").as_deref(), Some("_speedups"));
        assert_eq!(extension_module_name("/p/fast.so").as_deref(), Some("fast"));
        assert_eq!(extension_module_name("/usr/lib/x86_64-linux-gnu/libssl.so.3"), None);
        assert_eq!(extension_module_name("/usr/lib/x86_64-linux-gnu/libffi.so"), None);
        assert_eq!(extension_module_name("/usr/bin/python3.13t"), None);
    }

    #[test]
    fn sentence_names_module_time_and_remedy() {
        let g = GilReenabled {
            time_s: 1.234,
            clock_monotonic_s: 100.0,
            at_start: false,
            module: Some("gilmod".into()),
            module_path: None,
            module_confirmed: true,
            other_modules: vec!["other".into()],
            cause: "the import of extension module `gilmod` (no Py_mod_gil)".into(),
            remedy: remedy(Some("gilmod")),
        };
        let s = g.sentence();
        assert!(s.contains("re-enabled at 1.23 s") && s.contains("`gilmod`") && s.contains("PYTHON_GIL=0"), "{s}");
        assert!(s.contains("(also without Py_mod_gil: other)"), "{s}");
    }
}
