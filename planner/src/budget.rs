//! What each device may hold: measured by [`crate::probe()`], overridden by the user.
//!
//! Overrides take the forms Accelerate users know: `--max-memory 0=20GiB`,
//! `--max-memory cpu=64GiB`, `--max-memory disk=500GB`, or the JSON object
//! `{"0":"20GiB","cpu":"64GiB"}`. `--gpus 2x24GiB` or `--gpus 80GiB,24GiB` plans for GPUs this
//! machine does not have. A `--max-memory` for a GPU index that does not exist adds a planned
//! GPU with that budget; devices not named keep their measured budget (give `0` to leave one
//! out).

use serde_json::Value;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::units::parse_size;

/// One GPU's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuBudget {
    /// Device index.
    pub index: u32,
    /// What the driver calls it, or a description for a planned GPU.
    pub name: String,
    /// Bytes the plan may use on it.
    pub bytes: u64,
    /// Whether the GPU exists on this machine (false for `--gpus` / `--max-memory` ones).
    pub present: bool,
}

/// The budget of every device, the input to placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// GPUs, by ascending index.
    pub gpus: Vec<GpuBudget>,
    /// Host memory the plan may use.
    pub cpu_bytes: u64,
    /// Disk space in the offload folder the plan may use.
    pub disk_bytes: u64,
}

impl Budgets {
    /// The budget of `device`, if it exists.
    pub fn get(&self, device: Device) -> Option<u64> {
        match device {
            Device::Gpu(i) => self.gpus.iter().find(|g| g.index == i).map(|g| g.bytes),
            Device::Cpu => Some(self.cpu_bytes),
            Device::Disk => Some(self.disk_bytes),
        }
    }

    /// Devices in placement order: GPUs by index, then cpu, then disk.
    pub fn devices(&self) -> Vec<Device> {
        let mut d: Vec<Device> = self.gpus.iter().map(|g| Device::Gpu(g.index)).collect();
        d.extend([Device::Cpu, Device::Disk]);
        d
    }

    /// The GPUs as devices, by ascending index.
    pub fn gpu_devices(&self) -> Vec<Device> {
        self.gpus.iter().map(|g| Device::Gpu(g.index)).collect()
    }

    /// A display name for `device` (GPU name, `cpu`, `disk`).
    pub fn name(&self, device: Device) -> String {
        match device {
            Device::Gpu(i) => self
                .gpus
                .iter()
                .find(|g| g.index == i)
                .map_or_else(|| format!("GPU {i}"), |g| g.name.clone()),
            Device::Cpu => "cpu".into(),
            Device::Disk => "disk".into(),
        }
    }

    /// A label for messages: `GPU 0 (NVIDIA H100 80GB HBM3)`, `cpu`, `disk`.
    pub fn label(&self, device: Device) -> String {
        match device {
            Device::Gpu(i) => match self.gpus.iter().find(|g| g.index == i) {
                Some(g) if g.present => format!("GPU {i} ({})", g.name),
                _ => format!("GPU {i}"),
            },
            other => other.to_string(),
        }
    }

    /// Replaces the GPUs with planned ones of the given sizes (`--gpus`).
    pub fn with_planned_gpus(mut self, sizes: &[u64]) -> Budgets {
        self.gpus = sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| GpuBudget {
                index: i as u32,
                name: format!("planned GPU ({})", crate::units::format_bytes(bytes)),
                bytes,
                present: false,
            })
            .collect();
        self
    }

    /// Applies `--max-memory` overrides.
    pub fn with_max_memory(mut self, overrides: &[(Device, u64)]) -> Budgets {
        for &(device, bytes) in overrides {
            match device {
                Device::Cpu => self.cpu_bytes = bytes,
                Device::Disk => self.disk_bytes = bytes,
                Device::Gpu(index) => match self.gpus.iter_mut().find(|g| g.index == index) {
                    Some(g) => g.bytes = bytes,
                    None => self.gpus.push(GpuBudget {
                        index,
                        name: format!("planned GPU ({})", crate::units::format_bytes(bytes)),
                        bytes,
                        present: false,
                    }),
                },
            }
        }
        self.gpus.sort_by_key(|g| g.index);
        self
    }
}

