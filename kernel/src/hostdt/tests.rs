//! Tests for the host-DT parser: the real QEMU `virt` blob, and negative
//! cases built with `FdtWriter` from a small editable tree (`Tree`).

use super::*;
use tessera_sysdesc::fdt_writer::FdtWriter;

const QEMU_VIRT: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-gicv3-smp2.dtb");

#[test]
fn qemu_virt_gicv3_smp2() {
    let host = parse_host(QEMU_VIRT).unwrap();
    assert_eq!(
        host.gicd,
        MemRange {
            base: 0x0800_0000,
            size: 0x1_0000
        }
    );
    assert_eq!(host.gicr.base, 0x080a_0000);
    assert_eq!(
        host.uart,
        MemRange {
            base: 0x0900_0000,
            size: 0x1000
        }
    );
    // QEMU wires the PL011 to SPI 1.
    assert_eq!(host.uart_irq, Some(33));
    assert_eq!(
        host.memory.as_slice(),
        [MemRange {
            base: 0x4000_0000,
            size: 1 << 30
        }]
    );
    assert!(host.reserved.is_empty());
    assert_eq!(host.psci_conduit, Conduit::Smc);
    assert_eq!(
        host.timer_ppis,
        TimerPpis {
            phys: 30,
            virt: 27,
            hyp: 26
        }
    );
    assert_eq!(host.cpus.as_slice(), [0, 1]);
    assert_eq!(dtb_total_size(QEMU_VIRT), Some(QEMU_VIRT.len()));
}

#[test]
fn corrupting_the_qemu_blob_never_panics() {
    let mut blob = QEMU_VIRT.to_vec();
    let step = 31;
    // The tree itself lives in the first few KiB; the rest is padding.
    let used = 0x2000.min(blob.len());
    for at in (0..used).step_by(step) {
        let saved = blob[at];
        for byte in [0x00, 0x03, 0xff] {
            blob[at] = byte;
            let _ = parse_host(&blob);
        }
        blob[at] = saved;
    }
}

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn strings(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|s| string(s)).collect()
}

/// A small device tree that tests edit by path before writing.
#[derive(Clone)]
struct Tree {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Tree>,
}

impl Tree {
    fn node(name: &str) -> Self {
        Tree {
            name: name.into(),
            props: vec![],
            children: vec![],
        }
    }

    fn prop(mut self, name: &str, value: Vec<u8>) -> Self {
        self.props.retain(|(n, _)| n != name);
        self.props.push((name.into(), value));
        self
    }

    fn child(mut self, child: Tree) -> Self {
        self.children.push(child);
        self
    }

    /// The node at `path` (full node names, `/`-separated, no leading `/`).
    fn at(&mut self, path: &str) -> &mut Tree {
        let mut node = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node
                .children
                .iter_mut()
                .find(|c| c.name == part)
                .unwrap_or_else(|| panic!("no node {part}"));
        }
        node
    }

    fn set(&mut self, path: &str, name: &str, value: Vec<u8>) -> &mut Self {
        let node = self.at(path);
        node.props.retain(|(n, _)| n != name);
        node.props.push((name.into(), value));
        self
    }

    fn unset(&mut self, path: &str, name: &str) -> &mut Self {
        self.at(path).props.retain(|(n, _)| n != name);
        self
    }

    fn remove(&mut self, path: &str) -> &mut Self {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        self.at(parent).children.retain(|c| c.name != name);
        self
    }

    fn write(&self, w: &mut FdtWriter) {
        w.begin_node(&self.name).unwrap();
        for (name, value) in &self.props {
            w.property(name, value).unwrap();
        }
        for c in &self.children {
            c.write(w);
        }
        w.end_node().unwrap();
    }

    fn blob(&self, reservations: &[(u64, u64)]) -> Vec<u8> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        for (base, size) in reservations {
            w.add_reservation(*base, *size).unwrap();
        }
        self.write(&mut w);
        let n = w.finish().unwrap();
        buf.truncate(n);
        buf
    }
}

