//! Devices as Hugging Face `device_map` names them: GPU `0`, `1`, …, `cpu`, `disk`.

use std::fmt;
use std::str::FromStr;

/// Where a tensor can live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// A GPU by index (`0`, `1`, …).
    Gpu(u32),
    /// Host memory.
    Cpu,
    /// The offload folder on disk.
    Disk,
}

impl Device {
    /// The value in a Hugging Face `device_map`: a number for a GPU, else `"cpu"`/`"disk"`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Device::Gpu(i) => serde_json::Value::from(i),
            Device::Cpu => "cpu".into(),
            Device::Disk => "disk".into(),
        }
    }

    /// Whether this is a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Gpu(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Gpu(i) => write!(f, "{i}"),
            Device::Cpu => f.write_str("cpu"),
            Device::Disk => f.write_str("disk"),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    /// Accepts `0`, `cuda:0`, `cpu`, `disk`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = t
            .strip_prefix("cuda:")
            .or_else(|| t.strip_prefix("gpu"))
            .unwrap_or(&t);
        match t {
            "cpu" => Ok(Device::Cpu),
            "disk" => Ok(Device::Disk),
            n => n.parse().map(Device::Gpu).map_err(|_| {
                format!("unknown device `{s}`: expected a GPU index (0, 1, …), `cpu` or `disk`")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Gpu(1));
        assert_eq!("0".parse::<Device>().unwrap(), Device::Gpu(0));
        assert_eq!("CPU".parse::<Device>().unwrap(), Device::Cpu);
        assert!("mps".parse::<Device>().is_err());
        assert_eq!(Device::Gpu(3).to_json(), serde_json::json!(3));
        assert_eq!(Device::Disk.to_string(), "disk");
        assert!(Device::Gpu(0) < Device::Gpu(1) && Device::Gpu(9) < Device::Cpu);
    }
}
