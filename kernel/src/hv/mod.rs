//! The hypervisor proper: global state, boot, domain building and the
//! per-pCPU scheduler loop. Trap handling is in `trap.rs`.
//!
//! Ownership is static: a vCPU is placed on one pCPU when its domain is built
//! and only that pCPU ever touches its register frame, so frames need no
//! lock. What other pCPUs may change (power state, "interrupt pending" hints,
//! a domain's virtual GIC, console buffer, run state) is atomic or behind a
//! spin lock, and they tell the owner with a kick SGI.

pub mod console;
mod control;
mod events;
mod grant;
mod ioreq;
mod lazy;
mod mac;
mod trap;

use crate::addr::{PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::aarch64::{self as arch, boot, gic, guest, guest::VcpuFrame, mmu};
use crate::pagetable::Attrs;
use console::{log, LineBuffer};
use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use tessera_ipc::control::ExitReason;
use tessera_ipc::errno::Errno;
use tessera_ipc::image::{Arm64ImageHeader, ModuleKind, ARM64_IMAGE_MAGIC};
use tessera_ipc::platform::{self, MAX_VCPUS_PER_DOMAIN};
use tessera_kernel::control::{self as control_core, Event, SlotState};
use tessera_kernel::hostdt::{self, Conduit, HostPlatform};
use tessera_kernel::image::{ModuleTable, VerifyModules};
use tessera_kernel::lazy_ram;
use tessera_kernel::placement::Placement;
use tessera_kernel::power::VcpuPower;
use tessera_kernel::sched::RunQueue;
use tessera_kernel::vgic::{LrState, Vgic};
use tessera_policy::{EventPerm, GrantPerm, Sid};
use tessera_sysdesc::config::{self, DomainConfig, Function};
use tessera_sysdesc::guest_dt::{self, GuestDtParams};
use zerocopy::FromBytes;

/// Most domains.
pub const MAX_DOMAINS: usize = config::MAX_DOMAINS;
// A builder may ask for any id up to `MAX_DOMID`: one slot per id.
const _: () = assert!(MAX_DOMAINS == tessera_ipc::control::MAX_DOMID as usize);
/// Most vCPUs in the whole system.
pub const MAX_VCPUS: usize = 64;
const _: () = assert!(MAX_VCPUS == tessera_kernel::control::VcpuMap::CAPACITY);
/// Time slice when several vCPUs share a pCPU, in microseconds.
const SLICE_US: u64 = 2000;
/// The guest DTB sits this far below the top of guest RAM.
const GUEST_DTB_RESERVE: u64 = BLOCK_2M;

/// A domain slot: what the kernel keeps of the domain that lives in it.
///
/// The slot's life is `tessera_kernel::control::SlotState`, held in
/// `state`. The fields a domain is built with ([`DomainFields`], reached
/// through `Deref`) are written only while the slot is `Creating`, which no
/// lookup returns, so the trap and scheduler paths read them without a lock;
/// a destroyed slot stays `Dying` until every pCPU has passed a scheduling
/// point (`control.rs`), so no reference to the old fields outlives them.
/// Its RAM is the one thing assigned after the domain can be named, so it
/// is atomic.
pub struct Domain {
    pub id: u16,
    pub state: AtomicU8,
    pub generation: AtomicU32,
    /// Why it stopped, a `tessera_ipc::control::ExitReason` value.
    pub exit_reason: AtomicU8,
    pub vgic: arch::Lock<Vgic>,
    pub console: arch::Lock<LineBuffer>,
    /// Host address and size of its RAM (size 0: none yet). The size is
    /// published after the address.
    ram_pa: AtomicU64,
    ram_size: AtomicU64,
    fields: UnsafeCell<DomainFields>,
}

// SAFETY: `fields` is written only while the slot is `Creating`, by the one
// creator that reserved it, and read by others only once it is published
// (the state's Release/Acquire orders the writes before the reads); the
// rest is atomic or behind a lock.
unsafe impl Sync for Domain {}

impl core::ops::Deref for Domain {
    type Target = DomainFields;
    fn deref(&self) -> &DomainFields {
        // SAFETY: see `unsafe impl Sync for Domain`: no `&mut` to the fields
        // exists while a lookup can return the slot.
        unsafe { &*self.fields.get() }
    }
}

/// What a domain is built with; fixed while it lives.
pub struct DomainFields {
    pub name: heapless::String<32>,
    pub s2_root: u64,
    pub nr_vcpus: usize,
    pub first_vcpu: usize,
    pub entry: u64,
    pub dtb_ipa: u64,
    /// The domain's security context, from `xen,security-label`.
    pub sid: Sid,
    /// Where the payload lives in the image, to reload it on reboot (empty
    /// for a domain a builder made: the kernel cannot rebuild those).
    payload: &'static [u8],
    load_offset: u64,
    bootargs: heapless::String<256>,
    vpl011: bool,
    /// The initrd (`multiboot,ramdisk`), loaded below the DTB.
    ramdisk: Option<&'static [u8]>,
    /// virtio-mmio slots in its DT (served by its device model).
    virtio_slots: u32,
    /// As a device model: the domains it serves, for its DT.
    served: heapless::Vec<Served, MAX_SERVED>,
    /// Whether the guest DT carries Xen's `/hypervisor` node.
    xen_enhanced: bool,
    /// Static shared-memory regions mapped into this domain, for its DT:
    /// (id, guest base, size).
    shm: heapless::Vec<(heapless::String<{ config::MAX_SHM_ID }>, u64, u64), MAX_SHM_PER_DOMAIN>,
    /// The boot domain only: the image's module table, mapped read-only at
    /// this IPA, which its DT names as its initrd.
    modules: Option<(u64, &'static [u8])>,
    /// `tessera,pcpus`: the pCPUs it owns, vCPU i on `pins[i % len]`;
    /// empty when it is not pinned (`tessera_kernel::placement`).
    pins: heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN>,
    /// The domain index of its device model (`tessera,device-model` or
    /// `tessera,devices`, or `CreateDomain::device_model`): the only domain that may serve it,
    /// and the one it waits for before it runs (`control::Hold`).
    device_model: Option<usize>,
}

impl DomainFields {
    /// A domain with only a name, a label and vCPUs: what a builder creates
    /// (the kernel fills in `first_vcpu` and `s2_root`).
    fn new(name: heapless::String<32>, sid: Sid, nr_vcpus: usize) -> Self {
        Self {
            name,
            s2_root: 0,
            nr_vcpus,
            first_vcpu: 0,
            entry: 0,
            dtb_ipa: 0,
            sid,
            payload: &[],
            load_offset: 0,
            bootargs: heapless::String::new(),
            vpl011: false,
            ramdisk: None,
            virtio_slots: 0,
            served: heapless::Vec::new(),
            xen_enhanced: false,
            shm: heapless::Vec::new(),
            modules: None,
            pins: heapless::Vec::new(),
            device_model: None,
        }
    }
}

/// Most static shared-memory regions one domain maps.
const MAX_SHM_PER_DOMAIN: usize = 8;
/// Most domains one device model serves.
const MAX_SERVED: usize = 8;

/// A domain a device model serves, as the device model's DT lists it
/// (`SystemConfig::served_by`, kept to write the DT again on a reboot).
struct Served {
    domid: u16,
    name: heapless::String<32>,
    vcpus: u32,
    ram_size: u64,
    vpl011: bool,
    virtio: heapless::Vec<config::VirtioKind, { config::MAX_VIRTIO }>,
}

/// A shared-memory region's host placement and who may map it.
struct ShmPlacement {
    host: u64,
    /// Per domain index: whether the policy lets it map this region.
    allowed: [bool; MAX_DOMAINS],
}

impl Domain {
    /// An empty slot for domain index `i` (`sid` is a placeholder: a free
    /// slot is never checked against the policy).
    fn empty(i: usize, sid: Sid) -> Self {
        Self {
            id: domain_id(i),
            state: AtomicU8::new(SlotState::Free as u8),
            generation: AtomicU32::new(0),
            exit_reason: AtomicU8::new(0),
            vgic: arch::Lock::new(Vgic::new(1)),
            console: arch::Lock::new(LineBuffer::new()),
            ram_pa: AtomicU64::new(0),
            ram_size: AtomicU64::new(0),
            fields: UnsafeCell::new(DomainFields::new(heapless::String::new(), sid, 0)),
        }
    }

    /// The slot's state.
    pub fn slot_state(&self) -> SlotState {
        SlotState::from_raw(self.state.load(Ordering::Acquire))
    }

    /// Whether its vCPUs may be scheduled (it is not created-only, paused,
    /// stopped or going away).
    #[inline]
    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == SlotState::Running as u8
    }

    /// Host address of its RAM (meaningful once `ram_size` is not 0).
    pub fn ram_pa(&self) -> u64 {
        self.ram_pa.load(Ordering::Relaxed)
    }

    /// Bytes of its RAM; 0 before memory is assigned.
    pub fn ram_size(&self) -> u64 {
        self.ram_size.load(Ordering::Acquire)
    }

    /// Its slot (index in `domains()`).
    pub fn slot(&self) -> usize {
        usize::from(self.id).saturating_sub(1)
    }

    /// The offset of `[ipa, ipa+len)` in this domain's RAM, if it lies
    /// inside it. Only a check: nothing is filled.
    pub fn ram_offset_of(&self, ipa: u64, len: u64) -> Option<u64> {
        let size = self.ram_size();
        let off = ipa.checked_sub(platform::RAM_BASE)?;
        if size == 0 || off.checked_add(len)? > size {
            return None;
        }
        Some(off)
    }

    /// The host physical address backing `ipa`, if it is this domain's RAM
    /// and `[ipa, ipa+len)` stays inside it, for the kernel to use the bytes
    /// through its own mapping: the blocks they lie in are filled first
    /// (`lazy`), so nothing written there is zeroed later. `None` also if a
    /// block cannot be filled (a corrupt module, reported).
    #[inline]
    pub fn ram_pa_of(&self, ipa: u64, len: u64) -> Option<u64> {
        let off = self.ram_offset_of(ipa, len)?;
        lazy::ensure(self.slot(), self, off, len).ok()?;
        Some(self.ram_pa() + off)
    }
}

/// One vCPU: its frame (owner pCPU only) and what others may signal.
pub struct Vcpu {
    frame: UnsafeCell<VcpuFrame>,
    owner: UnsafeCell<OwnerState>,
    pub power: VcpuPower,
    pub domain: AtomicUsize,
    /// The domain itself, once the domain list is final (null before).
    domain_ptr: AtomicPtr<Domain>,
    pub index: AtomicUsize,
    pub pcpu: AtomicUsize,
    /// Something was made pending for this vCPU since its LRs were filled.
    pub irq_hint: AtomicBool,
    /// A device model waiting in `IoreqCmd::Wait` on this vCPU has a
    /// request to serve (set by `ioreq::post`, taken by `runnable`). Kept
    /// apart from `irq_hint` so this wake-up costs no virtual GIC work.
    pub ioreq_wake: AtomicBool,
}

/// State only the owning pCPU touches.
#[derive(Default)]
pub struct OwnerState {
    pub blocked: bool,
    /// Bitmap of list registers holding one of this vCPU's interrupts.
    pub lr_used: u8,
    pub lr_intid: [u32; gic::NR_LRS],
    /// Whether the vCPU's timer is live in the hardware.
    pub timer_in_hw: bool,
    /// An MMIO access waiting for its device model's answer.
    pub pending_io: Option<ioreq::PendingIo>,
    /// The vCPU was just powered on and has not run yet: its first entry
    /// is logged (with the counter, so `cargo xtask bench` can time the
    /// boot), if it is a domain's vCPU 0.
    pub first_entry: bool,
    /// The last list-register fill ran out of list registers with
    /// interrupts still deliverable in the model. Only then can the model
    /// hold a deliverable interrupt that neither the list registers nor
    /// `Vcpu::irq_hint` (set by every change that makes one pending) show.
    pub undelivered: bool,
}

// SAFETY: `frame` and `owner` are only accessed by the pCPU the vCPU is
// placed on (see `Vcpu::frame`), everything else is atomic.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    /// The domain this vCPU belongs to (None before the domain list is
    /// final).
    pub fn domain(&self) -> Option<&'static Domain> {
        let ptr = self.domain_ptr.load(Ordering::Relaxed);
        // SAFETY: a non-null `domain_ptr` points into the slot array, which
        // is 'static and set once at boot, before any vCPU runs.
        unsafe { ptr.as_ref() }
    }

    const fn new() -> Self {
        Self {
            frame: UnsafeCell::new(VcpuFrame::new()),
            owner: UnsafeCell::new(OwnerState {
                blocked: false,
                lr_used: 0,
                lr_intid: [0; gic::NR_LRS],
                timer_in_hw: false,
                pending_io: None,
                first_entry: false,
                undelivered: false,
            }),
            power: VcpuPower::new(),
            domain: AtomicUsize::new(0),
            domain_ptr: AtomicPtr::new(core::ptr::null_mut()),
            index: AtomicUsize::new(0),
            pcpu: AtomicUsize::new(0),
            irq_hint: AtomicBool::new(false),
            ioreq_wake: AtomicBool::new(false),
        }
    }
}

