//! Turning an image directory (`system.dts`, optionally `policy.te`, plus
//! payload files) into `tessera.img`: compile the description, check it with
//! the parser the kernel runs, compile the access-control policy and check the
//! description against it, resolve every module it names, and pack.
//!
//! The one idea: the build runs exactly the parser the kernel runs at boot
//! (`tessera_sysdesc::config::parse_system`) and asks the policy the questions
//! the kernel will ask, so a description the kernel would reject never
//! becomes an image, and the error names node and property, or the domain
//! and the missing rule.

use crate::error::{io, Error};
use crate::flat::{flatten_file, FlatBinary};
use crate::mac::check_system;
use crate::pack::{pack, Module};
use crate::tools::{compile_dts, release_binary, GUEST_TARGET, KERNEL_TARGET};
use std::path::{Path, PathBuf};
use tessera_ipc::image::ModuleKind;
use tessera_sysdesc::config::SystemConfig;

/// The module name that means "the test guest built from this workspace".
pub const TESTGUEST_MODULE: &str = "testguest";
/// The built-in module name of the device-model domain.
pub const DEVMODEL_MODULE: &str = "devmodel";
/// The built-in module name of the boot domain (domB), which builds the
/// other domains of a hyperlaunch image.
pub const DOMB_MODULE: &str = "domb";
/// The module name that means "Debian's arm64 kernel `Image`" (fetched
/// and cached by [`crate::linux`]).
pub const DEBIAN_LINUX_MODULE: &str = "debian-linux";
/// The module name that means "the Linux test initramfs" built by
/// [`crate::linux`] around Debian's busybox and the kernel's virtio modules.
pub const DEBIAN_INITRAMFS_MODULE: &str = "debian-initramfs";
/// Module names `blank-disk-<N>m` mean a zero-filled disk image of N MiB
/// (for a device model's disk store), so images need not carry files of
/// zeros.
pub const BLANK_DISK_PREFIX: &str = "blank-disk-";
/// The largest blank disk, in MiB: every module is hashed at boot and
/// copied into its domain's RAM.
pub const MAX_BLANK_DISK_MIB: usize = 256;
/// The name under which the system description itself is packed.
pub const SYSTEM_DTB_MODULE: &str = "system.dtb";
/// The name under which the compiled policy is packed.
pub const POLICY_MODULE: &str = "policy";
/// An image's own policy source, next to its `system.dts`.
pub const POLICY_SOURCE: &str = "policy.te";
/// The policy an image without its own `policy.te` gets, from the repository
/// root.
pub const DEFAULT_POLICY: &str = "policy/default.te";
/// Next to `system.dts`: which module each `reg` load address names, for
/// module nodes written as Xen's dom0less trees write them (no
/// `tessera,module`; see [`parse_module_map`]).
pub const MODULE_MAP: &str = "modules.map";

/// Payloads built from the workspace, by module name.
pub struct BuiltPayloads {
    pub testguest: Vec<u8>,
    pub devmodel: Vec<u8>,
    pub domb: Vec<u8>,
}

/// A compiled, validated system description and the policy it was checked
/// against.
pub struct Description {
    pub dtb: Vec<u8>,
    /// The compiled policy binary.
    pub policy: Vec<u8>,
    /// The `policy.te` it was compiled from.
    pub policy_source: PathBuf,
    /// What the policy denies but a permissive image lets through.
    pub warnings: Vec<String>,
    /// (name, kind) of every module it references, in first-use order.
    pub modules: Vec<(String, ModuleKind)>,
}

/// The policy source for `image_dir`: its own `policy.te` if it has one,
/// else the default image's.
pub fn policy_source(image_dir: &Path) -> PathBuf {
    let own = image_dir.join(POLICY_SOURCE);
    if own.is_file() {
        own
    } else {
        crate::repo_root().join(DEFAULT_POLICY)
    }
}

/// Compiles the TE source at `path` to a policy binary. An error names the
/// file, line and column.
pub fn compile_policy(path: &Path) -> Result<Vec<u8>, Error> {
    let source = std::fs::read_to_string(path).map_err(io(path))?;
    tessera_policy::compile::compile(&source).map_err(|e| Error::PolicySyntax {
        path: path.to_path_buf(),
        line: e.span.line,
        column: e.span.column,
        message: e.kind.to_string(),
    })
}

