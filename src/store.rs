//! The `state_dict` analogue: every tensor of a checkpoint, loaded by name onto its planned
//! device, with no model struct needed.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::ops::{BoolTensor, IntTensor};
use burn::tensor::{Bool, Int, Shape, TensorData, TensorPrimitive};
use stowage_planner::{DType, Device};

use crate::convert;
use crate::error::{Error, Result};

/// A tensor left on disk: a byte range of a safetensors file (the checkpoint itself when its
/// dtype is the one asked for, else the offload folder), read in when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTensor {
    /// The file.
    pub path: PathBuf,
    /// First byte of the data in the file.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Element type of those bytes.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
}

impl DiskTensor {
    /// Reads the bytes.
    pub fn read(&self) -> Result<Vec<u8>> {
        let file = std::fs::File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        let mut buf = vec![0u8; (self.end - self.start) as usize];
        file.read_exact_at(&mut buf, self.start)
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(buf)
    }
}

/// One loaded tensor, kept as the backend's rank-free primitive in its real shape, so a
/// tensor of any rank is handed out without a reshape (which copies on burn-ndarray).
#[derive(Debug, Clone)]
pub enum StoredTensor<B: Backend> {
    /// A floating tensor on its device (f32 on the CPU backend).
    Float {
        /// The backend's tensor.
        tensor: TensorPrimitive<B>,
        /// Dimensions.
        shape: Vec<usize>,
    },
    /// An integer tensor on its device.
    Int {
        /// The backend's tensor.
        tensor: IntTensor<B>,
        /// Dimensions.
        shape: Vec<usize>,
    },
    /// A boolean tensor on its device.
    Bool {
        /// The backend's tensor.
        tensor: BoolTensor<B>,
        /// Dimensions.
        shape: Vec<usize>,
    },
    /// A tensor left on disk, read in on demand.
    Disk(DiskTensor),
}

impl<B: Backend> StoredTensor<B> {
    /// The tensor's dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            StoredTensor::Float { shape, .. }
            | StoredTensor::Int { shape, .. }
            | StoredTensor::Bool { shape, .. } => shape,
            StoredTensor::Disk(d) => &d.shape,
        }
    }
}

/// Tensors by name, each on the device the plan gave it.
#[derive(Debug)]
pub struct TensorStore<B: Backend> {
    entries: Vec<(String, Device, StoredTensor<B>)>,
    index: HashMap<String, usize>,
    /// Where disk tensors are brought in.
    host: B::Device,
    /// Matrices read in from disk as their transpose, held as a transposed view
    /// ([`crate::load::HostLayout::Transposed`]).
    pub(crate) transposed: HashSet<String>,
    /// Under `verify`: the checksum of each offloaded tensor, by file and first byte, checked
    /// whenever it is read in.
    pub(crate) offload_hashes: HashMap<(PathBuf, u64), u64>,
}

