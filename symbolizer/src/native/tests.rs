//! End-to-end tests: unwinding this very process, symbolizing gcc-built code with inlining,
//! and (when built) the real free-threaded CPython.

use std::hint::black_box;
use std::time::Duration;

use super::test_support::{compile_c, python_binary};
use super::*;

fn own_pid() -> u32 {
    std::process::id()
}

/// Register snapshot plus a copy of the stack from `sp` up to `stack_top` (at most 64 KiB),
/// like a perf sample with PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER.
struct Sample {
    regs: Regs,
    stack: Vec<u8>,
}

/// Captures the caller-visible registers at this point of the calling function. Must be
/// inlined so that ip/sp/bp belong to the caller's frame.
macro_rules! capture_here {
    ($stack_top:expr) => {{
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: only reads registers.
        unsafe {
            std::arch::asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags),
            );
        }
        let len = ($stack_top - sp).min(64 * 1024) as usize;
        // SAFETY: [sp, stack_top) is this thread's mapped stack; everything at or above `sp`
        // belongs to live frames of this thread.
        let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
        Sample { regs: Regs { ip, sp, bp, ..Default::default() }, stack }
    }};
}

/// End address of the current thread's stack mapping.
fn stack_top() -> u64 {
    let probe = 0u8;
    let addr = black_box(&probe) as *const u8 as u64;
    maps::own_mapping_containing(addr).expect("stack mapping").end
}

#[inline(never)]
fn inner(top: u64) -> Sample {
    let s = capture_here!(top);
    black_box(s)
}

#[inline(never)]
fn middle(top: u64) -> Sample {
    let s = inner(black_box(top));
    black_box(s)
}

#[inline(never)]
fn outer(top: u64) -> Sample {
    let s = middle(black_box(top));
    black_box(s)
}

/// Outer (non-inlined) function names of an unwound stack.
fn outer_names(native: &mut Native, pid: u32, addrs: &[u64]) -> Vec<String> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let frames = native.symbolize(pid, a, i > 0);
            assert!(!frames.is_empty());
            assert!(!frames.last().unwrap().inlined);
            assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined));
            frames.last().unwrap().function.clone().unwrap_or_else(|| format!("?? {a:#x}"))
        })
        .collect()
}

fn position(names: &[String], from: usize, suffix: &str) -> usize {
    names[from..]
        .iter()
        .position(|n| n.ends_with(suffix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no frame ending with {suffix:?} after #{from} in {names:#?}"))
}

#[test]
fn unwinds_and_symbolizes_own_stack() {
    let sample = outer(stack_top());
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();

    let unwound = native.unwind(pid, sample.regs, &sample.stack);
    let names = outer_names(&mut native, pid, &unwound.addrs);
    eprintln!("complete={} frames={names:#?}", unwound.complete);

    let i = position(&names, 0, "::inner");
    assert_eq!(i, 0, "the sampled ip is in inner");
    let m = position(&names, i + 1, "::middle");
    let o = position(&names, m + 1, "::outer");
    assert_eq!((m, o), (1, 2), "{names:#?}");
    assert!(names[3].ends_with("::unwinds_and_symbolizes_own_stack"), "{names:#?}");
    // Then the test harness (closures and std frames).
    assert!(names[4..].iter().any(|n| n.contains("test::") || n.contains("std::")), "{names:#?}");
    assert!(unwound.complete || unwound.addrs.len() >= 5, "{unwound:?}");

    // The source location of `inner` is this file.
    let top = native.symbolize(pid, unwound.addrs[0], false);
    assert!(top[0].file.as_deref().is_some_and(|f| f.ends_with("native/tests.rs")), "{top:?}");
}

/// qsort comparator that snapshots the stack once: the walk has to go through glibc, which is
/// built without frame pointers, so it needs glibc's `.eh_frame`.
extern "C" fn capturing_compare(a: *const libc::c_void, b: *const libc::c_void) -> i32 {
    CAPTURED.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            let top = TOP.with(|t| t.get());
            *c = Some(capture_here!(top));
        }
    });
    // SAFETY: qsort passes pointers to elements of the u32 array below.
    unsafe { (*(a as *const u32)).cmp(&*(b as *const u32)) as i32 }
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Sample>> = const { std::cell::RefCell::new(None) };
    static TOP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[inline(never)]
