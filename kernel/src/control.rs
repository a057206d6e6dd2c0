//! Domain control, the portable half: decoding and validating the control
//! hypercall (`tessera_ipc::control`), the life cycle of a domain slot, and
//! the allocation of vCPU numbers.
//!
//! The one idea: a domain slot is a small state machine, and every change of
//! state is one compare-exchange that [`next`] has approved, so the EL2 side
//! (`hv/control.rs`) can let the trap and scheduler paths read a domain's
//! fields without a lock. The fields are written only while the slot is
//! [`SlotState::Creating`], which no lookup returns, and a destroyed slot is
//! [`SlotState::Dying`] until every pCPU has passed a scheduling point, so no
//! reference taken before survives into the slot's next life.
//!
//! A domain that asked to reboot may be *reset* ([`check_reset`],
//! `Event::Reset`): stopped goes back to created, in place, and its
//! builder loads and starts it again.
//!
//! A domain that names a device model is also *held* ([`Hold`]): its first
//! `Unpause` starts none of its vCPUs until that device model says it
//! serves it (`IoreqCmd::Ready`), so a guest never touches a device before
//! anyone answers for it.
//!
//! Nothing here touches guest memory or kernel state: decoding looks at
//! register values, and the `parse_*` functions at structures already
//! copied in.

use crate::addr::{GuestVa, PAGE_SIZE};
use tessera_ipc::control::{
    ControlCmd, CreateDomain, DomainState, ExitReason, ModuleInfo, ShareMemory, COPY_MAX,
    CREATE_FLAGS, CREATE_RESTARTS, CREATE_VPL011, LABEL_LEN, MAX_DOMID, MAX_PCPU_NUMBER, MAX_PINS,
    MEMORY_ALIGN, MEMORY_ANYWHERE, NAME_LEN, SHARE_WINDOW_BASE, SHARE_WINDOW_SIZE,
};
use tessera_ipc::errno::Errno;
use tessera_ipc::platform::{MAX_VCPUS_PER_DOMAIN, RAM_BASE};

/// Guest-physical addresses end here (a 39-bit stage 2).
pub const IPA_LIMIT: u64 = 1 << 39;
/// The most RAM one domain may have: from `RAM_BASE` to the IPA limit.
pub const MAX_RAM: u64 = IPA_LIMIT - RAM_BASE;

/// A decoded control call, its register arguments range-checked. The
/// kernel still checks them against the domains, its memory and the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlCall {
    Create {
        arg: GuestVa,
    },
    AssignMemory {
        dom: u16,
        size: u64,
        /// A fixed host range (`xen,static-mem`), or `None` for any free RAM.
        host: Option<u64>,
    },
    ModuleInfo {
        dom: u16,
        arg: GuestVa,
    },
    CopyModule {
        dom: u16,
        module: u32,
        ipa: u64,
    },
    CopyToDomain {
        dom: u16,
        src: GuestVa,
        ipa: u64,
        len: u64,
    },
    SetVcpuContext {
        dom: u16,
        vcpu: usize,
        pc: u64,
        x0: u64,
    },
    Unpause {
        dom: u16,
    },
    Pause {
        dom: u16,
    },
    Destroy {
        dom: u16,
    },
    GetInfo {
        dom: u16,
        arg: GuestVa,
    },
    BindEvtchn {
        a: u16,
        port_a: u32,
        b: u16,
        port_b: u32,
    },
    ShareMemory {
        arg: GuestVa,
    },
    ResetDomain {
        dom: u16,
    },
}

fn domid(raw: u64) -> Result<u16, Errno> {
    u16::try_from(raw).map_err(|_| Errno::Einval)
}

fn port(raw: u64) -> Result<u32, Errno> {
    u32::try_from(raw).map_err(|_| Errno::Einval)
}

/// Decode the control call in x0..x5. An unknown sub-command is `-ENOSYS`,
/// an argument out of range `-EINVAL`.
pub fn decode(args: &[u64; 6]) -> Result<ControlCall, Errno> {
    let cmd = ControlCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?;
    let [_, a1, a2, a3, a4, _] = *args;
    Ok(match cmd {
        ControlCmd::CreateDomain => ControlCall::Create { arg: GuestVa(a1) },
        ControlCmd::AssignMemory => {
            let host = (a3 != MEMORY_ANYWHERE).then_some(a3);
            let fits = a2 > 0 && a2 <= MAX_RAM && a2.is_multiple_of(MEMORY_ALIGN);
            let host_ok =
                host.is_none_or(|h| h.is_multiple_of(MEMORY_ALIGN) && h.checked_add(a2).is_some());
            if !fits || !host_ok {
                return Err(Errno::Einval);
            }
            ControlCall::AssignMemory {
                dom: domid(a1)?,
                size: a2,
                host,
            }
        }
        ControlCmd::ModuleInfo => ControlCall::ModuleInfo {
            dom: domid(a1)?,
            arg: GuestVa(a2),
        },
        ControlCmd::CopyModule => ControlCall::CopyModule {
            dom: domid(a1)?,
            module: u32::try_from(a2).map_err(|_| Errno::Einval)?,
            ipa: a3,
        },
        ControlCmd::CopyToDomain => {
            if a4 == 0 || a4 > COPY_MAX || a2.checked_add(a4).is_none() {
                return Err(Errno::Einval);
            }
            ControlCall::CopyToDomain {
                dom: domid(a1)?,
                src: GuestVa(a2),
                ipa: a3,
                len: a4,
            }
        }
        ControlCmd::SetVcpuContext => {
            if a2 >= MAX_VCPUS_PER_DOMAIN as u64 || !a3.is_multiple_of(4) {
                return Err(Errno::Einval);
            }
            ControlCall::SetVcpuContext {
                dom: domid(a1)?,
                vcpu: a2 as usize,
                pc: a3,
                x0: a4,
            }
        }
        ControlCmd::Unpause => ControlCall::Unpause { dom: domid(a1)? },
        ControlCmd::Pause => ControlCall::Pause { dom: domid(a1)? },
        ControlCmd::Destroy => ControlCall::Destroy { dom: domid(a1)? },
        ControlCmd::GetDomainInfo => ControlCall::GetInfo {
            dom: domid(a1)?,
            arg: GuestVa(a2),
        },
        ControlCmd::BindEvtchn => {
            let (a, b) = (domid(a1)?, domid(a3)?);
            if a == b {
                return Err(Errno::Einval);
            }
            ControlCall::BindEvtchn {
                a,
                port_a: port(a2)?,
                b,
                port_b: port(a4)?,
            }
        }
        ControlCmd::ShareMemory => ControlCall::ShareMemory { arg: GuestVa(a1) },
        ControlCmd::ResetDomain => ControlCall::ResetDomain { dom: domid(a1)? },
    })
}

