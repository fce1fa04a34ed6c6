//! Reading another process's memory with `process_vm_readv`.

use std::io;

/// Reader for one process's address space.
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    pub pid: u32,
}

impl Mem {
    pub fn new(pid: u32) -> Mem {
        Mem { pid }
    }

    /// Fill `buf` from `addr`; partial reads are errors.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "null pointer"));
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        let n = unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn i32(&self, addr: u64) -> io::Result<i32> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    /// NUL-terminated string of at most `max` bytes.
    pub fn cstr(&self, addr: u64, max: usize) -> io::Result<String> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            // Do not cross a page boundary in one read: the next page may be unmapped.
            let room = (4096 - (addr as usize + out.len()) % 4096).min(chunk.len());
            self.read(addr + out.len() as u64, &mut chunk[..room])?;
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
