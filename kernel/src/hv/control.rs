//! Domain control at EL2: the `Op::Control` hypercall a builder (domB) uses
//! to create, load, wire, start, stop and destroy domains, and the same
//! operations as functions the dom0less boot path calls for the domains of
//! the system description (`build_domain` in `mod.rs`).
//!
//! The one idea: every change to a domain slot happens under one lock
//! (`CONTROL`) except the two the running system makes on its own (a domain
//! stops; the kernel restarts one it built), and each is a compare-exchange
//! the portable state machine allows (`tessera_kernel::control::next`). The
//! trap and scheduler paths never take the lock: they see a slot's fields
//! only once it is published, and a destroyed slot is freed only after
//! every pCPU has passed a scheduling point, so nothing they hold outlives
//! it. vCPUs join and leave a pCPU's run queue through a mailbox the owner
//! empties at its next scheduling point, so run queues stay owner-only.
//!
//! Every call decodes (portable), then validates everything (lookups,
//! policy, state, ranges), then acts. A denial is `-EACCES` and one
//! `avc: denied` line. The ABI is `tessera_ipc::control`, the rules
//! `docs/01-hypercall-abi.md`.

use super::console::{self, log};
use super::trap::{copy_from_guest, copy_to_guest};
use super::{
    advance, domain_id, domains, events, grant, ioreq, kick_owner, mac, owned, release_links,
    request_start, stop_domain, stop_vcpus, vcpu, Domain, DomainFields, OwnerState, PcpuInner,
    StopReason, LIVE_DOMAINS, MAX_DOMAINS, NR_PCPUS, PCPUS, STARTED,
};
use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::arch::aarch64::{self as arch, boot, gic, guest, mmu, Lock};
use crate::pagetable::{Attrs, PageTable, Stage2, TableMemory};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tessera_ipc::control::{CreateDomain, DomainInfo, ExitReason, ModuleInfo, ShareMemory};
use tessera_ipc::errno::Errno;
use tessera_ipc::platform::{self, MAX_VCPUS_PER_DOMAIN};
use tessera_kernel::console_lines::LineBuffer;
use tessera_kernel::control::{
    self as core_control, ControlCall, Event, Hold, HoldAction, ModuleQuery, ShareSpec, SlotState,
    VcpuMap,
};
use tessera_kernel::image::ModuleTable;
use tessera_kernel::lazy_ram;
use tessera_kernel::placement::Placement;
use tessera_kernel::ram::{RamError, RamMap};
use tessera_kernel::sched::MAX_VCPUS_PER_PCPU;
use tessera_kernel::vgic::Vgic;
use tessera_policy::{DomainPerm, EventPerm, GrantPerm, MmuPerm, Perm, Sid};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

/// Stage-2 table pages one slot may hold (root, a level-2 table per GiB of
/// RAM, and tables for shared regions).
const MAX_SLOT_TABLES: usize = 16;
/// Most `ShareMemory` regions in the system at once.
const MAX_SHARES: usize = 32;
/// Bytes `CopyToDomain` moves per step through the kernel's stack.
const COPY_CHUNK: usize = 512;

/// Why the kernel could not build a domain: an error code for a builder,
/// or a sentence for the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    Errno(Errno),
    Memory(RamError),
}

impl From<Errno> for BuildError {
    fn from(e: Errno) -> Self {
        Self::Errno(e)
    }
}

impl BuildError {
    /// The code a builder sees: a range that is not RAM is `-EINVAL`, one
    /// that holds the kernel or firmware `-EPERM`, one another domain has
    /// `-EBUSY`, and no room `-ENOMEM`.
    pub fn errno(self) -> Errno {
        match self {
            Self::Errno(e) => e,
            Self::Memory(RamError::NotRam | RamError::NotAllocated) => Errno::Einval,
            Self::Memory(RamError::Reserved) => Errno::Eperm,
            Self::Memory(RamError::InUse) => Errno::Ebusy,
            Self::Memory(RamError::NoSpace) => Errno::Enomem,
        }
    }

    /// For the boot log.
    pub fn why(self) -> &'static str {
        match self.errno() {
            Errno::Enospc => "too many vCPUs (or no free domain slot)",
            Errno::Enomem => "out of memory (host RAM or stage-2 tables)",
            Errno::Ebusy => "the domain slot or memory is taken",
            _ => "invalid domain parameters",
        }
    }
}

/// One pCPU's placement mailbox: vCPUs to add to or take off its run queue
/// (bit `v` for vCPU `v`), and how many scheduling passes it has made.
struct Mailbox {
    adopt: AtomicU64,
    release: AtomicU64,
    passes: AtomicU64,
    /// It has made a pass: it counts when a destroyed slot waits for
    /// every pCPU.
    online: AtomicBool,
    /// vCPUs placed on it, for the run queue's capacity.
    placed: AtomicUsize,
}

static MAILBOXES: [Mailbox; boot::MAX_PCPUS] = [const {
    Mailbox {
        adopt: AtomicU64::new(0),
        release: AtomicU64::new(0),
        passes: AtomicU64::new(0),
        online: AtomicBool::new(false),
        placed: AtomicUsize::new(0),
    }
}; boot::MAX_PCPUS];

/// A slot's stage-2 table pages. They come from the kernel's table pool
/// the first time and are kept for the slot's next domain, so creating and
/// destroying domains never exhausts the pool.
struct SlotTables {
    pages: heapless::Vec<u64, MAX_SLOT_TABLES>,
    used: usize,
}

