//! The host platform, read from the device tree that QEMU or firmware passes
//! the kernel in x0.
//!
//! The one idea: the kernel takes from the host DT only the facts it needs
//! to bring up EL2 (RAM, reservations, CPUs, the GICv3 frames, the UART, the
//! PSCI conduit and the timer PPIs) and fails with the node and property to
//! blame if any is missing or unreadable. The blob is checked in full before
//! the `fdt` crate sees it (`tessera_sysdesc::dtb`), so a corrupt DTB is an error,
//! never a panic.

// A `HostDtError` carries the node path by value so it outlives the blob;
// it is built once, at boot, on the failure path only.
#![allow(clippy::result_large_err)]

use core::fmt;

pub use tessera_sysdesc::config::MemRange;
use tessera_sysdesc::dtb::{
    self, is_compatible, prop, reg_entries, string_list, string_value, Cells, DtbFormatError,
    Located, NodePath, RegError,
};

/// Most RAM ranges recorded.
pub const MAX_MEMORY_RANGES: usize = 8;
/// Most reserved ranges recorded.
pub const MAX_RESERVED_RANGES: usize = 8;
/// Most physical CPUs recorded.
pub const MAX_HOST_CPUS: usize = 8;

/// First INTID of the PPI range (GICv3 architecture, INTIDs 16..31).
const PPI_INTID_BASE: u32 = 16;
/// Number of PPIs.
const PPI_COUNT: u32 = 16;
/// `interrupts` type cell for a PPI (Linux binding `arm,gic-v3`).
const GIC_TYPE_PPI: u32 = 1;
/// `interrupts` type cell for an SPI.
const GIC_TYPE_SPI: u32 = 0;
/// First INTID of the SPI range.
const SPI_INTID_BASE: u32 = 32;
/// SPIs end at INTID 1019 (1020..1023 are special).
const SPI_COUNT: u32 = 988;

const P_REG: &str = "reg";
const P_METHOD: &str = "method";
const P_INTERRUPTS: &str = "interrupts";
const P_STDOUT: &str = "stdout-path";
const P_DEVICE_TYPE: &str = "device_type";

/// What the kernel knows about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlatform {
    /// Every `/memory*` node's `reg` entries, in tree order (empty ones
    /// dropped).
    pub memory: heapless::Vec<MemRange, MAX_MEMORY_RANGES>,
    /// `/memreserve/` entries, then `/reserved-memory` children with `reg`.
    pub reserved: heapless::Vec<MemRange, MAX_RESERVED_RANGES>,
    /// MPIDR affinity (`reg`) of each `/cpus` child with device_type "cpu".
    pub cpus: heapless::Vec<u64, MAX_HOST_CPUS>,
    /// GICv3 distributor frame (`reg[0]`).
    pub gicd: MemRange,
    /// GICv3 redistributor region (`reg[1]`).
    pub gicr: MemRange,
    /// The console PL011.
    pub uart: MemRange,
    /// Its interrupt (an SPI's INTID), if its `interrupts` names one; the
    /// kernel takes keyboard input on it, and has none without it.
    pub uart_irq: Option<u32>,
    pub psci_conduit: Conduit,
    pub timer_ppis: TimerPpis,
}

/// How PSCI calls reach firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduit {
    Smc,
    Hvc,
}

/// The generic timer's interrupts, as INTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPpis {
    /// Non-secure EL1 physical timer.
    pub phys: u32,
    /// EL1 virtual timer.
    pub virt: u32,
    /// EL2 physical timer.
    pub hyp: u32,
}

/// A host DT the kernel cannot boot on: where, and why.
pub type HostDtError = dtb::DtError<HostDtErrorKind>;

/// What is wrong with the host DT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDtErrorKind {
    /// Not a well-formed device-tree blob.
    Malformed(DtbFormatError),
    /// No `/memory` node with a non-empty range.
    NoMemory,
    TooManyMemoryRanges,
    TooManyReservedRanges,
    /// A needed `reg` property is absent.
    MissingReg,
    /// A `reg` property cannot be decoded.
    BadReg(RegError),
    /// No `/cpus` node, or no cpu under it.
    NoCpus,
    TooManyCpus,
    /// No node compatible with `arm,gic-v3`.
    NoGic,
    /// The GIC's `reg` has fewer than the two (GICD, GICR) entries.
    GicRegTooShort {
        entries: usize,
    },
    /// No node compatible with `arm,pl011`.
    NoUart,
    /// No node compatible with `arm,psci*` and no `/psci`.
    NoPsci,
    /// `method` is absent or neither `"smc"` nor `"hvc"`.
    BadPsciMethod,
    /// No node compatible with `arm,armv8-timer`.
    NoTimer,
    /// `interrupts` is not at least four `<type number flags>` triples.
    BadTimerInterrupts {
        len: usize,
    },
    /// Triple `index` of the timer's `interrupts` is not a PPI.
    TimerNotPpi {
        index: usize,
    },
}