/// A minimal QEMU-`virt`-like host tree.
fn host_tree() -> Tree {
    let cpu = |n: u32| {
        Tree::node(&format!("cpu@{n}"))
            .prop("device_type", string("cpu"))
            .prop("reg", cells(&[n]))
    };
    Tree::node("")
        .prop("#address-cells", cells(&[2]))
        .prop("#size-cells", cells(&[2]))
        .child(Tree::node("memory@40000000").prop("reg", cells(&[0, 0x4000_0000, 0, 0x4000_0000])))
        .child(
            Tree::node("cpus")
                .prop("#address-cells", cells(&[1]))
                .prop("#size-cells", cells(&[0]))
                .child(Tree::node("cpu-map"))
                .child(cpu(0))
                .child(cpu(1)),
        )
        .child(
            Tree::node("intc@8000000")
                .prop("compatible", string("arm,gic-v3"))
                .prop(
                    "reg",
                    cells(&[0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0xf6_0000]),
                ),
        )
        .child(
            Tree::node("pl011@9000000")
                .prop("compatible", strings(&["arm,pl011", "arm,primecell"]))
                .prop("reg", cells(&[0, 0x0900_0000, 0, 0x1000]))
                .prop("interrupts", cells(&[0, 1, 4])),
        )
        .child(
            Tree::node("psci")
                .prop(
                    "compatible",
                    strings(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
                )
                .prop("method", string("hvc")),
        )
        .child(
            Tree::node("timer")
                .prop(
                    "compatible",
                    strings(&["arm,armv8-timer", "arm,armv7-timer"]),
                )
                .prop(
                    "interrupts",
                    cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]),
                ),
        )
        .child(Tree::node("chosen").prop("stdout-path", string("/pl011@9000000")))
}

fn parse_tree(tree: &Tree) -> Result<HostPlatform, HostDtError> {
    parse_host(&tree.blob(&[]))
}

fn expect_error(tree: &Tree, node: &str, property: Option<&str>, kind: HostDtErrorKind) -> String {
    let err = parse_tree(tree).unwrap_err();
    assert_eq!(err.kind, kind, "{err}");
    assert_eq!(err.node.as_str(), node, "{err}");
    assert_eq!(err.property, property, "{err}");
    err.to_string()
}

#[test]
fn builder_tree_parses() {
    let host = parse_tree(&host_tree()).unwrap();
    assert_eq!(host.psci_conduit, Conduit::Hvc);
    assert_eq!(host.cpus.as_slice(), [0, 1]);
    assert_eq!(host.gicr.size, 0xf6_0000);
}

#[test]
fn reservations_and_extra_memory() {
    let mut t = host_tree();
    let t = t
        .set(
            "memory@40000000",
            "reg",
            cells(&[0, 0x4000_0000, 0, 0x1000_0000, 1, 0, 0, 0x1000_0000]),
        )
        .clone()
        .child(
            Tree::node("memory@200000000")
                .prop("device_type", string("memory"))
                .prop("reg", cells(&[2, 0, 0, 0x100_0000])),
        )
        .child(
            Tree::node("reserved-memory")
                .prop("#address-cells", cells(&[1]))
                .prop("#size-cells", cells(&[1]))
                .child(Tree::node("fw@48000000").prop("reg", cells(&[0x4800_0000, 0x10_0000])))
                .child(Tree::node("pool").prop("size", cells(&[0x1000]))),
        );
    let host = parse_host(&t.blob(&[(0x4100_0000, 0x2000)])).unwrap();
    let ranges: Vec<_> = host.memory.iter().map(|r| (r.base, r.size)).collect();
    assert_eq!(
        ranges,
        [
            (0x4000_0000, 0x1000_0000),
            (0x1_0000_0000, 0x1000_0000),
            (0x2_0000_0000, 0x100_0000)
        ]
    );
    let reserved: Vec<_> = host.reserved.iter().map(|r| (r.base, r.size)).collect();
    assert_eq!(reserved, [(0x4100_0000, 0x2000), (0x4800_0000, 0x10_0000)]);
}