/// The text in a NUL-padded field: everything before the first NUL, which
/// must be printable ASCII without spaces, and only NULs after it.
fn padded_text(field: &[u8]) -> Result<&str, Errno> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (text, pad) = field.split_at(end);
    if pad.iter().any(|&b| b != 0) || !text.iter().all(u8::is_ascii_graphic) {
        return Err(Errno::Einval);
    }
    core::str::from_utf8(text).map_err(|_| Errno::Einval)
}

/// A checked `CreateDomain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSpec {
    pub name: heapless::String<NAME_LEN>,
    /// The security context, not yet looked up in the policy.
    pub label: heapless::String<LABEL_LEN>,
    pub vcpus: usize,
    /// The id asked for (`None`: the lowest free one).
    pub domid: Option<u16>,
    /// The id of its device model, not yet looked up (`None`: none).
    pub device_model: Option<u16>,
    /// Its device model emulates a PL011 for it (`CREATE_VPL011`).
    pub vpl011: bool,
    /// It is a device model its builder restarts (`CREATE_RESTARTS`): the
    /// domains it serves wait for its next generation when it stops.
    pub restarts: bool,
    /// `tessera,pcpus`: distinct pCPU numbers below 64, at most one per
    /// vCPU; empty when it is not pinned. Not yet checked against the
    /// board.
    pub pins: heapless::Vec<u32, MAX_PINS>,
}

/// Check a `CreateDomain` copied in from the caller: a vCPU count the
/// platform allows, an id in range (or 0), known flags (`CREATE_VPL011`
/// only with a device model), a device model that is not the domain
/// itself, a pin list of at most one pin per vCPU with no pCPU twice (the
/// unused entries and the padding zero), and a non-empty printable name
/// and label.
pub fn parse_create(raw: &CreateDomain) -> Result<CreateSpec, Errno> {
    let vcpus = raw.vcpus.get() as usize;
    let domid = raw.domid.get();
    let flags = raw.flags.get();
    let device_model = raw.device_model.get();
    let nr_pins = usize::from(raw.nr_pcpus.get());
    if vcpus == 0 || vcpus > MAX_VCPUS_PER_DOMAIN || domid > MAX_DOMID {
        return Err(Errno::Einval);
    }
    if flags & !CREATE_FLAGS != 0 || (flags & CREATE_VPL011 != 0 && device_model == 0) {
        return Err(Errno::Einval);
    }
    if device_model > MAX_DOMID || (device_model != 0 && device_model == domid) {
        return Err(Errno::Einval);
    }
    if nr_pins > vcpus || nr_pins > MAX_PINS || raw._pad.get() != 0 {
        return Err(Errno::Einval);
    }
    let (used, unused) = raw.pcpus.split_at(nr_pins);
    let mut pins = heapless::Vec::new();
    for &pin in used {
        if pin >= MAX_PCPU_NUMBER || pins.contains(&u32::from(pin)) {
            return Err(Errno::Einval);
        }
        pins.push(u32::from(pin)).map_err(|_| Errno::Einval)?;
    }
    if unused.iter().any(|&b| b != 0) {
        return Err(Errno::Einval);
    }
    let name = padded_text(&raw.name)?;
    let label = padded_text(&raw.label)?;
    if name.is_empty() || label.is_empty() {
        return Err(Errno::Einval);
    }
    Ok(CreateSpec {
        name: heapless::String::try_from(name).map_err(|_| Errno::Einval)?,
        label: heapless::String::try_from(label).map_err(|_| Errno::Einval)?,
        vcpus,
        domid: (domid != 0).then_some(domid),
        device_model: (device_model != 0).then_some(device_model),
        vpl011: flags & CREATE_VPL011 != 0,
        restarts: flags & CREATE_RESTARTS != 0,
        pins,
    })
}

/// Whether domain index `by` may register as the IOREQ server of a domain
/// whose named device model is `named` (a domain index): only that one
/// (`-EPERM` for any other), or anyone the policy allows when it names
/// none.
pub fn may_serve(named: Option<usize>, by: usize) -> Result<(), Errno> {
    match named {
        Some(server) if server != by => Err(Errno::Eperm),
        _ => Ok(()),
    }
}

/// Whether a domain may run yet: one with a device model waits for it
/// (`IoreqCmd::Ready`), however early it is unpaused. Kept per domain
/// slot, from its creation to its reaping; the domain's slot state
/// (`SlotState`) is unaffected, so a held domain reads as running to its
/// builder, which has done its part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// No device model: it runs as soon as it is unpaused.
    Free,
    /// Its device model (a domain index) has not said `Ready` yet.
    /// `started`: it was unpaused meanwhile, so `Ready` starts it.
    Waiting { server: usize, started: bool },
    /// Its device model said `Ready`.
    Served { server: usize },
}

/// What the kernel does after a [`Hold`] event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldAction {
    /// Start the domain's vCPUs now.
    Start,
    /// Hold them: log once that the domain waits for its device model.
    Wait,
    /// Nothing changes.
    Nothing,
}

impl Hold {
    /// The hold of a new domain whose device model is `server` (a domain
    /// index), if any.
    pub const fn new(server: Option<usize>) -> Self {
        match server {
            Some(server) => Self::Waiting {
                server,
                started: false,
            },
            None => Self::Free,
        }
    }