/// Per-pCPU scheduler state (owner only, except `mpidr`).
pub struct Pcpu {
    pub mpidr: AtomicU64,
    /// Another pCPU (or this one) posted a start request or a stop for one
    /// of this pCPU's vCPUs; the scheduler scans its vCPUs only then.
    attention: AtomicBool,
    inner: UnsafeCell<PcpuInner>,
}

struct PcpuInner {
    runq: RunQueue,
    loaded: Option<usize>,
    /// The vCPU whose FP/SIMD registers are in the hardware.
    fp_owner: Option<usize>,
    slice_expired: bool,
    /// The EL2 timer holds a slice deadline (not a wake-up).
    slice_armed: bool,
    /// CPTR_EL2.TFP as last written.
    fp_trapped: bool,
    /// The domain whose stage 2 is in VTTBR_EL2.
    stage2_of: Option<usize>,
}

// SAFETY: `inner` is only touched by its own pCPU (indexed by this pCPU's id).
unsafe impl Sync for Pcpu {}

static VCPUS: [Vcpu; MAX_VCPUS] = [const { Vcpu::new() }; MAX_VCPUS];
static PCPUS: [Pcpu; boot::MAX_PCPUS] = [const {
    Pcpu {
        mpidr: AtomicU64::new(0),
        attention: AtomicBool::new(true),
        inner: UnsafeCell::new(PcpuInner {
            runq: RunQueue::new(),
            loaded: None,
            fp_owner: None,
            slice_expired: false,
            slice_armed: false,
            fp_trapped: true,
            stage2_of: None,
        }),
    }
}; boot::MAX_PCPUS];
static DOMAINS: spin::Once<[Domain; MAX_DOMAINS]> = spin::Once::new();
static LIVE_DOMAINS: AtomicUsize = AtomicUsize::new(0);
static NR_PCPUS: AtomicUsize = AtomicUsize::new(1);
static PSCI_SMC: AtomicBool = AtomicBool::new(true);
static GICR: AtomicU64 = AtomicU64::new(0);
static GICR_SIZE: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);
/// The boot domain's index in a hyperlaunch image (`usize::MAX`: none).
static BOOT_DOMAIN: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The time slice in counter ticks, computed once at boot.
static SLICE_TICKS: AtomicU64 = AtomicU64::new(0);

/// Every domain slot, by index (empty until boot has set them up). A slot
/// may be free or half-built: find a domain by id with [`index_of`], which
/// returns only published ones.
pub fn domains() -> &'static [Domain] {
    DOMAINS.get().map(|d| d.as_slice()).unwrap_or(&[])
}

/// The boot domain's index, in a hyperlaunch image.
pub fn boot_domain() -> Option<usize> {
    let b = BOOT_DOMAIN.load(Ordering::Acquire);
    (b != usize::MAX).then_some(b)
}

/// The domain index of domain id `id` (ids are index + 1, as logged
/// `d<id>`), if a domain with that id exists and is not being destroyed.
pub fn index_of(id: u16) -> Option<usize> {
    let i = usize::from(id).checked_sub(1)?;
    domains()
        .get(i)
        .is_some_and(|d| d.slot_state().is_published())
        .then_some(i)
}

/// The domain id of domain index `di`.
pub fn domain_id(di: usize) -> u16 {
    (di + 1) as u16
}

/// vCPU by global index.
pub fn vcpu(v: usize) -> Option<&'static Vcpu> {
    VCPUS.get(v)
}

/// The domain a vCPU belongs to.
pub fn domain_of(v: usize) -> Option<&'static Domain> {
    vcpu(v)?.domain()
}

/// The global index of the vCPU whose frame is at `frame`, as recorded in
/// the frame at build time; checked against the frame's real address so a
/// corrupted index can never select another vCPU's bookkeeping.
pub fn vcpu_of_frame(frame: *const VcpuFrame) -> Option<usize> {
    // SAFETY: trap entry passes a pointer to a live frame inside `VCPUS`.
    let v = unsafe { (*frame).id } as usize;
    let slot = VCPUS.get(v)?;
    core::ptr::eq(slot.frame.get(), frame).then_some(v)
}

/// This pCPU's index, found by MPIDR (slow path only: the trap path knows
/// its pCPU from the vCPU's placement).
pub fn this_pcpu() -> usize {
    let m = arch::mpidr();
    let n = NR_PCPUS.load(Ordering::Relaxed);
    (0..n)
        .find(|&i| PCPUS[i].mpidr.load(Ordering::Relaxed) == m)
        .unwrap_or(0)
}

