//! GGUF (version 3) files: the metadata section read back ([`Metadata::read`]), and whole files
//! written ([`write`]). llama.cpp's own writer is Python (gguf-py) and the API must not link
//! llama.cpp to read a model's vocabulary, so genq carries this small pair.
//!
//! A file is a header (magic, version, tensor and key counts), the key-value metadata, the tensor
//! descriptions, then the aligned tensor data. Only the first two are ever read here.

mod read;
mod write;

pub use read::Metadata;
pub use write::{Q8_0_BLOCK, Tensor, TensorType, write};

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A metadata value, with the type it is stored as. Arrays hold values of one type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

// Type ids from ggml's gguf.h.
const TYPE_U8: u32 = 0;
const TYPE_I8: u32 = 1;
const TYPE_U16: u32 = 2;
const TYPE_I16: u32 = 3;
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_F32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;
const TYPE_U64: u32 = 10;
const TYPE_I64: u32 = 11;
const TYPE_F64: u32 = 12;

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => TYPE_U8,
            Value::I8(_) => TYPE_I8,
            Value::U16(_) => TYPE_U16,
            Value::I16(_) => TYPE_I16,
            Value::U32(_) => TYPE_U32,
            Value::I32(_) => TYPE_I32,
            Value::U64(_) => TYPE_U64,
            Value::I64(_) => TYPE_I64,
            Value::F32(_) => TYPE_F32,
            Value::F64(_) => TYPE_F64,
            Value::Bool(_) => TYPE_BOOL,
            Value::Str(_) => TYPE_STRING,
            Value::Array(_) => TYPE_ARRAY,
        }
    }

    /// An integer of any width, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A list of strings in an array of them.
    pub fn strings(items: impl IntoIterator<Item = impl Into<String>>) -> Value {
        Value::Array(items.into_iter().map(|s| Value::Str(s.into())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_written_is_read_back_with_its_types() {
        let metadata = vec![
            ("a.u8", Value::U8(7)),
            ("a.i16", Value::I16(-3)),
            ("a.u32", Value::U32(1024)),
            ("a.u64", Value::U64(u64::MAX)),
            ("a.f32", Value::F32(1e-5)),
            ("a.f64", Value::F64(0.25)),
            ("a.bool", Value::Bool(true)),
            ("a.name", Value::Str("gpt2 ✓".into())),
            ("a.tokens", Value::strings(["a", "", "Ġthe"])),
            ("a.types", Value::Array(vec![Value::I32(1), Value::I32(3)])),
        ];
        let tensors = [Tensor::f32("t", vec![2], &[1.0, 2.0])];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("round-trip.gguf");
        write(
            &mut std::fs::File::create(&path).unwrap(),
            &metadata,
            &tensors,
        )
        .unwrap();

        let read = Metadata::read(&path).unwrap();

        assert_eq!(read.len(), metadata.len());
        for (key, value) in &metadata {
            assert_eq!(read.get(key), Some(value), "{key}");
        }
        assert_eq!(read.u32("a.u32").unwrap(), 1024);
        assert!(read.u32("a.u64").is_err(), "u64::MAX is not a u32");
        assert_eq!(read.str("a.name").unwrap(), "gpt2 ✓");
        assert_eq!(read.string_list("a.tokens").unwrap(), ["a", "", "Ġthe"]);
        assert_eq!(read.int_list("a.types").unwrap(), [1, 3]);
    }

    #[test]
    fn a_file_that_is_not_gguf_or_ends_early_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let not_gguf = dir.path().join("not.gguf");
        std::fs::write(&not_gguf, b"PK\x03\x04 a zip file").unwrap();
        let truncated = dir.path().join("truncated.gguf");
        let mut bytes = Vec::new();
        write(&mut bytes, &[("name", Value::Str("x".repeat(100)))], &[]).unwrap();
        std::fs::write(&truncated, &bytes[..60]).unwrap();

        let not_gguf = format!("{:#}", Metadata::read(&not_gguf).unwrap_err());
        let truncated = format!("{:#}", Metadata::read(&truncated).unwrap_err());

        assert!(not_gguf.contains("not a GGUF file"), "{not_gguf}");
        assert!(
            truncated.contains("ends inside its metadata"),
            "{truncated}"
        );
    }
}
