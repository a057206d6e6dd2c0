//! Event channels, guest side: `shared_info` and `vcpu_info` views, the
//! 2-level upcall dispatcher, and the per-domain glue that hooks it to the
//! upcall interrupt (PPI 31).
//!
//! The one idea: the hypervisor writes `shared_info` and `vcpu_info` at any
//! moment, from any pCPU, so they are never Rust references to plain data.
//! Each field is reached through an atomic made from a raw pointer, always
//! of the field's own size (a byte for `evtchn_upcall_pending`, 64 bits for
//! every bitmap word), and the dispatcher follows Xen's order
//! (`events_2l.c`): clear `evtchn_upcall_pending`, swap `evtchn_pending_sel`
//! to 0, then for each selected word take the ports pending and not masked,
//! clearing each pending bit before handling it. A port raised again while it
//! is being handled therefore sets its bit (and the upcall) afresh and is
//! seen on the next pass, never lost.
//!
//! Layout offsets come from `tessera_ipc::event_channel`; the protocol is in
//! docs/03-event-channels-and-sharing.md.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use tessera_ipc::event_channel::{shared_info, vcpu_info, NR_2L_PORTS};

/// The guest page size.
pub const PAGE_SIZE: usize = 4096;
/// 64-bit words in each 2-level bitmap.
pub const BITMAP_WORDS: usize = NR_2L_PORTS as usize / 64;

const _: () = assert!(shared_info::EVTCHN_PENDING + BITMAP_WORDS * 8 <= shared_info::EVTCHN_MASK);
const _: () = assert!(shared_info::EVTCHN_MASK + BITMAP_WORDS * 8 <= shared_info::SIZE);
const _: () = assert!(shared_info::SIZE <= PAGE_SIZE);
const _: () = assert!(
    shared_info::EVTCHN_PENDING.is_multiple_of(8) && shared_info::EVTCHN_MASK.is_multiple_of(8)
);
const _: () = assert!(vcpu_info::PENDING_SEL.is_multiple_of(8) && vcpu_info::SIZE <= PAGE_SIZE);

/// A page of guest RAM to hand to the hypervisor as `shared_info` or to
/// hold `vcpu_info`s. Its bytes are only ever reached through atomics made
/// from raw pointers (by [`SharedInfo`] and [`VcpuInfo`]), never through a
/// reference, because the hypervisor writes them concurrently.
#[repr(C, align(4096))]
pub struct SharedPage(UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: the contents are only accessed through atomic operations (see the
// type's documentation), so sharing the page between CPUs is race-free.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; PAGE_SIZE]))
    }

    /// Address of the first byte.
    pub fn as_ptr(&self) -> NonNull<u8> {
        // Writing through it is allowed: the bytes are inside an UnsafeCell.
        NonNull::from(&self.0).cast::<u8>()
    }

    /// The guest frame number to give the hypervisor (the runtime's identity
    /// map makes the virtual address the IPA).
    pub fn gfn(&self) -> u64 {
        self.as_ptr().as_ptr() as u64 / PAGE_SIZE as u64
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        Self::new()
    }
}

/// The `AtomicU64` at `base + off`.
///
/// # Safety
/// `base + off .. +8` must be 8-byte aligned, inside memory that stays
/// mapped for `'a`, and accessed only through 64-bit atomics.
unsafe fn word_at<'a>(base: NonNull<u8>, off: usize) -> &'a AtomicU64 {
    // SAFETY: the caller guarantees alignment, lifetime and that every
    // access to these 8 bytes is a 64-bit atomic.
    unsafe { AtomicU64::from_ptr(base.as_ptr().add(off).cast::<u64>()) }
}

/// Word index and bit mask of `port` in a 2-level bitmap; `None` for a port
/// outside the 2-level port space.
fn port_bit(port: u32) -> Option<(usize, u64)> {
    (port < NR_2L_PORTS).then(|| ((port / 64) as usize, 1u64 << (port % 64)))
}

/// The domain's `shared_info`: the pending and mask bitmaps and vCPU 0's
/// initial `vcpu_info`.
#[derive(Clone, Copy, Debug)]
pub struct SharedInfo {
    base: NonNull<u8>,
}

// SAFETY: `SharedInfo` is an address; every access through it is atomic, so
// it may be used from any CPU.
unsafe impl Send for SharedInfo {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedInfo {}

impl SharedInfo {
    /// The view of a runtime-owned page.
    pub fn new(page: &'static SharedPage) -> Self {
        Self {
            base: page.as_ptr(),
        }
    }

