//! Reads a PyTorch state dict saved in the *legacy* format (`torch.save` before 1.6, or with
//! `_use_new_zipfile_serialization=False`), which candle's zip reader does not take.
//!
//! The file is five pickles in a row, then the raw storages:
//! 1. the magic number `0x1950a86a20f9469cfc6c`;
//! 2. the protocol version, 1001;
//! 3. system information (endianness, type sizes);
//! 4. the object: here an `OrderedDict` of name → `torch._utils._rebuild_tensor_v2(storage,
//!    offset, size, stride, …)`, each storage a persistent id `('storage', type, key, location,
//!    element count)`;
//! 5. the list of storage keys, in the order their data follows.
//!
//! Each storage is then an `i64` element count (little-endian) and its elements. Only
//! little-endian `FloatStorage` is read: what the MTCNN weights use. Tensors may be views with
//! any strides (some of these weights are stored transposed).

use crate::SafetyError;
use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::{BufRead, Cursor, Read};

/// The first two pickles, byte for byte: the 80-bit magic number `0x1950a86a20f9469cfc6c` (as
/// `LONG1`, which candle's reader cannot hold in an `i64`) and the protocol version 1001.
const HEADER: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.";

fn err(what: impl std::fmt::Display) -> SafetyError {
    SafetyError::Model(format!("legacy PyTorch file: {what}"))
}

fn pickle<R: BufRead>(r: &mut R) -> Result<Object, SafetyError> {
    let mut stack = Stack::empty();
    stack.read_loop(r).map_err(err)?;
    stack.finalize().map_err(err)
}

/// One tensor as the object pickle describes it.
struct Entry {
    name: String,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn ints(o: Object) -> Result<Vec<usize>, SafetyError> {
    match o {
        Object::Tuple(v) => v
            .into_iter()
            .map(|x| match int(&x) {
                Some(i) if i >= 0 => Ok(i as usize),
                _ => Err(err(format!("expected a size, got {x:?}"))),
            })
            .collect(),
        other => Err(err(format!("expected a tuple, got {other:?}"))),
    }
}

fn int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(i64::from(*i)),
        Object::Long(i) => Some(*i),
        _ => None,
    }
}

fn entry(name: Object, value: Object) -> Result<Entry, SafetyError> {
    let Object::Unicode(name) = name else {
        return Err(err(format!("a key that is not a string: {name:?}")));
    };
    let (callable, args) = value
        .reduce()
        .map_err(|o| err(format!("{name}: not a tensor: {o:?}")))?;
    match callable {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        other => return Err(err(format!("{name}: not a tensor: {other:?}"))),
    }
    let mut args = args.tuple().map_err(|o| err(format!("{name}: {o:?}")))?;
    if args.len() < 4 {
        return Err(err(format!(
            "{name}: {} arguments to rebuild the tensor",
            args.len()
        )));
    }
    let stride = ints(args.remove(3))?;
    let shape = ints(args.remove(2))?;
    let offset = int(&args.remove(1)).ok_or_else(|| err(format!("{name}: no offset")))? as usize;
    let storage = args
        .remove(0)
        .persistent_load()
        .and_then(Object::tuple)
        .map_err(|o| err(format!("{name}: storage {o:?}")))?;
    let [_, class, key, ..] = storage.as_slice() else {
        return Err(err(format!("{name}: a storage id of {} parts", storage.len())));
    };
    match class {
        Object::Class { class_name, .. } if class_name == "FloatStorage" => {}
        other => return Err(err(format!("{name}: only float tensors are read, not {other:?}"))),
    }
    let Object::Unicode(key) = key.clone() else {
        return Err(err(format!("{name}: a storage key that is not a string")));
    };
    Ok(Entry {
        name,
        key,
        offset,
        shape,
        stride,
    })
}

/// Every tensor of the state dict in `bytes`, by name, on the CPU.
pub fn read(bytes: &[u8]) -> Result<HashMap<String, Tensor>, SafetyError> {
    if !bytes.starts_with(HEADER) {
        return Err(err(
            "not a legacy PyTorch file (no magic number and protocol 1001)",
        ));
    }
    let mut r = Cursor::new(bytes);
    r.set_position(HEADER.len() as u64);
    let _system = pickle(&mut r)?;
    let entries = match pickle(&mut r)? {
        Object::Dict(items) => items
            .into_iter()
            // The state dict's `_metadata` attribute (module versions) comes in as an item.
            .filter(|(k, _)| *k != Object::Unicode("_metadata".into()))
            .map(|(k, v)| entry(k, v))
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(err(format!("the object is not a state dict: {other:?}"))),
    };
    let keys = match pickle(&mut r)? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(err(format!("a storage key {other:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(err(format!("no storage key list: {other:?}"))),
    };
    let mut storages: HashMap<String, Vec<f32>> = HashMap::new();
    for key in keys {
        let mut count = [0u8; 8];
        r.read_exact(&mut count)
            .map_err(|_| err(format!("storage {key} is cut short")))?;
        let count = usize::try_from(i64::from_le_bytes(count))
            .map_err(|_| err(format!("storage {key} has a negative size")))?;
        let left = bytes.len() - r.position() as usize;
        if count.checked_mul(4).is_none_or(|n| n > left) {
            return Err(err(format!(
                "storage {key} claims {count} floats; {left} bytes are left"
            )));
        }
        let mut data = vec![0u8; count * 4];
        r.read_exact(&mut data).map_err(err)?;
        let floats = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        storages.insert(key, floats);
    }
    let mut out = HashMap::new();
    for e in entries {
        let data = storages
            .get(&e.key)
            .ok_or_else(|| err(format!("{}: storage {} is missing", e.name, e.key)))?;
        let n: usize = e.shape.iter().product();
        if e.stride.len() != e.shape.len() {
            return Err(err(format!(
                "{}: {} strides for {} dimensions",
                e.name,
                e.stride.len(),
                e.shape.len()
            )));
        }
        // Any strides (some weights are stored transposed): gather in row-major order.
        let mut slice = Vec::with_capacity(n);
        let mut index = vec![0usize; e.shape.len()];
        for _ in 0..n {
            let at = e.offset + index.iter().zip(&e.stride).map(|(i, s)| i * s).sum::<usize>();
            slice.push(
                *data
                    .get(at)
                    .ok_or_else(|| err(format!("{}: beyond its storage", e.name)))?,
            );
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < e.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let t = Tensor::from_vec(slice, e.shape.as_slice(), &Device::Cpu).map_err(err)?;
        out.insert(e.name, t);
    }
    Ok(out)
}
