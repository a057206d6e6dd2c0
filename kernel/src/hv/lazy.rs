//! Domain RAM filled on first touch (docs/02, "Lazy RAM"; the block
//! arithmetic is `tessera_kernel::lazy_ram`).
//!
//! Assigning RAM maps none of it; copying a module into it only records the
//! copy. A 2 MiB block is filled the first time anyone needs it: the guest
//! (a stage-2 translation fault, [`on_fault`]), its device model through
//! its window on the guest's RAM (the same), or the kernel on the guest's
//! behalf (`Domain::ram_pa_of`, [`ensure`]). Filling zeroes the gaps,
//! copies the recorded payload bytes after checking each 64 KiB chunk of
//! the module they come from against the image's digest, and only then maps
//! the block. A chunk is checked once per boot.
//!
//! Locks: a domain's `PAYLOADS` lock is taken before its stage-2 lock
//! (`grant::STAGE2`) and never while holding one; it is held while a block
//! is filled, so a block is filled once.

use core::sync::atomic::{AtomicU64, Ordering};

use super::console::log;
use super::{domains, grant, ioreq, Domain, MAX_DOMAINS};
use crate::addr::PAGE_SIZE;
use crate::arch::aarch64 as arch;
use crate::arch::aarch64::sha256::RuntimeSha256;
use tessera_ipc::errno::Errno;
use tessera_ipc::platform::RAM_BASE;
use tessera_kernel::image::{sha256_compress_soft, Module, ModuleTable, VerifyModules};
use tessera_kernel::lazy_ram::{
    block_range, blocks_of, Payload, PayloadError, Payloads, BLOCK, TRACKED_BLOCKS,
};
use tessera_kernel::pagetable::MapError;

const WORDS: usize = (TRACKED_BLOCKS / 64) as usize;
/// Chunks whose check is remembered: the first 1 GiB of the image's
/// modules. A chunk past that is checked each time it is copied.
const CHECKED_CHUNKS: u64 = 16384;

/// The module copies recorded for each domain's RAM.
static PAYLOADS: [spin::Mutex<Payloads>; MAX_DOMAINS] =
    [const { spin::Mutex::new(Payloads::new()) }; MAX_DOMAINS];
/// Which tracked blocks of each domain's RAM are filled and mapped.
static FILLED: [[AtomicU64; WORDS]; MAX_DOMAINS] =
    [const { [const { AtomicU64::new(0) }; WORDS] }; MAX_DOMAINS];
/// Which chunks of the image (by table chunk index) passed their check.
static CHECKED: [AtomicU64; (CHECKED_CHUNKS / 64) as usize] =
    [const { AtomicU64::new(0) }; (CHECKED_CHUNKS / 64) as usize];

/// Why a block could not be filled.
#[derive(Clone, Copy, Debug)]
pub enum FillError {
    /// Chunk `chunk` of module `module` does not match its digest.
    Corrupt { module: usize, chunk: u64 },
    /// The block is not the domain's RAM, or could not be mapped.
    Unmappable,
}

impl FillError {
    pub fn errno(self) -> Errno {
        match self {
            Self::Corrupt { .. } => Errno::Eio,
            Self::Unmappable => Errno::Efault,
        }
    }
}

fn filled_bit(di: usize, block: u64) -> Option<(&'static AtomicU64, u64)> {
    let word = FILLED.get(di)?.get(usize::try_from(block / 64).ok()?)?;
    Some((word, 1 << (block % 64)))
}

/// Whether block `block` of domain `di`'s RAM is filled (a block past the
/// tracked ones was filled when the RAM was assigned).
#[inline]
pub fn is_filled(di: usize, block: u64) -> bool {
    match filled_bit(di, block) {
        Some((word, bit)) => word.load(Ordering::Acquire) & bit != 0,
        None => true,
    }
}

/// Fill every block that bytes `[off, off + len)` of domain `di`'s RAM
/// touch (they must lie in it), so the kernel may use them through its own
/// mapping.
#[inline]
pub fn ensure(di: usize, d: &Domain, off: u64, len: u64) -> Result<(), FillError> {
    let (first, last) = blocks_of(off, len);
    for block in first..=last {
        if !is_filled(di, block) {
            fill(di, d, block)?;
        }
    }
    Ok(())
}

