//! The Hugging Face `device_map`: module path → device, merged to the coarsest modules that
//! lie wholly on one device (`{"": 0}` when the whole model is on one device).

use crate::device::Device;
use crate::error::{Error, Result};
use crate::inventory::{Inventory, Module};

/// An ordered device map (execution order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMap {
    /// Entries: module path or tensor name, and its device.
    pub entries: Vec<(String, Device)>,
}

impl DeviceMap {
    /// Everything on one device: `{"": device}`.
    pub fn single(device: Device) -> DeviceMap {
        DeviceMap {
            entries: vec![(String::new(), device)],
        }
    }

    /// Reads a map in the Hugging Face shape: an object of module path → `0`/`1`/…,
    /// `"cuda:0"`, `"cpu"` or `"disk"`. `path` names the file in errors.
    ///
    /// ```
    /// use stowage_planner::{Device, DeviceMap};
    /// let v = serde_json::json!({"model.embed_tokens": 0, "model.layers": "cuda:1", "lm_head": "cpu"});
    /// let map = DeviceMap::from_json(&v, None)?;
    /// assert_eq!(map.device_of("model.layers.3.mlp.up_proj.weight"), Some(Device::Gpu(1)));
    /// # Ok::<(), stowage_planner::Error>(())
    /// ```
    pub fn from_json(
        value: &serde_json::Value,
        path: Option<&std::path::Path>,
    ) -> Result<DeviceMap> {
        let invalid = |reason: String| Error::MapInvalid {
            path: path.map(Into::into),
            reason,
        };
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object of module path → device".into()))?;
        let mut entries = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let device = match v {
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .map(Device::Gpu)
                    .ok_or_else(|| invalid(format!("`{k}`: `{n}` is not a GPU index")))?,
                serde_json::Value::String(s) => s
                    .parse::<Device>()
                    .map_err(|e| invalid(format!("`{k}`: {e}")))?,
                other => return Err(invalid(format!("`{k}`: `{other}` is not a device"))),
            };
            entries.push((k.clone(), device));
        }
        if entries.is_empty() {
            return Err(invalid("the map is empty".into()));
        }
        Ok(DeviceMap { entries })
    }

    /// Builds the merged map from each tensor's device.
    pub fn from_tensor_devices(inventory: &Inventory, devices: &[Device]) -> DeviceMap {
        let mut entries = Vec::new();
        emit(&inventory.root, inventory, devices, &mut entries);
        DeviceMap { entries }
    }

    /// The device of an entry exactly as listed.
    pub fn get(&self, path: &str) -> Option<Device> {
        self.entries.iter().find(|(p, _)| p == path).map(|e| e.1)
    }

    /// The device a tensor or module falls under: its own entry or its nearest listed ancestor.
    pub fn device_of(&self, name: &str) -> Option<Device> {
        let mut key = name;
        loop {
            if let Some(d) = self.get(key) {
                return Some(d);
            }
            if key.is_empty() {
                return None;
            }
            key = key.rsplit_once('.').map_or("", |(parent, _)| parent);
        }
    }

    /// The map as a JSON object in the Hugging Face shape.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(p, d)| (p.clone(), d.to_json()))
                .collect(),
        )
    }
}

fn uniform(m: &Module, devices: &[Device]) -> Option<Device> {
    let tensors = &devices[m.range.clone()];
    let first = *tensors.first()?;
    tensors.iter().all(|&d| d == first).then_some(first)
}

fn emit(m: &Module, inv: &Inventory, devices: &[Device], out: &mut Vec<(String, Device)>) {
    if let Some(d) = uniform(m, devices) {
        out.push((m.path.clone(), d));
        return;
    }
    for &i in &m.tensors {
        out.push((inv.tensors[i].name.clone(), devices[i]));
    }
    for c in &m.children {
        emit(c, inv, devices, out);
    }
}
