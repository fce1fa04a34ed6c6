//! The privilege boundary: which processes ftprof may observe when it runs with more privilege
//! than the user who started it.
//!
//! ftprof can be given `CAP_PERFMON` and `CAP_SYS_PTRACE` as file capabilities (README,
//! "Permissions"). Those let it read any process's memory, so, when it runs with privilege its
//! caller does not have, ftprof itself enforces the kernel's own ptrace rule *with the caller's
//! credentials* before it reads anything of a target: the caller's real uid equals the target's
//! real, effective, saved and filesystem uids, the caller's real gid its four gids, the target is
//! dumpable, and it lives in the caller's user namespace or one below it. Run by root, or without
//! extra capabilities, every check here passes and the kernel's own checks apply.
//!
//! Input: `/proc/self/{auxv,status}`, `/proc/PID/{status,ns/user}`. Output: [`privilege`] (what
//! this process runs with) and [`check`] (may this pid be observed). The decisions are the pure
//! functions [`privilege_of`] and [`may_trace`], table-tested below.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// Real, effective, saved and filesystem ids, as `/proc/PID/status` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

impl Ids {
    pub fn all(id: u32) -> Ids {
        Ids { real: id, effective: id, saved: id, fs: id }
    }

    fn matches(&self, id: u32) -> bool {
        self.real == id && self.effective == id && self.saved == id && self.fs == id
    }
}

/// The credentials of the user who started ftprof (what the kernel would check without
/// ftprof's capabilities).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The user namespace (device and inode of `/proc/self/ns/user`).
    pub userns: (u64, u64),
}

/// What the rule needs to know of a target process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetCreds {
    pub uid: Ids,
    pub gid: Ids,
    /// `false` after a set-id exec or `prctl(PR_SET_DUMPABLE, 0)`: the kernel refuses ptrace then.
    pub dumpable: bool,
    /// The target's user namespace, then its parent, and so on as far as the caller can see.
    pub userns_chain: Vec<(u64, u64)>,
}

/// Which part of the rule a target fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// One of the target's uids is not the caller's.
    OtherUser { uid: Ids },
    /// One of the target's gids is not the caller's.
    OtherGroup { gid: Ids },
    /// The target is not dumpable (a set-id program, or it asked not to be traced).
    NotDumpable,
    /// The target runs in a user namespace that is neither the caller's nor below it.
    OtherUserNamespace,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::OtherUser { uid } => write!(
                f,
                "it runs as {} (uids {}/{}/{}/{}), not as you",
                user_name(uid.effective),
                uid.real,
                uid.effective,
                uid.saved,
                uid.fs
            ),
            Denial::OtherGroup { gid } => {
                write!(
                    f,
                    "it runs with other group ids (gids {}/{}/{}/{}) than yours",
                    gid.real, gid.effective, gid.saved, gid.fs
                )
            }
            Denial::NotDumpable => {
                f.write_str("it is not dumpable (a set-user-ID, set-group-ID or file-capability program, an executable that is not readable by you, or it turned tracing off)")
            }
            Denial::OtherUserNamespace => f.write_str("it runs in a user namespace that is not yours or below yours"),
        }
    }
}

/// The kernel's ptrace-access rule (`__ptrace_may_access` with the caller's real credentials,
/// without capabilities), applied to `target`.
pub fn may_trace(caller: &Caller, target: &TargetCreds) -> Result<(), Denial> {
    if !target.uid.matches(caller.uid) {
        return Err(Denial::OtherUser { uid: target.uid });
    }
    if !target.gid.matches(caller.gid) {
        return Err(Denial::OtherGroup { gid: target.gid });
    }
    if !target.userns_chain.contains(&caller.userns) {
        return Err(Denial::OtherUserNamespace);
    }
    if !target.dumpable {
        return Err(Denial::NotDumpable);
    }
    Ok(())
}

/// What this process runs with, relative to the user who started it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// No more than the caller has (root, or no capabilities): the kernel's checks apply.
    Caller,
    /// File capabilities (or ambient ones) a non-root caller lacks: targets are checked here.
    Elevated { caller: Caller, why: String },
    /// Installed set-user-ID or set-group-ID: not supported (ftprof refuses to run).
    SetId { ruid: u32, euid: u32, rgid: u32, egid: u32 },
}