fn sort_with_libc() {
    let mut v: Vec<u32> = (0..64).rev().collect();
    // SAFETY: valid array, element size and comparator.
    unsafe { libc::qsort(v.as_mut_ptr().cast(), v.len(), 4, Some(capturing_compare)) };
    black_box(&v);
}

#[test]
fn unwinds_through_libc() {
    TOP.with(|t| t.set(stack_top()));
    sort_with_libc();
    let sample = CAPTURED.with(|c| c.borrow_mut().take()).expect("comparator ran");
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let unwound = native.unwind(pid, sample.regs, &sample.stack);
    let names = outer_names(&mut native, pid, &unwound.addrs);
    eprintln!("complete={} frames={names:#?}", unwound.complete);
    let libc_frames: Vec<_> =
        unwound.addrs.iter().filter_map(|&a| native.mapping_for(pid, a)).filter(|m| m.path.contains("libc")).collect();
    assert!(!libc_frames.is_empty(), "no libc frame in {names:#?}");
    let s = position(&names, 0, "::sort_with_libc");
    position(&names, s + 1, "::unwinds_through_libc");
}

/// C code with only `.debug_frame` CFI (no `.eh_frame`) and no frame pointers.
const DEBUG_FRAME_C: &str = r#"volatile int sink;
__attribute__((noinline)) void c_inner(void (*cb)(void)) { cb(); sink++; }
__attribute__((noinline)) void c_outer(void (*cb)(void)) { c_inner(cb); sink++; }
"#;

extern "C" fn capture_callback() {
    let top = TOP.with(|t| t.get());
    let sample = capture_here!(top);
    CAPTURED.with(|c| *c.borrow_mut() = Some(sample));
}

#[test]
fn unwinds_with_debug_frame_only() {
    let flags = [
        "-O2",
        "-g",
        "-fomit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-shared",
        "-fPIC",
    ];
    let dir = compile_c("dbgframe", DEBUG_FRAME_C, &flags, "libdbgframe.so");
    let lib = dir.join("libdbgframe.so");
    let elf = ElfFile::open(&lib).unwrap();
    assert!(elf.section(".debug_frame").is_some());
    assert!(elf.section(".eh_frame").is_none_or(|s| s.size <= 0x40), "gcc emitted .eh_frame");

    let c_outer = dlopen_symbol(&lib, "c_outer");
    // SAFETY: c_outer has the C signature declared above.
    let c_outer: extern "C" fn(extern "C" fn()) = unsafe { std::mem::transmute(c_outer) };
    TOP.with(|t| t.set(stack_top()));
    c_outer(capture_callback);
    let sample = CAPTURED.with(|c| c.borrow_mut().take()).unwrap();

    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let unwound = native.unwind(pid, sample.regs, &sample.stack);
    let names = outer_names(&mut native, pid, &unwound.addrs);
    eprintln!("complete={} frames={names:#?}", unwound.complete);
    let i = position(&names, 0, "capture_callback");
    let i = position(&names, i + 1, "c_inner");
    let i = position(&names, i + 1, "c_outer");
    position(&names, i + 1, "::unwinds_with_debug_frame_only");
}

const INLINE_C: &str = r#"static volatile int sink;

static inline int helper(int x) {
    sink = x * 7;
    return sink + 1;
}

int caller(int n) {
    int total = 0;
    for (int i = 0; i < n; i++)
        total += helper(i);
    return total;
}
"#;

/// Loads a shared library into this process; returns the runtime address of `symbol`.
fn dlopen_symbol(lib: &std::path::Path, symbol: &str) -> u64 {
    let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    let name = std::ffi::CString::new(symbol).unwrap();
    // SAFETY: plain dlopen/dlsym of a library we just built (no constructors).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen {}", lib.display());
        let sym = libc::dlsym(handle, name.as_ptr());
        assert!(!sym.is_null());
        sym as u64
    }
}