impl TableMemory for SlotTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let page = match self.pages.get(self.used) {
            Some(&page) => {
                // SAFETY: `page` is a table page of this slot's earlier
                // domain, unreachable since its stage 2 was dropped (the
                // slot was reaped, TLBs invalidated); only this slot uses it.
                unsafe { core::ptr::write_bytes(page as *mut u8, 0, PAGE_SIZE as usize) };
                arch::dsb_ish();
                page
            }
            None if !self.pages.is_full() => {
                let page = mmu::Frames.alloc_table()?.raw();
                let _ = self.pages.push(page);
                page
            }
            None => return None,
        };
        self.used += 1;
        Some(PhysAddr(page))
    }
    fn read(&self, addr: PhysAddr) -> u64 {
        mmu::Frames.read(addr)
    }
    fn write(&mut self, addr: PhysAddr, desc: u64) {
        mmu::Frames.write(addr, desc)
    }
}

/// What the kernel keeps per slot for building it.
struct SlotRecord {
    /// `SetVcpuContext`: (entry, x0) per vCPU, applied by the first
    /// `Unpause`.
    contexts: [Option<(u64, u64)>; MAX_VCPUS_PER_DOMAIN],
    tables: SlotTables,
    /// Since `Destroy`: each pCPU's pass count when it began.
    dying: Option<[u64; boot::MAX_PCPUS]>,
    /// Whether it waits for its device model before it runs.
    hold: Hold,
}

/// A `ShareMemory` region: part of `owner`'s RAM mapped into `user`.
#[derive(Clone, Copy)]
struct Share {
    owner: usize,
    user: usize,
    user_ipa: u64,
    size: u64,
}

struct Control {
    ram: Option<RamMap>,
    vcpus: VcpuMap,
    /// Where vCPUs go: pinned domains on the pCPUs they own, the others
    /// round robin over the rest.
    placement: Placement,
    slots: [SlotRecord; MAX_DOMAINS],
    shares: heapless::Vec<Share, MAX_SHARES>,
}

static CONTROL: Lock<Control> = Lock::new(Control {
    ram: None,
    vcpus: VcpuMap::new(),
    placement: Placement::unpinned(1),
    slots: [const {
        SlotRecord {
            contexts: [None; MAX_VCPUS_PER_DOMAIN],
            tables: SlotTables {
                pages: heapless::Vec::new(),
                used: 0,
            },
            dying: None,
            hold: Hold::Free,
        }
    }; MAX_DOMAINS],
    shares: heapless::Vec::new(),
});

/// The image's module table, for `ModuleInfo` and `CopyModule` (its
/// checksums were verified at boot).
static MODULES: spin::Once<ModuleTable<'static>> = spin::Once::new();

/// The image's module table (once the kernel has checked it at boot).
pub(super) fn modules() -> Option<&'static ModuleTable<'static>> {
    MODULES.get()
}

/// The index of the module whose bytes `data` is.
pub(super) fn module_index_of(data: &[u8]) -> Option<usize> {
    MODULES.get()?.modules().find_map(|m| {
        (m.data.as_ptr() == data.as_ptr() && m.data.len() == data.len()).then_some(m.index)
    })
}

/// Boot: the host's RAM with what is reserved, the module table, and the
/// pCPUs with the ones pinned domains own. Halts if the RAM map cannot
/// hold them.
pub(super) fn init(
    ram: &[(u64, u64)],
    reserved: &[(u64, u64)],
    table: ModuleTable<'static>,
    placement: Placement,
) {
    let map = match RamMap::new(ram, reserved) {
        Ok(m) => m,
        Err(e) => super::halt_with(format_args!("cannot track host RAM: {e:?}")),
    };
    let mut ctl = CONTROL.lock();
    ctl.ram = Some(map);
    ctl.placement = placement;
    MODULES.call_once(|| table);
}

/// Boot: `size` bytes of free host RAM (2 MiB aligned), for a shared region
/// or the grant tables.
pub(super) fn alloc_ram(size: u64) -> Option<u64> {
    CONTROL.lock().ram.as_mut()?.alloc(size).ok()
}

/// Boot: the fixed host range `[base, base + size)`, if it is free RAM.
pub(super) fn claim_ram(base: u64, size: u64, align: u64) -> Option<u64> {
    CONTROL.lock().ram.as_mut()?.claim(base, size, align).ok()
}

/// Create the domain `fields` describes in slot `slot` (the dom0less path;
/// `CreateDomain` picks a free slot).
pub(super) fn create_in(slot: usize, fields: DomainFields) -> Result<(), BuildError> {
    CONTROL.lock().create(slot, fields)
}

/// Give domain `slot` `size` bytes of RAM at `RAM_BASE`: any free RAM, or
/// the fixed host range at `host`; each block is zeroed (or filled with
/// the payloads recorded for it) when first touched (`lazy`).
pub(super) fn assign_memory(slot: usize, size: u64, host: Option<u64>) -> Result<(), BuildError> {
    CONTROL.lock().assign(slot, size, host)
}

/// Boot: map host memory at `host` (a static shared region, or the
/// image's modules for the boot domain) at `guest_base` in domain `slot`,
/// with `attrs`, before it runs.
pub(super) fn map_static(
    slot: usize,
    guest_base: u64,
    host: u64,
    size: u64,
    attrs: Attrs,
) -> Result<(), BuildError> {
    let mut ctl = CONTROL.lock();
    let d = domains().get(slot).ok_or(Errno::Esrch)?;
    let rec = ctl.slots.get_mut(slot).ok_or(Errno::Esrch)?;
    PageTable::<Stage2>::from_root(PhysAddr(d.s2_root), 1, mmu::VA_BITS)
        .map(&mut rec.tables, guest_base, PhysAddr(host), size, attrs)
        .map_err(|_| BuildError::Errno(Errno::Enomem))
}

/// Set vCPU `vcpu` of domain `slot` to enter at `pc` with `x0`.
pub(super) fn set_vcpu_context(
    slot: usize,
    vcpu: usize,
    pc: u64,
    x0: u64,
) -> Result<(), BuildError> {
    CONTROL.lock().set_context(slot, vcpu, pc, x0)?;
    Ok(())
}

/// Start domain `slot` (its first `Unpause`), or let it run again.
pub(super) fn unpause(slot: usize) -> Result<(), Errno> {
    CONTROL.lock().unpause(slot)
}

