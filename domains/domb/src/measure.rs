//! Measured launch: domB hashes what it gives each domain (payloads,
//! generated device tree, security label) with SHA-256 and records each
//! hash in that domain's TCG "crypto agile" event log, which its vTPM later
//! replays into its PCRs and hands to the guest.
//!
//! The one idea: the log and the PCR values must agree byte for byte with
//! what any TCG verifier computes, so the format follows the TCG PC Client
//! Platform Firmware Profile (PFP) exactly, and [`EventLog`] tracks the PCR
//! values its own records imply. [`replay`] recomputes them from the bytes
//! alone; a test checks both agree.
//!
//! # Log format (PFP, "Event Logging"; same layouts as Linux's
//! `include/linux/tpm_eventlog.h`, edk2's `UefiTcgPlatform.h`, TF-A's
//! `event_log.c`). Every integer is little-endian.
//! 1. One `TCG_PCR_EVENT` in the old SHA-1 format: `pcrIndex` 0, `eventType`
//!    `EV_NO_ACTION`, a 20-byte all-zero digest, `eventSize`, then a
//!    `TCG_EfiSpecIDEvent`: signature `"Spec ID Event03\0"`, platform class
//!    0 (client), spec version 2.0 errata 0, `uintnSize` 2 (UINT64, as on
//!    AArch64), one algorithm (`TPM_ALG_SHA256` = 0x000B, 32 bytes) and no
//!    vendor information. This is what edk2's Tcg2Dxe writes on a 64-bit
//!    platform.
//! 2. Then one `TCG_PCR_EVENT2` per measurement: `pcrIndex`, `eventType`,
//!    `TPML_DIGEST_VALUES` (`count`, then `count` × {`hashAlg` u16, digest}),
//!    `eventSize`, event data.
//!
//! # What goes where
//! domB is the guest's boot loader, so it logs the way GRUB and shim do:
//! every event is `EV_IPL` (0x0D), whose event data the PFP leaves to the
//! loader, carrying an ASCII description and its NUL (as GRUB and TF-A
//! write it). The digest is SHA-256 of the measured bytes, never of the
//! description.
//!
//! | measured | description | PCR | why this PCR |
//! |---|---|---|---|
//! | kernel payload | `kernel` | 9 | GRUB and shim measure the kernel and initrd they load into PCR 9 |
//! | ramdisk | `ramdisk` | 9 | same |
//! | partial device tree | `partial-dtb` | 9 | GRUB measures a device tree it loads into PCR 9 too |
//! | generated guest DTB | `dtb` | 9 | same; not PCR 8, where GRUB's events are strings hashed as they stand |
//! | security label | `label` | 7 | PFP: PCR 7 holds the security policy the platform enforces; sealing to it alone survives kernel updates |
//!
//! `tpm2_eventlog` (tpm2-tools 5.4) replays a domB log to the same PCR
//! values; it warns about the label event only because it knows `EV_IPL`
//! on GRUB's and shim's PCRs (8, 9, 14) alone.
//!
//! The label is hashed as its UTF-8 bytes without a terminator.
//!
//! The reader accepts any crypto-agile log whose every event carries every
//! declared algorithm (the PFP rule; Linux checks the weaker "no more than
//! declared"), as long as SHA-256 is one of them, because the vTPM replays
//! the SHA-256 bank.

use crate::{DomainId, PayloadKind};
use core::fmt;
use core::mem::size_of;
use tessera_sha256::{sha256_compress_soft, sha256_with};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// TCG event types (PFP, "Event Types" table; Linux `enum tcpa_event_types`).
pub mod event_type {
    /// Informational; never extended into a PCR.
    pub const EV_NO_ACTION: u32 = 0x03;
    /// Something an initial program loader loaded or configured.
    pub const EV_IPL: u32 = 0x0D;
}

/// `TPM_ALG_ID` values (TPM 2.0 Library, Part 2, "TPM_ALG_ID").
pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const SM3_256: u16 = 0x0012;
}

/// Bytes in a SHA-256 digest.
pub const SHA256_SIZE: usize = 32;
/// PCRs in a PC Client TPM 2.0 bank.
pub const PCR_COUNT: usize = 24;
/// Algorithms a log may declare; the TCG registry has fewer hash algorithms
/// than this that a PCR bank can use.
pub const MAX_ALGORITHMS: usize = 8;
/// The largest digest of any registered hash algorithm (SHA-512, SHA3-512).
pub const MAX_DIGEST_SIZE: u16 = 64;
/// `TCG_EfiSpecIDEvent.signature` of a crypto-agile log.
pub const SPEC_ID_SIGNATURE: [u8; 16] = *b"Spec ID Event03\0";
/// The signature of the optional `TCG_EfiStartupLocalityEvent`.
pub const STARTUP_LOCALITY_SIGNATURE: [u8; 16] = *b"StartupLocality\0";

const PLATFORM_CLASS_CLIENT: u32 = 0;
const SPEC_VERSION_MAJOR: u8 = 2;
const SPEC_VERSION_MINOR: u8 = 0;
const SPEC_ERRATA: u8 = 0;
/// `uintnSize` 2 means UINT64 fields, AArch64's native size.
const UINTN_SIZE_64: u8 = 2;

/// `TCG_PCR_EVENT`'s fixed part: the SHA-1-format header of the first event.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PcrEventHeader {
    pub pcr_index: U32,
    pub event_type: U32,
    pub sha1_digest: [u8; 20],
    pub event_size: U32,
}
const _: () = assert!(size_of::<PcrEventHeader>() == 32);

/// `TCG_EfiSpecIDEvent`'s fixed part. `number_of_algorithms`
/// [`AlgorithmSize`] entries follow, then `vendorInfoSize` (u8) and that
/// many bytes of vendor information.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SpecIdEventHead {
    pub signature: [u8; 16],
    pub platform_class: U32,
    pub spec_version_minor: u8,
    pub spec_version_major: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    pub number_of_algorithms: U32,
}
const _: () = assert!(size_of::<SpecIdEventHead>() == 28);

/// `TCG_EfiSpecIdEventAlgorithmSize`: one declared algorithm.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AlgorithmSize {
    pub algorithm_id: U16,
    pub digest_size: U16,
}
const _: () = assert!(size_of::<AlgorithmSize>() == 4);

/// `TCG_PCR_EVENT2`'s fixed part, up to `TPML_DIGEST_VALUES.count`. The
/// digests (`hashAlg` u16 and the digest each), `eventSize` (u32) and the
/// event data follow.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PcrEvent2Head {
    pub pcr_index: U32,
    pub event_type: U32,
    pub digest_count: U32,
}
const _: () = assert!(size_of::<PcrEvent2Head>() == 12);