/// The owner-only parts of vCPU `v`.
///
/// # Safety
/// Must only be called on the pCPU `v` is placed on, and the returned
/// references must not outlive the current trap or scheduler step.
pub unsafe fn owned(v: usize) -> (&'static mut VcpuFrame, &'static mut OwnerState) {
    let slot = &VCPUS[v];
    // SAFETY: per the contract, only the owning pCPU calls this and it never
    // holds two such references to the same vCPU at once.
    unsafe { (&mut *slot.frame.get(), &mut *slot.owner.get()) }
}

/// The owner-only bookkeeping of vCPU `v`, for a trap handler that already
/// holds the frame.
///
/// # Safety
/// As for [`owned`]; the state must not be borrowed elsewhere.
pub unsafe fn owner_state(v: usize) -> &'static mut OwnerState {
    // SAFETY: per the contract; the frame is a separate cell.
    unsafe { &mut *VCPUS[v].owner.get() }
}

/// Whether the trapped vCPU `f` can go straight back to the guest: nothing
/// asked its pCPU to reschedule and no interrupt is in flight or pending.
#[inline(always)]
pub fn can_resume_directly(f: &VcpuFrame) -> bool {
    let (v, p) = (f.id as usize, f.pcpu as usize);
    let (Some(slot), Some(pc)) = (VCPUS.get(v), PCPUS.get(p)) else {
        return false;
    };
    // SAFETY: trap paths run on the owning pCPU, which alone touches these.
    let (inner, own) = unsafe { (&*pc.inner.get(), &*slot.owner.get()) };
    !inner.slice_expired && own.lr_used == 0 && !slot.irq_hint.load(Ordering::Relaxed)
}

/// This pCPU's scheduler state.
///
/// # Safety
/// Must be called with `p == this_pcpu()`; one reference at a time.
unsafe fn pcpu_inner(p: usize) -> &'static mut PcpuInner {
    // SAFETY: per the contract, only pCPU `p` touches its own state.
    unsafe { &mut *PCPUS[p].inner.get() }
}

fn halt_with(reason: core::fmt::Arguments<'_>) -> ! {
    log!("{}; halting", reason);
    arch::halt()
}

/// Boot pCPU entry, from `boot.rs`, MMU off, x0 = host DTB.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(dtb_addr: u64) -> ! {
    KERNEL_ENTRY_TICKS.store(arch::counter(), Ordering::Relaxed);
    // Bound the blob by its own header before parsing it.
    // SAFETY: firmware passes the DTB address in x0; we read only the
    // 40-byte header here, which lies in RAM.
    let header = unsafe { core::slice::from_raw_parts(dtb_addr as *const u8, 40) };
    let Some(total) = hostdt::dtb_total_size(header) else {
        // No UART known yet: nothing can be printed.
        arch::halt()
    };
    // SAFETY: the header says the blob is `total` bytes long; firmware
    // placed it in RAM and nothing else uses that memory.
    let dtb: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(dtb_addr as *mut u8, total) };
    // libfdt-edited blobs may hold NOP tokens, which the parser cannot walk.
    let _ = tessera_kernel::fdt_nop::strip_nops(dtb);
    let dtb: &'static [u8] = dtb;
    let host = match hostdt::parse_host(dtb) {
        Ok(h) => h,
        Err(e) => {
            // Try to find a UART anyway to say why we stop.
            if let Some(uart) = find_pl011(dtb) {
                arch::uart::init(uart);
            }
            halt_with(format_args!("bad host device tree: {e}"))
        }
    };
    arch::uart::init(host.uart.base);
    boot_with(&host, dtb_addr, total as u64)
}

/// Best effort for reporting a broken host DTB: the first PL011's base.
fn find_pl011(dtb: &[u8]) -> Option<u64> {
    let fdt = fdt::Fdt::new(dtb).ok()?;
    let node = fdt.find_compatible(&["arm,pl011"])?;
    node.reg()?.next().map(|r| r.starting_address as u64)
}

fn boot_with(host: &HostPlatform, dtb_addr: u64, dtb_size: u64) -> ! {
    let ncpu = host.cpus.len().clamp(1, boot::MAX_PCPUS);
    NR_PCPUS.store(ncpu, Ordering::Relaxed);
    for (i, &m) in host.cpus.iter().take(ncpu).enumerate() {
        PCPUS[i].mpidr.store(m & 0xff_00ff_ffff, Ordering::Relaxed);
    }
    PSCI_SMC.store(host.psci_conduit == Conduit::Smc, Ordering::Relaxed);
    SLICE_TICKS.store(
        SLICE_US * arch::counter_freq() / 1_000_000,
        Ordering::Relaxed,
    );

    let ram: heapless::Vec<(u64, u64), 8> = host.memory.iter().map(|r| (r.base, r.size)).collect();
    let devices = [
        (host.gicd.base, host.gicd.size),
        (host.gicr.base, host.gicr.size),
        (host.uart.base, host.uart.size),
    ];
    let root = match mmu::build_el2_map(&ram, &devices) {
        Ok(r) => r,
        Err(e) => halt_with(format_args!("cannot build the EL2 map: {e:?}")),
    };
    mmu::enable(root);
    EL2_ROOT.store(root.raw(), Ordering::Relaxed);
    log!(
        "EL2 kernel up: {} pCPUs, {} MiB RAM, GICv3 at {:#x}",
        ncpu,
        ram.iter().map(|r| r.1).sum::<u64>() >> 20,
        host.gicd.base
    );

    gic::init_distributor(host.gicd.base);
    GICR.store(host.gicr.base, Ordering::Relaxed);
    GICR_SIZE.store(host.gicr.size, Ordering::Relaxed);
    init_this_cpu(0);

    // The module table follows the kernel's footprint.
    let table_addr = boot::kernel_end();
    // SAFETY: the unified image was loaded in one piece; the header part is
    // read first and the full length only after the header bounds it.
    let probe = unsafe { core::slice::from_raw_parts(table_addr as *const u8, 24) };
    let total = u64::from_le_bytes(
        probe
            .get(16..24)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8]),
    );
    let in_ram = ram
        .iter()
        .any(|&(b, s)| table_addr >= b && table_addr.saturating_add(total) <= b + s);
    if !in_ram || total < 24 {
        halt_with(format_args!(
            "no module table after the kernel (image not built by `cargo xtask build`?)"
        ));
    }
    // SAFETY: the range was just checked to lie in RAM.
    let image: &'static [u8] =
        unsafe { core::slice::from_raw_parts(table_addr as *const u8, total as usize) };
    let table = match ModuleTable::parse(image) {
        Ok(t) => t,
        Err(e) => halt_with(format_args!("bad unified image: {e}")),
    };
    // Every chunk digest list, and the modules read in place; payloads are
    // checked chunk by chunk as they are copied into a domain (`lazy`).
    // With the CPU's SHA-256 instructions when it has them (no guest has
    // run yet).
    let verified = match arch::sha256::BootSha256::at_boot() {
        Some(sha) => table.verify_at_boot_with(|state, blocks| sha.compress(state, blocks)),
        None => table.verify_at_boot(),
    };
    if let Err(e) = verified {
        halt_with(format_args!("bad unified image: {}", table.describe(e)));
    }
    let Some(system) = table.first(ModuleKind::SystemDtb).map(|m| m.data) else {
        halt_with(format_args!(
            "bad unified image: system description: module not found"
        ))
    };
    let cfg = match config::parse_system(system) {
        Ok(c) => c,
        Err(e) => halt_with(format_args!("bad system description: {e}")),
    };
    let Some(policy) = table.first(ModuleKind::Policy).map(|m| m.data) else {
        halt_with(format_args!("bad unified image: policy: module not found"))
    };
    let enforcing = cfg.policy_enforcing;
    if let Err(e) = mac::install(policy, enforcing) {
        halt_with(format_args!("bad unified image: policy: {e}"));
    }
    log!(
        "access control: policy loaded, {}",
        if enforcing { "enforcing" } else { "permissive" }
    );

    let reserved_end = (table_addr + total).max(dtb_addr + dtb_size);
    let mut reserved: heapless::Vec<(u64, u64), 16> = heapless::Vec::new();
    let _ = reserved.push((boot::kernel_start(), reserved_end));
    for r in &host.reserved {
        if reserved
            .push((r.base, r.base.saturating_add(r.size)))
            .is_err()
        {
            halt_with(format_args!(
                "too many reserved-memory ranges in the host DTB"
            ));
        }
    }
    let Some(placeholder) = mac::console_sid() else {
        halt_with(format_args!("no policy"))
    };
    DOMAINS.call_once(|| core::array::from_fn(|i| Domain::empty(i, placeholder)));
    let boot = cfg
        .domains
        .iter()
        .position(|d| d.functions.contains(Function::Boot));
    let placement = plan_placement(&cfg, ncpu, boot);
    start_console_input(host, &placement);
    control::init(&ram, &reserved, table, placement);
    // In a hyperlaunch image the boot domain places shared memory itself.
    let shm = match boot {
        Some(_) => heapless::Vec::new(),
        None => place_shared_memory(&cfg),
    };
    match control::alloc_ram(BLOCK_2M) {
        Some(base) => grant::reserve(base),
        None => halt_with(format_args!("no free host RAM for the grant tables")),
    }
    match boot {
        Some(b) => start_boot_domain(b, &cfg, &table, image),
        None => start_dom0less(&cfg, &shm, &table),
    }

    // Secondary pCPUs start only now, so they see the finished domains.
    for (i, cpu) in PCPUS.iter().enumerate().take(ncpu).skip(1) {
        let m = cpu.mpidr.load(Ordering::Relaxed);
        let r = arch::firmware_call(
            PSCI_SMC.load(Ordering::Relaxed),
            0xC400_0003,
            m,
            boot::secondary_entry as *const () as u64,
            i as u64,
        );
        if r != 0 {
            log!("pcpu{} did not start (PSCI {})", i, r as i64);
        }
    }
    scheduler_entry(0)
}

