//! How a device reaches its guest's memory: only through this trait, whose
//! implementations check every access against the guest's RAM. In the EL1
//! shell it is the window where the kernel mapped the served guest's RAM;
//! in host tests it is a plain vector.

/// A guest-physical access fell (partly) outside the guest's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub gpa: u64,
    pub len: usize,
}

/// Guest RAM as a device sees it. Implementations must reject, not clamp,
/// any access that is not wholly inside RAM, and must not panic on any
/// `gpa`/`len` (including ones whose sum overflows).
pub trait GuestMemory {
    /// Copy `buf.len()` bytes from guest-physical `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;
    /// Copy `data` to guest-physical `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange>;
}

/// Guest RAM backed by a byte slice starting at guest-physical `base`: the
/// host tests' memory, and the shell's (over the mapped window).
pub struct SliceMemory<'a> {
    pub base: u64,
    pub bytes: &'a mut [u8],
}

impl SliceMemory<'_> {
    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfRange> {
        let bad = OutOfRange { gpa, len };
        let off = gpa.checked_sub(self.base).ok_or(bad)?;
        let off = usize::try_from(off).map_err(|_| bad)?;
        let end = off.checked_add(len).ok_or(bad)?;
        if end > self.bytes.len() {
            return Err(bad);
        }
        Ok(off..end)
    }
}

impl GuestMemory for SliceMemory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let r = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let r = self.range(gpa, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_ram_are_rejected_not_clamped() {
        let mut ram = [0u8; 16];
        let mut m = SliceMemory {
            base: 0x4000_0000,
            bytes: &mut ram,
        };
        m.write(0x4000_0004, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        m.read(0x4000_0004, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(m.read(0x3fff_ffff, &mut b).is_err());
        assert!(m.read(0x4000_000d, &mut b).is_err());
        assert!(m.write(u64::MAX - 1, &[0; 4]).is_err());
        assert!(
            m.read(0x4000_0010, &mut []).is_ok(),
            "empty access at the end"
        );
    }
}
