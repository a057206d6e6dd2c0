//! The domain-control calls a builder domain makes (`tessera_ipc::control`):
//! create a domain, give it memory, load it, wire it, start and stop it.
//!
//! The one idea: each wrapper passes only what it owns (a structure on its
//! stack, a slice it borrows), so the builder's logic never handles raw
//! pointers; `raw` is there for negative tests.

use crate::hypercall::hypercall;
use crate::xen::{check, HypercallError};
use tessera_ipc::control::{
    ControlCmd, CreateDomain, DomainInfo, ModuleInfo, ShareMemory, LABEL_LEN, MEMORY_ANYWHERE,
    MODULE_NAME_LEN, NAME_LEN,
};
use tessera_ipc::hypercall::Op;
use zerocopy::FromZeros;

type Result<T> = core::result::Result<T, HypercallError>;

/// `Op::Control` with raw arguments, as x0 returned it.
///
/// # Safety
/// Every argument the sub-command reads as a pointer must be valid for what
/// it reads and writes, or lie outside memory this program uses.
pub unsafe fn raw(cmd: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64 {
    // SAFETY: per this function's contract.
    unsafe { hypercall(Op::Control as u64, cmd, a1, a2, a3, a4, 0) }
}

fn call(cmd: ControlCmd, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64> {
    // SAFETY: the wrappers below pass pointers only to live objects of the
    // size the sub-command reads or writes.
    check(unsafe { raw(cmd as u64, a1, a2, a3, a4) })
}

/// Copy `text` into a NUL-padded field; `false` if it does not fit.
fn fill(field: &mut [u8], text: &str) -> bool {
    let Some(dst) = field.get_mut(..text.len()) else {
        return false;
    };
    dst.copy_from_slice(text.as_bytes());
    true
}

/// The `CreateDomain` argument for `name`, `label` and `vcpus`.
pub fn create_request(name: &str, label: &str, vcpus: u32) -> CreateDomain {
    let mut req = CreateDomain::new_zeroed();
    req.vcpus = vcpus.into();
    // Too long a name or label is left empty, which the kernel refuses.
    let _ = fill(&mut req.name[..NAME_LEN], name) && fill(&mut req.label[..LABEL_LEN], label);
    req
}

/// Create a domain from `req`; its id.
pub fn create_with(req: &CreateDomain) -> Result<u16> {
    call(
        ControlCmd::CreateDomain,
        req as *const CreateDomain as u64,
        0,
        0,
        0,
    )
    .map(|id| id as u16)
}

/// Create a domain named `name` with security context `label` and `vcpus`
/// vCPUs; its id. It starts paused, with no memory.
pub fn create(name: &str, label: &str, vcpus: u32) -> Result<u16> {
    create_with(&create_request(name, label, vcpus))
}

/// As [`create`], with id `domid` (a system description's `domid`).
pub fn create_as(domid: u16, name: &str, label: &str, vcpus: u32) -> Result<u16> {
    let mut req = create_request(name, label, vcpus);
    req.domid = domid.into();
    create_with(&req)
}

/// Give domain `dom` `size` bytes of RAM, at host address `host` or (for
/// `None`) wherever the kernel finds free RAM.
pub fn assign_memory(dom: u16, size: u64, host: Option<u64>) -> Result<()> {
    let host = host.unwrap_or(MEMORY_ANYWHERE);
    call(ControlCmd::AssignMemory, dom.into(), size, host, 0).map(|_| ())
}

/// Look module `index` of the image up, for building domain `dom`.
pub fn module_info(dom: u16, index: u32) -> Result<ModuleInfo> {
    let mut info = ModuleInfo::new_zeroed();
    info.index = index.into();
    module_query(dom, &mut info)?;
    Ok(info)
}

/// Look the module named `name` up, for building domain `dom`.
pub fn module_by_name(dom: u16, name: &str) -> Result<ModuleInfo> {
    let mut info = ModuleInfo::new_zeroed();
    if !fill(&mut info.name[..MODULE_NAME_LEN], name) {
        return Err(tessera_ipc::errno::Errno::Einval.into());
    }
    module_query(dom, &mut info)?;
    Ok(info)
}

fn module_query(dom: u16, info: &mut ModuleInfo) -> Result<()> {
    call(
        ControlCmd::ModuleInfo,
        dom.into(),
        info as *mut ModuleInfo as u64,
        0,
        0,
    )
    .map(|_| ())
}

/// Copy module `index` to `ipa` in domain `dom`; the bytes copied.
pub fn copy_module(dom: u16, index: u32, ipa: u64) -> Result<u64> {
    call(ControlCmd::CopyModule, dom.into(), index.into(), ipa, 0)
}

/// Copy `bytes` to `ipa` in domain `dom`.
pub fn copy_to_domain(dom: u16, bytes: &[u8], ipa: u64) -> Result<()> {
    call(
        ControlCmd::CopyToDomain,
        dom.into(),
        bytes.as_ptr() as u64,
        ipa,
        bytes.len() as u64,
    )
    .map(|_| ())
}

/// vCPU `vcpu` of domain `dom` enters at `pc` with x0 = `x0`.
pub fn set_vcpu_context(dom: u16, vcpu: u32, pc: u64, x0: u64) -> Result<()> {
    call(ControlCmd::SetVcpuContext, dom.into(), vcpu.into(), pc, x0).map(|_| ())
}

/// Start domain `dom`, or let it run again.
pub fn unpause(dom: u16) -> Result<()> {
    call(ControlCmd::Unpause, dom.into(), 0, 0, 0).map(|_| ())
}

/// Stop scheduling domain `dom`.
pub fn pause(dom: u16) -> Result<()> {
    call(ControlCmd::Pause, dom.into(), 0, 0, 0).map(|_| ())
}

/// Destroy domain `dom`.
pub fn destroy(dom: u16) -> Result<()> {
    call(ControlCmd::Destroy, dom.into(), 0, 0, 0).map(|_| ())
}

/// Take domain `dom`, stopped because it asked to reboot, back to built
/// and not yet run, in place (`ResetDomain`): load it and unpause it again.
pub fn reset_domain(dom: u16) -> Result<()> {
    call(ControlCmd::ResetDomain, dom.into(), 0, 0, 0).map(|_| ())
}

/// Domain `dom`'s state.
pub fn domain_info(dom: u16) -> Result<DomainInfo> {
    let mut info = DomainInfo::new_zeroed();
    call(
        ControlCmd::GetDomainInfo,
        dom.into(),
        &mut info as *mut DomainInfo as u64,
        0,
        0,
    )?;
    Ok(info)
}

/// Bind port `port_a` of domain `a` to port `port_b` of domain `b`.
pub fn bind_evtchn(a: u16, port_a: u32, b: u16, port_b: u32) -> Result<()> {
    call(
        ControlCmd::BindEvtchn,
        a.into(),
        port_a.into(),
        b.into(),
        port_b.into(),
    )
    .map(|_| ())
}

/// Map `size` bytes of `owner`'s RAM at `owner_ipa` into `user` at
/// `user_ipa` (see `ShareMemory`).
pub fn share(owner: u16, user: u16, owner_ipa: u64, user_ipa: u64, size: u64) -> Result<()> {
    let mut req = ShareMemory::new_zeroed();
    req.owner = owner.into();
    req.user = user.into();
    req.owner_ipa = owner_ipa.into();
    req.user_ipa = user_ipa.into();
    req.size = size.into();
    share_memory(&req)
}

/// Map part of one domain's RAM into another, as `req` says.
pub fn share_memory(req: &ShareMemory) -> Result<()> {
    call(
        ControlCmd::ShareMemory,
        req as *const ShareMemory as u64,
        0,
        0,
        0,
    )
    .map(|_| ())
}