/// Compiles and validates `<image_dir>/system.dts`, then compiles the
/// image's policy and checks the description against it.
pub fn load_description(image_dir: &Path) -> Result<Description, Error> {
    let dts = image_dir.join("system.dts");
    if !dts.is_file() {
        return Err(Error::Config {
            path: dts,
            message: "no such file; an image directory needs a system.dts".into(),
        });
    }
    let dtb = compile_dts(&dts)?;
    let config = tessera_sysdesc::config::parse_system(&dtb).map_err(|e| Error::Config {
        path: dts.clone(),
        message: e.to_string(),
    })?;

    let modules = modules_of(&config)?;

    let policy_source = policy_source(image_dir);
    let policy = compile_policy(&policy_source)?;
    let loaded = tessera_policy::Policy::load(&policy).map_err(|e| {
        Error::Pack(format!(
            "the policy compiled from {} does not load ({e}); this is a compiler bug",
            policy_source.display()
        ))
    })?;
    // A permissive image is for writing the policy: the kernel logs a
    // denied link and sets it up anyway, so the build only warns. A label
    // the policy lacks has no SID at all, so it fails in either mode.
    let (warned, failed): (Vec<_>, Vec<_>) = check_system(&config, &loaded)
        .into_iter()
        .partition(|v| v.is_link() && !config.policy_enforcing);
    if !failed.is_empty() {
        return Err(Error::PolicyCheck {
            description: dts,
            policy: policy_source,
            problems: failed.iter().map(ToString::to_string).collect(),
        });
    }
    let warnings = warned
        .iter()
        .map(|v| {
            format!(
                "{}: {v} (permissive image: the kernel will log the denial and allow it)",
                dts.display()
            )
        })
        .chain(
            unserved_vpl011(&config)
                .into_iter()
                .map(|w| format!("{}: {w}", dts.display())),
        )
        .collect();
    Ok(Description {
        dtb,
        policy,
        policy_source,
        modules,
        warnings,
    })
}

/// One line per domain that asks for `vpl011` with no device model to
/// emulate it (a tree written for Xen): it boots with no PL011 and writes
/// to the hypervisor console.
pub fn unserved_vpl011(config: &SystemConfig) -> Vec<String> {
    config
        .domains
        .iter()
        .enumerate()
        .filter(|(_, d)| d.vpl011_unserved)
        .map(|(i, d)| {
            format!(
                "{} has vpl011 but no tessera,device-model: no PL011 is emulated, its console \
                 is the hypervisor console (console_io)",
                crate::mac::DomainRef::new(i, d)
            )
        })
        .collect()
}

/// Every module `config` names, with its kind, in first-use order. A name
/// used both as a kernel and as a ramdisk, or the compiled policy's name,
/// is an error.
pub fn modules_of(config: &SystemConfig) -> Result<Vec<(String, ModuleKind)>, Error> {
    let mut modules: Vec<(String, ModuleKind)> = Vec::new();
    let mut add = |name: &str, kind: ModuleKind| -> Result<(), Error> {
        match modules.iter().find(|(n, _)| n == name) {
            Some((_, k)) if *k != kind => Err(Error::BadModule {
                name: name.into(),
                reason: format!("used both as {k:?} and as {kind:?}"),
            }),
            Some(_) => Ok(()),
            None => {
                modules.push((name.into(), kind));
                Ok(())
            }
        }
    };
    if config.module_names().any(|name| name == POLICY_MODULE) {
        return Err(Error::BadModule {
            name: POLICY_MODULE.into(),
            reason: "the name is reserved for the compiled policy; rename the file".into(),
        });
    }
    for domain in &config.domains {
        add(domain.kernel.name.as_str(), ModuleKind::Kernel)?;
        if let Some(ramdisk) = &domain.ramdisk {
            add(ramdisk.name.as_str(), ModuleKind::Ramdisk)?;
        }
    }
    // Every name the description references must be packed; one we cannot
    // classify would boot without its payload, so refuse it here.
    for name in config.module_names() {
        if !modules.iter().any(|(n, _)| n == name) {
            return Err(Error::BadModule {
                name: name.into(),
                reason: "referenced by system.dts but neither a domain kernel nor a ramdisk".into(),
            });
        }
    }
    Ok(modules)
}

/// Where the bytes of a module come from, decided from its name alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    /// The test guest built from this workspace.
    TestGuest,
    /// The device model built from this workspace.
    DevModel,
    /// The boot domain built from this workspace.
    DomB,
    /// Debian's kernel (fetched and cached by [`crate::linux`]).
    DebianLinux,
    /// The Linux test initramfs built by [`crate::linux`].
    DebianInitramfs,
    /// A zero-filled disk of this many MiB.
    BlankDisk { mib: usize },
    /// A file next to `system.dts`.
    File(PathBuf),
}

