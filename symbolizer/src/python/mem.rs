//! Reading target memory: the [`ReadMemory`] trait, its live implementation [`Mem`]
//! (`process_vm_readv`) and [`FakeMemory`], a synthetic memory image for unit tests of the
//! frame walker, object readers and lock probes.

use std::collections::BTreeMap;
use std::io::{self, IoSliceMut};

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

/// Read access to a target's address space. Only [`ReadMemory::read`] is required.
pub trait ReadMemory: Send + Sync {
    /// Fill `buf` from `addr`; partial reads are errors.
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;

    fn read_vec(&self, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    fn u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The words at many addresses (`None` where unreadable). Readers that can gather several
    /// ranges in one call (the live one: one `process_vm_readv` per 512 addresses) override it.
    fn u64_many(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        addrs.iter().map(|&a| self.u64(a).ok()).collect()
    }

    fn i32(&self, addr: u64) -> io::Result<i32> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    /// NUL-terminated string of at most `max` bytes.
    fn cstr(&self, addr: u64, max: usize) -> io::Result<String> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            // Do not cross a page boundary in one read: the next page may be unmapped.
            let at = addr.wrapping_add(out.len() as u64);
            let room = (4096 - (at % 4096) as usize).min(chunk.len());
            self.read(at, &mut chunk[..room])?;
            if let Some(end) = chunk[..room].iter().position(|&c| c == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..room]);
        }
        out.truncate(max);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// A synthetic address space: byte regions at chosen addresses; reading anything outside them
/// fails like an unmapped page. Built by tests to model one CPython version's structures.
#[derive(Clone, Debug, Default)]
pub struct FakeMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl FakeMemory {
    pub fn new() -> FakeMemory {
        FakeMemory::default()
    }

    /// Map `len` zero bytes at `addr` (replacing nothing: regions must not overlap).
    pub fn map(&mut self, addr: u64, len: usize) {
        self.regions.insert(addr, vec![0; len]);
    }

    /// Write `bytes` at `addr`, inside a mapped region.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let (start, region) = self.regions.range_mut(..=addr).next_back().expect("write outside every region");
        let off = (addr - start) as usize;
        assert!(off + bytes.len() <= region.len(), "write past the end of the region at {start:#x}");
        region[off..off + bytes.len()].copy_from_slice(bytes);
    }

    pub fn write_u64(&mut self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    pub fn write_i32(&mut self, addr: u64, v: i32) {
        self.write(addr, &v.to_le_bytes());
    }

    pub fn write_u8(&mut self, addr: u64, v: u8) {
        self.write(addr, &[v]);
    }
}

impl ReadMemory for FakeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let unmapped = || io::Error::new(io::ErrorKind::InvalidInput, format!("unmapped address {addr:#x}"));
        let (start, region) = self.regions.range(..=addr).next_back().ok_or_else(unmapped)?;
        let off = (addr - start) as usize;
        let bytes = region.get(off..off.checked_add(buf.len()).ok_or_else(unmapped)?).ok_or_else(unmapped)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// Reader for one process's address space.
#[derive(Clone, Debug)]
pub struct Mem {
    pub pid: u32,
    /// With privileges the caller lacks (`profiler::access`): `/proc/PID/mem`, opened between
    /// two checks that the caller may trace the process. The descriptor keeps reading the
    /// address space that was checked: once the process execs (a set-id program, say) or exits,
    /// and its pid is reused, reads fail instead of reaching the new image.
    pinned: Option<std::sync::Arc<std::fs::File>>,
}

impl Mem {
    /// Reads by pid (`process_vm_readv`): the kernel checks each read.
    pub fn new(pid: u32) -> Mem {
        Mem { pid, pinned: None }
    }

    /// The reader ftprof uses for a live process: by pid normally; when it runs with
    /// privileges its caller lacks, through a descriptor pinned to the address space the caller
    /// was checked to be allowed to trace.
    pub fn for_process(pid: u32) -> Result<Mem, profiler::access::AccessError> {
        if !profiler::access::is_elevated() {
            return Ok(Mem::new(pid));
        }
        profiler::access::check(pid)?;
        let file =
            std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|_| profiler::access::AccessError::Gone(pid))?;
        // Checked again: an exec between the first check and the open pinned the new image.
        profiler::access::check(pid)?;
        Ok(Mem { pid, pinned: Some(std::sync::Arc::new(file)) })
    }

    /// Up to `len` bytes from `addr` (fewer at the end of a mapping; empty when unreadable).
    pub fn read_upto(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let n = match &self.pinned {
            Some(f) => {
                use std::os::unix::fs::FileExt;
                f.read_at(&mut buf, addr).unwrap_or(0)
            }
            None => return profiler::threads::read_stack(self.pid, addr, len),
        };
        buf.truncate(n);
        buf
    }
}

impl ReadMemory for Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "null pointer"));
        }
        if let Some(f) = &self.pinned {
            use std::os::unix::fs::FileExt;
            return f.read_exact_at(buf, addr);
        }
        let len = buf.len();
        let remote = [RemoteIoVec { base: addr as usize, len }];
        let n = process_vm_readv(Pid::from_raw(self.pid as i32), &mut [IoSliceMut::new(buf)], &remote)
            .map_err(io::Error::from)?;
        if n != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }

    fn u64_many(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        if self.pinned.is_some() {
            return addrs.iter().map(|&a| self.u64(a).ok()).collect();
        }
        let mut out = vec![None; addrs.len()];
        let mut bytes = vec![0u8; 8 * addrs.len().min(512)];
        let pid = Pid::from_raw(self.pid as i32);
        let mut i = 0;
        while i < addrs.len() {
            let end = (i + 512).min(addrs.len());
            let mut local: Vec<IoSliceMut<'_>> = bytes[..8 * (end - i)].chunks_mut(8).map(IoSliceMut::new).collect();
            let remote: Vec<RemoteIoVec> =
                addrs[i..end].iter().map(|&a| RemoteIoVec { base: a as usize, len: 8 }).collect();
            // The kernel stops at the first unreadable range: the ones before it are complete,
            // that one is unreadable (or partly read: unusable), the rest are tried again.
            let done = process_vm_readv(pid, &mut local, &remote).map_or(0, |n| n / 8);
            drop(local);
            for (k, word) in bytes.chunks(8).take(done).enumerate() {
                out[i + k] = word.try_into().ok().map(u64::from_le_bytes);
            }
            i += done + 1;
        }
        out
    }
}

/// Little-endian field access on a byte buffer read from the target.
pub fn field_u64(buf: &[u8], off: u64) -> u64 {
    let o = off as usize;
    buf.get(o..o.saturating_add(8)).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

pub fn field_i32(buf: &[u8], off: u64) -> i32 {
    let o = off as usize;
    buf.get(o..o.saturating_add(4)).and_then(|b| b.try_into().ok()).map(i32::from_le_bytes).unwrap_or(0)
}

pub fn field_u8(buf: &[u8], off: u64) -> u8 {
    buf.get(off as usize).copied().unwrap_or(0)
}