/// `IoreqCmd::Ready` from domain `server`, the registered server of domain
/// `slot` (checked by the caller): a domain held for it starts now.
pub(super) fn device_model_ready(slot: usize, server: usize) -> Result<(), Errno> {
    CONTROL.lock().ready(slot, server)
}

/// Which pCPUs some vCPU is placed on, one bit each.
fn occupied_pcpus() -> u64 {
    MAILBOXES
        .iter()
        .enumerate()
        .filter(|(_, mb)| mb.placed.load(Ordering::Relaxed) > 0)
        .fold(0, |m, (p, _)| m | 1 << p)
}

impl Control {
    /// Create a domain in free slot `slot`: reserve it, give it vCPUs
    /// (placed as the boot placement does), an empty stage 2, fresh event
    /// channel and grant tables, then publish it, paused.
    fn create(&mut self, slot: usize, mut fields: DomainFields) -> Result<(), BuildError> {
        let d = domains().get(slot).ok_or(Errno::Einval)?;
        let n = fields.nr_vcpus;
        // Validate: the slot, the vCPUs and their pCPUs, a stage-2 root.
        core_control::next(d.slot_state(), Event::Reserve)?;
        if n == 0 || n > MAX_VCPUS_PER_DOMAIN {
            return Err(Errno::Einval.into());
        }
        // A pin must name a pCPU of the board that no other domain's vCPU
        // is on (its owner is gone, or it was only reserved at boot).
        self.placement
            .check_pins(&fields.pins, occupied_pcpus())
            .map_err(|e| e.errno())?;
        let mut probe = self.vcpus;
        let first = probe.alloc(n).ok_or(Errno::Enospc)?;
        // A pinned vCPU on its pin, the rest off every pinned pCPU; none
        // left for an unpinned one is no room.
        let mut pcpus = [0usize; MAX_VCPUS_PER_DOMAIN];
        for (idx, p) in pcpus.iter_mut().enumerate().take(n) {
            *p = self
                .placement
                .pcpu_of(&fields.pins, first, idx)
                .ok_or(Errno::Enospc)?;
        }
        for (p, mb) in MAILBOXES.iter().enumerate() {
            let adding = pcpus.iter().take(n).filter(|&&q| q == p).count();
            if mb.placed.load(Ordering::Relaxed) + adding > MAX_VCPUS_PER_PCPU {
                return Err(Errno::Enospc.into());
            }
        }
        let rec = self.slots.get_mut(slot).ok_or(Errno::Einval)?;
        rec.tables.used = 0;
        let root = PageTable::<Stage2>::new(&mut rec.tables, 1, mmu::VA_BITS)
            .map_err(|_| Errno::Enomem)?
            .root();
        // Act.
        advance(d, Event::Reserve)?;
        let _ = self.vcpus.alloc(n);
        self.placement.own(&fields.pins, slot);
        rec.hold = Hold::new(fields.device_model);
        fields.first_vcpu = first;
        fields.s2_root = root.raw();
        // SAFETY: the slot is `Creating`, reserved just now under `CONTROL`;
        // no lookup returns it and no reference to its old fields remains
        // (it was reaped), so this is the only access.
        unsafe { *d.fields.get() = fields };
        d.ram_pa.store(0, Ordering::Relaxed);
        d.ram_size.store(0, Ordering::Release);
        d.generation.store(0, Ordering::Relaxed);
        d.exit_reason
            .store(ExitReason::None as u8, Ordering::Relaxed);
        *d.vgic.lock() = Vgic::new(n);
        *d.console.lock() = LineBuffer::new();
        super::console::forget_input(slot);
        rec.contexts = [None; MAX_VCPUS_PER_DOMAIN];
        events::init_domain(slot, n);
        grant::init_domain(slot);
        for (idx, &p) in pcpus.iter().enumerate().take(n) {
            let v = first + idx;
            let Some(s) = vcpu(v) else { continue };
            s.domain.store(slot, Ordering::Relaxed);
            s.index.store(idx, Ordering::Relaxed);
            s.pcpu.store(p, Ordering::Relaxed);
            s.domain_ptr
                .store(d as *const Domain as *mut Domain, Ordering::Relaxed);
            s.power.reset();
            s.irq_hint.store(false, Ordering::Relaxed);
            s.ioreq_wake.store(false, Ordering::Relaxed);
            let Some(mb) = MAILBOXES.get(p) else { continue };
            mb.placed.fetch_add(1, Ordering::Relaxed);
            // Release: the owner sees the vCPU's fields once it sees the bit.
            mb.adopt.fetch_or(1 << v, Ordering::Release);
            kick_pcpu(p);
            log!("d{} {}: vcpu{} on pcpu{}", d.id, d.name, idx, p);
        }
        advance(d, Event::Publish)?;
        Ok(())
    }

