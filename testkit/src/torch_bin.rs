//! Writes PyTorch checkpoints the way `torch.save(state_dict, path)` does (the zip container,
//! the default since torch 1.6), so tests can feed `.bin`/`.pt` files to the loaders without
//! Python.
//!
//! The file is a zip of stored (uncompressed) entries under one top folder named after the
//! file's stem (`pytorch_model.bin` -> `pytorch_model/`), in torch's order:
//!
//! - `data.pkl`: a protocol-2 pickle of a `collections.OrderedDict` (built with `REDUCE`, filled
//!   with `SETITEMS` in batches of 1000, as Python's pickler does) whose values are
//!   `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, the
//!   storage being the persistent id `('storage', torch.FloatStorage, '<n>', 'cpu', numel)`
//!   (`BINPERSID`). Memoization (`BINPUT`/`BINGET`) follows Python's pickler too, so for a
//!   plain `OrderedDict` of contiguous f32 tensors the pickle is byte for byte what torch writes.
//! - `.format_version` (`1`), `.storage_alignment` (`64`), `byteorder` (`little`),
//! - `data/<n>`: the little-endian bytes of storage `n` (`0`, `1`, ... in state-dict order),
//! - `version` (`3\n`) and `.data/serialization_id`: 40 digits, a hash of the record names then
//!   a hash of the records' CRCs. The CRC half is torch's (`hash_combine` over the CRCs of the
//!   non-empty records in write order); the name half is not (torch's depends on the iteration
//!   order of a C++ `unordered_set`). Readers, torch's and burn's, ignore the id.
//!
//! The zip records are laid out as torch 2.x's miniz-based writer lays them out: no timestamps,
//! flags 0x0808 with CRC and sizes in a data descriptor after each entry's data (0x0800 and no
//! descriptor for an empty entry), each entry's data on a 64-byte boundary (the local header's
//! extra field, id `FB`, filled with `Z`, pads up to it), and zip64 end records before the classic
//! one. Apart from the first 20 digits of the serialization id (and so that record's CRC), the
//! file is byte for byte what `torch.save` writes for the same state dict (checked against torch
//! 2.15). Archives of 4 GiB or more (which would need zip64 entries) are refused.

use std::collections::HashSet;
use std::io;
use std::path::Path;

/// Alignment of every entry's data within the file (torch's `kFieldAlignment`).
const ALIGNMENT: usize = 64;
/// Size of a zip local file header without its name and extra field.
const LOCAL_HEADER_LEN: usize = 30;
/// General purpose flag bits torch's writer sets: UTF-8 names (bit 11), and, on entries with
/// data, CRC and sizes in a data descriptor after the data (bit 3).
const FLAG_UTF8: u16 = 0x0800;
const FLAG_DESCRIPTOR: u16 = 0x0008;
/// Python's pickler writes dict items in batches of this many (`pickle._BATCHSIZE`).
const PICKLE_BATCH: usize = 1000;

/// Writes `tensors` (key, shape, row-major f32 values) to `path` as `torch.save` writes a state
/// dict: an `OrderedDict` of the tensors in the given order, each with its own storage. A shape of
/// `[]` is a rank-0 tensor (one value).
///
/// Errors (`InvalidInput`) when a tensor's value count is not the product of its shape, when a
/// key repeats, or when the archive would need zip64 (4 GiB or more).
pub fn write_torch_bin(tensors: &[(String, Vec<usize>, Vec<f32>)], path: &Path) -> io::Result<()> {
    let mut seen = HashSet::new();
    for (key, shape, values) in tensors {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(invalid(format!(
                "tensor {key}: shape {shape:?} needs {numel} values, got {}",
                values.len()
            )));
        }
        if !seen.insert(key.as_str()) {
            return Err(invalid(format!("tensor key {key} appears twice")));
        }
    }

    // torch names the top folder after the file's stem ("archive" when it has none).
    let archive = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("archive");

    let mut zip = ZipWriter::default();
    zip.add(&format!("{archive}/data.pkl"), &pickle_state_dict(tensors))?;
    zip.add(&format!("{archive}/.format_version"), b"1")?;
    zip.add(&format!("{archive}/.storage_alignment"), b"64")?;
    zip.add(&format!("{archive}/byteorder"), b"little")?;
    for (index, (_, _, values)) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.add(&format!("{archive}/data/{index}"), &bytes)?;
    }
    zip.add(&format!("{archive}/version"), b"3\n")?;
    let id = zip.serialization_id();
    zip.add(&format!("{archive}/.data/serialization_id"), id.as_bytes())?;
    let bytes = zip.finish()?;

    std::fs::write(path, bytes)
}

