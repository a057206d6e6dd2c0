//! Tests for the system-description parser. Inputs are built with
//! `FdtWriter` from a `Domain` description that each test bends one way.

use super::*;
use crate::fdt_writer::FdtWriter;

fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[derive(Clone)]
struct Module {
    node: String,
    compatible: Vec<&'static str>,
    props: Vec<(&'static str, Vec<u8>)>,
}

impl Module {
    fn kernel(name: &str) -> Self {
        Module {
            node: "module@0".into(),
            compatible: vec!["multiboot,kernel", "multiboot,module"],
            props: vec![
                ("reg", cells(&[0, 0x1000, 0, 0x1000])),
                (P_MODULE, string(name)),
                (P_BOOTARGS, string("test=psci")),
            ],
        }
    }

    /// A `xen,evtchn-v1` node with `phandle` naming `peer`'s phandle.
    fn evtchn(node: &str, phandle: u32, port: u32, peer: u32) -> Self {
        Module {
            node: node.into(),
            compatible: vec!["xen,evtchn-v1"],
            props: vec![
                ("phandle", cells(&[phandle])),
                ("xen,evtchn", cells(&[port, peer])),
            ],
        }
    }

    /// A `xen,domain-shared-memory-v1` node; `mem` is `xen,shared-mem`.
    fn shm(node: &str, id: &str, role: Option<&str>, mem: Vec<u8>) -> Self {
        let mut props = vec![("xen,shm-id", string(id)), ("xen,shared-mem", mem)];
        if let Some(role) = role {
            props.push(("role", string(role)));
        }
        Module {
            node: node.into(),
            compatible: vec!["xen,domain-shared-memory-v1"],
            props,
        }
    }

    fn ramdisk(name: &str) -> Self {
        Module {
            node: "module@1".into(),
            compatible: vec!["multiboot,ramdisk", "multiboot,module"],
            props: vec![(P_MODULE, string(name))],
        }
    }

    fn set(mut self, name: &'static str, value: Vec<u8>) -> Self {
        self.props.retain(|(n, _)| *n != name);
        self.props.push((name, value));
        self
    }

    fn unset(mut self, name: &str) -> Self {
        self.props.retain(|(n, _)| *n != name);
        self
    }
}

#[derive(Clone)]
struct Domain {
    node: String,
    props: Vec<(&'static str, Vec<u8>)>,
    modules: Vec<Module>,
    /// Further children: event channels, shared memory.
    links: Vec<Module>,
}

impl Domain {
    /// A valid domain: 128 MiB, 2 vCPUs, a kernel module.
    fn new(node: &str) -> Self {
        Domain {
            node: node.into(),
            props: vec![(P_MEMORY, cells(&[0, 128 * 1024])), (P_CPUS, cells(&[2]))],
            modules: vec![Module::kernel("testguest")],
            links: vec![],
        }
    }

    fn link(mut self, child: Module) -> Self {
        self.links.push(child);
        self
    }

    fn set(mut self, name: &'static str, value: Vec<u8>) -> Self {
        self.props.retain(|(n, _)| *n != name);
        self.props.push((name, value));
        self
    }

    fn unset(mut self, name: &str) -> Self {
        self.props.retain(|(n, _)| *n != name);
        self
    }

    fn modules(mut self, modules: Vec<Module>) -> Self {
        self.modules = modules;
        self
    }

    fn static_mem(self, base: u64, size: u64) -> Self {
        let v = [base, size].iter().flat_map(|x| x.to_be_bytes()).collect();
        self.set(P_STATIC_MEM, v)
    }