#[test]
fn uart_choice_follows_stdout_path() {
    let second = Tree::node("pl011@9040000")
        .prop("compatible", string("arm,pl011"))
        .prop("reg", cells(&[0, 0x0904_0000, 0, 0x1000]));
    let mut t = host_tree().child(second);
    t.set("chosen", "stdout-path", string("/pl011@9040000:115200n8"));
    assert_eq!(parse_tree(&t).unwrap().uart.base, 0x0904_0000);
    // Through an alias.
    let mut t = t.child(Tree::node("aliases").prop("serial1", string("/pl011@9040000")));
    t.set("chosen", "stdout-path", string("serial1"));
    assert_eq!(parse_tree(&t).unwrap().uart.base, 0x0904_0000);
    // Not a PL011, or dangling: fall back to the first PL011.
    t.set("chosen", "stdout-path", string("/psci"));
    assert_eq!(parse_tree(&t).unwrap().uart.base, 0x0900_0000);
    t.set("chosen", "stdout-path", string("/nowhere"));
    assert_eq!(parse_tree(&t).unwrap().uart.base, 0x0900_0000);
    t.unset("chosen", "stdout-path");
    assert_eq!(parse_tree(&t).unwrap().uart.base, 0x0900_0000);
}

#[test]
fn psci_errors() {
    let mut t = host_tree();
    t.set("psci", "method", string("svc"));
    let text = expect_error(&t, "/psci", Some("method"), HostDtErrorKind::BadPsciMethod);
    assert_eq!(
        text,
        "/psci: property \"method\": expected \"smc\" or \"hvc\""
    );
    t.unset("psci", "method");
    expect_error(&t, "/psci", Some("method"), HostDtErrorKind::BadPsciMethod);
    t.remove("psci");
    expect_error(&t, "/", None, HostDtErrorKind::NoPsci);
}

#[test]
fn memory_errors() {
    let mut t = host_tree();
    t.set("memory@40000000", "reg", cells(&[0, 0x4000_0000, 0]));
    expect_error(
        &t,
        "/memory@40000000",
        Some("reg"),
        HostDtErrorKind::BadReg(RegError::BadLength { len: 12, entry: 16 }),
    );
    t.unset("memory@40000000", "reg");
    expect_error(
        &t,
        "/memory@40000000",
        Some("reg"),
        HostDtErrorKind::MissingReg,
    );
    t.set("memory@40000000", "reg", cells(&[0, 0x4000_0000, 0, 0]));
    expect_error(&t, "/", None, HostDtErrorKind::NoMemory);
    t.remove("memory@40000000");
    expect_error(&t, "/", None, HostDtErrorKind::NoMemory);

    let mut t = host_tree();
    let nine: Vec<u32> = (0..9)
        .flat_map(|i| [0, 0x4000_0000 + i * 0x1000, 0, 0x1000])
        .collect();
    t.set("memory@40000000", "reg", cells(&nine));
    expect_error(
        &t,
        "/memory@40000000",
        Some("reg"),
        HostDtErrorKind::TooManyMemoryRanges,
    );
    let mut t = host_tree();
    t.set("", "#address-cells", cells(&[3]));
    expect_error(
        &t,
        "/memory@40000000",
        Some("reg"),
        HostDtErrorKind::BadReg(RegError::UnsupportedCells(Cells {
            address: 3,
            size: 2,
        })),
    );
}

#[test]
fn reservation_errors() {
    let t = host_tree();
    let nine: Vec<_> = (0..9).map(|i| (0x4800_0000 + i * 0x1000, 0x1000)).collect();
    let err = parse_host(&t.blob(&nine)).unwrap_err();
    assert_eq!(err.kind, HostDtErrorKind::TooManyReservedRanges);
    let t = host_tree().child(
        Tree::node("reserved-memory")
            .prop("#address-cells", cells(&[2]))
            .prop("#size-cells", cells(&[2]))
            .child(Tree::node("fw@0").prop("reg", cells(&[0, 1]))),
    );
    expect_error(
        &t,
        "/reserved-memory/fw@0",
        Some("reg"),
        HostDtErrorKind::BadReg(RegError::BadLength { len: 8, entry: 16 }),
    );
}

