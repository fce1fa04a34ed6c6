//! What a stall was really about, against the real free-threaded CPython: the extension module
//! that turned the GIL back on (built here from C with the interpreter's own headers), the exact
//! object behind refcount stalls (checked against what the workloads print), and contended vs
//! uncontended shared refcounts (one worker vs two).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `ftprof record --format json` of gil_import.py importing `module` from `dir`; returns the
/// profile, ftprof's stderr, and the `import_at` times the workload printed.
fn record_import(dir: &Path, module: &str) -> (Profile, String, (f64, f64), bool) {
    record_import_env(dir, module, &[])
}

fn record_import_env(dir: &Path, module: &str, env: &[(&str, &str)]) -> (Profile, String, (f64, f64), bool) {
    let out_path = dir.join(format!("{module}.json"));
    let out = ftprof()
        .envs(env.iter().copied())
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
    // Named from the module object in sys.modules too (its md_gil), not only from the mapping.
    assert_eq!(g["module_confirmed"], true, "{g}");
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

/// `PYTHON_GIL=1`: on from the start, and said to be the environment's doing, not a module's.
#[test]
fn a_gil_forced_on_by_the_environment_is_not_blamed_on_a_module() {
    let dir = tempdir();
    build_extension(&python(), dir.path(), "nogilmod", true);
    let (p, stderr, _, gil_on) = record_import_env(dir.path(), "nogilmod", &[("PYTHON_GIL", "1")]);
    assert!(gil_on);
    let g = &p.0["target"]["python"]["gil_reenabled"];
    assert_eq!(g["at_start"], true, "{g}");
    assert!(g.get("module").is_none(), "{g}");
    assert!(g["cause"].as_str().unwrap().starts_with("PYTHON_GIL=1"), "{g}");
    assert!(stderr.contains("GIL already enabled when ftprof started by PYTHON_GIL=1"), "{stderr}");
}

/// Attached after the import: the GIL is already on at ftprof's first look; the module is found
/// among the loaded ones by its `md_gil`.
#[test]
fn attaching_after_the_import_names_the_module_that_needs_the_gil() {
    let dir = tempdir();
    build_extension(&python(), dir.path(), "gilmod", false);
    let mut cmd = Command::new(python());
    cmd.arg(workload("gil_import.py")).arg(dir.path()).args(["gilmod", "8"]);
    cmd.stderr(std::process::Stdio::null()); // CPython's RuntimeWarning about the GIL
    let mut bg = Background::spawn(cmd);
    bg.wait_for("gil_enabled 1");
    let out_path = dir.path().join("a.json");
    let out = ftprof()
        .args(["record", "--pid", &bg.pid().to_string(), "--duration", "1", "-f", "json", "-o"])
        .arg(&out_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let g = &p["target"]["python"]["gil_reenabled"];
    assert_eq!(g["at_start"], true, "{g}");
    assert_eq!(g["module"], "gilmod", "{g}");
    assert_eq!(g["module_confirmed"], true, "{g}");
    assert!(g["module_path"].as_str().unwrap().ends_with(".so"), "{g}");
    assert!(stderr.contains("GIL already enabled when ftprof started by extension module `gilmod`"), "{stderr}");
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

/// `ftprof record` of shared_values.py; returns the profile and the `object …` line it printed
/// (type, rendering or address).
fn record_values(mode: &str, threads: &str) -> (Profile, String, String) {
    let (p, out) = record_json("shared_values.py", &[mode, threads, "2"], &["--rate", "499"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let object = stdout
        .lines()
        .find_map(|l| l.strip_prefix("object "))
        .unwrap_or_else(|| panic!("no object line in {stdout}"))
        .to_string();
    (p, object, String::from_utf8_lossy(&out.stderr).to_string())
}

/// Thread time (µs) per wait leaf (without its category prefix) of refcount stalls, contended
/// (`refcount`) or not (`atomic_refcount`), most first.
fn refcount_leaves(p: &Profile) -> Vec<(String, f64)> {
    let period_us = 1e6 / p.summary("rate_hz");
    let frames = p.0["frames"].as_array().unwrap();
    let mut by: std::collections::HashMap<String, f64> = Default::default();
    for s in p.0["stacks"].as_array().unwrap() {
        let cat = s["category"].as_str().unwrap();
        if cat != "refcount" && cat != "atomic_refcount" {
            continue;
        }
        let leaf = &frames[s["frames"].as_array().unwrap().last().unwrap().as_u64().unwrap() as usize];
        let name = leaf["name"].as_str().unwrap();
        let name = name.split_once(": ").map(|x| x.1).unwrap_or(name).to_string();
        *by.entry(name).or_default() += s["samples"].as_f64().unwrap() * period_us;
    }
    let mut v: Vec<(String, f64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn contention_share(p: &Profile) -> f64 {
    p.0["summary"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["contention"].as_bool().unwrap())
        .map(|c| c["share"].as_f64().unwrap())
        .sum()
}

/// The refcount stalls of each workload are named after the object the workload printed: its
/// type, its rendering (a `str`'s text) or address, and how the code reached it.
#[test]
fn refcount_stalls_name_the_object_type_and_rendering() {
    for (mode, expected) in [
        ("const", "str 'a string' (constant of `const_worker`)"),
        ("local", "_thread._local @ {id} (global `tls`)"),
        ("list", "list @ {id} (global `SHARED_LIST`)"),
        ("attr", "list @ {id} (attribute `.items` of global `H`)"),
    ] {
        let (p, object, stderr) = record_values(mode, "2");
        let id = object.split_whitespace().last().unwrap().to_string();
        let want = expected.replace("{id}", &id);
        if mode == "const" {
            assert_eq!(object, format!("str 'a string' {id}"));
        } else {
            assert!(object.starts_with(want.split(" @ ").next().unwrap()), "{object} vs {want}");
        }
        let leaves = refcount_leaves(&p);
        let total: f64 = leaves.iter().map(|l| l.1).sum();
        assert!(total > 0.0, "{mode}: no refcount stall seen\n{stderr}");
        let (top, t) = &leaves[0];
        assert_eq!(top, &want, "{mode}: refcount stalls by object: {leaves:?}");
        assert!(t / total >= 0.5, "{mode}: {want} has only {:.0} % of the stalls: {leaves:?}", 100.0 * t / total);
        // Where the stalls count as contention, the lock table has the object's address.
        for l in p.0["locks"].as_array().unwrap().iter().filter(|l| l["description"] == want.as_str()) {
            assert_eq!(l["identity"]["address"].as_u64().unwrap(), hex(&id), "{l}");
            assert_eq!(l["identity"]["type_name"], want.split([' ']).next().unwrap(), "{l}");
        }
    }
}

/// One worker reading a global list the main thread created: its refcount updates are atomic but
/// nobody else touches the list, so they are not contention. Two workers at once: contention on
/// that list, the largest of all.
#[test]
fn one_worker_is_no_contention_two_workers_contend_on_the_list() {
    let (one, object, stderr) = record_values("list", "1");
    let id = object.split_whitespace().last().unwrap().to_string();
    let want = format!("list @ {id} (global `SHARED_LIST`)");
    let c = contention_share(&one);
    assert!(c <= 0.05, "one worker: {:.1} % contention\n{stderr}", c * 100.0);
    let leaves = refcount_leaves(&one);
    assert_eq!(leaves.first().map(|l| l.0.as_str()), Some(want.as_str()), "{leaves:?}\n{stderr}");
    assert!(!stderr.contains("lost to contention"), "{stderr}");

    // Whether the two workers run at the same moment depends on the machine's load: up to three
    // tries for them to overlap.
    let mut tries = Vec::new();
    let (two, stderr) = loop {
        let (p, object, stderr) = record_values("list", "2");
        let id = object.split_whitespace().last().unwrap().to_string();
        let want = format!("list @ {id} (global `SHARED_LIST`)");
        let on_list: f64 = p.0["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "refcount" && l["description"] == want.as_str())
            .map(|l| l["total_us"].as_f64().unwrap())
            .sum();
        tries.push(on_list);
        if on_list > 0.0 || tries.len() == 3 {
            break ((p, want), stderr);
        }
    };
    let (p, want) = two;
    let cats = p.0["summary"]["categories"].as_array().unwrap();
    let worst = cats.iter().find(|c| c["contention"].as_bool().unwrap()).unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(worst["category"], "refcount", "largest contention: {worst}\n{stderr}");
    let top = &p.0["locks"][0];
    assert_eq!(top["kind"], "refcount", "{top}\n{stderr}");
    assert_eq!(top["description"], want.as_str(), "{top}\n{stderr}");
    assert_eq!(top["identity"]["type_name"], "list");
    assert!(stderr.contains(&want), "{stderr}");
}

/// A thread waiting for the interpreter's global import lock (held by the main thread through
/// `_imp.acquire_lock()`) is named from the per-version table, on both builds.
#[test]
fn internal_mutexes_are_named_import_lock() {
    for py in [python(), python_gil()] {
        let dir = tempdir();
        let out_path = dir.path().join("p.json");
        let out = ftprof()
            .arg("record")
            .args(["--format", "json", "-o"])
            .arg(&out_path)
            .arg("--")
            .arg(&py)
            .arg(workload("import_lock.py"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
        let top = &p["locks"][0];
        assert_eq!(top["kind"], "pymutex", "{top}\n{stderr}");
        let d = top["description"].as_str().unwrap();
        assert!(d.starts_with("import lock, PyInterpreterState+0x"), "{d}\n{stderr}");
        assert!(top["total_us"].as_u64().unwrap() >= 700_000, "{top}");
        let line = format!("waiter (import_lock.py:{})", line_of(&workload("import_lock.py"), "WAIT-LINE"));
        assert_eq!(top["top_lines"][0]["line"], line.as_str(), "{top}");
    }
}

/// `ftprof record` of shared_calls.py MODE with two threads, up to three tries for the workers
/// to run at the same moment (the machine's load decides); returns the profile, the shared
/// object's address (`0x…`), the refcount-contention time on it (µs) and ftprof's stderr.
fn record_calls(mode: &str, object_type: &str) -> (Profile, String, f64, String) {
    let mut tries = Vec::new();
    loop {
        let (p, out) = record_json("shared_calls.py", &[mode, "2", "2"], &["--rate", "499"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("object {object_type} ")))
            .unwrap_or_else(|| panic!("no object line in {stdout}"))
            .to_string();
        let prefix = format!("{object_type} @ {id} ");
        let on_it: f64 = p.0["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "refcount" && l["description"].as_str().unwrap().starts_with(&prefix))
            .map(|l| l["total_us"].as_f64().unwrap())
            .sum();
        tries.push(on_it);
        if on_it > 0.0 || tries.len() == 3 {
            return (p, id, on_it, stderr);
        }
    }
}

/// A shared `staticmethod` called in a loop from two threads: its refcount is contended, and
/// most of those samples land on the header loads of `_Py_TryIncrefFast`/`_Py_TryIncRefShared`
/// (the type lookup's try-incref), not on an atomic add. Refcount contention on the
/// staticmethod object is the top evidence (the largest refcount entry of the lock table).
#[test]
fn a_shared_staticmethod_is_the_top_refcount_contention_wherever_samples_land() {
    let (p, id, on_it, stderr) = record_calls("staticmethod", "staticmethod");
    assert!(on_it > 0.0, "no refcount contention on staticmethod @ {id}\n{stderr}");
    let top = p.0["locks"].as_array().unwrap().iter().find(|l| l["kind"] == "refcount").unwrap();
    let want = format!("staticmethod @ {id} (in `Shared.__dict__`, attribute `.add` of global `Shared`)");
    assert_eq!(top["description"], want.as_str(), "{top}\n{stderr}");
    assert_eq!(top["identity"]["address"].as_u64().unwrap(), hex(&id));
    assert!(stderr.contains(&want), "{stderr}");
    // The evidence includes samples inside the try-incref family (loads before any atomic).
    let frames = p.0["frames"].as_array().unwrap();
    let in_try_incref: f64 = p.0["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["category"] == "refcount")
        .filter(|s| {
            s["frames"].as_array().unwrap().iter().any(|f| {
                let n = frames[f.as_u64().unwrap() as usize]["name"].as_str().unwrap_or("");
                n.starts_with("_Py_TryIncref") || n.starts_with("_Py_TryIncRef")
            })
        })
        .map(|s| s["samples"].as_f64().unwrap())
        .sum();
    assert!(in_try_incref > 0.0, "no refcount sample inside _Py_TryIncref*\n{stderr}");
}

/// A disabled `log.debug()` in a loop on two threads (CPython gh-155106): the shared `Logger`
/// (and its `_tls`) come out as refcount contention, not as "no other thread on it".
#[test]
fn a_disabled_log_debug_on_two_threads_is_refcount_contention_on_the_logger() {
    let (p, id, on_it, stderr) = record_calls("logdebug", "Logger");
    assert!(on_it > 0.0, "no refcount contention on Logger @ {id}\n{stderr}");
    let cats = p.0["summary"]["categories"].as_array().unwrap();
    let share = |c: &str| cats.iter().find(|x| x["category"] == c).map(|x| x["share"].as_f64().unwrap()).unwrap_or(0.0);
    assert!(share("refcount") > 0.0, "{stderr}");
    let worst = cats.iter().find(|c| c["contention"].as_bool().unwrap()).unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(worst["category"], "refcount", "largest contention: {worst}\n{stderr}");
}
