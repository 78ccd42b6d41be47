//! Which burn device each device of a plan becomes.
//!
//! A plan speaks of `cpu`, `disk` and GPUs `0`, `1`, …; a load needs burn devices. [`Targets`]
//! says which: the CPU device, and one device per GPU index. The ways to get one:
//! - CPU only, any build: `Targets::cpu(NdArrayDevice::Cpu)`, or simply `&NdArrayDevice::Cpu`
//!   wherever an `impl Into<Targets<B>>` is asked for. A plan that puts a tensor on a GPU is
//!   then refused before anything is read.
//! - With the `cuda` feature: [`Targets::cuda`], every GPU the NVIDIA driver reports.
//! - With the `wgpu` feature: [`Targets::wgpu`] with wgpu devices of your choice, or
//!   [`Targets::wgpu_first`] for the first one or two wgpu adapters.
//!
//! # One backend for CPU and GPU: burn's `Dispatch`
//!
//! A model split between the CPU and a GPU must still be one burn `Module<B>`, so `B` must
//! have devices of both kinds. burn 0.21 offers two such backends: `burn-router`
//! (`Router<(NdArray, Cuda)>`) and `burn-dispatch` (`Dispatch`, an enum over the backends
//! compiled in). Stowage uses [`GpuBackend`] = `Dispatch` with NdArray for the CPU:
//! - The router finds its per-device clients by device id, and burn-ndarray's CPU device and
//!   CUDA device 0 both have the id `(0, 0)`: whichever is used first would serve both.
//!   Dispatch tags each id with its backend.
//! - Dispatch calls the backend directly: a CPU tensor built from a memory-mapped file is
//!   still the zero-copy NdArray tensor, where the router registers every tensor through its
//!   intermediate representation first.
//! - Moving a tensor between backends goes through host memory (`into_data` then
//!   `from_data`), which is what a CPU ↔ GPU copy costs anyway.

use burn::prelude::Backend;
use stowage_planner::Device;

use crate::cube::{DeviceTransforms, Transforms};

/// The burn devices that a plan's `cpu` and GPU indices become.
#[derive(Clone, Debug)]
pub struct Targets<B: Backend> {
    /// Where `cpu` tensors go, and where disk tensors are read into.
    pub cpu: B::Device,
    /// Where tensors of GPU `i` go: `gpus[i]`. Empty when the backend has no GPU.
    pub gpus: Vec<B::Device>,
    /// What the loader runs on the GPUs' memory: nothing, unless the backend's
    /// [`DeviceTransforms`] were attached ([`Targets::with_device_transforms`], which the
    /// wgpu and CUDA constructors do).
    pub(crate) transforms: Transforms<B>,
}

impl<B: Backend> Targets<B> {
    /// Only a CPU: a plan that uses a GPU is refused.
    pub fn cpu(device: B::Device) -> Self {
        Targets {
            cpu: device,
            gpus: Vec::new(),
            transforms: Transforms::none(),
        }
    }

    /// These targets with `B`'s [`DeviceTransforms`]: the loader then widens bf16 and f16
    /// tensors on the GPUs and takes `verify`'s checksums there (the wgpu and CUDA
    /// constructors of `Targets<GpuBackend>` attach them already).
    pub fn with_device_transforms(mut self) -> Self
    where
        B: DeviceTransforms,
    {
        self.transforms = Transforms::of();
        self
    }

    /// The burn device of a plan's device; `None` for `disk` and for a GPU index with no
    /// device here.
    pub fn device(&self, device: Device) -> Option<&B::Device> {
        match device {
            Device::Cpu => Some(&self.cpu),
            Device::Gpu(i) => self.gpus.get(i as usize),
            Device::Disk => None,
        }
    }
}

impl<B: Backend> From<&B::Device> for Targets<B> {
    fn from(device: &B::Device) -> Self {
        Targets::cpu(device.clone())
    }
}

/// The backend of GPU builds: burn's `Dispatch`, whose devices are the CPU (burn-ndarray)
/// and the GPUs compiled in (module docs say why this one).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub type GpuBackend = burn_dispatch::Dispatch;

/// A device of [`GpuBackend`].
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub use burn_dispatch::DispatchDevice;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
impl Targets<GpuBackend> {
    /// The CPU device of [`GpuBackend`].
    pub fn host() -> DispatchDevice {
        DispatchDevice::NdArray(burn_ndarray::NdArrayDevice::Cpu)
    }
}

#[cfg(feature = "wgpu")]
impl Targets<GpuBackend> {
    /// The CPU, and `devices` as GPUs `0`, `1`, … in that order.
    pub fn wgpu(devices: impl IntoIterator<Item = burn_wgpu::WgpuDevice>) -> Self {
        Targets {
            cpu: Self::host(),
            gpus: devices.into_iter().map(DispatchDevice::Wgpu).collect(),
            transforms: Transforms::none(),
        }
        .with_device_transforms()
    }

