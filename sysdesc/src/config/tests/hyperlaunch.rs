//! Tests for the hyperlaunch properties (`config::hyperlaunch`): each error
//! has a negative test, and the boot order is checked on small graphs.

use super::*;
use crate::config::hyperlaunch::{
    P_BOOT_ORDER, P_CAPABILITIES, P_DOMID, P_FUNCTIONS, P_ON_CRASH, P_PCPUS, P_RESTART_BACKOFF,
};

fn names(cfg: &SystemConfig, order: &[usize]) -> Vec<String> {
    order
        .iter()
        .map(|&i| cfg.domains[i].name.to_string())
        .collect()
}

fn boot_order_names(domains: &[Domain]) -> Vec<String> {
    let cfg = parse(domains).unwrap();
    let order = cfg.boot_order().unwrap();
    names(&cfg, &order)
}

#[test]
fn defaults_leave_existing_descriptions_as_they_were() {
    let cfg = parse(&[Domain::new("a"), Domain::new("b"), Domain::new("c")]).unwrap();
    let ids: Vec<u16> = cfg.domains.iter().map(|d| d.domid).collect();
    assert_eq!(ids, [1, 2, 3]);
    for d in &cfg.domains {
        assert_eq!(d.functions, Functions::NONE);
        assert_eq!(d.boot_order, 0);
        assert_eq!(d.on_crash, OnCrash::Stop);
        assert_eq!(d.restart_backoff_ms, None);
        assert!(d.pcpus.is_empty());
    }
    assert_eq!(cfg.boot_order().unwrap().as_slice(), [0, 1, 2]);
}

#[test]
fn explicit_domids_are_kept_and_the_rest_take_the_lowest_free_ids() {
    let cfg = parse(&[
        Domain::new("a"),
        Domain::new("b").set(P_DOMID, cells(&[1])),
        Domain::new("c"),
        Domain::new("d").set(P_DOMID, cells(&[MAX_DOMAINS as u32])),
        // Xen's hyperlaunch: 0 asks for the next free id.
        Domain::new("e").set(P_DOMID, cells(&[0])),
    ])
    .unwrap();
    let ids: Vec<u16> = cfg.domains.iter().map(|d| d.domid).collect();
    assert_eq!(ids, [2, 1, 3, MAX_DOMAINS as u16, 4]);
}

#[test]
fn domid_errors() {
    expect_error(
        Domain::new("a").set(P_DOMID, cells(&[1, 2])),
        "/chosen/a",
        Some(P_DOMID),
        ConfigErrorKind::DomidBadLength { len: 8 },
    );
    let err = expect_error(
        Domain::new("a").set(P_DOMID, cells(&[MAX_DOMAINS as u32 + 1])),
        "/chosen/a",
        Some(P_DOMID),
        ConfigErrorKind::DomidOutOfRange {
            domid: MAX_DOMAINS as u32 + 1,
        },
    );
    assert_eq!(
        err.to_string(),
        "/chosen/a: property \"domid\": domain id 17 is outside 1..=16 (0 means the next free id)"
    );
    expect_system_error(
        &[
            Domain::new("a").set(P_DOMID, cells(&[3])),
            Domain::new("b"),
            Domain::new("c").set(P_DOMID, cells(&[3])),
        ],
        "/chosen/c",
        Some(P_DOMID),
        ConfigErrorKind::DuplicateDomid {
            domid: 3,
            other: NodePath::new("/chosen/a"),
        },
    );
}

#[test]
fn functions_are_parsed_and_a_named_device_model_has_that_function() {
    let cfg = parse(&[
        Domain::new("domb").set(P_FUNCTIONS, strings(&["boot"])),
        Domain::new("store").set(P_FUNCTIONS, strings(&["xenstore", "console"])),
        Domain::new("dm"),
        Domain::new("tpm1").set(P_FUNCTIONS, strings(&["vtpm"])),
        Domain::new("tpm2").set(P_FUNCTIONS, strings(&["vtpm", "device-model"])),
        Domain::new("g").set(P_DEVICE_MODEL, string("dm")),
    ])
    .unwrap();
    let listed = |i: usize| -> Vec<&str> {
        cfg.domains[i]
            .functions
            .iter()
            .map(Function::name)
            .collect()
    };
    assert_eq!(listed(0), ["boot"]);
    assert_eq!(listed(1), ["xenstore", "console"]);
    assert_eq!(listed(2), ["device-model"]);
    assert_eq!(listed(3), ["vtpm"]);
    assert_eq!(listed(4), ["device-model", "vtpm"]);
    assert!(listed(5).is_empty());
    for f in Function::ALL {
        assert_eq!(Function::from_name(f.name()), Some(f));
    }
}

