//! Loading a planned checkpoint into burn tensors, tensor by tensor, shard by shard.
//!
//! Each tensor goes from the memory-mapped file straight to its device: zero-copy when the
//! CPU backend stores it as is (f32), converted in parallel otherwise (bf16/f16 → f32), and the
//! file pages are released once consumed, so the host holds what is placed on the CPU plus the
//! tensor in flight. Disk-placed tensors are not copied when the checkpoint already has the
//! dtype asked for: the store records their byte range and reads them in when used; the others
//! are converted once into the offload folder ([`crate::offload`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::quantization::QuantScheme;
use burn::tensor::{AllocationProperty, Bytes, TensorData, TensorPrimitive};
use stowage_planner::{DType, Device, Inventory, Plan, Quantize, TensorInfo, TensorSource};

use crate::backend::Targets;
use crate::convert;
use crate::cube::{self, Expected, Site, Transforms};
use crate::error::{Error, Result};
use crate::memory;
use crate::mmap::MappedFile;
use crate::offload::{self, OffloadTensor};
use crate::quantized::{self, Held, QuantizedParam, QuantizedWeight};
use crate::report::{Checksum, DeviceLoad, LoadReport, OffloadSummary};
use crate::store::{DiskTensor, StoredTensor, TensorStore};

/// Called with `(bytes done, bytes in all)` after each tensor.
pub type Progress = dyn Fn(u64, u64) + Send + Sync;

