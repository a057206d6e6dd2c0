//! The Debian arm64 Linux guest payloads: Debian 12's kernel and
//! busybox-static fetched with apt, and the test initramfs built from them.
//!
//! The one idea: apt's own metadata is the trust anchor. Each `.deb` is
//! downloaded with `apt-get download`, its SHA-256 compared with what
//! `apt-cache show` says, and the pair recorded in
//! `target/payloads/manifest`. While the manifest and the files agree,
//! nothing touches the network; everything else (`linux/Image`,
//! `linux/initramfs.cpio`) is rebuilt from the cached packages, and only
//! rewritten when its bytes change.
//!
//! Layout of `target/payloads/`:
//! - `manifest`: one line per package: role, name, version, size, SHA-256, file;
//! - `debs/`: the verified packages;
//! - `extract/<role>/`: `dpkg-deb -x` of each, stamped with its SHA-256;
//! - `linux/Image`, `linux/initramfs.cpio`: what QEMU boots.

use crate::error::{io, Error};
use crate::repo_root;
use crate::tools::{cargo, describe, output, run, GUEST_TARGET};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tessera_system_tests::linux::{expect_marker, native_config, Marker};
use tessera_system_tests::Qemu;

/// The metapackage whose dependency names Debian 12's current kernel
/// (`linux-image-6.1.0-<N>-arm64`).
pub const KERNEL_METAPACKAGE: &str = "linux-image-arm64";
/// A statically linked busybox: the initramfs has no libc.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Debian architecture of every payload.
pub const ARCH: &str = "arm64";

/// The modules the Linux tests need, by module name. Those the kernel has
/// built in are skipped, and dependencies come along, loaded first.
pub const WANTED_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
];

/// `target/payloads`: the cache of packages and what is built from them.
pub fn payloads_dir() -> PathBuf {
    repo_root().join("target").join("payloads")
}

/// `target/payloads/linux`: the kernel `Image` and `initramfs.cpio`.
pub fn linux_dir() -> PathBuf {
    payloads_dir().join("linux")
}

/// What a package is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Kernel,
    Busybox,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Kernel, Role::Busybox];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Busybox => "busybox",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// One verified Debian package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub role: Role,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lower-case hex, as apt prints it.
    pub sha256: String,
    /// The file name under `debs/` (the basename of apt's `Filename`).
    pub file: String,
}

const MANIFEST_HEADER: &str = "\
# Debian arm64 packages behind target/payloads/linux, written by cargo xtask
# after checking each SHA-256 against apt's metadata. Delete this file (or run
# `cargo xtask payloads --refetch`) to fetch the current versions again.
# role name version size sha256 file
";

/// The manifest's text.
pub fn format_manifest(packages: &[Package]) -> String {
    let mut text = MANIFEST_HEADER.to_string();
    for p in packages {
        text.push_str(&format!(
            "{} {} {} {} {} {}\n",
            p.role.as_str(),
            p.name,
            p.version,
            p.size,
            p.sha256,
            p.file
        ));
    }
    text
}

/// Reads a manifest; `None` unless it names exactly one package per role,
/// each with a well-formed checksum and a plain file name.
pub fn parse_manifest(text: &str) -> Option<Vec<Package>> {
    let mut packages = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [role, name, version, size, sha256, file] = fields[..] else {
            return None;
        };
        let package = Package {
            role: Role::parse(role)?,
            name: name.into(),
            version: version.into(),
            size: size.parse().ok()?,
            sha256: sha256.into(),
            file: file.into(),
        };
        if !is_sha256(&package.sha256) || !is_plain_file_name(&package.file) {
            return None;
        }
        packages.push(package);
    }
    packages.sort_by_key(|p| p.role);
    let roles: Vec<Role> = packages.iter().map(|p| p.role).collect();
    (roles == Role::ALL).then_some(packages)
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// The value of `field` in the first stanza of `apt-cache show` output.
pub fn control_field<'a>(stanza: &'a str, field: &str) -> Option<&'a str> {
    stanza
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == field).then(|| value.trim())
        })
}

/// The kernel package a `linux-image-arm64` `Depends` field names first,
/// e.g. `linux-image-6.1.0-56-arm64 (= 6.1.192-2)`.
pub fn kernel_from_depends(depends: &str) -> Option<String> {
    let first = depends.split(',').next()?.split('|').next()?.trim();
    let name = first.split([' ', '(']).next()?.trim();
    let name = name.strip_suffix(":arm64").unwrap_or(name);
    (name.starts_with("linux-image-") && name.ends_with("-arm64") && name != KERNEL_METAPACKAGE)
        .then(|| name.to_string())
}

/// The file name `apt-get download` gives a package (`:` in an epoch is
/// URL-escaped).
pub fn downloaded_file_name(name: &str, version: &str) -> String {
    format!("{name}_{}_{ARCH}.deb", version.replace(':', "%3a"))
}