/// Fill block `block` of domain `di`'s RAM and map it in its stage 2.
#[inline(never)]
fn fill(di: usize, d: &Domain, block: u64) -> Result<(), FillError> {
    let lock = PAYLOADS.get(di).ok_or(FillError::Unmappable)?;
    let payloads = lock.lock();
    if is_filled(di, block) {
        return Ok(());
    }
    let (start, end) = block_range(block, d.ram_size()).ok_or(FillError::Unmappable)?;
    let pa = d.ram_pa();
    for (lo, hi) in payloads.gaps(start, end) {
        // SAFETY: `[lo, hi)` lies in the domain's RAM (inside the block),
        // identity-mapped at EL2; the block is in no stage 2 yet, so no
        // one else reads or writes it.
        unsafe { arch::zero_to_poc(pa + lo, hi - lo) };
    }
    let mut code = false;
    for piece in payloads.pieces(start, end) {
        check_and_copy(d, pa, piece).inspect_err(|e| report(d, *e))?;
        code = true;
    }
    if code {
        // Payloads are code: no stale instruction may be fetched from the
        // block. SAFETY: invalidating the instruction cache is always safe.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
    }
    let map_end = end.next_multiple_of(PAGE_SIZE);
    match grant::map_ram_into(di, RAM_BASE + start, pa + start, map_end - start) {
        Ok(()) | Err(MapError::AlreadyMapped) => {}
        Err(_) => return Err(FillError::Unmappable),
    }
    if let Some((word, bit)) = filled_bit(di, block) {
        word.fetch_or(bit, Ordering::Release);
    }
    Ok(())
}

/// Check the chunks `piece` copies from, then copy it into the RAM at `pa`.
fn check_and_copy(d: &Domain, pa: u64, piece: Payload) -> Result<(), FillError> {
    let corrupt = FillError::Corrupt {
        module: piece.module,
        chunk: 0,
    };
    let table = super::control::modules().ok_or(corrupt)?;
    let m = table.get(piece.module).ok_or(corrupt)?;
    check_chunks(table, &m, piece.from, piece.len)?;
    let from = usize::try_from(piece.from).map_err(|_| corrupt)?;
    let len = usize::try_from(piece.len).map_err(|_| corrupt)?;
    let bytes = m.data.get(from..from.saturating_add(len)).ok_or(corrupt)?;
    if piece.end() > d.ram_size() {
        return Err(FillError::Unmappable);
    }
    // SAFETY: `[piece.at, piece.end())` lies in the domain's RAM (checked
    // just above; recorded payloads were checked against it too), which is
    // identity-mapped at EL2 and not mapped where anyone else writes it;
    // `bytes` is a module of the image, outside every domain's RAM.
    unsafe { arch::copy_to_poc(pa + piece.at, bytes) };
    Ok(())
}

/// Check every chunk of `m` that bytes `[from, from + len)` touch, unless
/// it passed before.
fn check_chunks(
    table: &ModuleTable<'static>,
    m: &Module<'_>,
    from: u64,
    len: u64,
) -> Result<(), FillError> {
    let (first, last) = m.chunks_covering(from, len).ok_or(FillError::Corrupt {
        module: m.index,
        chunk: from / tessera_ipc::image::CHUNK_SIZE,
    })?;
    let mut sha: Option<Option<RuntimeSha256>> = None;
    for i in first..=last {
        let global = m.first_chunk + i;
        let bit = (global < CHECKED_CHUNKS)
            .then(|| {
                CHECKED
                    .get((global / 64) as usize)
                    .map(|w| (w, 1u64 << (global % 64)))
            })
            .flatten();
        if bit.is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0) {
            continue;
        }
        // The vector registers are saved once per fill, not per chunk.
        let ok = match sha.get_or_insert_with(RuntimeSha256::new) {
            Some(hw) => table.chunk_ok_with(m, i, |s, b| hw.compress(s, b)),
            None => table.chunk_ok_with(m, i, sha256_compress_soft),
        };
        if !ok {
            return Err(FillError::Corrupt {
                module: m.index,
                chunk: i,
            });
        }
        if let Some((w, b)) = bit {
            w.fetch_or(b, Ordering::Release);
        }
    }
    Ok(())
}

fn report(d: &Domain, e: FillError) {
    if let FillError::Corrupt { module, chunk } = e {
        let name = super::control::modules()
            .and_then(|t| t.get(module))
            .and_then(|m| core::str::from_utf8(m.name).ok())
            .unwrap_or("?");
        let at = chunk * tessera_ipc::image::CHUNK_SIZE;
        log!(
            "d{} {}: module entry {} {:?} fails its SHA-256 check at bytes {:#x}..{:#x}; it is not used",
            d.id,
            d.name,
            module,
            name,
            at,
            at + tessera_ipc::image::CHUNK_SIZE
        );
    }
}