/// Where module `name` comes from, without building or fetching anything:
/// a built-in payload, a blank disk, or a file next to `system.dts` that
/// exists. `cargo xtask check` uses this to report a missing module.
pub fn module_source(name: &str, image_dir: &Path) -> Result<ModuleSource, Error> {
    if let Some(address) = tessera_sysdesc::config::load_address_of(name) {
        return reg_module_source(name, address, image_dir);
    }
    match name {
        TESTGUEST_MODULE => return Ok(ModuleSource::TestGuest),
        DEVMODEL_MODULE => return Ok(ModuleSource::DevModel),
        DOMB_MODULE => return Ok(ModuleSource::DomB),
        DEBIAN_LINUX_MODULE => return Ok(ModuleSource::DebianLinux),
        DEBIAN_INITRAMFS_MODULE => return Ok(ModuleSource::DebianInitramfs),
        _ => {}
    }
    if let Some(size) = name.strip_prefix(BLANK_DISK_PREFIX) {
        return blank_disk(size)
            .map(|mib| ModuleSource::BlankDisk { mib })
            .map_err(|reason| Error::BadModule {
                name: name.into(),
                reason,
            });
    }
    let path = image_dir.join(name);
    // A module name is a plain file name, never a path out of the image.
    if name.contains('/') || name == ".." || !path.is_file() {
        return Err(Error::UnknownModule {
            name: name.into(),
            image: image_dir.to_path_buf(),
        });
    }
    Ok(ModuleSource::File(path))
}

/// Parses a module map: one `<address> <module>` pair per line, the
/// address as a boot loader's load command gives it (`0x42e00000`, or
/// decimal), the module as `tessera,module` would name it (a built-in
/// payload or a file next to `system.dts`). `#` starts a comment; blank
/// lines are ignored. These are exactly the pairs of the load commands in
/// the boot script ImageBuilder writes with the tree (`tftpb 0x42e00000
/// Image`). An error names the line.
pub fn parse_module_map(text: &str) -> Result<Vec<(u64, String)>, String> {
    let mut map: Vec<(u64, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| format!("{MODULE_MAP}:{}: {why}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let [address, module] = words.as_slice() else {
            return Err(at(format!("expected `<address> <module>`, found `{line}`")));
        };
        let parsed = match address
            .strip_prefix("0x")
            .or_else(|| address.strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => address.parse::<u64>().ok(),
        };
        let Some(address_value) = parsed else {
            return Err(at(format!("`{address}` is not an address")));
        };
        if tessera_sysdesc::config::load_address_of(module).is_some() {
            return Err(at(format!(
                "`{module}` is itself a reg name; map the address to a payload"
            )));
        }
        if let Some((_, other)) = map.iter().find(|(a, _)| *a == address_value) {
            return Err(at(format!(
                "{address_value:#x} is mapped twice (to `{other}` and `{module}`)"
            )));
        }
        map.push((address_value, (*module).to_string()));
    }
    Ok(map)
}

/// Where the module a node names by `reg` at `address` comes from: the
/// module the image's `modules.map` maps that address to.
fn reg_module_source(name: &str, address: u64, image_dir: &Path) -> Result<ModuleSource, Error> {
    let bad = |reason: String| Error::BadModule {
        name: name.into(),
        reason,
    };
    let path = image_dir.join(MODULE_MAP);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "a module node names it by reg only (no tessera,module), so {} must map {address:#x} \
             to a payload: {e}",
            path.display()
        ))
    })?;
    let map = parse_module_map(&text).map_err(|e| bad(format!("{} ({e})", path.display())))?;
    let (_, module) = map
        .iter()
        .find(|(a, _)| *a == address)
        .ok_or_else(|| bad(format!("{} does not map {address:#x}", path.display())))?;
    module_source(module, image_dir)
}

/// Finds the bytes of module `name`: a workspace payload, a Debian Linux
/// payload (fetched on first use), or a file next to `system.dts`.
pub fn resolve_module(
    name: &str,
    image_dir: &Path,
    payloads: &BuiltPayloads,
) -> Result<Vec<u8>, Error> {
    let debian = |pick: fn(crate::linux::LinuxPayloads) -> PathBuf| {
        let linux = crate::linux::ensure_payloads().map_err(|e| Error::BadModule {
            name: name.into(),
            reason: e.to_string(),
        })?;
        let path = pick(linux);
        std::fs::read(&path).map_err(io(path))
    };
    match module_source(name, image_dir)? {
        ModuleSource::TestGuest => Ok(payloads.testguest.clone()),
        ModuleSource::DevModel => Ok(payloads.devmodel.clone()),
        ModuleSource::DomB => Ok(payloads.domb.clone()),
        ModuleSource::DebianLinux => debian(|linux| linux.image),
        ModuleSource::DebianInitramfs => debian(|linux| linux.initramfs),
        ModuleSource::BlankDisk { mib } => Ok(vec![0; mib << 20]),
        ModuleSource::File(path) => std::fs::read(&path).map_err(io(path)),
    }
}

/// The size in MiB of a blank disk named `blank-disk-<size>`.
fn blank_disk(size: &str) -> Result<usize, String> {
    let bad = || {
        format!(
            "a blank disk is named {BLANK_DISK_PREFIX}<N>m, with N from 1 to {MAX_BLANK_DISK_MIB} (MiB)"
        )
    };
    let mib: usize = size
        .strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if !(1..=MAX_BLANK_DISK_MIB).contains(&mib) {
        return Err(bad());
    }
    Ok(mib)
}

