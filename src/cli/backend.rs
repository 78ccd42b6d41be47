//! `--backend`: which burn backend a command loads onto.

use clap::ValueEnum;
use stowage::{Device, Plan};

/// The burn backend to load onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// CUDA if built with it and the driver sees a GPU, else wgpu if built with it, else the
    /// CPU; only when the plan uses a GPU
    Auto,
    /// burn-ndarray on the CPU (a plan that uses a GPU is refused)
    Cpu,
    /// NVIDIA GPUs through burn-cuda (build with `--features cuda`)
    Cuda,
    /// GPUs through wgpu: GPU 0 is the default adapter, GPU 1 the CPU adapter (build with
    /// `--features wgpu`)
    Wgpu,
}

/// What `--backend` resolved to for a plan.
pub enum Chosen {
    /// burn-ndarray only.
    Cpu,
    /// burn's Dispatch backend over the CPU and these GPUs.
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    Gpu(stowage::Targets<stowage::GpuBackend>),
}

/// How many GPUs `plan` uses (highest index + 1).
fn gpus_used(plan: &Plan) -> usize {
    plan.tensor_devices
        .iter()
        .filter_map(|d| match d {
            Device::Gpu(i) => Some(*i as usize + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Resolves `arg` for `plan`.
pub fn choose(arg: BackendArg, plan: &Plan) -> anyhow::Result<Chosen> {
    let gpus = gpus_used(plan);
    let not_built = |feature: &str| {
        anyhow::anyhow!(
            "`--backend {feature}`: stowage was built without the `{feature}` feature; rebuild with `--features {feature}`"
        )
    };
    match arg {
        BackendArg::Cpu => Ok(Chosen::Cpu),
        BackendArg::Auto if gpus == 0 => Ok(Chosen::Cpu),
        BackendArg::Cuda => {
            #[cfg(feature = "cuda")]
            return Ok(Chosen::Gpu(stowage::Targets::cuda()?));
            #[cfg(not(feature = "cuda"))]
            Err(not_built("cuda"))
        }
        BackendArg::Wgpu => {
            #[cfg(feature = "wgpu")]
            return Ok(Chosen::Gpu(stowage::Targets::wgpu_first(gpus)?));
            #[cfg(not(feature = "wgpu"))]
            Err(not_built("wgpu"))
        }
        BackendArg::Auto => {
            #[cfg(feature = "cuda")]
            if let Ok(targets) = stowage::Targets::cuda() {
                return Ok(Chosen::Gpu(targets));
            }
            #[cfg(feature = "wgpu")]
            return Ok(Chosen::Gpu(stowage::Targets::wgpu_first(gpus)?));
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = not_built;
                Ok(Chosen::Cpu)
            }
        }
    }
}
