//! Hypercall error codes. Values follow Xen's `xen/include/public/errno.h`
//! (which mirrors Linux's), returned to the guest negated in x0.

crate::abi_enum! {
    /// A hypercall error. The guest sees `-(code as i64)`.
    pub enum Errno: u32 {
        Eperm = 1,
        Enoent = 2,
        Esrch = 3,
        /// I/O error: a module's bytes fail their SHA-256 check.
        Eio = 5,
        /// No such device: a pCPU the board does not have.
        Enxio = 6,
        Eagain = 11,
        Enomem = 12,
        Eacces = 13,
        Efault = 14,
        Ebusy = 16,
        Eexist = 17,
        Einval = 22,
        Enospc = 28,
        Enosys = 38,
    }
}

impl Errno {
    /// The value placed in x0: the negated code, as two's complement.
    pub const fn to_ret(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decode a hypercall return value; `None` when it is not an error.
    pub fn from_ret(ret: u64) -> Option<Self> {
        let signed = ret as i64;
        if signed >= 0 {
            return None;
        }
        Errno::try_from(signed.unsigned_abs()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_x0() {
        for &e in Errno::ALL {
            assert_eq!(Errno::from_ret(e.to_ret()), Some(e));
        }
        assert_eq!(Errno::from_ret(0), None);
        assert_eq!(Errno::from_ret(5), None);
        assert_eq!(Errno::Enosys.to_ret() as i64, -38);
    }
}