#[test]
fn cpu_errors() {
    let mut t = host_tree();
    t.unset("cpus/cpu@1", "reg");
    expect_error(&t, "/cpus/cpu@1", Some("reg"), HostDtErrorKind::MissingReg);
    let mut t = host_tree();
    t.remove("cpus/cpu@0").remove("cpus/cpu@1");
    expect_error(&t, "/cpus", None, HostDtErrorKind::NoCpus);
    let mut t = host_tree();
    t.remove("cpus");
    expect_error(&t, "/", None, HostDtErrorKind::NoCpus);
    let mut t = host_tree();
    for n in 2..9u32 {
        let cpu = Tree::node(&format!("cpu@{n}"))
            .prop("device_type", string("cpu"))
            .prop("reg", cells(&[n]));
        t.at("cpus").children.push(cpu);
    }
    expect_error(&t, "/cpus/cpu@8", None, HostDtErrorKind::TooManyCpus);
}

#[test]
fn gic_errors() {
    let mut t = host_tree();
    t.set("intc@8000000", "reg", cells(&[0, 0x0800_0000, 0, 0x1_0000]));
    expect_error(
        &t,
        "/intc@8000000",
        Some("reg"),
        HostDtErrorKind::GicRegTooShort { entries: 1 },
    );
    t.set("intc@8000000", "compatible", string("arm,cortex-a15-gic"));
    expect_error(&t, "/", None, HostDtErrorKind::NoGic);
}

#[test]
fn uart_errors() {
    let mut t = host_tree();
    t.unset("pl011@9000000", "reg");
    expect_error(
        &t,
        "/pl011@9000000",
        Some("reg"),
        HostDtErrorKind::MissingReg,
    );
    t.remove("pl011@9000000");
    expect_error(&t, "/", None, HostDtErrorKind::NoUart);
}

#[test]
fn uart_interrupt_is_its_first_spi_or_none() {
    let mut t = host_tree();
    assert_eq!(parse_tree(&t).unwrap().uart_irq, Some(33));
    t.set("pl011@9000000", "interrupts", cells(&[0, 7, 4, 0, 8, 4]));
    assert_eq!(parse_tree(&t).unwrap().uart_irq, Some(39));
    t.set("pl011@9000000", "interrupts", cells(&[0, 987, 4]));
    assert_eq!(parse_tree(&t).unwrap().uart_irq, Some(1019));
    // Without a usable SPI the kernel still boots, with no keyboard input.
    for bad in [
        cells(&[1, 5, 4]),   // a PPI
        cells(&[0, 988, 4]), // beyond the SPI range
        cells(&[0, 1]),      // not a triple
        cells(&[0, 1, 4, 0]),
        vec![],
    ] {
        t.set("pl011@9000000", "interrupts", bad.clone());
        assert_eq!(parse_tree(&t).unwrap().uart_irq, None, "{bad:?}");
    }
    t.unset("pl011@9000000", "interrupts");
    let host = parse_tree(&t).unwrap();
    assert_eq!((host.uart.base, host.uart_irq), (0x0900_0000, None));
}

#[test]
fn timer_errors() {
    let mut t = host_tree();
    t.set(
        "timer",
        "interrupts",
        cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4]),
    );
    expect_error(
        &t,
        "/timer",
        Some("interrupts"),
        HostDtErrorKind::BadTimerInterrupts { len: 36 },
    );
    t.set(
        "timer",
        "interrupts",
        cells(&[1, 13, 4, 1, 14, 4, 0, 11, 4, 1, 10, 4]),
    );
    expect_error(
        &t,
        "/timer",
        Some("interrupts"),
        HostDtErrorKind::TimerNotPpi { index: 2 },
    );
    t.set(
        "timer",
        "interrupts",
        cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 16, 4]),
    );
    expect_error(
        &t,
        "/timer",
        Some("interrupts"),
        HostDtErrorKind::TimerNotPpi { index: 3 },
    );
    // A fifth (hypervisor virtual timer) triple is accepted and ignored.
    t.set(
        "timer",
        "interrupts",
        cells(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4, 1, 12, 4]),
    );
    assert_eq!(parse_tree(&t).unwrap().timer_ppis.hyp, 26);
    t.remove("timer");
    expect_error(&t, "/", None, HostDtErrorKind::NoTimer);
}