/// Record a copy of module bytes into domain `di`'s RAM (`CopyModule`, a
/// kernel-built domain's payloads). Blocks already filled get their bytes
/// now, after their chunks are checked; the others when they are filled.
/// Validates first: on an error nothing is recorded or copied.
pub fn record(di: usize, d: &Domain, p: Payload) -> Result<(), Errno> {
    let lock = PAYLOADS.get(di).ok_or(Errno::Esrch)?;
    let mut payloads = lock.lock();
    let mut probe = payloads.clone();
    probe.add(p, d.ram_size()).map_err(|e| match e {
        PayloadError::OutOfRange => Errno::Einval,
        PayloadError::Full => Errno::Enospc,
    })?;
    let table = super::control::modules().ok_or(Errno::Enoent)?;
    let m = table.get(p.module).ok_or(Errno::Enoent)?;
    let (first, last) = blocks_of(p.at, p.len);
    let filled = |b: u64| is_filled(di, b);
    for block in (first..=last).filter(|&b| filled(b)) {
        let Some(piece) = block_range(block, d.ram_size()).and_then(|(s, e)| p.clip(s, e)) else {
            continue;
        };
        check_chunks(table, &m, piece.from, piece.len).map_err(|e| {
            report(d, e);
            e.errno()
        })?;
    }
    *payloads = probe;
    for block in (first..=last).filter(|&b| filled(b)) {
        if let Some(piece) = block_range(block, d.ram_size()).and_then(|(s, e)| p.clip(s, e)) {
            check_and_copy(d, d.ram_pa(), piece).map_err(FillError::errno)?;
        }
    }
    Ok(())
}

/// Domain `di`'s RAM (assigned just now, or reloaded) starts over: nothing
/// recorded, no tracked block filled or mapped, in its stage 2 or in its
/// device model's window. Its vCPUs must not be running.
pub fn reset(di: usize, d: &Domain) {
    let Some(lock) = PAYLOADS.get(di) else { return };
    let mut payloads = lock.lock();
    payloads.clear();
    let tracked = d
        .ram_size()
        .min(TRACKED_BLOCKS * BLOCK)
        .next_multiple_of(PAGE_SIZE);
    if tracked != 0 {
        grant::unmap_range_from(di, RAM_BASE, tracked);
        ioreq::forget_window(di, tracked);
    }
    for word in FILLED.get(di).into_iter().flatten() {
        word.store(0, Ordering::Release);
    }
}

/// The domain in slot `di` is freed: zero what it filled (its data must
/// not outlive it in free RAM; the rest was never written) and forget it.
pub fn scrub(di: usize, d: &Domain) {
    let size = d.ram_size();
    let tracked = size.min(TRACKED_BLOCKS * BLOCK);
    let mut block = 0;
    while let Some((start, end)) = block_range(block, size) {
        if start >= tracked || is_filled(di, block) {
            // SAFETY: the block is the freed domain's RAM, identity-mapped;
            // nothing reaches it any more (the caller's contract).
            unsafe { arch::zero_to_poc(d.ram_pa() + start, end - start) };
        }
        block += 1;
    }
    if let Some(lock) = PAYLOADS.get(di) {
        lock.lock().clear();
    }
    for word in FILLED.get(di).into_iter().flatten() {
        word.store(0, Ordering::Release);
    }
}

/// What a stage-2 translation fault at `ipa` in domain `di` was.
pub enum Fault {
    /// Its own RAM or a served domain's, now filled and mapped: retry.
    Filled,
    /// Neither, or a block that cannot be filled (reported).
    Other,
}

/// A stage-2 translation fault at `ipa` in domain `di`: fill the block if
/// it is RAM of the domain's own, or of a domain it serves as device model
/// (then map it in its window too).
pub fn on_fault(di: usize, ipa: u64) -> Fault {
    let Some(d) = domains().get(di) else {
        return Fault::Other;
    };
    if let Some(off) = ipa.checked_sub(RAM_BASE).filter(|&o| o < d.ram_size()) {
        let block = off / BLOCK;
        if is_filled(di, block) {
            // Filled meanwhile by another pCPU (the fault is stale), or
            // filled from the kernel's side: make sure it is mapped.
            let Some((start, end)) = block_range(block, d.ram_size()) else {
                return Fault::Other;
            };
            let len = end.next_multiple_of(PAGE_SIZE) - start;
            return match grant::map_ram_into(di, RAM_BASE + start, d.ram_pa() + start, len) {
                Ok(()) | Err(MapError::AlreadyMapped) => Fault::Filled,
                Err(_) => Fault::Other,
            };
        }
        return match fill(di, d, block) {
            Ok(()) => Fault::Filled,
            Err(_) => Fault::Other,
        };
    }
    let Some((ti, at)) = ioreq::window_of(di, ipa) else {
        return Fault::Other;
    };
    let Some(t) = domains().get(ti) else {
        return Fault::Other;
    };
    let off = ipa - at;
    let block = off / BLOCK;
    let Some((start, end)) = block_range(block, t.ram_size()) else {
        return Fault::Other;
    };
    if !is_filled(ti, block) && fill(ti, t, block).is_err() {
        return Fault::Other;
    }
    let len = end.next_multiple_of(PAGE_SIZE) - start;
    match grant::map_range_into(di, at + start, t.ram_pa() + start, len) {
        Ok(()) | Err(MapError::AlreadyMapped) => Fault::Filled,
        Err(_) => Fault::Other,
    }
}
