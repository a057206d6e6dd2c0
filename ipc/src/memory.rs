//! `memory_op` (12), `vcpu_op` (24) and `hvm_op` (34): the sub-commands a
//! Xen-aware guest uses to place `shared_info`, grant frames and its
//! `vcpu_info`, and to read its HVM parameters. Layouts from Xen's
//! `memory.h`, `vcpu.h` and `hvm/params.h` (arm64, little-endian).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

crate::abi_enum! {
    /// `memory_op` sub-command, read from x0.
    pub enum MemoryCmd: u64 {
        AddToPhysmap = 7,
    }
}

crate::abi_enum! {
    /// `xen_add_to_physmap.space`.
    pub enum MapSpace: u32 {
        SharedInfo = 0,
        GrantTable = 1,
    }
}

/// `XENMEM_add_to_physmap`: map object `idx` of `space` at guest frame `gpfn`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct AddToPhysmap {
    pub domid: U16,
    pub size: U16,
    pub space: U32,
    pub idx: U64,
    pub gpfn: U64,
}

crate::abi_enum! {
    /// `vcpu_op` sub-command, read from x0 (x1 = vCPU, x2 = argument).
    pub enum VcpuCmd: u64 {
        RegisterRunstateMemoryArea = 5,
        RegisterVcpuInfo = 10,
    }
}

/// `VCPUOP_register_vcpu_info`: the vCPU's `vcpu_info` is at byte `offset`
/// of guest frame `mfn`, and must not cross the frame.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegisterVcpuInfo {
    pub mfn: U64,
    pub offset: U32,
    pub rsvd: U32,
}

crate::abi_enum! {
    /// `hvm_op` sub-command, read from x0.
    pub enum HvmCmd: u64 {
        SetParam = 0,
        GetParam = 1,
    }
}

/// `HVMOP_get_param` / `HVMOP_set_param`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HvmParam {
    pub domid: U16,
    pub _pad: U16,
    pub index: U32,
    pub value: U64,
}

/// Highest HVM parameter index Xen defines (`HVM_NR_PARAMS` is 39).
pub const HVM_NR_PARAMS: u32 = 39;

const _: () = {
    assert!(core::mem::size_of::<AddToPhysmap>() == 24);
    assert!(core::mem::size_of::<RegisterVcpuInfo>() == 16);
    assert!(core::mem::size_of::<HvmParam>() == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_to_physmap_layout() {
        let a = AddToPhysmap {
            domid: 0x7ff0.into(),
            size: 0.into(),
            space: 1.into(),
            idx: 2.into(),
            gpfn: 0x38000.into(),
        };
        let b = a.as_bytes();
        assert_eq!(&b[0..2], &[0xf0, 0x7f]);
        assert_eq!(b[4], 1);
        assert_eq!(b[8], 2);
        assert_eq!(&b[16..20], &[0, 0x80, 3, 0]);
        assert_eq!(
            MapSpace::try_from(4),
            Err(4),
            "foreign mappings are not offered"
        );
    }
}