/// Parses one `--max-memory` value: `DEVICE=SIZE`, or a JSON object of them.
///
/// ```
/// use stowage_planner::{parse_max_memory, Device};
/// assert_eq!(parse_max_memory("0=20GiB").unwrap(), vec![(Device::Gpu(0), 20 << 30)]);
/// let both = parse_max_memory(r#"{"0": "1GiB", "cpu": 1000}"#).unwrap();
/// assert_eq!(both, vec![(Device::Gpu(0), 1 << 30), (Device::Cpu, 1000)]);
/// ```
pub fn parse_max_memory(input: &str) -> Result<Vec<(Device, u64)>> {
    let invalid = |reason: String| Error::InvalidBudget {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.starts_with('{') {
        let value: Value =
            serde_json::from_str(s).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            unreachable!("starts with `{{`")
        };
        return map
            .into_iter()
            .map(|(k, v)| {
                let device = k.parse::<Device>().map_err(invalid)?;
                let bytes = match v {
                    Value::String(s) => parse_size(&s)?,
                    Value::Number(n) => n
                        .as_u64()
                        .ok_or_else(|| invalid(format!("`{n}` is not a whole number of bytes")))?,
                    other => return Err(invalid(format!("`{other}` is not a size"))),
                };
                Ok((device, bytes))
            })
            .collect();
    }
    let (device, size) = s
        .split_once('=')
        .or_else(|| {
            s.split_once(':')
                .filter(|(d, _)| !d.eq_ignore_ascii_case("cuda"))
        })
        .ok_or_else(|| invalid("expected DEVICE=SIZE, e.g. `0=20GiB` or `cpu=64GiB`".into()))?;
    let device = device.parse::<Device>().map_err(invalid)?;
    Ok(vec![(device, parse_size(size)?)])
}

/// Parses `--gpus`: `2x24GiB`, `80GiB,24GiB`, or a mix (`2x80GiB,24GiB`).
///
/// ```
/// use stowage_planner::parse_gpus;
/// assert_eq!(parse_gpus("2x24GiB").unwrap(), vec![24 << 30, 24 << 30]);
/// assert_eq!(parse_gpus("80GiB,1KiB").unwrap(), vec![80 << 30, 1024]);
/// ```
pub fn parse_gpus(input: &str) -> Result<Vec<u64>> {
    let invalid = |reason: String| Error::InvalidBudget {
        input: input.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for part in input.split(',') {
        let part = part.trim();
        let (count, size) = match part.split_once(['x', 'X', '*']) {
            Some((n, size)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => (
                n.parse::<usize>().map_err(|e| invalid(e.to_string()))?,
                size,
            ),
            _ => (1, part),
        };
        if count == 0 || count > 1024 {
            return Err(invalid(format!(
                "`{part}`: GPU count must be between 1 and 1024"
            )));
        }
        let bytes = parse_size(size)?;
        out.extend(std::iter::repeat_n(bytes, count));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets {
            gpus: Vec::new(),
            cpu_bytes: 100,
            disk_bytes: 1000,
        }
    }

    #[test]
    fn max_memory_forms() {
        assert_eq!(
            parse_max_memory("cpu=64GiB").unwrap(),
            vec![(Device::Cpu, 64 << 30)]
        );
        assert_eq!(
            parse_max_memory("cuda:1=1KiB").unwrap(),
            vec![(Device::Gpu(1), 1024)]
        );
        assert_eq!(
            parse_max_memory("disk=500GB").unwrap(),
            vec![(Device::Disk, 500_000_000_000)]
        );
        assert!(parse_max_memory("cpu").is_err());
        assert!(parse_max_memory("tpu=1GiB").is_err());
        let err = parse_max_memory("0=10gb").unwrap_err().to_string();
        assert!(err.contains("bits"), "{err}");
        assert!(parse_max_memory(r#"{"0": true}"#).is_err());
    }

    #[test]
    fn overrides_add_planned_gpus_and_keep_the_rest() {
        let b = budgets().with_max_memory(&[
            (Device::Gpu(1), 5),
            (Device::Gpu(0), 7),
            (Device::Cpu, 9),
        ]);
        assert_eq!(
            b.gpus
                .iter()
                .map(|g| (g.index, g.bytes))
                .collect::<Vec<_>>(),
            [(0, 7), (1, 5)]
        );
        assert_eq!((b.cpu_bytes, b.disk_bytes), (9, 1000));
        assert_eq!(
            b.devices(),
            [Device::Gpu(0), Device::Gpu(1), Device::Cpu, Device::Disk]
        );
    }

    #[test]
    fn gpu_specs() {
        assert_eq!(
            parse_gpus("2x80GiB,24GiB").unwrap(),
            vec![80 << 30, 80 << 30, 24 << 30]
        );
        assert!(parse_gpus("0x24GiB").is_err());
        assert!(parse_gpus("2x").is_err());
        assert!(parse_gpus("24gb").is_err());
        let b = budgets().with_planned_gpus(&[1, 2]);
        assert_eq!(b.gpus.len(), 2);
        assert!(!b.gpus[1].present);
    }
}