/// Take keyboard input on the console UART's interrupt, routed to the
/// first pCPU no pinned domain owns (typing must not disturb a partition
/// that was promised its pCPU), or pCPU 0 if they are all owned.
fn start_console_input(host: &HostPlatform, placement: &Placement) {
    let Some(intid) = host.uart_irq else {
        log!("console: the host DT gives the UART no SPI; there is no keyboard input");
        return;
    };
    let p = (0..placement.pcpus())
        .find(|&p| !placement.is_owned(p))
        .unwrap_or(0);
    let mpidr = PCPUS.get(p).map_or(0, |c| c.mpidr.load(Ordering::Relaxed));
    if console::enable_input(intid, mpidr).is_err() {
        log!("console: the GIC has no INTID {intid} for the UART; there is no keyboard input");
    }
}

/// Dom0less: build every domain of the description, wire their static
/// links, and start them all.
fn start_dom0less(cfg: &config::SystemConfig, shm: &[ShmPlacement], table: &ModuleTable<'static>) {
    for (i, dc) in cfg.domains.iter().enumerate() {
        if let Err(e) = build_domain(i, i, dc, cfg, shm, table, None) {
            halt_with(format_args!("cannot build domain {}: {}", dc.name, e));
        }
    }
    STATIC_EVTCHNS.call_once(|| cfg.evtchns.clone());
    if let Some(first) = next_with_uart(usize::MAX) {
        console::set_focus(first);
        log!(
            "console input goes to d{} {} (Ctrl-T moves it to the next guest UART)",
            first + 1,
            domains()[first].name
        );
    }
    for i in 0..cfg.domains.len() {
        bind_static_channels(Some(i), true);
    }
    for i in 0..cfg.domains.len() {
        if let Err(e) = control::unpause(i) {
            halt_with(format_args!("cannot start d{}: {:?}", i + 1, e));
        }
    }
}

/// Hyperlaunch: build and start only the boot domain, description domain
/// `b`, in the slot of its `domid`; it builds every other domain through
/// the control hypercalls. It sees the image's module table (`image`)
/// read-only as its initrd, and hears of every other domain's stop by
/// `VIRQ_DOM_EXC` (docs/02, "Hyperlaunch").
fn start_boot_domain(
    b: usize,
    cfg: &config::SystemConfig,
    table: &ModuleTable<'static>,
    image: &'static [u8],
) {
    let Some(dc) = cfg.domains.get(b) else {
        halt_with(format_args!("no boot domain"))
    };
    if let Err(why) = check_boot_domain(b, cfg) {
        halt_with(format_args!(
            "cannot build boot domain {}: {}",
            dc.name, why
        ));
    }
    let slot = usize::from(dc.domid).saturating_sub(1);
    if let Err(e) = build_domain(slot, b, dc, cfg, &[], table, Some(image)) {
        halt_with(format_args!("cannot build boot domain {}: {}", dc.name, e));
    }
    STATIC_EVTCHNS.call_once(heapless::Vec::new);
    BOOT_DOMAIN.store(slot, Ordering::Release);
    log!(
        "hyperlaunch: d{} {} is the boot domain; it builds the other {} domain(s)",
        dc.domid,
        dc.name,
        cfg.domains.len() - 1
    );
    if let Err(e) = control::unpause(slot) {
        halt_with(format_args!("cannot start d{}: {:?}", dc.domid, e));
    }
}

/// What a boot domain may not have: everything the kernel would have to
/// set up for it besides its RAM and payload. Its initrd is the module
/// table, and it builds every link itself.
fn check_boot_domain(b: usize, cfg: &config::SystemConfig) -> Result<(), &'static str> {
    let dc = cfg.domains.get(b).ok_or("no such domain")?;
    if dc.ramdisk.is_some() {
        return Err("a boot domain has no ramdisk: its initrd is the image's module table");
    }
    if dc.device_model.is_some() || cfg.domains.iter().any(|d| d.device_model == Some(b)) {
        return Err("a boot domain neither has nor is a device model");
    }
    if cfg.evtchns_of(b).next().is_some() || cfg.shm_of(b).next().is_some() {
        return Err("a boot domain has no static event channel or shared memory");
    }
    let end = platform::RAM_BASE.saturating_add(dc.memory_bytes);
    if end > platform::BOOT_MODULES_BASE {
        return Err("a boot domain's RAM must end below its module window (at most 2 GiB)");
    }
    Ok(())
}