/// Converts every tensor of the safetensors file `src` (all f32; rank 0 allowed) into a PyTorch
/// checkpoint at `dst` written by [`write_torch_bin`], keeping the key names. The state dict is in
/// key order, as `safetensors.torch.load_file` returns it. Panics naming the file on failure.
pub fn safetensors_to_torch_bin(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("bad safetensors {}: {e}", src.display()));
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .into_iter()
        .map(|name| {
            let view = st.tensor(&name).unwrap();
            assert!(
                view.dtype() == safetensors::Dtype::F32,
                "{}: tensor {name} is {:?}, only f32 is converted",
                src.display(),
                view.dtype()
            );
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    write_torch_bin(&tensors, dst)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", dst.display()));
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

// ------------------------------------------------------------------------------------------------
// Pickle (protocol 2), memoizing as Python's pickler does
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    memo_len: u32,
    /// Memo slots of the objects pickled more than once (interned strings and globals).
    strings: std::collections::HashMap<String, u32>,
    globals: std::collections::HashMap<(&'static str, &'static str), u32>,
}

impl Pickler {
    /// `BINPUT` / `LONG_BINPUT` for the object just written; returns its memo slot.
    fn memoize(&mut self) -> u32 {
        let slot = self.memo_len;
        if slot < 256 {
            self.out.extend_from_slice(&[b'q', slot as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&slot.to_le_bytes());
        }
        self.memo_len += 1;
        slot
    }

    /// `BINGET` / `LONG_BINGET`.
    fn get(&mut self, slot: u32) {
        if slot < 256 {
            self.out.extend_from_slice(&[b'h', slot as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&slot.to_le_bytes());
        }
    }

    /// A `GLOBAL`, memoized (the same class object is a `BINGET` afterwards).
    fn global(&mut self, module: &'static str, name: &'static str) {
        if let Some(&slot) = self.globals.get(&(module, name)) {
            return self.get(slot);
        }
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let slot = self.memoize();
        self.globals.insert((module, name), slot);
    }

    /// A `BINUNICODE`, memoized. With `shared`, a later write of the same text is a `BINGET`
    /// (a string object Python pickles more than once, like the literal `'storage'`).
    fn string(&mut self, s: &str, shared: bool) {
        if shared && let Some(&slot) = self.strings.get(s) {
            return self.get(slot);
        }
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        let slot = self.memoize();
        if shared {
            self.strings.insert(s.to_string(), slot);
        }
    }

    /// `BININT1` / `BININT2` / `BININT` / `LONG1`, as Python's `save_long` picks them.
    fn int(&mut self, v: usize) {
        if v <= 0xff {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v <= 0xffff {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as usize {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // Two's complement little-endian, with a 0 byte on top when the sign bit is set.
            let mut bytes = (v as u64).to_le_bytes().to_vec();
            while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 && bytes[bytes.len() - 2] < 0x80 {
                bytes.pop();
            }
            self.out.extend_from_slice(&[0x8a, bytes.len() as u8]);
            self.out.extend_from_slice(&bytes);
        }
    }

    /// A tuple of ints, as `save_tuple` writes it (`EMPTY_TUPLE` unmemoized; `TUPLE1..3` for up
    /// to 3 items, else `MARK ... TUPLE`; memoized).
    fn int_tuple(&mut self, items: &[usize]) {
        if items.is_empty() {
            self.out.push(b')');
            return;
        }
        if items.len() > 3 {
            self.out.push(b'(');
        }
        for &v in items {
            self.int(v);
        }
        self.out.push(match items.len() {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        self.memoize();
    }

    /// `OrderedDict()`: `collections.OrderedDict` called with no arguments.
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(b')');
        self.out.push(b'R');
        self.memoize();
    }

    /// A contiguous f32 tensor on storage `key`, as `Tensor.__reduce_ex__` pickles it.
    fn tensor(&mut self, key: &str, shape: &[usize]) {
        let numel: usize = shape.iter().product();
        // Contiguous strides, as torch computes them (a size-0 dim counts as 1).
        let mut stride = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1].max(1);
        }

        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'('); // the argument tuple
        // The storage: its persistent id ('storage', torch.FloatStorage, key, 'cpu', numel).
        self.out.push(b'(');
        self.string("storage", true);
        self.global("torch", "FloatStorage");
        self.string(key, false);
        self.string("cpu", true);
        self.int(numel);
        self.out.push(b't');
        self.memoize();
        self.out.push(b'Q'); // BINPERSID
        self.int(0); // storage_offset
        self.int_tuple(shape);
        self.int_tuple(&stride);
        self.out.push(0x89); // requires_grad = False
        self.empty_ordered_dict(); // backward_hooks
        self.out.push(b't');
        self.memoize();
        self.out.push(b'R');
        self.memoize();
    }
}

/// `pickle.dumps(OrderedDict(tensors), protocol=2)` with torch's persistent ids for storages.
fn pickle_state_dict(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut p = Pickler::default();
    p.out.extend_from_slice(&[0x80, 2]); // PROTO 2
    p.global("collections", "OrderedDict");
    p.out.push(b')');
    p.out.push(b'R');
    p.memoize();
    let items: Vec<(usize, &(String, Vec<usize>, Vec<f32>))> = tensors.iter().enumerate().collect();
    for batch in items.chunks(PICKLE_BATCH) {
        if batch.len() > 1 {
            p.out.push(b'('); // MARK
        }
        for (index, (key, shape, _)) in batch {
            p.string(key, false);
            p.tensor(&index.to_string(), shape);
        }
        p.out.push(if batch.len() > 1 { b'u' } else { b's' }); // SETITEMS / SETITEM
    }
    p.out.push(b'.'); // STOP
    p.out
}

// ------------------------------------------------------------------------------------------------
// Zip (stored entries, 64-byte aligned data), as torch's miniz-based writer lays it out
// ------------------------------------------------------------------------------------------------

#[derive(Default)]
struct ZipWriter {
    out: Vec<u8>,
    /// Central directory records, written after the entries.
    central: Vec<u8>,
    entries: u16,
    /// Record names and data CRCs, for the serialization id.
    names_hash: u64,
    crc_hash: u64,
}

impl ZipWriter {
    fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let offset = self.out.len();
        // Pad the extra field so the data starts on an ALIGNMENT boundary.
        let start = offset + LOCAL_HEADER_LEN + name.len() + 4;
        let padding = (ALIGNMENT - start % ALIGNMENT) % ALIGNMENT;
        let crc = crc32(data);
        let too_big = |what: &str| invalid(format!("{what} too large for a zip without zip64"));
        let size = u32::try_from(data.len()).map_err(|_| too_big("entry"))?;
        let offset32 = u32::try_from(offset).map_err(|_| too_big("archive"))?;
        if self.entries == u16::MAX {
            return Err(too_big("entry count"));
        }

        // miniz writes an empty entry's (all-zero) CRC and sizes in its header, without a
        // descriptor.
        let flags = if data.is_empty() {
            FLAG_UTF8
        } else {
            FLAG_UTF8 | FLAG_DESCRIPTOR
        };

        let w = &mut self.out;
        w.extend_from_slice(&0x0403_4b50u32.to_le_bytes()); // local file header signature
        w.extend_from_slice(&0u16.to_le_bytes()); // version needed (miniz: 0 when stored)
        w.extend_from_slice(&flags.to_le_bytes());
        w.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        w.extend_from_slice(&0u32.to_le_bytes()); // mod time and date (none)
        w.extend_from_slice(&[0; 12]); // crc and sizes: in the data descriptor
        w.extend_from_slice(&(name.len() as u16).to_le_bytes());
        w.extend_from_slice(&((padding + 4) as u16).to_le_bytes()); // extra field length
        w.extend_from_slice(name.as_bytes());
        w.extend_from_slice(b"FB"); // torch's padding extra field
        w.extend_from_slice(&(padding as u16).to_le_bytes());
        w.resize(w.len() + padding, b'Z');
        debug_assert_eq!(w.len() % ALIGNMENT, 0);
        w.extend_from_slice(data);
        if !data.is_empty() {
            w.extend_from_slice(&0x0807_4b50u32.to_le_bytes()); // data descriptor signature
            w.extend_from_slice(&crc.to_le_bytes());
            w.extend_from_slice(&size.to_le_bytes()); // compressed size
            w.extend_from_slice(&size.to_le_bytes()); // uncompressed size
        }

        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes()); // central directory signature
        c.extend_from_slice(&0u16.to_le_bytes()); // version made by
        c.extend_from_slice(&0u16.to_le_bytes()); // version needed
        c.extend_from_slice(&flags.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        c.extend_from_slice(&0u32.to_le_bytes()); // mod time and date
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&size.to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]); // extra and comment lengths, disk, attributes
        c.extend_from_slice(&offset32.to_le_bytes()); // local header offset
        c.extend_from_slice(name.as_bytes());

        self.entries += 1;
        self.names_hash = mix(self.names_hash, u64::from(crc32(name.as_bytes())));
        if !data.is_empty() {
            // torch leaves empty records out of its CRC hash.
            self.crc_hash = mix(self.crc_hash, u64::from(crc));
        }
        Ok(())
    }

    /// Two zero-padded 20-digit numbers: a hash of the record names, and torch's hash of the
    /// records' CRCs.
    fn serialization_id(&self) -> String {
        format!("{:020}{:020}", self.names_hash, self.crc_hash)
    }

    /// Appends the central directory and its end records. Like torch's writer, a zip64 end of
    /// central directory record and locator precede the classic one.
    fn finish(mut self) -> io::Result<Vec<u8>> {
        let cd_offset = self.out.len();
        let cd_size = self.central.len();
        let fits = u32::try_from(cd_offset + cd_size).is_ok();
        if !fits {
            return Err(invalid("archive too large for a zip without zip64".into()));
        }
        let entries = u64::from(self.entries);
        self.out.extend_from_slice(&self.central);
        let zip64_eocd = self.out.len() as u64;

        let w = &mut self.out;
        w.extend_from_slice(&0x0606_4b50u32.to_le_bytes()); // zip64 end of central directory
        w.extend_from_slice(&44u64.to_le_bytes()); // size of the rest of this record
        w.extend_from_slice(&0x031eu16.to_le_bytes()); // version made by (miniz: unix, 3.0)
        w.extend_from_slice(&45u16.to_le_bytes()); // version needed (zip64)
        w.extend_from_slice(&0u32.to_le_bytes()); // this disk
        w.extend_from_slice(&0u32.to_le_bytes()); // disk with the central directory
        w.extend_from_slice(&entries.to_le_bytes()); // entries on this disk
        w.extend_from_slice(&entries.to_le_bytes()); // entries in all
        w.extend_from_slice(&(cd_size as u64).to_le_bytes());
        w.extend_from_slice(&(cd_offset as u64).to_le_bytes());

        w.extend_from_slice(&0x0706_4b50u32.to_le_bytes()); // zip64 end of central dir locator
        w.extend_from_slice(&0u32.to_le_bytes()); // disk with the zip64 record
        w.extend_from_slice(&zip64_eocd.to_le_bytes());
        w.extend_from_slice(&1u32.to_le_bytes()); // number of disks

        w.extend_from_slice(&0x0605_4b50u32.to_le_bytes()); // end of central directory
        w.extend_from_slice(&0u16.to_le_bytes()); // this disk
        w.extend_from_slice(&0u16.to_le_bytes()); // disk with the central directory
        w.extend_from_slice(&self.entries.to_le_bytes()); // entries on this disk
        w.extend_from_slice(&self.entries.to_le_bytes()); // entries in all
        w.extend_from_slice(&(cd_size as u32).to_le_bytes());
        w.extend_from_slice(&(cd_offset as u32).to_le_bytes());
        w.extend_from_slice(&0u16.to_le_bytes()); // comment length
        Ok(self.out)
    }
}