    /// The domain's first start (its first `Unpause`, or the dom0less
    /// start).
    pub fn start(&mut self) -> HoldAction {
        match *self {
            Self::Free | Self::Served { .. } => HoldAction::Start,
            Self::Waiting {
                server,
                started: false,
            } => {
                *self = Self::Waiting {
                    server,
                    started: true,
                };
                HoldAction::Wait
            }
            Self::Waiting { started: true, .. } => HoldAction::Nothing,
        }
    }

    /// `Ready` from domain index `by` (already checked to be the
    /// registered server): the domain starts if it was unpaused while it
    /// waited. Again from its server, nothing; from anyone else, `-EPERM`.
    pub fn ready(&mut self, by: usize) -> Result<HoldAction, Errno> {
        match *self {
            Self::Free => Ok(HoldAction::Nothing),
            Self::Waiting { server, started } if server == by => {
                *self = Self::Served { server };
                Ok(if started {
                    HoldAction::Start
                } else {
                    HoldAction::Nothing
                })
            }
            Self::Served { server } if server == by => Ok(HoldAction::Nothing),
            Self::Waiting { .. } | Self::Served { .. } => Err(Errno::Eperm),
        }
    }

    /// The hold of a domain reset in place (`ResetDomain`), which has not
    /// been unpaused since: a device model that said `Ready` and still
    /// has it registered (`still_registered`) keeps serving it, so it
    /// starts at its next `Unpause`; otherwise (its device model was
    /// destroyed meanwhile, or never said `Ready`) it waits for `Ready`
    /// again, as a new domain does.
    pub fn after_reset(self, still_registered: bool) -> Self {
        match self {
            Self::Free => Self::Free,
            Self::Served { server } if still_registered => Self::Served { server },
            Self::Served { server } | Self::Waiting { server, .. } => Self::Waiting {
                server,
                started: false,
            },
        }
    }

    /// Whether an unpause left the domain waiting for its device model.
    pub fn is_holding(&self) -> bool {
        matches!(self, Self::Waiting { started: true, .. })
    }

    /// The device model it waits for, while it waits.
    pub fn waits_for(&self) -> Option<usize> {
        match *self {
            Self::Waiting { server, .. } => Some(server),
            _ => None,
        }
    }
}

/// Whether `ResetDomain` may take a domain back to *created*: it is
/// stopped (`-EINVAL` otherwise: it runs, is paused or is still being
/// built), because it asked to reboot (`exit_reason` Reboot; a crashed or
/// powered-off domain is destroyed, not reset: `-EINVAL`), and it was made
/// by a builder (`-EPERM` for one the kernel built itself from the
/// system description, which it reboots itself). A slot that holds no
/// domain is `-ESRCH`. A stop still under way on another pCPU (its vCPUs
/// not all stopped yet: `vcpus_stopped` false) is `-EBUSY`, to be tried
/// again: the reset must come after everything the stop does.
pub fn check_reset(
    state: SlotState,
    exit: ExitReason,
    builder_made: bool,
    vcpus_stopped: bool,
) -> Result<(), Errno> {
    next(state, Event::Reset)?;
    if exit != ExitReason::Reboot {
        return Err(Errno::Einval);
    }
    if !builder_made {
        return Err(Errno::Eperm);
    }
    if !vcpus_stopped {
        return Err(Errno::Ebusy);
    }
    Ok(())
}

/// What a `ModuleInfo` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleQuery<'a> {
    Index(usize),
    Name(&'a str),
}

/// Check a `ModuleInfo` copied in from the caller.
pub fn parse_module_query(raw: &ModuleInfo) -> Result<ModuleQuery<'_>, Errno> {
    let name = padded_text(&raw.name)?;
    Ok(if name.is_empty() {
        ModuleQuery::Index(raw.index.get() as usize)
    } else {
        ModuleQuery::Name(name)
    })
}

/// Where `[ipa, ipa + len)` starts in a domain's RAM of `ram_size` bytes at
/// `RAM_BASE`: an offset, if the whole range lies inside it.
pub fn ram_offset(ram_size: u64, ipa: u64, len: u64) -> Result<u64, Errno> {
    let off = ipa.checked_sub(RAM_BASE).ok_or(Errno::Einval)?;
    let end = off.checked_add(len).ok_or(Errno::Einval)?;
    if ram_size == 0 || end > ram_size || off >= ram_size {
        return Err(Errno::Einval);
    }
    Ok(off)
}

/// A checked `ShareMemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareSpec {
    pub owner: u16,
    pub user: u16,
    pub owner_ipa: u64,
    pub user_ipa: u64,
    pub size: u64,
}

/// Check a `ShareMemory` copied in from the caller: two different domains,
/// page-aligned, and the user's range inside the shared-memory window.
/// Whether the owner's range is its RAM is checked against the domain.
pub fn parse_share(raw: &ShareMemory) -> Result<ShareSpec, Errno> {
    let spec = ShareSpec {
        owner: raw.owner.get(),
        user: raw.user.get(),
        owner_ipa: raw.owner_ipa.get(),
        user_ipa: raw.user_ipa.get(),
        size: raw.size.get(),
    };
    let aligned = [spec.owner_ipa, spec.user_ipa, spec.size]
        .iter()
        .all(|v| v.is_multiple_of(PAGE_SIZE));
    let in_window = spec.user_ipa >= SHARE_WINDOW_BASE
        && spec
            .user_ipa
            .checked_add(spec.size)
            .is_some_and(|end| end <= SHARE_WINDOW_BASE + SHARE_WINDOW_SIZE);
    if spec.owner == spec.user || spec.size == 0 || !aligned || !in_window || raw._pad.get() != 0 {
        return Err(Errno::Einval);
    }
    Ok(spec)
}

/// The life of a domain slot. The numbers are what the slot's atomic holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Unused.
    Free = 0,
    /// Reserved by a creator that is writing the domain's fields; no lookup
    /// returns it.
    Creating = 1,
    /// Built far enough to be named; not run since it was created or reset.
    Created = 2,
    Running = 3,
    /// Paused after it ran.
    Paused = 4,
    /// Shut down, crashed or faulted; its vCPUs are stopped.
    Stopped = 5,
    /// Destroyed; freed once no pCPU can still be using it.
    Dying = 6,
}