#[test]
fn function_errors() {
    let with = |v: Vec<u8>| Domain::new("a").set(P_FUNCTIONS, v);
    for bad in [
        strings(&["boot", "dom0"]),
        strings(&["boot", ""]),
        strings(&["Boot"]),
        b"boot".to_vec(),
        vec![],
        // Xen's hyperlaunch bitmask form (FUNCTION_BOOT).
        cells(&[1]),
    ] {
        expect_error(
            with(bad),
            "/chosen/a",
            Some(P_FUNCTIONS),
            ConfigErrorKind::FunctionUnknown,
        );
    }
    expect_error(
        with(strings(&["vtpm", "console", "vtpm"])),
        "/chosen/a",
        Some(P_FUNCTIONS),
        ConfigErrorKind::FunctionDuplicate { name: "vtpm" },
    );
    for unique in ["boot", "xenstore", "console"] {
        let err = expect_system_error(
            &[
                Domain::new("a").set(P_FUNCTIONS, strings(&[unique])),
                Domain::new("b"),
                Domain::new("c").set(P_FUNCTIONS, strings(&["vtpm", unique])),
            ],
            "/chosen/c",
            Some(P_FUNCTIONS),
            ConfigErrorKind::FunctionNotUnique {
                name: Function::from_name(unique).unwrap().name(),
                other: NodePath::new("/chosen/a"),
            },
        );
        assert!(err.to_string().contains("there can be only one"), "{err}");
    }
    // Several device models and vTPMs are fine.
    parse(&[
        Domain::new("a").set(P_FUNCTIONS, strings(&["device-model", "vtpm"])),
        Domain::new("b").set(P_FUNCTIONS, strings(&["device-model", "vtpm"])),
    ])
    .unwrap();
}

#[test]
fn xen_capabilities_name_the_functions_tessera_has() {
    let cfg = parse(&[
        Domain::new("store").set(P_CAPABILITIES, cells(&[1 << 2])),
        Domain::new("dm").set(P_CAPABILITIES, cells(&[1 << 3])),
        Domain::new("both")
            .set(P_CAPABILITIES, cells(&[1 << 3]))
            .set(P_FUNCTIONS, strings(&["vtpm", "device-model"])),
        Domain::new("plain").set(P_CAPABILITIES, cells(&[0])),
    ])
    .unwrap();
    let listed = |i: usize| -> Vec<&str> {
        cfg.domains[i]
            .functions
            .iter()
            .map(Function::name)
            .collect()
    };
    assert_eq!(listed(0), ["xenstore"]);
    assert_eq!(listed(1), ["device-model"]);
    // Both properties: the functions of both, a function in each is fine.
    assert_eq!(listed(2), ["device-model", "vtpm"]);
    assert!(listed(3).is_empty());
}

#[test]
fn capability_errors() {
    let with = |v: Vec<u8>| Domain::new("a").set(P_CAPABILITIES, v);
    for (bad, len) in [
        (vec![], 0),
        (cells(&[4, 0]), 8),
        (strings(&["xenstore"]), 9),
    ] {
        expect_error(
            with(bad),
            "/chosen/a",
            Some(P_CAPABILITIES),
            ConfigErrorKind::CapabilitiesBadLength { len },
        );
    }
    for (mask, name) in [
        (1, "DOMAIN_CAPS_CONTROL"),
        (2, "DOMAIN_CAPS_HARDWARE"),
        // A traditional dom0: control is the first refused.
        (7, "DOMAIN_CAPS_CONTROL"),
    ] {
        let err = expect_error(
            with(cells(&[mask])),
            "/chosen/a",
            Some(P_CAPABILITIES),
            ConfigErrorKind::CapabilityUnsupported { name },
        );
        assert!(
            err.to_string().contains("no control or hardware domain"),
            "{err}"
        );
    }
    expect_error(
        with(cells(&[(1 << 2) | (1 << 4) | (1 << 31)])),
        "/chosen/a",
        Some(P_CAPABILITIES),
        ConfigErrorKind::CapabilitiesUnknown {
            bits: (1 << 4) | (1 << 31),
        },
    );
    // The xenstore capability is as unique as the function.
    expect_system_error(
        &[
            Domain::new("a").set(P_FUNCTIONS, strings(&["xenstore"])),
            Domain::new("c").set(P_CAPABILITIES, cells(&[1 << 2])),
        ],
        "/chosen/c",
        Some(P_FUNCTIONS),
        ConfigErrorKind::FunctionNotUnique {
            name: "xenstore",
            other: NodePath::new("/chosen/a"),
        },
    );
}