/// A failure to fetch, worded for someone who has never seen this code.
fn fetch_failed(cause: Error) -> Error {
    Error::Failed(format!(
        "cannot fetch the Debian arm64 Linux payloads: {cause}\n\
         \n\
         The Linux tests boot Debian 12's arm64 kernel ({KERNEL_METAPACKAGE}) and \
         {BUSYBOX_PACKAGE}, downloaded with apt from Debian's registry. Check that \
         this machine reaches deb.debian.org (or its configured mirror), that \
         `apt-get update` works, and that you are root or may use sudo (arm64 must \
         be added with `dpkg --add-architecture arm64`); then run \
         `cargo xtask payloads --refetch`."
    ))
}

/// `true` if we run as root: the owner of `/proc/self` is our effective
/// user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, through sudo unless we are root.
fn as_root(program: &str) -> Command {
    if running_as_root() {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg(program);
        command
    }
}

/// Runs `command`, capturing its output; a non-zero exit is an error that
/// quotes stderr.
fn captured(command: &mut Command) -> Result<String, Error> {
    let out = output(command)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::Command {
        command: describe(command),
        status: format!("{}: {}", out.status, stderr.trim()),
    })
}

/// Adds arm64 to dpkg's architectures; `true` if it was missing (apt's
/// lists then lack arm64 until the next update).
fn add_arm64_architecture() -> Result<bool, Error> {
    let foreign = captured(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|line| line.trim() == ARCH) {
        return Ok(false);
    }
    println!("xtask: adding the {ARCH} architecture to dpkg");
    run(as_root("dpkg").args(["--add-architecture", ARCH]))?;
    Ok(true)
}

fn apt_update() -> Result<(), Error> {
    println!("xtask: refreshing apt's package lists");
    run(as_root("apt-get").arg("update"))
}

/// What apt's lists say about `name:arm64` (the candidate version).
fn apt_show(name: &str) -> Result<String, Error> {
    let text = captured(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &format!("{name}:{ARCH}"),
    ]))?;
    if control_field(&text, "Package").is_none() {
        return Err(Error::Failed(format!("apt knows no package {name}:{ARCH}")));
    }
    Ok(text)
}

/// The candidate record of `name` as a [`Package`] still to download.
fn apt_package(role: Role, name: &str) -> Result<Package, Error> {
    let text = apt_show(name)?;
    let field = |key: &str| {
        control_field(&text, key).ok_or_else(|| {
            Error::Failed(format!("apt's record of {name}:{ARCH} has no {key} field"))
        })
    };
    let sha256 = field("SHA256")?.to_ascii_lowercase();
    let filename = field("Filename")?;
    let file = filename.rsplit('/').next().unwrap_or(filename).to_string();
    if !is_sha256(&sha256) || !is_plain_file_name(&file) {
        return Err(Error::Failed(format!(
            "apt's record of {name}:{ARCH} has a malformed SHA256 or Filename"
        )));
    }
    Ok(Package {
        role,
        name: name.into(),
        version: field("Version")?.into(),
        size: field("Size")?.parse().map_err(|_| {
            Error::Failed(format!(
                "apt's record of {name}:{ARCH} has a malformed Size"
            ))
        })?,
        sha256,
        file,
    })
}

/// The current kernel (through the metapackage) and busybox.
fn resolve_packages() -> Result<Vec<Package>, Error> {
    let meta = apt_show(KERNEL_METAPACKAGE)?;
    let depends = control_field(&meta, "Depends").unwrap_or_default();
    let kernel = kernel_from_depends(depends).ok_or_else(|| {
        Error::Failed(format!(
            "{KERNEL_METAPACKAGE}:{ARCH} does not depend on a linux-image-*-arm64 \
             package (Depends: `{depends}`)"
        ))
    })?;
    Ok(vec![
        apt_package(Role::Kernel, &kernel)?,
        apt_package(Role::Busybox, BUSYBOX_PACKAGE)?,
    ])
}

/// SHA-256 of a file, in lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `true` if `debs/<file>` has the package's size and checksum.
fn verified(package: &Package, debs: &Path) -> Result<bool, Error> {
    let path = debs.join(&package.file);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == package.size => Ok(sha256_file(&path)? == package.sha256),
        _ => Ok(false),
    }
}