/// The first event's data as domB writes it: the head, one algorithm,
/// and a zero `vendorInfoSize`.
const SPEC_ID_EVENT_DATA_SIZE: usize =
    size_of::<SpecIdEventHead>() + size_of::<AlgorithmSize>() + 1;

/// Bytes of the first event of every log domB writes.
pub const SPEC_ID_EVENT_SIZE: usize = size_of::<PcrEventHeader>() + SPEC_ID_EVENT_DATA_SIZE;

/// Bytes of one SHA-256-only `TCG_PCR_EVENT2` whose data is `description`
/// and its NUL.
pub const fn record_size(description: &str) -> usize {
    size_of::<PcrEvent2Head>()
        + size_of::<u16>()
        + SHA256_SIZE
        + size_of::<u32>()
        + description.len()
        + 1
}

/// A buffer this large always holds a domain's whole log (every
/// [`Component`] once), so the shell can size its static buffer with it.
pub const DOMAIN_LOG_SIZE: usize = {
    let mut total = SPEC_ID_EVENT_SIZE;
    let mut i = 0;
    while i < Component::ALL.len() {
        total += record_size(Component::ALL[i].description());
        i += 1;
    }
    total
};

/// A SHA-256 digest. `Display` prints it as 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; SHA256_SIZE]);

/// SHA-256's block function when the EL1 shell installed a faster one
/// than software (the CPU's SHA-256 instructions: domB hashes every guest
/// DTB and extends every PCR on the boot path, about 0.4 M instructions in
/// software under `-icount`).
static BLOCK_FUNCTION: spin::Once<BlockFunction> = spin::Once::new();

/// SHA-256's block function: folds every whole 64-byte block of the bytes
/// into the state.
pub type BlockFunction = fn(&mut [u32; 8], &[u8]);

/// Hash with `f` from now on: it must fold every whole 64-byte block of
/// its second argument into the state exactly as FIPS 180-4 does. The
/// first call wins.
pub fn use_block_function(f: BlockFunction) {
    BLOCK_FUNCTION.call_once(|| f);
}

fn sha256(bytes: &[u8]) -> [u8; SHA256_SIZE] {
    let compress = BLOCK_FUNCTION
        .get()
        .copied()
        .unwrap_or(sha256_compress_soft);
    sha256_with(compress, bytes)
}

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha256(bytes))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The TPM 2.0 extend operation: `SHA-256(pcr || digest)`.
pub fn extend(pcr: &Sha256Digest, digest: &Sha256Digest) -> Sha256Digest {
    let mut both = [0u8; 2 * SHA256_SIZE];
    let (a, b) = both.split_at_mut(SHA256_SIZE);
    a.copy_from_slice(&pcr.0);
    b.copy_from_slice(&digest.0);
    Sha256Digest(sha256(&both))
}

/// One thing domB measures for a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// A payload module copied into the domain.
    Payload(PayloadKind),
    /// The device tree domB generated for the domain.
    GuestDtb,
    /// The domain's security context, e.g. `system_u:system_r:domU_t`.
    Label,
}

impl Component {
    /// Every component, in the order the boot line prints them.
    pub const ALL: [Component; 5] = [
        Component::Payload(PayloadKind::Kernel),
        Component::Payload(PayloadKind::Ramdisk),
        Component::Payload(PayloadKind::PartialDtb),
        Component::GuestDtb,
        Component::Label,
    ];

    /// The event's text, which is also the component's name on the boot
    /// line.
    pub const fn description(self) -> &'static str {
        match self {
            Component::Payload(kind) => kind.name(),
            Component::GuestDtb => "dtb",
            Component::Label => "label",
        }
    }

    /// The PCR it is extended into (see the module notes for why).
    pub const fn pcr(self) -> u32 {
        match self {
            Component::Payload(_) | Component::GuestDtb => 9,
            Component::Label => 7,
        }
    }

    /// Its event type: every domB event is an `EV_IPL`.
    pub const fn event_type(self) -> u32 {
        event_type::EV_IPL
    }

    const fn slot(self) -> usize {
        match self {
            Component::Payload(PayloadKind::Kernel) => 0,
            Component::Payload(PayloadKind::Ramdisk) => 1,
            Component::Payload(PayloadKind::PartialDtb) => 2,
            Component::GuestDtb => 3,
            Component::Label => 4,
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Component::ALL.len() {
        assert!((Component::ALL[i].pcr() as usize) < PCR_COUNT);
        i += 1;
    }
};

/// The digest each component got, if it was measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measurements {
    digests: [Option<Sha256Digest>; Component::ALL.len()],
}

impl Measurements {
    /// The digest recorded for `component`.
    pub fn get(&self, component: Component) -> Option<Sha256Digest> {
        self.digests.get(component.slot()).copied().flatten()
    }

    fn set(&mut self, component: Component, digest: Sha256Digest) {
        if let Some(slot) = self.digests.get_mut(component.slot()) {
            *slot = Some(digest);
        }
    }
}

/// One bank of SHA-256 PCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    values: [Sha256Digest; PCR_COUNT],
}

impl PcrBank {
    /// The values after `TPM2_Startup`: PCRs 17 to 22 (the dynamic-launch
    /// PCRs) hold all ones, the rest zeros (PC Client PTP, PCR attributes).
    pub fn at_startup() -> Self {
        let mut values = [Sha256Digest::default(); PCR_COUNT];
        for value in values.iter_mut().take(23).skip(17) {
            *value = Sha256Digest([0xFF; SHA256_SIZE]);
        }
        Self { values }
    }

    /// PCR `index`, or `None` past the bank.
    pub fn get(&self, index: u32) -> Option<Sha256Digest> {
        self.values.get(usize::try_from(index).ok()?).copied()
    }

    /// What PCR `index` would become if `digest` were extended into it.
    fn extended(&self, index: u32, digest: &Sha256Digest) -> Option<Sha256Digest> {
        Some(extend(&self.get(index)?, digest))
    }

    fn set(&mut self, index: u32, value: Sha256Digest) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.values.get_mut(i))
        {
            *slot = value;
        }
    }
}

impl Default for PcrBank {
    fn default() -> Self {
        Self::at_startup()
    }
}

/// Why a measurement could not be recorded. The log is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasureError {
    /// The caller's buffer has `available` bytes left; the record needs
    /// `needed`.
    LogFull { needed: usize, available: usize },
    /// Each component is measured once per domain build; a second one would
    /// make the boot line and the log disagree about which copy ran.
    AlreadyMeasured(Component),
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::LogFull { needed, available } => {
                write!(f, "event log full: {needed} bytes needed, {available} left")
            }
            MeasureError::AlreadyMeasured(component) => {
                write!(f, "{} already measured", component.description())
            }
        }
    }
}

