//! Generates the device tree a domain receives in x0.
//!
//! The one idea: the guest sees QEMU `virt`'s platform (the addresses in
//! `tessera_ipc::platform`), described the way QEMU describes it, so an
//! unmodified arm64 Linux or a binary built for `virt` boots unchanged. Only
//! RAM, the vCPU count, the command line, the initrd and the optional PL011
//! vary per domain.
//!
//! A domain with Xen PV interfaces (`xen,enhanced`) also gets the nodes Xen
//! writes for a dom0less guest (`build_guest_dt_with`): `/hypervisor`, which
//! Linux's `fdt_find_hyper_node`/`xen_dt_guest_init` look for, and one
//! `/reserved-memory/xen-shmem@<ipa>` per static shared-memory region
//! (Xen's `make_resv_memory_node`; the region is also listed in `/memory`,
//! as Xen does, so the guest maps it as normal memory it must not allocate).

use core::fmt::Write;

use tessera_ipc::platform::{
    vcpu_mpidr, EVTCHN_UPCALL_INTID, EXT_REGION_BASE, EXT_REGION_SIZE, GICD_BASE, GICD_SIZE,
    GICR_BASE, GICR_STRIDE, GNTTAB_BASE, GNTTAB_SIZE, MAGIC_BASE, MAGIC_SIZE, MAX_VCPUS_PER_DOMAIN,
    PL011_BASE, PL011_SIZE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_INTID_BASE, VIRTIO_MMIO_STRIDE,
    VTIMER_INTID,
};

use crate::config::{VirtioKind, MAX_VIRTIO};
use crate::fdt_writer::{DtWriteError, FdtWriter};

/// What varies between domains' device trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestDtParams<'a> {
    /// Guest RAM, as IPAs.
    pub ram_base: u64,
    pub ram_size: u64,
    /// 1..=`MAX_VCPUS_PER_DOMAIN`.
    pub vcpus: u32,
    pub bootargs: &'a str,
    /// The initrd's IPA range, start and end (exclusive).
    pub initrd: Option<(u64, u64)>,
    /// Whether to describe the emulated PL011 (and make it the console).
    pub vpl011: bool,
    /// How many virtio-mmio slots to describe, from `VIRTIO_MMIO_BASE`.
    pub virtio_slots: u32,
}

/// Xen nodes a domain's DT may carry besides the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenGuestNodes<'a> {
    /// Emit `/hypervisor` (the domain has `xen,enhanced`).
    pub hypervisor: bool,
    /// The static shared-memory regions the domain maps, at most
    /// `config::MAX_SHM`.
    pub shm: &'a [GuestShm<'a>],
    /// For a device model: the domains it serves (Tessera's
    /// `/tessera-ioreq` node).
    pub served: &'a [ServedDomain<'a>],
}

impl XenGuestNodes<'static> {
    /// No Xen nodes: the plain `virt` platform.
    pub const NONE: Self = Self {
        hypervisor: false,
        shm: &[],
        served: &[],
    };
}

/// One domain a device model serves, as its DT describes it: everything
/// the device model needs to register and emulate that domain's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedDomain<'a> {
    pub domid: u16,
    pub name: &'a str,
    pub vcpus: u32,
    pub ram_size: u64,
    pub vpl011: bool,
    /// `tessera,virtio`, in slot order.
    pub virtio: &'a [VirtioKind],
}

/// One static shared-memory region as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestShm<'a> {
    /// `xen,shm-id`; becomes the node's `xen,id`.
    pub id: &'a str,
    pub guest_base: u64,
    pub size: u64,
}

/// The `/hypervisor` node's `compatible`: Xen writes
/// `"xen,xen-<major>.<minor>", "xen,xen"`; Linux only logs the version.
pub const XEN_COMPATIBLE: [&str; 2] = ["xen,xen-4.17", "xen,xen"];