    /// The view of a `shared_info` mapped elsewhere.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned, the start of `shared_info::SIZE` bytes
    /// that stay mapped for the rest of the program and that Rust code
    /// reaches only through this type.
    pub unsafe fn from_ptr(base: NonNull<u8>) -> Self {
        Self { base }
    }

    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    fn word(&self, bitmap: usize, index: usize) -> Option<&AtomicU64> {
        if index >= BITMAP_WORDS {
            return None;
        }
        // SAFETY: the offset is a word of one of the two bitmaps, which the
        // constant assertions above place inside `shared_info`; the
        // constructors guarantee alignment, lifetime and atomic-only access.
        Some(unsafe { word_at(self.base, bitmap + index * 8) })
    }

    /// `evtchn_pending[index]` (0 past the bitmap).
    pub fn pending_word(&self, index: usize) -> u64 {
        self.word(shared_info::EVTCHN_PENDING, index)
            .map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// `evtchn_mask[index]` (0 past the bitmap).
    pub fn mask_word(&self, index: usize) -> u64 {
        self.word(shared_info::EVTCHN_MASK, index)
            .map_or(0, |w| w.load(Ordering::Acquire))
    }

    fn bit(&self, bitmap: usize, port: u32) -> Option<(&AtomicU64, u64)> {
        let (index, bit) = port_bit(port)?;
        Some((self.word(bitmap, index)?, bit))
    }

    pub fn is_pending(&self, port: u32) -> bool {
        self.bit(shared_info::EVTCHN_PENDING, port)
            .is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0)
    }

    pub fn is_masked(&self, port: u32) -> bool {
        self.bit(shared_info::EVTCHN_MASK, port)
            .is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0)
    }

    /// Clears `port`'s pending bit; returns whether it was set.
    pub fn clear_pending(&self, port: u32) -> bool {
        self.bit(shared_info::EVTCHN_PENDING, port)
            .is_some_and(|(w, b)| w.fetch_and(!b, Ordering::AcqRel) & b != 0)
    }

    /// Masks `port`: it stays pending but raises no upcall. Undo it with
    /// `EVTCHNOP_unmask`, which also re-raises a port that became pending.
    pub fn mask(&self, port: u32) {
        if let Some((w, b)) = self.bit(shared_info::EVTCHN_MASK, port) {
            w.fetch_or(b, Ordering::AcqRel);
        }
    }

    /// Sets `port`'s pending bit; returns whether it was already set. The
    /// hypervisor's half of the protocol, for host tests of the dispatcher.
    #[cfg(test)]
    fn set_pending(&self, port: u32) -> bool {
        self.bit(shared_info::EVTCHN_PENDING, port)
            .is_some_and(|(w, b)| w.fetch_or(b, Ordering::AcqRel) & b != 0)
    }

    /// `vcpu_info[0]`, vCPU 0's until it registers its own.
    pub fn vcpu_info0(&self) -> VcpuInfo {
        VcpuInfo { base: self.base }
    }
}

/// One vCPU's `vcpu_info`: the upcall flag and the pending-word selector.
#[derive(Clone, Copy, Debug)]
pub struct VcpuInfo {
    base: NonNull<u8>,
}

// SAFETY: as for `SharedInfo`: an address whose fields are only accessed
// atomically.
unsafe impl Send for VcpuInfo {}
// SAFETY: as for `Send`.
unsafe impl Sync for VcpuInfo {}

impl VcpuInfo {
    /// The `vcpu_info` at byte `offset` of a runtime-owned page; `None`
    /// unless it is 8-byte aligned and fits in the page (the rules
    /// `VCPUOP_register_vcpu_info` applies).
    pub fn new(page: &'static SharedPage, offset: usize) -> Option<Self> {
        if !offset.is_multiple_of(8) || offset > PAGE_SIZE - vcpu_info::SIZE {
            return None;
        }
        // SAFETY: `offset + vcpu_info::SIZE <= PAGE_SIZE`, so the pointer
        // stays inside the page.
        let base = unsafe { page.as_ptr().add(offset) };
        Some(Self { base })
    }

