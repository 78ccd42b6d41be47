//! `--backend`: which burn backend a command loads onto ([`stowage::choose_backend`]).

use clap::ValueEnum;
use stowage::BackendChoice;

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

impl From<BackendArg> for BackendChoice {
    fn from(a: BackendArg) -> Self {
        match a {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
            BackendArg::Wgpu => BackendChoice::Wgpu,
        }
    }
}