#[test]
fn boot_order_ranks_lower_first_ties_in_tree_order() {
    assert_eq!(
        boot_order_names(&[
            Domain::new("late").set(P_BOOT_ORDER, cells(&[20])),
            Domain::new("first").set(P_BOOT_ORDER, cells(&[0])),
            Domain::new("unranked"),
            Domain::new("middle").set(P_BOOT_ORDER, cells(&[10])),
            Domain::new("also-middle").set(P_BOOT_ORDER, cells(&[10])),
        ]),
        ["first", "unranked", "middle", "also-middle", "late"]
    );
}

#[test]
fn a_device_model_starts_before_what_it_serves_wherever_it_is_in_the_tree() {
    assert_eq!(
        boot_order_names(&[
            Domain::new("g1").set(P_DEVICE_MODEL, string("dm")),
            Domain::new("solo"),
            Domain::new("g2").set(P_DEVICE_MODEL, string("dm")),
            Domain::new("dm"),
        ]),
        ["solo", "dm", "g1", "g2"]
    );
    // A rank consistent with the dependency is honoured too.
    assert_eq!(
        boot_order_names(&[
            Domain::new("g")
                .set(P_DEVICE_MODEL, string("dm"))
                .set(P_BOOT_ORDER, cells(&[2])),
            Domain::new("dm").set(P_BOOT_ORDER, cells(&[1])),
            Domain::new("other").set(P_BOOT_ORDER, cells(&[3])),
        ]),
        ["dm", "g", "other"]
    );
}

#[test]
fn the_boot_and_xenstore_domains_start_before_what_needs_them() {
    assert_eq!(
        boot_order_names(&[
            Domain::new("plain"),
            Domain::new("pv").set(P_XEN_ENHANCED, vec![]),
            Domain::new("store").set(P_FUNCTIONS, strings(&["xenstore"])),
            Domain::new("domb").set(P_FUNCTIONS, strings(&["boot"])),
        ]),
        ["domb", "plain", "store", "pv"]
    );
}

#[test]
fn a_rank_against_a_dependency_is_a_cycle_naming_its_domains() {
    let cfg = parse(&[
        Domain::new("solo"),
        Domain::new("g")
            .set(P_DEVICE_MODEL, string("dm"))
            .set(P_BOOT_ORDER, cells(&[1])),
        Domain::new("dm").set(P_BOOT_ORDER, cells(&[5])),
    ])
    .unwrap();
    let err = cfg.boot_order().unwrap_err();
    assert_eq!(err.node.as_str(), "/chosen/g");
    assert_eq!(err.property, Some(P_BOOT_ORDER));
    assert_eq!(
        err.to_string(),
        "/chosen/g: property \"boot-order\": the boot order has a cycle: \
         \"g\" before \"dm\" (boot-order 1 < 5), \"dm\" before \"g\" (its device model)"
    );
    let ConfigErrorKind::BootOrderCycle(BootCycle(steps)) = &err.kind else {
        panic!("{err}");
    };
    assert_eq!(steps.len(), 2);
}

#[test]
fn device_models_serving_each_other_are_a_cycle() {
    let cfg = parse(&[
        Domain::new("x").set(P_DEVICE_MODEL, string("z")),
        Domain::new("y").set(P_DEVICE_MODEL, string("x")),
        Domain::new("z").set(P_DEVICE_MODEL, string("y")),
        Domain::new("free"),
    ])
    .unwrap();
    let err = cfg.boot_order().unwrap_err();
    assert_eq!(err.node.as_str(), "/chosen/x");
    assert_eq!(
        err.kind.to_string(),
        "the boot order has a cycle: \"x\" before \"y\" (its device model), \
         \"y\" before \"z\" (its device model), \"z\" before \"x\" (its device model)"
    );
}

#[test]
fn a_boot_domain_ranked_after_others_is_a_cycle() {
    let cfg = parse(&[
        Domain::new("g"),
        Domain::new("domb")
            .set(P_FUNCTIONS, strings(&["boot"]))
            .set(P_BOOT_ORDER, cells(&[1])),
    ])
    .unwrap();
    let err = cfg.boot_order().unwrap_err();
    assert_eq!(
        err.to_string(),
        "/chosen/g: property \"boot-order\": the boot order has a cycle: \
         \"g\" before \"domb\" (boot-order 0 < 1), \"domb\" before \"g\" (the boot domain)"
    );
}