/// What the process's credentials amount to. `at_secure` is the `AT_SECURE` auxiliary vector
/// entry (set by the kernel for set-id and file-capability programs), `cap_eff` the effective
/// capability set.
pub fn privilege_of(uid: Ids, gid: Ids, at_secure: bool, cap_eff: u64, userns: (u64, u64)) -> Privilege {
    if uid.real != uid.effective || gid.real != gid.effective {
        return Privilege::SetId { ruid: uid.real, euid: uid.effective, rgid: gid.real, egid: gid.effective };
    }
    if uid.real == 0 {
        // Root has every capability the file could give: nothing to protect from the caller.
        return Privilege::Caller;
    }
    let caller = Caller { uid: uid.real, gid: gid.real, userns };
    if cap_eff != 0 {
        let why =
            format!("it runs with capabilities {} that user {} does not have", cap_names(cap_eff), user_name(uid.real));
        return Privilege::Elevated { caller, why };
    }
    if at_secure {
        return Privilege::Elevated { caller, why: "it was started in secure mode (AT_SECURE)".into() };
    }
    Privilege::Caller
}

impl Privilege {
    /// The caller whose credentials targets are checked against, when ftprof is elevated.
    pub fn elevated(&self) -> Option<&Caller> {
        match self {
            Privilege::Elevated { caller, .. } => Some(caller),
            _ => None,
        }
    }

    /// The one-line refusal for a set-id installation, if this is one.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Privilege::SetId { ruid, euid, rgid, egid } => Some(format!(
                "ftprof is installed set-user-ID or set-group-ID (real/effective uid {ruid}/{euid}, gid {rgid}/{egid}), which is not supported: remove the bit (chmod u-s,g-s \"$(command -v ftprof)\") and run it with sudo, or use the group-restricted file-capability recipe in the README"
            )),
            _ => None,
        }
    }
}

const CAPS: [(u32, &str); 8] = [
    (1, "cap_dac_override"),
    (2, "cap_dac_read_search"),
    (19, "cap_sys_ptrace"),
    (21, "cap_sys_admin"),
    (34, "cap_syslog"),
    (38, "cap_perfmon"),
    (39, "cap_bpf"),
    (40, "cap_checkpoint_restore"),
];

fn cap_names(set: u64) -> String {
    let mut names: Vec<String> = CAPS.iter().filter(|(b, _)| set & (1 << b) != 0).map(|(_, n)| n.to_string()).collect();
    let known = CAPS.iter().fold(0u64, |m, (b, _)| m | (1 << b));
    if set & !known != 0 {
        names.push(format!("0x{:x}", set & !known));
    }
    names.join(",")
}

/// The name of user `uid` from the password database, else the number.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// `Uid:`/`Gid:` lines of a `/proc/PID/status` text.
pub fn parse_ids(status: &str) -> Option<(Ids, Ids)> {
    let ids = |key: &str| -> Option<Ids> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let v: Vec<u32> = line[key.len()..].split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
        (v.len() == 4).then(|| Ids { real: v[0], effective: v[1], saved: v[2], fs: v[3] })
    };
    Some((ids("Uid:")?, ids("Gid:")?))
}

/// A process whose address space is gone (`State:` Z or X, or no `VmSize:` line while it exits):
/// nothing of it can be read, and its `/proc` files may show root as their owner, which must not
/// read as "not dumpable".
pub fn exiting(status: &str) -> bool {
    let zombie = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|v| matches!(v.trim_start().chars().next(), Some('Z' | 'X')));
    zombie || !status.lines().any(|l| l.starts_with("VmSize:"))
}

/// The `CapEff:` line of a `/proc/PID/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// The `AT_SECURE` entry of an auxiliary vector (`/proc/self/auxv`, native-endian u64 pairs).
pub fn parse_at_secure(auxv: &[u8]) -> Option<bool> {
    const AT_SECURE: u64 = 23;
    auxv.chunks_exact(16).find_map(|pair| {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let val = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (key == AT_SECURE).then_some(val != 0)
    })
}

fn userns_of(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// This process's privilege, read once.
pub fn privilege() -> &'static Privilege {
    static P: OnceLock<Privilege> = OnceLock::new();
    P.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let (uid, gid) = parse_ids(&status).unwrap_or_else(|| {
            let (u, g) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
            let (eu, eg) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
            (Ids { real: u, effective: eu, saved: eu, fs: eu }, Ids { real: g, effective: eg, saved: eg, fs: eg })
        });
        // Unreadable: assume the worst (checks on), never the best.
        let cap_eff = parse_cap_eff(&status).unwrap_or(u64::MAX);
        let at_secure = std::fs::read("/proc/self/auxv").ok().and_then(|a| parse_at_secure(&a)).unwrap_or(true);
        privilege_of(uid, gid, at_secure, cap_eff, userns_of("/proc/self/ns/user").unwrap_or((0, 0)))
    })
}

/// Whether ftprof runs with privilege its caller lacks (targets are then checked by [`check`]).
pub fn is_elevated() -> bool {
    privilege().elevated().is_some()
}