    /// The CPU and up to two wgpu devices: GPU `0` is wgpu's default adapter, GPU `1` its
    /// CPU-type adapter. On a machine without a GPU both are Mesa's software Vulkan driver
    /// (lavapipe), yet two devices with their own memory and queues: this is how the GPU
    /// paths are tested without a GPU. Pick devices yourself with [`Targets::wgpu`] for more.
    ///
    /// # Errors
    ///
    /// More than two GPUs asked for.
    pub fn wgpu_first(gpus: usize) -> crate::Result<Self> {
        use burn_wgpu::WgpuDevice;
        let all = [WgpuDevice::DefaultDevice, WgpuDevice::Cpu];
        if gpus > all.len() {
            return Err(crate::Error::NoSuchGpu {
                index: gpus as u32 - 1,
                available: all.len(),
                backend: "wgpu (the default and the CPU adapter)",
            });
        }
        Ok(Self::wgpu(all.into_iter().take(gpus)))
    }
}

#[cfg(feature = "cuda")]
impl Targets<GpuBackend> {
    /// The CPU and every GPU the NVIDIA driver reports, in NVML's order (which is CUDA's
    /// with `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    ///
    /// The driver is asked through NVML first: burn-cuda, used on a machine without a
    /// driver, panics on a background thread instead of returning an error.
    ///
    /// # Errors
    ///
    /// No NVIDIA driver, or no GPU.
    pub fn cuda() -> crate::Result<Self> {
        let probe = stowage_planner::probe(&std::env::temp_dir());
        if probe.gpus.is_empty() {
            return Err(crate::Error::NoCuda {
                reason: probe
                    .gpu_note
                    .unwrap_or_else(|| "the NVIDIA driver reports no GPU".into()),
            });
        }
        Ok(Targets {
            cpu: Self::host(),
            gpus: probe
                .gpus
                .iter()
                .map(|g| DispatchDevice::Cuda(burn_cuda::CudaDevice::new(g.index as usize)))
                .collect(),
            transforms: Transforms::none(),
        }
        .with_device_transforms())
    }
}

/// Which burn backend to load onto: what `stowage load --backend` takes; see
/// [`choose_backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA if built with it and the driver sees a GPU, else wgpu if built with it, else the
    /// CPU; only when the plan uses a GPU.
    #[default]
    Auto,
    /// burn-ndarray on the CPU (a plan that uses a GPU is refused at load).
    Cpu,
    /// NVIDIA GPUs through burn-cuda (the `cuda` feature).
    Cuda,
    /// GPUs through wgpu: GPU 0 is the default adapter, GPU 1 the CPU adapter (the `wgpu`
    /// feature).
    Wgpu,
}

/// What a [`BackendChoice`] resolved to for a plan.
#[derive(Debug)]
pub enum ChosenBackend {
    /// burn-ndarray only.
    Cpu,
    /// burn's Dispatch backend over the CPU and these GPUs.
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    Gpu(Targets<GpuBackend>),
}

/// How many GPUs `plan` uses (highest index + 1).
fn gpus_used(plan: &stowage_planner::Plan) -> usize {
    plan.tensor_devices
        .iter()
        .filter_map(|d| match d {
            stowage_planner::Device::Gpu(i) => Some(*i as usize + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Resolves `choice` for `plan`: [`BackendChoice::Auto`] picks the CPU when the plan uses no
/// GPU, else CUDA where it works, else wgpu, as built.
///
/// # Errors
///
/// A backend this build lacks (naming the feature to build with), no CUDA device, more GPUs
/// than wgpu offers.
pub fn choose_backend(
    choice: BackendChoice,
    plan: &stowage_planner::Plan,
) -> crate::Result<ChosenBackend> {
    let gpus = gpus_used(plan);
    let not_built = |feature: &str| {
        crate::Error::options(format!(
            "`--backend {feature}`: stowage was built without the `{feature}` feature; rebuild with `--features {feature}`"
        ))
    };
    match choice {
        BackendChoice::Cpu => Ok(ChosenBackend::Cpu),
        BackendChoice::Auto if gpus == 0 => Ok(ChosenBackend::Cpu),
        BackendChoice::Cuda => {
            #[cfg(feature = "cuda")]
            return Ok(ChosenBackend::Gpu(Targets::cuda()?));
            #[cfg(not(feature = "cuda"))]
            Err(not_built("cuda"))
        }
        BackendChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(ChosenBackend::Gpu(Targets::wgpu_first(gpus)?));
            #[cfg(not(feature = "wgpu"))]
            Err(not_built("wgpu"))
        }
        BackendChoice::Auto => {
            #[cfg(feature = "cuda")]
            if let Ok(targets) = Targets::cuda() {
                return Ok(ChosenBackend::Gpu(targets));
            }
            #[cfg(feature = "wgpu")]
            return Ok(ChosenBackend::Gpu(Targets::wgpu_first(gpus)?));
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = not_built;
                Ok(ChosenBackend::Cpu)
            }
        }
    }
}