/// Phandle of the GIC, the root's `interrupt-parent`.
const GIC_PHANDLE: u32 = 1;
/// Phandle of the PL011's fixed 24 MHz clock.
const APB_CLOCK_PHANDLE: u32 = 2;
/// The PL011's reference clock, as QEMU `virt` describes it.
const APB_CLOCK_HZ: u32 = 24_000_000;

/// `interrupts` type cells (Linux binding `arm,gic-v3`).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// Level-high trigger. On GICv3 the PPI CPU-mask bits of the flags cell are
/// not used (QEMU sets them only for GICv2), so the flags are just this.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// PPIs are numbered from INTID 16 in the DT.
const PPI_INTID_BASE: u32 = 16;
/// Timer PPIs other than the virtual timer, as INTIDs: the Arm Base System
/// Architecture's recommended assignment, which QEMU `virt` uses.
const SECURE_PHYS_TIMER_INTID: u32 = 29;
const NONSECURE_PHYS_TIMER_INTID: u32 = 30;
const HYP_TIMER_INTID: u32 = 26;
/// The PL011's SPI number (INTID 33), as on QEMU `virt` (`VIRT_UART`).
const PL011_SPI: u32 = tessera_ipc::platform::PL011_INTID - 32;
/// MPIDR_EL1 Aff2..Aff0: what a cpu node's one-cell `reg` holds.
const MPIDR_AFFINITY_MASK: u64 = 0x00ff_ffff;
/// Rising-edge trigger, as QEMU `virt` gives virtio-mmio.
const IRQ_TYPE_EDGE_RISING: u32 = 1;
/// Level-low trigger, Xen's choice for the event-channel upcall.
const IRQ_TYPE_LEVEL_LOW: u32 = 8;
/// The PPI CPU mask Xen writes for the upcall (bits 15:8 of the flags cell,
/// "all CPUs"); ignored on GICv3, kept for byte-compatibility with Xen.
const XEN_UPCALL_CPU_MASK: u32 = 0xf;
/// Most shared-memory regions one guest DT describes (`config::MAX_SHM`).
const MAX_GUEST_SHM: usize = crate::config::MAX_SHM;
/// Xen writes `xen,offset` as 0: the borrower maps the whole region.
const XEN_SHM_OFFSET: u64 = 0;

/// Writes the guest DT for `p` into `out` and returns its size.
pub fn build_guest_dt(p: &GuestDtParams, out: &mut [u8]) -> Result<usize, DtWriteError> {
    build_guest_dt_with(p, &XenGuestNodes::NONE, out)
}

/// Writes the guest DT for `p`, with the Xen nodes `xen` asks for, into
/// `out` and returns its size.
pub fn build_guest_dt_with(
    p: &GuestDtParams,
    xen: &XenGuestNodes,
    out: &mut [u8],
) -> Result<usize, DtWriteError> {
    if p.vcpus == 0 || p.vcpus as usize > MAX_VCPUS_PER_DOMAIN {
        return Err(DtWriteError::InvalidParameter("vcpus"));
    }
    if p.ram_size == 0 || p.ram_base.checked_add(p.ram_size).is_none() {
        return Err(DtWriteError::InvalidParameter("ram"));
    }
    if p.initrd.is_some_and(|(start, end)| end < start) {
        return Err(DtWriteError::InvalidParameter("initrd"));
    }
    check_shm(p, xen.shm)?;

    let mut w = FdtWriter::new(out)?;
    w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", "linux,dummy-virt")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    write_chosen(&mut w, p)?;

    write_memory(&mut w, p, xen.shm)?;
    if !xen.shm.is_empty() {
        write_reserved_memory(&mut w, xen.shm)?;
    }

    write_cpus(&mut w, p.vcpus)?;

    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    w.property_string("method", "hvc")?;
    w.end_node()?;

    w.begin_node(&unit_name("intc", GICD_BASE)?)?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    // No child bus; dtc warns about interrupt providers without it.
    w.property_u32("#address-cells", 0)?;
    w.property_empty("interrupt-controller")?;
    w.property_u32("#redistributor-regions", 1)?;
    let gicr_size = u64::from(p.vcpus) * GICR_STRIDE;
    w.property_u64s("reg", &[GICD_BASE, GICD_SIZE, GICR_BASE, gicr_size])?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;

    w.begin_node("timer")?;
    w.property_strings("compatible", &["arm,armv8-timer", "arm,armv7-timer"])?;
    let ppi = |intid: u32| [GIC_PPI, intid - PPI_INTID_BASE, IRQ_TYPE_LEVEL_HIGH];
    let [s0, s1, s2] = ppi(SECURE_PHYS_TIMER_INTID);
    let [p0, p1, p2] = ppi(NONSECURE_PHYS_TIMER_INTID);
    let [v0, v1, v2] = ppi(VTIMER_INTID);
    let [h0, h1, h2] = ppi(HYP_TIMER_INTID);
    w.property_cells(
        "interrupts",
        &[s0, s1, s2, p0, p1, p2, v0, v1, v2, h0, h1, h2],
    )?;
    w.property_empty("always-on")?;
    w.end_node()?;

    if p.vpl011 {
        write_pl011(&mut w)?;
    }
    for n in 0..p.virtio_slots {
        write_virtio_mmio(&mut w, n)?;
    }

    if xen.hypervisor {
        write_hypervisor(&mut w)?;
    }
    if !xen.served.is_empty() {
        write_served(&mut w, xen.served)?;
    }

    w.end_node()?;
    w.finish()
}