/// Why a target may not be observed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no such process: {0}")]
    Gone(u32),
    #[error("ftprof will not observe process {pid}: {denial}. ftprof has privileges you do not ({why}), so it only observes processes you could trace yourself (your real uid and gid equal to the target's real, effective, saved and filesystem ids; the target dumpable; your user namespace or one below it). Run ftprof as that process's user, or as root with sudo")]
    Denied { pid: u32, denial: Denial, why: String },
}

/// The user namespaces of `pid`: its own, then its parents (`NS_GET_PARENT`) until one the
/// caller cannot see or the caller's own.
fn userns_chain(pid: u32, stop_at: (u64, u64)) -> Vec<(u64, u64)> {
    let path = format!("/proc/{pid}/ns/user");
    let Some(first) = userns_of(&path) else { return Vec::new() };
    let mut chain = vec![first];
    if first == stop_at {
        return chain;
    }
    nix::ioctl_none!(ns_get_parent, 0xb7, 0x2);
    let Ok(mut fd) = std::fs::File::open(&path) else { return chain };
    for _ in 0..32 {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor (or -1), which
        // `File::from_raw_fd` then owns.
        let parent = match unsafe { ns_get_parent(fd.as_raw_fd()) } {
            Ok(p) if p >= 0 => unsafe { std::fs::File::from_raw_fd(p) },
            _ => break,
        };
        let Ok(md) = parent.metadata() else { break };
        chain.push((md.dev(), md.ino()));
        if chain.last() == Some(&stop_at) {
            break;
        }
        fd = parent;
    }
    chain
}

/// What the rule needs of process `pid`, read from `/proc`.
pub fn target_creds(pid: u32, caller: &Caller) -> Option<TargetCreds> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).ok()?;
    if exiting(&status) {
        return None;
    }
    let (uid, gid) = parse_ids(&status)?;
    // /proc/PID's files belong to root, not to the process's user, while it is not dumpable
    // (`task_dump_owner`); the directory itself always shows the effective uid.
    let dumpable = std::fs::metadata(&path).ok()?.uid() == uid.effective;
    Some(TargetCreds { uid, gid, dumpable, userns_chain: userns_chain(pid, caller.userns) })
}