    /// The view of a `vcpu_info` mapped elsewhere.
    ///
    /// # Safety
    /// As for [`SharedInfo::from_ptr`], for `vcpu_info::SIZE` bytes.
    pub unsafe fn from_ptr(base: NonNull<u8>) -> Self {
        Self { base }
    }

    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    fn upcall_flag(&self) -> &AtomicU8 {
        // SAFETY: the byte is inside the structure (offset 0), the
        // constructors guarantee lifetime and atomic-only access, and the
        // runtime only ever reaches this byte as an `AtomicU8`.
        unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(vcpu_info::UPCALL_PENDING)) }
    }

    fn selector(&self) -> &AtomicU64 {
        // SAFETY: `PENDING_SEL` is 8-aligned inside the structure; the
        // constructors guarantee alignment of the base, lifetime and
        // atomic-only access.
        unsafe { word_at(self.base, vcpu_info::PENDING_SEL) }
    }

    /// `evtchn_upcall_pending`.
    pub fn upcall_pending(&self) -> bool {
        self.upcall_flag().load(Ordering::Acquire) != 0
    }

    /// Clears `evtchn_upcall_pending`, first thing in an upcall.
    pub fn clear_upcall_pending(&self) {
        self.upcall_flag().store(0, Ordering::SeqCst);
    }

    /// `evtchn_pending_sel`, without taking it.
    pub fn pending_sel(&self) -> u64 {
        self.selector().load(Ordering::Acquire)
    }

    /// Swaps `evtchn_pending_sel` to 0 and returns what it held.
    pub fn take_pending_sel(&self) -> u64 {
        // SeqCst with the clear of the upcall flag: "clear the flag, then
        // take the selector" must not be reordered, or a raise between them
        // could leave the flag set with nothing selected and no new edge.
        self.selector().swap(0, Ordering::SeqCst)
    }

    /// The hypervisor's selector/upcall step, for host tests: returns whether
    /// the upcall interrupt would be injected.
    #[cfg(test)]
    fn raise(&self, shared: &SharedInfo, port: u32) -> bool {
        if shared.set_pending(port) || shared.is_masked(port) {
            return false;
        }
        let sel = 1u64 << (port / 64);
        if self.selector().fetch_or(sel, Ordering::AcqRel) & sel != 0 {
            return false;
        }
        self.upcall_flag().swap(1, Ordering::AcqRel) == 0
    }
}

/// The guest half of 2-level delivery, run from the upcall interrupt: hands
/// every port that is pending, unmasked and selected in `vcpu` to `handle`
/// (after clearing its pending bit) and returns how many it handled. Loops
/// until the selector reads empty, so ports raised meanwhile are included.
/// Masked ports stay pending; `EVTCHNOP_unmask` re-raises them.
pub fn dispatch(shared: &SharedInfo, vcpu: &VcpuInfo, mut handle: impl FnMut(u32)) -> u32 {
    let mut handled = 0;
    loop {
        vcpu.clear_upcall_pending();
        let mut selected = vcpu.take_pending_sel();
        if selected == 0 {
            return handled;
        }
        while selected != 0 {
            let index = selected.trailing_zeros() as usize;
            selected &= selected - 1;
            let mut ready = shared.pending_word(index) & !shared.mask_word(index);
            while ready != 0 {
                let bit = ready.trailing_zeros();
                ready &= ready - 1;
                let port = index as u32 * 64 + bit;
                if shared.clear_pending(port) {
                    handle(port);
                    handled += 1;
                }
            }
        }
    }
}

/// A set of ports, safe to update from interrupt handlers: the dispatcher
/// records delivered ports here and waiters take them.
pub struct PortSet([AtomicU64; BITMAP_WORDS]);

