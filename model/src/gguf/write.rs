//! Writing a whole GGUF file: metadata, tensor descriptions and F32/Q8_0 tensor data, enough for
//! a GPT-2 model.

use std::io::{self, Write};

use super::{MAGIC, TYPE_ARRAY, TYPE_STRING, VERSION, Value};

const ALIGNMENT: u64 = 32;
/// Values per Q8_0 block; a block is an f16 scale followed by 32 signed bytes.
pub const Q8_0_BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    Q8_0,
}

impl TensorType {
    fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::Q8_0 => 8,
        }
    }
}

/// A tensor ready to be written: `dims` in ggml order (fastest-varying first).
#[derive(Debug)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: TensorType,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn f32(name: impl Into<String>, dims: Vec<u64>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor {
            name: name.into(),
            dims,
            kind: TensorType::F32,
            data,
        }
    }

    /// Quantizes row-major values to Q8_0 the way ggml's reference quantizer does.
    pub fn q8_0(name: impl Into<String>, dims: Vec<u64>, values: &[f32]) -> Self {
        assert_eq!(
            values.len() % Q8_0_BLOCK,
            0,
            "Q8_0 needs rows that are a multiple of 32"
        );
        let mut data = Vec::with_capacity(values.len() / Q8_0_BLOCK * 34);
        for block in values.chunks_exact(Q8_0_BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
            data.extend_from_slice(&half::f16::from_f32(scale).to_le_bytes());
            data.extend(block.iter().map(|v| ((v * inverse).round() as i8) as u8));
        }
        Tensor {
            name: name.into(),
            dims,
            kind: TensorType::Q8_0,
            data,
        }
    }
}

/// Writes a complete GGUF file: header, metadata, tensor infos, then aligned tensor data.
pub fn write(
    out: &mut impl Write,
    metadata: &[(&str, Value)],
    tensors: &[Tensor],
) -> io::Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut header, key);
        put_value(&mut header, value);
    }
    let mut offset = 0u64;
    for tensor in tensors {
        put_str(&mut header, &tensor.name);
        header.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
        for dim in &tensor.dims {
            header.extend_from_slice(&dim.to_le_bytes());
        }
        header.extend_from_slice(&tensor.kind.ggml_id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset = align(offset + tensor.data.len() as u64);
    }
    header.resize(align(header.len() as u64) as usize, 0);
    out.write_all(&header)?;
    for tensor in tensors {
        out.write_all(&tensor.data)?;
        let padding = align(tensor.data.len() as u64) - tensor.data.len() as u64;
        out.write_all(&vec![0u8; padding as usize])?;
    }
    out.flush()
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, value: &Value) {
    buf.extend_from_slice(&value.type_id().to_le_bytes());
    put_bare(buf, value);
}

/// A value without its type id, as array items are written.
fn put_bare(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => buf.push(*v),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::Str(s) => put_str(buf, s),
        Value::Array(items) => {
            // An empty array still needs an item type; a string list is the common empty one.
            let item_type = items.first().map_or(TYPE_STRING, Value::type_id);
            assert!(
                item_type != TYPE_ARRAY && items.iter().all(|v| v.type_id() == item_type),
                "a GGUF array holds values of one type, and no arrays"
            );
            buf.extend_from_slice(&item_type.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|v| put_bare(buf, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_within_one_step() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let tensor = Tensor::q8_0("t", vec![64], &values);
        assert_eq!(tensor.data.len(), 2 * 34);
        for (block, chunk) in tensor.data.chunks(34).zip(values.chunks(32)) {
            let scale = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (q, v) in block[2..].iter().zip(chunk) {
                assert!(((*q as i8) as f32 * scale - v).abs() <= scale);
            }
        }
    }
}