/// A domain's event log, written into a buffer the caller owns, with the
/// PCR values it implies.
pub struct EventLog<'buf> {
    buf: &'buf mut [u8],
    len: usize,
    pcrs: PcrBank,
    measurements: Measurements,
}

impl<'buf> EventLog<'buf> {
    /// Starts a log in `buf` with its Spec ID event. [`DOMAIN_LOG_SIZE`]
    /// bytes always suffice for a whole domain.
    pub fn new(buf: &'buf mut [u8]) -> Result<Self, MeasureError> {
        let available = buf.len();
        let first = buf
            .get_mut(..SPEC_ID_EVENT_SIZE)
            .ok_or(MeasureError::LogFull {
                needed: SPEC_ID_EVENT_SIZE,
                available,
            })?;
        let header = PcrEventHeader {
            pcr_index: U32::new(0),
            event_type: U32::new(event_type::EV_NO_ACTION),
            sha1_digest: [0; 20],
            event_size: U32::new(SPEC_ID_EVENT_DATA_SIZE as u32),
        };
        let spec_id = SpecIdEventHead {
            signature: SPEC_ID_SIGNATURE,
            platform_class: U32::new(PLATFORM_CLASS_CLIENT),
            spec_version_minor: SPEC_VERSION_MINOR,
            spec_version_major: SPEC_VERSION_MAJOR,
            spec_errata: SPEC_ERRATA,
            uintn_size: UINTN_SIZE_64,
            number_of_algorithms: U32::new(1),
        };
        let sha256 = AlgorithmSize {
            algorithm_id: U16::new(alg::SHA256),
            digest_size: U16::new(SHA256_SIZE as u16),
        };
        let no_vendor_info = [0u8];
        let mut writer = Writer::new(first);
        writer.put(header.as_bytes());
        writer.put(spec_id.as_bytes());
        writer.put(sha256.as_bytes());
        writer.put(&no_vendor_info);
        Ok(Self {
            buf,
            len: SPEC_ID_EVENT_SIZE,
            pcrs: PcrBank::at_startup(),
            measurements: Measurements::default(),
        })
    }

    /// Hashes `bytes` and records the digest as `component`.
    pub fn measure(
        &mut self,
        component: Component,
        bytes: &[u8],
    ) -> Result<Sha256Digest, MeasureError> {
        self.check_room(component)?;
        let digest = Sha256Digest::of(bytes);
        self.record(component, digest)?;
        Ok(digest)
    }

    /// Records a digest computed elsewhere, e.g. the SHA-256 the unified
    /// image's module table holds for a module and the kernel already
    /// verified, which spares hashing a large kernel twice.
    pub fn record(
        &mut self,
        component: Component,
        digest: Sha256Digest,
    ) -> Result<(), MeasureError> {
        let needed = self.check_room(component)?;
        let pcr = component.pcr();
        // Every component's PCR is inside the bank (checked at compile time
        // below), so the fallback is never taken.
        let new_pcr = self.pcrs.extended(pcr, &digest).unwrap_or_default();
        let end = self.len.saturating_add(needed);
        let record = self
            .buf
            .get_mut(self.len..end)
            .ok_or(MeasureError::LogFull {
                needed,
                available: 0,
            })?;

        let description = component.description().as_bytes();
        let head = PcrEvent2Head {
            pcr_index: U32::new(pcr),
            event_type: U32::new(component.event_type()),
            digest_count: U32::new(1),
        };
        let event_size = U32::new((description.len() + 1) as u32);
        let mut writer = Writer::new(record);
        writer.put(head.as_bytes());
        writer.put(U16::new(alg::SHA256).as_bytes());
        writer.put(&digest.0);
        writer.put(event_size.as_bytes());
        writer.put(description);
        writer.put(&[0]);

        self.len = end;
        self.pcrs.set(pcr, new_pcr);
        self.measurements.set(component, digest);
        Ok(())
    }

    /// Validates that `component` can be recorded; returns its record size.
    fn check_room(&self, component: Component) -> Result<usize, MeasureError> {
        if self.measurements.get(component).is_some() {
            return Err(MeasureError::AlreadyMeasured(component));
        }
        let needed = record_size(component.description());
        let available = self.buf.len().saturating_sub(self.len);
        if needed > available {
            return Err(MeasureError::LogFull { needed, available });
        }
        Ok(needed)
    }

    /// The log so far: exactly the bytes to hand to the vTPM.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The PCR values the log implies.
    pub fn pcrs(&self) -> &PcrBank {
        &self.pcrs
    }

    /// The digest each component got.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }
}

/// Appends to a slice the caller has already checked is exactly large
/// enough; a short slice leaves the tail unwritten instead of panicking.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
            self.at = end;
        }
    }
}

/// The boot print for one domain:
/// `measured d<id> <name>: kernel sha256=<hex> [ramdisk sha256=<hex>]
/// [partial-dtb sha256=<hex>] dtb sha256=<hex> label sha256=<hex>`,
/// listing the components that were measured, in [`Component::ALL`] order.
pub struct BootLine<'a> {
    pub domain: DomainId,
    pub name: &'a str,
    pub measurements: &'a Measurements,
}

impl fmt::Display for BootLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "measured {} {}:", self.domain, self.name)?;
        for component in Component::ALL {
            if let Some(digest) = self.measurements.get(component) {
                write!(f, " {} sha256={digest}", component.description())?;
            }
        }
        Ok(())
    }
}

/// What was wrong with a log, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogError {
    /// Offset of the start of the event at fault.
    pub offset: usize,
    pub kind: LogErrorKind,
}

