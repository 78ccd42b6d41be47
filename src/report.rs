//! What a load did: counts, ties, bytes per device (planned and actual), time, memory.

use std::path::PathBuf;

use stowage_planner::Device;

use crate::memory::Memory;

/// Per-tensor checksums, computed in f64 over the loaded values (`--checksums`).
#[derive(Debug, Clone, PartialEq)]
pub struct Checksum {
    /// Where the tensor was loaded.
    pub device: Device,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their absolute values.
    pub abs_sum: f64,
}

/// Bytes on one device: what the plan expected and what the backend holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLoad {
    /// The device.
    pub device: Device,
    /// Bytes of weights the plan put there.
    pub planned_bytes: u64,
    /// Bytes the loaded tensors take there (the CPU backend stores floats as f32).
    pub actual_bytes: u64,
}

/// The offload folder's part in a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadSummary {
    /// The folder.
    pub folder: PathBuf,
    /// Tensors kept there.
    pub tensors: usize,
    /// Bytes written this time (0 when a matching folder was reused).
    pub written_bytes: u64,
    /// Whether a matching folder was reused.
    pub reused: bool,
    /// Tensors of a reused folder whose bytes failed their checksum and were rewritten.
    pub repaired: Vec<String>,
    /// Temp files that killed loads had left in the folder, removed: path and length.
    pub removed_leftovers: Vec<(PathBuf, u64)>,
}

/// The outcome of [`crate::load_store`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Tensors loaded, tied ones included.
    pub loaded: usize,
    /// `(tied, owner)`: tensors that share their owner's storage instead of a copy.
    pub tied: Vec<(String, String)>,
    /// Disk tensors read in place from the checkpoint (no copy anywhere).
    pub disk_in_place: usize,
    /// The offload folder, if any tensor had to be written there.
    pub offload: Option<OffloadSummary>,
    /// Bytes per device.
    pub devices: Vec<DeviceLoad>,
    /// Checkpoint bytes read (tensors left in place on disk are not read).
    pub bytes_read: u64,
    /// Wall time of the load, in seconds.
    pub seconds: f64,
    /// Memory at the end, with the peak since the load started.
    pub memory: Memory,
    /// Per-tensor checksums, when asked for.
    pub checksums: Vec<(String, Checksum)>,
    /// Tensors widened on their GPU from the checkpoint's bf16 or f16 bytes (the GPU holds
    /// them as f32: [`PlanOptions::gpu_float`](crate::PlanOptions::gpu_float)).
    pub widened_on_device: usize,
    /// Tensors on GPUs whose checksum, taken on the device, was found equal to the file's
    /// ([`LoadOptions::verify`](crate::LoadOptions::verify)).
    pub verified: usize,
    /// Tensors quantized as they were loaded onto GPUs (the plan's
    /// [`quantize`](crate::PlanOptions::quantize)): how each is held, the bytes it takes, and
    /// whether it was quantized on the device. In the store each is a `[rows, cols]` quantized
    /// tensor (`TensorPrimitive::QFloat`; `Tensor::dequantize` gives its f32 values), or an f32
    /// one holding the same values when its device cannot hold the format.
    pub quantized: Vec<crate::QuantizedParam>,
}

impl LoadReport {
    /// Checkpoint bytes read per second, in GB/s (10⁹).
    pub fn throughput_gbps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes_read as f64 / self.seconds / 1e9
        } else {
            0.0
        }
    }
}