    /// The slot of a domain being built: published and not yet run.
    fn building(slot: usize) -> Result<&'static Domain, Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        match d.slot_state() {
            SlotState::Created => Ok(d),
            s if s.is_published() => Err(Errno::Ebusy),
            _ => Err(Errno::Esrch),
        }
    }

    fn assign(&mut self, slot: usize, size: u64, host: Option<u64>) -> Result<(), BuildError> {
        let d = Self::building(slot)?;
        if d.ram_size() != 0 {
            return Err(Errno::Eexist.into());
        }
        let ram = self.ram.as_mut().ok_or(Errno::Enomem)?;
        // Taking the range is the last check: it either holds or nothing
        // changed.
        let pages = size.next_multiple_of(PAGE_SIZE);
        let pa = match host {
            Some(base) => ram.claim(base, pages, PAGE_SIZE),
            None => ram.alloc(pages),
        }
        .map_err(BuildError::Memory)?;
        let rec = self.slots.get_mut(slot).ok_or(Errno::Esrch)?;
        // The stage 2's tables for all of it are built now, from the build
        // pool: the tracked blocks are mapped one by one (so a filled block
        // is a 2 MiB leaf under a table that exists) and unmapped again,
        // to be mapped as each is filled; the rest stays mapped, zeroed.
        let mut s2 = PageTable::<Stage2>::from_root(PhysAddr(d.s2_root), 1, mmu::VA_BITS);
        let tracked = pages.min(lazy_ram::TRACKED_BLOCKS * lazy_ram::BLOCK);
        let mut off = 0;
        let mut mapped = Ok(());
        while off < pages && mapped.is_ok() {
            let len = if off < tracked {
                (tracked - off).min(lazy_ram::BLOCK)
            } else {
                pages - off
            };
            mapped = s2.map(
                &mut rec.tables,
                platform::RAM_BASE + off,
                PhysAddr(pa + off),
                len,
                Attrs::RAM,
            );
            off += len;
        }
        if mapped.is_err() {
            let _ = s2.unmap(&mut rec.tables, platform::RAM_BASE, off);
            let _ = ram.free(pa, pages);
            return Err(Errno::Enomem.into());
        }
        let _ = s2.unmap(&mut rec.tables, platform::RAM_BASE, tracked);
        if pages > tracked {
            // SAFETY: `[pa + tracked, pa + pages)` was just taken for this
            // domain alone, is identity-mapped Normal RAM at EL2, and the
            // domain has not run.
            unsafe { arch::zero_to_poc(pa + tracked, pages - tracked) };
        }
        d.ram_pa.store(pa, Ordering::Relaxed);
        d.ram_size.store(size, Ordering::Release);
        super::lazy::reset(slot, d);
        Ok(())
    }

    fn set_context(&mut self, slot: usize, idx: usize, pc: u64, x0: u64) -> Result<(), Errno> {
        let d = Self::building(slot)?;
        if idx >= d.nr_vcpus || !pc.is_multiple_of(4) || d.ram_offset_of(pc, 4).is_none() {
            return Err(Errno::Einval);
        }
        let rec = self.slots.get_mut(slot).ok_or(Errno::Esrch)?;
        let ctx = rec.contexts.get_mut(idx).ok_or(Errno::Einval)?;
        *ctx = Some((pc, x0));
        Ok(())
    }

    fn unpause(&mut self, slot: usize) -> Result<(), Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        let from = d.slot_state();
        core_control::next(from, Event::Unpause)?;
        if from == SlotState::Paused {
            advance(d, Event::Unpause)?;
            events::resume_upcalls(slot, d.nr_vcpus);
            kick_vcpus(d);
            return Ok(());
        }
        let rec = self.slots.get_mut(slot).ok_or(Errno::Esrch)?;
        if d.ram_size() == 0 || rec.contexts.first().copied().flatten().is_none() {
            return Err(Errno::Einval);
        }
        // The payloads were written through the data side: no stale
        // instructions may be fetched from the domain's RAM.
        // SAFETY: invalidating the instruction cache is always safe.
        unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
        // A partition that owns its pCPUs (`tessera,pcpus`) is there for
        // its timing: its RAM is filled now, so no first touch ever stalls
        // it (filling a payload block costs milliseconds).
        if !d.pins.is_empty() {
            super::lazy::ensure(slot, d, 0, d.ram_size()).map_err(super::lazy::FillError::errno)?;
        }
        // Counted before it can stop, so the count never goes below zero.
        LIVE_DOMAINS.fetch_add(1, Ordering::AcqRel);
        advance(d, Event::Unpause)?;
        // The first domain with an emulated UART gets the keyboard, as the
        // dom0less boot gives it before it starts anyone.
        if d.vpl011 && console::focus() == usize::MAX {
            console::set_focus(slot);
            log!(
                "console input goes to d{} {} (Ctrl-T moves it to the next guest UART)",
                d.id,
                d.name
            );
        }
        match rec.hold.start() {
            HoldAction::Start => start_vcpus(d, rec),
            HoldAction::Wait => {
                let server = rec.hold.waits_for().and_then(|s| domains().get(s));
                log!(
                    "d{} {}: waits for its device model d{} {} before it runs",
                    d.id,
                    d.name,
                    server.map_or(0, |s| s.id),
                    server.map_or("?", |s| s.name.as_str())
                );
            }
            HoldAction::Nothing => {}
        }
        Ok(())
    }

    /// `Ready` from `server` for domain `slot`: if the domain was held, it
    /// starts now (its vCPUs run once it is not paused).
    fn ready(&mut self, slot: usize, server: usize) -> Result<(), Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        let rec = self.slots.get_mut(slot).ok_or(Errno::Esrch)?;
        // Validate: a domain that can still start (not stopped or going).
        if !matches!(
            d.slot_state(),
            SlotState::Created | SlotState::Running | SlotState::Paused
        ) {
            return Err(Errno::Esrch);
        }
        let mut hold = rec.hold;
        let action = hold.ready(server)?;
        // Act.
        rec.hold = hold;
        if action == HoldAction::Start {
            log!("d{} {}: its device model is ready; starting", d.id, d.name);
            start_vcpus(d, rec);
        }
        Ok(())
    }

    fn pause(&mut self, slot: usize) -> Result<(), Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        advance(d, Event::Pause)?;
        kick_vcpus(d);
        Ok(())
    }

    /// Destroy domain `slot`: stop it if it runs, take back everything
    /// that reaches it, post its vCPUs' removal, and leave it `Dying` until
    /// `reap` finds that every pCPU has passed a scheduling point.
    fn destroy(&mut self, slot: usize) -> Result<(), Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        match d.slot_state() {
            SlotState::Running | SlotState::Paused => stop_domain(slot, StopReason::Destroyed),
            SlotState::Created => {
                stop_vcpus(d);
                release_links(slot, d);
                log!("d{} {}: destroyed", d.id, d.name);
            }
            SlotState::Stopped => log!("d{} {}: destroyed", d.id, d.name),
            SlotState::Dying => {
                self.reap();
                return Ok(());
            }
            SlotState::Free | SlotState::Creating => return Err(Errno::Esrch),
        }
        // The kernel may have restarted it (a reboot) in between: then it
        // is stopped again here.
        if matches!(
            advance(d, Event::Destroy)?,
            SlotState::Running | SlotState::Paused
        ) {
            stop_vcpus(d);
            release_links(slot, d);
        }
        ioreq::domain_destroyed(slot, d.ram_size());
        self.unshare(slot);
        for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
            if let Some(s) = vcpu(v) {
                let p = s.pcpu.load(Ordering::Relaxed);
                if let Some(mb) = MAILBOXES.get(p) {
                    mb.release.fetch_or(1 << v, Ordering::Release);
                }
            }
        }
        let mut snapshot = [0u64; boot::MAX_PCPUS];
        for (p, mb) in MAILBOXES.iter().enumerate() {
            snapshot[p] = mb.passes.load(Ordering::Acquire);
        }
        if let Some(rec) = self.slots.get_mut(slot) {
            rec.dying = Some(snapshot);
        }
        for p in 0..NR_PCPUS.load(Ordering::Relaxed) {
            kick_pcpu(p);
        }
        self.reap();
        Ok(())
    }

    /// Free every dying slot that no pCPU can still be using: two passes
    /// of its scheduler since the slot began dying (one that may have been
    /// under way, and a whole one after, which also took the vCPUs off its
    /// run queue). A pCPU that has not got there yet is kicked again.
    fn reap(&mut self) {
        let ncpu = NR_PCPUS.load(Ordering::Relaxed).min(boot::MAX_PCPUS);
        for slot in 0..MAX_DOMAINS {
            let Some(snapshot) = self.slots.get(slot).and_then(|r| r.dying) else {
                continue;
            };
            let mut quiet = true;
            for (p, mb) in MAILBOXES.iter().enumerate().take(ncpu) {
                let passed = mb.passes.load(Ordering::Acquire) >= snapshot[p] + 2;
                if mb.online.load(Ordering::Acquire) && !passed {
                    quiet = false;
                    kick_pcpu(p);
                }
            }
            if quiet {
                self.free_slot(slot);
            }
        }
    }

    fn free_slot(&mut self, slot: usize) {
        let Some(d) = domains().get(slot) else { return };
        // Anything bound to it meanwhile (a racing reboot) goes too.
        events::domain_stopped(slot, d.nr_vcpus);
        let (pa, size) = (d.ram_pa(), d.ram_size());
        if size != 0 {
            // No vCPU, device model, grant or shared mapping reaches its
            // RAM any more, and every pCPU has left whatever it was doing
            // with it: what it wrote is zeroed (the rest never was).
            super::lazy::scrub(slot, d);
            if let Some(ram) = self.ram.as_mut() {
                if ram.free(pa, size.next_multiple_of(PAGE_SIZE)).is_err() {
                    log!("d{}: its RAM was not allocated to it; kept", d.id);
                }
            }
        }
        // The VMID goes to the slot's next domain: nothing of this one may
        // stay in a TLB.
        guest::flush_stage2_all(d.s2_root, d.id);
        self.vcpus.free(d.first_vcpu, d.nr_vcpus);
        self.placement.release(&d.pins);
        for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
            if let Some(s) = vcpu(v) {
                s.power.reset();
            }
        }
        d.ram_size.store(0, Ordering::Release);
        d.ram_pa.store(0, Ordering::Relaxed);
        if let Some(rec) = self.slots.get_mut(slot) {
            rec.dying = None;
            rec.contexts = [None; MAX_VCPUS_PER_DOMAIN];
            rec.tables.used = 0;
            rec.hold = Hold::Free;
        }
        let _ = advance(d, Event::Reap);
    }

    /// Regions of `slot`'s RAM leave their users; regions mapped into it
    /// are forgotten (its stage 2 goes with it).
    fn unshare(&mut self, slot: usize) {
        let mut i = 0;
        while let Some(s) = self.shares.get(i).copied() {
            if s.owner == slot {
                grant::unmap_range_from(s.user, s.user_ipa, s.size);
            }
            if s.owner == slot || s.user == slot {
                self.shares.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// Power on every vCPU of `d` that has a context (`SetVcpuContext`); the
/// others start with PSCI CPU_ON.
fn start_vcpus(d: &Domain, rec: &SlotRecord) {
    for (idx, ctx) in rec.contexts.iter().enumerate().take(d.nr_vcpus) {
        let (Some((pc, x0)), Some(s)) = (ctx, vcpu(d.first_vcpu + idx)) else {
            continue;
        };
        let _ = s.power.power_on(*pc, *x0);
        // A kick alone does not make the owner scan for power-on
        // requests: the start must be announced.
        request_start(d.first_vcpu + idx);
    }
}

/// Kick every vCPU of `d`: its pCPU looks at it again.
fn kick_vcpus(d: &Domain) {
    for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
        kick_owner(v);
    }
}

/// Make pCPU `p` make a scheduling pass soon (as `kick_owner` does for the
/// pCPU of a vCPU).
fn kick_pcpu(p: usize) {
    let Some(c) = PCPUS.get(p) else { return };
    c.attention.store(true, Ordering::Release);
    let owner = c.mpidr.load(Ordering::Relaxed);
    if owner != arch::mpidr() {
        gic::kick(owner);
    } else if STARTED.load(Ordering::Acquire) > 0 {
        // SAFETY: we are pCPU `p`, in a trap handler or at boot, where no
        // other reference to its scheduler state is live (as in
        // `kick_owner`).
        unsafe { super::pcpu_inner(p) }.slice_expired = true;
    }
}

/// pCPU `p`'s scheduling pass (from `take_start_requests`): take the vCPUs
/// of destroyed domains off its run queue, forgetting any of their state
/// still in the hardware, then add the vCPUs of new domains.
pub(super) fn take_placements(p: usize, inner: &mut PcpuInner) {
    let Some(mb) = MAILBOXES.get(p) else { return };
    mb.online.store(true, Ordering::Release);
    let release = mb.release.swap(0, Ordering::AcqRel);
    for v in bits(release) {
        if inner.runq.remove(v) {
            mb.placed.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: we are pCPU `p`, the owner of `v`; nothing else of it is
        // borrowed in the scheduler pass.
        let (frame, own) = unsafe { owned(v) };
        if inner.loaded == Some(v) {
            if own.timer_in_hw {
                guest::save_timer(&mut frame.timer);
            }
            if own.lr_used != 0 {
                for n in 0..gic::NR_LRS {
                    gic::write_lr(n, 0);
                }
            }
            inner.loaded = None;
        }
        if inner.fp_owner == Some(v) {
            inner.fp_owner = None;
        }
        let di = vcpu(v).map(|s| s.domain.load(Ordering::Relaxed));
        if inner.stage2_of.is_some() && inner.stage2_of == di {
            inner.stage2_of = None;
        }
        *own = OwnerState::default();
    }
    let adopt = mb.adopt.swap(0, Ordering::AcqRel);
    for v in bits(adopt) {
        // SAFETY: as above; the vCPU is new to this pCPU and runs nowhere.
        let (frame, own) = unsafe { owned(v) };
        frame.id = v as u32;
        frame.pcpu = p as u32;
        *own = OwnerState::default();
        if inner.runq.add(v).is_err() {
            log!("pcpu{}: run queue full, vcpu {} not placed", p, v);
        }
    }
    mb.passes.fetch_add(1, Ordering::Release);
}

/// The set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        (mask != 0).then(|| {
            let v = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            v
        })
    })
}