/// Where the boot domain sees `image`: in its module window, at the same
/// offset within a 2 MiB block as in host memory, so block mappings work.
fn module_window(image: &'static [u8]) -> Result<u64, &'static str> {
    let pa = image.as_ptr() as u64;
    let ipa = platform::BOOT_MODULES_BASE + pa % BLOCK_2M;
    let len = (image.len() as u64).next_multiple_of(PAGE_SIZE);
    if ipa + len > platform::BOOT_MODULES_BASE + platform::BOOT_MODULES_SIZE {
        return Err("the image's modules do not fit the boot domain's module window");
    }
    Ok(ipa)
}

/// Check every domain's `tessera,pcpus` against the board before any
/// domain exists, and log which pCPUs pinned domains own. A pin the board
/// cannot honour refuses the image: one line naming the domain, then halt.
/// In a hyperlaunch image (`boot`, the boot domain's description index)
/// only the boot domain's pins are the kernel's to refuse; the others' are
/// reserved where they can be honoured and checked again when the builder
/// creates each domain (`CreateDomain`), which refuses the rest.
fn plan_placement(cfg: &config::SystemConfig, ncpu: usize, boot: Option<usize>) -> Placement {
    let pins = cfg.domains.iter().map(|d| d.pcpus.as_slice());
    let planned = match boot {
        Some(b) => Placement::plan_for_builder(ncpu, pins, b),
        None => Placement::plan(ncpu, pins),
    };
    // Domains are d<index + 1> in dom0less mode, d<domid> in hyperlaunch.
    let id_of = |i: usize| match (boot, cfg.domains.get(i)) {
        (Some(_), Some(d)) => usize::from(d.domid),
        _ => i + 1,
    };
    let placement = match planned {
        Ok(p) => p,
        Err(e) => {
            let name = |i: usize| cfg.domains.get(i).map_or("?", |d| d.name.as_str());
            halt_with(format_args!("cannot place vCPUs: {}", e.named(name)))
        }
    };
    for p in 0..placement.pcpus() {
        if let Some(d) = placement
            .owner(p)
            .and_then(|i| cfg.domains.get(i).map(|d| (i, d)))
        {
            if boot.is_some_and(|b| b != d.0) {
                log!(
                    "pcpu{} is kept for d{} {} (tessera,pcpus), which its builder creates",
                    p,
                    id_of(d.0),
                    d.1.name
                );
            } else {
                log!(
                    "pcpu{} belongs to d{} {} (tessera,pcpus): no other domain runs there",
                    p,
                    id_of(d.0),
                    d.1.name
                );
            }
        }
    }
    placement
}

static EL2_ROOT: AtomicU64 = AtomicU64::new(0);
/// The static event channels of the system description, kept to rebind
/// them when a domain restarts.
static STATIC_EVTCHNS: spin::Once<
    heapless::Vec<config::StaticEvtchn, { config::MAX_STATIC_EVTCHNS }>,
> = spin::Once::new();

/// Place every static shared-memory region in host RAM and decide, with
/// the policy, which of its users may map it: a user needs
/// `grant { map_read map_write }` towards every other user. A denied user
/// gets no mapping (the check logs the audit line).
fn place_shared_memory(
    cfg: &config::SystemConfig,
) -> heapless::Vec<ShmPlacement, { config::MAX_SHM }> {
    let mut out = heapless::Vec::new();
    for region in &cfg.shm {
        let host = match region.host_base {
            Some(base) => control::claim_ram(base, region.size, config::SHM_ALIGN),
            None => control::alloc_ram(region.size),
        };
        let Some(host) = host else {
            halt_with(format_args!(
                "cannot place shared memory {:?}: its host range is not free RAM",
                region.id.as_str()
            ))
        };
        // SAFETY: the range was just claimed for this region alone and is
        // identity-mapped RAM; no domain runs yet.
        unsafe { core::ptr::write_bytes(host as *mut u8, 0, region.size as usize) };
        let mut allowed = [false; MAX_DOMAINS];
        for user in &region.users {
            let sid_of = |i: usize| {
                cfg.domains
                    .get(i)
                    .and_then(|d| mac::sid_of(&d.security_label))
            };
            let Some(me) = sid_of(user.domain) else {
                continue;
            };
            let ok = region
                .users
                .iter()
                .filter(|o| o.domain != user.domain)
                .all(|o| {
                    sid_of(o.domain).is_some_and(|them| {
                        mac::check_at_boot(me, them, GrantPerm::MapRead)
                            && mac::check_at_boot(me, them, GrantPerm::MapWrite)
                    })
                });
            if let Some(a) = allowed.get_mut(user.domain) {
                *a = ok;
            }
        }
        let _ = out.push(ShmPlacement { host, allowed });
    }
    out
}

/// Bind the static event channels that involve domain `only` (all of them
/// for `None`), after checking `event bind` both ways. At boot every pair
/// is bound once (`at_boot` skips pairs already done from the other side).
fn bind_static_channels(only: Option<usize>, at_boot: bool) {
    let Some(links) = STATIC_EVTCHNS.get() else {
        return;
    };
    let p = this_pcpu();
    for link in links {
        let (a, b) = (link.a, link.b);
        match only {
            Some(i) if at_boot && a.domain != i => continue,
            Some(i) if !at_boot && a.domain != i && b.domain != i => continue,
            _ => {}
        }
        let (Some(da), Some(db)) = (domains().get(a.domain), domains().get(b.domain)) else {
            continue;
        };
        if mac::check(p, da.sid, db.sid, EventPerm::Bind).is_err()
            || mac::check(p, db.sid, da.sid, EventPerm::Bind).is_err()
        {
            log!(
                "static event channel d{} {} port {} <-> d{} {} port {}: denied by policy",
                da.id,
                da.name,
                a.port,
                db.id,
                db.name,
                b.port
            );
            continue;
        }
        if let Err(e) = events::install_static(a.domain, a.port, b.domain, b.port) {
            events::log_static_failure(da, db, a.port, b.port, e);
        }
    }
}

/// Secondary pCPU entry, from `boot.rs`, MMU off.
#[unsafe(no_mangle)]
extern "C" fn secondary_main(idx: u64) -> ! {
    mmu::enable(PhysAddr(EL2_ROOT.load(Ordering::Relaxed)));
    let p = idx as usize;
    init_this_cpu(p);
    scheduler_entry(p)
}

fn init_this_cpu(p: usize) {
    let mpidr = PCPUS
        .get(p)
        .map(|c| c.mpidr.load(Ordering::Relaxed))
        .unwrap_or(0);
    if gic::init_cpu(
        GICR.load(Ordering::Relaxed),
        GICR_SIZE.load(Ordering::Relaxed),
        mpidr,
    )
    .is_err()
    {
        halt_with(format_args!(
            "pcpu{p}: no redistributor for MPIDR {mpidr:#x}"
        ));
    }
    guest::init_el2_controls();
    STARTED.fetch_add(1, Ordering::AcqRel);
}

/// Build domain `i` of the system description in slot `slot` the way a
/// builder would: create it, give it memory, map its static shared memory
/// (and, for the boot domain, the image's `modules` read-only), load it
/// and set its vCPU context, with the same functions the control
/// hypercalls use (`control.rs`); it starts through `Unpause`.
fn build_domain(
    slot: usize,
    i: usize,
    dc: &DomainConfig,
    cfg: &config::SystemConfig,
    shm_at: &[ShmPlacement],
    table: &ModuleTable<'static>,
    modules: Option<&'static [u8]>,
) -> Result<(), &'static str> {
    let size = dc.memory_bytes;
    if size < 2 * GUEST_DTB_RESERVE {
        return Err("memory must be at least 4 MiB");
    }
    let mut shm = heapless::Vec::new();
    for (region, placed) in cfg.shm.iter().zip(shm_at) {
        let Some(user) = region.users.iter().find(|u| u.domain == i) else {
            continue;
        };
        if !placed.allowed.get(i).copied().unwrap_or(false) {
            log!(
                "d{} {}: shared memory {:?} not mapped: denied by policy",
                i + 1,
                dc.name,
                region.id.as_str()
            );
            continue;
        }
        shm.push((region.id.clone(), user.guest_base, region.size))
            .map_err(|_| "too many shared-memory regions")?;
    }

    let payload = table
        .find(ModuleKind::Kernel, &dc.kernel.name)
        .ok_or("kernel module missing from the image")?
        .data;
    let (load_offset, image_size) = match Arm64ImageHeader::read_from_prefix(payload) {
        Ok((h, _)) if h.magic.get() == ARM64_IMAGE_MAGIC => {
            (h.text_offset.get(), h.image_size.get())
        }
        _ => (0, 0),
    };
    let ramdisk = match &dc.ramdisk {
        Some(r) => Some(
            table
                .find(ModuleKind::Ramdisk, &r.name)
                .ok_or("ramdisk module missing from the image")?
                .data,
        ),
        None => None,
    };
    // The kernel image (with its BSS, per the arm64 header) from the load
    // offset up; the initrd and then the DTB at the top of RAM.
    let kernel_end = load_offset.saturating_add((payload.len() as u64).max(image_size));
    let initrd_len = ramdisk.map_or(0, |r| (r.len() as u64).next_multiple_of(PAGE_SIZE));
    if kernel_end.saturating_add(initrd_len) > size - GUEST_DTB_RESERVE {
        return Err("kernel and initrd do not fit in guest RAM");
    }
    // The dom0less build numbers domains in tree order: d<index + 1>.
    let mut served = heapless::Vec::new();
    for s in cfg.served_by(i, domain_id) {
        served
            .push(Served {
                domid: s.domid,
                name: heapless::String::try_from(s.name).unwrap_or_default(),
                vcpus: s.vcpus,
                ram_size: s.ram_size,
                vpl011: s.vpl011,
                virtio: s.virtio.iter().copied().collect(),
            })
            .map_err(|_| "a device model serves at most 8 domains")?;
    }
    let sid = mac::sid_of(&dc.security_label)
        .ok_or("its xen,security-label is not a context of the policy")?;
    let entry = platform::RAM_BASE + load_offset;
    let dtb_ipa = platform::RAM_BASE + size - GUEST_DTB_RESERVE;
    let modules = match modules {
        Some(image) => Some((module_window(image)?, image)),
        None => None,
    };
    let fields = DomainFields {
        entry,
        dtb_ipa,
        payload,
        load_offset,
        bootargs: dc.bootargs.clone(),
        vpl011: dc.vpl011,
        ramdisk,
        virtio_slots: dc.virtio.len() as u32,
        served,
        xen_enhanced: dc.xen_enhanced,
        shm,
        modules,
        pins: dc.pcpus.clone(),
        device_model: dc.device_model,
        ..DomainFields::new(dc.name.clone(), sid, dc.vcpus as usize)
    };
    control::create_in(slot, fields).map_err(|e| e.why())?;
    let host = dc.static_mem.as_ref().map(|m| m.base);
    control::assign_memory(slot, size, host).map_err(|e| match e {
        control::BuildError::Memory(_) if host.is_some() => "xen,static-mem is not free host RAM",
        control::BuildError::Memory(_) => "not enough free host RAM",
        other => other.why(),
    })?;
    let d = domains().get(slot).ok_or("no such domain slot")?;
    for (region, placed) in cfg.shm.iter().zip(shm_at) {
        let Some(user) = region.users.iter().find(|u| u.domain == i) else {
            continue;
        };
        if placed.allowed.get(i).copied().unwrap_or(false) {
            control::map_static(slot, user.guest_base, placed.host, region.size, Attrs::RAM)
                .map_err(|_| "cannot map a shared-memory region")?;
        }
    }
    if let Some((ipa, image)) = d.modules {
        let len = (image.len() as u64).next_multiple_of(PAGE_SIZE);
        control::map_static(slot, ipa, image.as_ptr() as u64, len, Attrs::READ_ONLY)
            .map_err(|_| "cannot map the module table")?;
    }
    load_domain(d)?;
    control::set_vcpu_context(slot, 0, entry, dtb_ipa).map_err(|e| e.why())
}