impl SlotState {
    /// Every state, by number.
    pub const ALL: [SlotState; 7] = [
        Self::Free,
        Self::Creating,
        Self::Created,
        Self::Running,
        Self::Paused,
        Self::Stopped,
        Self::Dying,
    ];

    /// The state an atomic holds (an unknown number reads as `Free`,
    /// which no lookup returns).
    pub fn from_raw(raw: u8) -> Self {
        Self::ALL
            .get(usize::from(raw))
            .copied()
            .unwrap_or(Self::Free)
    }

    /// Whether other domains may find it by id: its fields are final.
    pub fn is_published(self) -> bool {
        matches!(
            self,
            Self::Created | Self::Running | Self::Paused | Self::Stopped
        )
    }

    /// What `GetDomainInfo` reports, for a slot a caller may name.
    pub fn abi(self) -> Option<DomainState> {
        match self {
            Self::Free | Self::Creating => None,
            Self::Created => Some(DomainState::Created),
            Self::Running => Some(DomainState::Running),
            Self::Paused => Some(DomainState::Paused),
            Self::Stopped => Some(DomainState::Stopped),
            Self::Dying => Some(DomainState::Dying),
        }
    }
}

/// What happens to a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A creator takes a free slot.
    Reserve,
    /// The creator has written every field.
    Publish,
    /// Creation failed: the slot is free again.
    Abandon,
    /// `Unpause`: the first start, or running again after `Pause`.
    Unpause,
    Pause,
    /// The domain shuts down, crashes, faults or is being destroyed.
    Stop,
    /// The kernel restarts a stopped domain it built itself (reboot).
    Restart,
    /// `ResetDomain`: a stopped domain goes back to built-but-not-run, in
    /// place, for its builder to load and start again.
    Reset,
    Destroy,
    /// Every pCPU has passed a scheduling point since `Destroy`.
    Reap,
}

/// The state `event` leads to from `from`, or why it may not happen:
/// `-ESRCH` for a slot that holds no domain (or one being destroyed),
/// `-EBUSY` for a taken slot, `-EINVAL` for the wrong state.
pub fn next(from: SlotState, event: Event) -> Result<SlotState, Errno> {
    use SlotState::*;
    match (event, from) {
        (Event::Reserve, Free) => Ok(Creating),
        (Event::Reserve, _) => Err(Errno::Ebusy),
        (Event::Publish, Creating) => Ok(Created),
        (Event::Abandon, Creating) => Ok(Free),
        (Event::Publish | Event::Abandon, _) => Err(Errno::Einval),
        (Event::Destroy, Created | Running | Paused | Stopped | Dying) => Ok(Dying),
        (Event::Reap, Dying) => Ok(Free),
        (Event::Reap, _) => Err(Errno::Einval),
        (_, Free | Creating | Dying) => Err(Errno::Esrch),
        (Event::Unpause, Created | Paused) => Ok(Running),
        (Event::Pause, Running) => Ok(Paused),
        (Event::Stop, Running | Paused) => Ok(Stopped),
        (Event::Restart, Stopped) => Ok(Running),
        (Event::Reset, Stopped) => Ok(Created),
        (Event::Unpause | Event::Pause | Event::Stop | Event::Restart | Event::Reset, _) => {
            Err(Errno::Einval)
        }
    }
}

/// Which of the kernel's vCPUs (64 at most) are taken, one bit each. A
/// domain's vCPUs are one contiguous run, so `first + index` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMap(u64);

impl VcpuMap {
    /// How many vCPUs the map can hand out.
    pub const CAPACITY: usize = 64;

    /// No vCPU taken.
    pub const fn new() -> Self {
        Self(0)
    }

    fn run_mask(first: usize, n: usize) -> Option<u64> {
        if n == 0 || first.checked_add(n)? > Self::CAPACITY {
            return None;
        }
        let ones = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        Some(ones << first)
    }

