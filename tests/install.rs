//! `pip install ftprof`: the wheel built by maturin (installed from PyPI into a cached virtual
//! environment) installs into a fresh virtual environment, puts `ftprof` on that environment's
//! PATH, and the installed binary profiles the free-threaded CPython.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// ftprof's cache (`$FTPROF_CACHE`, else `$XDG_CACHE_HOME/ftprof`, else `~/.cache/ftprof`), as in
/// `scripts/provision-python.sh`.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTPROF_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("ftprof")
}

/// The Python that builds and installs the wheel: `$FTPROF_HOST_PYTHON`, else `python3` on PATH
/// (any CPython ≥ 3.8 with `venv`; the wheel does not depend on its version).
fn host_python() -> PathBuf {
    std::env::var_os("FTPROF_HOST_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// maturin from PyPI in a virtual environment kept in the cache (created on first use).
fn maturin() -> PathBuf {
    let venv = cache_dir().join("maturin-venv");
    let bin = venv.join("bin/maturin");
    if Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return bin;
    }
    std::fs::create_dir_all(cache_dir()).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(host_python()).args(["-m", "venv"]).arg(&venv), "python3 -m venv (maturin)");
    run(
        Command::new(venv.join("bin/pip")).args(["install", "--disable-pip-version-check", "-q", "maturin>=1.5,<2"]),
        "pip install maturin",
    );
    bin
}

fn wheel_in(dir: &Path) -> PathBuf {
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "expected one wheel in {}: {wheels:?}", dir.display());
    wheels[0].clone()
}

#[test]
fn pip_installed_wheel_puts_a_working_ftprof_on_path() {
    let dir = tempdir();
    let wheels = dir.path().join("wheels");
    // The dev profile reuses the test build's compiled dependencies (a release build of the whole
    // tree takes many minutes on a small machine); packaging is the same as `--release`.
    run(
        Command::new(maturin()).current_dir(root()).args(["build", "--profile", "dev", "--out"]).arg(&wheels),
        "maturin build",
    );
    let wheel = wheel_in(&wheels);
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    eprintln!("built {name} ({} bytes)", std::fs::metadata(&wheel).unwrap().len());
    // One wheel for every Python version, tagged for the platform (manylinux, from maturin's
    // auditwheel check of the binary's glibc symbols).
    assert!(name.starts_with("ftprof-") && name.contains("-py3-none-"), "{name}");
    assert!(name.contains("manylinux") && name.ends_with("_x86_64.whl"), "{name}");

    let venv = dir.path().join("fresh venv");
    run(Command::new(host_python()).args(["-m", "venv"]).arg(&venv), "python3 -m venv (fresh)");
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "--no-index", "-q"])
            .arg(&wheel),
        "pip install the wheel",
    );
    assert!(venv.join("bin/ftprof").is_file(), "the wheel did not install bin/ftprof");

    // `ftprof` found through the environment's PATH, as after `source venv/bin/activate`.
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let which = run(Command::new("sh").args(["-c", "command -v ftprof"]).env("PATH", &path), "command -v ftprof");
    assert_eq!(
        Path::new(String::from_utf8_lossy(&which.stdout).trim()),
        venv.join("bin/ftprof"),
        "ftprof on PATH is not the installed one"
    );
    let svg = dir.path().join("x.svg");
    let code = "def wheel_hot_function():\n    s = 0\n    for i in range(6_000_000):\n        s += i * i\n    return s\n\nwheel_hot_function()\n";
    let out = run(
        Command::new("ftprof")
            .env("PATH", &path)
            .current_dir(dir.path())
            .args(["record", "-o", "x.svg", "--"])
            .arg(python())
            .args(["-c", code]),
        "the installed ftprof record",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrote x.svg"), "{stderr}");
    let text = std::fs::read_to_string(&svg).unwrap();
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, opts).expect("the SVG parses");
    let titles: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("title")).filter_map(|n| n.text()).collect();
    assert!(
        titles.iter().any(|t| t.contains("wheel_hot_function")),
        "no frame of wheel_hot_function in the flamegraph ({} frames); ftprof said:\n{stderr}",
        titles.len()
    );
}