#[test]
fn symbolizes_inlined_helper_in_shared_library() {
    let flags = ["-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC"];
    let dir = compile_c("inl", INLINE_C, &flags, "libinl.so");
    let lib = dir.join("libinl.so");
    let caller = dlopen_symbol(&lib, "caller");
    let (caller_svma, caller_size) = ElfFile::open(&lib).unwrap().symbol("caller").unwrap();

    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    assert_eq!(native.mapping_for(pid, caller).unwrap().path, lib.to_str().unwrap());

    let inlined = (0..caller_size)
        .map(|off| native.symbolize(pid, caller + off, false))
        .find(|frames| frames.len() > 1)
        .expect("some address of caller belongs to the inlined helper");
    eprintln!("{inlined:#?}");
    let [helper, outer] = &inlined[..] else { panic!("expected 2 frames: {inlined:?}") };
    assert_eq!(helper.function.as_deref(), Some("helper"));
    assert!(helper.inlined);
    assert!(helper.file.as_deref().unwrap().ends_with("inl.c"));
    assert!((3..=6).contains(&helper.line.unwrap()), "{helper:?}");
    assert_eq!(outer.function.as_deref(), Some("caller"));
    assert!(!outer.inlined);
    assert!(outer.file.as_deref().unwrap().ends_with("inl.c"));
    // The call site of the inlined helper: the loop body in caller.
    assert!((8..=13).contains(&outer.line.unwrap()), "{outer:?}");
    assert_eq!(outer.module, lib.to_str().unwrap());
    assert!((caller_svma..caller_svma + caller_size).contains(&outer.module_offset));

    // As a return address, addr - 1 is looked up: caller+1 lands at caller's first byte.
    let ret = native.symbolize(pid, caller + 1, true);
    assert_eq!(ret.last().unwrap().module_offset, caller_svma);
}

/// The persistent cache: a second `Native` answers from the file the first one wrote (shown by
/// editing the file: the edited name comes back), and a changed module file is another cache.
#[test]
fn symbolized_addresses_are_kept_between_runs_per_module_file() {
    let flags = ["-O2", "-g", "-shared", "-fPIC"];
    let dir = compile_c("diskcache", INLINE_C, &flags, "libdisk.so");
    let lib = dir.join("libdisk.so");
    let caller = dlopen_symbol(&lib, "caller");
    let cache = dir.join("cache");
    let pid = own_pid();
    let run = || {
        let mut native = Native::new();
        native.set_persistent_cache(cache.clone());
        native.load_proc_maps(pid).unwrap();
        let frames = native.symbolize(pid, caller + 2, false);
        native.save_persistent_cache();
        frames
    };
    let first = run();
    assert_eq!(first.last().unwrap().function.as_deref(), Some("caller"));
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("libdisk.so"))
        .collect();
    assert_eq!(files.len(), 1, "one cache file for the module: {files:?}");
    // Answered from the file, not from DWARF.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&files[0], text.replace("\"caller\"", "\"from_the_cache\"")).unwrap();
    assert_eq!(run().last().unwrap().function.as_deref(), Some("from_the_cache"));
    // The same path with another modification time is another file: symbolized afresh.
    let later = std::fs::metadata(&lib).unwrap().modified().unwrap() + Duration::from_secs(60);
    std::fs::File::options().write(true).open(&lib).unwrap().set_modified(later).unwrap();
    let mut native = Native::new();
    native.set_persistent_cache(cache.clone());
    native.load_proc_maps(pid).unwrap();
    let frames = native.symbolize(pid, caller + 2, false);
    assert_eq!(frames, first);
}

#[test]
fn symbol_table_fallback_without_dwarf() {
    let flags = ["-O2", "-shared", "-fPIC"];
    let dir = compile_c("nodwarf", INLINE_C, &flags, "libnodwarf.so");
    let lib = dir.join("libnodwarf.so");
    let caller = dlopen_symbol(&lib, "caller");
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let frames = native.symbolize(pid, caller + 2, false);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].function.as_deref(), Some("caller"));
    assert_eq!(frames[0].file, None);
    assert!(!frames[0].inlined);
}