impl fmt::Display for HostDtErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed device tree: {e}"),
            Self::NoMemory => f.write_str("no memory node with a non-empty range"),
            Self::TooManyMemoryRanges => {
                write!(f, "more than {MAX_MEMORY_RANGES} memory ranges")
            }
            Self::TooManyReservedRanges => {
                write!(f, "more than {MAX_RESERVED_RANGES} reserved ranges")
            }
            Self::MissingReg => f.write_str("missing"),
            Self::BadReg(e) => write!(f, "{e}"),
            Self::NoCpus => f.write_str("no cpu nodes"),
            Self::TooManyCpus => write!(f, "more than {MAX_HOST_CPUS} CPUs"),
            Self::NoGic => f.write_str("no node compatible with \"arm,gic-v3\""),
            Self::GicRegTooShort { entries } => write!(
                f,
                "{entries} entries, expected distributor and redistributor"
            ),
            Self::NoUart => f.write_str("no node compatible with \"arm,pl011\""),
            Self::NoPsci => f.write_str("no PSCI node"),
            Self::BadPsciMethod => f.write_str("expected \"smc\" or \"hvc\""),
            Self::NoTimer => f.write_str("no node compatible with \"arm,armv8-timer\""),
            Self::BadTimerInterrupts { len } => write!(
                f,
                "{len} bytes, expected at least four <type number flags> triples"
            ),
            Self::TimerNotPpi { index } => write!(f, "entry {index} is not a PPI"),
        }
    }
}

fn error(node: &NodePath, property: Option<&'static str>, kind: HostDtErrorKind) -> HostDtError {
    HostDtError::new(node, property, kind)
}

/// Reads `totalsize` from an FDT header after checking its magic, so the
/// kernel can bound the blob at x0 before parsing it. `None` if `dtb_header`
/// is shorter than 8 bytes, the magic is wrong, or the size is smaller than
/// a header.
pub fn dtb_total_size(dtb_header: &[u8]) -> Option<usize> {
    dtb::total_size(dtb_header)
}

/// Parses the host device tree.
pub fn parse_host(dtb_bytes: &[u8]) -> Result<HostPlatform, HostDtError> {
    let fdt = dtb::open(dtb_bytes).map_err(|e| HostDtError {
        node: NodePath::default(),
        property: None,
        kind: HostDtErrorKind::Malformed(e),
    })?;
    let root = dtb::root(&fdt).ok_or_else(|| {
        error(
            &NodePath::root(),
            None,
            HostDtErrorKind::Malformed(DtbFormatError::Truncated),
        )
    })?;
    let root_path = NodePath::root();
    let root_cells = Cells::of(&root);

    // RAM.
    let mut memory = heapless::Vec::new();
    for node in root.children() {
        let is_memory = dtb::base_name(node.name()) == "memory"
            || prop(&node, P_DEVICE_TYPE).and_then(string_value) == Some("memory");
        if !is_memory {
            continue;
        }
        let path = root_path.child(node.name());
        for range in reg_ranges(&node, &path, root_cells)? {
            if range.size != 0 {
                memory
                    .push(range)
                    .map_err(|_| error(&path, Some(P_REG), HostDtErrorKind::TooManyMemoryRanges))?;
            }
        }
    }
    if memory.is_empty() {
        return Err(error(&root_path, None, HostDtErrorKind::NoMemory));
    }

    // Reservations.
    let mut reserved = heapless::Vec::new();
    for (base, size) in fdt.memory_reservations() {
        let range = MemRange { base, size };
        reserved
            .push(range)
            .map_err(|_| error(&root_path, None, HostDtErrorKind::TooManyReservedRanges))?;
    }
    if let Some(rm) = dtb::lookup(&fdt, "/reserved-memory") {
        let cells = Cells::of(&rm.node);
        for child in rm.node.children() {
            let path = rm.path.child(child.name());
            if prop(&child, P_REG).is_none() {
                continue; // A dynamic reservation: nothing fixed to avoid.
            }
            for range in reg_ranges(&child, &path, cells)? {
                reserved.push(range).map_err(|_| {
                    error(&path, Some(P_REG), HostDtErrorKind::TooManyReservedRanges)
                })?;
            }
        }
    }

    // One walk finds the first node of each device kind.
    let [gic, pl011, psci, timer] = dtb::find_firsts::<4>(&fdt, &|n| {
        string_list(prop(n, "compatible")?).find_map(|c| match c {
            "arm,gic-v3" => Some(0),
            "arm,pl011" => Some(1),
            "arm,psci-1.0" | "arm,psci-0.2" | "arm,psci" => Some(2),
            "arm,armv8-timer" => Some(3),
            _ => None,
        })
    });
    let (gicd, gicr) = parse_gic(gic)?;
    let (uart, uart_irq) = parse_uart(&fdt, pl011)?;
    Ok(HostPlatform {
        memory,
        reserved,
        cpus: parse_cpus(&fdt)?,
        gicd,
        gicr,
        uart,
        uart_irq,
        psci_conduit: parse_psci(&fdt, psci)?,
        timer_ppis: parse_timer(timer)?,
    })
}