/// Each region is whole pages, does not wrap, and stays clear of RAM, the
/// Xen windows and the other regions (the config parser proves more; this
/// keeps the generator honest on its own).
fn check_shm(p: &GuestDtParams, shm: &[GuestShm]) -> Result<(), DtWriteError> {
    const PAGE: u64 = 4096;
    let bad = DtWriteError::InvalidParameter("shm");
    if shm.len() > MAX_GUEST_SHM {
        return Err(bad);
    }
    let overlaps = |a: u64, a_size: u64, b: u64, b_size: u64| {
        a < b.saturating_add(b_size) && b < a.saturating_add(a_size)
    };
    let fixed = [
        (p.ram_base, p.ram_size),
        (GNTTAB_BASE, GNTTAB_SIZE),
        (MAGIC_BASE, MAGIC_SIZE),
        (EXT_REGION_BASE, EXT_REGION_SIZE),
    ];
    for (i, s) in shm.iter().enumerate() {
        let well_formed = s.size != 0
            && s.guest_base.is_multiple_of(PAGE)
            && s.size.is_multiple_of(PAGE)
            && s.guest_base.checked_add(s.size).is_some()
            && !s.id.is_empty();
        let clash = fixed
            .iter()
            .any(|(base, size)| overlaps(s.guest_base, s.size, *base, *size))
            || shm
                .iter()
                .take(i)
                .any(|o| overlaps(s.guest_base, s.size, o.guest_base, o.size));
        if !well_formed || clash {
            return Err(bad);
        }
    }
    Ok(())
}

/// `/memory`: guest RAM, then each shared-memory region (Xen lists static
/// shared memory here too; `/reserved-memory` keeps the allocator off it).
fn write_memory(
    w: &mut FdtWriter,
    p: &GuestDtParams,
    shm: &[GuestShm],
) -> Result<(), DtWriteError> {
    let mut reg = [0u64; 2 * (1 + MAX_GUEST_SHM)];
    let mut len = 0;
    let ranges = core::iter::once((p.ram_base, p.ram_size))
        .chain(shm.iter().map(|s| (s.guest_base, s.size)));
    for (base, size) in ranges {
        let slot = reg
            .get_mut(len..len + 2)
            .ok_or(DtWriteError::InvalidParameter("shm"))?;
        slot.copy_from_slice(&[base, size]);
        len += 2;
    }
    let reg = reg
        .get(..len)
        .ok_or(DtWriteError::InvalidParameter("shm"))?;
    w.begin_node(&unit_name("memory", p.ram_base)?)?;
    w.property_string("device_type", "memory")?;
    w.property_u64s("reg", reg)?;
    w.end_node()
}