/// How to load.
pub struct LoadOptions {
    /// Where tensors that must be converted for disk are written.
    pub offload_folder: PathBuf,
    /// Compute per-tensor checksums (f64 sums of the loaded values).
    pub checksums: bool,
    /// Prove every tensor loaded onto a GPU bit-exact: its checksum, taken on the device, must
    /// equal the same checksum of the values the file says it holds, taken on the host (see
    /// [`DeviceTransforms`](crate::DeviceTransforms) for what is summed); a difference is an
    /// error naming the tensor and its file. Needs targets with device transforms
    /// ([`Targets::with_device_transforms`]; `GpuBackend`'s GPU targets have them). Also
    /// checks each tensor of the offload folder against the checksum written with it whenever
    /// it is read in at run time ([`Error::OffloadCorrupt`](crate::Error::OffloadCorrupt)).
    pub verify: bool,
    /// Progress callback.
    pub progress: Option<Box<Progress>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            offload_folder: std::env::temp_dir().join("stowage-offload"),
            checksums: false,
            verify: false,
            progress: None,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("offload_folder", &self.offload_folder)
            .field("checksums", &self.checksums)
            .field("verify", &self.verify)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Bytes a tensor takes once loaded on `device` (the CPU backend stores floats as f32 and
/// integers as i64).
fn loaded_bytes(t: &TensorInfo, device: Device, disk_dtype: DType) -> u64 {
    let elems = t.elems();
    match device {
        Device::Disk => disk_dtype.bytes_for(elems).unwrap_or(0),
        _ if t.dtype.is_float() => elems * 4,
        _ if t.dtype == DType::BOOL => elems,
        _ => elems * 8,
    }
}

/// How the CPU holds a float tensor that [`crate::load`] puts in a parameter.
///
/// burn-ndarray 0.21 copies a tensor held over borrowed bytes (the zero-copy mapped pages) into
/// fresh memory at every operation, and re-lays out a transposed view (burn's `[in, out]`
/// `Linear` weight over PyTorch's `[out, in]`) at every matmul, so weights the model computes
/// with are given their own row-major memory once, at load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum HostLayout {
    /// As [`load_store`] holds it: an aligned f32 tensor stays the mapped pages (zero copy).
    #[default]
    AsStored,
    /// In its own memory, row-major, the file's pages released once copied.
    Owned,
    /// A matrix in its own memory as its transpose (`[cols, rows]`, row-major), held as a
    /// transposed view with the checkpoint's shape: a parameter that transposes it again (a
    /// `Linear` weight) is then row-major.
    Transposed,
}

impl HostLayout {
    /// The layout for a tensor two parameters (tied) want differently: its own memory.
    pub(crate) fn join(self, other: HostLayout) -> HostLayout {
        if self == other {
            self
        } else {
            HostLayout::Owned
        }
    }
}

/// Loads every tensor of `inventory` where `plan` puts it, onto the CPU backend `B` at
/// `host` (GPUs need the `cuda` feature, not yet in this build).
///
/// ```
/// use burn_ndarray::{NdArray, NdArrayDevice};
/// use stowage::{Budgets, Inventory, InventoryOptions, LoadOptions, PlanOptions};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("model.safetensors");
/// # let json = br#"{"layers.0.w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
/// # let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
/// # bytes.extend_from_slice(json);
/// # bytes.extend_from_slice(&[0x80, 0x3f, 0, 0x40, 0, 0, 0x80, 0xbf]); // 1, 2, 0, -1 in bf16
/// # std::fs::write(&path, bytes).unwrap();
/// let inventory = Inventory::from_spec(path.to_str().unwrap(), &InventoryOptions::default())?;
/// let budgets = Budgets { gpus: vec![], cpu_bytes: 1 << 20, disk_bytes: 1 << 20 };
/// let plan = stowage::plan(&inventory, &budgets, &PlanOptions::default())?;
/// let (store, report) =
///     stowage::load_store::<NdArray>(&inventory, &plan, &NdArrayDevice::Cpu, &LoadOptions::default())?;
/// let w = store.float::<2>("layers.0.w")?;
/// assert_eq!(w.into_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 0.0, -1.0]);
/// assert_eq!(report.loaded, 1);
/// # Ok::<(), stowage::Error>(())
/// ```
pub fn load_store<B: Backend>(
    inventory: &Inventory,
    plan: &Plan,
    targets: impl Into<Targets<B>>,
    opts: &LoadOptions,
) -> Result<(TensorStore<B>, LoadReport)> {
    load_store_as(inventory, plan, targets, opts, &HashMap::new(), None)
}

/// [`load_store`], with the CPU's float tensors named in `layouts` held as said there (the
/// others as [`HostLayout::AsStored`]). Tensors on a GPU or left on disk are as
/// [`load_store`] gives them; a disk tensor is read in as its layout says. With `subset`
/// (indices into the inventory, each tied tensor's owner among them), only those tensors are
/// checked and loaded: a module's or a block's, without cutting the inventory down.
pub(crate) fn load_store_as<B: Backend>(
    inventory: &Inventory,
    plan: &Plan,
    targets: impl Into<Targets<B>>,
    opts: &LoadOptions,
    layouts: &HashMap<String, HostLayout>,
    subset: Option<&[usize]>,
) -> Result<(TensorStore<B>, LoadReport)> {
    if plan.tensor_devices.len() != inventory.tensors.len() {
        return Err(Error::PlanMismatch {
            reason: format!(
                "the plan places {} tensors, the model has {}",
                plan.tensor_devices.len(),
                inventory.tensors.len()
            ),
        });
    }
    for f in &inventory.fingerprints {
        f.check()?;
    }
    let started = Instant::now();
    memory::reset_peak();

    // Every GPU the plan uses must have a device here, able to hold the dtypes planned for
    // it: fail before reading anything.
    let targets = targets.into();
    let all: Vec<usize>;
    let subset: &[usize] = match subset {
        Some(s) => s,
        None => {
            all = (0..inventory.tensors.len()).collect();
            &all
        }
    };
    check_gpus(inventory, plan, &targets, subset)?;

    let mut files: HashMap<PathBuf, MappedFile> = HashMap::new();
    let mut map = |path: &Path| -> Result<MappedFile> {
        if let Some(f) = files.get(path) {
            return Ok(f.clone());
        }
        let f = MappedFile::open(path)?;
        files.insert(path.to_path_buf(), f.clone());
        Ok(f)
    };

    let total: u64 = subset
        .iter()
        .map(|&i| &inventory.tensors[i])
        .filter(|t| t.tied_to.is_none())
        .map(|t| t.stored_bytes())
        .sum();
    let mut done = 0u64;
    let host = &targets.cpu;
    let mut store = TensorStore::new(host.clone());
    store.transposed = layouts
        .iter()
        .filter(|(_, l)| **l == HostLayout::Transposed)
        .map(|(n, _)| n.clone())
        .collect();
    let mut report = LoadReport {
        loaded: 0,
        tied: Vec::new(),
        disk_in_place: 0,
        offload: None,
        devices: Vec::new(),
        bytes_read: 0,
        seconds: 0.0,
        memory: memory::Memory::default(),
        checksums: Vec::new(),
        widened_on_device: 0,
        verified: 0,
        quantized: Vec::new(),
    };
    let mut actual: HashMap<Device, u64> = HashMap::new();
    let mut to_offload: Vec<(usize, OffloadTensor)> = Vec::new();
    let mut slots: Vec<Option<(Device, StoredTensor<B>)>> = vec![None; inventory.tensors.len()];

    let tie_owners: std::collections::HashSet<usize> = subset
        .iter()
        .filter_map(|&i| inventory.find(inventory.tensors[i].tied_to.as_deref()?))
        .collect();

    // Shard by shard, each in offset order: the mapping is read front to back.
    let mut order: Vec<usize> = subset.to_vec();
    let key = |i: &usize| match &inventory.tensors[*i].source {
        TensorSource::File { path, start, .. } => (Some(path.clone()), *start),
        TensorSource::Config => (None, 0),
    };
    order.sort_by_key(key);

    for i in order {
        let t = &inventory.tensors[i];
        if t.tied_to.is_some() {
            continue;
        }
        let device = plan.tensor_devices[i];
        let TensorSource::File {
            path,
            start,
            end,
            strides,
        } = &t.source
        else {
            return Err(Error::PlanMismatch {
                reason: format!(
                    "tensor `{}` comes from a config, not a checkpoint: there are no weights to load",
                    t.name
                ),
            });
        };
        let file = map(path)?;
        if *end as usize > file.len() {
            return Err(Error::Plan(stowage_planner::Error::FileChanged {
                path: path.clone(),
                then: (*end, 0),
                now: (file.len() as u64, 0),
            }));
        }
        // A strided view (a PyTorch tensor saved without `.contiguous()`) is gathered in
        // row-major order into a buffer of its own, which stands in for the file from here on.
        let mapped = file.clone();
        let (file, start, end) = match strides {
            // Disk-bound views are gathered when the folder is written, one at a time.
            Some(_) if device != Device::Disk => {
                let bytes = t.contiguous(file.slice(*start, *end)).into_owned();
                file.release(*start, *end);
                let len = bytes.len() as u64;
                (MappedFile::in_memory(path, bytes), 0, len)
            }
            _ => (file, *start, *end),
        };
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let unsupported = || Error::UnsupportedDType {
            path: path.clone(),
            tensor: t.name.clone(),
            dtype: t.dtype,
        };
        // What the plan holds it in (f32 for a module the architecture keeps in f32).
        let disk_dtype = inventory.dtype_of(t, plan.dtype);
        let stored = match device {
            Device::Gpu(index) => {
                let gpu = targets.device(device).expect("checked by check_gpus");
                let Uploaded {
                    stored,
                    sums,
                    held,
                    widened,
                    quantized,
                } = upload(
                    t,
                    path,
                    (&file, start, end),
                    (plan, disk_dtype),
                    (index, gpu),
                    (opts, &targets.transforms),
                )?;
                *actual.entry(device).or_default() += held;
                report.widened_on_device += usize::from(widened);
                report.verified += usize::from(opts.verify);
                report.quantized.extend(quantized);
                file.release(start, end);
                if let Some((sum, abs_sum)) = sums {
                    report.checksums.push((
                        t.name.clone(),
                        Checksum {
                            device,
                            shape: shape.clone(),
                            sum,
                            abs_sum,
                        },
                    ));
                }
                report.bytes_read += end - start;
                slots[i] = Some((device, stored));
                done += end - start;
                if let Some(p) = &opts.progress {
                    p(done, total);
                }
                continue;
            }
            // Served from the checkpoint itself when the folder would hold the same bytes.
            Device::Disk if disk_dtype == t.dtype && t.is_contiguous() => {
                report.disk_in_place += 1;
                StoredTensor::Disk(DiskTensor {
                    path: path.clone(),
                    start,
                    end,
                    dtype: t.dtype,
                    shape: shape.clone(),
                })
            }
            Device::Disk => {
                to_offload.push((
                    i,
                    OffloadTensor {
                        name: t.name.clone(),
                        file: mapped,
                        start,
                        end,
                        strides: strides.clone(),
                        stored: t.dtype,
                        target: disk_dtype,
                        shape: shape.clone(),
                    },
                ));
                done += t.stored_bytes();
                report.bytes_read += end - start;
                if let Some(p) = &opts.progress {
                    p(done, total);
                }
                continue;
            }
            Device::Cpu => {
                let bytes = file.slice(start, end);
                if t.dtype.is_float() {
                    let aligned = (bytes.as_ptr() as usize).is_multiple_of(4);
                    let layout = layouts.get(&t.name).copied().unwrap_or_default();
                    let transposed = match shape[..] {
                        [rows, cols] if layout == HostLayout::Transposed => Some((rows, cols)),
                        _ => None,
                    };
                    // Tie owners get their own memory: a tied user (a head seen transposed)
                    // then shares it as a view, where over mapped pages it would copy.
                    let (tensor, sums) = if let Some((rows, cols)) = transposed {
                        // Checksums in the file's order, as every other path takes them.
                        let sums = match opts.checksums {
                            true => Some(convert::sums_f32(
                                &convert::to_f32(t.dtype, bytes).ok_or_else(unsupported)?,
                            )),
                            false => None,
                        };
                        let values = convert::to_f32_transposed(t.dtype, bytes, rows, cols)
                            .ok_or_else(unsupported)?;
                        file.release(start, end);
                        let data = TensorData::new(values, [cols, rows]);
                        (
                            B::float_swap_dims(B::float_from_data(data, host), 0, 1),
                            sums,
                        )
                    } else if t.dtype == DType::F32
                        && aligned
                        && !tie_owners.contains(&i)
                        && layout == HostLayout::AsStored
                    {
                        // Zero copy: burn-ndarray keeps the mapped pages as its storage.
                        let data = TensorData::from_bytes(
                            Bytes::from_shared(file.shared(start, end), AllocationProperty::File),
                            shape.clone(),
                            burn::tensor::DType::F32,
                        );
                        let sums = opts.checksums.then(|| {
                            convert::sums_f32(&convert::to_f32(DType::F32, bytes).expect("f32"))
                        });
                        (B::float_from_data(data, host), sums)
                    } else {
                        let values = convert::to_f32(t.dtype, bytes).ok_or_else(unsupported)?;
                        file.release(start, end);
                        let sums = opts.checksums.then(|| convert::sums_f32(&values));
                        (
                            B::float_from_data(TensorData::new(values, shape.clone()), host),
                            sums,
                        )
                    };
                    if let Some((sum, abs_sum)) = sums {
                        report.checksums.push((
                            t.name.clone(),
                            Checksum {
                                device,
                                shape: shape.clone(),
                                sum,
                                abs_sum,
                            },
                        ));
                    }
                    StoredTensor::Float {
                        tensor: TensorPrimitive::Float(tensor),
                        shape: shape.clone(),
                    }
                } else if t.dtype == DType::BOOL {
                    let values = convert::to_bool(bytes);
                    StoredTensor::Bool {
                        tensor: B::bool_from_data(TensorData::new(values, shape.clone()), host),
                        shape: shape.clone(),
                    }
                } else {
                    let values = convert::to_i64(t.dtype, bytes).ok_or_else(unsupported)?;
                    if opts.checksums {
                        let (sum, abs_sum) = convert::sums_i64(&values);
                        report.checksums.push((
                            t.name.clone(),
                            Checksum {
                                device,
                                shape: shape.clone(),
                                sum,
                                abs_sum,
                            },
                        ));
                    }
                    StoredTensor::Int {
                        tensor: B::int_from_data(TensorData::new(values, shape.clone()), host),
                        shape: shape.clone(),
                    }
                }
            }
        };
        *actual.entry(device).or_default() += loaded_bytes(t, device, disk_dtype);
        if device != Device::Disk {
            report.bytes_read += end - start;
        }
        slots[i] = Some((device, stored));
        done += end - start;
        if let Some(p) = &opts.progress {
            p(done, total);
        }
    }

    if !to_offload.is_empty() {
        let tensors: Vec<OffloadTensor> = to_offload.iter().map(|(_, t)| t.clone()).collect();
        let done_offload =
            offload::prepare(&opts.offload_folder, &inventory.fingerprints, &tensors)?;
        for (((i, t), (_, disk)), hash) in to_offload
            .iter()
            .zip(done_offload.tensors)
            .zip(&done_offload.hashes)
        {
            *actual.entry(Device::Disk).or_default() += disk.end - disk.start;
            let _ = t;
            if opts.verify {
                store
                    .offload_hashes
                    .insert((disk.path.clone(), disk.start), *hash);
            }
            slots[*i] = Some((Device::Disk, StoredTensor::Disk(disk)));
        }
        report.offload = Some(OffloadSummary {
            folder: opts.offload_folder.clone(),
            tensors: tensors.len(),
            written_bytes: done_offload.written_bytes,
            reused: done_offload.reused,
            repaired: done_offload.repaired,
            removed_leftovers: done_offload.removed_leftovers,
        });
    }

    // Disk tensors' checksums are taken from the bytes they will be read from.
    if opts.checksums {
        for (i, slot) in slots.iter().enumerate() {
            if let Some((device, StoredTensor::Disk(d))) = slot {
                let bytes = d.read()?;
                let (sum, abs_sum) = match convert::to_f32(d.dtype, &bytes) {
                    Some(v) => convert::sums_f32(&v),
                    None => convert::to_i64(d.dtype, &bytes)
                        .map(|v| convert::sums_i64(&v))
                        .unwrap_or_default(),
                };
                report.checksums.push((
                    inventory.tensors[i].name.clone(),
                    Checksum {
                        device: *device,
                        shape: d.shape.clone(),
                        sum,
                        abs_sum,
                    },
                ));
            }
        }
    }

    // Tied tensors share their owner's storage.
    for &i in subset {
        let t = &inventory.tensors[i];
        if let Some(owner) = t.tied_to.as_deref() {
            let o = inventory.find(owner).ok_or_else(|| Error::PlanMismatch {
                reason: format!("`{}` is tied to `{owner}`, which the model lacks", t.name),
            })?;
            slots[i] = slots[o].clone();
            report.tied.push((t.name.clone(), owner.to_string()));
        }
    }
    for (i, slot) in slots.into_iter().enumerate() {
        if let Some((device, stored)) = slot {
            store.insert(inventory.tensors[i].name.clone(), device, stored);
            report.loaded += 1;
        }
    }
    report.checksums.sort_by(|a, b| a.0.cmp(&b.0));
    report.devices = plan
        .devices
        .iter()
        .map(|d| DeviceLoad {
            device: d.device,
            planned_bytes: d.used_bytes,
            actual_bytes: actual.get(&d.device).copied().unwrap_or(0),
        })
        .collect();
    report.seconds = started.elapsed().as_secs_f64();
    report.memory = memory::current();
    Ok((store, report))
}

/// The burn dtype of a checkpoint dtype, where burn has one.
pub(crate) fn burn_dtype(dtype: DType) -> Option<burn::tensor::DType> {
    use burn::tensor::DType as B;
    Some(match dtype {
        DType::F64 => B::F64,
        DType::F32 => B::F32,
        DType::F16 => B::F16,
        DType::BF16 => B::BF16,
        DType::I64 => B::I64,
        DType::I32 => B::I32,
        DType::I16 => B::I16,
        DType::I8 => B::I8,
        DType::U64 => B::U64,
        DType::U32 => B::U32,
        DType::U16 => B::U16,
        DType::U8 => B::U8,
        _ => return None,
    })
}

/// The dtype a tensor has on a GPU: floats as planned (the plan's GPU float dtype when it has
/// one), integers as stored when the device holds them, else as i32.
fn gpu_dtype<B: Backend>(t: &TensorInfo, float: DType, plan: &Plan, gpu: &B::Device) -> DType {
    if t.dtype.is_float() {
        return plan.options.gpu_float.unwrap_or(float);
    }
    if t.dtype == DType::BOOL {
        return t.dtype;
    }
    match burn_dtype(t.dtype) {
        Some(d) if B::supports_dtype(gpu, d) => t.dtype,
        _ => DType::I32,
    }
}

/// Refuses a plan whose GPUs have no device in `targets`, or cannot hold a dtype planned
/// for them.
fn check_gpus<B: Backend>(
    inventory: &Inventory,
    plan: &Plan,
    targets: &Targets<B>,
    subset: &[usize],
) -> Result<()> {
    let mut seen: std::collections::HashSet<(u32, DType)> = std::collections::HashSet::new();
    for &i in subset {
        let (t, device) = (&inventory.tensors[i], plan.tensor_devices[i]);
        let Device::Gpu(index) = device else { continue };
        if t.tied_to.is_some() {
            continue;
        }
        let quantize = plan.options.quantize_for(t);
        let quantized = quantize.applies_to(t);
        let Some(gpu) = targets.device(device) else {
            if targets.gpus.is_empty() {
                return Err(Error::GpuNotCompiled {
                    tensor: t.name.clone(),
                    index,
                });
            }
            return Err(Error::NoSuchGpu {
                index,
                available: targets.gpus.len(),
                backend: "this backend",
            });
        };
        let path = || match &t.source {
            TensorSource::File { path, .. } => path.clone(),
            TensorSource::Config => PathBuf::new(),
        };
        // One tensor, one allocation: refuse one larger than the device allocates.
        let bytes = if quantized {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            quantize.bytes(rows, cols).unwrap_or(0)
        } else if t.dtype == DType::BOOL {
            t.elems()
        } else {
            gpu_dtype::<B>(t, inventory.dtype_of(t, plan.dtype), plan, gpu)
                .bytes_for(t.elems())
                .unwrap_or(0)
        };
        if let Some(max) = (targets.transforms.max_allocation)(gpu)
            && bytes > max
        {
            return Err(Error::TooLargeForGpu {
                path: path(),
                tensor: t.name.clone(),
                index,
                bytes,
                max,
            });
        }
        // Quantized weights are held as burn's quantized tensors, or dequantized to f32.
        if t.dtype == DType::BOOL || quantized {
            continue;
        }
        let dtype = gpu_dtype::<B>(t, inventory.dtype_of(t, plan.dtype), plan, gpu);
        if !seen.insert((index, dtype)) {
            continue;
        }
        let holds = burn_dtype(dtype).is_some_and(|d| B::supports_dtype(gpu, d));
        if !holds {
            return Err(Error::GpuDType {
                path: path(),
                tensor: t.name.clone(),
                index,
                dtype,
            });
        }
    }
    Ok(())
}

/// A tensor sent to a GPU, and what that took.
struct Uploaded<B: Backend> {
    /// The tensor.
    stored: StoredTensor<B>,
    /// Its checksum if asked (sum, abs sum).
    sums: Option<(f64, f64)>,
    /// The bytes the device now holds.
    held: u64,
    /// Whether it was widened on the device.
    widened: bool,
    /// How it was quantized, if it was.
    quantized: Option<QuantizedParam>,
}

/// Sends one tensor from the mapped file to `gpu`: the file's bytes as they are when the
/// planned dtype is the stored one (no host copy: the device copies from the mapping); bf16
/// or f16 bytes as they are, widened on the device, when the GPU holds them as f32 and the
/// backend can (`transforms`: [`crate::DeviceTransforms::widen_on_device`]); else converted
/// on the host first. With `verify`, the tensor's checksum on the device is compared with the
/// file's.
fn upload<B: Backend>(
    t: &TensorInfo,
    path: &Path,
    (file, start, end): (&MappedFile, u64, u64),
    (plan, float): (&Plan, DType),
    (index, gpu): (u32, &B::Device),
    (opts, transforms): (&LoadOptions, &Transforms<B>),
) -> Result<Uploaded<B>> {
    let bytes = file.slice(start, end);
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let unsupported = || Error::UnsupportedDType {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        dtype: t.dtype,
    };
    let site = Site {
        path,
        tensor: &t.name,
        index,
    };
    let verify = |stored: &StoredTensor<B>, expected: Expected<'_>| {
        if opts.verify {
            cube::verify(stored, expected, site, transforms)
        } else {
            Ok(())
        }
    };
    let target = gpu_dtype::<B>(t, float, plan, gpu);
    let held = target.bytes_for(t.elems()).unwrap_or(0);
    let uploaded = |stored, sums| Uploaded {
        stored,
        sums,
        held,
        widened: false,
        quantized: None,
    };
    if t.dtype == DType::BOOL {
        // One byte or one word per value, as the device stores booleans (GPU backends take no
        // `bool` data).
        let store = burn::tensor::get_device_settings::<B>(gpu).bool_dtype;
        let dtype = burn::tensor::DType::Bool(store);
        let width = dtype.size();
        let mut values = vec![0u8; bytes.len() * width];
        for (v, &b) in values.chunks_exact_mut(width).zip(bytes) {
            v[0] = u8::from(b != 0);
        }
        let data = TensorData::from_bytes_vec(values, shape.clone(), dtype);
        let tensor = B::bool_from_data(data, gpu);
        let stored = StoredTensor::Bool { tensor, shape };
        verify(&stored, Expected::Bools(bytes))?;
        return Ok(uploaded(stored, None));
    }
    let as_is = |dtype| {
        TensorData::from_bytes(
            Bytes::from_shared(file.shared(start, end), AllocationProperty::File),
            shape.clone(),
            dtype,
        )
    };
    let quantize = plan.options.quantize_for(t);
    if quantize.applies_to(t) {
        let data = burn_dtype(t.dtype).map(as_is);
        return upload_quantized(t, bytes, data, (gpu, quantize), (opts, transforms), site);
    }
    if t.dtype.is_float() {
        let burn = burn_dtype(target).ok_or_else(unsupported)?;
        let stored_sums = || {
            opts.checksums
                .then(|| convert::to_f32(t.dtype, bytes).map(|v| convert::sums_f32(&v)))
                .flatten()
        };
        let converted = |to| Expected::Converted {
            bytes,
            from: t.dtype,
            to,
        };
        // Wider on the GPU than in the file: the file's bytes cross the bus, the device widens.
        if target == DType::F32
            && matches!(t.dtype, DType::BF16 | DType::F16)
            && let Some(half) = burn_dtype(t.dtype)
            && let Some(widened) = (transforms.widen)(as_is(half), gpu)
        {
            let tensor = widened.map_err(|e| site.kernel("widening", e))?;
            let stored = StoredTensor::Float {
                tensor: TensorPrimitive::Float(tensor),
                shape,
            };
            verify(&stored, converted(DType::F32))?;
            return Ok(Uploaded {
                widened: true,
                ..uploaded(stored, stored_sums())
            });
        }
        let float = |data| StoredTensor::Float {
            tensor: TensorPrimitive::Float(B::float_from_data(data, gpu)),
            shape: shape.clone(),
        };
        if target == t.dtype {
            let stored = float(as_is(burn));
            verify(&stored, Expected::Bytes(bytes))?;
            return Ok(uploaded(stored, stored_sums()));
        }
        let values = convert::to_f32(t.dtype, bytes).ok_or_else(unsupported)?;
        if target == DType::F32 {
            let sums = opts.checksums.then(|| convert::sums_f32(&values));
            let stored = float(TensorData::new(values, shape.clone()));
            verify(&stored, converted(target))?;
            return Ok(uploaded(stored, sums));
        }
        let narrowed = convert::from_f32(&values, target).ok_or_else(unsupported)?;
        let sums = opts
            .checksums
            .then(|| convert::to_f32(target, &narrowed).map(|v| convert::sums_f32(&v)))
            .flatten();
        let stored = float(TensorData::from_bytes_vec(narrowed, shape.clone(), burn));
        verify(&stored, converted(target))?;
        return Ok(uploaded(stored, sums));
    }
    let values = convert::to_i64(t.dtype, bytes).ok_or_else(unsupported)?;
    let sums = opts.checksums.then(|| convert::sums_i64(&values));
    let data = if target == t.dtype {
        as_is(burn_dtype(target).ok_or_else(unsupported)?)
    } else {
        let narrowed: Vec<i32> = values
            .iter()
            .map(|&v| i32::try_from(v))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::GpuDType {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                index,
                dtype: t.dtype,
            })?;
        TensorData::new(narrowed, shape.clone())
    };
    let tensor = B::int_from_data(data, gpu);
    let stored = StoredTensor::Int { tensor, shape };
    verify(&stored, Expected::Ints(&values))?;
    Ok(uploaded(stored, sums))
}

