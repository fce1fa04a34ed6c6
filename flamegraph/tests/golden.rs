//! Golden-file tests: the folded stacks, terminal summary and JSON profile of a fixed synthetic
//! profile (`analysis::fixture::profile`) must match the files in `tests/golden/` byte for byte.
//! After an intended change of the output, regenerate them with
//! `FTPROF_BLESS=1 cargo test -p flamegraph --test golden` and review the diff.

use std::path::PathBuf;

use flamegraph::Mode;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("FTPROF_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with FTPROF_BLESS=1 to create it)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines; first differences below). If the change is intended, \
             regenerate with FTPROF_BLESS=1 and review the diff.\n{}",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn folded_cpu() {
    check("folded_cpu.txt", &flamegraph::folded(&analysis::fixture::profile(), Mode::Cpu, false));
}

#[test]
fn folded_wait() {
    check("folded_wait.txt", &flamegraph::folded(&analysis::fixture::profile(), Mode::Wait, false));
}

#[test]
fn folded_wall_with_idle() {
    check("folded_wall_idle.txt", &flamegraph::folded(&analysis::fixture::profile(), Mode::Wall, true));
}

#[test]
fn folded_wall_threads_merged() {
    check("folded_wall_merged.txt", &flamegraph::folded_with(&analysis::fixture::profile(), Mode::Wall, false, false));
}

#[test]
fn folded_blame() {
    check("folded_blame.txt", &flamegraph::folded(&analysis::fixture::profile(), Mode::Blame, false));
}

#[test]
fn summary() {
    check("summary.txt", &flamegraph::summary_text(&analysis::fixture::profile()));
}

#[test]
fn json() {
    let mut out = Vec::new();
    flamegraph::json(&analysis::fixture::profile(), &mut out).unwrap();
    check("fixture.json", &String::from_utf8(out).unwrap());
}

#[test]
fn the_profile_is_deterministic() {
    // Golden files are only meaningful if building the same profile twice gives the same bytes
    // (no hash-map order leaking into the output).
    let a = serde_json::to_string(&analysis::fixture::profile()).unwrap();
    for _ in 0..5 {
        assert_eq!(a, serde_json::to_string(&analysis::fixture::profile()).unwrap());
    }
}
