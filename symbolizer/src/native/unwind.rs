//! Stack unwinding with framehop: DWARF CFI from `.eh_frame`/`.eh_frame_hdr` (or `.debug_frame`
//! when a file has no `.eh_frame`), frame-pointer fallback where no CFI covers an address.

use std::ops::Range;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder as _};

use super::elf::{Bytes, ElfFile};
use super::{Regs, Unwound};

/// Per-process framehop unwinder over file-backed section bytes.
pub(crate) type ProcessUnwinder = UnwinderX86_64<Bytes>;
/// Unwind-rule cache; shared by all processes (framehop keys it by module generation).
pub(crate) type UnwindCache = CacheX86_64;

/// Deepest stack we return.
pub const MAX_DEPTH: usize = 256;

/// Builds a framehop module for one executable mapping `avma` of `elf`, loaded with `bias`.
pub(crate) fn framehop_module(
    elf: &ElfFile,
    name: &str,
    avma: Range<u64>,
    bias: u64,
) -> framehop::Module<Bytes> {
    let info = ExplicitModuleSectionInfo {
        // ELF: relative addresses are svmas (base 0), and `base_avma` is the load bias.
        base_svma: 0,
        text_svma: elf.section_range(".text"),
        got_svma: elf.section_range(".got"),
        eh_frame_svma: elf.section_range(".eh_frame"),
        eh_frame: elf.section_data(".eh_frame"),
        eh_frame_hdr_svma: elf.section_range(".eh_frame_hdr"),
        eh_frame_hdr: elf.section_data(".eh_frame_hdr"),
        debug_frame: elf.section_data(".debug_frame"),
        ..Default::default()
    };
    framehop::Module::new(name.to_owned(), avma, bias, info)
}

/// Unwinds one sample. `is_code` tells whether an address lies in a known executable mapping;
/// a return address outside of them ends the walk (as incomplete), since it means the walk
/// went astray (garbage frame pointer, corrupt stack).
pub(crate) fn unwind(
    unwinder: &ProcessUnwinder,
    cache: &mut UnwindCache,
    regs: Regs,
    stack: &[u8],
    is_code: impl Fn(u64) -> bool,
) -> Unwound {
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = usize::try_from(addr.checked_sub(regs.sp).ok_or(())?).map_err(|_| ())?;
        let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
    };
    let start = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
    let mut frames = unwinder.iter_frames(regs.ip, start, cache, &mut read_stack);

    let mut out = Unwound { addrs: Vec::with_capacity(32), complete: false };
    loop {
        if out.addrs.len() >= MAX_DEPTH {
            break;
        }
        match frames.next() {
            Ok(Some(frame)) => {
                let addr = frame.address();
                if frame.is_return_address() && !is_code(frame.address_for_lookup()) {
                    break;
                }
                out.addrs.push(addr);
            }
            Ok(None) => {
                out.complete = true;
                break;
            }
            Err(_) => break,
        }
    }
    out
}