#[test]
fn unknown_and_unreadable_modules_degrade() {
    let mut native = Native::new();
    let pid = 4_000_000; // no such process
    let frames = native.symbolize(pid, 0x1234, false);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].module, UNKNOWN_MODULE);
    assert_eq!(frames[0].function, None);

    native
        .add_mapping(pid, Mapping { start: 0x10000, end: 0x20000, pgoff: 0x3000, path: "/nonexistent/lib.so".into() });
    native.add_mapping(pid, Mapping { start: 0x30000, end: 0x31000, pgoff: 0, path: "//anon".into() });
    let f = native.symbolize(pid, 0x10010, false);
    assert_eq!(
        f,
        vec![NativeFrame {
            function: None,
            file: None,
            line: None,
            module: "/nonexistent/lib.so".into(),
            module_offset: 0x3010,
            inlined: false,
        }]
    );
    assert_eq!(native.symbolize(pid, 0x30001, true)[0].module, "//anon");

    // An overlapping mapping replaces the earlier one.
    native.add_mapping(pid, Mapping { start: 0x18000, end: 0x19000, pgoff: 0, path: "/other".into() });
    assert_eq!(native.mapping_for(pid, 0x10010), None);
    assert_eq!(native.mapping_for(pid, 0x18010).unwrap().path, "/other");
    native.remove_process(pid);
    assert_eq!(native.mapping_for(pid, 0x18010), None);
}

#[test]
fn deleted_library_does_not_break_symbolization() {
    let flags = ["-O2", "-g", "-shared", "-fPIC"];
    let dir = compile_c("deleted", INLINE_C, &flags, "libdeleted.so");
    let lib = dir.join("libdeleted.so");
    let caller = dlopen_symbol(&lib, "caller");
    std::fs::remove_file(&lib).unwrap();
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let frames = native.symbolize(pid, caller, false);
    eprintln!("deleted library: {frames:?}");
    assert!(frames.last().unwrap().module.ends_with("libdeleted.so (deleted)"));
    // Root can still read the file through /proc/PID/map_files.
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(frames.last().unwrap().function.as_deref(), Some("caller"));
    }
}

#[test]
fn symbolizes_vdso_from_own_image() {
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    assert_ne!(base, 0, "the kernel maps no vDSO (AT_SYSINFO_EHDR is 0)");
    let (elf, bias) = native.elf_for(pid, base).expect("the vDSO image is parsed");
    assert_eq!(native.mapping_for(pid, base).unwrap().path, "[vdso]");
    let (sym, _) = elf.symbol("__vdso_clock_gettime").unwrap();
    let frames = native.symbolize(pid, sym + bias + 1, false);
    assert!(frames[0].function.as_deref().unwrap().contains("clock_gettime"), "{frames:?}");
    assert_eq!(frames[0].module, "[vdso]");
}

/// Tiny deterministic PRNG (xorshift) for the garbage-input test.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_input_never_panics() {
    let pid = own_pid();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let code: Vec<Mapping> = maps::parse_proc_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    let mut rng = 0x9e3779b97f4a7c15u64;
    for round in 0..2000 {
        let len = (xorshift(&mut rng) % 4096) as usize & !7;
        let sp = xorshift(&mut rng) & !7;
        // Fill the stack with a mix of random words, code addresses and stack addresses.
        let stack: Vec<u8> = (0..len / 8)
            .flat_map(|_| {
                let r = xorshift(&mut rng);
                let word = match r % 4 {
                    0 => r,
                    1 => {
                        let m = &code[(r as usize / 4) % code.len()];
                        m.start + (r >> 8) % (m.end - m.start)
                    }
                    2 => sp.wrapping_add((r >> 8) % (len as u64 + 64)),
                    _ => 0,
                };
                word.to_le_bytes()
            })
            .collect();
        let m = &code[round % code.len()];
        let ip = if round % 3 == 0 { xorshift(&mut rng) } else { m.start + xorshift(&mut rng) % (m.end - m.start) };
        let regs = Regs {
            ip,
            sp,
            bp: if round % 2 == 0 { sp.wrapping_add(16) } else { xorshift(&mut rng) },
            ..Default::default()
        };
        for p in [pid, 4_000_001] {
            let u = native.unwind(p, regs, &stack);
            assert!(u.addrs.len() <= MAX_DEPTH);
            for (i, &a) in u.addrs.iter().enumerate().take(4) {
                assert!(!native.symbolize(p, a, i > 0).is_empty());
            }
        }
    }
    // Empty stack copy: only the ip, incomplete.
    let u = native.unwind(pid, Regs { ip: code[0].start, sp: 0x1000, ..Default::default() }, &[]);
    assert!(!u.addrs.is_empty() && u.addrs.len() <= 2);
}

