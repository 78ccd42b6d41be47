//! PyTorch checkpoints (`pytorch_model.bin`, `*.pt`, `*.pth`) read from their metadata alone.
//!
//! A `torch.save` file is a zip archive of uncompressed (stored) entries under one folder:
//! `<prefix>/data.pkl`, a pickle of the state dict, and `<prefix>/data/<key>`, the raw bytes
//! of each storage. A tensor in the pickle is a call of `torch._utils._rebuild_tensor_v2` on a
//! storage (named by a persistent id `('storage', torch.FloatStorage, key, location, numel)`),
//! an offset in elements, a size and a stride.
//!
//! A pickle is a program; nothing in it is run here. [`read_archive`] interprets the handful of
//! opcodes a state dict uses on a small value stack, and accepts only the globals
//! `torch.load(weights_only=True)` accepts for a state dict of tensors (storage types, the
//! tensor and parameter rebuild functions, `collections.OrderedDict`, `torch.Size`,
//! `_codecs.encode`). Any other global is refused with an error naming the file and the global.
//! Each tensor becomes a [`TensorInfo`] whose byte range is its place inside the archive file
//! itself (entries are stored uncompressed), so the loader maps it like a safetensors tensor.
//!
//! The zip directory is read with the `zip` crate (only stored entries are accepted); the
//! pickle subset is written here because no crate offers an interpreter that both refuses
//! unknown globals and reports storage offsets without reading tensor data (burn-store's reader
//! hands out data, candle's accepts any global, serde-pickle has no persistent ids).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::header::Header;
use crate::tensor::{TensorInfo, TensorSource};