/// Builds the image for `image_dir` from an already-flattened kernel.
pub fn build_image(
    image_dir: &Path,
    kernel: &FlatBinary,
    payloads: &BuiltPayloads,
) -> Result<Vec<u8>, Error> {
    pack_description(load_description(image_dir)?, image_dir, kernel, payloads)
}

/// Packs an already-loaded description: the system DTB, the policy, then
/// every payload it names.
pub fn pack_description(
    description: Description,
    image_dir: &Path,
    kernel: &FlatBinary,
    payloads: &BuiltPayloads,
) -> Result<Vec<u8>, Error> {
    let mut modules = vec![
        Module {
            name: SYSTEM_DTB_MODULE.into(),
            kind: ModuleKind::SystemDtb,
            data: description.dtb,
        },
        Module {
            name: POLICY_MODULE.into(),
            kind: ModuleKind::Policy,
            data: description.policy,
        },
    ];
    for (name, kind) in description.modules {
        let data = resolve_module(&name, image_dir, payloads)?;
        modules.push(Module { name, kind, data });
    }
    pack(&kernel.bytes, kernel.footprint, &modules)
}

/// The built kernel and payloads, flattened, with the test guest also
/// written out as `target/images/testguest.bin` for native runs.
pub struct Artefacts {
    pub kernel: FlatBinary,
    pub payloads: BuiltPayloads,
}

/// Flattens the release binaries that `tools::build_binaries` produced.
pub fn flatten_artefacts() -> Result<Artefacts, Error> {
    let kernel = flatten_file(&release_binary(KERNEL_TARGET, "tessera-kernel"))?;
    let testguest = flatten_file(&release_binary(GUEST_TARGET, "tessera-testguest"))?;
    let bin = testguest_bin();
    write_file(&bin, &testguest.bytes)?;
    Ok(Artefacts {
        kernel,
        payloads: BuiltPayloads {
            testguest: testguest.bytes,
            devmodel: flatten_file(&release_binary(GUEST_TARGET, "tessera-devmodel"))?.bytes,
            domb: flatten_file(&release_binary(GUEST_TARGET, "tessera-domb"))?.bytes,
        },
    })
}

/// The flat test-guest binary, bootable bare on QEMU (`-append "native …"`).
pub fn testguest_bin() -> PathBuf {
    crate::images_dir().join("testguest.bin")
}

/// Output path of an image directory: `target/images/<dir name>/tessera.img`.
pub fn image_output(image_dir: &Path) -> PathBuf {
    let name = image_dir
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    crate::images_dir().join(name).join("tessera.img")
}