    /// Take the lowest free run of `n` vCPUs; its first index.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        (0..Self::CAPACITY).find_map(|first| {
            let mask = Self::run_mask(first, n)?;
            (self.0 & mask == 0).then(|| {
                self.0 |= mask;
                first
            })
        })
    }

    /// Give back the run `first..first + n`; `false` (and no change) unless
    /// all of it was taken.
    pub fn free(&mut self, first: usize, n: usize) -> bool {
        match Self::run_mask(first, n) {
            Some(mask) if self.0 & mask == mask => {
                self.0 &= !mask;
                true
            }
            _ => false,
        }
    }

    /// Whether vCPU `v` is taken.
    pub fn is_taken(&self, v: usize) -> bool {
        v < Self::CAPACITY && self.0 & (1 << v) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ipc::control::{DomainInfo, MODULE_NAME_LEN};
    use zerocopy::FromZeros;

    fn call(a: [u64; 6]) -> Result<ControlCall, Errno> {
        decode(&a)
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn unknown_sub_commands_are_enosys() {
        assert_eq!(call([13, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(call([u64::MAX, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
    }

    #[test]
    fn domain_ids_are_16_bits() {
        for cmd in [1, 2, 3, 5, 6, 7, 8, 9, 12] {
            assert_eq!(
                call([cmd, 0x1_0000, 4 * MIB, MEMORY_ANYWHERE, 1, 0]),
                Err(Errno::Einval),
                "sub-command {cmd}"
            );
        }
        assert_eq!(
            call([6, 3, 0, 0, 0, 0]),
            Ok(ControlCall::Unpause { dom: 3 })
        );
        assert_eq!(call([7, 3, 0, 0, 0, 0]), Ok(ControlCall::Pause { dom: 3 }));
        assert_eq!(
            call([8, 3, 0, 0, 0, 0]),
            Ok(ControlCall::Destroy { dom: 3 })
        );
    }

    #[test]
    fn reset_names_one_domain_and_ignores_the_rest() {
        assert_eq!(
            call([12, 3, 0, 0, 0, 0]),
            Ok(ControlCall::ResetDomain { dom: 3 })
        );
        assert_eq!(
            call([12, 16, u64::MAX, 7, 7, 7]),
            Ok(ControlCall::ResetDomain { dom: 16 }),
            "x2..x5 are not read"
        );
        assert_eq!(
            call([12, u64::MAX, 0, 0, 0, 0]),
            Err(Errno::Einval),
            "an id beyond 16 bits"
        );
        // Id 0 and ids past the slots decode: the lookup says -ESRCH.
        assert_eq!(
            call([12, 0, 0, 0, 0, 0]),
            Ok(ControlCall::ResetDomain { dom: 0 })
        );
    }

    #[test]
    fn memory_is_whole_blocks_in_range() {
        assert_eq!(
            call([1, 2, 16 * MIB, MEMORY_ANYWHERE, 0, 0]),
            Ok(ControlCall::AssignMemory {
                dom: 2,
                size: 16 * MIB,
                host: None
            })
        );
        assert_eq!(
            call([1, 2, 4 * MIB, 0x8000_0000, 0, 0]),
            Ok(ControlCall::AssignMemory {
                dom: 2,
                size: 4 * MIB,
                host: Some(0x8000_0000)
            })
        );
        assert_eq!(
            call([1, 2, 0, MEMORY_ANYWHERE, 0, 0]),
            Err(Errno::Einval),
            "empty"
        );
        assert_eq!(
            call([1, 2, 3 * MIB, MEMORY_ANYWHERE, 0, 0]),
            Err(Errno::Einval),
            "not whole 2 MiB blocks"
        );
        assert_eq!(
            call([1, 2, MAX_RAM + MEMORY_ALIGN, MEMORY_ANYWHERE, 0, 0]),
            Err(Errno::Einval),
            "beyond the IPA space"
        );
        assert_eq!(
            call([1, 2, 4 * MIB, 0x8010_0000, 0, 0]),
            Err(Errno::Einval),
            "host base not 2 MiB aligned"
        );
        assert_eq!(
            call([1, 2, 4 * MIB, u64::MAX - MEMORY_ALIGN * 2 + 1, 0, 0]),
            Err(Errno::Einval),
            "host range wraps"
        );
    }

    #[test]
    fn copies_are_bounded() {
        assert_eq!(
            call([3, 2, 1, 0x4000_0000, 0, 0]),
            Ok(ControlCall::CopyModule {
                dom: 2,
                module: 1,
                ipa: 0x4000_0000
            })
        );
        assert_eq!(
            call([3, 2, 1 << 32, 0x4000_0000, 0, 0]),
            Err(Errno::Einval),
            "module index beyond 32 bits"
        );
        assert_eq!(
            call([4, 2, 0x4010_0000, 0x4000_0000, 100, 0]),
            Ok(ControlCall::CopyToDomain {
                dom: 2,
                src: GuestVa(0x4010_0000),
                ipa: 0x4000_0000,
                len: 100
            })
        );
        assert_eq!(
            call([4, 2, 0x4010_0000, 0x4000_0000, 0, 0]),
            Err(Errno::Einval)
        );
        assert_eq!(
            call([4, 2, 0x4010_0000, 0x4000_0000, COPY_MAX + 1, 0]),
            Err(Errno::Einval)
        );
        assert_eq!(
            call([4, 2, u64::MAX - 10, 0x4000_0000, 100, 0]),
            Err(Errno::Einval),
            "source wraps"
        );
    }

    #[test]
    fn vcpu_contexts_are_checked() {
        assert_eq!(
            call([5, 2, 0, 0x4000_0000, 0x40e0_0000, 0]),
            Ok(ControlCall::SetVcpuContext {
                dom: 2,
                vcpu: 0,
                pc: 0x4000_0000,
                x0: 0x40e0_0000
            })
        );
        assert_eq!(
            call([5, 2, MAX_VCPUS_PER_DOMAIN as u64, 0x4000_0000, 0, 0]),
            Err(Errno::Einval)
        );
        assert_eq!(
            call([5, 2, 0, 0x4000_0002, 0, 0]),
            Err(Errno::Einval),
            "PC misaligned"
        );
    }

    #[test]
    fn channels_join_two_domains() {
        assert_eq!(
            call([10, 2, 5, 3, 7, 0]),
            Ok(ControlCall::BindEvtchn {
                a: 2,
                port_a: 5,
                b: 3,
                port_b: 7
            })
        );
        assert_eq!(call([10, 2, 5, 2, 7, 0]), Err(Errno::Einval), "one domain");
        assert_eq!(call([10, 2, 1 << 32, 3, 7, 0]), Err(Errno::Einval));
        assert_eq!(call([10, 2, 5, 3, 1 << 32, 0]), Err(Errno::Einval));
        assert_eq!(call([10, 2, 5, 1 << 16, 7, 0]), Err(Errno::Einval));
    }

    #[test]
    fn pointer_calls_keep_their_pointer() {
        assert_eq!(
            call([0, 0x4000_1000, 0, 0, 0, 0]),
            Ok(ControlCall::Create {
                arg: GuestVa(0x4000_1000)
            })
        );
        assert_eq!(
            call([9, 2, 0x4000_2000, 0, 0, 0]),
            Ok(ControlCall::GetInfo {
                dom: 2,
                arg: GuestVa(0x4000_2000)
            })
        );
        assert_eq!(
            call([2, 2, 0x4000_3000, 0, 0, 0]),
            Ok(ControlCall::ModuleInfo {
                dom: 2,
                arg: GuestVa(0x4000_3000)
            })
        );
        assert_eq!(
            call([11, 0x4000_4000, 0, 0, 0, 0]),
            Ok(ControlCall::ShareMemory {
                arg: GuestVa(0x4000_4000)
            })
        );
    }

    fn create(vcpus: u32, name: &[u8], label: &[u8]) -> CreateDomain {
        let mut raw = CreateDomain::new_zeroed();
        raw.vcpus = vcpus.into();
        raw.name[..name.len()].copy_from_slice(name);
        raw.label[..label.len()].copy_from_slice(label);
        raw
    }

    const LABEL: &[u8] = b"system_u:system_r:domU_t";

    #[test]
    fn create_takes_a_name_a_label_and_vcpus() {
        let spec = parse_create(&create(2, b"child", LABEL)).unwrap();
        assert_eq!(spec.name.as_str(), "child");
        assert_eq!(spec.label.as_bytes(), LABEL);
        assert_eq!(spec.vcpus, 2);
        // A name filling its whole field has no NUL.
        let long = [b'a'; NAME_LEN];
        assert_eq!(
            parse_create(&create(1, &long, LABEL)).unwrap().name.len(),
            NAME_LEN
        );
    }

    #[test]
    fn create_refuses_bad_fields() {
        assert_eq!(parse_create(&create(0, b"c", LABEL)), Err(Errno::Einval));
        assert_eq!(
            parse_create(&create(MAX_VCPUS_PER_DOMAIN as u32 + 1, b"c", LABEL)),
            Err(Errno::Einval)
        );
        assert_eq!(
            parse_create(&create(1, b"", LABEL)),
            Err(Errno::Einval),
            "no name"
        );
        assert_eq!(
            parse_create(&create(1, b"c", b"")),
            Err(Errno::Einval),
            "no label"
        );
        assert_eq!(
            parse_create(&create(1, b"a b", LABEL)),
            Err(Errno::Einval),
            "space"
        );
        assert_eq!(
            parse_create(&create(1, b"a\n", LABEL)),
            Err(Errno::Einval),
            "control"
        );
        assert_eq!(
            parse_create(&create(1, b"\xc3\xa9", LABEL)),
            Err(Errno::Einval)
        );
        assert_eq!(
            parse_create(&create(1, b"a\0b", LABEL)),
            Err(Errno::Einval),
            "bytes after the NUL"
        );
        let mut flagged = create(1, b"c", LABEL);
        flagged.flags = 1.into();
        assert_eq!(parse_create(&flagged), Err(Errno::Einval));
    }

    #[test]
    fn a_create_may_ask_for_an_id() {
        let mut raw = create(1, b"c", LABEL);
        assert_eq!(parse_create(&raw).map(|s| s.domid), Ok(None), "0: any");
        raw.domid = MAX_DOMID.into();
        assert_eq!(parse_create(&raw).map(|s| s.domid), Ok(Some(MAX_DOMID)));
        raw.domid = (MAX_DOMID + 1).into();
        assert_eq!(parse_create(&raw), Err(Errno::Einval), "past the slots");
    }

    #[test]
    fn a_create_may_name_its_device_model_and_uart() {
        let mut raw = create(1, b"guest", LABEL);
        let spec = parse_create(&raw).unwrap();
        assert_eq!((spec.device_model, spec.vpl011), (None, false));
        raw.device_model = 1.into();
        raw.flags = CREATE_VPL011.into();
        let spec = parse_create(&raw).unwrap();
        assert_eq!((spec.device_model, spec.vpl011), (Some(1), true));
        raw.device_model = MAX_DOMID.into();
        assert!(parse_create(&raw).is_ok());
    }

    #[test]
    fn a_create_may_say_its_builder_restarts_it() {
        let mut raw = create(1, b"dm", LABEL);
        assert!(!parse_create(&raw).unwrap().restarts);
        raw.flags = CREATE_RESTARTS.into();
        assert!(parse_create(&raw).unwrap().restarts);
        raw.flags = (CREATE_RESTARTS | CREATE_VPL011).into();
        assert_eq!(
            parse_create(&raw),
            Err(Errno::Einval),
            "a UART still needs a device model"
        );
    }

    #[test]
    fn a_bad_device_model_or_flag_is_refused() {
        let mut raw = create(1, b"guest", LABEL);
        raw.flags = CREATE_VPL011.into();
        assert_eq!(
            parse_create(&raw),
            Err(Errno::Einval),
            "a UART with no device model to emulate it"
        );
        raw.flags = 4.into();
        raw.device_model = 1.into();
        assert_eq!(parse_create(&raw), Err(Errno::Einval), "an unknown flag");
        raw.flags = 0.into();
        raw.device_model = (MAX_DOMID + 1).into();
        assert_eq!(parse_create(&raw), Err(Errno::Einval), "past the slots");
        raw.device_model = 4.into();
        raw.domid = 4.into();
        assert_eq!(
            parse_create(&raw),
            Err(Errno::Einval),
            "its own device model"
        );
    }

    fn pinned(vcpus: u32, pins: &[u8]) -> CreateDomain {
        let mut raw = create(vcpus, b"safety", LABEL);
        raw.nr_pcpus = (pins.len() as u16).into();
        raw.pcpus[..pins.len()].copy_from_slice(pins);
        raw
    }

    #[test]
    fn a_create_may_carry_pins() {
        let spec = parse_create(&pinned(2, &[3, 1])).unwrap();
        assert_eq!(spec.pins.as_slice(), &[3, 1]);
        let spec = parse_create(&pinned(4, &[63])).unwrap();
        assert_eq!(spec.pins.as_slice(), &[63], "fewer pins than vCPUs");
        assert!(parse_create(&pinned(1, &[])).unwrap().pins.is_empty());
    }

    #[test]
    fn bad_pins_are_refused() {
        let cases: [(&str, CreateDomain); 5] = [
            ("more pins than vCPUs", pinned(1, &[0, 1])),
            ("a pCPU listed twice", pinned(2, &[1, 1])),
            ("a pCPU number of 64", pinned(1, &[64])),
            ("a pin past the count", {
                let mut raw = pinned(2, &[0]);
                raw.pcpus[1] = 1;
                raw
            }),
            ("padding", {
                let mut raw = pinned(1, &[0]);
                raw._pad = 1.into();
                raw
            }),
        ];
        for (what, raw) in cases {
            assert_eq!(parse_create(&raw), Err(Errno::Einval), "{what}");
        }
        let mut all = pinned(MAX_VCPUS_PER_DOMAIN as u32, &[]);
        all.nr_pcpus = (MAX_PINS as u16 + 1).into();
        assert_eq!(parse_create(&all), Err(Errno::Einval), "past the array");
    }

    #[test]
    fn only_the_named_device_model_may_serve() {
        assert_eq!(may_serve(None, 3), Ok(()), "none named: the policy decides");
        assert_eq!(may_serve(Some(3), 3), Ok(()));
        assert_eq!(may_serve(Some(0), 3), Err(Errno::Eperm));
    }

    #[test]
    fn a_served_domain_waits_for_ready_before_it_starts() {
        let mut h = Hold::new(Some(0));
        assert_eq!(h.waits_for(), Some(0));
        assert!(!h.is_holding(), "not unpaused yet");
        assert_eq!(h.start(), HoldAction::Wait, "unpaused first: held");
        assert!(h.is_holding());
        assert_eq!(h.start(), HoldAction::Nothing, "the wait is logged once");
        assert_eq!(h.ready(0), Ok(HoldAction::Start), "ready starts it");
        assert_eq!(h, Hold::Served { server: 0 });
        assert!(!h.is_holding());
        assert_eq!(h.waits_for(), None);
        assert_eq!(h.ready(0), Ok(HoldAction::Nothing), "again: nothing");
        assert_eq!(h.start(), HoldAction::Start, "a served domain runs");
    }

    #[test]
    fn ready_before_the_unpause_lets_it_run_at_once() {
        let mut h = Hold::new(Some(2));
        assert_eq!(h.ready(2), Ok(HoldAction::Nothing), "not unpaused yet");
        assert_eq!(h.start(), HoldAction::Start);
    }

    #[test]
    fn a_domain_with_no_device_model_is_never_held() {
        let mut h = Hold::new(None);
        assert_eq!(h.start(), HoldAction::Start);
        assert_eq!(h.ready(4), Ok(HoldAction::Nothing));
        assert_eq!(h, Hold::Free);
    }

    #[test]
    fn ready_from_another_domain_is_refused_and_changes_nothing() {
        let mut h = Hold::new(Some(1));
        assert_eq!(h.start(), HoldAction::Wait);
        assert_eq!(h.ready(5), Err(Errno::Eperm));
        assert!(h.is_holding(), "still held");
        assert_eq!(h.ready(1), Ok(HoldAction::Start));
        assert_eq!(h.ready(5), Err(Errno::Eperm), "served: still only its own");
    }

    #[test]
    fn a_reset_keeps_a_ready_device_model_that_still_serves() {
        let mut h = Hold::new(Some(1));
        assert_eq!(h.start(), HoldAction::Wait);
        assert_eq!(h.ready(1), Ok(HoldAction::Start));
        let mut again = h.after_reset(true);
        assert_eq!(again, Hold::Served { server: 1 });
        assert_eq!(again.start(), HoldAction::Start, "no wait after a reset");
        assert_eq!(again.ready(4), Err(Errno::Eperm), "still only its own");
    }

    #[test]
    fn a_reset_waits_again_for_a_device_model_that_is_gone_or_not_ready() {
        let served = {
            let mut h = Hold::new(Some(1));
            let _ = h.ready(1);
            h
        };
        // Its device model was destroyed while it was stopped.
        let mut h = served.after_reset(false);
        assert_eq!(
            h,
            Hold::Waiting {
                server: 1,
                started: false
            }
        );
        assert_eq!(h.start(), HoldAction::Wait, "held, and logged once");
        assert_eq!(h.ready(1), Ok(HoldAction::Start));
        // Never ready: the old unpause does not count for the new boot.
        let mut never = Hold::new(Some(2));
        assert_eq!(never.start(), HoldAction::Wait);
        for registered in [true, false] {
            let mut h = never.after_reset(registered);
            assert!(!h.is_holding(), "not unpaused since the reset");
            assert_eq!(h.start(), HoldAction::Wait);
        }
        assert_eq!(Hold::Free.after_reset(false), Hold::Free);
        assert_eq!(Hold::Free.after_reset(true), Hold::Free);
    }

    #[test]
    fn only_a_builder_made_domain_that_asked_to_reboot_is_reset() {
        use SlotState::*;
        assert_eq!(check_reset(Stopped, ExitReason::Reboot, true, true), Ok(()));
        assert_eq!(
            check_reset(Stopped, ExitReason::Reboot, true, false),
            Err(Errno::Ebusy),
            "its stop is still under way"
        );
        for exit in [
            ExitReason::None,
            ExitReason::Poweroff,
            ExitReason::Crash,
            ExitReason::Fault,
            ExitReason::Destroyed,
        ] {
            assert_eq!(
                check_reset(Stopped, exit, true, true),
                Err(Errno::Einval),
                "{exit:?}"
            );
        }
        assert_eq!(
            check_reset(Stopped, ExitReason::Reboot, false, true),
            Err(Errno::Eperm),
            "the kernel reboots its own domains"
        );
        for state in [Created, Running, Paused] {
            assert_eq!(
                check_reset(state, ExitReason::Reboot, true, true),
                Err(Errno::Einval),
                "{state:?}"
            );
        }
        for state in [Free, Creating, Dying] {
            assert_eq!(
                check_reset(state, ExitReason::Reboot, true, true),
                Err(Errno::Esrch),
                "{state:?}"
            );
        }
    }

    #[test]
    fn module_queries_are_by_index_or_name() {
        let mut raw = ModuleInfo::new_zeroed();
        raw.index = 3.into();
        assert_eq!(parse_module_query(&raw), Ok(ModuleQuery::Index(3)));
        raw.name[..9].copy_from_slice(b"testguest");
        assert_eq!(parse_module_query(&raw), Ok(ModuleQuery::Name("testguest")));
        raw.name[MODULE_NAME_LEN - 1] = b'x';
        assert_eq!(parse_module_query(&raw), Err(Errno::Einval));
    }

    #[test]
    fn ranges_must_lie_in_ram() {
        let ram = 16 * MIB;
        assert_eq!(ram_offset(ram, RAM_BASE, ram), Ok(0));
        assert_eq!(ram_offset(ram, RAM_BASE + MIB, 4096), Ok(MIB));
        assert_eq!(ram_offset(ram, RAM_BASE + ram - 1, 1), Ok(ram - 1));
        assert_eq!(ram_offset(ram, RAM_BASE + ram - 1, 2), Err(Errno::Einval));
        assert_eq!(ram_offset(ram, RAM_BASE + ram, 0), Err(Errno::Einval));
        assert_eq!(ram_offset(ram, RAM_BASE - 1, 1), Err(Errno::Einval));
        assert_eq!(ram_offset(ram, u64::MAX, 2), Err(Errno::Einval));
        assert_eq!(ram_offset(0, RAM_BASE, 1), Err(Errno::Einval), "no RAM yet");
    }

    fn share(owner: u16, user: u16, owner_ipa: u64, user_ipa: u64, size: u64) -> ShareMemory {
        let mut raw = ShareMemory::new_zeroed();
        raw.owner = owner.into();
        raw.user = user.into();
        raw.owner_ipa = owner_ipa.into();
        raw.user_ipa = user_ipa.into();
        raw.size = size.into();
        raw
    }

    #[test]
    fn shares_are_checked() {
        let ok = share(2, 3, RAM_BASE + MIB, 0x2000_0000, 0x2000);
        assert_eq!(
            parse_share(&ok),
            Ok(ShareSpec {
                owner: 2,
                user: 3,
                owner_ipa: RAM_BASE + MIB,
                user_ipa: 0x2000_0000,
                size: 0x2000
            })
        );
        let bad = [
            share(2, 2, RAM_BASE, 0x2000_0000, 0x1000),
            share(2, 3, RAM_BASE, 0x2000_0000, 0),
            share(2, 3, RAM_BASE + 8, 0x2000_0000, 0x1000),
            share(2, 3, RAM_BASE, 0x2000_0008, 0x1000),
            share(2, 3, RAM_BASE, 0x2000_0000, 0x1008),
            share(2, 3, RAM_BASE, SHARE_WINDOW_BASE - 0x1000, 0x2000),
            share(
                2,
                3,
                RAM_BASE,
                SHARE_WINDOW_BASE + SHARE_WINDOW_SIZE - 0x1000,
                0x2000,
            ),
            share(2, 3, RAM_BASE, u64::MAX - 0xfff, 0x2000),
        ];
        for (n, raw) in bad.iter().enumerate() {
            assert_eq!(parse_share(raw), Err(Errno::Einval), "case {n}");
        }
        let mut padded = ok;
        padded._pad = 1.into();
        assert_eq!(parse_share(&padded), Err(Errno::Einval));
    }

    #[test]
    fn a_slot_lives_create_run_stop_destroy_reap() {
        use Event::*;
        use SlotState::*;
        let mut s = Free;
        for (event, to) in [
            (Reserve, Creating),
            (Publish, Created),
            (Unpause, Running),
            (Pause, Paused),
            (Unpause, Running),
            (Stop, Stopped),
            (Restart, Running),
            (Stop, Stopped),
            (Reset, Created),
            (Unpause, Running),
            (Stop, Stopped),
            (Destroy, Dying),
            (Destroy, Dying),
            (Reap, Free),
        ] {
            s = next(s, event).unwrap();
            assert_eq!(s, to, "{event:?}");
        }
        assert_eq!(next(Creating, Abandon), Ok(Free));
        assert_eq!(next(Created, Destroy), Ok(Dying));
        assert_eq!(next(Paused, Stop), Ok(Stopped));
        assert_eq!(next(Running, Destroy), Ok(Dying));
    }

    #[test]
    fn every_other_transition_is_refused() {
        use Event::*;
        use SlotState::*;
        let allowed = [
            (Reserve, Free),
            (Publish, Creating),
            (Abandon, Creating),
            (Unpause, Created),
            (Unpause, Paused),
            (Pause, Running),
            (Stop, Running),
            (Stop, Paused),
            (Restart, Stopped),
            (Reset, Stopped),
            (Destroy, Created),
            (Destroy, Running),
            (Destroy, Paused),
            (Destroy, Stopped),
            (Destroy, Dying),
            (Reap, Dying),
        ];
        for event in [
            Reserve, Publish, Abandon, Unpause, Pause, Stop, Restart, Reset, Destroy, Reap,
        ] {
            for from in SlotState::ALL {
                let r = next(from, event);
                if allowed.contains(&(event, from)) {
                    assert!(r.is_ok(), "{event:?} from {from:?}");
                    continue;
                }
                let want = match (event, from) {
                    (Reserve, _) => Errno::Ebusy,
                    (Publish | Abandon | Reap, _) => Errno::Einval,
                    (_, Free | Creating | Dying) => Errno::Esrch,
                    _ => Errno::Einval,
                };
                assert_eq!(r, Err(want), "{event:?} from {from:?}");
            }
        }
    }

    #[test]
    fn states_round_trip_and_only_built_slots_are_named() {
        for s in SlotState::ALL {
            assert_eq!(SlotState::from_raw(s as u8), s);
        }
        assert_eq!(SlotState::from_raw(99), SlotState::Free);
        let named: Vec<_> = SlotState::ALL.iter().filter(|s| s.is_published()).collect();
        assert_eq!(
            named,
            [
                &SlotState::Created,
                &SlotState::Running,
                &SlotState::Paused,
                &SlotState::Stopped
            ]
        );
        assert_eq!(SlotState::Creating.abi(), None);
        assert_eq!(SlotState::Dying.abi(), Some(DomainState::Dying));
        // The ABI state fits the info structure's byte.
        let mut info = DomainInfo::new_zeroed();
        info.state = DomainState::Stopped as u8;
        assert_eq!(
            DomainState::try_from(u64::from(info.state)),
            Ok(DomainState::Stopped)
        );
    }

    #[test]
    fn vcpu_runs_are_contiguous_and_reusable() {
        let mut m = VcpuMap::new();
        assert_eq!(m.alloc(2), Some(0));
        assert_eq!(m.alloc(1), Some(2));
        assert_eq!(m.alloc(3), Some(3));
        assert!(m.free(0, 2));
        assert_eq!(m.alloc(3), Some(6), "a hole of 2 does not fit 3");
        assert_eq!(m.alloc(2), Some(0), "the hole is reused");
        assert!(!m.free(8, 2), "only part of it is taken");
        assert!(m.is_taken(1));
        assert!(!m.free(9, 1));
        assert!(!m.free(63, 2), "past the end");
        assert_eq!(m.alloc(0), None);
        let mut full = VcpuMap::new();
        assert_eq!(full.alloc(64), Some(0));
        assert_eq!(full.alloc(1), None);
        assert!(full.free(0, 64));
        assert!(!full.is_taken(64));
    }
}