/// Spawns `python -c script` and returns the child once the interpreter is running the script
/// (it prints a line first; the pipe is the synchronisation).
fn spawn_python(python: &std::path::Path, script: &str) -> std::process::Child {
    use std::io::BufRead;
    let script = format!("print('ready', flush=True)\n{script}");
    let mut child = std::process::Command::new(python)
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the provisioned python");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the interpreter did not start the script");
    child
}

#[test]
fn symbolizes_python_eval_loop() {
    let python = python_binary();
    let mut child = spawn_python(&python, "import time; time.sleep(60)");
    let pid = child.id();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();

    let elf = ElfFile::open(&python).unwrap();
    let (func, size) = elf.symbol("_PyEval_EvalFrameDefault").expect("eval loop symbol");
    let map = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let text = maps::parse_proc_maps(&map)
        .into_iter()
        .find(|m| m.path == python.to_str().unwrap())
        .expect("python text mapping");
    let bias = elf.bias_for_mapping(text.start, text.pgoff);
    assert_eq!(native.elf_for(pid, func + bias).map(|(_, b)| b), Some(bias));

    let addr = func + bias + size / 2;
    let first = native.symbolize(pid, addr, true);
    eprintln!("{first:#?}");
    assert_eq!(first.last().unwrap().function.as_deref(), Some("_PyEval_EvalFrameDefault"));
    assert_eq!(first.last().unwrap().module, python.to_str().unwrap());
    // The eval loop's body lives in generated_cases.c.h, included by ceval.c.
    let file = first.last().unwrap().file.clone().unwrap();
    assert!(file.ends_with("ceval.c") || file.ends_with("generated_cases.c.h"), "{first:?}");
    assert_eq!(native.symbolize(pid, addr, true), first);

    // Walk the whole eval loop: many addresses are inlined helpers (Py_INCREF and friends).
    let mut inlined_names = std::collections::BTreeSet::new();
    let mut max_depth = 0;
    for off in (0..size).step_by(4) {
        let frames = native.symbolize(pid, func + bias + off, false);
        assert_eq!(frames.last().unwrap().function.as_deref(), Some("_PyEval_EvalFrameDefault"));
        max_depth = max_depth.max(frames.len());
        inlined_names.extend(frames.iter().filter(|f| f.inlined).filter_map(|f| f.function.clone()));
    }
    eprintln!(
        "{} addresses; max inline depth {max_depth}; {} inlined functions, e.g. {:?}",
        size / 4,
        inlined_names.len(),
        inlined_names.iter().take(12).collect::<Vec<_>>()
    );
    assert!(inlined_names.contains("Py_INCREF") || inlined_names.contains("_Py_INCREF_MORTAL"));
    assert!(max_depth >= 3);

    let _ = child.kill();
    let _ = child.wait();
}

