//! Damaging a built unified image for negative tests: find a module by name
//! in `tessera.img`'s module table and flip one of its bytes, as a bad
//! flash or a tool that packed the wrong file would.
//!
//! The one idea: the table is found the way only a real one can be, at a
//! `MODULE_ALIGN` boundary with the magic *and* a `total_size` that ends
//! exactly at the end of the file (the packer puts it last), so the
//! kernel's own copy of the magic in its read-only data is never taken for
//! it. The layout comes from `tessera_ipc::image`; no offset is written by
//! hand.

use crate::qemu::Failure;
use tessera_ipc::image::{ModuleEntry, TableHeader, MODULE_ALIGN, TABLE_MAGIC};
use zerocopy::FromBytes;

/// Where the module table starts in `image`.
pub fn table_offset(image: &[u8]) -> Result<usize, Failure> {
    let align = MODULE_ALIGN as usize;
    (0..image.len())
        .step_by(align)
        .find(|&at| {
            image
                .get(at..)
                .and_then(|rest| TableHeader::read_from_prefix(rest).ok())
                .is_some_and(|(h, _)| {
                    h.magic == TABLE_MAGIC
                        && usize::try_from(h.total_size.get()).ok() == Some(image.len() - at)
                })
        })
        .ok_or_else(|| Failure::new("no module table in the image (not built by `cargo xtask`?)"))
}

/// The table index and the byte range in `image` of the module `name`.
pub fn module_range(image: &[u8], name: &str) -> Result<(usize, core::ops::Range<usize>), Failure> {
    let table = table_offset(image)?;
    let bad = |why: &str| Failure::new(format!("module table at {table:#x}: {why}"));
    let rest = image.get(table..).ok_or_else(|| bad("past the end"))?;
    let (header, entries) =
        TableHeader::read_from_prefix(rest).map_err(|_| bad("truncated header"))?;
    let count = header.count.get() as usize;
    let (entries, _) = <[ModuleEntry]>::ref_from_prefix_with_elems(entries, count)
        .map_err(|_| bad("truncated entries"))?;
    let (index, entry) = entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.name_bytes() == name.as_bytes())
        .ok_or_else(|| bad(&format!("no module named {name:?}")))?;
    let start = usize::try_from(entry.offset.get())
        .ok()
        .and_then(|o| table.checked_add(o));
    let end = start.zip(usize::try_from(entry.size.get()).ok());
    match end.and_then(|(s, n)| Some(s..s.checked_add(n)?)) {
        Some(range) if range.end <= image.len() && !range.is_empty() => Ok((index, range)),
        _ => Err(bad(&format!("module {name:?} is empty or out of bounds"))),
    }
}

/// Flips every bit of the first byte of module `name`'s list of chunk
/// digests; returns its table index.
pub fn corrupt_chunk_digests(image: &mut [u8], name: &str) -> Result<usize, Failure> {
    let (index, _) = module_range(image, name)?;
    let table = table_offset(image)?;
    let entry_at =
        table + core::mem::size_of::<TableHeader>() + index * core::mem::size_of::<ModuleEntry>();
    let entry = image
        .get(entry_at..)
        .and_then(|b| ModuleEntry::read_from_prefix(b).ok())
        .map(|(e, _)| e)
        .ok_or_else(|| Failure::new("module entry out of range"))?;
    let at = usize::try_from(entry.chunks_offset.get())
        .ok()
        .and_then(|o| table.checked_add(o))
        .ok_or_else(|| Failure::new("chunk digests out of range"))?;
    let byte = image
        .get_mut(at)
        .ok_or_else(|| Failure::new("chunk digests out of range"))?;
    *byte = !*byte;
    Ok(index)
}

/// Flips every bit of the middle byte of module `name`; returns its table
/// index (what the kernel's refusal names).
pub fn corrupt_module(image: &mut [u8], name: &str) -> Result<usize, Failure> {
    let (index, range) = module_range(image, name)?;
    let middle = range.start + range.len() / 2;
    let byte = image
        .get_mut(middle)
        .ok_or_else(|| Failure::new("module byte out of range"))?;
    *byte = !*byte;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ipc::image::ModuleKind;

    const ALIGN: usize = MODULE_ALIGN as usize;

    /// A kernel of `kernel` bytes (holding a stray copy of the magic, as the
    /// real kernel's read-only data does), then a table of `modules`, laid
    /// out as xtask's packer does.
    fn image(kernel: usize, modules: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; kernel];
        if let Some(stray) = out.get_mut(..TABLE_MAGIC.len()) {
            stray.copy_from_slice(&TABLE_MAGIC);
        }
        let table = kernel.next_multiple_of(ALIGN);
        let listed: Vec<(ModuleKind, &str, &[u8])> = modules
            .iter()
            .map(|&(name, data)| (ModuleKind::Kernel, name, data))
            .collect();
        out.resize(table, 0);
        out.extend_from_slice(&tessera_ipc::image::pack_table(&listed, |_| [0; 32]));
        out
    }

    #[test]
    fn the_table_is_found_past_the_kernels_own_copy_of_the_magic() {
        let img = image(
            3 * ALIGN + 5,
            &[("system.dtb", b"dt"), ("testguest", b"code!")],
        );
        assert_eq!(table_offset(&img).unwrap(), 4 * ALIGN);
        let (index, range) = module_range(&img, "testguest").unwrap();
        assert_eq!(index, 1);
        assert_eq!(&img[range], b"code!");
    }

    #[test]
    fn one_byte_in_the_middle_of_the_module_is_flipped() {
        let mut img = image(ALIGN, &[("testguest", b"abcde")]);
        let before = img.clone();
        assert_eq!(corrupt_module(&mut img, "testguest").unwrap(), 0);
        let (_, range) = module_range(&img, "testguest").unwrap();
        assert_eq!(&img[range.clone()], &[b'a', b'b', !b'c', b'd', b'e']);
        let changed = img.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1);
    }

    #[test]
    fn a_missing_module_or_table_is_an_error() {
        let img = image(ALIGN, &[("testguest", b"x")]);
        let missing = module_range(&img, "policy").unwrap_err();
        assert!(
            missing.0.contains("no module named \"policy\""),
            "{missing}"
        );
        let empty = image(ALIGN, &[("blank", b"")]);
        let e = module_range(&empty, "blank").unwrap_err();
        assert!(e.0.contains("empty or out of bounds"), "{e}");
        let truncated = &img[..img.len() - 1];
        let e = table_offset(truncated).unwrap_err();
        assert!(e.0.contains("no module table"), "{e}");
        assert!(table_offset(&[]).is_err());
    }
}
