//! Compiles the BPF programs in src/bpf/ with clang (`-target bpf`, with BTF for CO-RE) into
//! OUT_DIR; the crate embeds the objects with `include_bytes!`.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["offcpu", "pystack", "invalid"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = std::env::var("FTPROF_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=FTPROF_CLANG");
    for header in ["ftprof.h", "offcpu.h", "pystack.h"] {
        println!("cargo:rerun-if-changed=src/bpf/{header}");
    }
    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror", "-c", &src, "-o"])
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to compile {src} ({s})"),
            Err(e) => panic!(
                "cannot run `{clang}` to compile the BPF programs ({e}): install clang \
                 (Debian: apt-get install clang libelf-dev zlib1g-dev pkg-config), or set FTPROF_CLANG"
            ),
        }
    }
}