/// Builds `image_dir` and writes it to [`image_output`].
/// Policy warnings go to stderr.
pub fn build_and_write(image_dir: &Path, artefacts: &Artefacts) -> Result<PathBuf, Error> {
    let description = load_description(image_dir)?;
    for warning in &description.warnings {
        eprintln!("warning: {warning}");
    }
    let image = pack_description(
        description,
        image_dir,
        &artefacts.kernel,
        &artefacts.payloads,
    )?;
    let out = image_output(image_dir);
    write_file(&out, &image)?;
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{read_table, table_offset};
    use crate::tools::{find_program, DTC};
    use tessera_policy::Policy;
    use tessera_sysdesc::config::ModuleSpec;

    #[test]
    fn a_module_map_pairs_load_addresses_with_payloads() {
        let map = parse_module_map(
            "# ImageBuilder's load commands\n\
             0x42e00000 testguest   # domU0\n\
             \n\
             1124073472\tdebian-linux\n\
             0X43200000 initrd.cpio\n",
        )
        .unwrap();
        assert_eq!(
            map,
            [
                (0x42e0_0000, "testguest".to_string()),
                (0x4300_0000, "debian-linux".to_string()),
                (0x4320_0000, "initrd.cpio".to_string()),
            ]
        );
        assert_eq!(parse_module_map(""), Ok(vec![]));
    }

    #[test]
    fn module_map_errors_name_the_line() {
        for (text, why) in [
            (
                "0x1000\n",
                "modules.map:1: expected `<address> <module>`, found `0x1000`",
            ),
            (
                "\n0x1000 a b\n",
                "modules.map:2: expected `<address> <module>`",
            ),
            ("0xfoo a\n", "modules.map:1: `0xfoo` is not an address"),
            ("-1 a\n", "modules.map:1: `-1` is not an address"),
            ("0x10000000000000000 a\n", "is not an address"),
            (
                "0x1000 a\n4096 b\n",
                "modules.map:2: 0x1000 is mapped twice (to `a` and `b`)",
            ),
            ("0x1000 reg@0x2000\n", "`reg@0x2000` is itself a reg name"),
        ] {
            let e = parse_module_map(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_reg_named_module_resolves_through_the_map() {
        let dir = TempDir::new("regmap");
        std::fs::write(dir.0.join("Image"), b"kernel").unwrap();
        let reg = |a: u64| ModuleSpec::from_load_address(a).name.to_string();
        let missing = module_source(&reg(0x4200_0000), &dir.0)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("names it by reg only") && missing.contains("modules.map"),
            "{missing}"
        );
        std::fs::write(
            dir.0.join(MODULE_MAP),
            "0x42000000 Image\n0x44000000 testguest\n0x46000000 nothing-here\n",
        )
        .unwrap();
        assert_eq!(
            module_source(&reg(0x4200_0000), &dir.0).unwrap(),
            ModuleSource::File(dir.0.join("Image"))
        );
        assert_eq!(
            module_source(&reg(0x4400_0000), &dir.0).unwrap(),
            ModuleSource::TestGuest
        );
        let unmapped = module_source(&reg(0x4800_0000), &dir.0)
            .unwrap_err()
            .to_string();
        assert!(unmapped.contains("does not map 0x48000000"), "{unmapped}");
        assert!(matches!(
            module_source(&reg(0x4600_0000), &dir.0),
            Err(Error::UnknownModule { .. })
        ));
        std::fs::write(dir.0.join(MODULE_MAP), "garbage\n").unwrap();
        let bad = module_source(&reg(0x4200_0000), &dir.0)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("modules.map:1: expected"), "{bad}");
    }

    /// Builds a DTB the way ImageBuilder's `uboot-script-gen` does when it
    /// edits a device tree itself (`FDTEDIT`): its `dt_set` calls are
    /// `fdtput FILE -p -t x|i|s PATH PROP VALUE...`, creating nodes as
    /// needed. These are its calls for the config in
    /// `images/dom0less-example/system.dts`, in its order (domain by domain:
    /// the node, then the kernel module named `module$addr`).
    fn imagebuilder_tree(dir: &Path) -> Vec<u8> {
        let file = dir.join("imagebuilder.dtb");
        std::fs::write(dir.join("board.dts"), "/dts-v1/;\n/ { chosen { }; };\n").unwrap();
        std::fs::write(&file, compile_dts(&dir.join("board.dts")).unwrap()).unwrap();
        let fdtput = |ty: &str, path: &str, prop: &str, values: &[&str]| {
            let status = std::process::Command::new("fdtput")
                .arg(&file)
                .args(["-p", "-t", ty, path, prop])
                .args(values)
                .status()
                .unwrap();
            assert!(status.success(), "fdtput {path} {prop}");
        };
        fdtput("x", "/chosen", "#address-cells", &["0x2"]);
        fdtput("x", "/chosen", "#size-cells", &["0x2"]);
        fdtput(
            "s",
            "/chosen",
            "xen,xen-bootargs",
            &["console=dtuart dtuart=serial0 bootscrub=0 vwfi=native sched=null"],
        );
        for (i, addr, cmd) in [
            (0, "0x40400000", "console=ttyAMA0 test=ticker"),
            (1, "0x40600000", "console=ttyAMA0 test=hypercalls"),
        ] {
            let domain = format!("/chosen/domU{i}");
            fdtput("s", &domain, "compatible", &["xen,domain"]);
            fdtput("x", &domain, "#address-cells", &["0x2"]);
            fdtput("x", &domain, "#size-cells", &["0x2"]);
            fdtput("i", &domain, "memory", &["0", "16384"]);
            fdtput("i", &domain, "cpus", &["1"]);
            fdtput("x", &domain, "vpl011", &["0x1"]);
            let module = format!("{domain}/module{addr}");
            fdtput(
                "s",
                &module,
                "compatible",
                &["multiboot,kernel", "multiboot,module"],
            );
            fdtput("x", &module, "reg", &["0x0", addr, "0x0", "0x44000"]);
            fdtput("s", &module, "bootargs", &[cmd]);
        }
        std::fs::read(&file).unwrap()
    }

    #[test]
    fn the_dom0less_example_is_what_imagebuilder_writes() {
        if !have_dtc() || find_program("fdtput").is_none() {
            eprintln!("skipped: dtc and fdtput are needed (run scripts/setup.sh)");
            return;
        }
        let dir = TempDir::new("imagebuilder");
        let generated = tessera_sysdesc::config::parse_system(&imagebuilder_tree(&dir.0)).unwrap();
        let example = crate::repo_root().join("images").join("dom0less-example");
        let ours = tessera_sysdesc::config::parse_system(
            &compile_dts(&example.join("system.dts")).unwrap(),
        )
        .unwrap();
        // The same system, node names of modules aside (Tessera reads none).
        assert_eq!(generated, ours);
        // libfdt puts each new node first: ImageBuilder's domU1 is d1.
        assert_eq!(ours.domains[0].name.as_str(), "domU1");
        assert_eq!(ours.domains[1].kernel.load_address(), Some(0x4040_0000));
        assert!(ours.domains.iter().all(|d| d.vpl011_unserved && !d.vpl011));
        // And every module it names resolves through the example's map.
        for name in ours.module_names() {
            assert_eq!(
                module_source(name, &example).unwrap(),
                ModuleSource::TestGuest,
                "{name}"
            );
        }
    }

    #[test]
    fn blank_disks_are_named_by_size_in_mib() {
        assert_eq!(blank_disk("8m"), Ok(8));
        assert_eq!(blank_disk("256m"), Ok(MAX_BLANK_DISK_MIB));
        for bad in ["", "m", "0m", "8", "8M", "-1m", "257m", "8mm", "x8m"] {
            let e = blank_disk(bad).unwrap_err();
            assert!(e.contains("blank-disk-<N>m"), "{bad}: {e}");
        }
    }

    /// Tests that need dtc say so and pass when it is missing, so a plain
    /// `cargo test` works before `scripts/setup.sh` (CI runs setup first).
    fn have_dtc() -> bool {
        let found = find_program(DTC).is_some();
        if !found {
            eprintln!("skipped: dtc is not installed (run scripts/setup.sh)");
        }
        found
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn system_dts(domain: &str, cpus: &str, modules: &str) -> String {
        format!(
            r#"/dts-v1/;
/ {{
    #address-cells = <2>; #size-cells = <2>;
    chosen {{
        #address-cells = <1>; #size-cells = <1>;
        {domain} {{
            compatible = "xen,domain";
            #address-cells = <1>; #size-cells = <1>;
            memory = <0x0 0x4000>;
            cpus = {cpus};
            {modules}
        }};
    }};
}};
"#
        )
    }

    const KERNEL_MODULE: &str = r#"module@0 {
                compatible = "multiboot,kernel", "multiboot,module";
                tessera,module = "KERNEL";
                bootargs = "test=hypercalls";
            };"#;

    fn fake_kernel() -> FlatBinary {
        let mut bytes = vec![0u8; 4096];
        bytes[56..60].copy_from_slice(&tessera_ipc::image::ARM64_IMAGE_MAGIC.to_le_bytes());
        FlatBinary {
            bytes,
            footprint: 0x2_0000,
        }
    }

    fn payloads() -> BuiltPayloads {
        BuiltPayloads {
            testguest: b"guest payload".to_vec(),
            devmodel: b"device model".to_vec(),
            domb: b"boot domain".to_vec(),
        }
    }

    #[test]
    fn an_image_round_trips_with_the_system_dtb_first() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("roundtrip");
        let dts = system_dts("hc", "<1>", &KERNEL_MODULE.replace("KERNEL", "testguest"));
        std::fs::write(dir.0.join("system.dts"), dts).unwrap();
        let image = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();
        let modules = read_table(&image, table_offset(0x2_0000)).unwrap();
        assert_eq!(modules[0].name, SYSTEM_DTB_MODULE);
        assert_eq!(modules[0].kind, ModuleKind::SystemDtb);
        assert_eq!(&modules[0].data[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
        assert_eq!(modules[2].name, TESTGUEST_MODULE);
        assert_eq!(modules[2].kind, ModuleKind::Kernel);
        assert_eq!(modules[2].data, payloads().testguest);
    }

    #[test]
    fn an_image_without_policy_te_gets_the_default_policy() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("default-policy");
        let dts = system_dts("hc", "<1>", &KERNEL_MODULE.replace("KERNEL", "testguest"));
        std::fs::write(dir.0.join("system.dts"), dts).unwrap();
        let image = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();
        let modules = read_table(&image, table_offset(0x2_0000)).unwrap();
        assert_eq!(modules[1].name, POLICY_MODULE);
        assert_eq!(modules[1].kind, ModuleKind::Policy);
        let default = std::fs::read_to_string(crate::repo_root().join(DEFAULT_POLICY)).unwrap();
        assert_eq!(
            modules[1].data,
            tessera_policy::compile::compile(&default).unwrap()
        );
        let policy = Policy::load(&modules[1].data).unwrap();
        assert!(policy
            .sid_of(tessera_policy::DEFAULT_DOMAIN_LABEL)
            .is_some());
    }

    /// A domain with its own label, and an image policy that defines it.
    fn labelled_image(tag: &str, label: &str, policy: Option<&str>) -> TempDir {
        let dir = TempDir::new(tag);
        let body = format!(
            "xen,security-label = \"{label}\";\n{}",
            KERNEL_MODULE.replace("KERNEL", "testguest")
        );
        std::fs::write(dir.0.join("system.dts"), system_dts("hc", "<1>", &body)).unwrap();
        if let Some(policy) = policy {
            std::fs::write(dir.0.join(POLICY_SOURCE), policy).unwrap();
        }
        dir
    }

    const HC_POLICY: &str = "user system_u;\nrole system_r;\ntype hc_t;\n\
                             allow hc_t self:domain shutdown;\ntype console_t;\n";

    #[test]
    fn an_images_own_policy_te_is_compiled_and_packed() {
        if !have_dtc() {
            return;
        }
        let dir = labelled_image("own-policy", "system_u:system_r:hc_t", Some(HC_POLICY));
        let image = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();
        let modules = read_table(&image, table_offset(0x2_0000)).unwrap();
        let policy = modules
            .iter()
            .find(|m| m.kind == ModuleKind::Policy)
            .unwrap();
        assert_eq!(policy.name, POLICY_MODULE);
        let policy = Policy::load(&policy.data).unwrap();
        assert_eq!(policy.type_count(), 2);
        assert!(policy.sid_of("system_u:system_r:hc_t").is_some());
        assert_eq!(policy_source(&dir.0), dir.0.join(POLICY_SOURCE));
    }

    #[test]
    fn a_policy_compile_error_fails_with_file_line_and_column() {
        if !have_dtc() {
            return;
        }
        let broken = HC_POLICY.replace("shutdown", "shutdwon");
        let dir = labelled_image("bad-policy", "system_u:system_r:hc_t", Some(&broken));
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(matches!(err, Error::PolicySyntax { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:4:24: unknown permission \"shutdwon\" for class domain",
                dir.0.join(POLICY_SOURCE).display()
            )
        );
    }

    #[test]
    fn a_label_the_policy_lacks_fails_naming_domain_and_label() {
        if !have_dtc() {
            return;
        }
        // The default policy has no hc_t.
        let dir = labelled_image("unknown-label", "system_u:system_r:hc_t", None);
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(matches!(err, Error::PolicyCheck { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: domain d1 \"hc\": security label \"system_u:system_r:hc_t\" is not a \
                 context of the policy: the policy declares no type \"hc_t\"\n",
                dir.0.join("system.dts").display()
            )),
            "{message}"
        );
        assert!(
            message.ends_with(&format!("{DEFAULT_POLICY})")),
            "{message}"
        );
    }

    #[test]
    fn a_module_may_not_take_the_policys_name() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("policy-name");
        std::fs::write(
            dir.0.join("system.dts"),
            system_dts("hc", "<1>", &KERNEL_MODULE.replace("KERNEL", POLICY_MODULE)),
        )
        .unwrap();
        std::fs::write(dir.0.join(POLICY_MODULE), b"a guest").unwrap();
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(
            matches!(&err, Error::BadModule { name, reason } if name == POLICY_MODULE && reason.contains("reserved")),
            "{err}"
        );
    }

    #[test]
    fn a_module_file_next_to_the_description_is_packed() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("file-module");
        std::fs::write(
            dir.0.join("system.dts"),
            system_dts("hc", "<1>", &KERNEL_MODULE.replace("KERNEL", "custom.bin")),
        )
        .unwrap();
        std::fs::write(dir.0.join("custom.bin"), b"custom").unwrap();
        let image = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();
        let modules = read_table(&image, table_offset(0x2_0000)).unwrap();
        assert_eq!(
            (modules[2].name.as_str(), modules[2].data.as_slice()),
            ("custom.bin", &b"custom"[..])
        );
    }

    #[test]
    fn a_missing_module_fails_naming_it() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("missing-module");
        std::fs::write(
            dir.0.join("system.dts"),
            system_dts("hc", "<1>", &KERNEL_MODULE.replace("KERNEL", "nowhere.bin")),
        )
        .unwrap();
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownModule { name, .. } if name == "nowhere.bin"),
            "{err}"
        );
        assert!(err.to_string().contains("nowhere.bin"), "{err}");
    }

    /// The `bad-system-dts` system test: a malformed property fails the
    /// build with a message naming its node and property.
    #[test]
    fn a_malformed_property_fails_naming_node_and_property() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("bad-cpus");
        std::fs::write(
            dir.0.join("system.dts"),
            system_dts(
                "hc",
                "\"two\"",
                &KERNEL_MODULE.replace("KERNEL", "testguest"),
            ),
        )
        .unwrap();
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{message}");
        assert!(
            message.contains("/chosen/hc"),
            "the error must name the node: {message}"
        );
        assert!(
            message.contains("cpus"),
            "the error must name the property: {message}"
        );
    }

    #[test]
    fn a_syntax_error_fails_with_dtcs_message() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("syntax");
        std::fs::write(
            dir.0.join("system.dts"),
            "/dts-v1/;\n/ { chosen { oops }; };\n",
        )
        .unwrap();
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(
            matches!(&err, Error::Dtc { message, .. } if message.contains("syntax error")),
            "{err}"
        );
    }

    #[test]
    fn a_directory_without_system_dts_is_an_error() {
        let dir = TempDir::new("empty");
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        assert!(err.to_string().contains("system.dts"), "{err}");
    }

    /// The README's worked example: two domains with their own types and a
    /// static event channel, under the README's own policy.te.
    fn pingpong_dts(chosen_extra: &str) -> String {
        let domain = |name: &str, port: u32, me: &str, peer: &str| {
            format!(
                r#"{name} {{
            compatible = "xen,domain";
            #address-cells = <1>; #size-cells = <1>;
            memory = <0x0 0x4000>;
            cpus = <1>;
            xen,security-label = "system_u:system_r:{name}_t";
            module@0 {{
                compatible = "multiboot,kernel", "multiboot,module";
                tessera,module = "testguest";
            }};
            {me}: evtchn {{
                compatible = "xen,evtchn-v1";
                xen,evtchn = <{port} &{peer}>;
            }};
        }};"#
            )
        };
        format!(
            "/dts-v1/;\n/ {{\n    #address-cells = <2>; #size-cells = <2>;\n    chosen {{\n        \
             #address-cells = <1>; #size-cells = <1>;\n        {chosen_extra}\n        {}\n        {}\n    \
             }};\n}};\n",
            domain("ping", 10, "ping_end", "pong_end"),
            domain("pong", 11, "pong_end", "ping_end"),
        )
    }

    /// The body of the README's fenced block that starts with `lang` and
    /// contains `marker`.
    fn readme_block(lang: &str, marker: &str) -> String {
        let readme = std::fs::read_to_string(crate::repo_root().join("README.md")).unwrap();
        readme
            .split("```")
            .skip(1)
            .step_by(2)
            .filter_map(|block| block.strip_prefix(lang))
            .find(|body| body.contains(marker))
            .unwrap_or_else(|| panic!("README has no ```{lang} block with {marker:?}"))
            .trim_start_matches('\n')
            .to_string()
    }

    const LAST_RULE: &str = "allow pong_t ping_t:event { bind send };\n";

    #[test]
    fn the_readme_example_builds_and_fails_as_the_readme_says_without_its_rule() {
        if !have_dtc() {
            return;
        }
        let policy = readme_block("te", "type pong_t");
        assert!(policy.ends_with(LAST_RULE), "{policy}");
        let dir = TempDir::new("readme-pingpong");
        std::fs::write(dir.0.join("system.dts"), pingpong_dts("")).unwrap();
        std::fs::write(dir.0.join(POLICY_SOURCE), &policy).unwrap();
        build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();

        std::fs::write(dir.0.join(POLICY_SOURCE), policy.replace(LAST_RULE, "")).unwrap();
        let err = build_image(&dir.0, &fake_kernel(), &payloads()).unwrap_err();
        // As `cargo xtask build images/pingpong` prints it.
        let printed =
            format!("error: {err}\n").replace(&format!("{}/", dir.0.display()), "images/pingpong/");
        assert_eq!(printed, readme_block("\n", "error: images/pingpong"));
    }

    #[test]
    fn a_permissive_image_builds_with_a_warning_for_a_denied_link() {
        if !have_dtc() {
            return;
        }
        let policy = readme_block("te", "type pong_t").replace(LAST_RULE, "");
        let dir = TempDir::new("permissive");
        std::fs::write(
            dir.0.join("system.dts"),
            pingpong_dts(r#"tessera,policy-mode = "permissive";"#),
        )
        .unwrap();
        std::fs::write(dir.0.join(POLICY_SOURCE), &policy).unwrap();
        let description = load_description(&dir.0).unwrap();
        assert_eq!(
            description.warnings,
            [format!(
                "{}: static event channel d1 \"ping\" port 10 <-> d2 \"pong\" port 11 is not \
                 allowed by policy: missing allow pong_t ping_t:event bind (permissive image: \
                 the kernel will log the denial and allow it)",
                dir.0.join("system.dts").display()
            )]
        );
        build_image(&dir.0, &fake_kernel(), &payloads()).unwrap();

        // An unknown label still fails: the kernel could not label the domain.
        std::fs::write(
            dir.0.join(POLICY_SOURCE),
            policy.replace("user system_u;", "user staff_u;"),
        )
        .unwrap();
        let err = load_description(&dir.0).err().unwrap();
        assert!(matches!(err, Error::PolicyCheck { .. }), "{err}");
    }

    /// Every image in the repository compiles, parses and passes its policy
    /// check, so a policy edit that would break one fails here, not in QEMU.
    #[test]
    fn every_image_in_the_repository_passes_its_policy_check() {
        if !have_dtc() {
            return;
        }
        let root = crate::repo_root();
        let mut checked = 0;
        for parent in [root.join("images"), root.join("tests").join("images")] {
            for entry in std::fs::read_dir(&parent).unwrap() {
                let dir = entry.unwrap().path();
                if !dir.join("system.dts").is_file() {
                    continue;
                }
                // Warnings are allowed: a permissive image may deny a link on purpose.
                load_description(&dir).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        assert!(checked > 1, "no images found under {}", root.display());
    }
}