/// (Re)load a domain's RAM: the payload at its load offset, the initrd below
/// the guest DTB at the top, zeros everywhere else. Only the DTB is written
/// now; the payloads are recorded and copied, chunk-checked, into each
/// block when it is first touched, and the rest is zeroed then (`lazy`).
fn load_domain(d: &Domain) -> Result<(), &'static str> {
    let size = d.ram_size();
    let at = d.load_offset;
    let kernel_end = at
        .checked_add(d.payload.len() as u64)
        .ok_or("kernel does not fit")?;
    let dtb_off = d.dtb_ipa - platform::RAM_BASE;
    if kernel_end > dtb_off || dtb_off > size {
        return Err("kernel does not fit");
    }
    // The initrd ends just below the DTB, its start rounded down to a page.
    let initrd_at = match d.ramdisk {
        Some(r) => {
            let start = dtb_off
                .checked_sub(r.len() as u64)
                .ok_or("initrd does not fit")?
                & !(PAGE_SIZE - 1);
            if start < kernel_end {
                return Err("initrd does not fit");
            }
            Some((start, r))
        }
        None => None,
    };
    let di = d.slot();
    lazy::reset(di, d);
    let record = |offset: u64, data: &'static [u8]| {
        let module = control::module_index_of(data).ok_or("a payload is not a module")?;
        let p = lazy_ram::Payload {
            at: offset,
            module,
            from: 0,
            len: data.len() as u64,
        };
        // An empty payload has nothing to copy.
        match lazy::record(di, d, p) {
            Ok(()) => Ok(()),
            Err(_) if data.is_empty() => Ok(()),
            Err(_) => Err("cannot record a payload"),
        }
    };
    record(at, d.payload)?;
    let initrd = match initrd_at {
        Some((start, r)) => {
            record(start, r)?;
            let ipa = platform::RAM_BASE + start;
            Some((ipa, ipa + r.len() as u64))
        }
        None => d.modules.map(|(ipa, m)| (ipa, ipa + m.len() as u64)),
    };
    lazy::ensure(di, d, dtb_off, size - dtb_off)
        .map_err(|_| "cannot fill the guest DTB's RAM (a corrupt payload?)")?;
    // SAFETY: the DTB area `[dtb_off, size)` is the domain's RAM, filled
    // just now (zeros, or payload bytes the DTB may overwrite; the layout
    // keeps them apart), identity-mapped, and no vCPU of the domain runs.
    let out = unsafe {
        core::slice::from_raw_parts_mut(
            (d.ram_pa() + dtb_off) as *mut u8,
            (size - dtb_off) as usize,
        )
    };
    let params = GuestDtParams {
        ram_base: platform::RAM_BASE,
        ram_size: d.ram_size(),
        vcpus: d.nr_vcpus as u32,
        bootargs: &d.bootargs,
        initrd,
        vpl011: d.vpl011,
        virtio_slots: d.virtio_slots,
    };
    let mut shm: heapless::Vec<guest_dt::GuestShm, MAX_SHM_PER_DOMAIN> = heapless::Vec::new();
    for (id, base, size) in &d.shm {
        let _ = shm.push(guest_dt::GuestShm {
            id: id.as_str(),
            guest_base: *base,
            size: *size,
        });
    }
    let mut served: heapless::Vec<guest_dt::ServedDomain, MAX_SERVED> = heapless::Vec::new();
    for s in &d.served {
        let _ = served.push(guest_dt::ServedDomain {
            domid: s.domid,
            name: &s.name,
            vcpus: s.vcpus,
            ram_size: s.ram_size,
            vpl011: s.vpl011,
            virtio: &s.virtio,
        });
    }
    let xen = guest_dt::XenGuestNodes {
        hypervisor: d.xen_enhanced,
        shm: &shm,
        served: &served,
    };
    let dtb_len = guest_dt::build_guest_dt_with(&params, &xen, out)
        .map_err(|_| "cannot build the guest DTB")?;
    // SAFETY: the DTB lies in the domain's RAM, as above.
    unsafe { arch::clean_to_poc(d.ram_pa() + dtb_off, dtb_len as u64) };
    // SAFETY: invalidating the instruction cache is always safe.
    unsafe { core::arch::asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
    Ok(())
}

/// The domain after `after` (wrapping; `usize::MAX` for the first) that has
/// an emulated UART, the console input's possible owners.
pub fn next_with_uart(after: usize) -> Option<usize> {
    let all = domains();
    let start = if after >= all.len() { 0 } else { after + 1 };
    (0..all.len())
        .map(|k| (start + k) % all.len())
        .find(|&i| all[i].slot_state().is_published() && all[i].vpl011)
}

/// Power on vCPU 0 of a (re)started domain.
fn start_domain(d: &Domain) {
    if let Some(v) = vcpu(d.first_vcpu) {
        let _ = v.power.power_on(d.entry, d.dtb_ipa);
        request_start(d.first_vcpu);
    }
}

/// Tell the pCPU that owns `v` that a power-on request for it is posted
/// (`take_start_requests` applies it).
pub fn request_start(v: usize) {
    let Some(slot) = vcpu(v) else { return };
    if let Some(c) = PCPUS.get(slot.pcpu.load(Ordering::Relaxed)) {
        c.attention.store(true, Ordering::Release);
    }
    kick_owner(v);
}

/// Tell the pCPU that owns `v` to look at it again.
pub fn kick_owner(v: usize) {
    let Some(slot) = vcpu(v) else { return };
    let p = slot.pcpu.load(Ordering::Relaxed);
    let Some(c) = PCPUS.get(p) else { return };
    // MPIDRs are stored as `arch::mpidr` reads them: comparing them tells
    // whether we are the owner without searching for our own index.
    let owner = c.mpidr.load(Ordering::Relaxed);
    if owner != arch::mpidr() {
        gic::kick(owner);
    } else if STARTED.load(Ordering::Acquire) > 0 {
        // A vCPU of ours changed: reschedule on the way out so it gets its
        // turn (and the slice timer is re-armed).
        // SAFETY: we are pCPU `p`; no other reference to its state is live
        // in the trap paths that call this.
        unsafe { pcpu_inner(p) }.slice_expired = true;
    }
}

/// Why a domain stops.
#[derive(Clone, Copy)]
pub enum StopReason {
    Poweroff,
    Crash,
    Reboot,
    Fault,
    /// Its builder destroys it.
    Destroyed,
}

impl StopReason {
    fn exit_reason(self) -> ExitReason {
        match self {
            StopReason::Poweroff => ExitReason::Poweroff,
            StopReason::Crash => ExitReason::Crash,
            StopReason::Reboot => ExitReason::Reboot,
            StopReason::Fault => ExitReason::Fault,
            StopReason::Destroyed => ExitReason::Destroyed,
        }
    }
}

/// Move domain `d`'s slot on by `event` with one compare-exchange at a
/// time, as `tessera_kernel::control::next` allows; the state it left.
fn advance(d: &Domain, event: Event) -> Result<SlotState, Errno> {
    let mut cur = d.state.load(Ordering::Acquire);
    loop {
        let from = SlotState::from_raw(cur);
        let to = control_core::next(from, event)?;
        match d
            .state
            .compare_exchange(cur, to as u8, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(from),
            Err(now) => cur = now,
        }
    }
}

/// Stop a running or paused domain (or restart it, for `Reboot`, when the
/// kernel built it itself). Safe to call from any pCPU.
pub fn stop_domain(di: usize, why: StopReason) {
    let Some(d) = domains().get(di) else { return };
    // The boot domain built the others: none of them could outlive its
    // restart, so its reboot (PSCI SYSTEM_RESET, or the one it asks for on
    // behalf of an `on-crash = "reboot"` domain) resets the machine.
    if matches!(why, StopReason::Reboot) && boot_domain() == Some(di) {
        log!("d{} {}: system reset", d.id, d.name);
        let reset = tessera_ipc::psci::Function::SystemReset as u64;
        arch::firmware_call(PSCI_SMC.load(Ordering::Relaxed), reset, 0, 0, 0);
        arch::halt();
    }
    if advance(d, Event::Stop).is_err() {
        return;
    }
    d.exit_reason
        .store(why.exit_reason() as u8, Ordering::Release);
    let what = match why {
        StopReason::Poweroff => Some("shutdown (poweroff)"),
        StopReason::Crash => Some("shutdown (crash)"),
        StopReason::Reboot => Some("shutdown (reboot)"),
        StopReason::Destroyed => Some("destroyed"),
        StopReason::Fault => None,
    };
    if let Some(w) = what {
        log!("d{} {}: {}", d.id, d.name, w);
    }
    stop_vcpus(d);
    release_links(di, d);
    // The boot domain learns of every other domain's stop, as Xen's dom0
    // does (VIRQ_DOM_EXC), and asks `GetDomainInfo` why.
    if let Some(b) = boot_domain().filter(|&b| b != di) {
        events::raise_virq(b, tessera_ipc::control::VIRQ_DOM_EXC, 0);
    }
    // A domain a builder made has no image here: its builder restarts it.
    if let (StopReason::Reboot, false) = (why, d.payload.is_empty()) {
        // Let the other pCPUs leave the domain's vCPUs before reloading.
        spin_wait_us(200);
        *d.vgic.lock() = Vgic::new(d.nr_vcpus);
        if load_domain(d).is_ok() {
            for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
                if let Some(slot) = vcpu(v) {
                    slot.power.reset();
                }
            }
            bind_static_channels(Some(di), false);
            // A builder may have destroyed it meanwhile: then it stays down.
            if advance(d, Event::Restart).is_ok() {
                d.exit_reason
                    .store(ExitReason::None as u8, Ordering::Release);
                let g = d.generation.fetch_add(1, Ordering::AcqRel) + 1;
                log!("d{} {}: restarting (generation {})", d.id, d.name, g);
                start_domain(d);
                return;
            }
        } else {
            log!("d{} {}: reload failed; domain stopped", d.id, d.name);
        }
    }
    if LIVE_DOMAINS.fetch_sub(1, Ordering::AcqRel) == 1 {
        log!("all domains stopped, powering off");
        arch::firmware_call(PSCI_SMC.load(Ordering::Relaxed), 0x8400_0008, 0, 0, 0);
        arch::halt();
    }
}