/// Sends a weight the plan quantizes ([`Quantize::applies_to`]) to `gpu` ([`quantize_for`]).
fn upload_quantized<B: Backend>(
    t: &TensorInfo,
    bytes: &[u8],
    data: Option<TensorData>,
    (gpu, quantize): (&B::Device, Quantize),
    (opts, transforms): (&LoadOptions, &Transforms<B>),
    site: Site<'_>,
) -> Result<Uploaded<B>> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let (rows, cols) = (shape[0], shape[1]);
    let done = quantize_for(
        (bytes, data, t.dtype, rows, cols),
        (gpu, quantize),
        (site, opts.verify),
        transforms,
        opts.checksums,
    )?;
    let quantized = QuantizedParam {
        verified: done.verified,
        ..QuantizedParam::new(
            (t.name.clone(), t.name.clone()),
            quantize,
            (rows, cols),
            done.held.scheme(),
            done.on_device,
        )
    };
    let sums = opts.checksums.then(|| {
        let host = done.host.as_ref().expect("asked for");
        convert::sums_f32(&host.dequantize())
    });
    Ok(Uploaded {
        stored: StoredTensor::Float {
            tensor: done.held.tensor().clone().into_primitive(),
            shape,
        },
        sums,
        held: quantized.bytes,
        widened: false,
        quantized: Some(quantized),
    })
}