/// Downloads `package` into `debs` unless a verified copy is there.
fn download(package: &Package, debs: &Path) -> Result<(), Error> {
    if verified(package, debs)? {
        return Ok(());
    }
    println!(
        "xtask: downloading {}:{ARCH} {} ({:.1} MB)",
        package.name,
        package.version,
        package.size as f64 / 1e6
    );
    let mut command = Command::new("apt-get");
    if running_as_root() {
        // apt drops to the `_apt` user, who may not write into target/.
        command.args(["-o", "APT::Sandbox::User=root"]);
    }
    command
        .args(["download", "-q"])
        .arg(format!("{}:{ARCH}={}", package.name, package.version))
        .current_dir(debs);
    captured(&mut command)?;
    let fetched = debs.join(downloaded_file_name(&package.name, &package.version));
    let path = debs.join(&package.file);
    if fetched != path {
        std::fs::rename(&fetched, &path).map_err(io(&fetched))?;
    }
    let actual = sha256_file(&path)?;
    if actual != package.sha256 {
        let _ = std::fs::remove_file(&path);
        return Err(Error::Failed(format!(
            "{} has SHA-256 {actual}, but apt's metadata says {}; the file was deleted",
            package.file, package.sha256
        )));
    }
    println!(
        "xtask: verified {} (sha256 {})",
        package.file, package.sha256
    );
    Ok(())
}

fn manifest_path() -> PathBuf {
    payloads_dir().join("manifest")
}

fn debs_dir() -> PathBuf {
    payloads_dir().join("debs")
}

/// The cached packages, if the manifest is whole and every file matches it.
fn cached_packages() -> Result<Option<Vec<Package>>, Error> {
    let Ok(text) = std::fs::read_to_string(manifest_path()) else {
        return Ok(None);
    };
    let Some(packages) = parse_manifest(&text) else {
        return Ok(None);
    };
    let debs = debs_dir();
    for package in &packages {
        if !verified(package, &debs)? {
            println!(
                "xtask: {} is missing or does not match the manifest",
                package.file
            );
            return Ok(None);
        }
    }
    Ok(Some(packages))
}

