//! PSCI 1.1 over SMCCC, as guests call it with `hvc #0` and as the kernel calls
//! firmware with `smc #0` (Arm DEN0022, "Arm Power State Coordination Interface").

crate::abi_enum! {
    /// PSCI and SMCCC function identifiers (x0).
    pub enum Function: u64 {
        SmcccVersion = 0x8000_0000,
        Version = 0x8400_0000,
        CpuOff = 0x8400_0002,
        CpuOn32 = 0x8400_0003,
        AffinityInfo32 = 0x8400_0004,
        MigrateInfoType = 0x8400_0006,
        SystemOff = 0x8400_0008,
        SystemReset = 0x8400_0009,
        Features = 0x8400_000A,
        CpuOn64 = 0xC400_0003,
        AffinityInfo64 = 0xC400_0004,
    }
}

/// PSCI 1.1, as returned by `PSCI_VERSION`.
pub const VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC 1.1, as returned by `SMCCC_VERSION`.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// `MIGRATE_INFO_TYPE`: no Trusted OS, migration not required.
pub const MIGRATE_INFO_NOT_PRESENT: u64 = 2;

crate::abi_enum! {
    /// PSCI return codes, negative values in two's complement.
    pub enum Status: i64 {
        Success = 0,
        NotSupported = -1,
        InvalidParameters = -2,
        Denied = -3,
        AlreadyOn = -4,
        OnPending = -5,
        InternalFailure = -6,
        NotPresent = -7,
        Disabled = -8,
        InvalidAddress = -9,
    }
}

impl Status {
    /// The value placed in x0.
    pub const fn to_ret(self) -> u64 {
        self as i64 as u64
    }
}

crate::abi_enum! {
    /// `AFFINITY_INFO` results.
    pub enum AffinityState: u64 {
        On = 0,
        Off = 1,
        OnPending = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_encoding() {
        assert_eq!(Status::AlreadyOn.to_ret(), (-4i64) as u64);
        assert_eq!(Status::try_from((-4i64) as u64), Ok(Status::AlreadyOn));
        assert!(Function::try_from(0x8400_0001).is_err());
    }
}
