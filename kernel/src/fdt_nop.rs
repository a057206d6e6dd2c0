//! Removing `FDT_NOP` tokens from a flattened device tree, in place.
//!
//! NOP tokens are legal (libfdt leaves them when it deletes or shrinks
//! nodes, and QEMU edits a `-dtb` blob that way), but the `fdt` crate
//! mis-walks them. The kernel owns the host DTB's memory, so it compacts
//! the structure block once at boot instead of rejecting a valid tree.

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Compact away every NOP token; returns how many were removed. On a
/// malformed structure block the blob is left as it was, and `None` says so.
pub fn strip_nops(dtb: &mut [u8]) -> Option<usize> {
    let off = be32(dtb, 8)? as usize;
    let size = be32(dtb, 36)? as usize;
    let end = off.checked_add(size)?;
    if end > dtb.len() {
        return None;
    }
    // First pass: validate and count, so a bad blob is not half rewritten.
    let mut pos = off;
    let mut nops = 0usize;
    loop {
        let tok = be32(dtb, pos)?;
        pos = match tok {
            FDT_BEGIN_NODE => {
                let name_end = dtb.get(pos + 4..end)?.iter().position(|&b| b == 0)? + pos + 4;
                (name_end + 1).next_multiple_of(4)
            }
            FDT_PROP => {
                let len = be32(dtb, pos + 4)? as usize;
                (pos + 12).checked_add(len)?.next_multiple_of(4)
            }
            FDT_NOP => {
                nops += 1;
                pos + 4
            }
            FDT_END_NODE => pos + 4,
            FDT_END => break,
            _ => return None,
        };
        if pos > end {
            return None;
        }
    }
    if nops == 0 {
        return Some(0);
    }
    let stop = pos + 4;
    let (mut src, mut dst) = (off, off);
    while src < stop {
        let tok = be32(dtb, src)?;
        let next = match tok {
            FDT_BEGIN_NODE => {
                (dtb.get(src + 4..end)?.iter().position(|&b| b == 0)? + src + 5).next_multiple_of(4)
            }
            FDT_PROP => (src + 12 + be32(dtb, src + 4)? as usize).next_multiple_of(4),
            _ => src + 4,
        };
        if tok != FDT_NOP {
            dtb.copy_within(src..next, dst);
            dst += next - src;
        }
        src = next;
    }
    let new_size = (size - nops * 4) as u32;
    dtb.get_mut(36..40)?
        .copy_from_slice(&new_size.to_be_bytes());
    Some(nops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sysdesc::fdt_writer::FdtWriter;

    fn sample() -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.begin_node("psci").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        buf.truncate(n);
        buf
    }

    /// Turn the `#address-cells` property (the first token after the root's
    /// BEGIN_NODE) into NOPs, as libfdt's `fdt_nop_property` does.
    fn with_nops(mut b: Vec<u8>) -> Vec<u8> {
        let off = be32(&b, 8).unwrap() as usize;
        let prop = off + 8; // BEGIN_NODE + empty name padded to 4
        assert_eq!(be32(&b, prop), Some(FDT_PROP));
        for i in 0..4 {
            b[prop + i * 4..prop + i * 4 + 4].copy_from_slice(&FDT_NOP.to_be_bytes());
        }
        b
    }

    #[test]
    fn removes_nops_and_keeps_the_tree() {
        let mut b = with_nops(sample());
        assert_eq!(strip_nops(&mut b), Some(4));
        let fdt = fdt::Fdt::new(&b).unwrap();
        let psci = fdt.find_node("/psci").unwrap();
        assert_eq!(psci.property("method").unwrap().as_str(), Some("smc"));
        assert_eq!(strip_nops(&mut b), Some(0));
    }

    #[test]
    fn leaves_malformed_blobs_alone() {
        let mut b = with_nops(sample());
        let off = be32(&b, 8).unwrap() as usize;
        b[off + 24..off + 28].copy_from_slice(&77u32.to_be_bytes());
        let before = b.clone();
        assert_eq!(strip_nops(&mut b), None);
        assert_eq!(b, before);
        assert_eq!(strip_nops(&mut [0u8; 8]), None);
    }
}