/// Stop every vCPU of `d` and make their pCPUs look.
fn stop_vcpus(d: &Domain) {
    for v in d.first_vcpu..d.first_vcpu + d.nr_vcpus {
        if let Some(slot) = vcpu(v) {
            slot.power.stop();
            kick_owner(v);
        }
    }
}

/// What domain `di` holds of others goes: its event channels close, its
/// grant mappings and grants are revoked, and it serves no domain.
fn release_links(di: usize, d: &Domain) {
    events::domain_stopped(di, d.nr_vcpus);
    grant::domain_stopped(di);
    ioreq::domain_stopped(di);
}

fn spin_wait_us(us: u64) {
    let end = arch::counter() + us * arch::counter_freq() / 1_000_000;
    while arch::counter() < end {
        core::hint::spin_loop();
    }
}

/// Whether vCPU `v` (owned by this pCPU) can run now.
fn runnable(v: usize) -> bool {
    let Some(slot) = vcpu(v) else { return false };
    let Some(d) = slot.domain() else { return false };
    if !d.is_running() || !slot.power.is_on() {
        return false;
    }
    // SAFETY: called only by the owning pCPU from its scheduler.
    let (frame, own) = unsafe { owned(v) };
    // Waiting on a device model is not woken by interrupts, only by the answer.
    if own.pending_io.is_some() {
        if !ioreq::try_finish(frame, own) {
            return false;
        }
        own.blocked = false;
        return true;
    }
    if !own.blocked {
        return true;
    }
    if slot.ioreq_wake.swap(false, Ordering::AcqRel) {
        own.blocked = false;
        return true;
    }
    // A timer still in the hardware raises its own interrupt when due; only
    // a stashed one is checked here.
    if !own.timer_in_hw && timer_due(frame) {
        let idx = slot.index.load(Ordering::Relaxed);
        d.vgic.lock().inject(idx, platform::VTIMER_INTID);
        frame.timer.ctl |= 0b10;
        slot.irq_hint.store(true, Ordering::Release);
    }
    let idx = slot.index.load(Ordering::Relaxed);
    if slot.irq_hint.load(Ordering::Acquire)
        || lr_pending(v, frame, own)
        || (own.undelivered && d.vgic.lock().has_deliverable(idx))
    {
        own.blocked = false;
        return true;
    }
    false
}

/// Whether one of `v`'s list registers holds a pending interrupt: it was
/// delivered before the vCPU blocked (with interrupts masked, say), and a
/// pending virtual interrupt wakes a WFI just as a physical one would.
fn lr_pending(v: usize, frame: &VcpuFrame, own: &OwnerState) -> bool {
    if own.lr_used == 0 {
        return false;
    }
    // SAFETY: owner pCPU; the scheduler state is only read here.
    let loaded =
        unsafe { &*PCPUS[frame.pcpu as usize % boot::MAX_PCPUS].inner.get() }.loaded == Some(v);
    (0..gic::NR_LRS)
        .filter(|n| own.lr_used & (1 << n) != 0)
        .any(|n| {
            let lr = if loaded {
                gic::read_lr(n)
            } else {
                frame.vgic.lr[n]
            };
            matches!(
                Vgic::lr_decode(lr).1,
                LrState::Pending | LrState::PendingActive
            )
        })
}

/// A stashed virtual timer whose condition is met (enabled, unmasked, expired).
fn timer_due(frame: &VcpuFrame) -> bool {
    let t = &frame.timer;
    t.ctl & 0b11 == 0b01 && arch::counter() >= t.cval
}