#[test]
fn boot_order_errors() {
    for bad in [vec![], cells(&[1, 2]), string("1")] {
        let len = bad.len();
        expect_error(
            Domain::new("a").set(P_BOOT_ORDER, bad),
            "/chosen/a",
            Some(P_BOOT_ORDER),
            ConfigErrorKind::BootOrderBadLength { len },
        );
    }
}

#[test]
fn on_crash_and_restart_backoff() {
    let cfg = parse(&[
        Domain::new("a").set(P_ON_CRASH, string("stop")),
        Domain::new("b")
            .set(P_ON_CRASH, string("restart"))
            .set(P_RESTART_BACKOFF, cells(&[250])),
        Domain::new("c").set(P_ON_CRASH, string("reboot")),
        Domain::new("d").set(P_ON_CRASH, string("restart")),
    ])
    .unwrap();
    let got: Vec<(OnCrash, Option<u32>)> = cfg
        .domains
        .iter()
        .map(|d| (d.on_crash, d.restart_backoff_ms))
        .collect();
    assert_eq!(
        got,
        [
            (OnCrash::Stop, None),
            (OnCrash::Restart, Some(250)),
            (OnCrash::Reboot, None),
            (OnCrash::Restart, None),
        ]
    );
}

#[test]
fn on_crash_errors() {
    for bad in [string("destroy"), string(""), cells(&[1]), b"stop".to_vec()] {
        expect_error(
            Domain::new("a").set(P_ON_CRASH, bad),
            "/chosen/a",
            Some(P_ON_CRASH),
            ConfigErrorKind::OnCrashInvalid,
        );
    }
    let restart = || Domain::new("a").set(P_ON_CRASH, string("restart"));
    expect_error(
        restart().set(P_RESTART_BACKOFF, cells(&[0, 1])),
        "/chosen/a",
        Some(P_RESTART_BACKOFF),
        ConfigErrorKind::RestartBackoffBadLength { len: 8 },
    );
    expect_error(
        Domain::new("a").set(P_RESTART_BACKOFF, cells(&[100])),
        "/chosen/a",
        Some(P_RESTART_BACKOFF),
        ConfigErrorKind::RestartBackoffWithoutRestart { on_crash: "stop" },
    );
    expect_error(
        Domain::new("a")
            .set(P_ON_CRASH, string("reboot"))
            .set(P_RESTART_BACKOFF, cells(&[100])),
        "/chosen/a",
        Some(P_RESTART_BACKOFF),
        ConfigErrorKind::RestartBackoffWithoutRestart { on_crash: "reboot" },
    );
}

#[test]
fn pcpus_pin_vcpus_in_order() {
    let four = |pins: &[u32]| {
        Domain::new("a")
            .set(P_CPUS, cells(&[4]))
            .set(P_PCPUS, cells(pins))
    };
    let cfg = parse(&[four(&[3, 0, 2, 1])]).unwrap();
    assert_eq!(cfg.domains[0].pcpus.as_slice(), [3, 0, 2, 1]);
    // Fewer pins than vCPUs parse; `cargo xtask check` reports them.
    let cfg = parse(&[four(&[MAX_PCPUS - 1])]).unwrap();
    assert_eq!(cfg.domains[0].pcpus.as_slice(), [MAX_PCPUS - 1]);
}

#[test]
fn pcpu_errors() {
    let two = |v: Vec<u8>| Domain::new("a").set(P_PCPUS, v);
    for bad in [vec![], vec![0, 0, 0], vec![0, 0, 0, 1, 0]] {
        let len = bad.len();
        expect_error(
            two(bad),
            "/chosen/a",
            Some(P_PCPUS),
            ConfigErrorKind::PcpusBadLength { len },
        );
    }
    expect_error(
        two(cells(&[0, 1, 2])),
        "/chosen/a",
        Some(P_PCPUS),
        ConfigErrorKind::PcpusMoreThanVcpus { count: 3, vcpus: 2 },
    );
    expect_error(
        two(cells(&[1, MAX_PCPUS])),
        "/chosen/a",
        Some(P_PCPUS),
        ConfigErrorKind::PcpuOutOfRange { pcpu: MAX_PCPUS },
    );
    let err = expect_error(
        two(cells(&[5, 5])),
        "/chosen/a",
        Some(P_PCPUS),
        ConfigErrorKind::PcpuDuplicate { pcpu: 5 },
    );
    assert_eq!(
        err.to_string(),
        "/chosen/a: property \"tessera,pcpus\": pCPU 5 is listed twice"
    );
}