#[test]
fn malformed_blob_and_header_size() {
    let mut blob = host_tree().blob(&[]);
    assert_eq!(dtb_total_size(&blob[..8]), Some(blob.len()));
    assert_eq!(dtb_total_size(&blob[..7]), None);
    blob[3] ^= 1;
    assert_eq!(dtb_total_size(&blob), None);
    let err = parse_host(&blob).unwrap_err();
    assert!(matches!(
        err.kind,
        HostDtErrorKind::Malformed(DtbFormatError::BadMagic { .. })
    ));
    assert!(err.node.as_str().is_empty());
}

/// Guest DTs read back by the host parser. A guest DT has the same shape as
/// a host DT, so `parse_host` is a second, independent reader of the GIC,
/// UART, CPUs and timer that `tessera_sysdesc::guest_dt` describes.
mod guest_dt_read_back {
    use super::parse_host;
    use tessera_ipc::platform::{
        vcpu_mpidr, GICD_BASE, GICR_STRIDE, PL011_BASE, PL011_INTID, RAM_BASE, VTIMER_INTID,
    };
    use tessera_sysdesc::guest_dt::{build_guest_dt_with, GuestDtParams, GuestShm, XenGuestNodes};

    /// MPIDR_EL1 Aff2..Aff0, what a cpu node's one-cell `reg` holds.
    const MPIDR_AFFINITY_MASK: u64 = 0x00ff_ffff;
    /// The timer PPIs QEMU `virt` gives (Arm BSA), as INTIDs.
    const HYP_TIMER_INTID: u32 = 26;
    const NONSECURE_PHYS_TIMER_INTID: u32 = 30;

    fn params(vcpus: u32) -> GuestDtParams<'static> {
        GuestDtParams {
            ram_base: RAM_BASE,
            ram_size: 256 << 20,
            vcpus,
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some((0x4800_0000, 0x4880_0000)),
            vpl011: true,
            virtio_slots: 2,
        }
    }

    fn build(p: &GuestDtParams, xen: &XenGuestNodes) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let n = build_guest_dt_with(p, xen, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn host_parser_reads_a_guest_dt() {
        let host = parse_host(&build(&params(8), &XenGuestNodes::NONE)).unwrap();
        assert_eq!(host.cpus.len(), 8);
        assert_eq!(host.cpus[7], vcpu_mpidr(7) & MPIDR_AFFINITY_MASK);
        assert_eq!(host.gicd.base, GICD_BASE);
        assert_eq!(host.gicr.size, 8 * GICR_STRIDE);
        assert_eq!(host.uart.base, PL011_BASE);
        assert_eq!(host.uart_irq, Some(PL011_INTID));
        assert_eq!(host.timer_ppis.virt, VTIMER_INTID);
        assert_eq!(host.timer_ppis.hyp, HYP_TIMER_INTID);
        assert_eq!(host.timer_ppis.phys, NONSECURE_PHYS_TIMER_INTID);
    }

    #[test]
    fn host_parser_reads_a_xen_guest_dt() {
        let shm = [
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
        let xen = XenGuestNodes {
            hypervisor: true,
            shm: &shm,
            served: &[],
        };
        let host = parse_host(&build(&params(2), &xen)).unwrap();
        assert_eq!(host.cpus.len(), 2);
        assert_eq!(host.gicd.base, GICD_BASE);
        assert_eq!(host.timer_ppis.virt, VTIMER_INTID);
    }
}