/// `/reserved-memory` with one `xen-shmem@<ipa>` child per region, as Xen's
/// `make_resv_memory_node`/`make_shm_resv_memory_node` write it (Linux
/// binding `reserved-memory/xen,shared-memory.txt`).
fn write_reserved_memory(w: &mut FdtWriter, shm: &[GuestShm]) -> Result<(), DtWriteError> {
    w.begin_node("reserved-memory")?;
    w.property_empty("ranges")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    for s in shm {
        w.begin_node(&unit_name("xen-shmem", s.guest_base)?)?;
        w.property_string("compatible", "xen,shared-memory-v1")?;
        w.property_u64s("reg", &[s.guest_base, s.size])?;
        w.property_string("xen,id", s.id)?;
        w.property_u64("xen,offset", XEN_SHM_OFFSET)?;
        w.end_node()?;
    }
    w.end_node()
}

/// `/hypervisor`, as Xen's `make_hypervisor_node` writes it for a domU:
/// `reg[0]` the grant-table window, `reg[1]` the extended region, and the
/// event-channel upcall PPI, level-low, with the GIC as interrupt parent.
fn write_hypervisor(w: &mut FdtWriter) -> Result<(), DtWriteError> {
    w.begin_node("hypervisor")?;
    w.property_strings("compatible", &XEN_COMPATIBLE)?;
    w.property_u64s(
        "reg",
        &[GNTTAB_BASE, GNTTAB_SIZE, EXT_REGION_BASE, EXT_REGION_SIZE],
    )?;
    w.property_cells(
        "interrupts",
        &[
            GIC_PPI,
            EVTCHN_UPCALL_INTID - PPI_INTID_BASE,
            (XEN_UPCALL_CPU_MASK << 8) | IRQ_TYPE_LEVEL_LOW,
        ],
    )?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    w.end_node()
}

fn write_chosen(w: &mut FdtWriter, p: &GuestDtParams) -> Result<(), DtWriteError> {
    w.begin_node("chosen")?;
    w.property_string("bootargs", p.bootargs)?;
    if p.vpl011 {
        let mut path = heapless::String::<32>::new();
        path.push('/')
            .map_err(|_| DtWriteError::InvalidParameter("stdout-path"))?;
        path.push_str(&unit_name("pl011", PL011_BASE)?)
            .map_err(|_| DtWriteError::InvalidParameter("stdout-path"))?;
        w.property_string("stdout-path", &path)?;
    }
    if let Some((start, end)) = p.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node()
}

