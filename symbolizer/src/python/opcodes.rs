//! Opcode names of a CPython build, asked of the interpreter itself (opcode numbers change
//! between minor versions; specialized opcodes are mapped to their base instruction).

use std::path::Path;
use std::process::Command;

/// What an instruction touches, in words (in the `frames` crate: a pure function of the code
/// object and the names read here).
pub use frames::python::describe_instr;

const SCRIPT: &str = r#"
import dis
try:
    import _opcode_metadata as m
    spec = m._specializations
except Exception:
    spec = {}
names = list(getattr(dis, "_all_opname", dis.opname))[:256]
base = {s: b for b, subs in spec.items() for s in subs}
print("\n".join(base.get(n, n) for n in names))
"#;

/// Base opcode name for every opcode number (index = opcode), or `None` when the interpreter
/// cannot be run. Only executables owned by root or by us are run: a profiler running with
/// privileges must not execute another user's binary.
pub fn base_opnames(interpreter: &Path) -> Option<Vec<String>> {
    parse_opnames(&run_script(interpreter, SCRIPT)?)
}

fn parse_opnames(text: &str) -> Option<Vec<String>> {
    let names: Vec<String> = text.lines().map(str::to_string).collect();
    (names.len() > 100).then_some(names)
}

/// Run `script` with the interpreter, if it may be run: only executables owned by root or by us
/// (a profiler running with privileges must not execute another user's binary).
fn run_script(interpreter: &Path, script: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(interpreter).ok()?;
    let euid = nix::unistd::geteuid().as_raw();
    let name = interpreter.file_name()?.to_string_lossy();
    if !(md.uid() == 0 || md.uid() == euid) || md.mode() & 0o022 != 0 || name.starts_with("lib") {
        return None;
    }
    // Only what the user who started ftprof could execute (`access` checks the real ids).
    nix::unistd::access(interpreter, nix::unistd::AccessFlags::X_OK).ok()?;
    let out = Command::new(interpreter)
        .args(["-I", "-S", "-c", script])
        .env("PYTHON_GIL", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// [`base_opnames`] through a cache file in `dir`, keyed by the interpreter's path, size and
/// modification time (starting Python costs ~20 ms).
pub fn base_opnames_cached(interpreter: &Path, dir: &Path) -> Option<Vec<String>> {
    cached(interpreter, dir, "opnames", SCRIPT, parse_opnames)
}

/// What `script` prints, parsed by `parse`, through a cache file `{prefix}-{key}` in `dir`, keyed
/// by the interpreter's path, size, modification time and inode. The script's output is stored,
/// and a cache file that does not parse is replaced.
fn cached<T>(interpreter: &Path, dir: &Path, prefix: &str, script: &str, parse: fn(&str) -> Option<T>) -> Option<T> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(interpreter).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (interpreter, md.size(), md.mtime(), md.ino()).hash(&mut h);
    let file = dir.join(format!("{prefix}-{:016x}", h.finish()));
    if let Some(v) = std::fs::read_to_string(&file).ok().as_deref().and_then(parse) {
        return Some(v);
    }
    let text = run_script(interpreter, script)?;
    let v = parse(&text)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, &text).is_ok() {
        let _ = std::fs::rename(&tmp, &file);
    }
    Some(v)
}

const CACHES_SCRIPT: &str = r#"
import dis, opcode
try:
    import _opcode_metadata as m
    spec = m._specializations
except Exception:
    spec = {}
names = list(getattr(dis, "_all_opname", dis.opname))[:256]
base = {s: b for b, subs in spec.items() for s in subs}
c = getattr(opcode, "_inline_cache_entries", {})
print("\n".join(str(c.get(base.get(n, n), 0)) for n in names))
"#;

/// Inline cache entries (code units) after each opcode (index = opcode), asked of the
/// interpreter (`opcode._inline_cache_entries`) and cached in `dir` like [`base_opnames_cached`].
pub fn inline_caches_cached(interpreter: &Path, dir: &Path) -> Option<Vec<u8>> {
    cached(interpreter, dir, "opcaches", CACHES_SCRIPT, |text| {
        let v: Vec<u8> = text.lines().map(|l| l.trim().parse().ok()).collect::<Option<_>>()?;
        (v.len() > 100).then_some(v)
    })
}
