//! Reading a GGUF file's key-value metadata, stopping before the tensors.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context, anyhow, bail};

use super::{
    MAGIC, TYPE_ARRAY, TYPE_BOOL, TYPE_F32, TYPE_F64, TYPE_I8, TYPE_I16, TYPE_I32, TYPE_I64,
    TYPE_STRING, TYPE_U8, TYPE_U16, TYPE_U32, TYPE_U64, Value,
};

/// A GGUF file's metadata: every key and its value.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    values: HashMap<String, Value>,
}

impl Metadata {
    /// Reads the metadata of the GGUF file at `path` (versions 2 and 3, as llama.cpp reads).
    pub fn read(path: &Path) -> anyhow::Result<Metadata> {
        let file = File::open(path)
            .with_context(|| format!("model file {} cannot be read", path.display()))?;
        let size = file.metadata()?.len();
        let mut reader = Reader {
            inner: BufReader::with_capacity(1 << 16, file),
            left: size,
        };
        Self::parse(&mut reader).with_context(|| format!("reading {}", path.display()))
    }

    fn parse(reader: &mut Reader) -> anyhow::Result<Metadata> {
        let mut magic = [0u8; 4];
        reader.bytes(&mut magic)?;
        if &magic != MAGIC {
            bail!("not a GGUF file (it starts with {magic:02x?})");
        }
        let version = reader.u32()?;
        if !(2..=3).contains(&version) {
            bail!("GGUF version {version} is not supported (2 and 3 are)");
        }
        let _tensors = reader.u64()?;
        let count = reader.u64()?;
        let mut values = HashMap::new();
        for _ in 0..count {
            let key = reader.string()?;
            let kind = reader.u32()?;
            let value = reader
                .value(kind, true)
                .with_context(|| format!("metadata key {key}"))?;
            if values.insert(key.clone(), value).is_some() {
                bail!("metadata key {key} appears twice");
            }
        }
        Ok(Metadata { values })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sets a key, as a changed copy of a model would have it.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        self.values.insert(key.into(), value);
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    fn required(&self, key: &str) -> anyhow::Result<&Value> {
        self.get(key)
            .ok_or_else(|| anyhow!("the model has no {key} in its metadata"))
    }

    pub fn str(&self, key: &str) -> anyhow::Result<&str> {
        self.required(key)?
            .as_str()
            .ok_or_else(|| anyhow!("{key} is not a string"))
    }

    /// An integer key that fits a u32, whatever width it is stored as.
    pub fn u32(&self, key: &str) -> anyhow::Result<u32> {
        self.required(key)?
            .as_i64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| anyhow!("{key} is not an integer from 0 to {}", u32::MAX))
    }

    pub fn string_list(&self, key: &str) -> anyhow::Result<Vec<&str>> {
        self.list(key, "strings", Value::as_str)
    }

    pub fn int_list(&self, key: &str) -> anyhow::Result<Vec<i64>> {
        self.list(key, "integers", Value::as_i64)
    }

    /// An array key's items, each converted by `item` (`None`: not a list of `what`).
    fn list<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        item: impl Fn(&'a Value) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let Value::Array(items) = self.required(key)? else {
            bail!("{key} is not a list");
        };
        items
            .iter()
            .map(|v| item(v).ok_or_else(|| anyhow!("{key} is not a list of {what}")))
            .collect()
    }
}

/// Reads little-endian values, and refuses a length that claims more bytes than the file has
/// left: a damaged file gets an error, not an allocation of its claimed size.
struct Reader {
    inner: BufReader<File>,
    left: u64,
}

impl Reader {
    fn bytes(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        self.claim(buf.len() as u64)?;
        self.inner.read_exact(buf)?;
        Ok(())
    }

    fn claim(&mut self, n: u64) -> anyhow::Result<()> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| anyhow!("the file ends inside its metadata"))?;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.bytes(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> anyhow::Result<String> {
        let len = self.u64()?;
        if len > self.left {
            bail!("the file ends inside its metadata");
        }
        let mut buf = vec![0u8; len as usize];
        self.bytes(&mut buf)?;
        String::from_utf8(buf).context("a string is not valid UTF-8")
    }

    fn value(&mut self, kind: u32, arrays_allowed: bool) -> anyhow::Result<Value> {
        Ok(match kind {
            TYPE_U8 => Value::U8(u8::from_le_bytes(self.array()?)),
            TYPE_I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            TYPE_U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            TYPE_I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            TYPE_U32 => Value::U32(self.u32()?),
            TYPE_I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            TYPE_U64 => Value::U64(self.u64()?),
            TYPE_I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            TYPE_F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            TYPE_F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            TYPE_BOOL => Value::Bool(u8::from_le_bytes(self.array()?) != 0),
            TYPE_STRING => Value::Str(self.string()?),
            // llama.cpp refuses arrays of arrays too.
            TYPE_ARRAY if arrays_allowed => {
                let item_kind = self.u32()?;
                let count = self.u64()?;
                // Every item takes at least one byte.
                if count > self.left {
                    bail!("an array of {count} items is longer than the file");
                }
                let items = (0..count)
                    .map(|_| self.value(item_kind, false))
                    .collect::<anyhow::Result<_>>()?;
                Value::Array(items)
            }
            other => bail!("value type {other} is not one GGUF defines here"),
        })
    }
}
