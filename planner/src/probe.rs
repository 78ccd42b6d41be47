//! Measuring what this machine has: GPUs through NVML, RAM through sysinfo (capped by the
//! container's cgroup limit), free disk in the offload folder.
//!
//! [`probe`] never fails and never panics: what cannot be measured is recorded with the
//! reason, and [`Probe::budgets`] turns that into a clear error only if the plan needs the
//! figure and the user did not give it.

use std::path::{Path, PathBuf};

use crate::budget::{Budgets, GpuBudget};
use crate::device::Device;
use crate::error::{Error, Result};

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// NVML index.
    pub index: u32,
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Total memory in bytes.
    pub total_bytes: u64,
    /// Free memory in bytes.
    pub free_bytes: u64,
}

/// Host memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamInfo {
    /// Physical memory.
    pub total_bytes: u64,
    /// Memory the kernel reports available.
    pub available_bytes: u64,
    /// The container's (cgroup's) limit and what is free under it, if there is a limit.
    pub cgroup: Option<(u64, u64)>,
}

impl RamInfo {
    /// The budget: available memory, capped by what the cgroup has free.
    pub fn budget_bytes(&self) -> u64 {
        match self.cgroup {
            Some((_, free)) => self.available_bytes.min(free),
            None => self.available_bytes,
        }
    }
}

/// Free space for the offload folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The offload folder (it may not exist yet).
    pub folder: PathBuf,
    /// The mount point measured.
    pub mount_point: PathBuf,
    /// Bytes available to this user there.
    pub free_bytes: u64,
}

/// What [`probe`] found; each part is either a measurement or the reason it failed.
#[derive(Debug, Clone)]
pub struct Probe {
    /// GPUs found (empty without a driver or GPU).
    pub gpus: Vec<GpuInfo>,
    /// Why there are no GPUs, when there are none.
    pub gpu_note: Option<String>,
    /// Host memory, or why it could not be read.
    pub ram: std::result::Result<RamInfo, String>,
    /// Free disk, or why it could not be read.
    pub disk: std::result::Result<DiskInfo, String>,
}

/// User overrides of measured budgets (`--max-memory`, `--gpus`; see [`Budgets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetOverrides {
    /// `--gpus`: plan for GPUs of these sizes instead of the ones present.
    pub gpus: Option<Vec<u64>>,
    /// `--max-memory` entries, later ones winning.
    pub max_memory: Vec<(Device, u64)>,
}

/// Measures GPUs, RAM and the disk holding `offload_folder`.
pub fn probe(offload_folder: &Path) -> Probe {
    let (gpus, gpu_note) = probe_gpus();
    Probe {
        gpus,
        gpu_note,
        ram: probe_ram(),
        disk: probe_disk(offload_folder),
    }
}

impl Probe {
    /// Budgets from the measurements with `overrides` applied. Fails, with a hint, only when
    /// RAM or disk could not be measured and no override gives it.
    pub fn budgets(&self, overrides: &BudgetOverrides) -> Result<Budgets> {
        let given = |d: Device| overrides.max_memory.iter().any(|(k, _)| *k == d);
        let cpu_bytes = match &self.ram {
            Ok(ram) => ram.budget_bytes(),
            Err(_) if given(Device::Cpu) => 0,
            Err(reason) => {
                return Err(Error::BudgetUnreadable {
                    device: "cpu".into(),
                    reason: reason.clone(),
                    hint: "--max-memory cpu=SIZE".into(),
                });
            }
        };
        let disk_bytes = match &self.disk {
            Ok(disk) => disk.free_bytes,
            Err(_) if given(Device::Disk) => 0,
            Err(reason) => {
                return Err(Error::BudgetUnreadable {
                    device: "disk".into(),
                    reason: reason.clone(),
                    hint: "--max-memory disk=SIZE, or --offload-folder on a readable filesystem"
                        .into(),
                });
            }
        };
        let gpus = self
            .gpus
            .iter()
            .map(|g| GpuBudget {
                index: g.index,
                name: g.name.clone(),
                bytes: g.free_bytes,
                present: true,
            })
            .collect();
        let mut budgets = Budgets {
            gpus,
            cpu_bytes,
            disk_bytes,
        };
        if let Some(sizes) = &overrides.gpus {
            budgets = budgets.with_planned_gpus(sizes);
        }
        Ok(budgets.with_max_memory(&overrides.max_memory))
    }
}