/// Stops `pid` with ptrace, like a perf sample: user registers plus a copy of up to 64 KiB of
/// its stack from `sp`. `None` if the process could not be stopped or read.
fn ptrace_sample(pid: u32, stack_end: u64) -> Option<Sample> {
    use std::os::unix::fs::FileExt;
    let pid_t = pid as libc::pid_t;
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace/waitpid on our own child; `regs` is a plain C struct.
    let regs = unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid_t, null, null) != 0 {
            return None;
        }
        let mut status = 0;
        libc::waitpid(pid_t, &mut status, 0);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        let ok = libc::ptrace(libc::PTRACE_GETREGS, pid_t, null, &mut regs as *mut _ as *mut libc::c_void) == 0;
        let regs = ok.then_some(Regs { ip: regs.rip, sp: regs.rsp, bp: regs.rbp, ..Default::default() });
        let stack = regs.and_then(|r| {
            let len = stack_end.checked_sub(r.sp)?.min(64 * 1024) as usize;
            let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
            let mut buf = vec![0u8; len];
            mem.read_exact_at(&mut buf, r.sp).ok()?;
            Some(buf)
        });
        libc::ptrace(libc::PTRACE_DETACH, pid_t, null, null);
        Some(Sample { regs: regs?, stack: stack? })
    };
    regs
}

#[test]
fn unwinds_live_python() {
    let python = python_binary();
    let script = "def f(n):\n    return f(n - 1) if n else sorted(str(i) for i in range(2000))\n\
                  while True:\n    f(20)\n";
    let mut child = spawn_python(&python, script);
    let pid = child.id();
    let mut native = Native::new();
    native.load_proc_maps(pid).unwrap();
    let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let stack_end = maps_text
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .and_then(|l| u64::from_str_radix(l.split(['-', ' ']).nth(1)?, 16).ok())
        .expect("[stack] mapping");

    let (mut samples, mut complete, mut through_eval) = (0, 0, 0);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(7));
        let Some(sample) = ptrace_sample(pid, stack_end) else {
            continue;
        };
        let unwound = native.unwind(pid, sample.regs, &sample.stack);
        let names = outer_names(&mut native, pid, &unwound.addrs);
        samples += 1;
        complete += usize::from(unwound.complete);
        if names.iter().any(|n| n == "_PyEval_EvalFrameDefault")
            && names.iter().any(|n| n == "Py_BytesMain" || n == "main")
        {
            through_eval += 1;
        }
        if samples <= 2 || !unwound.complete {
            eprintln!("complete={} {names:#?}", unwound.complete);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("live python: {samples} samples, {complete} complete, {through_eval} through the eval loop to main");
    assert!(
        samples > 0,
        "ptrace could not stop the child: run the tests as root or with kernel.yama.ptrace_scope=0 (scripts/test.sh)"
    );
    assert!(samples >= 10, "only {samples} ptrace samples");
    assert!(complete * 10 >= samples * 9, "{complete}/{samples} complete");
    assert!(through_eval * 10 >= samples * 8, "{through_eval}/{samples} through eval loop");
}

