//! Reports and exports read by their real consumers: the HTML report in headless Chromium
//! (offline, no request leaving the page), speedscope's own schema and app, `go tool pprof`,
//! the Firefox Profiler's processed format. One lock hand-off recording (tests/workloads) is
//! shared by the tests; tools come from scripts/report-deps.sh (installed when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

/// The lock hand-off recorded once as a JSON profile: (dir, json path, the lock's address, the
/// workload's stdout).
struct Recording {
    _dir: tempfile::TempDir,
    json: PathBuf,
    lock: String,
    waiter_tid: u64,
}

fn recording() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempdir();
        let json = dir.path().join("handoff.json");
        // At a real-time priority where permitted: the report's verdict is about the lock's share,
        // which other processes' load would dilute (see `common::realtime`).
        let out = realtime(&mut ftprof(), 1)
            .args(["record", "--format", "json", "-o"])
            .arg(&json)
            .arg("--")
            .arg(python())
            .arg(workload("lock_handoff.py"))
            .args(["lock", "6"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ftprof record failed: {}", String::from_utf8_lossy(&out.stderr));
        let lock = printed(&out.stdout, "lock");
        let waiter_tid = tids(&out.stdout)["waiter"];
        Recording { _dir: dir, json, lock, waiter_tid }
    })
}

fn profile() -> analysis::Profile {
    ftprof::report::load(&recording().json).unwrap()
}

fn report(args: &[&str], out: &Path) -> String {
    let o = ftprof().arg("report").arg(&recording().json).arg("-o").arg(out).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "ftprof report {args:?} failed: {stderr}");
    assert!(out.is_file(), "{} written", out.display());
    stderr
}