/// A weight quantized at load for its device ([`quantize_for`]).
pub(crate) struct QuantizedForDevice<B: Backend> {
    /// The tensor: burn's quantized tensor where the device holds the format, else f32.
    pub held: Held<B>,
    /// Whether the kernels quantized it on the device (else the host did).
    pub on_device: bool,
    /// Whether `verify` proved it on its GPU.
    pub verified: bool,
    /// The host rule's quantization of the file's weight, when it was computed: quantized on
    /// the host, verified, or asked for.
    pub host: Option<QuantizedWeight>,
}

/// A `[rows, cols]` weight, `bytes` as the file stores it (`data`: the same bytes for the
/// device, when it has a burn dtype), quantized to `quantize` for `device`: on the device by
/// the kernels when it holds the format in a scheme they write
/// ([`crate::DeviceTransforms::quantize_on_device`]); else on the host with the same rule and
/// handed to burn, or held dequantized (f32) where the device cannot hold the format at all
/// ([`crate::quantized`] says when). With `verify` (a GPU), the device's checksum of what it
/// holds must equal the host's over the same weight quantized from the file's bytes: the
/// device quantized bit for bit as the host does. `want_host` also keeps the host's weight.
pub(crate) fn quantize_for<B: Backend>(
    (bytes, data, dtype, rows, cols): (&[u8], Option<TensorData>, DType, usize, usize),
    (device, quantize): (&B::Device, Quantize),
    (site, verify): (Site<'_>, bool),
    transforms: &Transforms<B>,
    want_host: bool,
) -> Result<QuantizedForDevice<B>> {
    let unsupported = || Error::UnsupportedDType {
        path: site.path.to_path_buf(),
        tensor: site.tensor.to_string(),
        dtype,
    };
    let on_host = || {
        let values = convert::to_f32(dtype, bytes).ok_or_else(unsupported)?;
        QuantizedWeight::quantize(&values, rows, cols, quantize).ok_or_else(unsupported)
    };
    let check = |held: &Held<B>, weight: &QuantizedWeight| {
        let stored = StoredTensor::Float {
            tensor: held.tensor().clone().into_primitive(),
            shape: vec![rows, cols],
        };
        verify_quantized(&stored, weight, held.scheme(), site, transforms)
    };
    if let Some(scheme) = quantized::holding::<B>(device, quantize, cols)
        && let Some(data) = data
        && let Some(done) = (transforms.quantize)(data, quantize, scheme, device)
    {
        let q = done.map_err(|e| site.kernel("quantizing", e))?;
        let held = Held::Quantized(Tensor::from_primitive(TensorPrimitive::QFloat(q)), scheme);
        let host = (verify || want_host).then(on_host).transpose()?;
        if verify {
            check(&held, host.as_ref().expect("computed to verify"))?;
        }
        return Ok(QuantizedForDevice {
            held,
            on_device: true,
            verified: verify,
            host,
        });
    }
    let weight = on_host()?;
    let held = weight.to_tensor::<B>(device);
    if verify {
        check(&held, &weight)?;
    }
    Ok(QuantizedForDevice {
        held,
        on_device: false,
        verified: verify,
        host: Some(weight),
    })
}

/// `verify` of a weight quantized at load onto a GPU: its checksum on the device (values and
/// scales when held quantized in `scheme`, else its f32 values) must equal the host's over
/// `weight`, the file's weight quantized by the host's rule.
pub(crate) fn verify_quantized<B: Backend>(
    stored: &StoredTensor<B>,
    weight: &QuantizedWeight,
    scheme: Option<QuantScheme>,
    site: Site<'_>,
    transforms: &Transforms<B>,
) -> Result<()> {
    match scheme {
        Some(s) => {
            let block = quantized::burn_block(&s).unwrap_or(1);
            cube::verify(
                stored,
                Expected::Quantized { weight, block },
                site,
                transforms,
            )
        }
        None => {
            let f32s: Vec<u8> = weight
                .dequantize()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            cube::verify(stored, Expected::Bytes(&f32s), site, transforms)
        }
    }
}