/// May ftprof observe process `pid`? Always `Ok` when ftprof runs with no more privilege than
/// its caller (the kernel checks then); otherwise the rule of [`may_trace`] over `/proc`.
pub fn check(pid: u32) -> Result<(), AccessError> {
    let Privilege::Elevated { caller, why } = privilege() else { return Ok(()) };
    let creds = target_creds(pid, caller).ok_or(AccessError::Gone(pid))?;
    may_trace(caller, &creds).map_err(|denial| AccessError::Denied { pid, denial, why: why.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: (u64, u64) = (4, 4026531837);
    const CHILD_NS: (u64, u64) = (4, 4026532000);
    const OTHER_NS: (u64, u64) = (4, 4026532999);

    fn me() -> Caller {
        Caller { uid: 1000, gid: 1000, userns: NS }
    }

    fn own() -> TargetCreds {
        TargetCreds { uid: Ids::all(1000), gid: Ids::all(1000), dumpable: true, userns_chain: vec![NS] }
    }

    #[test]
    fn may_trace_table() {
        let with = |f: &dyn Fn(&mut TargetCreds)| {
            let mut t = own();
            f(&mut t);
            t
        };
        let rows: Vec<(&str, TargetCreds, Result<(), Denial>)> = vec![
            ("own process", own(), Ok(())),
            ("root's process", with(&|t| t.uid = Ids::all(0)), Err(Denial::OtherUser { uid: Ids::all(0) })),
            ("another user's", with(&|t| t.uid = Ids::all(1001)), Err(Denial::OtherUser { uid: Ids::all(1001) })),
            (
                "set-uid root child: effective uid differs",
                with(&|t| t.uid = Ids { real: 1000, effective: 0, saved: 0, fs: 0 }),
                Err(Denial::OtherUser { uid: Ids { real: 1000, effective: 0, saved: 0, fs: 0 } }),
            ),
            (
                "dropped to us, saved uid still root",
                with(&|t| t.uid = Ids { real: 1000, effective: 1000, saved: 0, fs: 1000 }),
                Err(Denial::OtherUser { uid: Ids { real: 1000, effective: 1000, saved: 0, fs: 1000 } }),
            ),
            (
                "filesystem uid of another user",
                with(&|t| t.uid = Ids { real: 1000, effective: 1000, saved: 1000, fs: 0 }),
                Err(Denial::OtherUser { uid: Ids { real: 1000, effective: 1000, saved: 1000, fs: 0 } }),
            ),
            (
                "set-gid program",
                with(&|t| t.gid = Ids { real: 1000, effective: 42, saved: 42, fs: 42 }),
                Err(Denial::OtherGroup { gid: Ids { real: 1000, effective: 42, saved: 42, fs: 42 } }),
            ),
            ("not dumpable", with(&|t| t.dumpable = false), Err(Denial::NotDumpable)),
            ("in a user namespace below ours", with(&|t| t.userns_chain = vec![CHILD_NS, NS]), Ok(())),
            ("in another user namespace", with(&|t| t.userns_chain = vec![OTHER_NS]), Err(Denial::OtherUserNamespace)),
            ("user namespace unreadable", with(&|t| t.userns_chain = vec![]), Err(Denial::OtherUserNamespace)),
        ];
        for (name, target, want) in rows {
            assert_eq!(may_trace(&me(), &target), want, "{name}");
        }
    }

    #[test]
    fn privilege_table() {
        let u = Ids::all;
        let rows: Vec<(&str, Ids, Ids, bool, u64, &str)> = vec![
            ("plain user", u(1000), u(1000), false, 0, "caller"),
            ("root", u(0), u(0), false, 0x1ff_ffff_ffff, "caller"),
            ("root running a file-capability binary", u(0), u(0), true, 0x1ff_ffff_ffff, "caller"),
            ("user with file capabilities", u(1000), u(1000), true, (1 << 19) | (1 << 38), "elevated"),
            ("user with ambient capabilities", u(1000), u(1000), false, 1 << 38, "elevated"),
            ("secure mode without capabilities", u(1000), u(1000), true, 0, "elevated"),
            ("set-uid root", Ids { real: 1000, effective: 0, saved: 0, fs: 0 }, u(1000), true, 0, "setid"),
            ("set-gid", u(1000), Ids { real: 1000, effective: 5, saved: 5, fs: 5 }, true, 0, "setid"),
        ];
        for (name, uid, gid, secure, caps, want) in rows {
            let got = match privilege_of(uid, gid, secure, caps, NS) {
                Privilege::Caller => "caller",
                Privilege::Elevated { caller, .. } => {
                    assert_eq!(caller, Caller { uid: uid.real, gid: gid.real, userns: NS }, "{name}");
                    "elevated"
                }
                Privilege::SetId { .. } => "setid",
            };
            assert_eq!(got, want, "{name}");
        }
        let p = privilege_of(u(1000), u(1000), true, (1 << 19) | (1 << 38), NS);
        assert!(matches!(&p, Privilege::Elevated { why, .. } if why.contains("cap_sys_ptrace,cap_perfmon")), "{p:?}");
        assert!(privilege_of(Ids { real: 1000, effective: 0, saved: 0, fs: 0 }, u(1000), true, 0, NS)
            .refusal()
            .is_some_and(|r| r.contains("set-user-ID") && r.contains("sudo")));
    }

    #[test]
    fn proc_status_fields() {
        let status = "Name:\tpython3.13t\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\nCapEff:\t0000004000080000\n";
        let (uid, gid) = parse_ids(status).unwrap();
        assert_eq!(uid, Ids { real: 1000, effective: 0, saved: 0, fs: 0 });
        assert_eq!(gid, Ids::all(100));
        assert_eq!(parse_cap_eff(status), Some((1 << 38) | (1 << 19)));
        assert_eq!(parse_ids("Uid:\t1\t2\n"), None, "a truncated line is not read as ids");
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert!(!exiting("State:\tS (sleeping)\nVmSize:\t  10000 kB\n"));
        assert!(exiting("State:\tR (running)\n"), "running, its address space already released");
        assert!(exiting("State:\tZ (zombie)\n"));
        assert!(exiting("State:\tX (dead)\nVmSize:\t  10000 kB\n"));
    }

    #[test]
    fn at_secure_from_auxv() {
        let pairs = |v: &[(u64, u64)]| {
            v.iter().flat_map(|(k, x)| k.to_ne_bytes().into_iter().chain(x.to_ne_bytes())).collect::<Vec<u8>>()
        };
        assert_eq!(parse_at_secure(&pairs(&[(6, 4096), (23, 1), (0, 0)])), Some(true));
        assert_eq!(parse_at_secure(&pairs(&[(6, 4096), (23, 0), (0, 0)])), Some(false));
        assert_eq!(parse_at_secure(&pairs(&[(6, 4096), (0, 0)])), None);
        assert_eq!(parse_at_secure(&[1, 2, 3]), None);
    }

    #[test]
    fn this_process_reads_as_its_own_target() {
        // The live readers agree with the rule: a process may trace itself.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let (uid, gid) = parse_ids(&status).unwrap();
        let caller = Caller { uid: uid.real, gid: gid.real, userns: userns_of("/proc/self/ns/user").unwrap() };
        let me = target_creds(std::process::id(), &caller).unwrap();
        assert!(me.dumpable);
        assert_eq!(may_trace(&caller, &me), Ok(()));
    }
}