fn write_cpus(w: &mut FdtWriter, vcpus: u32) -> Result<(), DtWriteError> {
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for n in 0..vcpus {
        let reg = vcpu_mpidr(n) & MPIDR_AFFINITY_MASK;
        w.begin_node(&unit_name("cpu", reg)?)?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        // The mask keeps 24 bits, so this cannot truncate.
        w.property_u32("reg", reg as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node()?;
    }
    w.end_node()
}

fn write_pl011(w: &mut FdtWriter) -> Result<(), DtWriteError> {
    w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", APB_CLOCK_PHANDLE)?;
    w.end_node()?;

    w.begin_node(&unit_name("pl011", PL011_BASE)?)?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    w.property_u64s("reg", &[PL011_BASE, PL011_SIZE])?;
    w.property_cells("interrupts", &[GIC_SPI, PL011_SPI, IRQ_TYPE_LEVEL_HIGH])?;
    w.property_cells("clocks", &[APB_CLOCK_PHANDLE, APB_CLOCK_PHANDLE])?;
    w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end_node()
}

/// A virtio-mmio slot as QEMU `virt` describes it (edge-triggered SPI,
/// coherent DMA).
fn write_virtio_mmio(w: &mut FdtWriter, n: u32) -> Result<(), DtWriteError> {
    let base = VIRTIO_MMIO_BASE + u64::from(n) * VIRTIO_MMIO_STRIDE;
    w.begin_node(&unit_name("virtio_mmio", base)?)?;
    w.property_string("compatible", "virtio,mmio")?;
    w.property_u64s("reg", &[base, VIRTIO_MMIO_STRIDE])?;
    w.property_cells(
        "interrupts",
        &[
            GIC_SPI,
            VIRTIO_MMIO_INTID_BASE - 32 + n,
            IRQ_TYPE_EDGE_RISING,
        ],
    )?;
    w.property_empty("dma-coherent")?;
    w.end_node()
}

/// `/tessera-ioreq`: one `domain@<id>` node per served domain.
fn write_served(w: &mut FdtWriter, served: &[ServedDomain]) -> Result<(), DtWriteError> {
    w.begin_node("tessera-ioreq")?;
    for d in served {
        w.begin_node(&unit_name("domain", u64::from(d.domid))?)?;
        w.property_u32("tessera,domid", u32::from(d.domid))?;
        w.property_string("tessera,name", d.name)?;
        w.property_u32("tessera,vcpus", d.vcpus)?;
        w.property_u64("tessera,ram-size", d.ram_size)?;
        if d.vpl011 {
            w.property_empty("tessera,vpl011")?;
        }
        if !d.virtio.is_empty() {
            let names: heapless::Vec<&str, MAX_VIRTIO> =
                d.virtio.iter().map(|k| k.name()).take(MAX_VIRTIO).collect();
            w.property_strings("tessera,virtio", &names)?;
        }
        w.end_node()?;
    }
    w.end_node()
}

/// `name@<hex address>`, the devicetree convention for unit names.
fn unit_name(name: &str, address: u64) -> Result<heapless::String<32>, DtWriteError> {
    let mut s = heapless::String::new();
    write!(s, "{name}@{address:x}").map_err(|_| DtWriteError::InvalidParameter("node name"))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtb;

    fn params() -> GuestDtParams<'static> {
        GuestDtParams {
            ram_base: tessera_ipc::platform::RAM_BASE,
            ram_size: 256 << 20,
            vcpus: 2,
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some((0x4800_0000, 0x4880_0000)),
            vpl011: true,
            virtio_slots: 2,
        }
    }

    fn build(p: &GuestDtParams) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = build_guest_dt(p, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn cells(v: &[u8]) -> Vec<u32> {
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(v: &[u8]) -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn describes_the_virt_platform() {
        let blob = build(&params());
        // Our own checker accepts it (properties before subnodes, no NOPs...).
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let root = fdt.find_node("/").unwrap();
        assert_eq!(root.compatible().unwrap().first(), "linux,dummy-virt");
        assert_eq!(root.cell_sizes().address_cells, 2);
        assert_eq!(root.cell_sizes().size_cells, 2);
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert_eq!(
            root.property("interrupt-parent").unwrap().value,
            gic.property("phandle").unwrap().value
        );

        let mem = fdt.find_node("/memory@40000000").unwrap();
        assert_eq!(
            u64s(mem.property("reg").unwrap().value),
            [0x4000_0000, 256 << 20]
        );
        assert_eq!(
            mem.property("device_type").unwrap().as_str(),
            Some("memory")
        );

        let cpus: Vec<_> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(cpus, [0, 1]);
        for cpu in fdt.find_node("/cpus").unwrap().children() {
            assert_eq!(
                cpu.property("enable-method").unwrap().as_str(),
                Some("psci")
            );
            assert_eq!(cpu.property("device_type").unwrap().as_str(), Some("cpu"));
        }

        let psci = fdt.find_node("/psci").unwrap();
        assert_eq!(psci.property("method").unwrap().as_str(), Some("hvc"));
        assert!(psci
            .compatible()
            .unwrap()
            .all()
            .any(|c| c == "arm,psci-0.2"));

        assert_eq!(gic.compatible().unwrap().first(), "arm,gic-v3");
        assert_eq!(gic.interrupt_cells(), Some(3));
        assert!(gic.property("interrupt-controller").is_some());
        assert_eq!(
            u64s(gic.property("reg").unwrap().value),
            [GICD_BASE, GICD_SIZE, GICR_BASE, 2 * GICR_STRIDE]
        );

        let timer = fdt.find_node("/timer").unwrap();
        assert_eq!(
            cells(timer.property("interrupts").unwrap().value),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert!(timer.property("always-on").is_some());

        let chosen = fdt.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyAMA0 earlycon"));
        let uart = chosen.stdout().unwrap();
        assert_eq!(uart.name, "pl011@9000000");
        assert_eq!(
            u64s(uart.property("reg").unwrap().value),
            [PL011_BASE, PL011_SIZE]
        );
        assert_eq!(cells(uart.property("interrupts").unwrap().value), [0, 1, 4]);
        let clock = fdt.find_node("/apb-pclk").unwrap();
        assert_eq!(
            cells(uart.property("clocks").unwrap().value),
            [APB_CLOCK_PHANDLE; 2]
        );
        assert_eq!(
            cells(clock.property("phandle").unwrap().value),
            [APB_CLOCK_PHANDLE]
        );
        assert_eq!(
            cells(clock.property("clock-frequency").unwrap().value),
            [24_000_000]
        );
        let n = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            n.property("linux,initrd-start").unwrap().as_usize(),
            Some(0x4800_0000)
        );
        assert_eq!(
            n.property("linux,initrd-end").unwrap().as_usize(),
            Some(0x4880_0000)
        );
    }

    #[test]
    fn optional_parts_are_left_out() {
        let mut p = params();
        p.vpl011 = false;
        p.initrd = None;
        p.bootargs = "";
        let blob = build(&p);
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/pl011@9000000").is_none());
        assert!(fdt.find_node("/apb-pclk").is_none());
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("stdout-path").is_none());
        assert!(chosen.property("linux,initrd-start").is_none());
        assert_eq!(chosen.property("bootargs").unwrap().value, b"\0");
    }

    #[test]
    fn too_small_buffer_is_an_error() {
        let size = build(&params()).len();
        for len in 0..size {
            let mut buf = vec![0u8; len];
            assert_eq!(
                build_guest_dt(&params(), &mut buf),
                Err(DtWriteError::BufferTooSmall { capacity: len })
            );
        }
    }

    const SHM: [GuestShm<'static>; 2] = [
        GuestShm {
            id: "ring",
            guest_base: 0x1_0000_0000,
            size: 0x2000,
        },
        GuestShm {
            id: "my-shared-mem-1",
            guest_base: 0x6000_0000,
            size: 0x10_0000,
        },
    ];

    fn build_with(p: &GuestDtParams, xen: &XenGuestNodes) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let n = build_guest_dt_with(p, xen, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn full_xen() -> XenGuestNodes<'static> {
        XenGuestNodes {
            hypervisor: true,
            shm: &SHM,
            served: &[],
        }
    }

    #[test]
    fn device_model_nodes() {
        let virtio = [VirtioKind::Console, VirtioKind::Blk];
        let served = [ServedDomain {
            domid: 3,
            name: "linux",
            vcpus: 2,
            ram_size: 256 << 20,
            vpl011: true,
            virtio: &virtio,
        }];
        let xen = XenGuestNodes {
            served: &served,
            ..XenGuestNodes::NONE
        };
        let blob = build_with(&params(), &xen);
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let node = fdt.find_node("/tessera-ioreq/domain@3").unwrap();
        let value = |n: &fdt::node::FdtNode, name| n.property(name).unwrap().value.to_vec();
        assert_eq!(value(&node, "tessera,domid"), 3u32.to_be_bytes());
        assert_eq!(value(&node, "tessera,virtio"), b"console\0blk\0");
        assert!(node.property("tessera,vpl011").is_some());
        let slot1 = fdt.find_node("/virtio_mmio@a000200").unwrap();
        assert_eq!(
            value(&slot1, "interrupts"),
            [0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 1]
        );
        assert!(fdt.find_node("/virtio_mmio@a000400").is_none());
    }

    #[test]
    fn plain_entry_point_is_the_no_xen_case() {
        assert_eq!(
            build(&params()),
            build_with(&params(), &XenGuestNodes::NONE)
        );
        let blob = build(&params());
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/hypervisor").is_none());
        assert!(fdt.find_node("/reserved-memory").is_none());
    }

    /// What Linux's `fdt_find_hyper_node` and `xen_dt_guest_init` need
    /// (reference/xen-pv-abi.md §1.1), checked on the parsed blob.
    #[test]
    fn hypervisor_node_satisfies_linux() {
        let blob = build_with(
            &params(),
            &XenGuestNodes {
                hypervisor: true,
                shm: &[],
                served: &[],
            },
        );
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let root = fdt.find_node("/").unwrap();
        // Depth 1, named exactly "hypervisor" (no unit address).
        let hyp = root
            .children()
            .find(|n| n.name == "hypervisor")
            .expect("a /hypervisor node");
        let compat = hyp.property("compatible").unwrap().value;
        assert!(compat.len() > 11);
        assert!(compat.starts_with(b"xen,xen-"));
        let list: Vec<_> = hyp.compatible().unwrap().all().collect();
        assert_eq!(list, ["xen,xen-4.17", "xen,xen"]);
        assert!(hyp.children().next().is_none(), "no uefi subnode");

        assert_eq!(
            u64s(hyp.property("reg").unwrap().value),
            [GNTTAB_BASE, GNTTAB_SIZE, EXT_REGION_BASE, EXT_REGION_SIZE]
        );
        // <PPI, 31 - 16, CPU mask 0xf | level-low>, as Xen writes it.
        assert_eq!(
            cells(hyp.property("interrupts").unwrap().value),
            [1, 15, 0xf08]
        );
        assert_eq!(15 + PPI_INTID_BASE, EVTCHN_UPCALL_INTID);
        let parent = hyp.interrupt_parent().expect("interrupt parent");
        assert_eq!(parent.name, "intc@8000000");
        assert_eq!(parent.interrupt_cells(), Some(3));
    }

    #[test]
    fn shared_memory_nodes_match_xen() {
        let blob = build_with(&params(), &full_xen());
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/hypervisor").is_some());

        let resv = fdt.find_node("/reserved-memory").unwrap();
        assert_eq!(resv.property("ranges").unwrap().value, b"");
        assert_eq!(resv.cell_sizes().address_cells, 2);
        assert_eq!(resv.cell_sizes().size_cells, 2);
        let nodes: Vec<_> = resv.children().collect();
        assert_eq!(nodes.len(), 2);
        for (node, shm) in nodes.iter().zip(SHM) {
            assert_eq!(node.name, format!("xen-shmem@{:x}", shm.guest_base));
            assert_eq!(
                node.property("compatible").unwrap().as_str(),
                Some("xen,shared-memory-v1")
            );
            assert_eq!(
                u64s(node.property("reg").unwrap().value),
                [shm.guest_base, shm.size]
            );
            assert_eq!(node.property("xen,id").unwrap().as_str(), Some(shm.id));
            assert_eq!(u64s(node.property("xen,offset").unwrap().value), [0]);
        }
        // Xen also lists static shared memory in /memory, after RAM.
        let mem = fdt.find_node("/memory@40000000").unwrap();
        assert_eq!(
            u64s(mem.property("reg").unwrap().value),
            [
                0x4000_0000,
                256 << 20,
                0x1_0000_0000,
                0x2000,
                0x6000_0000,
                0x10_0000
            ]
        );
        // Regions without the hypervisor node are described all the same.
        let blob = build_with(
            &params(),
            &XenGuestNodes {
                hypervisor: false,
                shm: &SHM,
                served: &[],
            },
        );
        dtb::open(&blob).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/hypervisor").is_none());
        assert_eq!(
            fdt.find_node("/reserved-memory")
                .unwrap()
                .children()
                .count(),
            2
        );
    }

    #[test]
    fn xen_build_into_a_small_buffer_is_an_error() {
        let size = build_with(&params(), &full_xen()).len();
        for len in 0..size {
            let mut buf = vec![0u8; len];
            assert_eq!(
                build_guest_dt_with(&params(), &full_xen(), &mut buf),
                Err(DtWriteError::BufferTooSmall { capacity: len })
            );
        }
    }

    #[test]
    fn bad_shared_memory_is_an_error() {
        let mut buf = [0u8; 8192];
        let one = |s: GuestShm| {
            let shm = [s];
            build_guest_dt_with(
                &params(),
                &XenGuestNodes {
                    hypervisor: true,
                    shm: &shm,
                    served: &[],
                },
                &mut [0u8; 8192],
            )
        };
        let good = SHM[0];
        for bad in [
            GuestShm { size: 0, ..good },
            GuestShm {
                size: 0x1800,
                ..good
            },
            GuestShm {
                guest_base: 0x1_0000_0800,
                ..good
            },
            GuestShm {
                guest_base: !0xfff_u64,
                ..good
            },
            GuestShm { id: "", ..good },
            // RAM, the grant-table window, the extended region.
            GuestShm {
                guest_base: 0x4000_0000 + (256 << 20) - 0x1000,
                ..good
            },
            GuestShm {
                guest_base: GNTTAB_BASE,
                ..good
            },
            GuestShm {
                guest_base: EXT_REGION_BASE + 0x1000,
                ..good
            },
            GuestShm {
                guest_base: MAGIC_BASE,
                ..good
            },
        ] {
            assert_eq!(
                one(bad),
                Err(DtWriteError::InvalidParameter("shm")),
                "{bad:?}"
            );
        }
        assert_eq!(
            one(GuestShm { id: "a\0b", ..good }),
            Err(DtWriteError::InvalidName)
        );
        assert!(one(good).is_ok());

        let overlapping = [
            good,
            GuestShm {
                guest_base: good.guest_base + 0x1000,
                ..good
            },
        ];
        let xen = XenGuestNodes {
            hypervisor: false,
            shm: &overlapping,
            served: &[],
        };
        assert_eq!(
            build_guest_dt_with(&params(), &xen, &mut buf),
            Err(DtWriteError::InvalidParameter("shm"))
        );
        let many: Vec<_> = (0..=MAX_GUEST_SHM as u64)
            .map(|i| GuestShm {
                guest_base: good.guest_base + i * 0x1_0000,
                ..good
            })
            .collect();
        let xen = XenGuestNodes {
            hypervisor: false,
            shm: &many,
            served: &[],
        };
        assert_eq!(
            build_guest_dt_with(&params(), &xen, &mut buf),
            Err(DtWriteError::InvalidParameter("shm"))
        );
        let xen = XenGuestNodes {
            hypervisor: false,
            shm: &many[..MAX_GUEST_SHM],
            served: &[],
        };
        assert!(build_guest_dt_with(&params(), &xen, &mut buf).is_ok());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let mut buf = [0u8; 4096];
        for (p, what) in [
            (
                GuestDtParams {
                    vcpus: 0,
                    ..params()
                },
                "vcpus",
            ),
            (
                GuestDtParams {
                    vcpus: 9,
                    ..params()
                },
                "vcpus",
            ),
            (
                GuestDtParams {
                    ram_size: 0,
                    ..params()
                },
                "ram",
            ),
            (
                GuestDtParams {
                    ram_base: u64::MAX,
                    ..params()
                },
                "ram",
            ),
            (
                GuestDtParams {
                    initrd: Some((2, 1)),
                    ..params()
                },
                "initrd",
            ),
            (
                GuestDtParams {
                    bootargs: "a\0b",
                    ..params()
                },
                "",
            ),
        ] {
            let err = build_guest_dt(&p, &mut buf).unwrap_err();
            if what.is_empty() {
                assert_eq!(err, DtWriteError::InvalidName);
            } else {
                assert_eq!(err, DtWriteError::InvalidParameter(what));
            }
        }
    }
}