/// Where screenshots go (kept after the run).
fn artifacts() -> PathBuf {
    let d = root().join("target/test-artifacts/report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn node_modules() -> PathBuf {
    static NM: OnceLock<PathBuf> = OnceLock::new();
    NM.get_or_init(|| {
        let out = Command::new("bash").arg(root().join("scripts/report-deps.sh")).output().unwrap();
        assert!(out.status.success(), "scripts/report-deps.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Run tests/browser/check.cjs (headless Chromium); its JSON result.
fn browser(cmd: &str, file: &Path, arg: &str) -> Value {
    browser_with(cmd, file, &[arg])
}

fn browser_with(cmd: &str, file: &Path, args: &[&str]) -> Value {
    let out = Command::new("node")
        .env("NODE_PATH", node_modules())
        .arg(root().join("tests/browser/check.cjs"))
        .arg(cmd)
        .arg(file)
        .args(args)
        .output()
        .expect("run node (scripts/report-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("check.cjs {cmd}: no JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success() && v["ok"] == true, "check.cjs {cmd} failed: {v:#}");
    assert_eq!(v["requests"], serde_json::json!([]), "no request may leave the page: {v:#}");
    assert_eq!(v["errors"], serde_json::json!([]), "page errors: {v:#}");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()))
        .collect()
}

#[test]
fn html_report_opens_offline_and_shows_the_lock_in_the_waiting_view() {
    let r = recording();
    let dir = tempdir();
    let html = dir.path().join("report.html");
    let stderr = report(&[], &html);
    assert!(stderr.contains("wrote"), "{stderr}");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"), "the .html extension selects the HTML report");
    let shot = artifacts().join("report-waiting-view.png");
    let _ = std::fs::remove_file(&shot);
    let v = browser("html", &html, shot.to_str().unwrap());
    assert!(v["frames_wall"].as_u64().unwrap() > 10, "the flamegraph rendered: {v:#}");
    assert_eq!(v["view"], "all — waiting time (the lock as the leaf)");
    let leaf = format!("[lock: _thread.lock @ {}]", r.lock);
    assert!(strings(&v["wait_leaves"]).contains(&leaf), "the waiting view has the lock leaf {leaf}: {v:#}");
    let rows: Vec<Vec<String>> = v["lock_rows"].as_array().unwrap().iter().map(strings).collect();
    let row =
        rows.iter().find(|r| r[1] == format!("_thread.lock @ {}", r_lock(r))).unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row[0], "lock");
    assert!(row[6].contains("lock_handoff.py"), "top lines: {row:?}");
    assert_eq!(v["clicked_leaf"], leaf.as_str(), "the largest lock after sorting by total");
    // The lock's own stacks stay coloured; in the thread-time view, where the holder's running
    // stacks are too, the rest greys out. (The waiting view can hold nothing but the lock's
    // stacks: at real-time priority nothing else waited.)
    for hl in [&v["highlight"], &v["highlight_wall"]] {
        assert!(hl["lock_frames"].as_u64().unwrap() >= 1, "{hl}");
        assert!(strings(&hl["lock_fill"]).iter().all(|f| f != "#e6e6e6"), "the lock's own stacks stay coloured: {hl}");
    }
    assert!(v["highlight_wall"]["greyed"].as_u64().unwrap() >= 1, "{v:#}");
    assert!(v["verdict"].as_str().unwrap().contains("threading lock"), "{v:#}");
    assert!(strings(&v["lines"]).iter().any(|l| l.contains("lock_handoff.py")));
    assert!(strings(&v["threads"]).iter().any(|t| t.starts_with("waiter (")));
    assert_eq!(strings(&v["thread_filtered"]), [format!("waiter ({})", r.waiter_tid)], "the thread filter");
    assert!(v["search_hits"].as_u64().unwrap() >= 1, "search marks the waiter's frames: {v:#}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot saved at {}", shot.display());
}

fn r_lock(row: &[String]) -> String {
    row[1].rsplit(' ').next().unwrap_or("").to_string()
}

#[test]
fn record_infers_html_from_the_extension() {
    let dir = tempdir();
    let html = dir.path().join("p.html");
    let out = ftprof()
        .args(["record", "-o"])
        .arg(&html)
        .arg("--")
        .arg(python())
        .arg(workload("lock_handoff.py"))
        .args(["lock", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("id=\"ftprof-data\"") && text.contains("d3-flame-graph"));
    let start = text.find("id=\"ftprof-data\">").unwrap() + "id=\"ftprof-data\">".len();
    let end = start + text[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&text[start..end]).unwrap();
    assert!(data["header"]["command"].as_str().unwrap().contains("lock_handoff.py"));
    assert!(data["stacks"].as_array().unwrap().len() > 3);
}

#[test]
fn report_refuses_what_is_not_a_profile() {
    let dir = tempdir();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    let out = ftprof().arg("report").arg(&bad).arg("-o").arg(dir.path().join("x.html")).output().unwrap();
    let msg = assert_one_line_error(&out, "not a JSON profile of ftprof");
    assert!(msg.contains("--format json"), "{msg}");
    let out = ftprof().arg("report").arg(dir.path().join("missing.json")).output().unwrap();
    assert_one_line_error(&out, "cannot read");
}

/// Thread time per thread label `name (tid)` from ftprof's own totals.
fn thread_times(p: &analysis::Profile) -> Vec<(String, f64)> {
    let per = p.summary.period_us();
    p.threads
        .iter()
        .map(|t| {
            let us: f64 = p.stacks.iter().filter(|s| s.thread == t.tid).map(|s| s.time_us(per)).sum();
            (format!("{} ({})", t.name, t.tid), us)
        })
        .filter(|t| t.1 > 0.0)
        .collect()
}

#[test]
fn speedscope_file_validates_and_loads_in_speedscope() {
    let dir = tempdir();
    let file = dir.path().join("handoff.speedscope.json");
    report(&["--idle"], &file);
    let p = profile();
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let total: f64 = doc["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["weights"].as_array().unwrap())
        .map(|w| w.as_f64().unwrap())
        .sum();
    let expected = p.summary.thread_time_us as f64;
    assert!((total - expected).abs() <= 0.01 * expected, "speedscope total {total} µs vs ftprof {expected} µs");
    let shot = artifacts().join("speedscope.png");
    let v = browser("speedscope", &file, shot.to_str().unwrap());
    assert_eq!(v["schema_valid"], true, "speedscope's file-format-schema.json: {v:#}");
    let shown = v["text_after"].as_str().unwrap();
    assert!(!shown.to_lowercase().contains("error"), "{shown}");
    // speedscope lists every thread with its total weight (e.g. "1.95s"): ftprof's figures.
    for (name, us) in thread_times(&p) {
        // The selector's rows: "2\tholder (5183)\t1.95s" (the toolbar also names the active one).
        let line = shown
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not in speedscope's profile list:\n{shown}"));
        let s = line
            .split_whitespace()
            .last()
            .and_then(|w| w.strip_suffix('s'))
            .and_then(|w| {
                w.strip_suffix('m')
                    .map(|ms| ms.parse::<f64>().ok().map(|x| x / 1e3))
                    .unwrap_or_else(|| w.parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("no total weight in speedscope's line {line:?}"));
        assert!((s * 1e6 - us).abs() <= (0.01 * us).max(6_000.0), "{name}: speedscope {s} s, ftprof {us} µs");
    }
}

/// `go tool pprof` figures: "12.5ms" → ns.
fn duration_ns(s: &str) -> f64 {
    let s = s.trim().trim_end_matches(',');
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic() || c == 'µ').unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("not a duration: {s}"));
    n * match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "min" => 60e9,
        "hrs" | "h" => 3600e9,
        u => panic!("unit {u} in {s}"),
    }
}

fn go_pprof(args: &[&str], file: &Path) -> String {
    node_modules(); // installs golang-go when missing
    let home = tempdir();
    let out = Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("GOCACHE", home.path().join("cache"))
        .env("GOPATH", home.path().join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("go (golang-go) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&out.stderr));
    text
}

/// `(total, first row's function)` of `go tool pprof -top`.
fn top(text: &str) -> (f64, String, f64) {
    let showing =
        text.lines().find(|l| l.starts_with("Showing nodes accounting for")).unwrap_or_else(|| panic!("{text}"));
    let total = showing.split(" of ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap();
    let header = text.lines().position(|l| l.trim_start().starts_with("flat")).unwrap();
    let row = text.lines().nth(header + 1).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    (duration_ns(total), cols[5..].join(" "), duration_ns(cols[0]))
}

#[test]
fn pprof_reads_in_go_tool_pprof_with_ftprofs_top_function_and_totals() {
    let dir = tempdir();
    let file = dir.path().join("handoff.pb.gz");
    report(&[], &file);
    let p = profile();
    // CPU: ftprof's CPU samples × period; the top function: the leaf with most CPU samples.
    let (total, func, flat) = top(&go_pprof(&["-top", "-nodecount=5"], &file));
    let cpu_ns = (p.summary.samples * p.summary.period_ns) as f64;
    assert!((total - cpu_ns).abs() <= 0.01 * cpu_ns, "go tool pprof total {total} ns vs ftprof {cpu_ns} ns");
    let mut leaves: std::collections::HashMap<String, u64> = Default::default();
    for (s, frames) in p.iter_stacks() {
        if let Some(f) = frames.last() {
            let name = if f.kind == analysis::FrameKind::Python { f.name.clone() } else { f.label() };
            *leaves.entry(name).or_default() += s.samples;
        }
    }
    let max = *leaves.values().max().unwrap();
    let expected: Vec<&String> = leaves.iter().filter(|(_, &v)| v == max).map(|(k, _)| k).collect();
    assert!(expected.contains(&&func), "go tool pprof's top function {func:?}, ftprof's {expected:?}");
    let want = (max * p.summary.period_ns) as f64;
    assert!((flat - want).abs() <= 0.01 * want + 1e5, "flat {flat} vs {want}");
    // Waiting (idle waits left out by default): the lock leaf on top, ftprof's lock total.
    let (wait_total, wait_top, wait_flat) = top(&go_pprof(&["-top", "-nodecount=5", "-sample_index=wait"], &file));
    let wait_ns: f64 = p.stacks.iter().filter(|s| !s.category.is_idle()).map(|s| s.wait_us as f64 * 1e3).sum();
    assert!((wait_total - wait_ns).abs() <= 0.01 * wait_ns, "wait total {wait_total} vs {wait_ns}");
    let lock = &p.locks[0];
    if wait_top.starts_with("[lock: ") {
        assert!(wait_top.contains(&recording().lock), "{wait_top}");
        let lock_wait_ns = (lock.total_us - lock.spin_us) as f64 * 1e3;
        assert!((wait_flat - lock_wait_ns).abs() <= 0.02 * lock_wait_ns + 1e6, "{wait_flat} vs {lock_wait_ns}");
    } else {
        // Runqueue time can outweigh the lock on a busy machine: then the lock is listed below.
        let all = go_pprof(&["-top", "-sample_index=wait"], &file);
        assert!(all.contains(&format!("[lock: _thread.lock @ {}]", recording().lock)), "{all}");
    }

    // The same file decoded with the checked-in prost types.
    let m = flamegraph::pprof::read(&std::fs::read(&file).unwrap()).unwrap();
    let s = |i: i64| m.string_table[i as usize].clone();
    let types: Vec<(String, String)> = m.sample_type.iter().map(|v| (s(v.r#type), s(v.unit))).collect();
    assert_eq!(
        types,
        [
            ("cpu".into(), "nanoseconds".into()),
            ("wait".into(), "nanoseconds".into()),
            ("samples".into(), "count".into()),
            ("blame".into(), "nanoseconds".into())
        ]
    );
    // Every CPU sample but those of idle categories (written only with --idle; a loaded run had
    // one CPU sample on its way into a wait).
    let count: i64 = m.sample.iter().map(|x| x.value[2]).sum();
    let busy: u64 = p.stacks.iter().filter(|s| !s.category.is_idle()).map(|s| s.samples).sum();
    assert_eq!(count as u64, busy);
    let label =
        |x: &flamegraph::pprof::proto::Sample, k: &str| x.label.iter().find(|l| s(l.key) == k).map(|l| s(l.str));
    let waiter = format!("waiter ({})", recording().waiter_tid);
    let locked: Vec<&flamegraph::pprof::proto::Sample> =
        m.sample.iter().filter(|x| label(x, "lock").is_some_and(|l| l.contains(&recording().lock))).collect();
    assert!(!locked.is_empty(), "samples labelled with the lock");
    assert!(locked
        .iter()
        .any(|x| label(x, "thread").as_deref() == Some(waiter.as_str())
            && label(x, "category").as_deref() == Some("lock")));
    let py_waiter = m.function.iter().find(|f| s(f.name) == "waiter").expect("the waiter function");
    assert!(s(py_waiter.filename).ends_with("lock_handoff.py"));
    assert_eq!(py_waiter.start_line as u64, line_of(&workload("lock_handoff.py"), "def waiter"));
    let wait_line = line_of(&workload("lock_handoff.py"), "WAIT-LINE");
    assert!(m
        .location
        .iter()
        .any(|l| l.line.iter().any(|x| x.function_id == py_waiter.id && x.line as u64 == wait_line)));
}

#[test]
fn firefox_profile_has_threads_categories_and_wait_markers() {
    let dir = tempdir();
    let file = dir.path().join("handoff.gecko.json");
    let stderr = report(&[], &file);
    assert!(stderr.contains("profiler.firefox.com") && stderr.contains("Load a profile from file"), "{stderr}");
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // What fxprof-processed-profile 0.8 writes.
    assert_eq!(v["meta"]["version"], 24);
    assert_eq!(v["meta"]["preprocessedProfileVersion"], 55);
    let cats: Vec<String> =
        v["meta"]["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    for c in ["Python", "Native", "Kernel", "wait: lock", "wait: runqueue"] {
        assert!(cats.contains(&c.to_string()), "{c} in {cats:?}");
    }
    let threads = v["threads"].as_array().unwrap();
    let names: Vec<&str> = threads.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"holder") && names.contains(&"waiter"), "{names:?}");
    let waiter = threads.iter().find(|t| t["name"] == "waiter").unwrap();
    assert_eq!(
        waiter["tid"].as_u64().or_else(|| waiter["tid"].as_str().and_then(|t| t.parse().ok())),
        Some(recording().waiter_tid)
    );
    let strings = waiter["stringArray"].as_array().unwrap();
    let markers = &waiter["markers"];
    let data = markers["data"].as_array().unwrap();
    let lock_marker = data
        .iter()
        .position(|d| {
            d["type"] == "FtprofWait"
                && strings[d["lock"].as_u64().unwrap() as usize].as_str().unwrap().contains(&recording().lock)
        })
        .unwrap_or_else(|| panic!("a wait marker naming the lock: {markers:#}"));
    let d = &data[lock_marker];
    assert!(d["cause"]["stack"].is_u64(), "the marker carries the waiting stack");
    let (start, end) =
        (markers["startTime"][lock_marker].as_f64().unwrap(), markers["endTime"][lock_marker].as_f64().unwrap());
    assert!((end - start - d["total"].as_f64().unwrap()).abs() < 0.01, "interval = time waiting");
    // CPU deltas make the CPU graph: the holder burned CPU.
    let holder = threads.iter().find(|t| t["name"] == "holder").unwrap();
    let deltas: f64 = holder["samples"]["threadCPUDelta"].as_array().unwrap().iter().filter_map(|x| x.as_f64()).sum();
    assert!(deltas > 0.0, "{:#}", holder["samples"]);
}

#[test]
fn scale_index_has_readable_charts_the_diff_and_links_to_each_report() {
    let dir = tempdir();
    let out_dir = dir.path().join("out");
    let out = ftprof()
        .args(["scale", "-t", "1,2,4", "-o"])
        .arg(&out_dir)
        .arg("--")
        .arg(python())
        .arg(workload("scale_serialized.py"))
        .args(["{n}", "1000000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ftprof scale failed: {}", String::from_utf8_lossy(&out.stderr));
    for n in [1, 2, 4] {
        assert!(out_dir.join(format!("report-n{n}.html")).is_file());
    }
    let shot = artifacts().join("scale-index.png");
    let v = browser("scale", &out_dir.join("index.html"), shot.to_str().unwrap());
    assert_eq!(strings(&v["links"]), ["report-n1.html", "report-n2.html", "report-n4.html"]);
    assert!(strings(&v["points"])[0] == "1" && strings(&v["points"]).len() == 3, "{v:#}");
    assert!(v["diff_frames"].as_u64().unwrap() > 5, "the differential flamegraph rendered: {v:#}");
    // A fit, or why there is none (1, 2, 4 on 2 CPUs: only N = 2 besides the baseline).
    assert!(
        strings(&v["fits"])
            .iter()
            .any(|f| f.starts_with("Amdahl") || f.starts_with("USL") || f.starts_with("no Amdahl fit")),
        "{v:#}"
    );
    let charts = v["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 2, "scaling and breakdown charts");
    let command = format!("{} {} {{n}} 1000000", python().display(), workload("scale_serialized.py").display());
    for (c, legend) in charts.iter().zip(["ideal (speedup = N)", "python"]) {
        // Integer thread counts (1, 2, 4: a log₂ axis), nothing drawn outside the chart, the
        // legend right of the plot, the whole command in the tooltip.
        assert_eq!(strings(&c["x_labels"]), ["1", "2", "4"], "{c:#}");
        assert_eq!(c["overflow"], serde_json::json!([]), "{c:#}");
        let texts = c["texts"].as_array().unwrap();
        let entry = texts.iter().find(|t| t[0] == legend).unwrap_or_else(|| panic!("legend {legend}: {c:#}"));
        assert!(entry[1].as_f64().unwrap() > c["axis_right"].as_f64().unwrap(), "legend outside the plot: {c:#}");
        assert!(c["tooltip"].as_str().unwrap().contains(&command), "{c:#}");
    }
}

/// `tests/workloads/blame.py two 3` recorded once as a JSON profile: `Holder` runs
/// `slow_section` inside `with lock:` while two waiters queue for the lock; `Holder-2` runs
/// `other_section` inside `with lock2:` while the third waits for that one.
struct BlameRecording {
    _dir: tempfile::TempDir,
    json: PathBuf,
    /// `_thread.lock @ 0x…`
    lock: String,
    holder: String,
    /// `slow_section (blame.py:N)`
    slow: String,
    lock2: String,
    holder2: String,
    /// `other_section (blame.py:N)`
    other: String,
}

fn blame_recording() -> &'static BlameRecording {
    static R: OnceLock<BlameRecording> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempdir();
        let json = dir.path().join("blame.json");
        let out = ftprof()
            .args(["record", "--format", "json", "-o"])
            .arg(&json)
            .arg("--")
            .arg(python())
            .arg(workload("blame.py"))
            .args(["two", "3"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ftprof record failed: {}", String::from_utf8_lossy(&out.stderr));
        let lock = format!("_thread.lock @ {}", printed(&out.stdout, "two"));
        let lock2 = format!("_thread.lock @ {}", printed(&out.stdout, "lock2"));
        let holder = format!("Holder ({})", tids(&out.stdout)["Holder"]);
        let holder2 = format!("Holder-2 ({})", tids(&out.stdout)["Holder-2"]);
        let slow = format!("slow_section (blame.py:{})", line_of(&workload("blame.py"), "SLOW-LINE"));
        let other = format!("other_section (blame.py:{})", line_of(&workload("blame.py"), "OTHER-LINE"));
        BlameRecording { _dir: dir, json, lock, holder, slow, lock2, holder2, other }
    })
}

/// `ftprof report blame.json --mode blame -o OUT`.
fn blame_report(out: &Path) {
    let o =
        ftprof().arg("report").arg(&blame_recording().json).args(["--mode", "blame", "-o"]).arg(out).output().unwrap();
    assert!(o.status.success(), "ftprof report --mode blame failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file(), "{} written", out.display());
}

/// The blame of `lock` in the recorded profile (µs) and the part handed over to a waiter that
/// sat in the runqueue (the machine's, not the holder's code).
fn blame_of(p: &analysis::Profile, lock: &str) -> (u64, u64) {
    let i = p.locks.iter().position(|l| l.description == lock).unwrap_or_else(|| panic!("no lock {lock}"));
    let handed = |b: &&analysis::blame::BlameStack| {
        b.frames.last().is_some_and(|&f| p.frames[f as usize].name == analysis::blame::HANDED_OVER)
    };
    let of = || p.blame.iter().filter(|b| b.lock == i);
    (of().map(|b| b.time_us).sum(), of().filter(handed).map(|b| b.time_us).sum())
}

#[test]
fn html_blame_view_puts_the_holders_slow_section_under_the_lock() {
    let r = blame_recording();
    let dir = tempdir();
    let html = dir.path().join("blame.html");
    blame_report(&html);
    let leaf = format!("[lock: {}]", r.lock);
    let shot = artifacts().join("report-blame-view.png");
    let v = browser_with("blame", &html, &[shot.to_str().unwrap(), &leaf]);
    assert_eq!(v["checked"], "blame", "--mode blame opens the blame view: {v:#}");
    assert!(v["view"].as_str().unwrap().contains("by the lock's holder"), "{v:#}");
    let frames = v["frames"].as_array().unwrap();
    let path = |f: &Value| strings(&f["path"]);
    // slow_section, under the holder thread and its caller, under the lock.
    let slow: Vec<&Value> = frames.iter().filter(|f| f["name"] == r.slow.as_str()).collect();
    assert!(!slow.is_empty(), "{} in the blame view: {v:#}", r.slow);
    assert!(
        slow.iter().any(|f| {
            let p = path(f);
            p.contains(&leaf) && p.contains(&r.holder) && p.iter().any(|x| x.starts_with("holder (blame.py:"))
        }),
        "{} under {leaf} and {}: {slow:?}",
        r.slow,
        r.holder
    );
    let leaf2 = format!("[lock: {}]", r.lock2);
    assert!(
        frames.iter().any(|f| f["name"] == r.other.as_str() && path(f).contains(&leaf2)),
        "{} under {leaf2}: {v:#}",
        r.other
    );
    // The held-by column of each lock's row names its holder's code with the waiting time and
    // share it caused.
    let rows: Vec<Vec<String>> = v["held_by"].as_array().unwrap().iter().map(strings).collect();
    for (leaf, line, holder) in [(&leaf, &r.slow, &r.holder), (&leaf2, &r.other, &r.holder2)] {
        let row = rows.iter().find(|x| &x[0] == leaf).unwrap_or_else(|| panic!("no row {leaf}: {rows:?}"));
        let first = row[1].lines().next().unwrap_or("");
        assert!(first.starts_with(&format!("{line} in {holder} ")), "held by: {row:?}");
        assert!(first.ends_with(" %)"), "with its share: {row:?}");
    }
    assert_eq!(v["held_by_header"], "held by");
    // After the click: the lock's stacks stay coloured (slow_section among them), the other
    // lock's (other_section) are grey; the view is still blame.
    assert_eq!(v["checked_after_click"], "blame");
    let hl = v["highlighted"].as_array().unwrap();
    let under = |f: &&Value| f["name"] == leaf.as_str() || path(f).contains(&leaf);
    let (mine, others): (Vec<&Value>, Vec<&Value>) = hl.iter().filter(|f| !path(f).is_empty()).partition(under);
    assert!(mine.iter().any(|f| f["name"] == r.slow.as_str()), "{hl:?}");
    assert!(mine.iter().all(|f| f["fill"] != "#e6e6e6"), "the lock's blame stacks stay coloured: {mine:?}");
    assert!(others.iter().any(|f| f["name"] == r.other.as_str()), "{hl:?}");
    assert!(others.iter().all(|f| f["fill"] == "#e6e6e6"), "the other lock's blame greys out: {others:?}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot saved at {}", shot.display());
}

#[test]
fn pprof_blame_sample_type_lists_slow_section_in_go_tool_pprof() {
    let r = blame_recording();
    let dir = tempdir();
    let file = dir.path().join("blame.pb.gz");
    blame_report(&file);
    let p = ftprof::report::load(&r.json).unwrap();
    let blame_ns = p.blame.iter().map(|b| b.time_us as f64 * 1e3).sum::<f64>();
    assert!(blame_ns > 1e8, "the waiters waited over 100 ms: {blame_ns} ns");
    let text = go_pprof(&["-top", "-sample_index=blame"], &file);
    let (total, _, _) = top(&text);
    assert!(
        (total - blame_ns).abs() <= 0.01 * blame_ns,
        "go tool pprof blame total {total} vs ftprof {blame_ns}\n{text}"
    );
    // slow_section is listed, with (nearly) all the waiting that was not a hand-over.
    let row = text
        .lines()
        .find(|l| l.trim_end().ends_with(" slow_section"))
        .unwrap_or_else(|| panic!("slow_section not in go tool pprof -sample_index=blame -top:\n{text}"));
    let flat = duration_ns(row.split_whitespace().next().unwrap());
    let (lock_us, handed_us) = blame_of(&p, &r.lock);
    let code_ns = (lock_us - handed_us) as f64 * 1e3;
    assert!(flat >= 0.8 * code_ns, "slow_section {flat} ns of the lock's {code_ns} ns:\n{text}");
    assert!(text.lines().any(|l| l.trim_end().ends_with(" other_section")), "{text}");
    // One lock's blame with -tagfocus: the second lock's holds other_section only.
    let one = go_pprof(&["-top", "-sample_index=blame", &format!("-tagfocus=lock={}", r.lock2)], &file);
    assert!(one.contains("other_section") && !one.contains("slow_section"), "{one}");
    // blame is the default sample type of a --mode blame file.
    assert_eq!(top(&go_pprof(&["-top"], &file)).0, total);
    // The lock frame is the root: -peek shows it calling the holder's frames.
    let tree = go_pprof(&["-traces", "-sample_index=blame"], &file);
    assert!(tree.contains(&format!("[lock: {}]", r.lock)), "{tree}");
    // Labels: the lock and the holder thread.
    let m = flamegraph::pprof::read(&std::fs::read(&file).unwrap()).unwrap();
    let s = |i: i64| m.string_table[i as usize].clone();
    let label =
        |x: &flamegraph::pprof::proto::Sample, k: &str| x.label.iter().find(|l| s(l.key) == k).map(|l| s(l.str));
    assert!(m.sample.iter().any(|x| x.value[3] > 0
        && label(x, "lock") == Some(r.lock.clone())
        && label(x, "holder") == Some(r.holder.clone())));
    // CPU and waiting time are still in the file.
    assert!(m.sample.iter().any(|x| x.value[0] > 0) && m.sample.iter().any(|x| x.value[1] > 0));
}

#[test]
fn speedscope_blame_profiles_validate_and_load_in_speedscope() {
    let r = blame_recording();
    let dir = tempdir();
    let file = dir.path().join("blame.speedscope.json");
    blame_report(&file);
    let p = ftprof::report::load(&r.json).unwrap();
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let profiles = doc["profiles"].as_array().unwrap();
    // One profile per lock, the most blamed first (it opens).
    let mut blame: Vec<(&str, f64)> = profiles[..2]
        .iter()
        .map(|x| {
            (x["name"].as_str().unwrap(), x["weights"].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).sum())
        })
        .collect();
    assert!(blame[0].1 >= blame[1].1, "{blame:?}");
    blame.sort_by(|a, b| a.0.cmp(b.0));
    let (name, name2) = (format!("blame: {}", r.lock), format!("blame: {}", r.lock2));
    let mut want =
        vec![(name.as_str(), blame_of(&p, &r.lock).0 as f64), (name2.as_str(), blame_of(&p, &r.lock2).0 as f64)];
    want.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(blame, want);
    let i = profiles.iter().position(|x| x["name"] == name.as_str()).unwrap();
    let frames = doc["shared"]["frames"].as_array().unwrap();
    let names = |sample: &Value| -> Vec<String> {
        sample
            .as_array()
            .unwrap()
            .iter()
            .map(|i| frames[i.as_u64().unwrap() as usize]["name"].as_str().unwrap().into())
            .collect()
    };
    let samples: Vec<Vec<String>> = profiles[i]["samples"].as_array().unwrap().iter().map(names).collect();
    assert!(samples.iter().all(|s| s[0] == format!("[lock: {}]", r.lock)), "rooted at the lock: {samples:?}");
    assert!(samples.iter().any(|s| s.get(1) == Some(&r.holder) && s.last() == Some(&r.slow)), "{samples:?}");
    // The threads follow, weighted as in wall mode.
    assert!(profiles.iter().any(|x| x["name"] == r.holder.as_str()));
    let shot = artifacts().join("speedscope-blame.png");
    let v = browser("speedscope", &file, shot.to_str().unwrap());
    assert_eq!(v["schema_valid"], true, "speedscope's file-format-schema.json: {v:#}");
    let shown = v["text_after"].as_str().unwrap();
    assert!(shown.contains(&name) && shown.contains(&name2) && !shown.to_lowercase().contains("error"), "{shown}");
}

#[test]
fn firefox_refuses_blame_mode_in_one_line() {
    let dir = tempdir();
    let out = ftprof()
        .arg("report")
        .arg(&blame_recording().json)
        .args(["--mode", "blame", "-o"])
        .arg(dir.path().join("b.gecko.json"))
        .output()
        .unwrap();
    let msg = assert_one_line_error(&out, "Firefox");
    assert!(msg.contains("--format pprof"), "{msg}");
    // `record` refuses before it starts the target, not after a long recording.
    let started = std::time::Instant::now();
    let out = ftprof()
        .args(["record", "--mode", "blame", "-o"])
        .arg(dir.path().join("r.gecko.json"))
        .arg("--")
        .arg(python())
        .arg(workload("blame.py"))
        .args(["lock", "30"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "Firefox");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "the target was not started");
    assert!(started.elapsed().as_secs() < 20, "refused at once: {:?}", started.elapsed());
}

/// The Findings panel and the source view in Chromium: a lock held across slow work
/// (pitfalls.py), its finding anchored on the holder's line of the program's source, linked both
/// ways with the flamegraph. Screenshot: target/test-artifacts/report/report-findings-source.png.
#[test]
fn html_findings_are_anchored_in_the_source_view() {
    let dir = tempdir();
    let json = dir.path().join("p.json");
    let mut found = None;
    // Sampling on a loaded machine: up to three recordings for the finding to show.
    for _ in 0..3 {
        let out = ftprof()
            .args(["record", "--rate", "999", "--format", "json", "-o"])
            .arg(&json)
            .arg("--")
            .arg(python())
            .arg(workload("pitfalls.py"))
            .args(["lock-held-across-work", "bad", "2", "1.5"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ftprof record failed: {}", String::from_utf8_lossy(&out.stderr));
        let p = ftprof::report::load(&json).unwrap();
        if let Some(i) = p.findings.iter().position(|f| f.id == "lock-held-across-work") {
            found = Some((p, i));
            break;
        }
    }
    let (p, index) = found.expect("the lock held across slow work is a finding in one of three recordings");
    let f = &p.findings[index];
    let hold = line_of(&workload("pitfalls.py"), "while i < 20_000: x += i; i += 1  # HOLD-LINE");
    assert_eq!(f.line, Some(hold as u32), "{f:?}");
    let html = dir.path().join("report.html");
    let o = ftprof().arg("report").arg(&json).arg("-o").arg(&html).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shot = artifacts().join("report-findings-source.png");
    let _ = std::fs::remove_file(&shot);
    let v = browser_with("findings", &html, &[shot.to_str().unwrap(), &index.to_string()]);
    let ids: Vec<String> =
        v["findings"].as_array().unwrap().iter().map(|x| x[0].as_str().unwrap().to_string()).collect();
    assert_eq!(ids[index], "lock-held-across-work", "{v:#}");
    assert!(strings(&v["sources"]).iter().any(|s| s.starts_with("pitfalls.py — ")), "{v:#}");
    // Finding → source: its line, with its mark, showing the code of that line.
    assert_eq!(v["target"]["line"], hold.to_string(), "{v:#}");
    assert!(v["target"]["code"].as_str().unwrap().contains("while i < 20_000: x += i; i += 1"), "{v:#}");
    assert!(strings(&v["target"]["marks"]).contains(&f.title), "{v:#}");
    // Finding → flamegraph: its stacks stay coloured, the others grey out.
    let hl = &v["highlight"];
    assert!(hl["leaf_frames"].as_u64().unwrap() >= 1 && hl["greyed"].as_u64().unwrap() >= 1, "{hl}");
    assert!(strings(&hl["leaf_fill"]).iter().all(|c| c != "#e6e6e6"), "{hl}");
    assert_eq!(v["mark_selects"], "lock-held-across-work", "the source mark leads back to its finding");
    // Source → flamegraph: a hot line searches its frames.
    let line = v["source_click"]["line"].as_str().unwrap();
    assert!(v["source_click"]["box"].as_str().unwrap().ends_with(&format!(":{line}\\)")), "{v:#}");
    assert!(v["search_hits"].as_u64().unwrap() >= 1, "{v:#}");
    // Flamegraph → source: a Python frame shows its line.
    let frame = v["clicked_frame"].as_str().expect("a Python frame with a line in the flamegraph");
    let want = frame.rsplit(':').next().unwrap().trim_end_matches(')');
    assert_eq!(v["frame_target"], want, "{v:#}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot at {}", shot.display());
}