/// Resolves, downloads and verifies both packages; refreshes apt's lists
/// once if they are missing or stale (a package unknown, a 404, a
/// checksum that no longer matches).
fn fetch_with_apt(debs: &Path) -> Result<Vec<Package>, Error> {
    let mut updated = false;
    if add_arm64_architecture()? {
        apt_update()?;
        updated = true;
    }
    loop {
        let attempt = resolve_packages().and_then(|packages| {
            for package in &packages {
                download(package, debs)?;
            }
            Ok(packages)
        });
        match attempt {
            Ok(packages) => return Ok(packages),
            Err(error) if !updated => {
                println!("xtask: {error}");
                apt_update()?;
                updated = true;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The verified packages: from the cache if it is valid (no network), else
/// fetched with apt. `refetch` ignores the cache.
pub fn fetch(refetch: bool) -> Result<Vec<Package>, Error> {
    if !refetch {
        if let Some(packages) = cached_packages()? {
            return Ok(packages);
        }
    }
    let debs = debs_dir();
    if refetch {
        let _ = std::fs::remove_file(manifest_path());
        let _ = std::fs::remove_dir_all(&debs);
    }
    std::fs::create_dir_all(&debs).map_err(io(&debs))?;
    let packages = fetch_with_apt(&debs).map_err(fetch_failed)?;
    // Older versions are of no further use.
    for entry in std::fs::read_dir(&debs).map_err(io(&debs))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !packages.iter().any(|p| p.file == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    write_if_changed(&manifest_path(), format_manifest(&packages).as_bytes())?;
    Ok(packages)
}

/// `dpkg-deb -x` of `package` into `extract/<role>`, unless the stamp says
/// it is already there.
fn extract(package: &Package) -> Result<PathBuf, Error> {
    let root = payloads_dir().join("extract");
    let dir = root.join(package.role.as_str());
    let stamp = root.join(format!("{}.sha256", package.role.as_str()));
    if dir.is_dir() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&package.sha256) {
        return Ok(dir);
    }
    let _ = std::fs::remove_file(&stamp);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(debs_dir().join(&package.file))
        .arg(&dir))?;
    std::fs::write(&stamp, &package.sha256).map_err(io(&stamp))?;
    Ok(dir)
}

/// Writes `bytes` to `path` unless it already holds them (keeps mtimes, so
/// nothing downstream rebuilds for nothing).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

/// The offset and value of the arm64 `Image` header's magic (Linux
/// `Documentation/arch/arm64/booting.rst`).
const IMAGE_MAGIC_OFFSET: usize = 0x38;
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
const GZIP_MAGIC: &[u8; 2] = b"\x1f\x8b";

/// Debian's `vmlinuz` as an uncompressed arm64 `Image`. The signed arm64
/// package ships it uncompressed (an EFI-stub PE that is also an `Image`);
/// older or unsigned builds gzip it.
pub fn kernel_image(vmlinuz: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = std::fs::read(vmlinuz).map_err(io(vmlinuz))?;
    if bytes.starts_with(GZIP_MAGIC) {
        bytes = output(Command::new("gzip").arg("-dc").arg(vmlinuz)).and_then(|out| {
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(Error::Failed(format!(
                    "gzip cannot decompress {}: {}",
                    vmlinuz.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        })?;
    }
    if bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) != Some(&IMAGE_MAGIC[..]) {
        return Err(Error::Failed(format!(
            "{} is not an arm64 Linux Image (no ARM\\x64 magic at 0x38)",
            vmlinuz.display()
        )));
    }
    Ok(bytes)
}

/// The module name of a `.ko` file: the stem with `-` as `_`, as the
/// kernel spells it (`virtio-rng.ko.xz` is `virtio_rng`).
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// The modules `modules.builtin` lists (one path per line).
pub fn builtin_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| module_name(line.trim().rsplit('/').next()?))
        .collect()
}

/// The `depends=` entry of a module's `.modinfo` section.
pub fn module_depends(ko: &[u8]) -> Result<Vec<String>, String> {
    let elf = ElfFile64::<Endianness>::parse(ko).map_err(|e| format!("not an ELF module: {e}"))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let data = section.data().map_err(|e| format!(".modinfo: {e}"))?;
    let depends = data
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(depends)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

/// The order to load `wanted` and their dependencies in, dependencies
/// first; built-in modules are left out. `depends` gives one module's
/// direct dependencies, or an error if the package lacks the module.
pub fn load_order(
    wanted: &[&str],
    builtin: &BTreeSet<String>,
    mut depends: impl FnMut(&str) -> Result<Vec<String>, Error>,
) -> Result<Vec<String>, Error> {
    fn visit(
        name: &str,
        builtin: &BTreeSet<String>,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>, Error>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), Error> {
        if builtin.contains(name) || order.iter().any(|m| m == name) {
            return Ok(());
        }
        if path.iter().any(|m| m == name) {
            return Err(Error::Failed(format!(
                "module dependency cycle: {} -> {name}",
                path.join(" -> ")
            )));
        }
        path.push(name.to_string());
        for dependency in depends(name)? {
            visit(&dependency, builtin, depends, path, order)?;
        }
        path.pop();
        order.push(name.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(name, builtin, &mut depends, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// A module's bytes, decompressed if the package compresses modules
/// (busybox `insmod` loads only plain ELF).
fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(io(path)),
        Some(tool) => {
            let out = output(Command::new(tool).arg("-dc").arg(path))?;
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(Error::Failed(format!(
                    "{tool} cannot decompress {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
    }
}

/// Every module file under `dir`, by module name.
fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = module_name(&entry.file_name().to_string_lossy()) {
            index.insert(name, path);
        }
    }
    Ok(())
}

/// The kernel's modules that the tests load, in load order, with their
/// (decompressed) bytes; and which of [`WANTED_MODULES`] are built in.
pub struct KernelModules {
    pub release: String,
    pub load: Vec<(String, Vec<u8>)>,
    pub builtin: Vec<String>,
}

fn kernel_modules(kernel_root: &Path) -> Result<KernelModules, Error> {
    let modules = kernel_root.join("lib").join("modules");
    let releases: Vec<String> = std::fs::read_dir(&modules)
        .map_err(io(&modules))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let [release] = &releases[..] else {
        return Err(Error::Failed(format!(
            "expected one kernel release in {}, found {releases:?}",
            modules.display()
        )));
    };
    let dir = modules.join(release);
    let builtin_list = dir.join("modules.builtin");
    let builtin =
        builtin_modules(&std::fs::read_to_string(&builtin_list).map_err(io(&builtin_list))?);
    let mut index = BTreeMap::new();
    index_modules(&dir.join("kernel"), &mut index)?;
    let mut loaded: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let order = load_order(WANTED_MODULES, &builtin, |name| {
        let path = index.get(name).ok_or_else(|| {
            Error::Failed(format!(
                "module {name} is neither built into Linux {release} nor in its package"
            ))
        })?;
        let bytes = read_module(path)?;
        let depends = module_depends(&bytes)
            .map_err(|reason| Error::Failed(format!("{}: {reason}", path.display())))?;
        loaded.insert(name.to_string(), bytes);
        Ok(depends)
    })?;
    let load = order
        .into_iter()
        .map(|name| {
            let bytes = loaded.remove(&name).unwrap_or_default();
            (name, bytes)
        })
        .collect();
    Ok(KernelModules {
        release: release.clone(),
        load,
        builtin: WANTED_MODULES
            .iter()
            .filter(|m| builtin.contains(**m))
            .map(|m| m.to_string())
            .collect(),
    })
}

/// A newc (`070701`) cpio archive, the format the kernel unpacks as its
/// initramfs (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`).
/// Entries are owned by root with mtime 0, so the same inputs give the same
/// bytes.
pub struct Cpio {
    data: Vec<u8>,
    next_inode: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Default for Cpio {
    fn default() -> Self {
        Cpio {
            data: Vec::new(),
            next_inode: 1,
        }
    }
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), contents: &[u8]) {
        let inode = if path == "TRAILER!!!" {
            0
        } else {
            self.next_inode += 1;
            self.next_inode - 1
        };
        // The header's fields are 32-bit; initramfs files are far smaller.
        let size = u32::try_from(contents.len()).unwrap_or(u32::MAX);
        let name_size = path.len() as u32 + 1;
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.data.extend_from_slice(path.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(contents);
        self.pad();
    }

    /// A directory, `mode` 0755-style.
    pub fn directory(&mut self, path: &str, mode: u32) {
        self.entry(path, S_IFDIR | mode, 2, (0, 0), &[]);
    }

    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) {
        self.entry(path, S_IFREG | mode, 1, (0, 0), contents);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | mode, 1, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.data
    }
}

/// The initramfs scripts, from `tests/src/initramfs/`.
const INIT_SCRIPT: &str = include_str!("../../tests/src/initramfs/init");
const TEST_SCRIPTS: &[(&str, &str)] = &[
    ("lib.sh", include_str!("../../tests/src/initramfs/lib.sh")),
    ("blk.sh", include_str!("../../tests/src/initramfs/blk.sh")),
    ("rng.sh", include_str!("../../tests/src/initramfs/rng.sh")),
    (
        "dm-restart.sh",
        include_str!("../../tests/src/initramfs/dm-restart.sh"),
    ),
    ("net.sh", include_str!("../../tests/src/initramfs/net.sh")),
    (
        "blk-read.sh",
        include_str!("../../tests/src/initramfs/blk-read.sh"),
    ),
];

/// The test initramfs: busybox (applets installed by `/init`), `/bin/cntvct`,
/// the modules flat in `/lib/modules/<release>/`, their load order in
/// `/etc/tessera/modules`, the test scripts, and `/dev/console` for the
/// kernel to open before devtmpfs is mounted.
pub fn initramfs(busybox: &[u8], cntvct: &[u8], modules: &KernelModules) -> Vec<u8> {
    let mut cpio = Cpio::new();
    let module_dir = format!("lib/modules/{}", modules.release);
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "etc/tessera",
        "lib",
        "lib/modules",
        &module_dir,
    ] {
        cpio.directory(dir, 0o755);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.char_device("dev/null", 0o666, 1, 3);
    cpio.file("bin/busybox", 0o755, busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("bin/cntvct", 0o755, cntvct);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    for (name, text) in TEST_SCRIPTS {
        cpio.file(&format!("etc/tessera/{name}"), 0o644, text.as_bytes());
    }
    let mut order = String::new();
    for (name, bytes) in &modules.load {
        cpio.file(&format!("{module_dir}/{name}.ko"), 0o644, bytes);
        order.push_str(name);
        order.push('\n');
    }
    cpio.file("etc/tessera/modules", 0o644, order.as_bytes());
    cpio.finish()
}

/// Builds `/bin/cntvct` (`tests/linux-cntvct`, outside the workspace) for
/// [`GUEST_TARGET`] and returns the static ELF.
pub fn build_cntvct() -> Result<Vec<u8>, Error> {
    let root = repo_root();
    let target_dir = root.join("target").join("linux-cntvct");
    run(
        cargo(["build", "--release", "--quiet", "--target", GUEST_TARGET])
            .arg("--manifest-path")
            .arg(root.join("tests").join("linux-cntvct").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    let path = target_dir.join(GUEST_TARGET).join("release").join("cntvct");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    // An ELF64 little-endian executable (ET_EXEC) for AArch64 (EM 183).
    let header_ok =
        bytes.starts_with(b"\x7fELF\x02\x01") && bytes.get(16..20) == Some(&[2, 0, 183, 0][..]);
    if !header_ok {
        return Err(Error::Elf {
            path,
            reason: "not a static AArch64 executable".into(),
        });
    }
    Ok(bytes)
}

/// The Linux payloads, ready to boot.
#[derive(Clone, Debug)]
pub struct LinuxPayloads {
    /// `target/payloads/linux/Image`.
    pub image: PathBuf,
    /// `target/payloads/linux/initramfs.cpio`.
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-arm64`.
    pub release: String,
    pub packages: Vec<Package>,
    /// Modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Which of [`WANTED_MODULES`] the kernel has built in.
    pub builtin: Vec<String>,
}

impl LinuxPayloads {
    /// The same paths as the test harness names them.
    pub fn for_tests(&self) -> tessera_system_tests::linux::LinuxPayloads {
        tessera_system_tests::linux::LinuxPayloads {
            image: self.image.clone(),
            initramfs: self.initramfs.clone(),
        }
    }
}

/// Fetches (if needed) and builds the payloads. `refetch` downloads the
/// packages again even when the cache is valid. A lock file keeps two
/// xtasks in one working copy from building at once.
pub fn prepare(refetch: bool) -> Result<LinuxPayloads, Error> {
    let dir = payloads_dir();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;

    let packages = fetch(refetch)?;
    let package = |role: Role| {
        packages
            .iter()
            .find(|p| p.role == role)
            .ok_or_else(|| Error::Failed(format!("no {} package", role.as_str())))
    };
    let kernel_root = extract(package(Role::Kernel)?)?;
    let busybox_root = extract(package(Role::Busybox)?)?;

    let modules = kernel_modules(&kernel_root)?;
    let vmlinuz = kernel_root
        .join("boot")
        .join(format!("vmlinuz-{}", modules.release));
    let image = kernel_image(&vmlinuz)?;
    let busybox_path = busybox_root.join("bin").join("busybox");
    let busybox = std::fs::read(&busybox_path).map_err(io(&busybox_path))?;
    let cntvct = build_cntvct()?;

    let out = linux_dir();
    let image_path = out.join(tessera_system_tests::linux::IMAGE_FILE);
    let initramfs_path = out.join(tessera_system_tests::linux::INITRAMFS_FILE);
    write_if_changed(&image_path, &image)?;
    write_if_changed(&initramfs_path, &initramfs(&busybox, &cntvct, &modules))?;
    drop(lock);
    Ok(LinuxPayloads {
        image: image_path,
        initramfs: initramfs_path,
        release: modules.release,
        packages,
        modules: modules.load.into_iter().map(|(name, _)| name).collect(),
        builtin: modules.builtin,
    })
}

/// [`prepare`] once per process, with a one-line summary.
pub fn ensure_payloads() -> Result<LinuxPayloads, Error> {
    static READY: OnceLock<LinuxPayloads> = OnceLock::new();
    if let Some(ready) = READY.get() {
        return Ok(ready.clone());
    }
    let payloads = prepare(false)?;
    println!("xtask: {}", summary(&payloads));
    Ok(READY.get_or_init(|| payloads).clone())
}

/// What the payloads are made of, in one line.
pub fn summary(payloads: &LinuxPayloads) -> String {
    let packages: Vec<String> = payloads
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    format!(
        "Linux payloads in {}: {}; modules {} (built in: {})",
        linux_dir().display(),
        packages.join(", "),
        payloads.modules.join(" "),
        if payloads.builtin.is_empty() {
            "none".to_string()
        } else {
            payloads.builtin.join(" ")
        }
    )
}

/// QEMU's instruction counting: the virtual counter then follows virtual
/// time (one tick per instruction at QEMU's 62.5 MHz counter), from 0 at
/// QEMU's start.
pub const ICOUNT: [&str; 2] = ["-icount", "shift=4,sleep=off"];

/// How long a native boot to the marker may take under `-icount`.
pub const NATIVE_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Boots the payloads natively (plain QEMU, no hypervisor) under
/// [`ICOUNT`] with `smp` CPUs and `memory` of RAM (QEMU's `-m`) and returns
/// the init marker: `cntvct` / `cntfrq` is the virtual time from QEMU's
/// start to `/init`. The console log goes to `log`. For the `linux_boot`
/// benchmark.
pub fn native_boot_counter(
    payloads: &LinuxPayloads,
    smp: u32,
    memory: &str,
    log: &Path,
) -> Result<Marker, Error> {
    let failed = |e: tessera_system_tests::Failure| {
        Error::Failed(format!("native Linux boot under -icount: {e}"))
    };
    let mut config = native_config(&payloads.for_tests(), smp, "")
        .args(ICOUNT)
        .log(log)
        .deadline(NATIVE_BOOT_TIMEOUT);
    config.memory = memory.into();
    let mut qemu = Qemu::spawn(&config).map_err(failed)?;
    expect_marker(&mut qemu, NATIVE_BOOT_TIMEOUT).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boots the real payloads under `-icount` (fetching them if needed):
    /// `cargo test -p xtask --lib -- --ignored native_boot`.
    #[test]
    #[ignore = "needs QEMU, network or a payload cache, and about a minute"]
    fn native_boot_under_icount_reaches_the_marker() {
        let payloads = ensure_payloads().unwrap();
        let log = repo_root()
            .join("target")
            .join("bench")
            .join("linux-native-icount.log");
        let marker = native_boot_counter(
            &payloads,
            2,
            tessera_system_tests::linux::NATIVE_MEMORY,
            &log,
        )
        .unwrap();
        println!(
            "{marker:?}: {:.3}s of virtual time to /init",
            marker.seconds()
        );
        assert_eq!(marker.nproc, 2);
        assert!(marker.cntfrq > 0 && marker.cntvct > 0);
    }

    fn package(role: Role, name: &str) -> Package {
        Package {
            role,
            name: name.into(),
            version: "1:1.0-1".into(),
            size: 42,
            sha256: "ab".repeat(32),
            file: format!("{name}_1.0-1_arm64.deb"),
        }
    }

    #[test]
    fn the_manifest_round_trips() {
        let packages = vec![
            package(Role::Kernel, "linux-image-6.1.0-56-arm64"),
            package(Role::Busybox, "busybox-static"),
        ];
        assert_eq!(
            parse_manifest(&format_manifest(&packages)).as_deref(),
            Some(&packages[..])
        );
    }

    #[test]
    fn incomplete_or_malformed_manifests_are_no_cache() {
        let kernel = format_manifest(&[package(Role::Kernel, "linux-image-6.1.0-56-arm64")]);
        assert_eq!(parse_manifest(&kernel), None, "busybox missing");
        let both = format_manifest(&[package(Role::Kernel, "k"), package(Role::Busybox, "b")]);
        assert_eq!(parse_manifest(&format!("{both}{both}")), None, "duplicates");
        assert_eq!(
            parse_manifest(&both.replace("abab", "ABAB")),
            None,
            "bad sum"
        );
        assert_eq!(
            parse_manifest(&both.replace(" 42 ", " x ")),
            None,
            "bad size"
        );
        assert_eq!(parse_manifest(&both.replace("kernel k", "kern k")), None);
        assert_eq!(
            parse_manifest(&both.replace("b_1.0-1_arm64.deb", "../b.deb")),
            None,
            "path outside debs/"
        );
        assert_eq!(parse_manifest(&both.replace(" 42 ", " 42 extra ")), None);
    }

    const APT_SHOW: &str = "\
Package: linux-image-arm64
Source: linux-signed-arm64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)
Filename: pool/updates/main/l/linux-signed-arm64/linux-image-arm64_6.1.192-2_arm64.deb
SHA256: 7d009bcc5a248b746ce4e686f30cb3e4fbfdadeb00af4309926ab4523ff4906c

Package: linux-image-arm64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)
";

    #[test]
    fn control_fields_come_from_the_first_stanza() {
        assert_eq!(control_field(APT_SHOW, "Version"), Some("6.1.192-2"));
        assert_eq!(
            control_field(APT_SHOW, "SHA256"),
            Some("7d009bcc5a248b746ce4e686f30cb3e4fbfdadeb00af4309926ab4523ff4906c")
        );
        assert_eq!(control_field(APT_SHOW, "Size"), None);
        assert_eq!(
            kernel_from_depends(control_field(APT_SHOW, "Depends").unwrap()).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
    }

    #[test]
    fn the_kernel_dependency_is_a_kernel_package() {
        assert_eq!(
            kernel_from_depends("linux-image-6.1.0-9-arm64:arm64 | foo, bar").as_deref(),
            Some("linux-image-6.1.0-9-arm64")
        );
        assert_eq!(kernel_from_depends("libc6 (>= 2)"), None);
        assert_eq!(kernel_from_depends(""), None);
        assert_eq!(kernel_from_depends("linux-image-arm64"), None);
    }

    #[test]
    fn apt_names_downloads_with_an_escaped_epoch() {
        assert_eq!(
            downloaded_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1"),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
        );
    }

    #[test]
    fn module_names_follow_the_kernel_spelling() {
        assert_eq!(module_name("virtio-rng.ko").as_deref(), Some("virtio_rng"));
        assert_eq!(
            module_name("virtio_blk.ko.xz").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name("failover.ko.zst").as_deref(), Some("failover"));
        assert_eq!(module_name("modules.dep"), None);
        assert_eq!(module_name(".ko"), None);
        let builtin = builtin_modules(
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/char/hw_random/rng-core.ko\n",
        );
        assert!(builtin.contains("virtio") && builtin.contains("rng_core"));
    }

    fn fake_depends(name: &str) -> Result<Vec<String>, Error> {
        let deps: &[&str] = match name {
            "virtio_net" => &["net_failover", "virtio"],
            "net_failover" => &["failover"],
            "failover" | "virtio_blk" | "virtio_mmio" => &[],
            "loop_a" => &["loop_b"],
            "loop_b" => &["loop_a"],
            _ => return Err(Error::Failed(format!("no module {name}"))),
        };
        Ok(deps.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn dependencies_load_first_and_builtins_not_at_all() {
        let builtin: BTreeSet<String> = ["virtio".to_string()].into();
        let order = load_order(
            &[
                "virtio",
                "virtio_mmio",
                "virtio_net",
                "virtio_blk",
                "failover",
            ],
            &builtin,
            fake_depends,
        )
        .unwrap();
        assert_eq!(
            order,
            [
                "virtio_mmio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_blk"
            ]
        );
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let none = BTreeSet::new();
        let missing = load_order(&["virtio_net"], &none, fake_depends).unwrap_err();
        assert!(
            missing.to_string().contains("no module virtio"),
            "{missing}"
        );
        let cycle = load_order(&["loop_a"], &none, fake_depends).unwrap_err();
        assert!(
            cycle.to_string().contains("loop_a -> loop_b -> loop_a"),
            "{cycle}"
        );
    }

    /// A relocatable AArch64 ELF64 with one data section `name` holding
    /// `modinfo`, the way a `.ko` carries its `.modinfo`.
    fn module_elf(name: &str, modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = format!("\0{name}\0.shstrtab\0");
        let shstrtab_name = name.len() as u32 + 2;
        let modinfo_at = 64u64;
        let shstrtab_at = modinfo_at + modinfo.len() as u64;
        let headers_at = (shstrtab_at + shstrtab.len() as u64 + 7) & !7;
        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        elf.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&[0; 16]); // entry, phoff
        elf.extend_from_slice(&headers_at.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 0, 0, 64, 3, 2] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        elf.extend_from_slice(modinfo);
        elf.extend_from_slice(shstrtab.as_bytes());
        elf.resize(headers_at as usize, 0);
        // (name, type, offset, size): null, .modinfo (PROGBITS), .shstrtab (STRTAB).
        let sections = [
            (0u32, 0u32, 0u64, 0u64),
            (1, 1, modinfo_at, modinfo.len() as u64),
            (shstrtab_name, 3, shstrtab_at, shstrtab.len() as u64),
        ];
        for (name, kind, offset, size) in sections {
            elf.extend_from_slice(&name.to_le_bytes());
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&[0; 16]); // flags, addr
            elf.extend_from_slice(&offset.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&[0; 8]); // link, info
            elf.extend_from_slice(&1u64.to_le_bytes());
            elf.extend_from_slice(&0u64.to_le_bytes());
        }
        elf
    }

    #[test]
    fn modinfo_depends_is_read_from_the_elf_section() {
        let ko = module_elf(
            ".modinfo",
            b"license=GPL\0depends=net_failover,virtio-x\0name=virtio_net\0",
        );
        assert_eq!(module_depends(&ko).unwrap(), ["net_failover", "virtio_x"]);
        let none = module_elf(".modinfo", b"license=GPL\0depends=\0name=virtio_blk\0");
        assert!(module_depends(&none).unwrap().is_empty());
        assert!(module_depends(b"not an elf").is_err());
        assert!(module_depends(&module_elf(".data", b"depends=x\0")).is_err());
    }

    /// One archive member: name, mode, (rdev major, minor), contents.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Parses a newc archive back into its members.
    fn entries(archive: &[u8]) -> Vec<Entry> {
        let field = |at: usize, i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        let align = |n: usize| (n + 3) & !3;
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&archive[at..at + 6], b"070701");
            let (mode, size, name_size) =
                (field(at, 1), field(at, 6) as usize, field(at, 11) as usize);
            let rdev = (field(at, 9), field(at, 10));
            let name_at = at + 110;
            let name = std::str::from_utf8(&archive[name_at..name_at + name_size - 1])
                .unwrap()
                .to_string();
            assert_eq!(archive[name_at + name_size - 1], 0);
            let data_at = align(name_at + name_size);
            let data = archive[data_at..data_at + size].to_vec();
            at = align(data_at + size);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn the_cpio_is_newc_and_reads_back() {
        let mut cpio = Cpio::new();
        cpio.directory("bin", 0o755);
        cpio.file("bin/busybox", 0o755, b"12345");
        cpio.symlink("bin/sh", "busybox");
        cpio.char_device("dev/console", 0o600, 5, 1);
        let archive = cpio.finish();
        assert_eq!(archive.len() % 4, 0);
        let read = entries(&archive);
        assert_eq!(read.len(), 4);
        assert_eq!(read[0], ("bin".into(), 0o040755, (0, 0), vec![]));
        assert_eq!(
            read[1],
            ("bin/busybox".into(), 0o100755, (0, 0), b"12345".to_vec())
        );
        assert_eq!(
            read[2],
            ("bin/sh".into(), 0o120777, (0, 0), b"busybox".to_vec())
        );
        assert_eq!(read[3], ("dev/console".into(), 0o020600, (5, 1), vec![]));
    }

    #[test]
    fn the_initramfs_holds_init_busybox_modules_in_order() {
        let modules = KernelModules {
            release: "6.1.0-56-arm64".into(),
            load: vec![
                ("failover".into(), b"f".to_vec()),
                ("virtio_net".into(), b"n".to_vec()),
            ],
            builtin: vec!["virtio".into()],
        };
        let archive = initramfs(b"busybox", b"cntvct", &modules);
        let read = entries(&archive);
        let find = |name: &str| {
            read.iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("init").1, 0o100755);
        assert!(find("init").3.starts_with(b"#!/bin/sh\n"));
        assert_eq!(find("bin/cntvct").3, b"cntvct");
        assert_eq!(find("etc/tessera/modules").3, b"failover\nvirtio_net\n");
        assert_eq!(find("lib/modules/6.1.0-56-arm64/virtio_net.ko").3, b"n");
        for script in ["blk", "rng", "net"] {
            find(&format!("etc/tessera/{script}.sh"));
        }
        // Every file's parent directory comes before it.
        for (i, entry) in read.iter().enumerate() {
            if let Some((parent, _)) = entry.0.rsplit_once('/') {
                assert!(read[..i].iter().any(|e| e.0 == parent), "{}", entry.0);
            }
        }
    }
}