/// Apply posted CPU_ON requests to this pCPU's vCPUs.
fn take_start_requests(p: usize) {
    // A plain load first: this runs on every scheduling pass, and the flag
    // is almost always clear (an exclusive swap costs far more).
    if !PCPUS.get(p).is_some_and(|c| {
        c.attention.load(Ordering::Relaxed) && c.attention.swap(false, Ordering::AcqRel)
    }) {
        return;
    }
    // SAFETY: we are pCPU `p`.
    let inner = unsafe { pcpu_inner(p) };
    control::take_placements(p, inner);
    for &v in inner.runq.vcpus() {
        let Some(slot) = vcpu(v) else { continue };
        if let Some((entry, ctx)) = slot.power.take_start() {
            let idx = slot.index.load(Ordering::Relaxed);
            // SAFETY: owner pCPU.
            let (frame, own) = unsafe { owned(v) };
            frame.reset(entry, ctx, platform::vcpu_mpidr(idx as u32));
            if inner.loaded == Some(v) {
                // The old incarnation's interrupts must not reach the new one.
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
            *own = OwnerState {
                first_entry: idx == 0,
                ..OwnerState::default()
            };
        }
    }
}

/// First scheduling on a pCPU: wait for a runnable vCPU and enter it.
fn scheduler_entry(p: usize) -> ! {
    let next = pick_or_idle(p);
    let frame = switch_to(p, next);
    // SAFETY: `frame` is the frame of a vCPU owned by this pCPU whose EL1
    // state `switch_to` loaded; the stack top is this pCPU's own.
    unsafe { boot::enter_guest_first(frame as *mut VcpuFrame as *mut u64, boot::stack_top(p)) }
}

/// Pick the next vCPU to run on `p`, idling (WFI with interrupts masked)
/// until one is runnable. A blocked vCPU that is still loaded keeps its
/// timer in the hardware meanwhile: the timer's physical interrupt ends the
/// WFI (see `drain_irqs`), so nothing is saved or restored around an idle.
fn pick_or_idle(p: usize) -> usize {
    loop {
        take_start_requests(p);
        // SAFETY: we are pCPU `p`.
        let inner = unsafe { pcpu_inner(p) };
        if let Some(v) = inner.runq.pick_next(runnable) {
            return v;
        }
        arm_wakeup(p);
        gic::set_virtual_cpuif(false);
        arch::wfi();
        gic::set_virtual_cpuif(true);
        drain_irqs(p);
    }
}

/// Save the loaded vCPU's timer into its frame and silence the hardware timer.
fn stash_timer(p: usize, v: usize) {
    // SAFETY: we are pCPU `p`.
    let inner = unsafe { pcpu_inner(p) };
    if inner.loaded != Some(v) {
        return;
    }
    // SAFETY: owner pCPU.
    let (frame, own) = unsafe { owned(v) };
    if own.timer_in_hw {
        guest::save_timer(&mut frame.timer);
        own.timer_in_hw = false;
    }
}

/// Program the EL2 timer for the earliest blocked-vCPU timer deadline.
fn arm_wakeup(p: usize) {
    // SAFETY: we are pCPU `p`.
    let inner = unsafe { pcpu_inner(p) };
    let mut deadline = u64::MAX;
    for &v in inner.runq.vcpus() {
        // SAFETY: owner pCPU.
        let (frame, own) = unsafe { owned(v) };
        // A vCPU waiting on its device model wakes only for the answer (see
        // `runnable`): its timer, due or not, must not end the WFI, or the
        // pCPU would spin for as long as the device model takes.
        if own.blocked
            && own.pending_io.is_none()
            && !own.timer_in_hw
            && frame.timer.ctl & 0b11 == 0b01
        {
            deadline = deadline.min(frame.timer.cval);
        }
    }
    set_hyp_timer(if deadline == u64::MAX {
        None
    } else {
        Some(deadline)
    });
    // That replaced the slice timer: `switch_to` must arm it again, or a
    // busy vCPU would never be preempted once this pCPU has idled.
    inner.slice_armed = false;
}

fn set_hyp_timer(at: Option<u64>) {
    match at {
        Some(t) => {
            arch::write_sysreg!("cnthp_cval_el2", t);
            arch::write_sysreg!("cnthp_ctl_el2", 1);
        }
        None => arch::write_sysreg!("cnthp_ctl_el2", 0),
    }
}

/// Handle every pending physical interrupt.
fn drain_irqs(p: usize) {
    if let Some(id) = take_common_irqs(p) {
        take_rare_irqs(p, id);
    }
}

/// Acknowledge and handle the interrupts the scheduler lives on (kicks,
/// the slice timer, guests' virtual timers, list-register maintenance)
/// until none is pending, or until one of the rest comes, which is
/// returned acknowledged but not ended. Calling nothing, `drain_irqs`
/// needs no stack frame on the path every kick and timer tick takes.
#[inline(always)]
fn take_common_irqs(p: usize) -> Option<u32> {
    loop {
        let id = gic::ack();
        if id >= gic::SPURIOUS {
            return None;
        }
        match id {
            gic::KICK_SGI => {
                // Another pCPU changed one of our vCPUs: look again.
                // SAFETY: we are pCPU `p`.
                unsafe { pcpu_inner(p) }.slice_expired = true;
            }
            26 => {
                set_hyp_timer(None);
                // SAFETY: we are pCPU `p`.
                let inner = unsafe { pcpu_inner(p) };
                inner.slice_expired = true;
                inner.slice_armed = false;
            }
            27 => {
                // SAFETY: we are pCPU `p`.
                let inner = unsafe { pcpu_inner(p) };
                if let Some(v) = inner.loaded {
                    guest::mask_vtimer();
                    if let (Some(d), Some(slot)) = (domain_of(v), vcpu(v)) {
                        d.vgic
                            .lock()
                            .inject(slot.index.load(Ordering::Relaxed), platform::VTIMER_INTID);
                        slot.irq_hint.store(true, Ordering::Release);
                    }
                }
            }
            // Only to leave the guest: its list registers are refilled on
            // the way back in.
            gic::MAINTENANCE_INTID => {}
            _ => return Some(id),
        }
        gic::eoi(id);
    }
}

/// The counter when the kernel was entered (QEMU's counter starts at 0 at
/// power-on).
static KERNEL_ENTRY_TICKS: AtomicU64 = AtomicU64::new(0);

/// Log that a domain's vCPU 0 is about to run its first instruction, and
/// when: counter ticks since kernel entry. Under `-icount shift=4` a tick of
/// QEMU's 62.5 MHz counter is one instruction, so this is the boot cost
/// `cargo xtask bench` reports as `boot_all`.
#[cold]
fn log_first_entry(v: usize) {
    let Some(d) = domain_of(v) else { return };
    let ticks = arch::counter().saturating_sub(KERNEL_ENTRY_TICKS.load(Ordering::Relaxed));
    let us = ticks.saturating_mul(1_000_000) / arch::counter_freq().max(1);
    log!(
        "d{} {}: first instruction {} ticks after kernel entry ({}.{:03} ms)",
        d.id,
        d.name,
        ticks,
        us / 1000,
        us % 1000
    );
}

/// The rest, starting with `id` (acknowledged): the console's receive
/// interrupt, or one nobody enabled (ended and ignored); then whatever
/// else is pending.
#[cold]
#[inline(never)]
fn take_rare_irqs(p: usize, mut id: u32) {
    loop {
        console::other_interrupt(id);
        gic::eoi(id);
        match take_common_irqs(p) {
            Some(next) => id = next,
            None => return,
        }
    }
}

/// Make `next` the running vCPU on `p`: switch EL1 state if it is not the
/// one loaded, fill its list registers, and arm the slice timer if others
/// wait. Returns its frame for the exit path.
fn switch_to(p: usize, next: usize) -> &'static mut VcpuFrame {
    // SAFETY: we are pCPU `p`.
    let inner = unsafe { pcpu_inner(p) };
    if inner.loaded != Some(next) {
        if let Some(old) = inner.loaded {
            // SAFETY: owner pCPU.
            let (of, oo) = unsafe { owned(old) };
            if !oo.timer_in_hw {
                // Already stashed; `save` must not overwrite it with zeros.
                let t = core::mem::take(&mut of.timer);
                guest::save(of, oo.lr_used != 0);
                of.timer = t;
            } else {
                guest::save(of, oo.lr_used != 0);
            }
            oo.timer_in_hw = false;
        }
        // SAFETY: owner pCPU.
        let (nf, no) = unsafe { owned(next) };
        let di = vcpu(next).map(|s| s.domain.load(Ordering::Relaxed));
        if inner.stage2_of != di {
            if let Some(d) = domain_of(next) {
                guest::load_stage2(d.s2_root, d.id);
            }
            inner.stage2_of = di;
        }
        guest::restore(nf, no.lr_used != 0);
        no.timer_in_hw = true;
        inner.loaded = Some(next);
        if no.first_entry {
            no.first_entry = false;
            log_first_entry(next);
        }
    } else {
        // SAFETY: owner pCPU.
        let (nf, no) = unsafe { owned(next) };
        if !no.timer_in_hw {
            guest::restore_timer(&nf.timer);
            no.timer_in_hw = true;
        }
    }
    let want_trap = inner.fp_owner != Some(next);
    if want_trap != inner.fp_trapped {
        guest::trap_fp(want_trap);
        inner.fp_trapped = want_trap;
    }
    inner.slice_expired = false;
    // A pCPU with several vCPUs keeps a periodic slice timer; one that
    // expired (or was used to wake from idle) is re-armed here.
    if inner.runq.len() > 1 && !inner.slice_armed {
        set_hyp_timer(Some(arch::counter() + SLICE_TICKS.load(Ordering::Relaxed)));
        inner.slice_armed = true;
    }
    flush_lrs(next);
    // SAFETY: owner pCPU.
    unsafe { owned(next) }.0
}

/// The running vCPU `v` touched FP/SIMD: move the registers over to it.
pub fn take_fp(p: usize, v: usize) {
    // SAFETY: we are pCPU `p`, the owner of `v` and of any previous FP owner.
    let inner = unsafe { pcpu_inner(p) };
    guest::trap_fp(false);
    inner.fp_trapped = false;
    if inner.fp_owner == Some(v) {
        return;
    }
    if let Some(old) = inner.fp_owner {
        // SAFETY: `old` lives on this pCPU.
        guest::save_fp(&mut unsafe { owned(old) }.0.fp);
    }
    // SAFETY: owner pCPU.
    guest::restore_fp(&unsafe { owned(v) }.0.fp);
    inner.fp_owner = Some(v);
}

/// Retire list registers the guest has finished with and fill free ones
/// from the virtual GIC. Cheap when nothing is in flight or pending.
#[inline(always)]
pub fn flush_lrs(v: usize) {
    let Some(slot) = vcpu(v) else { return };
    // SAFETY: called by the owner pCPU with `v` loaded.
    let (_, own) = unsafe { owned(v) };
    if own.lr_used == 0 && !slot.irq_hint.load(Ordering::Acquire) {
        return;
    }
    fill_lrs(v, slot, own);
}

#[inline(never)]
fn fill_lrs(v: usize, slot: &Vcpu, own: &mut OwnerState) {
    let empty = gic::empty_lrs();
    let retired = (0..gic::NR_LRS)
        .filter(|&n| own.lr_used & (1 << n) != 0 && empty & (1 << n) != 0)
        .fold(0u8, |m, n| m | 1 << n);
    // Nothing was made pending since the last fill (every such change sets
    // the hint) and the guest gave no list register back: the model and the
    // list registers are as that fill left them.
    if retired == 0 && !slot.irq_hint.load(Ordering::Acquire) {
        return;
    }
    let Some(d) = domain_of(v) else { return };
    let idx = slot.index.load(Ordering::Relaxed);
    let mut vgic = d.vgic.lock();
    slot.irq_hint.store(false, Ordering::Release);
    for n in 0..gic::NR_LRS {
        if retired & (1 << n) != 0 {
            vgic.lr_retired(idx, own.lr_intid[n]);
        }
    }
    own.lr_used &= !retired;
    // An interrupt triggered again while still in a register (the virtual
    // timer firing before the guest deactivated its last tick) goes into
    // that register, so the guest's deactivation delivers it without a trap.
    for n in 0..gic::NR_LRS {
        if own.lr_used & (1 << n) != 0 {
            if let Some(lr) = vgic.fold_retrigger(idx, own.lr_intid[n], || gic::read_lr(n)) {
                gic::write_lr(n, lr);
            }
        }
    }
    // Fill the free list registers. Only when they run out before the model
    // does can something deliverable be left for an underflow interrupt.
    let mut drained = false;
    for n in 0..gic::NR_LRS {
        let bit = 1u8 << n;
        if own.lr_used & bit != 0 {
            continue;
        }
        let Some((intid, prio)) = vgic.next_deliverable(idx) else {
            drained = true;
            break;
        };
        gic::write_lr(n, Vgic::lr_value(intid, prio));
        vgic.mark_in_lr(idx, intid);
        own.lr_used |= bit;
        own.lr_intid[n] = intid;
    }
    own.undelivered = !drained && vgic.has_deliverable(idx);
    gic::set_underflow_irq(own.undelivered);
}