impl PortSet {
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; BITMAP_WORDS])
    }

    fn bit(&self, port: u32) -> Option<(&AtomicU64, u64)> {
        let (index, bit) = port_bit(port)?;
        Some((self.0.get(index)?, bit))
    }

    /// Adds `port` (ignored outside the port space).
    pub fn insert(&self, port: u32) {
        if let Some((w, b)) = self.bit(port) {
            w.fetch_or(b, Ordering::AcqRel);
        }
    }

    pub fn contains(&self, port: u32) -> bool {
        self.bit(port)
            .is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0)
    }

    /// Removes `port`; returns whether it was there.
    pub fn take(&self, port: u32) -> bool {
        self.bit(port)
            .is_some_and(|(w, b)| w.fetch_and(!b, Ordering::AcqRel) & b != 0)
    }

    pub fn clear(&self) {
        for w in &self.0 {
            w.store(0, Ordering::Release);
        }
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use machine::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod machine {
    //! The domain-wide dispatcher state and its hook into the GIC.
    use super::{dispatch, PortSet, SharedInfo, SharedPage, VcpuInfo};
    use crate::xen::{self, HypercallError};
    use crate::{cpu, gic, hypercall, MAX_CPUS};
    use core::ptr::NonNull;
    use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
    use tessera_ipc::memory::MapSpace;
    use tessera_ipc::platform::EVTCHN_UPCALL_INTID;

    /// What the dispatcher calls for every delivered port.
    pub type PortHandler = fn(port: u32);

    /// The mapped `shared_info` (null until [`map_shared_info`]).
    static SHARED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
    /// Registered `vcpu_info` per CPU (null: vCPU 0 uses `shared_info`'s).
    static VCPU_INFO: [AtomicPtr<u8>; MAX_CPUS] =
        [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
    static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    static DELIVERED: PortSet = PortSet::new();
    static UPCALLS: AtomicU64 = AtomicU64::new(0);

    /// Makes `page` the domain's `shared_info` (`XENMEM_add_to_physmap`,
    /// space `shared_info`). IRQs stay masked until the dispatcher knows the
    /// page, so an upcall raised by the mapping itself is not missed.
    pub fn map_shared_info(page: &'static SharedPage) -> Result<SharedInfo, HypercallError> {
        let irqs = cpu::irq_save();
        let result = xen::add_to_physmap(MapSpace::SharedInfo, 0, page.gfn());
        if result.is_ok() {
            SHARED.store(page.as_ptr().as_ptr(), Ordering::Release);
        }
        cpu::irq_restore(irqs);
        result.map(|()| SharedInfo::new(page))
    }

    /// The mapped `shared_info`, if any.
    pub fn shared_info() -> Option<SharedInfo> {
        let base = NonNull::new(SHARED.load(Ordering::Acquire))?;
        // SAFETY: only `map_shared_info` stores here, with the address of a
        // `'static SharedPage`, which satisfies `from_ptr`'s contract.
        Some(unsafe { SharedInfo::from_ptr(base) })
    }

    /// Registers CPU `cpu`'s `vcpu_info` at byte `offset` of `page`
    /// (`VCPUOP_register_vcpu_info`). The hypervisor raises an upcall for
    /// whatever was pending at once, so IRQs stay masked until the
    /// dispatcher uses the new location.
    pub fn register_vcpu_info(
        cpu: usize,
        page: &'static SharedPage,
        offset: usize,
    ) -> Result<VcpuInfo, HypercallError> {
        let (Some(info), Some(slot)) = (VcpuInfo::new(page, offset), VCPU_INFO.get(cpu)) else {
            return Err(tessera_ipc::errno::Errno::Einval.into());
        };
        let irqs = cpu::irq_save();
        let result = xen::register_vcpu_info(cpu as u32, page.gfn(), offset as u32);
        if result.is_ok() {
            slot.store(info.as_ptr().as_ptr(), Ordering::Release);
        }
        cpu::irq_restore(irqs);
        result.map(|()| info)
    }

    /// The `vcpu_info` the hypervisor uses for CPU `cpu` now.
    pub fn vcpu_info(cpu: usize) -> Option<VcpuInfo> {
        match VCPU_INFO
            .get(cpu)
            .and_then(|p| NonNull::new(p.load(Ordering::Acquire)))
        {
            // SAFETY: only `register_vcpu_info` stores here, with a pointer
            // into a `'static SharedPage` that `VcpuInfo::new` checked.
            Some(base) => Some(unsafe { VcpuInfo::from_ptr(base) }),
            None if cpu == 0 => shared_info().map(|s| s.vcpu_info0()),
            None => None,
        }
    }

    /// Sets (or with `None` removes) the function called, in interrupt
    /// context, for every delivered port, before it is recorded for
    /// [`take`].
    pub fn set_handler(handler: Option<PortHandler>) {
        let raw = handler.map_or(core::ptr::null_mut(), |h| h as *mut ());
        HOOK.store(raw, Ordering::Release);
    }

    fn upcall(_intid: u32) {
        UPCALLS.fetch_add(1, Ordering::Relaxed);
        let (Some(shared), Some(vcpu)) = (shared_info(), vcpu_info(cpu::index())) else {
            return;
        };
        let hook = HOOK.load(Ordering::Acquire);
        dispatch(&shared, &vcpu, |port| {
            if !hook.is_null() {
                // SAFETY: `set_handler` only stores null or a `PortHandler`.
                let hook: PortHandler = unsafe { core::mem::transmute(hook) };
                hook(port);
            }
            DELIVERED.insert(port);
        });
    }

    /// Routes the upcall interrupt to the dispatcher and enables it on this
    /// CPU (each CPU that receives events calls this after `gic::init_cpu`).
    pub fn enable_upcall() {
        gic::set_handler(EVTCHN_UPCALL_INTID, upcall);
        gic::enable_private(EVTCHN_UPCALL_INTID);
    }

    /// Whether `port` was delivered since it was last taken, and forgets it.
    pub fn take(port: u32) -> bool {
        DELIVERED.take(port)
    }

    /// Whether `port` was delivered since it was last taken.
    pub fn delivered(port: u32) -> bool {
        DELIVERED.contains(port)
    }

    /// Forgets every delivered port.
    pub fn forget_all() {
        DELIVERED.clear();
    }

    /// Upcall interrupts taken so far, on every CPU.
    pub fn upcalls() -> u64 {
        UPCALLS.load(Ordering::Relaxed)
    }

    /// Sleeps (`SCHEDOP_block`) until `done()` holds, checking it with IRQs
    /// masked so that an upcall between the check and the block still wakes
    /// the block (it returns for a pending interrupt even while PSTATE.I is
    /// set); the interrupt is then taken when IRQs are unmasked again.
    /// Returns the number of blocks made. Needs IRQs enabled by the caller.
    pub fn block_until(mut done: impl FnMut() -> bool) -> u64 {
        let mut blocks = 0;
        loop {
            cpu::irq_disable();
            if done() {
                cpu::irq_enable();
                return blocks;
            }
            hypercall::sched_block();
            blocks += 1;
            cpu::irq_enable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn leak_page() -> &'static SharedPage {
        Box::leak(Box::new(SharedPage::new()))
    }

    #[test]
    fn layout_offsets_land_where_xen_puts_them() {
        let page = leak_page();
        let shared = SharedInfo::new(page);
        shared.mask(64 + 3);
        // SAFETY: test-only peek at the bytes, with no concurrent writer.
        let bytes = unsafe { &*page.0.get() };
        assert_eq!(bytes[560 + 8], 1 << 3, "mask word 1 is at 560 + 8");
        assert!(shared.is_masked(67) && !shared.is_masked(66));
        assert!(shared.vcpu_info0().raise(&shared, 1));
        // SAFETY: as above.
        let bytes = unsafe { &*page.0.get() };
        assert_eq!(bytes[0], 1, "evtchn_upcall_pending at 0");
        assert_eq!(bytes[8], 1, "evtchn_pending_sel at 8");
        assert_eq!(bytes[48], 1 << 1, "evtchn_pending at 48");
    }

    #[test]
    fn ports_outside_the_space_are_ignored() {
        let shared = SharedInfo::new(leak_page());
        for port in [NR_2L_PORTS, u32::MAX] {
            assert!(!shared.is_pending(port));
            assert!(!shared.clear_pending(port));
            shared.mask(port);
            assert!(!shared.is_masked(port));
        }
        assert_eq!(shared.pending_word(BITMAP_WORDS), 0);
        assert_eq!(shared.mask_word(usize::MAX), 0);
        let set = PortSet::new();
        set.insert(NR_2L_PORTS);
        assert!(!set.take(NR_2L_PORTS));
    }

    #[test]
    fn vcpu_info_placement_follows_register_rules() {
        let page = leak_page();
        assert!(VcpuInfo::new(page, 0).is_some());
        assert!(VcpuInfo::new(page, 64).is_some());
        assert!(VcpuInfo::new(page, PAGE_SIZE - vcpu_info::SIZE).is_some());
        assert!(VcpuInfo::new(page, 4).is_none(), "misaligned");
        assert!(
            VcpuInfo::new(page, PAGE_SIZE - 40).is_none(),
            "crosses the page"
        );
        assert!(VcpuInfo::new(page, usize::MAX & !7).is_none());
    }

    fn collect(shared: &SharedInfo, vcpu: &VcpuInfo) -> Vec<u32> {
        let mut ports = Vec::new();
        let n = dispatch(shared, vcpu, |p| ports.push(p));
        assert_eq!(n as usize, ports.len());
        ports
    }

    #[test]
    fn dispatch_delivers_each_raised_port_once_in_order() {
        let page = leak_page();
        let shared = SharedInfo::new(page);
        let vcpu = shared.vcpu_info0();
        assert!(vcpu.raise(&shared, 700), "first raise injects");
        assert!(!vcpu.raise(&shared, 3), "upcall already pending");
        assert!(!vcpu.raise(&shared, 700), "already pending");
        assert!(!vcpu.raise(&shared, 1023));
        assert_eq!(collect(&shared, &vcpu), [3, 700, 1023]);
        assert!(!vcpu.upcall_pending());
        assert_eq!(vcpu.pending_sel(), 0);
        assert!(!shared.is_pending(700));
        assert!(collect(&shared, &vcpu).is_empty());
        assert!(
            vcpu.raise(&shared, 700),
            "a handled port can be raised again"
        );
    }

    #[test]
    fn masked_ports_stay_pending_until_unmasked() {
        let shared = SharedInfo::new(leak_page());
        let vcpu = shared.vcpu_info0();
        shared.mask(5);
        assert!(!vcpu.raise(&shared, 5), "masked: no upcall");
        assert!(shared.is_pending(5));
        // Another port in the same word selects it; the masked one stays.
        assert!(vcpu.raise(&shared, 6));
        assert_eq!(collect(&shared, &vcpu), [6]);
        assert!(shared.is_pending(5));
        // What EVTCHNOP_unmask does: clear the mask, redo the selector step.
        {
            let (w, b) = shared.bit(shared_info::EVTCHN_MASK, 5).unwrap();
            w.fetch_and(!b, Ordering::AcqRel);
            let sel = vcpu.selector();
            sel.fetch_or(1, Ordering::AcqRel);
            vcpu.upcall_flag().store(1, Ordering::Release);
        }
        assert_eq!(collect(&shared, &vcpu), [5]);
    }

    #[test]
    fn a_port_raised_during_its_handler_is_seen_again() {
        let shared = SharedInfo::new(leak_page());
        let vcpu = shared.vcpu_info0();
        assert!(vcpu.raise(&shared, 9));
        let mut seen = Vec::new();
        dispatch(&shared, &vcpu, |p| {
            seen.push(p);
            if seen.len() == 1 {
                // The hypervisor raises it again while we handle it: the
                // pending bit was already cleared, so this is a new edge.
                assert!(vcpu.raise(&shared, p));
            }
        });
        assert_eq!(seen, [9, 9]);
    }

    #[test]
    fn registration_sets_every_selector_bit_and_nothing_is_lost() {
        let shared = SharedInfo::new(leak_page());
        let vcpu = VcpuInfo::new(leak_page(), 128).unwrap();
        // Raised before any vcpu_info was in use: pending bits only.
        shared.set_pending(1);
        shared.set_pending(200);
        // What register_vcpu_info does: selector ~0 and the upcall flag.
        vcpu.selector().store(u64::MAX, Ordering::Release);
        vcpu.upcall_flag().store(1, Ordering::Release);
        assert_eq!(collect(&shared, &vcpu), [1, 200]);
    }

    #[test]
    fn port_set_takes_once() {
        let set = PortSet::new();
        set.insert(0);
        set.insert(64);
        set.insert(4095);
        assert!(set.contains(64));
        assert!(set.take(64));
        assert!(!set.take(64));
        assert!(set.take(4095) && set.take(0));
        set.insert(7);
        set.clear();
        assert!(!set.contains(7));
    }

    #[test]
    fn concurrent_raise_and_dispatch_lose_nothing() {
        // One thread plays the hypervisor, raising ports as fast as it can;
        // the other dispatches whenever the upcall flag is set. Every raise
        // that found its bit clear must be delivered exactly once.
        use std::sync::atomic::AtomicU32;
        use std::sync::Arc;
        const ROUNDS: u32 = 20_000;
        let shared = SharedInfo::new(leak_page());
        let vcpu = VcpuInfo::new(leak_page(), 0).unwrap();
        let raised = Arc::new(AtomicU32::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let (raised, done) = (raised.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let port = 1 + (i * 37) % 1000;
                    if !shared.is_pending(port) {
                        vcpu.raise(&shared, port);
                        raised.fetch_add(1, Ordering::AcqRel);
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        let mut delivered = 0u32;
        loop {
            let finished = done.load(Ordering::Acquire);
            if vcpu.upcall_pending() || vcpu.pending_sel() != 0 {
                delivered += dispatch(&shared, &vcpu, |_| {});
            }
            if finished && !vcpu.upcall_pending() && vcpu.pending_sel() == 0 {
                break;
            }
        }
        producer.join().unwrap();
        delivered += dispatch(&shared, &vcpu, |_| {});
        // Only the producer sets bits and it raises only clear ones, so
        // every raise is delivered exactly once and nothing stays pending.
        assert_eq!(delivered, raised.load(Ordering::Acquire));
        assert!((0..BITMAP_WORDS).all(|w| shared.pending_word(w) == 0));
    }
}