/// The ways a log can be malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogErrorKind {
    /// The log ends inside the named structure.
    Truncated(&'static str),
    /// The first event is not `EV_NO_ACTION` on PCR 0 with a zero digest.
    NotSpecIdEvent,
    /// The first event's signature is not `"Spec ID Event03\0"`.
    BadSignature,
    /// The Spec ID event declares no algorithm.
    NoAlgorithms,
    /// The Spec ID event declares more than [`MAX_ALGORITHMS`].
    TooManyAlgorithms(u32),
    /// An algorithm is declared twice.
    DuplicateAlgorithm(u16),
    /// A declared digest size is zero, too large, or wrong for a known
    /// algorithm.
    BadDigestSize { algorithm: u16, size: u16 },
    /// SHA-256 is not declared, so there is no bank to replay.
    Sha256NotDeclared,
    /// The Spec ID event's `eventSize` disagrees with its contents.
    SpecIdSizeMismatch,
    /// An event carries a different number of digests than declared.
    DigestCountMismatch { count: u32, declared: u32 },
    /// An event carries a digest of an undeclared algorithm.
    UndeclaredAlgorithm(u16),
    /// An event carries two digests of one algorithm.
    DuplicateDigest(u16),
    /// An extending event names a PCR past the bank.
    PcrOutOfRange(u32),
    /// A `StartupLocality` event is malformed, repeated, or follows an
    /// extension of PCR 0.
    BadStartupLocality,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event log at byte {}: ", self.offset)?;
        match self.kind {
            LogErrorKind::Truncated(what) => write!(f, "truncated {what}"),
            LogErrorKind::NotSpecIdEvent => {
                f.write_str("first event is not EV_NO_ACTION on PCR 0 with a zero digest")
            }
            LogErrorKind::BadSignature => f.write_str("first event is not a \"Spec ID Event03\""),
            LogErrorKind::NoAlgorithms => f.write_str("no algorithm declared"),
            LogErrorKind::TooManyAlgorithms(n) => write!(f, "{n} algorithms declared"),
            LogErrorKind::DuplicateAlgorithm(a) => write!(f, "algorithm {a:#06x} declared twice"),
            LogErrorKind::BadDigestSize { algorithm, size } => {
                write!(
                    f,
                    "algorithm {algorithm:#06x} declared with digest size {size}"
                )
            }
            LogErrorKind::Sha256NotDeclared => f.write_str("SHA-256 not declared"),
            LogErrorKind::SpecIdSizeMismatch => {
                f.write_str("Spec ID event size disagrees with its contents")
            }
            LogErrorKind::DigestCountMismatch { count, declared } => {
                write!(f, "{count} digests where {declared} are declared")
            }
            LogErrorKind::UndeclaredAlgorithm(a) => {
                write!(f, "digest of undeclared algorithm {a:#06x}")
            }
            LogErrorKind::DuplicateDigest(a) => write!(f, "two digests of algorithm {a:#06x}"),
            LogErrorKind::PcrOutOfRange(pcr) => write!(f, "PCR {pcr} out of range"),
            LogErrorKind::BadStartupLocality => f.write_str("bad or late StartupLocality event"),
        }
    }
}

/// The algorithms and version a log's Spec ID event declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version_major: u8,
    pub spec_version_minor: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    /// `(TPM_ALG_ID, digest size)` pairs, in declaration order.
    pub algorithms: heapless::Vec<(u16, u16), MAX_ALGORITHMS>,
}

impl SpecId {
    fn digest_size(&self, algorithm: u16) -> Option<(usize, u16)> {
        self.algorithms
            .iter()
            .enumerate()
            .find(|(_, (id, _))| *id == algorithm)
            .map(|(index, (_, size))| (index, *size))
    }
}

/// One `TCG_PCR_EVENT2` as read from a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEvent<'a> {
    /// Offset of the event in the log.
    pub offset: usize,
    pub pcr_index: u32,
    pub event_type: u32,
    /// The SHA-256 digest, which every event carries (see [`SpecId`]).
    pub sha256: Sha256Digest,
    pub data: &'a [u8],
}

impl LogEvent<'_> {
    /// The domB component this event records, if it is one of domB's: its
    /// type, PCR and description must all match.
    pub fn component(&self) -> Option<Component> {
        Component::ALL.into_iter().find(|c| {
            c.event_type() == self.event_type
                && c.pcr() == self.pcr_index
                && self.data.strip_suffix(&[0]) == Some(c.description().as_bytes())
        })
    }
}

/// Reads a crypto-agile log event by event. The first error ends it.
pub struct EventLogReader<'a> {
    spec_id: SpecId,
    log_len: usize,
    rest: &'a [u8],
    failed: bool,
}

impl<'a> EventLogReader<'a> {
    /// Decodes and checks the Spec ID event.
    pub fn new(log: &'a [u8]) -> Result<Self, LogError> {
        let fail = |kind| LogError { offset: 0, kind };
        let (header, rest) = PcrEventHeader::read_from_prefix(log)
            .map_err(|_| fail(LogErrorKind::Truncated("TCG_PCR_EVENT header")))?;
        if header.event_type.get() != event_type::EV_NO_ACTION
            || header.pcr_index.get() != 0
            || header.sha1_digest != [0; 20]
        {
            return Err(fail(LogErrorKind::NotSpecIdEvent));
        }
        let (data, rest) = split(rest, header.event_size.get())
            .ok_or(fail(LogErrorKind::Truncated("TCG_EfiSpecIDEvent")))?;
        let spec_id = parse_spec_id(data).map_err(fail)?;
        Ok(Self {
            spec_id,
            log_len: log.len(),
            rest,
            failed: false,
        })
    }

    /// What the log declares.
    pub fn spec_id(&self) -> &SpecId {
        &self.spec_id
    }

    /// The next event, `Ok(None)` at the end of the log.
    pub fn next_event(&mut self) -> Result<Option<LogEvent<'a>>, LogError> {
        if self.failed || self.rest.is_empty() {
            return Ok(None);
        }
        let offset = self.log_len.saturating_sub(self.rest.len());
        match parse_event2(&self.spec_id, self.rest, offset) {
            Ok((event, rest)) => {
                self.rest = rest;
                Ok(Some(event))
            }
            Err(kind) => {
                self.failed = true;
                Err(LogError { offset, kind })
            }
        }
    }
}