/// The pickle's largest size accepted (a state dict's pickle holds names and shapes only).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Whether `bytes` start like a zip archive (what `torch.save` writes since PyTorch 1.6).
pub fn is_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads the tensors of a `torch.save` archive without reading their data: names, dtypes,
/// shapes and the byte range of each inside the file, in the pickle's order; tensors that
/// share a storage at the same offset, shape and strides are tied ([`TensorInfo::tied_to`]).
/// A non-contiguous view keeps its strides ([`TensorSource::File`]'s `strides`): the loader
/// gathers it.
///
/// # Errors
///
/// A file that is not a zip archive, a compressed or missing entry, a pickle that uses a
/// global outside the allow-list or an opcode a state dict does not use, a storage offset or
/// size past its entry (a strided view's last element included), or no tensor at all: each
/// names the file (and the tensor or global).
pub fn read_archive(path: &Path) -> Result<Header> {
    let bad = |reason: String| Error::TorchArchive {
        path: path.into(),
        reason,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip archive: {e}")))?;

    // name → (data start in the file, length)
    let mut entries: HashMap<String, (u64, u64)> = HashMap::new();
    let mut pickle_name = None;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let name = entry.name().to_string();
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            if pickle_name.is_some() {
                return Err(bad("more than one `data.pkl`".into()));
            }
            pickle_name = Some(name.clone());
        }
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(bad(format!(
                "entry `{name}` is compressed ({:?}); torch.save stores entries uncompressed, \
                 which is what lets stowage map them",
                entry.compression()
            )));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| bad(format!("entry `{name}`: no data offset")))?;
        let len = entry.size();
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "entry `{name}` ends past the end of the file ({file_len} bytes)"
            )));
        }
        entries.insert(name, (start, len));
    }
    let pickle_name = pickle_name.ok_or_else(|| {
        bad("no `data.pkl`: not a torch.save archive (or a legacy pre-1.6 file)".into())
    })?;
    let prefix = pickle_name
        .strip_suffix("data.pkl")
        .unwrap_or("")
        .to_string();
    let (start, len) = entries[&pickle_name];
    if len > MAX_PICKLE_BYTES {
        return Err(bad(format!(
            "`{pickle_name}` is {len} bytes, over the {MAX_PICKLE_BYTES}-byte cap"
        )));
    }
    let mut pickle = vec![0u8; len as usize];
    {
        use std::os::unix::fs::FileExt;
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        f.read_exact_at(&mut pickle, start)
            .map_err(|e| Error::io(path, e))?;
    }
    drop(zip);

    let value = Machine::new(path, &pickle).run()?;
    let mut found = Vec::new();
    flatten("", value, &mut found);
    if found.is_empty() {
        return Err(Error::NoTensors { path: path.into() });
    }

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(found.len());
    let mut owners: HashMap<(String, u64, Vec<u64>, Vec<u64>), String> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (name, t) in found {
        let entry = format!("{prefix}data/{}", t.storage.key);
        let &(data_start, data_len) = entries.get(&entry).ok_or_else(|| {
            bad(format!(
                "tensor `{name}`: its storage `{}` has no entry `{entry}`",
                t.storage.key
            ))
        })?;
        let dtype = t.storage.dtype;
        let elem = dtype.bits() / 8;
        let elems = t
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor `{name}`: shape {:?} overflows", t.shape)))?;
        // Row-major strides, as a contiguous tensor has (size-1 dimensions may have any);
        // others are kept, and the loader gathers the view.
        if t.stride.len() != t.shape.len() {
            return Err(bad(format!(
                "tensor `{name}`: {} strides for {} dimensions",
                t.stride.len(),
                t.shape.len()
            )));
        }
        let mut want = 1u64;
        let mut contiguous = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            contiguous &= d == 1 || s == want;
            want = want.saturating_mul(d);
        }
        // Elements from the first to the last the view reaches, inclusive.
        let reach = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(0u64, |r, (&d, &s)| {
                r.checked_add(d.saturating_sub(1).checked_mul(s)?)
            })
            .and_then(|r| {
                if elems == 0 {
                    Some(0)
                } else {
                    r.checked_add(1)
                }
            });
        let span = if contiguous { Some(elems) } else { reach };
        let offset = t.offset.checked_mul(elem);
        let bytes = span.and_then(|n| n.checked_mul(elem));
        let (Some(offset), Some(bytes)) = (offset, bytes) else {
            return Err(bad(format!("tensor `{name}`: offsets overflow")));
        };
        if offset.checked_add(bytes).is_none_or(|end| end > data_len) {
            return Err(bad(format!(
                "tensor `{name}`: elements {}..{} of storage `{}` lie past its {} bytes",
                t.offset,
                t.offset.saturating_add(span.unwrap_or(u64::MAX)),
                t.storage.key,
                data_len
            )));
        }
        // A view with more elements than its storage (an expanded one, stride 0) would be
        // gathered into more bytes than the file holds: refused, which also bounds what a
        // lying pickle can make the loader allocate.
        if !contiguous && elems.saturating_mul(elem) > data_len {
            return Err(bad(format!(
                "tensor `{name}`: a view of {elems} elements (shape {:?}, strides {:?}) over a \
                 storage of {} bytes repeats elements; save it with `.clone()`",
                t.shape, t.stride, data_len
            )));
        }
        let strides = (!contiguous).then(|| t.stride.clone());
        let key = (
            t.storage.key.clone(),
            t.offset,
            t.shape.clone(),
            t.stride.clone(),
        );
        let tied_to = if elems > 0 {
            match owners.get(&key) {
                Some(owner) => Some(owner.clone()),
                None => {
                    owners.insert(key, name.clone());
                    None
                }
            }
        } else {
            None
        };
        if !seen.insert(name.clone()) {
            return Err(bad(format!(
                "tensor `{name}` appears twice in the state dict"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: t.shape,
            source: TensorSource::File {
                path: path.into(),
                start: data_start + offset,
                end: data_start + offset + bytes,
                strides,
            },
            tied_to,
        });
    }
    Ok(Header {
        path: path.into(),
        tensors,
        metadata: Default::default(),
        file_len,
    })
}

/// Whether `path` is named like a PyTorch checkpoint (`.bin`, `.pt`, `.pth`).
pub(crate) fn named_like_torch(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "bin" | "pt" | "pth"))
}

/// A tensor as a pickle describes it: `(name, storage key, dtype, offset in elements, shape)`.
pub type PickledTensor = (String, String, DType, u64, Vec<u64>);

/// The tensors a state dict's pickle (`data.pkl`) describes: `(name, storage key, dtype,
/// offset in elements, shape)`, in order, without any archive; `path` only names the file in
/// errors. What [`read_archive`] runs on the archive's pickle (and what the fuzz target and the
/// parser sweep drive).
///
/// # Errors
///
/// As [`read_archive`] for the pickle: a refused global, an opcode a state dict does not use,
/// a malformed or truncated pickle.
pub fn tensors_in_pickle(path: &Path, pickle: &[u8]) -> Result<Vec<PickledTensor>> {
    let value = Machine::new(path, pickle).run()?;
    let mut found = Vec::new();
    flatten("", value, &mut found);
    Ok(found
        .into_iter()
        .map(|(name, t)| (name, t.storage.key, t.storage.dtype, t.offset, t.shape))
        .collect())
}

