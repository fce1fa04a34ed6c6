//! What a stall was really about, against the real free-threaded CPython: the extension module
//! that turned the GIL back on (built here from C with the interpreter's own headers), the exact
//! object behind refcount stalls (checked against what the workloads print), and contended vs
//! uncontended shared refcounts (one worker vs two).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Build a one-function extension module `name` for `python` in `dir`; with `declares_no_gil` it
/// declares `Py_mod_gil = Py_MOD_GIL_NOT_USED`.
fn build_extension(python: &Path, dir: &Path, name: &str, declares_no_gil: bool) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include']); print(sysconfig.get_config_var('EXT_SUFFIX'))",
        ])
        .output()
        .expect("run the interpreter");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let (include, suffix) = (lines.next().unwrap(), lines.next().unwrap());
    let slot = if declares_no_gil { "{Py_mod_gil, Py_MOD_GIL_NOT_USED}," } else { "" };
    let src = dir.join(format!("{name}.c"));
    std::fs::write(
        &src,
        format!(
            "#include <Python.h>\n\
             static PyModuleDef_Slot slots[] = {{ {slot} {{0, NULL}} }};\n\
             static struct PyModuleDef def = {{ PyModuleDef_HEAD_INIT, .m_name = \"{name}\", .m_slots = slots }};\n\
             PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModuleDef_Init(&def); }}\n"
        ),
    )
    .unwrap();
    let so = dir.join(format!("{name}{suffix}"));
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O1", "-Werror", "-I", include, "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("run gcc (needed to build the test extension)");
    assert!(out.status.success(), "gcc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    so
}

/// `ftprof record --format json` of gil_import.py importing `module` from `dir`; returns the
/// profile, ftprof's stderr, and the `import_at` times the workload printed.
fn record_import(dir: &Path, module: &str) -> (Profile, String, (f64, f64), bool) {
    let out_path = dir.join(format!("{module}.json"));
    let out = ftprof()
        .arg("record")
        .args(["--format", "json", "-o"])
        .arg(&out_path)
        .arg("--")
        .arg(python())
        .arg(workload("gil_import.py"))
        .arg(dir)
        .arg(module)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ftprof failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let at: Vec<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("import_at "))
        .unwrap_or_else(|| panic!("no import_at line in {stdout}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let gil_on = stdout.lines().any(|l| l == "gil_enabled 1");
    let v = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    (Profile(v), stderr, (at[0], at[1]), gil_on)
}

#[test]
fn the_import_that_reenabled_the_gil_is_named_with_its_time() {
    let dir = tempdir();
    build_extension(&python(), dir.path(), "gilmod", false);
    let (p, stderr, (before, after), gil_on) = record_import(dir.path(), "gilmod");
    assert!(gil_on, "the interpreter itself says the GIL stayed off: the test extension is wrong");
    let g = &p.0["target"]["python"]["gil_reenabled"];
    assert_eq!(g["module"], "gilmod", "{g}");
    assert_eq!(g["at_start"], false, "{g}");
    let t = g["clock_monotonic_s"].as_f64().unwrap();
    assert!(
        (t - before).abs() <= 0.1,
        "GIL seen on at {t:.3}, the import started at {before:.3} (ended {after:.3}); {g}"
    );
    assert!(g["time_s"].as_f64().unwrap() > 0.2, "{g}");
    assert!(g["remedy"].as_str().unwrap().contains("PYTHON_GIL=0"), "{g}");
    let line = stderr.lines().find(|l| l.contains("GIL re-enabled at")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("`gilmod`") && line.contains("PYTHON_GIL=0"), "{line}");
}

#[test]
fn a_module_that_declares_py_mod_gil_is_no_false_report() {
    let dir = tempdir();
    build_extension(&python(), dir.path(), "nogilmod", true);
    let (p, stderr, _, gil_on) = record_import(dir.path(), "nogilmod");
    assert!(!gil_on, "the interpreter says the GIL is on");
    let py = &p.0["target"]["python"];
    assert!(py.get("gil_reenabled").is_none(), "{py}");
    assert_eq!(py["gil_enabled"], false, "{py}");
    assert!(!stderr.contains("GIL re-enabled"), "{stderr}");
}
