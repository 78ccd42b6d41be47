//! The one error type of the `stowage` crate: the planner's errors, and what can go wrong
//! while loading. Every variant names the file, and the tensor where there is one.

use std::path::PathBuf;

/// What can go wrong while planning or loading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Taking the inventory, reading budgets or placing failed.
    #[error(transparent)]
    Plan(#[from] stowage_planner::Error),

    /// A file could not be opened, mapped, read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What stowage was doing (`map`, `write`, `rename`, …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A tensor's dtype cannot be loaded on the backend it was placed on.
    #[error("`{path}`: tensor `{tensor}` is {dtype}, which stowage cannot load yet")]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: stowage_planner::DType,
    },

    /// The plan puts tensors on a GPU but this build has no GPU backend.
    #[error(
        "the plan puts `{tensor}` on GPU {index}, but the backend loaded onto has no GPU: build with `--features cuda` (NVIDIA) or `--features wgpu` and load onto a GPU backend (`--backend auto`), or plan without GPUs (`--max-memory {index}=0`)"
    )]
    GpuNotCompiled {
        /// The first tensor placed on a GPU.
        tensor: String,
        /// The GPU.
        index: u32,
    },

    /// The plan uses a GPU index that has no device here.
    #[error(
        "the plan uses GPU {index}, but {backend} has {available} GPU(s) here; plan for the GPUs present (`--gpus`, `--max-memory {index}=0`)"
    )]
    NoSuchGpu {
        /// The GPU index of the plan.
        index: u32,
        /// How many GPUs the backend has.
        available: usize,
        /// The backend.
        backend: &'static str,
    },

    /// CUDA was asked for, and no NVIDIA GPU can be used.
    #[error("no CUDA device: {reason}")]
    NoCuda {
        /// What NVML said.
        reason: String,
    },

    /// A GPU cannot hold tensors of the dtype the plan gives them.
    #[error(
        "`{path}`: tensor `{tensor}` is planned as {dtype} on GPU {index}, which that device cannot hold; plan with a dtype it holds (`--dtype f16`, or `f32` for an f32 checkpoint; `--gpu-float f32` widens a bf16 or f16 checkpoint on the device), or without that GPU"
    )]
    GpuDType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The GPU.
        index: u32,
        /// The dtype planned.
        dtype: stowage_planner::DType,
    },

    /// A tensor is larger than the largest single allocation its GPU's runtime makes (wgpu
    /// limits a buffer to what the adapter can bind: 128 MiB to a few GiB).
    #[error(
        "`{path}`: tensor `{tensor}` takes {bytes} bytes on GPU {index}, more than the {max} bytes that device can allocate at once; place it elsewhere (`--device-map '{{\"{tensor}\": \"cpu\", ...}}'`, a smaller GPU budget) or load with CUDA"
    )]
    TooLargeForGpu {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The GPU.
        index: u32,
        /// Bytes it would take there.
        bytes: u64,
        /// The largest allocation the device makes.
        max: u64,
    },

    /// A kernel run on a GPU while loading a tensor failed (widening or checksumming it).
    #[error("`{path}`: tensor `{tensor}`: {what} it on GPU {index} failed: {source}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The GPU.
        index: u32,
        /// What was being done (`widening`, `checksumming`).
        what: &'static str,
        /// What the kernel launcher said.
        source: Box<crate::cube::KernelError>,
    },

    /// `verify`: a tensor on a GPU does not hold what the file says it must.
    #[error(
        "`{path}`: tensor `{tensor}` on GPU {index} does not hold the file's values: its checksum on the device is {device:#018x}, the file's {host:#018x}; the load is not bit-exact"
    )]
    VerifyMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The GPU.
        index: u32,
        /// The checksum taken on the device.
        device: u64,
        /// The same checksum of the file's values, taken on the host.
        host: u64,
    },

    /// `verify` asked of a backend that cannot checksum a tensor on its device.
    #[error(
        "`{path}`: tensor `{tensor}` on GPU {index} cannot be verified: this backend takes no checksum on its devices; load onto stowage's GPU backend (`--features wgpu` or `cuda`), or without --verify"
    )]
    VerifyUnsupported {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The GPU.
        index: u32,
    },

    /// The offload folder cannot be used.
    #[error("offload folder `{path}`: {reason}")]
    OffloadFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong, with a hint.
        reason: String,
    },

    /// `verify`: an offloaded tensor read at run time does not hold the bytes written for it.
    #[error(
        "`{path}`: offloaded tensor `{tensor}` fails its checksum (xxh3-64 {got}, {expected} when written); the offload folder changed after this load checked it: load again, which rewrites the tensor"
    )]
    OffloadCorrupt {
        /// The offload data file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The hash recorded when it was written.
        expected: String,
        /// The hash of what was read.
        got: String,
    },

    /// The plan does not belong to this inventory.
    #[error("the plan does not match the model: {reason}; plan this model again")]
    PlanMismatch {
        /// What differs.
        reason: String,
    },

    /// A model parameter has no tensor in the checkpoint.
    #[error(
        "the model's parameter `{param}` has no tensor `{tensor}` in {files}; add a rename (ModuleLoadOptions::renames) or allow it (ModuleLoadOptions::allow_missing)"
    )]
    MissingTensor {
        /// The parameter's path in the model.
        param: String,
        /// The checkpoint name it maps to (after renames).
        tensor: String,
        /// The checkpoint files looked in.
        files: String,
    },

    /// A checkpoint tensor's shape does not fit the model parameter it maps to.
    #[error("{0}")]
    ShapeMismatch(Box<ShapeMismatch>),

    /// A checkpoint tensor's element kind does not fit the parameter (float vs integer).
    #[error(
        "the model's parameter `{param}` is a {kind} tensor but {file} stores `{tensor}` as {dtype}"
    )]
    KindMismatch {
        /// The parameter.
        param: String,
        /// `float`, `int` or `bool`.
        kind: &'static str,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: stowage_planner::DType,
        /// Its file.
        file: String,
    },

    /// A tensor asked of a [`crate::TensorStore`] has another rank or kind.
    #[error("tensor `{tensor}` has shape {shape:?}, not a rank-{rank} {kind} tensor")]
    WrongKind {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The rank asked for.
        rank: usize,
        /// `float`, `int` or `bool`.
        kind: &'static str,
    },

    /// A tensor asked of a [`crate::TensorStore`] is not in it.
    #[error("tensor `{tensor}` is not in the store")]
    NotLoaded {
        /// The tensor.
        tensor: String,
    },

    /// An option given to [`crate::Pretrained`] cannot be used: a device map that is not valid
    /// JSON, options that contradict each other, a saved plan that lacks a field, a model
    /// without the config or architecture a call needs.
    #[error("{what}")]
    Options {
        /// What is wrong, naming the option or file.
        what: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The planner found no placement for the model.
    #[error("cannot place `{spec}`")]
    Place {
        /// The model, as named.
        spec: String,
        /// Why.
        #[source]
        source: Box<stowage_planner::Error>,
    },
}

/// The facts of [`Error::ShapeMismatch`].
#[derive(Debug)]
pub struct ShapeMismatch {
    /// The tensor.
    pub tensor: String,
    /// Its file.
    pub file: String,
    /// The parameter.
    pub param: String,
    /// The shape the parameter needs (checkpoint layout).
    pub expected: Vec<u64>,
    /// The tensor's shape.
    pub got: Vec<u64>,
    /// A hint, starting with a space, or empty.
    pub hint: String,
}

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tensor `{}` in {} has shape {:?} but the model's parameter `{}` needs {:?}{}; set \
             ModuleLoadOptions::ignore_mismatched_sizes to keep the parameter's own init",
            self.tensor, self.file, self.got, self.param, self.expected, self.hint
        )
    }
}

impl Error {
    /// An [`Error::Options`] with no underlying error.
    pub(crate) fn options(what: impl Into<String>) -> Self {
        Error::Options {
            what: what.into(),
            source: None,
        }
    }

    /// An [`Error::Options`] caused by `source`.
    pub(crate) fn options_from(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Options {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The `stowage` result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