/// Reads the first bytes of `path`, to tell an archive from a safetensors file.
pub(crate) fn starts_as_archive(path: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && is_archive(&head)
}

#[derive(Debug, Clone)]
struct Storage {
    key: String,
    dtype: DType,
}

#[derive(Debug, Clone)]
struct Tensor {
    storage: Storage,
    offset: u64,
    shape: Vec<u64>,
    stride: Vec<u64>,
}

/// The globals a state dict may name (what `weights_only=True` allows for one).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Size,
    Encode,
    Storage(DType),
}

/// A pickle value; what a state dict does not use (floats, bytes, lists) is kept only to be
/// skipped.
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<V>),
    List(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(Global),
    Storage(Storage),
    Tensor(Box<Tensor>),
    Mark,
}

fn global(module: &str, name: &str) -> Option<Global> {
    let storage = |d| Some(Global::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", "Size") => Some(Global::Size),
        ("_codecs", "encode") => Some(Global::Encode),
        ("torch", "DoubleStorage") => storage(DType::F64),
        ("torch", "FloatStorage") => storage(DType::F32),
        ("torch", "HalfStorage") => storage(DType::F16),
        ("torch", "BFloat16Storage") => storage(DType::BF16),
        ("torch", "LongStorage") => storage(DType::I64),
        ("torch", "IntStorage") => storage(DType::I32),
        ("torch", "ShortStorage") => storage(DType::I16),
        ("torch", "CharStorage") => storage(DType::I8),
        ("torch", "ByteStorage") => storage(DType::U8),
        ("torch", "BoolStorage") => storage(DType::BOOL),
        _ => None,
    }
}

/// The pickle interpreter: a value stack, a memo, and nothing that runs code.
struct Machine<'a> {
    path: &'a Path,
    data: &'a [u8],
    at: usize,
    stack: Vec<V>,
    memo: HashMap<u32, V>,
    /// Values left to copy out of the memo (BINGET, DUP): a pickle that fetches a value that
    /// holds itself twice, again and again, would otherwise grow exponentially.
    copies_left: usize,
}

/// Values (counted node by node) a pickle may copy out of its memo in all.
const MAX_COPIES: usize = 1 << 22;

/// How many values `v` holds, itself included.
fn nodes(v: &V) -> usize {
    1 + match v {
        V::Tuple(items) | V::List(items) => items.iter().map(nodes).sum(),
        V::Dict(items) => items.iter().map(|(k, v)| nodes(k) + nodes(v)).sum(),
        _ => 0,
    }
}

/// Deepest stack and largest memo accepted (a state dict needs a few dozen stack slots; the
/// bound also bounds how deeply values nest, so walking them cannot overflow a thread's stack).
const MAX_STACK: usize = 1 << 12;
const MAX_MEMO: usize = 1 << 24;