    fn write(&self, w: &mut FdtWriter) {
        w.begin_node(&self.node).unwrap();
        w.property_strings("compatible", &["xen,domain"]).unwrap();
        for (name, value) in &self.props {
            w.property(name, value).unwrap();
        }
        for m in self.modules.iter().chain(&self.links) {
            w.begin_node(&m.node).unwrap();
            w.property_strings("compatible", &m.compatible).unwrap();
            for (name, value) in &m.props {
                w.property(name, value).unwrap();
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
    }
}

fn system(domains: &[Domain]) -> Vec<u8> {
    system_with(&[], domains)
}

/// A system whose `/chosen` also carries `chosen_props`.
fn system_with(chosen_props: &[(&str, Vec<u8>)], domains: &[Domain]) -> Vec<u8> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    w.begin_node("chosen").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    for (name, value) in chosen_props {
        w.property(name, value).unwrap();
    }
    // Not a domain: ignored.
    w.begin_node("other").unwrap();
    w.property_string("compatible", "vendor,thing").unwrap();
    w.end_node().unwrap();
    for d in domains {
        d.write(&mut w);
    }
    w.end_node().unwrap();
    w.end_node().unwrap();
    let n = w.finish().unwrap();
    buf.truncate(n);
    buf
}

fn parse(domains: &[Domain]) -> Result<SystemConfig, ConfigError> {
    parse_system(&system(domains))
}

/// Parses `domain` alone and expects an error at `node` / `property`.
fn expect_error(
    domain: Domain,
    node: &str,
    property: Option<&str>,
    kind: ConfigErrorKind,
) -> ConfigError {
    expect_system_error(&[domain], node, property, kind)
}

/// Parses `domains` and expects an error at `node` / `property`.
fn expect_system_error(
    domains: &[Domain],
    node: &str,
    property: Option<&str>,
    kind: ConfigErrorKind,
) -> ConfigError {
    let err = parse(domains).unwrap_err();
    assert_eq!(err.kind, kind, "{err}");
    assert_eq!(err.node.as_str(), node, "{err}");
    assert_eq!(err.property, property, "{err}");
    err
}

#[test]
fn parses_a_full_domain() {
    let d = Domain::new("domU1@1")
        .set(P_LABEL, string("system_u:system_r:guest_t"))
        .set(P_VPL011, vec![])
        .set(P_DEVICE_MODEL, string("domU2"))
        .static_mem(0x6000_0000, 128 << 20)
        .modules(vec![Module::kernel("linux"), Module::ramdisk("initrd")]);
    let cfg = parse(&[d, Domain::new("domU2")]).unwrap();
    assert_eq!(cfg.domains.len(), 2);
    let d = &cfg.domains[0];
    assert_eq!(d.name.as_str(), "domU1");
    assert_eq!(d.memory_bytes, 128 << 20);
    assert_eq!(d.vcpus, 2);
    assert_eq!(d.kernel.name.as_str(), "linux");
    assert_eq!(d.ramdisk.as_ref().unwrap().name.as_str(), "initrd");
    assert_eq!(d.bootargs.as_str(), "test=psci");
    assert_eq!(d.security_label.as_str(), "system_u:system_r:guest_t");
    assert_eq!(
        d.static_mem,
        Some(MemRange {
            base: 0x6000_0000,
            size: 128 << 20
        })
    );
    assert!(d.vpl011);
    assert_eq!(d.device_model, Some(1));

    let d = &cfg.domains[1];
    assert_eq!(d.name.as_str(), "domU2");
    assert_eq!(d.security_label.as_str(), DEFAULT_SECURITY_LABEL);
    assert_eq!(d.ramdisk, None);
    assert_eq!(d.static_mem, None);
    assert!(!d.vpl011);

    let names: Vec<_> = cfg.module_names().collect();
    assert_eq!(names, ["linux", "initrd", "testguest"]);
}

#[test]
fn absent_bootargs_are_empty() {
    let d = Domain::new("d").modules(vec![Module::kernel("k").unset(P_BOOTARGS)]);
    assert!(parse(&[d]).unwrap().domains[0].bootargs.is_empty());
}

#[test]
fn static_mem_honours_its_cell_sizes() {
    let d = Domain::new("d")
        .set(P_STATIC_ADDR_CELLS, cells(&[1]))
        .set(P_STATIC_SIZE_CELLS, cells(&[1]))
        .set(P_STATIC_MEM, cells(&[0x6000_0000, 128 << 20]));
    let cfg = parse(&[d]).unwrap();
    assert_eq!(
        cfg.domains[0].static_mem,
        Some(MemRange {
            base: 0x6000_0000,
            size: 128 << 20
        })
    );
}

#[test]
fn error_display_names_node_and_property() {
    let err = expect_error(
        Domain::new("domU1").set(P_CPUS, cells(&[9])),
        "/chosen/domU1",
        Some(P_CPUS),
        ConfigErrorKind::TooManyVcpus { requested: 9 },
    );
    assert_eq!(
        err.to_string(),
        "/chosen/domU1: property \"cpus\": 9 vCPUs requested, at most 8 allowed"
    );
}

#[test]
fn malformed_blob() {
    let mut blob = system(&[Domain::new("d")]);
    blob[0] = 0;
    let err = parse_system(&blob).unwrap_err();
    assert!(matches!(
        err.kind,
        ConfigErrorKind::Malformed(DtbFormatError::BadMagic { .. })
    ));
    assert!(err.to_string().starts_with("malformed device tree"));
    assert!(parse_system(&[]).is_err());
    let blob = system(&[Domain::new("d")]);
    for cut in 0..blob.len() {
        assert!(parse_system(&blob[..cut]).is_err());
    }
}

#[test]
fn no_chosen_and_no_domains() {
    let mut buf = vec![0u8; 256];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.end_node().unwrap();
    let n = w.finish().unwrap();
    assert_eq!(
        parse_system(&buf[..n]).unwrap_err().kind,
        ConfigErrorKind::NoChosen
    );
    let err = parse(&[]).unwrap_err();
    assert_eq!(err.kind, ConfigErrorKind::NoDomains);
    assert_eq!(err.node.as_str(), "/chosen");
}

#[test]
fn domain_count_and_names() {
    let many: Vec<_> = (0..=MAX_DOMAINS)
        .map(|i| Domain::new(&format!("dom{i}")))
        .collect();
    assert!(parse(&many[..MAX_DOMAINS]).is_ok());
    let err = parse(&many).unwrap_err();
    assert_eq!(err.kind, ConfigErrorKind::TooManyDomains);
    assert_eq!(err.node.as_str(), "/chosen/dom16");

    let err = parse(&[Domain::new("domU1@0"), Domain::new("domU1@1")]).unwrap_err();
    assert_eq!(
        err.kind,
        ConfigErrorKind::DuplicateDomainName {
            other: NodePath::new("/chosen/domU1@0")
        }
    );
    assert_eq!(err.node.as_str(), "/chosen/domU1@1");

    let long = "d".repeat(MAX_DOMAIN_NAME + 1);
    let path = format!("/chosen/{long}");
    expect_error(
        Domain::new(&long),
        &path,
        None,
        ConfigErrorKind::NameTooLong { len: 33 },
    );
    assert!(parse(&[Domain::new(&"d".repeat(MAX_DOMAIN_NAME))]).is_ok());
    expect_error(
        Domain::new("@1"),
        "/chosen/@1",
        None,
        ConfigErrorKind::NameEmpty,
    );
}

#[test]
fn memory_errors() {
    let at = "/chosen/d";
    let p = Some(P_MEMORY);
    let d = || Domain::new("d");
    expect_error(d().unset(P_MEMORY), at, p, ConfigErrorKind::MemoryMissing);
    expect_error(
        d().set(P_MEMORY, cells(&[0x1000])),
        at,
        p,
        ConfigErrorKind::MemoryBadLength { len: 4 },
    );
    expect_error(
        d().set(P_MEMORY, cells(&[0, 0])),
        at,
        p,
        ConfigErrorKind::MemoryZero,
    );
    expect_error(
        d().set(P_MEMORY, cells(&[0, 6])),
        at,
        p,
        ConfigErrorKind::MemoryNotPageMultiple { kib: 6 },
    );
    expect_error(
        d().set(P_MEMORY, cells(&[0xffff_ffff, 0xffff_fffc])),
        at,
        p,
        ConfigErrorKind::MemoryTooLarge {
            kib: 0xffff_ffff_ffff_fffc,
        },
    );
}

#[test]
fn vcpu_errors() {
    let at = "/chosen/d";
    let p = Some(P_CPUS);
    let d = || Domain::new("d");
    expect_error(d().unset(P_CPUS), at, p, ConfigErrorKind::VcpusMissing);
    expect_error(
        d().set(P_CPUS, cells(&[0, 1])),
        at,
        p,
        ConfigErrorKind::VcpusBadLength { len: 8 },
    );
    expect_error(
        d().set(P_CPUS, cells(&[0])),
        at,
        p,
        ConfigErrorKind::VcpusZero,
    );
    let max = MAX_VCPUS_PER_DOMAIN as u32;
    assert_eq!(
        parse(&[d().set(P_CPUS, cells(&[max]))]).unwrap().domains[0].vcpus,
        max
    );
}

#[test]
fn module_errors() {
    let d = || Domain::new("d");
    let kernel_at = "/chosen/d/module@0";
    expect_error(
        d().modules(vec![Module::ramdisk("r")]),
        "/chosen/d",
        None,
        ConfigErrorKind::MissingKernel,
    );
    let mut second = Module::kernel("k2");
    second.node = "module@2".into();
    expect_error(
        d().modules(vec![Module::kernel("k"), second]),
        "/chosen/d/module@2",
        Some(P_COMPATIBLE),
        ConfigErrorKind::DuplicateKernel {
            other: NodePath::new(kernel_at),
        },
    );
    let mut second = Module::ramdisk("r2");
    second.node = "module@2".into();
    expect_error(
        d().modules(vec![Module::kernel("k"), Module::ramdisk("r"), second]),
        "/chosen/d/module@2",
        Some(P_COMPATIBLE),
        ConfigErrorKind::DuplicateRamdisk {
            other: NodePath::new("/chosen/d/module@1"),
        },
    );
    let p = Some(P_MODULE);
    let with_kernel = |m: Module| d().modules(vec![m]);
    expect_error(
        with_kernel(Module::kernel("k").unset(P_MODULE).unset(P_REG)),
        kernel_at,
        p,
        ConfigErrorKind::ModuleNameMissing,
    );
    expect_error(
        with_kernel(Module::kernel("k").set(P_MODULE, cells(&[1]))),
        kernel_at,
        p,
        ConfigErrorKind::ModuleNameNotString,
    );
    expect_error(
        with_kernel(Module::kernel("k").set(P_MODULE, b"a\0b\0".to_vec())),
        kernel_at,
        p,
        ConfigErrorKind::ModuleNameNotString,
    );
    expect_error(
        with_kernel(Module::kernel("")),
        kernel_at,
        p,
        ConfigErrorKind::ModuleNameEmpty,
    );
    expect_error(
        with_kernel(Module::kernel(&"m".repeat(MAX_MODULE_NAME + 1))),
        kernel_at,
        p,
        ConfigErrorKind::ModuleNameTooLong { len: 49 },
    );
    expect_error(
        d().modules(vec![
            Module::kernel("k"),
            Module::ramdisk("r").unset(P_MODULE),
        ]),
        "/chosen/d/module@1",
        p,
        ConfigErrorKind::ModuleNameMissing,
    );
}

/// A kernel and a ramdisk named only by `reg`, as ImageBuilder writes them,
/// in a domain node with the given cells.
fn reg_domain(address_cells: u32, size_cells: u32, kernel_reg: &[u32]) -> Domain {
    let reg = |m: Module, v: &[u32]| m.unset(P_MODULE).set(P_REG, cells(v));
    Domain::new("d")
        .set("#address-cells", cells(&[address_cells]))
        .set("#size-cells", cells(&[size_cells]))
        .modules(vec![
            reg(Module::kernel("k"), kernel_reg),
            reg(Module::ramdisk("r"), &[0, 0x4b00_0000, 0, 0x10]),
        ])
}

#[test]
fn a_module_without_tessera_module_is_named_by_its_reg_address() {
    // ImageBuilder: #address-cells = #size-cells = 2.
    let cfg = parse(&[reg_domain(2, 2, &[0x0, 0x4a00_0000, 0x0, 0x00ff_ffff])]).unwrap();
    let d = &cfg.domains[0];
    assert_eq!(d.kernel.name.as_str(), "reg@0x4a000000");
    assert_eq!(d.kernel.load_address(), Some(0x4a00_0000));
    assert_eq!(d.ramdisk.as_ref().unwrap().name.as_str(), "reg@0x4b000000");
    assert_eq!(
        d.bootargs.as_str(),
        "test=psci",
        "bootargs still come from the node"
    );
    // Xen's booting.txt example: two address cells, one size cell.
    let mut two_one = reg_domain(2, 1, &[0x1, 0x4a00_0000, 0x00ff_ffff]);
    two_one.modules.truncate(1);
    let cfg = parse(&[two_one]).unwrap();
    assert_eq!(cfg.domains[0].kernel.load_address(), Some(0x1_4a00_0000));
    let mut one_one = reg_domain(1, 1, &[0x4200_0000, 0x1000]);
    one_one.modules.truncate(1);
    assert_eq!(
        parse(&[one_one]).unwrap().domains[0].kernel.name.as_str(),
        "reg@0x42000000"
    );
    // With both, tessera,module names the module and reg is not read.
    let both = Domain::new("d").modules(vec![Module::kernel("testguest").set(P_REG, cells(&[7]))]);
    let cfg = parse(&[both]).unwrap();
    assert_eq!(cfg.domains[0].kernel.name.as_str(), "testguest");
    assert_eq!(cfg.domains[0].kernel.load_address(), None);
}

#[test]
fn reg_module_errors() {
    let at = "/chosen/d/module@0";
    let p = Some(P_REG);
    let mut bad = reg_domain(2, 2, &[0, 0x4a00_0000, 0x10]);
    bad.modules.truncate(1);
    let e = expect_error(
        bad,
        at,
        p,
        ConfigErrorKind::ModuleRegBadLength {
            len: 12,
            address_cells: 2,
            size_cells: 2,
        },
    );
    assert!(
        e.to_string()
            .contains("expected one <address size> pair of 16 bytes"),
        "{e}"
    );
    // A domain node without cells gets the devicetree defaults (2 and 1).
    let defaults = Domain::new("d").modules(vec![Module::kernel("k").unset(P_MODULE)]);
    expect_error(
        defaults,
        at,
        p,
        ConfigErrorKind::ModuleRegBadLength {
            len: 16,
            address_cells: 2,
            size_cells: 1,
        },
    );
    let mut three = reg_domain(3, 2, &[0, 0, 0x4a00_0000, 0, 0x10]);
    three.modules.truncate(1);
    expect_error(
        three,
        at,
        p,
        ConfigErrorKind::ModuleRegCells {
            address_cells: 3,
            size_cells: 2,
        },
    );
    let mut no_size = reg_domain(1, 0, &[0x4a00_0000]);
    no_size.modules.truncate(1);
    expect_error(
        no_size,
        at,
        p,
        ConfigErrorKind::ModuleRegCells {
            address_cells: 1,
            size_cells: 0,
        },
    );
    let mut empty = reg_domain(2, 2, &[0, 0x4a00_0000, 0, 0]);
    empty.modules.truncate(1);
    let e = expect_error(
        empty,
        at,
        p,
        ConfigErrorKind::ModuleRegEmpty {
            address: 0x4a00_0000,
        },
    );
    assert!(
        e.to_string()
            .contains("the module at 0x4a000000 has size 0"),
        "{e}"
    );
    // Neither name nor reg: the message says both ways.
    let none = Domain::new("d").modules(vec![Module::kernel("k").unset(P_MODULE).unset(P_REG)]);
    let e = expect_error(none, at, Some(P_MODULE), ConfigErrorKind::ModuleNameMissing);
    assert!(e.to_string().contains("modules.map"), "{e}");
}

#[test]
fn only_canonical_reg_names_carry_an_address() {
    assert_eq!(load_address_of("reg@0x0"), Some(0));
    assert_eq!(load_address_of("reg@0xffffffffffffffff"), Some(u64::MAX));
    assert_eq!(
        ModuleSpec::from_load_address(u64::MAX).name.as_str(),
        "reg@0xffffffffffffffff"
    );
    for name in [
        "testguest",
        "reg@0x",
        "reg@0x0042",
        "reg@0xABC",
        "reg@0x1g",
        "reg@0x10000000000000000",
        "reg@42",
        "Reg@0x42",
    ] {
        assert_eq!(load_address_of(name), None, "{name}");
    }
}

#[test]
fn bootargs_errors() {
    let at = "/chosen/d/module@0";
    let p = Some(P_BOOTARGS);
    let with = |v: Vec<u8>| Domain::new("d").modules(vec![Module::kernel("k").set(P_BOOTARGS, v)]);
    expect_error(
        with(b"no terminator".to_vec()),
        at,
        p,
        ConfigErrorKind::BootargsNotString,
    );
    expect_error(
        with(b"\xff\xfe\0".to_vec()),
        at,
        p,
        ConfigErrorKind::BootargsNotString,
    );
    expect_error(
        with(string(&"x".repeat(MAX_BOOTARGS + 1))),
        at,
        p,
        ConfigErrorKind::BootargsTooLong { len: 257 },
    );
    assert!(parse(&[with(string(&"x".repeat(MAX_BOOTARGS)))]).is_ok());
}

#[test]
fn security_label_errors() {
    let at = "/chosen/d";
    let p = Some(P_LABEL);
    let with = |v: Vec<u8>| Domain::new("d").set(P_LABEL, v);
    expect_error(
        with(cells(&[1])),
        at,
        p,
        ConfigErrorKind::SecurityLabelNotString,
    );
    for bad in ["a:b", "a:b:c:d", "a::c", ":b:c", "a:b:", ""] {
        expect_error(
            with(string(bad)),
            at,
            p,
            ConfigErrorKind::SecurityLabelMalformed,
        );
    }
    let long = format!("u:r:{}", "t".repeat(MAX_SECURITY_LABEL));
    expect_error(
        with(string(&long)),
        at,
        p,
        ConfigErrorKind::SecurityLabelTooLong { len: long.len() },
    );
}

#[test]
fn static_mem_errors() {
    let at = "/chosen/d";
    let p = Some(P_STATIC_MEM);
    let d = || Domain::new("d");
    let mib128 = 128 << 20;
    expect_error(
        d().set(P_STATIC_MEM, cells(&[0, 0x6000_0000, 0])),
        at,
        p,
        ConfigErrorKind::StaticMemBadLength {
            len: 12,
            expected: 16,
        },
    );
    expect_error(
        d().static_mem(0x6000_0000, 64 << 20),
        at,
        p,
        ConfigErrorKind::StaticMemSizeMismatch {
            size: 64 << 20,
            memory_bytes: mib128,
        },
    );
    expect_error(
        d().static_mem(0x6000_1000, mib128),
        at,
        p,
        ConfigErrorKind::StaticMemMisaligned {
            base: 0x6000_1000,
            size: mib128,
        },
    );
    // 128 MiB + 4 KiB: a whole number of pages, not of 2 MiB blocks.
    let odd = mib128 + 4096;
    expect_error(
        d().set(P_MEMORY, cells(&[0, (odd / 1024) as u32]))
            .static_mem(0x6000_0000, odd),
        at,
        p,
        ConfigErrorKind::StaticMemMisaligned {
            base: 0x6000_0000,
            size: odd,
        },
    );
    let top = 0xffff_ffff_ffe0_0000;
    expect_error(
        d().static_mem(top, mib128),
        at,
        p,
        ConfigErrorKind::StaticMemOverflow {
            base: top,
            size: mib128,
        },
    );
    for (name, value) in [
        (P_STATIC_ADDR_CELLS, cells(&[3])),
        (P_STATIC_ADDR_CELLS, cells(&[0])),
        (P_STATIC_SIZE_CELLS, cells(&[0, 2])),
    ] {
        expect_error(
            d().set(name, value).static_mem(0x6000_0000, mib128),
            at,
            Some(name),
            ConfigErrorKind::StaticMemCellsInvalid,
        );
    }
}

#[test]
fn overlapping_static_mem_names_both_domains() {
    let mib128 = 128 << 20;
    let a = Domain::new("domU1").static_mem(0x6000_0000, mib128);
    let b = Domain::new("domU2").static_mem(0x6400_0000, mib128);
    let err = parse(&[a.clone(), b]).unwrap_err();
    assert_eq!(
        err.kind,
        ConfigErrorKind::StaticMemOverlap {
            other: NodePath::new("/chosen/domU1")
        }
    );
    assert_eq!(err.node.as_str(), "/chosen/domU2");
    let text = err.to_string();
    assert!(
        text.contains("/chosen/domU1") && text.contains("/chosen/domU2"),
        "{text}"
    );
    // Adjacent ranges are fine.
    let c = Domain::new("domU3").static_mem(0x6800_0000, mib128);
    assert!(parse(&[a, c]).is_ok());
}

// ---------------------------------------------------------------------------
// xen,enhanced and the policy mode

#[test]
fn xen_enhanced_values() {
    let with = |v: Option<Vec<u8>>| {
        let d = Domain::new("d");
        let d = match v {
            Some(v) => d.set(P_XEN_ENHANCED, v),
            None => d,
        };
        let cfg = parse(&[d]).unwrap();
        (cfg.domains[0].xen_enhanced, cfg.domains[0].xenstore)
    };
    assert_eq!(with(None), (false, false));
    assert_eq!(with(Some(vec![])), (true, true));
    assert_eq!(with(Some(string("enabled"))), (true, true));
    assert_eq!(with(Some(string("no-xenstore"))), (true, false));
    assert_eq!(with(Some(string("disabled"))), (false, false));
    for bad in [string("yes"), string(""), b"enabled".to_vec(), cells(&[1])] {
        expect_error(
            Domain::new("d").set(P_XEN_ENHANCED, bad),
            "/chosen/d",
            Some(P_XEN_ENHANCED),
            ConfigErrorKind::XenEnhancedInvalid,
        );
    }
}

#[test]
fn policy_mode() {
    let mode = |v: Option<Vec<u8>>| {
        let props: Vec<_> = v.into_iter().map(|v| (P_POLICY_MODE, v)).collect();
        parse_system(&system_with(&props, &[Domain::new("d")]))
    };
    assert!(mode(None).unwrap().policy_enforcing);
    assert!(mode(Some(string("enforcing"))).unwrap().policy_enforcing);
    assert!(!mode(Some(string("permissive"))).unwrap().policy_enforcing);
    for bad in [string("Enforcing"), string(""), vec![], cells(&[0])] {
        let err = mode(Some(bad)).unwrap_err();
        assert_eq!(err.kind, ConfigErrorKind::PolicyModeInvalid, "{err}");
        assert_eq!(err.node.as_str(), "/chosen");
        assert_eq!(err.property, Some(P_POLICY_MODE));
        assert!(err.to_string().contains("permissive"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Static event channels

const P_EVTCHN: &str = "xen,evtchn";

/// Three domains: d0:1 <-> d1:2, d2:7 <-> d1:5 (listed from the later
/// domain first), d0:3 <-> d2:3.
fn three_linked() -> Vec<Domain> {
    vec![
        Domain::new("d0")
            .link(Module::evtchn("ec1", 10, 1, 20))
            .link(Module::evtchn("ec3", 11, 3, 31)),
        Domain::new("d1")
            .link(Module::evtchn("ec2", 20, 2, 10))
            .link(Module::evtchn("ec5", 21, 5, 30)),
        Domain::new("d2")
            .link(Module::evtchn("ec7", 30, 7, 21))
            .link(Module::evtchn("ec3", 31, 3, 11)),
    ]
}

fn end(domain: usize, port: u32) -> EvtchnEnd {
    EvtchnEnd { domain, port }
}

#[test]
fn parses_static_evtchns() {
    let cfg = parse(&three_linked()).unwrap();
    assert_eq!(
        cfg.evtchns.as_slice(),
        [
            StaticEvtchn {
                a: end(0, 1),
                b: end(1, 2)
            },
            StaticEvtchn {
                a: end(0, 3),
                b: end(2, 3)
            },
            StaticEvtchn {
                a: end(1, 5),
                b: end(2, 7)
            },
        ]
    );
    let of_d2: Vec<_> = cfg.evtchns_of(2).collect();
    assert_eq!(of_d2, [(end(2, 3), end(0, 3)), (end(2, 7), end(1, 5))]);
    assert_eq!(cfg.evtchns_of(3).count(), 0);
    // No links at all is fine too.
    assert!(parse(&[Domain::new("d")]).unwrap().evtchns.is_empty());
}

#[test]
fn evtchn_accepts_linux_phandle_and_the_port_range_ends() {
    let mut a = Module::evtchn("ec", 0, 1, 2);
    a.props.retain(|(n, _)| *n != "phandle");
    a.props.push(("linux,phandle", cells(&[1])));
    let b = Module::evtchn("ec", 2, tessera_ipc::event_channel::MAX_PORTS as u32 - 1, 1);
    let cfg = parse(&[Domain::new("a").link(a), Domain::new("b").link(b)]).unwrap();
    assert_eq!(
        cfg.evtchns.as_slice(),
        [StaticEvtchn {
            a: end(0, 1),
            b: end(1, 1023)
        }]
    );
}

/// `d0/ec` (phandle 1) and `d1/ec` (phandle 2), with `a` and `b` bent.
fn pair(a: Module, b: Module) -> Vec<Domain> {
    vec![Domain::new("d0").link(a), Domain::new("d1").link(b)]
}

#[test]
fn evtchn_property_errors() {
    let at = "/chosen/d0/ec";
    let p = Some(P_EVTCHN);
    let good_b = || Module::evtchn("ec", 2, 1, 1);
    for (value, len) in [(cells(&[1, 2, 3]), 12), (cells(&[1]), 4), (vec![], 0)] {
        expect_system_error(
            &pair(Module::evtchn("ec", 1, 1, 2).set(P_EVTCHN, value), good_b()),
            at,
            p,
            ConfigErrorKind::EvtchnBadLength { len },
        );
    }
    expect_system_error(
        &pair(Module::evtchn("ec", 1, 1, 2).unset(P_EVTCHN), good_b()),
        at,
        p,
        ConfigErrorKind::EvtchnMissing,
    );
    for port in [0, tessera_ipc::event_channel::MAX_PORTS as u32, u32::MAX] {
        let err = expect_system_error(
            &pair(Module::evtchn("ec", 1, port, 2), good_b()),
            at,
            p,
            ConfigErrorKind::EvtchnPortOutOfRange { port },
        );
        assert!(err.to_string().contains("1..1024"), "{err}");
    }
    expect_system_error(
        &pair(
            Module::evtchn("ec", 1, 1, 2).set("phandle", cells(&[1, 1])),
            good_b(),
        ),
        at,
        Some("phandle"),
        ConfigErrorKind::EvtchnBadPhandle,
    );
    // The peer's malformed property is reported at the peer.
    expect_system_error(
        &pair(
            Module::evtchn("ec", 1, 1, 2),
            good_b().set(P_EVTCHN, cells(&[1])),
        ),
        "/chosen/d1/ec",
        p,
        ConfigErrorKind::EvtchnBadLength { len: 4 },
    );
}

#[test]
fn evtchn_link_errors() {
    let at = "/chosen/d0/ec";
    let p = Some(P_EVTCHN);
    // A phandle no node has, and one that only a non-evtchn node has.
    expect_system_error(
        &pair(
            Module::evtchn("ec", 1, 1, 99),
            Module::evtchn("ec", 2, 1, 1),
        ),
        at,
        p,
        ConfigErrorKind::EvtchnPeerNotFound { phandle: 99 },
    );
    let kernel = Module::kernel("k").set("phandle", cells(&[7]));
    expect_system_error(
        &[
            Domain::new("d0").link(Module::evtchn("ec", 1, 1, 7)),
            Domain::new("d1").modules(vec![kernel]),
        ],
        at,
        p,
        ConfigErrorKind::EvtchnPeerNotFound { phandle: 7 },
    );
    // Both ends in one domain.
    expect_system_error(
        &[Domain::new("d0")
            .link(Module::evtchn("ec", 1, 1, 2))
            .link(Module::evtchn("ed", 2, 2, 1))],
        at,
        p,
        ConfigErrorKind::EvtchnPeerSameDomain {
            peer: NodePath::new("/chosen/d0/ed"),
        },
    );
    // d0/ec -> d1/ec, but d1/ec -> d0/other.
    let err = expect_system_error(
        &[
            Domain::new("d0")
                .link(Module::evtchn("ec", 1, 1, 2))
                .link(Module::evtchn("other", 3, 4, 2)),
            Domain::new("d1").link(Module::evtchn("ec", 2, 1, 3)),
        ],
        at,
        p,
        ConfigErrorKind::EvtchnNotReciprocal {
            peer: NodePath::new("/chosen/d1/ec"),
        },
    );
    assert!(err.to_string().contains("/chosen/d1/ec"), "{err}");
    // A node without a phandle cannot be named back.
    expect_system_error(
        &pair(
            Module::evtchn("ec", 1, 1, 2).unset("phandle"),
            Module::evtchn("ec", 2, 1, 1),
        ),
        at,
        p,
        ConfigErrorKind::EvtchnNotReciprocal {
            peer: NodePath::new("/chosen/d1/ec"),
        },
    );
    // A duplicated phandle: the second node claiming phandle 1 is not the
    // one its peer resolves to.
    expect_system_error(
        &[
            Domain::new("d0")
                .link(Module::evtchn("ec", 1, 1, 2))
                .link(Module::evtchn("dup", 1, 2, 3)),
            Domain::new("d1")
                .link(Module::evtchn("ec", 2, 1, 1))
                .link(Module::evtchn("ed", 3, 2, 1)),
        ],
        "/chosen/d0/dup",
        p,
        ConfigErrorKind::EvtchnNotReciprocal {
            peer: NodePath::new("/chosen/d1/ed"),
        },
    );
}

#[test]
fn evtchn_duplicate_port_in_one_domain() {
    expect_system_error(
        &[
            Domain::new("d0")
                .link(Module::evtchn("ec", 1, 5, 2))
                .link(Module::evtchn("ed", 3, 5, 4)),
            Domain::new("d1")
                .link(Module::evtchn("ec", 2, 1, 1))
                .link(Module::evtchn("ed", 4, 2, 3)),
        ],
        "/chosen/d0/ed",
        Some(P_EVTCHN),
        ConfigErrorKind::EvtchnDuplicatePort {
            port: 5,
            other: NodePath::new("/chosen/d0/ec"),
        },
    );
    // The same port number in two domains is fine.
    assert!(parse(&pair(
        Module::evtchn("ec", 1, 5, 2),
        Module::evtchn("ec", 2, 5, 1)
    ))
    .is_ok());
}

#[test]
fn too_many_evtchns() {
    let channels = |n: u32| {
        let mut a = Domain::new("d0");
        let mut b = Domain::new("d1");
        for i in 0..n {
            let name = format!("ec{i}");
            a = a.link(Module::evtchn(&name, 2 * i + 1, i + 1, 2 * i + 2));
            b = b.link(Module::evtchn(&name, 2 * i + 2, i + 1, 2 * i + 1));
        }
        vec![a, b]
    };
    let max = MAX_STATIC_EVTCHNS as u32;
    assert_eq!(parse(&channels(max)).unwrap().evtchns.len(), 64);
    // 65 nodes in d0, so the 129th evtchn node is d1's 64th.
    let err = parse(&channels(max + 1)).unwrap_err();
    assert_eq!(err.kind, ConfigErrorKind::TooManyEvtchns, "{err}");
    assert_eq!(err.node.as_str(), "/chosen/d1/ec63");
}

// ---------------------------------------------------------------------------
// Static shared memory

const P_SHM_ID: &str = "xen,shm-id";
const P_SHARED_MEM: &str = "xen,shared-mem";
const P_ROLE: &str = "role";

/// `xen,shared-mem` in 2/2 cells (the domains below set `#address-cells`
/// and `#size-cells` to 2).
fn mem(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// A domain with 2/2 cells for its link nodes.
fn dom(name: &str) -> Domain {
    Domain::new(name)
        .set("#address-cells", cells(&[2]))
        .set("#size-cells", cells(&[2]))
}

const SHM_IPA: u64 = 0x1_0000_0000;
const SHM_HOST: u64 = 0x7000_0000;

#[test]
fn parses_shared_memory() {
    let d0 = dom("d0")
        .link(Module::shm(
            "shm@0",
            "ring",
            Some("owner"),
            mem(&[SHM_HOST, SHM_IPA, 0x2000]),
        ))
        .link(Module::shm(
            "shm@1",
            "heap",
            None,
            mem(&[SHM_IPA + 0x10_0000, 0x1000]),
        ));
    // 1/1 cells, role "borrower", a different guest address.
    let d1 = Domain::new("d1")
        .set("#address-cells", cells(&[1]))
        .set("#size-cells", cells(&[1]))
        .link(Module::shm(
            "shm@0",
            "ring",
            Some("borrower"),
            cells(&[SHM_HOST as u32, 0x2000_0000, 0x2000]),
        ))
        .link(Module::shm(
            "shm@1",
            "heap",
            None,
            cells(&[0x2010_0000, 0x1000]),
        ));
    let cfg = parse(&[d0, Domain::new("plain"), d1]).unwrap();
    assert_eq!(cfg.shm.len(), 2);
    let ring = &cfg.shm[0];
    assert_eq!(ring.id.as_str(), "ring");
    assert_eq!(ring.size, 0x2000);
    assert_eq!(ring.host_base, Some(SHM_HOST));
    assert_eq!(
        ring.users.as_slice(),
        [
            ShmUser {
                domain: 0,
                guest_base: SHM_IPA,
                owner: true
            },
            ShmUser {
                domain: 2,
                guest_base: 0x2000_0000,
                owner: false
            },
        ]
    );
    let heap = &cfg.shm[1];
    assert_eq!(heap.host_base, None);
    assert!(heap.users.iter().all(|u| !u.owner));
    assert_eq!(heap.users.len(), 2);

    assert_eq!(cfg.shm_of(1).count(), 0);
    let guest = cfg.guest_shm(2);
    assert_eq!(
        guest.as_slice(),
        [
            GuestShm {
                id: "ring",
                guest_base: 0x2000_0000,
                size: 0x2000
            },
            GuestShm {
                id: "heap",
                guest_base: 0x2010_0000,
                size: 0x1000
            },
        ]
    );
}

/// Domain `d` with one region node `shm` built from `mem`.
fn one_shm(mem: Vec<u8>) -> Domain {
    dom("d").link(Module::shm("shm", "r", None, mem))
}

#[test]
fn shm_id_and_role_errors() {
    let at = "/chosen/d/shm";
    let with = |m: Module| dom("d").link(m);
    let good = || Module::shm("shm", "r", None, mem(&[SHM_IPA, 0x1000]));
    expect_error(
        with(good().unset(P_SHM_ID)),
        at,
        Some(P_SHM_ID),
        ConfigErrorKind::ShmIdMissing,
    );
    for bad in [cells(&[1]), b"r".to_vec(), b"a\0b\0".to_vec()] {
        expect_error(
            with(good().set(P_SHM_ID, bad)),
            at,
            Some(P_SHM_ID),
            ConfigErrorKind::ShmIdNotString,
        );
    }
    expect_error(
        with(good().set(P_SHM_ID, string(""))),
        at,
        Some(P_SHM_ID),
        ConfigErrorKind::ShmIdEmpty,
    );
    expect_error(
        with(good().set(P_SHM_ID, string(&"x".repeat(MAX_SHM_ID)))),
        at,
        Some(P_SHM_ID),
        ConfigErrorKind::ShmIdTooLong { len: 16 },
    );
    let longest = "x".repeat(MAX_SHM_ID - 1);
    let cfg = parse(&[with(good().set(P_SHM_ID, string(&longest)))]).unwrap();
    assert_eq!(cfg.shm[0].id.as_str(), longest);
    for bad in [string("Owner"), string(""), vec![]] {
        expect_error(
            with(good().set(P_ROLE, bad)),
            at,
            Some(P_ROLE),
            ConfigErrorKind::ShmRoleInvalid,
        );
    }
}

#[test]
fn shm_shape_errors() {
    let at = "/chosen/d/shm";
    let p = Some(P_SHARED_MEM);
    expect_error(
        dom("d").link(Module::shm("shm", "r", None, vec![]).unset(P_SHARED_MEM)),
        at,
        p,
        ConfigErrorKind::ShmMissing,
    );
    expect_error(
        one_shm(mem(&[SHM_IPA])),
        at,
        p,
        ConfigErrorKind::ShmBadLength {
            len: 8,
            with_host: 24,
            without_host: 16,
        },
    );
    // The domain node's default cells (2 / 1) decode too; 0 and 3 do not.
    let d = Domain::new("d").link(Module::shm(
        "shm",
        "r",
        None,
        cells(&[1, 0x7000_0000, 1, 0, 0x1000]),
    ));
    assert_eq!(parse(&[d]).unwrap().shm[0].size, 0x1000);
    for (a, s) in [(3, 1), (2, 0)] {
        expect_error(
            Domain::new("d")
                .set("#address-cells", cells(&[a]))
                .set("#size-cells", cells(&[s]))
                .link(Module::shm("shm", "r", None, mem(&[SHM_IPA, 0x1000]))),
            at,
            p,
            ConfigErrorKind::ShmCellsUnsupported {
                address: a,
                size: s,
            },
        );
    }
    expect_error(
        one_shm(mem(&[SHM_IPA, 0])),
        at,
        p,
        ConfigErrorKind::ShmSizeZero,
    );
    for (value, what, bad) in [
        (
            mem(&[SHM_HOST + 8, SHM_IPA, 0x1000]),
            "host address",
            SHM_HOST + 8,
        ),
        (
            mem(&[SHM_IPA + 0x800, 0x1000]),
            "guest address",
            SHM_IPA + 0x800,
        ),
        (mem(&[SHM_IPA, 0x1800]), "size", 0x1800),
    ] {
        expect_error(
            one_shm(value),
            at,
            p,
            ConfigErrorKind::ShmMisaligned { what, value: bad },
        );
    }
    let top = !0xfff_u64;
    expect_error(
        one_shm(mem(&[top, SHM_IPA, 0x2000])),
        at,
        p,
        ConfigErrorKind::ShmHostOverflow {
            base: top,
            size: 0x2000,
        },
    );
}

#[test]
fn shm_guest_range_errors() {
    let at = "/chosen/d/shm";
    let p = Some(P_SHARED_MEM);
    // At or across 2^39, or wrapping.
    for (base, size) in [
        (STAGE2_IPA_LIMIT, 0x1000),
        (STAGE2_IPA_LIMIT - 0x1000, 0x2000),
        (!0xfff_u64, 0x2000),
    ] {
        expect_error(
            one_shm(mem(&[base, size])),
            at,
            p,
            ConfigErrorKind::ShmGuestOutOfRange { base, size },
        );
    }
    assert!(parse(&[one_shm(mem(&[STAGE2_IPA_LIMIT - 0x1000, 0x1000]))]).is_ok());
    // Every window, including the last page of guest RAM (128 MiB).
    use tessera_ipc::platform as pf;
    for (window, base) in [
        ("guest RAM", pf::RAM_BASE + (128 << 20) - 0x1000),
        ("GIC distributor", pf::GICD_BASE),
        ("GIC redistributors", pf::GICR_BASE + 7 * pf::GICR_STRIDE),
        ("PL011", pf::PL011_BASE),
        ("virtio-mmio window", pf::VIRTIO_MMIO_BASE + 0x3000),
        ("grant-table window", pf::GNTTAB_BASE + 0x10_0000),
        ("special-page window", pf::MAGIC_BASE),
        (
            "extended region",
            pf::EXT_REGION_BASE + pf::EXT_REGION_SIZE - 0x1000,
        ),
    ] {
        let err = expect_error(
            one_shm(mem(&[base, 0x1000])),
            at,
            p,
            ConfigErrorKind::ShmGuestOverlapsWindow {
                window,
                base,
                size: 0x1000,
            },
        );
        assert!(err.to_string().contains(window), "{err}");
    }
    // Just past RAM is free.
    assert!(parse(&[one_shm(mem(&[pf::RAM_BASE + (128 << 20), 0x1000]))]).is_ok());

    // Two regions of one domain overlapping.
    expect_error(
        dom("d")
            .link(Module::shm("a", "a", None, mem(&[SHM_IPA, 0x2000])))
            .link(Module::shm(
                "b",
                "b",
                None,
                mem(&[SHM_IPA + 0x1000, 0x1000]),
            )),
        "/chosen/d/b",
        p,
        ConfigErrorKind::ShmGuestOverlap {
            other: NodePath::new("/chosen/d/a"),
        },
    );
    // The same range in two domains is fine.
    let d = |n: &str| dom(n).link(Module::shm("a", "a", None, mem(&[SHM_IPA, 0x2000])));
    assert!(parse(&[d("d0"), d("d1")]).is_ok());
}

#[test]
fn shm_grouping_errors() {
    let p = Some(P_SHARED_MEM);
    let node = |id: &str, role: Option<&str>, m: &[u64]| Module::shm("shm", id, role, mem(m));
    // One domain, one id, twice.
    expect_error(
        dom("d")
            .link(Module::shm("a", "r", None, mem(&[SHM_IPA, 0x1000])))
            .link(Module::shm(
                "b",
                "r",
                None,
                mem(&[SHM_IPA + 0x1000, 0x1000]),
            )),
        "/chosen/d/b",
        Some(P_SHM_ID),
        ConfigErrorKind::ShmDuplicateId {
            other: NodePath::new("/chosen/d/a"),
        },
    );
    // Different sizes for one id.
    expect_system_error(
        &[
            dom("d0").link(node("r", None, &[SHM_IPA, 0x1000])),
            dom("d1").link(node("r", None, &[SHM_IPA, 0x2000])),
        ],
        "/chosen/d1/shm",
        p,
        ConfigErrorKind::ShmSizeMismatch {
            size: 0x2000,
            expected: 0x1000,
            other: NodePath::new("/chosen/d0/shm"),
        },
    );
    // Different host bases, and a host base against none.
    for second in [
        &[SHM_HOST + 0x1000, SHM_IPA, 0x1000][..],
        &[SHM_IPA, 0x1000][..],
    ] {
        expect_system_error(
            &[
                dom("d0").link(node("r", None, &[SHM_HOST, SHM_IPA, 0x1000])),
                dom("d1").link(node("r", None, second)),
            ],
            "/chosen/d1/shm",
            p,
            ConfigErrorKind::ShmHostBaseMismatch {
                other: NodePath::new("/chosen/d0/shm"),
            },
        );
    }
    // Two owners.
    expect_system_error(
        &[
            dom("d0").link(node("r", None, &[SHM_IPA, 0x1000])),
            dom("d1").link(node("r", Some("owner"), &[SHM_IPA, 0x1000])),
            dom("d2").link(node("r", Some("owner"), &[SHM_IPA, 0x1000])),
        ],
        "/chosen/d2/shm",
        Some(P_ROLE),
        ConfigErrorKind::ShmMultipleOwners {
            other: NodePath::new("/chosen/d1/shm"),
        },
    );
    // Host ranges of two regions overlapping, or a region over a domain's
    // static memory.
    expect_system_error(
        &[
            dom("d0").link(node("a", None, &[SHM_HOST, SHM_IPA, 0x2000])),
            dom("d1").link(node("b", None, &[SHM_HOST + 0x1000, SHM_IPA, 0x1000])),
        ],
        "/chosen/d1/shm",
        p,
        ConfigErrorKind::ShmHostOverlap {
            other: NodePath::new("/chosen/d0/shm"),
        },
    );
    expect_system_error(
        &[
            dom("d0").static_mem(0x6000_0000, 128 << 20),
            dom("d1").link(node("b", None, &[0x6400_0000, SHM_IPA, 0x1000])),
        ],
        "/chosen/d1/shm",
        p,
        ConfigErrorKind::ShmHostOverlap {
            other: NodePath::new("/chosen/d0"),
        },
    );
}

#[test]
fn shm_limits() {
    let regions = |n: usize| {
        let mut d = dom("d");
        for i in 0..n {
            let ipa = SHM_IPA + i as u64 * 0x1000;
            d = d.link(Module::shm(
                &format!("s{i}"),
                &format!("r{i}"),
                None,
                mem(&[ipa, 0x1000]),
            ));
        }
        d
    };
    assert_eq!(parse(&[regions(MAX_SHM)]).unwrap().shm.len(), MAX_SHM);
    expect_error(
        regions(MAX_SHM + 1),
        "/chosen/d/s16",
        None,
        ConfigErrorKind::TooManyShm,
    );

    let users = |n: usize| -> Vec<Domain> {
        (0..n)
            .map(|i| {
                dom(&format!("d{i}")).link(Module::shm("shm", "r", None, mem(&[SHM_IPA, 0x1000])))
            })
            .collect()
    };
    assert_eq!(
        parse(&users(MAX_SHM_USERS)).unwrap().shm[0].users.len(),
        MAX_SHM_USERS
    );
    expect_system_error(
        &users(MAX_SHM_USERS + 1),
        "/chosen/d4/shm",
        None,
        ConfigErrorKind::TooManyShmUsers,
    );
}

#[test]
fn linked_blobs_never_panic() {
    let mut domains = three_linked();
    domains[0] = domains[0]
        .clone()
        .set("#address-cells", cells(&[2]))
        .set("#size-cells", cells(&[2]))
        .link(Module::shm(
            "shm",
            "r",
            Some("owner"),
            mem(&[SHM_HOST, SHM_IPA, 0x1000]),
        ));
    domains[1] = domains[1].clone().set(P_XEN_ENHANCED, vec![]);
    let good = system(&domains);
    assert!(parse_system(&good).is_ok());
    for cut in 0..good.len() {
        let _ = parse_system(&good[..cut]);
    }
    for at in (0..good.len()).step_by(3) {
        for byte in [0x00, 0x01, 0xff] {
            let mut bad = good.clone();
            bad[at] = byte;
            let _ = parse_system(&bad);
        }
    }
}

#[test]
fn system_config_fits_the_boot_stack() {
    // The kernel holds a `SystemConfig` on its boot stack (256 KiB): the
    // links (2 KiB of channels, 2.4 KiB of regions) add to the domains'
    // 10 KiB (device model, virtio list and the hyperlaunch properties, pCPU
    // pins included), and nothing should grow it unnoticed.
    let size = core::mem::size_of::<SystemConfig>();
    assert!(size <= 15 * 1024, "SystemConfig is {size} bytes");
}

fn strings(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|s| string(s)).collect()
}

#[test]
fn device_model_and_virtio() {
    let dm = Domain::new("dm");
    let guest = Domain::new("g")
        .set(P_DEVICE_MODEL, string("dm"))
        .set(P_VPL011, vec![])
        .set(P_VIRTIO, strings(&["console", "rng", "blk", "net"]));
    let cfg = parse(&[dm.clone(), guest.clone()]).unwrap();
    let g = &cfg.domains[1];
    assert_eq!(g.device_model, Some(0));
    assert!(g.vpl011);
    assert_eq!(
        g.virtio.as_slice(),
        [
            VirtioKind::Console,
            VirtioKind::Rng,
            VirtioKind::Blk,
            VirtioKind::Net
        ]
    );
    assert_eq!(cfg.domains[0].device_model, None);
}

#[test]
fn a_device_model_serves_the_domains_that_name_it_with_their_ids() {
    let cfg = parse(&[
        Domain::new("g1")
            .set(P_DEVICE_MODEL, string("dm"))
            .set(P_VPL011, vec![])
            .set(P_VIRTIO, strings(&["rng", "net"])),
        Domain::new("other"),
        Domain::new("dm"),
        Domain::new("g2").set(P_DEVICE_MODEL, string("dm")),
    ])
    .unwrap();
    let served = cfg.served_by(2, |i| 10 + i as u16);
    assert_eq!(served.len(), 2, "g1 and g2, in tree order");
    let (g1, g2) = (&served[0], &served[1]);
    assert_eq!((g1.domid, g1.name), (10, "g1"));
    assert_eq!(g1.vcpus, cfg.domains[0].vcpus);
    assert_eq!(g1.ram_size, cfg.domains[0].memory_bytes);
    assert!(g1.vpl011);
    assert_eq!(g1.virtio, [VirtioKind::Rng, VirtioKind::Net]);
    assert_eq!((g2.domid, g2.name, g2.vpl011), (13, "g2", false));
    assert!(g2.virtio.is_empty());
    assert!(
        cfg.served_by(1, |i| i as u16).is_empty(),
        "not a device model"
    );
    assert!(cfg.served_by(9, |i| i as u16).is_empty(), "no such domain");
}

#[test]
fn a_vpl011_with_no_device_model_is_a_xen_tree_and_gets_no_pl011() {
    // ImageBuilder writes `vpl011 = <0x1>` on every domain; Xen emulates it.
    let cfg = parse(&[Domain::new("domU0").set(P_VPL011, cells(&[1]))]).unwrap();
    let d = &cfg.domains[0];
    assert!(!d.vpl011, "nobody emulates it");
    assert!(d.vpl011_unserved);
    assert_eq!(d.device_model, None);
    // Served by a device model, it is the usual emulated PL011.
    let cfg = parse(&[
        Domain::new("dm"),
        Domain::new("g")
            .set(P_VPL011, vec![])
            .set(P_DEVICE_MODEL, string("dm")),
    ])
    .unwrap();
    assert!(cfg.domains[1].vpl011 && !cfg.domains[1].vpl011_unserved);
}

#[test]
fn device_model_errors() {
    let dm = Domain::new("dm");
    let with = |prop: &'static str, v: Vec<u8>| {
        Domain::new("g")
            .set(P_DEVICE_MODEL, string("dm"))
            .set(prop, v)
    };
    let cases: Vec<(Domain, Option<&str>, ConfigErrorKind)> = vec![
        (
            Domain::new("g").set(P_DEVICE_MODEL, string("nobody")),
            Some(P_DEVICE_MODEL),
            ConfigErrorKind::DeviceModelNotFound {
                name: "nobody".try_into().unwrap(),
            },
        ),
        (
            Domain::new("g").set(P_DEVICE_MODEL, string("g")),
            Some(P_DEVICE_MODEL),
            ConfigErrorKind::DeviceModelIsItself,
        ),
        (
            // Longer than any domain name, and cut mid-character at
            // `MAX_DOMAIN_NAME` bytes: the error shows whole characters.
            Domain::new("g").set(
                P_DEVICE_MODEL,
                string(&format!("x{}", "é".repeat(MAX_DOMAIN_NAME))),
            ),
            Some(P_DEVICE_MODEL),
            ConfigErrorKind::DeviceModelNotFound {
                name: format!("x{}", "é".repeat(MAX_DOMAIN_NAME / 2 - 1))
                    .as_str()
                    .try_into()
                    .unwrap(),
            },
        ),
        (
            Domain::new("g").set(P_DEVICE_MODEL, cells(&[1])),
            Some(P_DEVICE_MODEL),
            ConfigErrorKind::DeviceModelInvalid,
        ),
        (
            Domain::new("g").set(P_DEVICE_MODEL, string("")),
            Some(P_DEVICE_MODEL),
            ConfigErrorKind::DeviceModelInvalid,
        ),
        (
            with(P_VIRTIO, strings(&["console", "gpu"])),
            Some(P_VIRTIO),
            ConfigErrorKind::VirtioUnknown,
        ),
        (
            with(P_VIRTIO, strings(&["console", ""])),
            Some(P_VIRTIO),
            ConfigErrorKind::VirtioUnknown,
        ),
        (
            with(P_VIRTIO, b"console".to_vec()),
            Some(P_VIRTIO),
            ConfigErrorKind::VirtioUnknown,
        ),
        (
            with(P_VIRTIO, strings(&["rng"; MAX_VIRTIO + 1])),
            Some(P_VIRTIO),
            ConfigErrorKind::VirtioTooMany,
        ),
        (
            Domain::new("g").set(P_VIRTIO, strings(&["rng"])),
            None,
            ConfigErrorKind::DevicesWithoutDeviceModel,
        ),
    ];
    for (guest, prop, kind) in cases {
        let err = parse(&[dm.clone(), guest]).unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert_eq!(err.property, prop);
        assert!(!err.to_string().is_empty());
    }
}

/// The same served guest in `tessera,devices` spelling and in
/// `tessera,device-model` + `tessera,virtio`: `devices` is the value of
/// `tessera,devices`, the server first.
fn served_both_ways(devices: &[&str]) -> (Domain, Domain) {
    let (server, kinds) = devices.split_first().unwrap();
    let mut old = Domain::new("g")
        .set(P_VPL011, vec![])
        .set(P_DEVICE_MODEL, string(server));
    if !kinds.is_empty() {
        old = old.set(P_VIRTIO, strings(kinds));
    }
    let new = Domain::new("g")
        .set(P_VPL011, vec![])
        .set(P_DEVICES, strings(devices));
    (old, new)
}

#[test]
fn tessera_devices_means_tessera_device_model_and_tessera_virtio() {
    for devices in [
        &["dm", "rng", "console", "blk", "net"][..],
        &["dm", "net", "net"],
        // Only the server: it emulates the PL011 and no virtio device.
        &["dm"],
    ] {
        let (old, new) = served_both_ways(devices);
        // The server after the guest, too: names resolve once all are known.
        for dm_first in [true, false] {
            let system = |guest: Domain| {
                let mut domains = vec![Domain::new("dm"), guest, Domain::new("h")];
                if !dm_first {
                    domains.swap(0, 2);
                }
                parse(&domains).unwrap()
            };
            let (old, new) = (system(old.clone()), system(new.clone()));
            assert_eq!(old, new, "{devices:?}");
            let dm = usize::from(!dm_first) * 2;
            let g = &new.domains[1];
            assert_eq!(g.device_model, Some(dm));
            assert!(g.vpl011 && !g.vpl011_unserved);
            assert_eq!(g.virtio.len(), devices.len() - 1);
            assert!(new.domains[dm].functions.contains(Function::DeviceModel));
            // The device model's DT (written by the kernel or domB from
            // `served_by`) is the same either way.
            let domid = |i: usize| i as u16 + 1;
            assert_eq!(old.served_by(dm, domid), new.served_by(dm, domid));
        }
    }
}

#[test]
fn tessera_devices_errors() {
    let guest = |value: Vec<u8>| Domain::new("g").set(P_DEVICES, value);
    let mut too_many = vec!["dm"];
    too_many.extend(["rng"; MAX_VIRTIO + 1]);
    let cases: Vec<(Domain, Option<&str>, ConfigErrorKind)> = vec![
        (
            guest(strings(&["dm", "rng"])).set(P_DEVICE_MODEL, string("dm")),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesBesideOtherSpelling {
                other: P_DEVICE_MODEL,
            },
        ),
        (
            guest(strings(&["dm", "rng"])).set(P_VIRTIO, strings(&["rng"])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesBesideOtherSpelling { other: P_VIRTIO },
        ),
        (
            guest(vec![]),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNoDeviceModel,
        ),
        (
            guest(strings(&[""])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNoDeviceModel,
        ),
        (
            guest(strings(&["", "rng"])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNoDeviceModel,
        ),
        (
            guest(b"\xff\0rng\0".to_vec()),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNoDeviceModel,
        ),
        (
            guest(b"dm".to_vec()),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNotStrings,
        ),
        (
            guest(b"dm\0rng".to_vec()),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesNotStrings,
        ),
        (
            guest(strings(&["dm", "rng", "gpu"])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesKindUnknown { entry: 3 },
        ),
        (
            // A domain name where a kind belongs: the server comes once.
            guest(strings(&["dm", "dm"])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesKindUnknown { entry: 2 },
        ),
        (
            guest(strings(&["dm", "rng", ""])),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesKindEmpty { entry: 3 },
        ),
        (
            guest(strings(&too_many)),
            Some(P_DEVICES),
            ConfigErrorKind::DevicesTooManyKinds,
        ),
        (
            guest(strings(&["nobody", "rng"])),
            Some(P_DEVICES),
            ConfigErrorKind::DeviceModelNotFound {
                name: "nobody".try_into().unwrap(),
            },
        ),
        (
            guest(strings(&["g"])),
            Some(P_DEVICES),
            ConfigErrorKind::DeviceModelIsItself,
        ),
    ];
    for (guest, prop, kind) in cases {
        let err = expect_system_error(&[Domain::new("dm"), guest], "/chosen/g", prop, kind);
        assert!(!err.to_string().is_empty());
    }
    // Exactly `MAX_VIRTIO` kinds fit.
    let mut full = vec!["dm"];
    full.extend(["rng"; MAX_VIRTIO]);
    let cfg = parse(&[Domain::new("dm"), guest(strings(&full))]).unwrap();
    assert_eq!(cfg.domains[1].virtio.len(), MAX_VIRTIO);
}

#[test]
fn tessera_devices_errors_name_the_node_and_say_what_to_write() {
    let err = parse(&[
        Domain::new("dm"),
        Domain::new("g")
            .set(P_DEVICES, strings(&["dm", "rng"]))
            .set(P_VIRTIO, strings(&["rng"])),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/chosen/g: property \"tessera,devices\": the node also has tessera,virtio: \
         tessera,devices says the same as tessera,device-model and tessera,virtio together; \
         give one spelling"
    );
    let err = parse(&[
        Domain::new("dm"),
        Domain::new("g").set(P_DEVICES, strings(&["dm", "rng", "gpu"])),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/chosen/g: property \"tessera,devices\": entry 3 is not a virtio kind; after the \
         device-model domain, expected \"net\", \"blk\", \"console\" or \"rng\""
    );
}

mod hyperlaunch;