fn probe_gpus() -> (Vec<GpuInfo>, Option<String>) {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::error::NvmlError;
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(NvmlError::LibloadingError(e)) => {
            return (
                Vec::new(),
                Some(format!(
                    "no NVIDIA driver found ({e}); planning for cpu and disk"
                )),
            );
        }
        Err(NvmlError::DriverNotLoaded) => {
            return (
                Vec::new(),
                Some("the NVIDIA driver is not loaded; planning for cpu and disk".into()),
            );
        }
        Err(e) => {
            return (
                Vec::new(),
                Some(format!(
                    "NVML failed to start ({e}); planning for cpu and disk"
                )),
            );
        }
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => return (Vec::new(), Some(format!("NVML could not count GPUs ({e})"))),
    };
    let mut gpus = Vec::new();
    let mut notes = Vec::new();
    for index in 0..count {
        let info = nvml
            .device_by_index(index)
            .and_then(|d| Ok((d.name()?, d.memory_info()?)));
        match info {
            Ok((name, mem)) => gpus.push(GpuInfo {
                index,
                name,
                total_bytes: mem.total,
                free_bytes: mem.free,
            }),
            Err(e) => notes.push(format!("GPU {index} skipped: NVML could not read it ({e})")),
        }
    }
    if gpus.is_empty() && notes.is_empty() {
        notes.push("NVML found no GPU; planning for cpu and disk".into());
    }
    (gpus, (!notes.is_empty()).then(|| notes.join("; ")))
}

fn probe_ram() -> std::result::Result<RamInfo, String> {
    let mut sys = sysinfo::System::new().map_err(|e| format!("sysinfo is unavailable: {e}"))?;
    sys.refresh_memory();
    let total_bytes = sys.total_memory();
    if total_bytes == 0 {
        return Err("the system reported 0 bytes of memory".into());
    }
    let cgroup = sys
        .cgroup_limits()
        .filter(|c| c.total_memory > 0 && c.total_memory < total_bytes)
        .map(|c| (c.total_memory, c.free_memory));
    Ok(RamInfo {
        total_bytes,
        available_bytes: sys.available_memory(),
        cgroup,
    })
}

fn probe_disk(folder: &Path) -> std::result::Result<DiskInfo, String> {
    // The folder may not exist yet: measure the nearest existing ancestor.
    let existing = folder
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| format!("no part of `{}` exists", folder.display()))?;
    let canon = std::fs::canonicalize(existing)
        .map_err(|e| format!("cannot resolve `{}`: {e}", existing.display()))?;
    let disks = sysinfo::Disks::new_with_refreshed_list()
        .map_err(|e| format!("cannot list filesystems: {e}"))?;
    let disk = disks
        .iter()
        .filter(|d| canon.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .ok_or_else(|| format!("no mounted filesystem holds `{}`", canon.display()))?;
    Ok(DiskInfo {
        folder: folder.to_path_buf(),
        mount_point: disk.mount_point().to_path_buf(),
        free_bytes: disk.available_space(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(&dir.path().join("not/yet/created"));
        let ram = p.ram.as_ref().expect("RAM is readable here");
        assert!(ram.total_bytes > 0 && ram.available_bytes <= ram.total_bytes);
        assert!(p.disk.as_ref().expect("disk is readable here").free_bytes > 0);
        // Either GPUs were found, or we are told plainly why not.
        assert!(!p.gpus.is_empty() || p.gpu_note.is_some());
        let b = p.budgets(&BudgetOverrides::default()).unwrap();
        assert_eq!(b.cpu_bytes, ram.budget_bytes());
    }

    #[test]
    fn unreadable_budgets_are_errors_unless_overridden() {
        let p = Probe {
            gpus: Vec::new(),
            gpu_note: None,
            ram: Err("no /proc".into()),
            disk: Err("gone".into()),
        };
        let err = p
            .budgets(&BudgetOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no /proc") && err.contains("--max-memory cpu="),
            "{err}"
        );
        let o = BudgetOverrides {
            gpus: Some(vec![10]),
            max_memory: vec![(Device::Cpu, 5), (Device::Disk, 7)],
        };
        let b = p.budgets(&o).unwrap();
        assert_eq!((b.gpus.len(), b.cpu_bytes, b.disk_bytes), (1, 5, 7));
    }
}