/// Decodes a node's `reg` with its parent's cell sizes into ranges.
fn reg_ranges<'a>(
    node: &dtb::Node<'_, 'a>,
    path: &NodePath,
    parent_cells: Cells,
) -> Result<impl Iterator<Item = MemRange> + 'a, HostDtError> {
    let value =
        prop(node, P_REG).ok_or_else(|| error(path, Some(P_REG), HostDtErrorKind::MissingReg))?;
    let entries = reg_entries(value, parent_cells)
        .map_err(|e| error(path, Some(P_REG), HostDtErrorKind::BadReg(e)))?;
    Ok(entries.map(|(base, size)| MemRange { base, size }))
}

fn first_reg(found: &Located<'_, '_>) -> Result<MemRange, HostDtError> {
    reg_ranges(&found.node, &found.path, found.parent_cells)?
        .next()
        .ok_or_else(|| error(&found.path, Some(P_REG), HostDtErrorKind::MissingReg))
}

fn parse_cpus(fdt: &dtb::Fdt<'_>) -> Result<heapless::Vec<u64, MAX_HOST_CPUS>, HostDtError> {
    let cpus = dtb::lookup(fdt, "/cpus")
        .ok_or_else(|| error(&NodePath::root(), None, HostDtErrorKind::NoCpus))?;
    let cells = Cells::of(&cpus.node);
    let mut mpidrs = heapless::Vec::new();
    for node in cpus.node.children() {
        if prop(&node, P_DEVICE_TYPE).and_then(string_value) != Some("cpu") {
            continue;
        }
        let path = cpus.path.child(node.name());
        let mpidr = reg_ranges(&node, &path, cells)?
            .next()
            .ok_or_else(|| error(&path, Some(P_REG), HostDtErrorKind::MissingReg))?
            .base;
        mpidrs
            .push(mpidr)
            .map_err(|_| error(&path, None, HostDtErrorKind::TooManyCpus))?;
    }
    if mpidrs.is_empty() {
        return Err(error(&cpus.path, None, HostDtErrorKind::NoCpus));
    }
    Ok(mpidrs)
}

fn parse_gic(gic: Option<Located<'_, '_>>) -> Result<(MemRange, MemRange), HostDtError> {
    let gic = gic.ok_or_else(|| error(&NodePath::root(), None, HostDtErrorKind::NoGic))?;
    let mut frames = reg_ranges(&gic.node, &gic.path, gic.parent_cells)?;
    match (frames.next(), frames.next()) {
        (Some(gicd), Some(gicr)) => Ok((gicd, gicr)),
        (first, _) => Err(error(
            &gic.path,
            Some(P_REG),
            HostDtErrorKind::GicRegTooShort {
                entries: usize::from(first.is_some()),
            },
        )),
    }
}