impl<B: Backend> TensorStore<B> {
    pub(crate) fn new(host: B::Device) -> Self {
        TensorStore {
            entries: Vec::new(),
            index: HashMap::new(),
            host,
            transposed: HashSet::new(),
            offload_hashes: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, name: String, device: Device, tensor: StoredTensor<B>) {
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push((name, device, tensor));
    }

    /// Reads disk tensor `name` in, checking it against its checksum where one is kept.
    fn read_disk(&self, name: &str, d: &DiskTensor) -> Result<Vec<u8>> {
        let bytes = d.read()?;
        if let Some(&expected) = self.offload_hashes.get(&(d.path.clone(), d.start)) {
            let got = crate::checksum::of(&bytes);
            if got != expected {
                return Err(Error::OffloadCorrupt {
                    path: d.path.clone(),
                    tensor: name.to_string(),
                    expected: crate::checksum::to_hex(expected),
                    got: crate::checksum::to_hex(got),
                });
            }
        }
        Ok(bytes)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor called `name`, as stored.
    pub fn get(&self, name: &str) -> Option<&StoredTensor<B>> {
        self.index.get(name).map(|&i| &self.entries[i].2)
    }

    /// The device the plan gave `name`.
    pub fn device_of(&self, name: &str) -> Option<Device> {
        self.index.get(name).map(|&i| self.entries[i].1)
    }

    /// Names, devices and tensors, in load (execution) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Device, &StoredTensor<B>)> {
        self.entries.iter().map(|(n, d, t)| (n.as_str(), *d, t))
    }

    /// The floating tensor `name` with rank `D`; a disk tensor is read in onto the host
    /// device.
    pub fn float<const D: usize>(&self, name: &str) -> Result<Tensor<B, D>> {
        self.float_as(name, &self.shape_of(name)?)
    }

    /// The integer tensor `name` with rank `D`.
    pub fn int<const D: usize>(&self, name: &str) -> Result<Tensor<B, D, Int>> {
        self.int_as(name, &self.shape_of(name)?)
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        let stored = self.get(name).ok_or_else(|| Error::NotLoaded {
            tensor: name.into(),
        })?;
        Ok(stored.shape().to_vec())
    }

    fn wrong(&self, name: &str, rank: usize, kind: &'static str) -> Error {
        let shape = self
            .get(name)
            .map(|s| s.shape().to_vec())
            .unwrap_or_default();
        Error::WrongKind {
            tensor: name.into(),
            shape,
            rank,
            kind,
        }
    }

    /// The floating tensor `name` as rank `D` with `dims` (which may add or drop size-1
    /// dimensions): the stored tensor itself when the shapes agree, else reshaped (a copy on
    /// burn-ndarray); a disk tensor is read in onto the host device.
    pub fn float_as<const D: usize>(&self, name: &str, dims: &[usize]) -> Result<Tensor<B, D>> {
        let stored = self.get(name).ok_or_else(|| Error::NotLoaded {
            tensor: name.into(),
        })?;
        let wrong = || self.wrong(name, D, "float");
        if dims.len() != D
            || dims.iter().product::<usize>() != stored.shape().iter().product::<usize>()
        {
            return Err(wrong());
        }
        match stored {
            StoredTensor::Float { tensor, shape } if shape.as_slice() == dims => {
                Ok(Tensor::from_primitive(tensor.clone()))
            }
            StoredTensor::Float {
                tensor: TensorPrimitive::Float(p),
                ..
            } => Ok(Tensor::from_primitive(TensorPrimitive::Float(
                B::float_reshape(p.clone(), Shape::from(dims.to_vec())),
            ))),
            StoredTensor::Disk(d) => {
                let bytes = self.read_disk(name, d)?;
                if let [rows, cols] = dims[..]
                    && d.shape.as_slice() == dims
                    && self.transposed.contains(name)
                {
                    let values = convert::to_f32_transposed(d.dtype, &bytes, rows, cols)
                        .ok_or_else(wrong)?;
                    let data = TensorData::new(values, [cols, rows]);
                    let t = B::float_swap_dims(B::float_from_data(data, &self.host), 0, 1);
                    return Ok(Tensor::from_primitive(TensorPrimitive::Float(t)));
                }
                let values = convert::to_f32(d.dtype, &bytes).ok_or_else(wrong)?;
                Ok(Tensor::from_data(
                    TensorData::new(values, dims.to_vec()),
                    &self.host,
                ))
            }
            _ => Err(wrong()),
        }
    }

    /// [`TensorStore::float_as`] for integer tensors.
    pub fn int_as<const D: usize>(&self, name: &str, dims: &[usize]) -> Result<Tensor<B, D, Int>> {
        let stored = self.get(name).ok_or_else(|| Error::NotLoaded {
            tensor: name.into(),
        })?;
        let wrong = || self.wrong(name, D, "int");
        if dims.len() != D
            || dims.iter().product::<usize>() != stored.shape().iter().product::<usize>()
        {
            return Err(wrong());
        }
        match stored {
            StoredTensor::Int { tensor, shape } if shape.as_slice() == dims => {
                Ok(Tensor::from_primitive(tensor.clone()))
            }
            StoredTensor::Int { tensor, .. } => Ok(Tensor::from_primitive(B::int_reshape(
                tensor.clone(),
                Shape::from(dims.to_vec()),
            ))),
            StoredTensor::Disk(d) => {
                let values =
                    convert::to_i64(d.dtype, &self.read_disk(name, d)?).ok_or_else(wrong)?;
                Ok(Tensor::from_data(
                    TensorData::new(values, dims.to_vec()),
                    &self.host,
                ))
            }
            _ => Err(wrong()),
        }
    }

    /// [`TensorStore::float_as`] for boolean tensors.
    pub fn bool_as<const D: usize>(
        &self,
        name: &str,
        dims: &[usize],
    ) -> Result<Tensor<B, D, Bool>> {
        let stored = self.get(name).ok_or_else(|| Error::NotLoaded {
            tensor: name.into(),
        })?;
        let wrong = || self.wrong(name, D, "bool");
        if dims.len() != D
            || dims.iter().product::<usize>() != stored.shape().iter().product::<usize>()
        {
            return Err(wrong());
        }
        match stored {
            StoredTensor::Bool { tensor, shape } if shape.as_slice() == dims => {
                Ok(Tensor::from_primitive(tensor.clone()))
            }
            StoredTensor::Bool { tensor, .. } => Ok(Tensor::from_primitive(B::bool_reshape(
                tensor.clone(),
                Shape::from(dims.to_vec()),
            ))),
            StoredTensor::Disk(d) => {
                let values = convert::to_bool(&self.read_disk(name, d)?);
                Ok(Tensor::from_data(
                    TensorData::new(values, dims.to_vec()),
                    &self.host,
                ))
            }
            _ => Err(wrong()),
        }
    }
}