/// A module's disk cache grows by appending: each save writes only what its run decoded, two
/// saves keep both runs' entries, and a last line a crash cut short is skipped (the next save
/// starts on a line of its own).
#[test]
fn the_disk_cache_appends_and_skips_a_cut_line() {
    let dir = std::env::temp_dir().join(format!("ftprof-diskcache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("symcache-v2-0000000000000001-2-3.jsonl");
    let frame = |name: &str, at: u64| NativeFrame {
        function: Some(name.into()),
        file: None,
        line: Some(7),
        module: "/lib/x.so".into(),
        module_offset: at,
        inlined: false,
    };
    let save = |entries: &[(u64, &str)]| {
        let mut d = DiskCache::read(&file);
        for &(at, name) in entries {
            d.frames.insert(at, vec![frame(name, at)]);
            d.added.push(at);
        }
        d.append(&file, || {}).unwrap();
    };
    save(&[(0x20, "b"), (0x10, "a")]);
    let one = std::fs::read_to_string(&file).unwrap();
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(one.lines().next().unwrap().starts_with("[16,"), "sorted by address: {one}");
    save(&[(0x30, "c")]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3, "the first run's lines kept");
    // A crash in the middle of a line.
    let mut cut = std::fs::read_to_string(&file).unwrap();
    cut.push_str("[64,[{\"function\":\"d\"");
    std::fs::write(&file, cut).unwrap();
    save(&[(0x50, "e")]);
    let d = DiskCache::read(&file);
    let mut names: Vec<(u64, String)> = d.frames.iter().map(|(at, f)| (*at, f[0].function.clone().unwrap())).collect();
    names.sort();
    let want: Vec<(u64, String)> =
        [(0x10, "a"), (0x20, "b"), (0x30, "c"), (0x50, "e")].iter().map(|(a, n)| (*a, n.to_string())).collect();
    assert_eq!(names, want);
    // Nothing decoded: nothing written.
    let before = std::fs::read(&file).unwrap();
    save(&[]);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The line index of the free-threaded interpreter answers like its DWARF does: at every
/// 97th byte of the interpreter's code (and the eval loop's every byte), an indexed answer
/// equals [`ModuleSymbolizer::symbolize`]'s.
#[test]
fn line_index_answers_like_dwarf() {
    let python = python_binary();
    let elf = ElfFile::open_shared(&python).unwrap();
    let dir = compile_c("lineindex", "int main(void) { return 0; }", &[], "unused");
    let file = dir.join("python.idx");
    let mut sym = ModuleSymbolizer::new(elf.clone(), python.clone());
    let t = std::time::Instant::now();
    let rows = super::lineindex::build(&mut sym, &file).expect("the interpreter has DWARF");
    eprintln!("indexed {rows} rows in {:?}, {} bytes", t.elapsed(), std::fs::metadata(&file).unwrap().len());
    let index = super::lineindex::LineIndex::open(&file).expect("the index reads back");
    let text = elf.section(".text").unwrap();
    let (eval, eval_size) = elf.symbol("_PyEval_EvalFrameDefault").unwrap();
    let mut fresh = ModuleSymbolizer::new(elf.clone(), python.clone());
    let (mut answered, mut asked) = (0, 0);
    let sample = (text.addr..text.addr + text.size).step_by(97).chain(eval..eval + eval_size);
    for svma in sample {
        asked += 1;
        if let Some(indexed) = index.lookup(svma) {
            answered += 1;
            assert_eq!(indexed, fresh.symbolize(svma), "at {svma:#x}");
        }
    }
    eprintln!("{answered} of {asked} addresses answered by the index");
    assert!(answered * 10 > asked * 9, "only {answered} of {asked} addresses indexed");
    // Not an index: refused.
    std::fs::write(&file, b"FTPLIDX1 truncated").unwrap();
    assert!(super::lineindex::LineIndex::open(&file).is_none());
}

/// A line index built by one `Native` answers another's lookups (same cache directory) with
/// no debug data decoded, as the debug data answers; it is built once.
#[test]
fn native_symbolizes_from_the_line_index() {
    let python = python_binary();
    let path = python.to_str().unwrap();
    let dir = compile_c("nativeindex", "int main(void) { return 0; }", &[], "unused");
    let cache = dir.join("cache");
    let mut first = Native::new();
    first.set_persistent_cache(cache.clone());
    assert!(first.build_line_index(path).is_some(), "the interpreter has DWARF");
    assert!(first.build_line_index(path).is_none(), "built once");
    let elf = ElfFile::open(&python).unwrap();
    let (eval, size) = elf.symbol("_PyEval_EvalFrameDefault").unwrap();
    let m = Mapping { start: 0, end: 1, pgoff: 0, path: path.to_string() };
    let mut indexed = Native::new();
    indexed.set_persistent_cache(cache);
    let id = indexed.resolve_module(0, &m).unwrap();
    let mut plain = Native::new();
    let plain_id = plain.resolve_module(0, &m).unwrap();
    for svma in (eval..eval + size).step_by(61) {
        assert_eq!(indexed.frames_of(id, svma), plain.frames_of(plain_id, svma), "at {svma:#x}");
    }
    assert_eq!(indexed.decoded(), 0, "every address answered by the index");
    assert!(plain.decoded() > 0);
}