impl<'a> Machine<'a> {
    fn new(path: &'a Path, data: &'a [u8]) -> Self {
        Machine {
            path,
            data,
            at: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            copies_left: MAX_COPIES,
        }
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::TorchArchive {
            path: self.path.into(),
            reason: format!("data.pkl at byte {}: {}", self.at, reason.into()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("truncated"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("a line is not UTF-8"))?;
        self.at += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: V) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack too deep"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<V> {
        match self.stack.pop() {
            Some(V::Mark) | None => Err(self.err("stack underflow")),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<V>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, V::Mark))
            .ok_or_else(|| self.err("no mark"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn string(&mut self, n: usize) -> Result<V> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("a string is not UTF-8"))?;
        Ok(V::Str(s.to_string()))
    }

    fn memo_put(&mut self, k: u32) -> Result<()> {
        let n = nodes(self.stack.last().ok_or_else(|| self.err("empty stack"))?);
        self.copied(n)?;
        let top = self.stack.last().cloned().expect("checked");
        if self.memo.len() >= MAX_MEMO {
            return Err(self.err("memo too large"));
        }
        self.memo.insert(k, top);
        Ok(())
    }

    fn memo_get(&mut self, k: u32) -> Result<()> {
        let v = self
            .memo
            .get(&k)
            .ok_or_else(|| self.err(format!("memo entry {k} was never stored")))?;
        let n = nodes(v);
        self.copied(n)?;
        let v = self.memo[&k].clone();
        self.push(v)
    }

    /// Counts `n` values copied against the budget.
    fn copied(&mut self, n: usize) -> Result<()> {
        self.copies_left = self
            .copies_left
            .checked_sub(n)
            .ok_or_else(|| self.err("too many values copied out of the memo"))?;
        Ok(())
    }

    fn set_items(&mut self, items: Vec<V>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of dict items"));
        }
        let Some(V::Dict(d)) = self.stack.last_mut() else {
            return Err(self.err("SETITEMS on a non-dict"));
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn run(mut self) -> Result<V> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.push(V::Mark)?,
                b'}' => self.push(V::Dict(Vec::new()))?,
                b']' => self.push(V::List(Vec::new()))?,
                b')' => self.push(V::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(V::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(V::Tuple(items))?;
                }
                b'q' => {
                    let k = u32::from(self.u8()?);
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = u32::from(self.u8()?);
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| self.err("huge string"))?;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(V::Bytes(b))?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(V::Bytes(b))?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4"));
                    self.push(V::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(V::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(V::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err("an integer wider than 64 bits"));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(V::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.push(V::Float(v))?;
                }
                b'N' => self.push(V::None)?,
                0x88 => self.push(V::Bool(true))?,
                0x89 => self.push(V::Bool(false))?,
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = global(module, name).ok_or_else(|| self.refused(module, name))?;
                    self.push(V::Global(g))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (V::Str(module), V::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL of non-strings"));
                    };
                    let g = global(&module, &name).ok_or_else(|| self.refused(&module, &name))?;
                    self.push(V::Global(g))?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.call(f, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    // BUILD: state set on an object (an OrderedDict's `_metadata`): ignored.
                    self.pop()?;
                    if self.stack.is_empty() {
                        return Err(self.err("BUILD with nothing to build"));
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.stack.last_mut() {
                        Some(V::List(l)) => l.push(v),
                        _ => return Err(self.err("APPEND on a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.stack.last_mut() {
                        Some(V::List(l)) => l.extend(items),
                        _ => return Err(self.err("APPENDS on a non-list")),
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let n = nodes(self.stack.last().ok_or_else(|| self.err("DUP on empty"))?);
                    self.copied(n)?;
                    let top = self.stack.last().cloned().expect("checked");
                    self.push(top)?;
                }
                other => {
                    return Err(self.err(format!(
                        "opcode 0x{other:02x} is not one a state dict uses; refused"
                    )));
                }
            }
        }
    }

    fn refused(&self, module: &str, name: &str) -> Error {
        Error::TorchGlobal {
            path: self.path.into(),
            global: format!("{module}.{name}"),
        }
    }

    fn persistent(&self, pid: V) -> Result<V> {
        let V::Tuple(items) = pid else {
            return Err(self.err("a persistent id that is not a tuple"));
        };
        match items.as_slice() {
            [
                V::Str(kind),
                V::Global(Global::Storage(dtype)),
                key,
                _location,
                _numel,
                ..,
            ] if kind == "storage" => {
                let key = match key {
                    V::Str(s) => s.clone(),
                    V::Int(i) => i.to_string(),
                    _ => return Err(self.err("a storage key that is not a string")),
                };
                if key.is_empty() || key.contains('/') || key.contains("..") {
                    return Err(self.err(format!("storage key `{key}`")));
                }
                Ok(V::Storage(Storage { key, dtype: *dtype }))
            }
            _ => Err(self.err("a persistent id other than a typed storage")),
        }
    }

    fn ints(&self, v: &V, what: &str) -> Result<Vec<u64>> {
        let V::Tuple(items) = v else {
            return Err(self.err(format!("{what} is not a tuple")));
        };
        items
            .iter()
            .map(|x| match x {
                V::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => Err(self.err(format!("{what} holds a value that is not a size"))),
            })
            .collect()
    }

    fn call(&self, f: V, args: V) -> Result<V> {
        let V::Global(g) = f else {
            return Err(self.err("REDUCE on something that is not an allowed global"));
        };
        let V::Tuple(args) = args else {
            return Err(self.err("REDUCE arguments are not a tuple"));
        };
        match g {
            Global::OrderedDict => Ok(V::Dict(Vec::new())),
            Global::Size => Ok(args.into_iter().next().unwrap_or(V::Tuple(Vec::new()))),
            Global::Encode => match args.first() {
                Some(V::Str(s)) => Ok(V::Bytes(s.chars().map(|c| c as u32 as u8).collect())),
                _ => Err(self.err("_codecs.encode of a non-string")),
            },
            Global::RebuildTensor => {
                let (Some(V::Storage(storage)), Some(V::Int(offset)), Some(size), Some(stride)) =
                    (args.first(), args.get(1), args.get(2), args.get(3))
                else {
                    return Err(self.err("_rebuild_tensor_v2 with unexpected arguments"));
                };
                let shape = self.ints(size, "a tensor's size")?;
                let stride = self.ints(stride, "a tensor's stride")?;
                if shape.len() != stride.len() || *offset < 0 {
                    return Err(self.err("a tensor's size, stride and offset disagree"));
                }
                Ok(V::Tensor(Box::new(Tensor {
                    storage: storage.clone(),
                    offset: *offset as u64,
                    shape,
                    stride,
                })))
            }
            Global::RebuildParameter => match args.into_iter().next() {
                Some(t @ V::Tensor(_)) => Ok(t),
                _ => Err(self.err("_rebuild_parameter of a non-tensor")),
            },
            Global::Storage(_) => Err(self.err("a storage type called directly")),
        }
    }
}

/// The tensors of `v`, with dotted names: a state dict, or dicts of them (`{"model": {...}}`);
/// other values (an epoch number, a string) are skipped.
fn flatten(prefix: &str, v: V, out: &mut Vec<(String, Tensor)>) {
    match v {
        V::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    V::Str(s) => s,
                    V::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, v, out);
            }
        }
        V::Tensor(t) => out.push((prefix.to_string(), *t)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state dict pickled by Python's pickle in torch.save's layout (`scripts/torch_save.py`):
    /// `layers.0.w` f32 [2, 3] in storage 0, `layers.0.b` bf16 [3] at offset 1 of storage 1,
    /// `tied` the same view as `layers.0.w`, and `_metadata`.
    const SEED: &str = "800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580a0000006c61796572732e302e77710263746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073746f72616765710463746f7263680a466c6f617453746f726167650a71055801000000307106580300000063707571074b06747108514b004b024b038671094b034b0186710a8968002952710b74710c52710d580a0000006c61796572732e302e62710e68032828680463746f7263680a42466c6f6174313653746f726167650a710f580100000031711068074b04747111514b014b038571124b018571138968002952711474711552711658040000007469656471176803282868046805680668074b06747118514b004b024b038671194b034b0186711a8968002952711b74711c52711d757d711e58090000005f6d65746164617461711f680029527120580000000071217d7122580700000076657273696f6e71234b01737373622e";

    fn seed() -> Vec<u8> {
        (0..SEED.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SEED[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reads_a_state_dict_pickle() {
        let got = tensors_in_pickle(Path::new("x.bin"), &seed()).unwrap();
        assert_eq!(
            got,
            vec![
                ("layers.0.w".into(), "0".into(), DType::F32, 0, vec![2, 3]),
                ("layers.0.b".into(), "1".into(), DType::BF16, 1, vec![3]),
                ("tied".into(), "0".into(), DType::F32, 0, vec![2, 3]),
            ]
        );
    }

    #[test]
    fn refuses_globals_by_name() {
        let evil = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let e = tensors_in_pickle(Path::new("x.bin"), evil)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`posix.system`") && e.contains("x.bin"), "{e}");
    }

    /// A billion laughs: a tuple of itself twice, memoized and fetched again and again.
    #[test]
    fn exponential_memo_copies_are_bounded() {
        let mut p = b"\x80\x02)q\x00".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        let e = tensors_in_pickle(Path::new("x.bin"), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many values copied"), "{e}");
    }

    /// The same with DUP: `(x, x)` of a value duplicated on the stack, 64 times.
    #[test]
    fn exponential_dup_copies_are_bounded() {
        let mut p = b"\x80\x02)".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"2\x86");
        }
        p.push(b'.');
        let e = tensors_in_pickle(Path::new("x.bin"), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many values copied"), "{e}");
    }

    /// Found by the fuzzer (an out-of-memory before copies were counted first): DUPs and
    /// TUPLE2s that double a value.
    #[test]
    fn fuzz_regression_dup_doubling() {
        let h = "8c0032323232323232328686868686323232323232323232323232323232323232323232868686868686868686868686868686868686868686863232323232323232328686868632323286868686863232323232323232323232323232323232323232328686868686868686868686868686868686868686868632323232323232323286868686323232323232323232323232323232323232323232863232323232323232323232323232323232323232328686868686868686868686868686868686868682868632323232323232323232328686863232868686868686867c8686323233";
        let p: Vec<u8> = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
        assert!(tensors_in_pickle(Path::new("x.bin"), &p).is_err());
    }
}