fn read_arg<T: FromBytes + IntoBytes>(d: &Domain, va: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(d, va, v.as_mut_bytes())?;
    Ok(v)
}

fn write_arg<T: IntoBytes + Immutable>(d: &Domain, va: u64, v: &T) -> Result<(), Errno> {
    copy_to_guest(d, va, v.as_bytes())
}

/// The domain a caller names, for a control call: it exists (`Dying` only
/// where `dying_ok`), and it is not the caller unless `self_ok`.
fn target(
    caller: usize,
    dom: u16,
    self_ok: bool,
    dying_ok: bool,
) -> Result<(usize, &'static Domain), Errno> {
    let i = usize::from(dom).checked_sub(1).ok_or(Errno::Esrch)?;
    let d = domains().get(i).ok_or(Errno::Esrch)?;
    let state = d.slot_state();
    if !(state.is_published() || dying_ok && state == SlotState::Dying) {
        return Err(Errno::Esrch);
    }
    if i == caller && !self_ok {
        return Err(Errno::Einval);
    }
    Ok((i, d))
}

/// The control hypercall from domain `di` on pCPU `p`.
pub fn control_op(p: usize, di: usize, call: ControlCall) -> Result<u64, Errno> {
    let me = domains().get(di).ok_or(Errno::Esrch)?;
    let check = |sid: Sid, perm: Perm| mac::check(p, me.sid, sid, perm);
    match call {
        ControlCall::Create { arg } => {
            let raw: CreateDomain = read_arg(me, arg.raw())?;
            let spec = core_control::parse_create(&raw)?;
            let sid = mac::sid_of(&spec.label).ok_or(Errno::Einval)?;
            check(sid, DomainPerm::Create.into())?;
            let mut ctl = CONTROL.lock();
            ctl.reap();
            let free = |i: usize| {
                domains()
                    .get(i)
                    .is_some_and(|d| d.slot_state() == SlotState::Free)
            };
            let slot = match spec.domid {
                // Its id asked for: that slot, once the last domain in it
                // is gone (a rebuild waits for the reap).
                Some(id) => {
                    let i = usize::from(id).checked_sub(1).ok_or(Errno::Einval)?;
                    match domains().get(i).map(Domain::slot_state) {
                        Some(SlotState::Free) => i,
                        Some(SlotState::Dying | SlotState::Creating) => return Err(Errno::Ebusy),
                        Some(_) => return Err(Errno::Eexist),
                        None => return Err(Errno::Einval),
                    }
                }
                None => (0..MAX_DOMAINS).find(|&i| free(i)).ok_or(Errno::Enospc)?,
            };
            // Its device model must exist already (so it is never the new
            // domain, whose slot is free): it is named by index from now
            // on, and only it may serve the new domain.
            let device_model = match spec.device_model {
                Some(id) => Some(super::index_of(id).ok_or(Errno::Esrch)?),
                None => None,
            };
            let name = spec.name.clone();
            let pins = spec.pins.clone();
            let fields = DomainFields {
                device_model,
                vpl011: spec.vpl011,
                pins: spec.pins.iter().copied().collect(),
                ..DomainFields::new(spec.name, sid, spec.vcpus)
            };
            let restarts = spec.restarts;
            ctl.create(slot, fields).map_err(BuildError::errno)?;
            ioreq::set_restarts(slot, restarts);
            log!(
                "d{} {}: created by d{} {} as {}",
                slot + 1,
                name,
                me.id,
                me.name,
                spec.label
            );
            for pin in &pins {
                log!(
                    "pcpu{} belongs to d{} {} (tessera,pcpus): no other domain runs there",
                    pin,
                    slot + 1,
                    name
                );
            }
            Ok(u64::from(domain_id(slot)))
        }
        ControlCall::AssignMemory { dom, size, host } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::Create.into())?;
            let mut ctl = CONTROL.lock();
            ctl.reap();
            ctl.assign(ti, size, host).map_err(BuildError::errno)?;
            Ok(0)
        }
        ControlCall::ModuleInfo { dom, arg } => {
            let (_, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::Create.into())?;
            let mut info: ModuleInfo = read_arg(me, arg.raw())?;
            let table = MODULES.get().ok_or(Errno::Enoent)?;
            let index = match core_control::parse_module_query(&info)? {
                ModuleQuery::Index(i) => i,
                ModuleQuery::Name(name) => table.position(name).ok_or(Errno::Enoent)?,
            };
            let module = table.get(index).ok_or(Errno::Enoent)?;
            info.index = (index as u32).into();
            info.kind = (module.kind as u32).into();
            info.size = (module.data.len() as u64).into();
            info.name = [0; tessera_ipc::control::MODULE_NAME_LEN];
            for (dst, src) in info.name.iter_mut().zip(module.name) {
                *dst = *src;
            }
            write_arg(me, arg.raw(), &info)?;
            Ok(0)
        }
        ControlCall::CopyModule { dom, module, ipa } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, MmuPerm::MapWrite.into())?;
            let _ctl = CONTROL.lock();
            let t = Control::building(ti)?;
            let data = MODULES
                .get()
                .and_then(|m| m.get(module as usize))
                .ok_or(Errno::Enoent)?
                .data;
            let off = core_control::ram_offset(t.ram_size(), ipa, data.len() as u64)?;
            // Recorded, not copied: each block gets its bytes, checked
            // chunk by chunk against the image, when first touched.
            let p = lazy_ram::Payload {
                at: off,
                module: module as usize,
                from: 0,
                len: data.len() as u64,
            };
            super::lazy::record(ti, t, p)?;
            Ok(data.len() as u64)
        }
        ControlCall::CopyToDomain { dom, src, ipa, len } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, MmuPerm::MapWrite.into())?;
            let _ctl = CONTROL.lock();
            let t = Control::building(ti)?;
            let off = core_control::ram_offset(t.ram_size(), ipa, len)?;
            super::lazy::ensure(ti, t, off, len).map_err(super::lazy::FillError::errno)?;
            // Every source page first, so a bad pointer copies nothing.
            let mut page = src.raw() & !(PAGE_SIZE - 1);
            while page < src.raw() + len {
                let ipa = guest::guest_va_to_ipa(page).ok_or(Errno::Efault)?;
                me.ram_pa_of(ipa & !(PAGE_SIZE - 1), PAGE_SIZE)
                    .ok_or(Errno::Efault)?;
                page += PAGE_SIZE;
            }
            let mut buf = [0u8; COPY_CHUNK];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(COPY_CHUNK as u64) as usize;
                let chunk = buf.get_mut(..n).ok_or(Errno::Efault)?;
                copy_from_guest(me, src.raw() + done, chunk)?;
                // SAFETY: inside `[off, off + len)` of the domain's RAM
                // (checked above), which has not run; `chunk` is ours.
                unsafe { arch::copy_to_poc(t.ram_pa() + off + done, chunk) };
                done += n as u64;
            }
            Ok(0)
        }
        ControlCall::SetVcpuContext { dom, vcpu, pc, x0 } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::SetVcpuContext.into())?;
            CONTROL.lock().set_context(ti, vcpu, pc, x0)?;
            Ok(0)
        }
        ControlCall::Unpause { dom } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::Unpause.into())?;
            CONTROL.lock().unpause(ti)?;
            Ok(0)
        }
        ControlCall::Pause { dom } => {
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::Pause.into())?;
            CONTROL.lock().pause(ti)?;
            Ok(0)
        }
        // These two may name a dying domain, which only the lock keeps from
        // being reaped and built again while its fields are read.
        ControlCall::Destroy { dom } => {
            let mut ctl = CONTROL.lock();
            let (ti, t) = target(di, dom, false, true)?;
            check(t.sid, DomainPerm::Destroy.into())?;
            ctl.destroy(ti)?;
            Ok(0)
        }
        ControlCall::GetInfo { dom, arg } => {
            let mut ctl = CONTROL.lock();
            ctl.reap();
            let (_, t) = target(di, dom, true, true)?;
            check(t.sid, DomainPerm::GetDomainInfo.into())?;
            let mut info = DomainInfo::new_zeroed();
            let state = t.slot_state().abi().ok_or(Errno::Esrch)?;
            info.domid = t.id.into();
            info.state = state as u8;
            info.exit_reason = t.exit_reason.load(Ordering::Acquire);
            info.vcpus = (t.nr_vcpus as u32).into();
            info.generation = t.generation.load(Ordering::Acquire).into();
            info.ram_size = t.ram_size().into();
            info.ram_host_base = t.ram_pa().into();
            for (dst, src) in info.name.iter_mut().zip(t.name.as_bytes()) {
                *dst = *src;
            }
            write_arg(me, arg.raw(), &info)?;
            Ok(0)
        }
        ControlCall::BindEvtchn {
            a,
            port_a,
            b,
            port_b,
        } => {
            let (ai, da) = target(di, a, true, false)?;
            let (bi, db) = target(di, b, true, false)?;
            check(da.sid, EventPerm::Create.into())?;
            check(db.sid, EventPerm::Create.into())?;
            mac::check(p, da.sid, db.sid, EventPerm::Bind)?;
            mac::check(p, db.sid, da.sid, EventPerm::Bind)?;
            let _ctl = CONTROL.lock();
            let building = |d: &Domain| d.slot_state() == SlotState::Created;
            if !building(da) && !building(db) {
                return Err(Errno::Ebusy);
            }
            let reconnected = events::install_static(ai, port_a, bi, port_b)?;
            // An end that runs and was waiting for this peer (its port
            // unbound since the peer's previous incarnation stopped) is
            // told its peer restarted by an event on that port (docs/03,
            // "A peer restarted"). A first bind raises nothing: a service
            // that waits for its client is not woken by the bind.
            for ((i, d, port), again) in [(ai, da, port_a), (bi, db, port_b)]
                .into_iter()
                .zip(reconnected)
            {
                if again && !building(d) {
                    events::raise_port(i, port);
                }
            }
            Ok(0)
        }
        // Looked up under the lock, so the domain the policy is asked about
        // is the one reset (not a later one in its slot).
        ControlCall::ResetDomain { dom } => {
            let mut ctl = CONTROL.lock();
            let (ti, t) = target(di, dom, false, false)?;
            check(t.sid, DomainPerm::Reset.into())?;
            ctl.reset(ti)?;
            log!(
                "d{} {}: reset in place by d{} {} (generation {})",
                t.id,
                t.name,
                me.id,
                me.name,
                t.generation.load(Ordering::Acquire)
            );
            Ok(0)
        }
        ControlCall::ShareMemory { arg } => {
            let raw: ShareMemory = read_arg(me, arg.raw())?;
            let spec = core_control::parse_share(&raw)?;
            let (oi, owner) = target(di, spec.owner, true, false)?;
            let (ui, user) = target(di, spec.user, false, false)?;
            check(owner.sid, MmuPerm::MapRead.into())?;
            check(owner.sid, MmuPerm::MapWrite.into())?;
            for (x, y) in [(user.sid, owner.sid), (owner.sid, user.sid)] {
                mac::check(p, x, y, GrantPerm::MapRead)?;
                mac::check(p, x, y, GrantPerm::MapWrite)?;
            }
            CONTROL.lock().share(oi, owner, ui, &spec)?;
            Ok(0)
        }
    }
}