impl<'a> Iterator for EventLogReader<'a> {
    type Item = Result<LogEvent<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Splits `length` bytes off the front of `bytes`.
fn split(bytes: &[u8], length: u32) -> Option<(&[u8], &[u8])> {
    bytes.split_at_checked(usize::try_from(length).ok()?)
}

fn known_digest_size(algorithm: u16) -> Option<u16> {
    match algorithm {
        alg::SHA1 => Some(20),
        alg::SHA256 | alg::SM3_256 => Some(32),
        alg::SHA384 => Some(48),
        alg::SHA512 => Some(64),
        _ => None,
    }
}

fn parse_spec_id(data: &[u8]) -> Result<SpecId, LogErrorKind> {
    let (head, mut rest) = SpecIdEventHead::read_from_prefix(data)
        .map_err(|_| LogErrorKind::Truncated("TCG_EfiSpecIDEvent"))?;
    if head.signature != SPEC_ID_SIGNATURE {
        return Err(LogErrorKind::BadSignature);
    }
    let count = head.number_of_algorithms.get();
    if count == 0 {
        return Err(LogErrorKind::NoAlgorithms);
    }
    let mut algorithms = heapless::Vec::new();
    for _ in 0..count {
        let (entry, after) = AlgorithmSize::read_from_prefix(rest)
            .map_err(|_| LogErrorKind::Truncated("TCG_EfiSpecIdEventAlgorithmSize"))?;
        rest = after;
        let (algorithm, size) = (entry.algorithm_id.get(), entry.digest_size.get());
        let size_ok = match known_digest_size(algorithm) {
            Some(known) => size == known,
            None => size != 0 && size <= MAX_DIGEST_SIZE,
        };
        if !size_ok {
            return Err(LogErrorKind::BadDigestSize { algorithm, size });
        }
        if algorithms.iter().any(|(id, _)| *id == algorithm) {
            return Err(LogErrorKind::DuplicateAlgorithm(algorithm));
        }
        algorithms
            .push((algorithm, size))
            .map_err(|_| LogErrorKind::TooManyAlgorithms(count))?;
    }
    let (&vendor_info_size, rest) = rest
        .split_first()
        .ok_or(LogErrorKind::Truncated("vendorInfoSize"))?;
    let (_vendor_info, rest) =
        split(rest, u32::from(vendor_info_size)).ok_or(LogErrorKind::Truncated("vendorInfo"))?;
    if !rest.is_empty() {
        return Err(LogErrorKind::SpecIdSizeMismatch);
    }
    if !algorithms.iter().any(|(id, _)| *id == alg::SHA256) {
        return Err(LogErrorKind::Sha256NotDeclared);
    }
    Ok(SpecId {
        platform_class: head.platform_class.get(),
        spec_version_major: head.spec_version_major,
        spec_version_minor: head.spec_version_minor,
        spec_errata: head.spec_errata,
        uintn_size: head.uintn_size,
        algorithms,
    })
}

fn parse_event2<'a>(
    spec_id: &SpecId,
    bytes: &'a [u8],
    offset: usize,
) -> Result<(LogEvent<'a>, &'a [u8]), LogErrorKind> {
    let (head, mut rest) = PcrEvent2Head::read_from_prefix(bytes)
        .map_err(|_| LogErrorKind::Truncated("TCG_PCR_EVENT2 header"))?;
    let count = head.digest_count.get();
    let declared = spec_id.algorithms.len() as u32;
    if count != declared {
        return Err(LogErrorKind::DigestCountMismatch { count, declared });
    }
    // One bit per declared algorithm: MAX_ALGORITHMS fits in a u8.
    let mut seen: u8 = 0;
    let mut sha256 = Sha256Digest::default();
    for _ in 0..count {
        let (algorithm, after) =
            U16::read_from_prefix(rest).map_err(|_| LogErrorKind::Truncated("TPMT_HA hashAlg"))?;
        let algorithm = algorithm.get();
        let (index, size) = spec_id
            .digest_size(algorithm)
            .ok_or(LogErrorKind::UndeclaredAlgorithm(algorithm))?;
        let bit = 1u8.checked_shl(index as u32).unwrap_or(0);
        if seen & bit != 0 {
            return Err(LogErrorKind::DuplicateDigest(algorithm));
        }
        seen |= bit;
        let (digest, after) =
            split(after, u32::from(size)).ok_or(LogErrorKind::Truncated("TPMT_HA digest"))?;
        if algorithm == alg::SHA256 {
            // The Spec ID check pinned SHA-256's size to 32.
            if let Ok(bytes) = <[u8; SHA256_SIZE]>::try_from(digest) {
                sha256 = Sha256Digest(bytes);
            }
        }
        rest = after;
    }
    let (event_size, rest) =
        U32::read_from_prefix(rest).map_err(|_| LogErrorKind::Truncated("eventSize"))?;
    let (data, rest) =
        split(rest, event_size.get()).ok_or(LogErrorKind::Truncated("event data"))?;
    let event = LogEvent {
        offset,
        pcr_index: head.pcr_index.get(),
        event_type: head.event_type.get(),
        sha256,
        data,
    };
    Ok((event, rest))
}