/// `c10::hash_combine` on a 64-bit `size_t` (the mixing torch uses for its id).
fn mix(seed: u64, value: u64) -> u64 {
    seed ^ value
        .wrapping_add(0x9e37_79b9)
        .wrapping_add(seed << 6)
        .wrapping_add(seed >> 2)
}

/// CRC-32 (IEEE, reflected, as zip uses it).
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::{ModuleStore, PytorchStore};

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn pickle_of_one_tensor_matches_torch_bytes() {
        // `torch.save(OrderedDict(w=torch.zeros(2, 3)), f)`'s data.pkl, as CPython writes it.
        let expected: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08QK\x00K\x02K\x03\x86q\tK\x03K\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\rs.";
        let tensors = vec![("w".to_string(), vec![2, 3], vec![0.0; 6])];
        assert_eq!(pickle_state_dict(&tensors), expected);
    }

    #[test]
    fn round_trips_through_burn_pytorch_store() {
        let dir = std::env::temp_dir().join(format!("unclip-torch-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pytorch_model.bin");

        let big: Vec<f32> = (0..300 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
            ("scale".into(), vec![], vec![2.5]),
            (
                "linear.weight".into(),
                vec![2, 3],
                vec![1.0, -2.0, 3.5, 4.0, 5.25, -6.0],
            ),
            ("linear.bias".into(), vec![2], vec![0.125, -0.5]),
            (
                "conv.weight".into(),
                vec![2, 1, 2, 2],
                (0..8).map(|i| i as f32 - 3.0).collect(),
            ),
            ("embed.weight".into(), vec![300, 5], big),
            ("empty".into(), vec![0, 4], vec![]),
        ];
        write_torch_bin(&tensors, &path).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"PK\x03\x04"));

        let mut store = PytorchStore::from_file(&path);
        let read = store.get_all_tensors().unwrap();
        assert_eq!(
            read.len(),
            tensors.len(),
            "keys: {:?}",
            read.keys().collect::<Vec<_>>()
        );
        for (key, shape, values) in &tensors {
            let t = read.get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(t.dtype, burn::tensor::DType::F32, "{key} dtype");
            assert_eq!(&t.shape.to_vec(), shape, "{key} shape");
            let bytes = t.to_bytes().unwrap();
            let got: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(got, *values, "{key} values");
        }

        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rejects_bad_input() {
        let path = std::env::temp_dir().join("unclip-torch-bin-never-written.bin");
        let short = vec![("w".to_string(), vec![2, 2], vec![1.0; 3])];
        assert_eq!(
            write_torch_bin(&short, &path).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let twice = vec![
            ("w".to_string(), vec![], vec![1.0]),
            ("w".to_string(), vec![], vec![2.0]),
        ];
        assert_eq!(
            write_torch_bin(&twice, &path).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(!path.exists());
    }

    /// Every tensor of a safetensors fixture, converted, reads back (keys, shapes, values)
    /// through burn's PyTorch store, the reader `unclip_nn::Checkpoint` uses for `.bin` files.
    #[test]
    fn fixture_converts_and_reads_back() {
        let src = crate::fixture_dir("clip_tiny_quickgelu").join("model.safetensors");
        let dir = std::env::temp_dir().join(format!("unclip-torch-bin-fx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dst = dir.join("pytorch_model.bin");
        safetensors_to_torch_bin(&src, &dst);
        assert_same_as_safetensors(&dst, &src);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn assert_same_as_safetensors(bin: &Path, src: &Path) {
        let bytes = std::fs::read(src).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut store = PytorchStore::from_file(bin);
        let read = store.get_all_tensors().unwrap();
        let mut want: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        want.sort();
        assert_eq!(read.keys().cloned().collect::<Vec<_>>(), want);
        for name in &want {
            let view = st.tensor(name).unwrap();
            let t = &read[name];
            assert_eq!(t.dtype, burn::tensor::DType::F32, "{name} dtype");
            assert_eq!(t.shape.to_vec(), view.shape().to_vec(), "{name} shape");
            assert_eq!(&t.to_bytes().unwrap()[..], view.data(), "{name} bytes");
        }
    }
}