impl Control {
    /// `ResetDomain`: take domain `slot`, stopped because it asked to
    /// reboot, back to *created* in place, for its builder to load and
    /// start again. What stays is what makes it the same partition: its
    /// id, vCPUs and their pCPUs, its RAM allocation and stage 2
    /// (with the regions shared into it and out of it), and its device
    /// model's registration, so the device model serves the next boot as
    /// it served this one (`docs/01`, "Domain control"). What goes is what
    /// the guest made of it: vCPU state and contexts (each vCPU powers on
    /// afresh, its registers, timer and interrupt state reset by its
    /// owner pCPU at its next start, as on a dom0less reboot), the virtual
    /// GIC, event channels and grants (closed when it stopped; again here,
    /// in case a vCPU that was mid-call bound something since), pending
    /// IOREQ slots, its TLB entries, and its RAM's content: every block is
    /// refilled from zeros and the reloaded payloads on first touch
    /// (`lazy`), so nothing of the old boot is seen by the new one.
    ///
    /// Checked first (`core_control::check_reset`), then done; nothing in
    /// the doing can fail.
    ///
    fn reset(&mut self, slot: usize) -> Result<(), Errno> {
        let d = domains().get(slot).ok_or(Errno::Esrch)?;
        let exit = ExitReason::try_from(u64::from(d.exit_reason.load(Ordering::Acquire)))
            .map_err(|_| Errno::Einval)?;
        let vcpus_stopped = (d.first_vcpu..d.first_vcpu + d.nr_vcpus)
            .all(|v| vcpu(v).is_some_and(|s| s.power.is_stopped()));
        core_control::check_reset(d.slot_state(), exit, d.payload.is_empty(), vcpus_stopped)?;
        let rec = self.slots.get_mut(slot).ok_or(Errno::Esrch)?;
        // Act. The slot stays `Stopped` (no vCPU of it is scheduled, and no
        // other control call changes it: we hold `CONTROL`) until the end.
        release_links(slot, d);
        let server = ioreq::served_domain_reset(slot, d.nr_vcpus);
        let still_served = server.is_some_and(|s| {
            domains()
                .get(s)
                .is_some_and(|sd| matches!(sd.slot_state(), SlotState::Running | SlotState::Paused))
        });
        rec.hold = rec.hold.after_reset(still_served);
        rec.contexts = [None; MAX_VCPUS_PER_DOMAIN];
        *d.vgic.lock() = Vgic::new(d.nr_vcpus);
        for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
            if let Some(s) = vcpu(v) {
                s.power.reset();
                s.irq_hint.store(false, Ordering::Relaxed);
                s.ioreq_wake.store(false, Ordering::Relaxed);
            }
        }
        // Its RAM starts over as on a first boot (lazy RAM): every block
        // leaves its stage 2 and its device model's window (TLBs flushed)
        // and nothing recorded stays, so the builder's next `CopyModule`
        // records afresh and each block is refilled, zeros and payloads,
        // on its first touch.
        super::lazy::reset(slot, d);
        guest::flush_stage2_all(d.s2_root, d.id);
        d.exit_reason
            .store(ExitReason::None as u8, Ordering::Release);
        d.generation.fetch_add(1, Ordering::AcqRel);
        advance(d, Event::Reset)?;
        Ok(())
    }

    /// Map `spec`'s part of the owner's RAM into the user, which is being
    /// built; the owner must not be going away.
    fn share(
        &mut self,
        oi: usize,
        owner: &Domain,
        ui: usize,
        spec: &ShareSpec,
    ) -> Result<(), Errno> {
        Self::building(ui)?;
        if !matches!(
            owner.slot_state(),
            SlotState::Created | SlotState::Running | SlotState::Paused
        ) {
            return Err(Errno::Ebusy);
        }
        let pa = owner
            .ram_pa_of(spec.owner_ipa, spec.size)
            .ok_or(Errno::Einval)?;
        if self.shares.is_full() {
            return Err(Errno::Enospc);
        }
        grant::map_range_into(ui, spec.user_ipa, pa, spec.size).map_err(|e| match e {
            crate::pagetable::MapError::AlreadyMapped => Errno::Eexist,
            crate::pagetable::MapError::NoMemory => Errno::Enomem,
            _ => Errno::Einval,
        })?;
        let _ = self.shares.push(Share {
            owner: oi,
            user: ui,
            user_ipa: spec.user_ipa,
            size: spec.size,
        });
        Ok(())
    }
}