/// Replays a log into a fresh SHA-256 bank: the PCR values a TPM would
/// hold had it seen exactly these extensions since startup.
///
/// `EV_NO_ACTION` events extend nothing; a `StartupLocality` one sets PCR
/// 0's starting value to its locality (PFP, "Startup Locality Event"),
/// which is only meaningful before PCR 0 is extended.
pub fn replay(log: &[u8]) -> Result<PcrBank, LogError> {
    let mut reader = EventLogReader::new(log)?;
    let mut bank = PcrBank::at_startup();
    let mut pcr0_started = false;
    while let Some(event) = reader.next_event()? {
        let fail = |kind| LogError {
            offset: event.offset,
            kind,
        };
        if event.event_type == event_type::EV_NO_ACTION {
            if event.data.starts_with(&STARTUP_LOCALITY_SIGNATURE) {
                let locality = match event.data {
                    [.., locality] if event.data.len() == STARTUP_LOCALITY_SIGNATURE.len() + 1 => {
                        *locality
                    }
                    _ => return Err(fail(LogErrorKind::BadStartupLocality)),
                };
                if pcr0_started || event.pcr_index != 0 {
                    return Err(fail(LogErrorKind::BadStartupLocality));
                }
                let mut start = [0u8; SHA256_SIZE];
                if let Some(last) = start.last_mut() {
                    *last = locality;
                }
                bank.set(0, Sha256Digest(start));
                pcr0_started = true;
            }
            continue;
        }
        let value = bank
            .extended(event.pcr_index, &event.sha256)
            .ok_or(fail(LogErrorKind::PcrOutOfRange(event.pcr_index)))?;
        bank.set(event.pcr_index, value);
        pcr0_started |= event.pcr_index == 0;
    }
    Ok(bank)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: Component = Component::Payload(PayloadKind::Kernel);
    const RAMDISK: Component = Component::Payload(PayloadKind::Ramdisk);

    fn full_log(buf: &mut [u8]) -> EventLog<'_> {
        let mut log = EventLog::new(buf).unwrap();
        log.measure(KERNEL, b"kernel image").unwrap();
        log.measure(RAMDISK, b"initramfs").unwrap();
        log.measure(Component::Payload(PayloadKind::PartialDtb), b"partial")
            .unwrap();
        log.measure(Component::GuestDtb, b"\xd0\x0d\xfe\xed guest dtb")
            .unwrap();
        log.measure(Component::Label, b"system_u:system_r:domU_t")
            .unwrap();
        log
    }

    /// Builds logs by hand, field by field, so negative tests can corrupt
    /// exactly one field.
    struct LogBuilder {
        bytes: Vec<u8>,
    }

    impl LogBuilder {
        fn spec_id(algorithms: &[(u16, u16)], vendor_info: &[u8]) -> Self {
            let mut data = Vec::new();
            data.extend_from_slice(&SPEC_ID_SIGNATURE);
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&[0, 2, 0, 2]);
            data.extend_from_slice(&(algorithms.len() as u32).to_le_bytes());
            for (id, size) in algorithms {
                data.extend_from_slice(&id.to_le_bytes());
                data.extend_from_slice(&size.to_le_bytes());
            }
            data.push(vendor_info.len() as u8);
            data.extend_from_slice(vendor_info);
            Self::first_event(0, event_type::EV_NO_ACTION, [0; 20], &data)
        }

        fn first_event(pcr: u32, kind: u32, sha1: [u8; 20], data: &[u8]) -> Self {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&pcr.to_le_bytes());
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&sha1);
            bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
            bytes.extend_from_slice(data);
            Self { bytes }
        }

        fn event(mut self, pcr: u32, kind: u32, digests: Digests, data: &[u8]) -> Self {
            let b = &mut self.bytes;
            b.extend_from_slice(&pcr.to_le_bytes());
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&(digests.len() as u32).to_le_bytes());
            for (id, digest) in digests {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(digest);
            }
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
            self
        }
    }

    /// `(TPM_ALG_ID, digest)` pairs of one event.
    type Digests<'a> = &'a [(u16, &'a [u8])];

    fn sha256_only() -> LogBuilder {
        LogBuilder::spec_id(&[(alg::SHA256, 32)], &[])
    }

    fn error_kind(log: &[u8]) -> LogErrorKind {
        replay(log).unwrap_err().kind
    }

    #[test]
    fn spec_id_event_matches_the_pfp_layout() {
        let mut buf = [0u8; SPEC_ID_EVENT_SIZE];
        let log = EventLog::new(&mut buf).unwrap();
        let bytes = log.as_bytes();
        assert_eq!(bytes.len(), 65);
        assert_eq!(&bytes[0..4], &0u32.to_le_bytes(), "pcrIndex 0");
        assert_eq!(&bytes[4..8], &3u32.to_le_bytes(), "EV_NO_ACTION");
        assert_eq!(&bytes[8..28], &[0; 20], "zero SHA-1 digest");
        assert_eq!(&bytes[28..32], &33u32.to_le_bytes(), "eventSize");
        assert_eq!(&bytes[32..48], b"Spec ID Event03\0");
        assert_eq!(&bytes[48..52], &0u32.to_le_bytes(), "client platform");
        assert_eq!(
            &bytes[52..56],
            &[0, 2, 0, 2],
            "minor, major, errata, uintnSize"
        );
        assert_eq!(&bytes[56..60], &1u32.to_le_bytes(), "one algorithm");
        assert_eq!(&bytes[60..64], &[0x0B, 0x00, 32, 0], "SHA-256, 32 bytes");
        assert_eq!(bytes[64], 0, "no vendor info");
        // The hand builder writes the same bytes, so the negative tests
        // below corrupt a faithful log.
        assert_eq!(bytes, sha256_only().bytes.as_slice());
    }

    #[test]
    fn event2_matches_the_pfp_layout() {
        let mut buf = [0u8; 256];
        let mut log = EventLog::new(&mut buf).unwrap();
        let digest = log.measure(KERNEL, b"abc").unwrap();
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            digest.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let record = &log.as_bytes()[SPEC_ID_EVENT_SIZE..];
        assert_eq!(record.len(), record_size("kernel"));
        assert_eq!(&record[0..4], &9u32.to_le_bytes());
        assert_eq!(&record[4..8], &0x0Du32.to_le_bytes(), "EV_IPL");
        assert_eq!(&record[8..12], &1u32.to_le_bytes(), "one digest");
        assert_eq!(&record[12..14], &0x000Bu16.to_le_bytes());
        assert_eq!(&record[14..46], &digest.0);
        assert_eq!(&record[46..50], &7u32.to_le_bytes());
        assert_eq!(&record[50..], b"kernel\0");
    }

    #[test]
    fn replay_reproduces_the_tracked_pcrs() {
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let log = full_log(&mut buf);
        assert_eq!(
            log.as_bytes().len(),
            DOMAIN_LOG_SIZE,
            "the constant is exact"
        );
        let replayed = replay(log.as_bytes()).unwrap();
        assert_eq!(&replayed, log.pcrs());
        // And the tracked values are the extend chain a TPM computes.
        let zero = Sha256Digest::default();
        let m = log.measurements();
        let pcr9 = Component::ALL[..4]
            .iter()
            .fold(zero, |pcr, c| extend(&pcr, &m.get(*c).unwrap()));
        assert_eq!(replayed.get(9), Some(pcr9));
        let label = Sha256Digest::of(b"system_u:system_r:domU_t");
        assert_eq!(replayed.get(7), Some(extend(&zero, &label)));
        assert_eq!(
            replayed.get(0),
            Some(zero),
            "untouched PCRs keep their reset value"
        );
        assert_eq!(replayed.get(17), Some(Sha256Digest([0xFF; 32])));
        assert_eq!(replayed.get(24), None);
    }

    #[test]
    fn pcrs_match_an_independent_replayer() {
        // The same measurements replayed by tpm2-tools 5.4's
        // `tpm2_eventlog` from the bytes of this log.
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let mut log = EventLog::new(&mut buf).unwrap();
        log.measure(KERNEL, b"kernel image").unwrap();
        log.measure(RAMDISK, b"initramfs").unwrap();
        log.measure(Component::GuestDtb, b"dtb").unwrap();
        log.measure(Component::Label, b"system_u:system_r:domU_t")
            .unwrap();
        let pcrs = replay(log.as_bytes()).unwrap();
        assert_eq!(
            pcrs.get(7).unwrap().to_string(),
            "8e3d82d0715698dd1bf5a580cd7ab5b963359a8a86daad16f0a5467b254fb5ce"
        );
        assert_eq!(
            pcrs.get(9).unwrap().to_string(),
            "2245b4a6fd1b1b376c0b44518cb7374e985ab9c36ee5e7956bed483511d1df8a"
        );
    }

    #[test]
    fn reader_names_each_component() {
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let log = full_log(&mut buf);
        let reader = EventLogReader::new(log.as_bytes()).unwrap();
        assert_eq!(reader.spec_id().algorithms.as_slice(), &[(alg::SHA256, 32)]);
        let events: Vec<_> = reader.map(Result::unwrap).collect();
        let components: Vec<_> = events.iter().map(|e| e.component().unwrap()).collect();
        assert_eq!(components, Component::ALL);
        for event in &events {
            assert_eq!(
                Some(event.sha256),
                log.measurements().get(event.component().unwrap())
            );
        }
    }

    #[test]
    fn recorded_digest_is_logged_as_given() {
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let mut log = EventLog::new(&mut buf).unwrap();
        let from_module_table = Sha256Digest([7; 32]);
        log.record(KERNEL, from_module_table).unwrap();
        let event = EventLogReader::new(log.as_bytes())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(event.sha256, from_module_table);
    }

    #[test]
    fn full_log_is_refused_and_left_unchanged() {
        let mut buf = [0u8; SPEC_ID_EVENT_SIZE + 60];
        let mut log = EventLog::new(&mut buf).unwrap();
        log.measure(KERNEL, b"k").unwrap();
        let before = log.as_bytes().to_vec();
        let pcrs = log.pcrs().clone();
        assert_eq!(
            log.measure(Component::Label, b"l"),
            Err(MeasureError::LogFull {
                needed: record_size("label"),
                available: 60 - record_size("kernel"),
            })
        );
        assert_eq!(log.as_bytes(), before.as_slice());
        assert_eq!(log.pcrs(), &pcrs);
        assert_eq!(log.measurements().get(Component::Label), None);
        replay(log.as_bytes()).unwrap();
    }

    #[test]
    fn buffer_too_small_for_the_header_is_refused() {
        let mut buf = [0u8; SPEC_ID_EVENT_SIZE - 1];
        assert_eq!(
            EventLog::new(&mut buf).err(),
            Some(MeasureError::LogFull {
                needed: SPEC_ID_EVENT_SIZE,
                available: SPEC_ID_EVENT_SIZE - 1,
            })
        );
    }

    #[test]
    fn second_measurement_of_a_component_is_refused() {
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let mut log = EventLog::new(&mut buf).unwrap();
        log.measure(KERNEL, b"one").unwrap();
        let len = log.as_bytes().len();
        assert_eq!(
            log.measure(KERNEL, b"two"),
            Err(MeasureError::AlreadyMeasured(KERNEL))
        );
        assert_eq!(log.as_bytes().len(), len);
        assert_eq!(
            log.measurements().get(KERNEL),
            Some(Sha256Digest::of(b"one"))
        );
    }

    #[test]
    fn boot_line_lists_what_was_measured() {
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let mut log = EventLog::new(&mut buf).unwrap();
        log.measure(KERNEL, b"abc").unwrap();
        log.measure(Component::GuestDtb, b"").unwrap();
        log.measure(Component::Label, b"abc").unwrap();
        let line = BootLine {
            domain: DomainId(3),
            name: "guest",
            measurements: log.measurements(),
        }
        .to_string();
        assert_eq!(
            line,
            "measured d3 guest: \
             kernel sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad \
             dtb sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
             label sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn multi_bank_log_replays_its_sha256_bank() {
        let sha1 = [0x11u8; 20];
        let sha256 = [0x22u8; 32];
        let log = LogBuilder::spec_id(&[(alg::SHA1, 20), (alg::SHA256, 32)], b"vendor")
            .event(
                0,
                event_type::EV_NO_ACTION,
                &[(alg::SHA1, &[0; 20]), (alg::SHA256, &[0; 32])],
                &{
                    let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
                    data.push(3);
                    data
                },
            )
            .event(
                0,
                1,
                &[(alg::SHA1, &sha1), (alg::SHA256, &sha256)],
                b"POST CODE",
            )
            .bytes;
        let bank = replay(&log).unwrap();
        let mut start = [0u8; 32];
        start[31] = 3;
        assert_eq!(
            bank.get(0),
            Some(extend(&Sha256Digest(start), &Sha256Digest(sha256)))
        );
    }

    #[test]
    fn empty_and_truncated_logs_are_refused() {
        assert_eq!(
            error_kind(&[]),
            LogErrorKind::Truncated("TCG_PCR_EVENT header")
        );
        let mut buf = [0u8; DOMAIN_LOG_SIZE];
        let log = full_log(&mut buf);
        let bytes = log.as_bytes();
        // Every proper prefix either stops inside an event or is the exact
        // end of one; never a panic, never a wrong success.
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            if let Ok(bank) = replay(prefix) {
                let events = EventLogReader::new(prefix).unwrap().count();
                assert!(events < Component::ALL.len());
                assert_ne!(&bank, log.pcrs());
            }
        }
        let cut = &bytes[..bytes.len() - 1];
        let err = replay(cut).unwrap_err();
        assert_eq!(err.kind, LogErrorKind::Truncated("event data"));
        assert_eq!(err.offset, bytes.len() - record_size("label"));
    }

    #[test]
    fn first_event_must_be_spec_id() {
        let data = &sha256_only().bytes[32..];
        for (pcr, kind, sha1) in [
            (1, event_type::EV_NO_ACTION, [0; 20]),
            (0, event_type::EV_IPL, [0; 20]),
            (0, event_type::EV_NO_ACTION, [1; 20]),
        ] {
            let log = LogBuilder::first_event(pcr, kind, sha1, data).bytes;
            assert_eq!(error_kind(&log), LogErrorKind::NotSpecIdEvent);
        }
        let mut log = sha256_only().bytes;
        log[32..48].copy_from_slice(b"Spec ID Event02\0");
        assert_eq!(error_kind(&log), LogErrorKind::BadSignature);
    }

    #[test]
    fn bad_algorithm_declarations_are_refused() {
        let cases: [(&[(u16, u16)], LogErrorKind); 6] = [
            (&[], LogErrorKind::NoAlgorithms),
            (&[(alg::SHA1, 20)], LogErrorKind::Sha256NotDeclared),
            (
                &[(alg::SHA256, 20)],
                LogErrorKind::BadDigestSize {
                    algorithm: alg::SHA256,
                    size: 20,
                },
            ),
            (
                &[(0x7777, 0)],
                LogErrorKind::BadDigestSize {
                    algorithm: 0x7777,
                    size: 0,
                },
            ),
            (
                &[(0x7777, 65)],
                LogErrorKind::BadDigestSize {
                    algorithm: 0x7777,
                    size: 65,
                },
            ),
            (
                &[(alg::SHA256, 32), (alg::SHA256, 32)],
                LogErrorKind::DuplicateAlgorithm(alg::SHA256),
            ),
        ];
        for (algorithms, expected) in cases {
            assert_eq!(
                error_kind(&LogBuilder::spec_id(algorithms, &[]).bytes),
                expected
            );
        }
        let nine: Vec<(u16, u16)> = (0x100..0x109).map(|id| (id, 32)).collect();
        assert_eq!(
            error_kind(&LogBuilder::spec_id(&nine, &[]).bytes),
            LogErrorKind::TooManyAlgorithms(9)
        );
        // An unknown algorithm of plausible size is fine: that is what
        // "crypto agile" is for.
        replay(&LogBuilder::spec_id(&[(0x7777, 48), (alg::SHA256, 32)], &[]).bytes).unwrap();
    }

    #[test]
    fn spec_id_size_must_match_its_contents() {
        let mut log = sha256_only().bytes;
        log.push(0);
        log[28..32].copy_from_slice(&34u32.to_le_bytes());
        assert_eq!(error_kind(&log), LogErrorKind::SpecIdSizeMismatch);
        // Claiming vendor info that is not there.
        let mut log = sha256_only().bytes;
        log[64] = 1;
        assert_eq!(error_kind(&log), LogErrorKind::Truncated("vendorInfo"));
        // An event size past the end of the log.
        let mut log = sha256_only().bytes;
        log[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            error_kind(&log),
            LogErrorKind::Truncated("TCG_EfiSpecIDEvent")
        );
    }

    #[test]
    fn bad_digest_lists_are_refused() {
        let d = [0u8; 32];
        let cases: [(Digests, LogErrorKind); 3] = [
            (
                &[],
                LogErrorKind::DigestCountMismatch {
                    count: 0,
                    declared: 1,
                },
            ),
            (
                &[(alg::SHA256, &d), (alg::SHA256, &d)],
                LogErrorKind::DigestCountMismatch {
                    count: 2,
                    declared: 1,
                },
            ),
            (
                &[(alg::SHA1, &d[..20])],
                LogErrorKind::UndeclaredAlgorithm(alg::SHA1),
            ),
        ];
        for (digests, expected) in cases {
            let log = sha256_only()
                .event(9, event_type::EV_IPL, digests, b"x\0")
                .bytes;
            let err = replay(&log).unwrap_err();
            assert_eq!(
                err,
                LogError {
                    offset: SPEC_ID_EVENT_SIZE,
                    kind: expected
                }
            );
        }
        let two = LogBuilder::spec_id(&[(alg::SHA1, 20), (alg::SHA256, 32)], &[])
            .event(
                9,
                event_type::EV_IPL,
                &[(alg::SHA256, &d), (alg::SHA256, &d)],
                b"",
            )
            .bytes;
        assert_eq!(error_kind(&two), LogErrorKind::DuplicateDigest(alg::SHA256));
    }

    #[test]
    fn extending_past_the_bank_is_refused() {
        let log = sha256_only()
            .event(24, event_type::EV_IPL, &[(alg::SHA256, &[0; 32])], b"")
            .bytes;
        assert_eq!(error_kind(&log), LogErrorKind::PcrOutOfRange(24));
        // An EV_NO_ACTION event extends nothing, whatever its PCR says.
        let log = sha256_only()
            .event(
                99,
                event_type::EV_NO_ACTION,
                &[(alg::SHA256, &[0; 32])],
                b"",
            )
            .bytes;
        assert_eq!(replay(&log).unwrap(), PcrBank::at_startup());
    }

    #[test]
    fn startup_locality_must_be_well_formed_and_first() {
        let zero: &[u8] = &[0; 32];
        let locality = |value: &[u8]| {
            let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
            data.extend_from_slice(value);
            data
        };
        let no_action = event_type::EV_NO_ACTION;
        let late = sha256_only()
            .event(0, 1, &[(alg::SHA256, zero)], b"")
            .event(0, no_action, &[(alg::SHA256, zero)], &locality(&[3]))
            .bytes;
        assert_eq!(error_kind(&late), LogErrorKind::BadStartupLocality);
        let twice = sha256_only()
            .event(0, no_action, &[(alg::SHA256, zero)], &locality(&[3]))
            .event(0, no_action, &[(alg::SHA256, zero)], &locality(&[3]))
            .bytes;
        assert_eq!(error_kind(&twice), LogErrorKind::BadStartupLocality);
        for bad in [&[][..], &[3, 3][..]] {
            let log = sha256_only()
                .event(0, no_action, &[(alg::SHA256, zero)], &locality(bad))
                .bytes;
            assert_eq!(error_kind(&log), LogErrorKind::BadStartupLocality);
        }
    }

    #[test]
    fn reader_stops_after_the_first_error() {
        let mut log = sha256_only()
            .event(9, 0x0D, &[(alg::SHA256, &[0; 32])], b"")
            .bytes;
        log.extend_from_slice(&[1, 2, 3]);
        let mut reader = EventLogReader::new(&log).unwrap();
        assert!(reader.next().unwrap().is_ok());
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }

    #[test]
    fn foreign_events_are_not_components() {
        let log = sha256_only()
            .event(9, event_type::EV_IPL, &[(alg::SHA256, &[0; 32])], b"kernel")
            .event(
                7,
                event_type::EV_IPL,
                &[(alg::SHA256, &[0; 32])],
                b"kernel\0",
            )
            .event(9, 1, &[(alg::SHA256, &[0; 32])], b"kernel\0")
            .bytes;
        for event in EventLogReader::new(&log).unwrap() {
            assert_eq!(event.unwrap().component(), None);
        }
    }

    #[test]
    fn errors_render_with_their_offset() {
        let err = replay(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event log at byte 0: truncated TCG_PCR_EVENT header"
        );
        let full = MeasureError::LogFull {
            needed: 55,
            available: 3,
        };
        assert_eq!(full.to_string(), "event log full: 55 bytes needed, 3 left");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_measurement_order_replays_to_the_tracked_pcrs(
                order in Just(Component::ALL.to_vec()).prop_shuffle(),
                take in 0usize..=5,
                payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 5),
            ) {
                let mut buf = [0u8; DOMAIN_LOG_SIZE];
                let mut log = EventLog::new(&mut buf).unwrap();
                for (component, bytes) in order.iter().zip(&payloads).take(take) {
                    log.measure(*component, bytes).unwrap();
                }
                prop_assert_eq!(&replay(log.as_bytes()).unwrap(), log.pcrs());
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = replay(&bytes);
                if let Ok(reader) = EventLogReader::new(&bytes) {
                    for event in reader.flatten() {
                        prop_assert!(event.offset < bytes.len());
                        prop_assert!(event.data.len() <= bytes.len());
                    }
                }
            }

            #[test]
            fn corrupting_a_valid_log_never_panics(
                index in 0usize..DOMAIN_LOG_SIZE,
                value in any::<u8>(),
            ) {
                let mut buf = [0u8; DOMAIN_LOG_SIZE];
                let log = full_log(&mut buf);
                let mut bytes = log.as_bytes().to_vec();
                bytes[index] = value;
                let _ = replay(&bytes);
            }
        }
    }
}
