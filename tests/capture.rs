//! Captures (`record --capture FILE`, `report FILE`): a recording's capture re-renders
//! byte-identically in the format and mode it was recorded in, and in every other format the
//! same as the recording's JSON profile does; a broken capture is refused in one line. (Every
//! recording made through `common::record_json` — most end-to-end workloads — also checks that
//! its capture gives back its JSON.)

mod common;

use std::path::Path;

use common::*;

/// Record `workload args` into `file` (format from its name) with `extra` options and a
/// capture; returns the capture's path (inside `dir`).
fn record(dir: &Path, workload_name: &str, args: &[&str], file: &str, extra: &[&str]) -> std::path::PathBuf {
    let capture = dir.join(format!("{file}.capture"));
    let out = ftprof()
        .arg("record")
        .arg("-o")
        .arg(dir.join(file))
        .arg("--capture")
        .arg(&capture)
        .args(extra)
        .arg("--")
        .arg(python())
        .arg(workload(workload_name))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ftprof failed: {stderr}");
    assert!(stderr.contains("wrote the capture"), "{stderr}");
    capture
}

fn report(input: &Path, output: &Path, args: &[&str]) -> Vec<u8> {
    let out = ftprof().arg("report").arg(input).arg("-o").arg(output).args(args).output().unwrap();
    assert!(out.status.success(), "ftprof report failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(output).unwrap()
}

#[test]
fn the_html_report_and_every_export_rerender_identically() {
    let dir = tempdir();
    let d = dir.path();
    let capture = record(d, "lock_handoff.py", &[], "p.html", &[]);
    assert_rerenders(&capture, &std::fs::read(d.join("p.html")).unwrap(), "html");
    // Every other format: the capture renders as the recording's JSON profile does.
    report(&capture, &d.join("p.json"), &[]);
    for format in ["svg", "folded", "speedscope", "firefox", "pprof", "json"] {
        for mode in ["wall", "cpu", "wait", "blame"] {
            if (format, mode) == ("firefox", "blame") {
                continue; // not written (a one-line refusal)
            }
            let args = ["--format", format, "--mode", mode];
            let from_json = report(&d.join("p.json"), &d.join(format!("j.{format}")), &args);
            let from_capture = report(&capture, &d.join(format!("c.{format}")), &args);
            assert!(from_json == from_capture, "{format} --mode {mode} differs");
        }
    }
}

#[test]
fn blame_flamegraphs_and_exact_waits_rerender_identically() {
    let dir = tempdir();
    let d = dir.path();
    let capture = record(d, "blame.py", &["lock", "1"], "b.folded", &["--mode", "blame"]);
    let recorded = std::fs::read(d.join("b.folded")).unwrap();
    assert!(!recorded.is_empty());
    let again = report(&capture, &d.join("again.folded"), &["--format", "folded", "--mode", "blame"]);
    assert!(again == recorded, "the blame flamegraph re-renders differently");
    let capture = record(d, "list_cs.py", &[], "x.svg", &["--exact-waits"]);
    assert_rerenders(&capture, &std::fs::read(d.join("x.svg")).unwrap(), "svg");
}

#[test]
fn broken_captures_are_refused_in_one_line() {
    let dir = tempdir();
    let d = dir.path();
    let capture = record(d, "two_threads.py", &["0.3"], "p.json", &["--no-waits"]);
    let bytes = std::fs::read(&capture).unwrap();
    let cut = d.join("cut.capture");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = ftprof().arg("report").arg(&cut).arg("-o").arg(d.join("x.html")).output().unwrap();
    assert_one_line_error(&out, "the capture is truncated");
    assert!(!d.join("x.html").exists());
    // The capture and the output cannot be one file.
    let same = d.join("same.json");
    let out = ftprof()
        .arg("record")
        .arg("-o")
        .arg(&same)
        .arg("--capture")
        .arg(&same)
        .arg("--")
        .arg(python())
        .arg(workload("two_threads.py"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "give --capture another file");
}