/// The UART named by `/chosen/stdout-path` if it is a PL011, else the first
/// PL011 in the tree (`first_pl011`): its registers and its SPI.
fn parse_uart<'b, 'a>(
    fdt: &'b dtb::Fdt<'a>,
    first_pl011: Option<Located<'b, 'a>>,
) -> Result<(MemRange, Option<u32>), HostDtError> {
    let from_chosen = dtb::lookup(fdt, "/chosen")
        .and_then(|chosen| prop(&chosen.node, P_STDOUT))
        .and_then(string_value)
        // "serial0:115200n8": options follow the first ':'.
        .and_then(|path| path.split(':').next())
        .and_then(|path| {
            if path.starts_with('/') {
                dtb::lookup(fdt, path)
            } else {
                let aliases = dtb::lookup(fdt, "/aliases")?;
                let target = prop(&aliases.node, path).and_then(string_value)?;
                dtb::lookup(fdt, target)
            }
        })
        .filter(|found| is_compatible(&found.node, "arm,pl011"));
    let uart = match from_chosen {
        Some(found) => found,
        None => {
            first_pl011.ok_or_else(|| error(&NodePath::root(), None, HostDtErrorKind::NoUart))?
        }
    };
    Ok((first_reg(&uart)?, first_spi(&uart.node)))
}

/// The INTID of a node's first interrupt if it is an SPI, as a GICv3
/// parent (three cells: type, number, flags) gives it. Anything else
/// (no `interrupts`, a PPI, a short or odd-sized value) is `None`: the
/// kernel then runs without keyboard input rather than refusing to boot
/// over a device it can use for output alone.
fn first_spi(node: &dtb::Node<'_, '_>) -> Option<u32> {
    let value = prop(node, P_INTERRUPTS)?;
    if value.len() < 12 || !value.len().is_multiple_of(12) {
        return None;
    }
    let ty = dtb::cells_value(value, 0, 1)?;
    let n = dtb::cells_value(value, 4, 1)?;
    (ty == u64::from(GIC_TYPE_SPI) && n < u64::from(SPI_COUNT)).then(|| SPI_INTID_BASE + n as u32)
}

fn parse_psci<'b, 'a>(
    fdt: &'b dtb::Fdt<'a>,
    psci: Option<Located<'b, 'a>>,
) -> Result<Conduit, HostDtError> {
    let psci = psci
        .or_else(|| dtb::lookup(fdt, "/psci"))
        .ok_or_else(|| error(&NodePath::root(), None, HostDtErrorKind::NoPsci))?;
    match prop(&psci.node, P_METHOD).and_then(string_value) {
        Some("smc") => Ok(Conduit::Smc),
        Some("hvc") => Ok(Conduit::Hvc),
        _ => Err(error(
            &psci.path,
            Some(P_METHOD),
            HostDtErrorKind::BadPsciMethod,
        )),
    }
}

/// The timer's `interrupts` are, in order: secure physical, non-secure
/// physical, virtual and hypervisor timer (Linux binding
/// `arm,arch_timer`); a fifth (hypervisor virtual) is ignored.
fn parse_timer(timer: Option<Located<'_, '_>>) -> Result<TimerPpis, HostDtError> {
    let timer = timer.ok_or_else(|| error(&NodePath::root(), None, HostDtErrorKind::NoTimer))?;
    let fail = |kind| error(&timer.path, Some(P_INTERRUPTS), kind);
    let value = prop(&timer.node, P_INTERRUPTS).unwrap_or_default();
    const TRIPLE: usize = 12;
    if value.len() < 4 * TRIPLE || !value.len().is_multiple_of(TRIPLE) {
        return Err(fail(HostDtErrorKind::BadTimerInterrupts {
            len: value.len(),
        }));
    }
    let ppi = |index: usize| -> Result<u32, HostDtError> {
        let cell = |i: usize| dtb::cells_value(value, index * TRIPLE + i * 4, 1);
        match (cell(0), cell(1)) {
            (Some(ty), Some(n)) if ty == u64::from(GIC_TYPE_PPI) && n < u64::from(PPI_COUNT) => {
                Ok(PPI_INTID_BASE + n as u32)
            }
            _ => Err(fail(HostDtErrorKind::TimerNotPpi { index })),
        }
    };
    Ok(TimerPpis {
        phys: ppi(1)?,
        virt: ppi(2)?,
        hyp: ppi(3)?,
    })
}

#[cfg(test)]
mod tests;
