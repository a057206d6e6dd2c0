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
}

impl Domain {
    /// A valid domain: 128 MiB, 2 vCPUs, a kernel module.
    fn new(node: &str) -> Self {
        Domain {
            node: node.into(),
            props: vec![(P_MEMORY, cells(&[0, 128 * 1024])), (P_CPUS, cells(&[2]))],
            modules: vec![Module::kernel("testguest")],
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
        for m in &self.modules {
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
    let mut buf = vec![0u8; 64 * 1024];
    let mut w = FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    w.begin_node("chosen").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
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
    let err = parse(&[domain]).unwrap_err();
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
        with_kernel(Module::kernel("k").unset(P_MODULE)),
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
