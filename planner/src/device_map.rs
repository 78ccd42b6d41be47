//! The Hugging Face `device_map`: module path → device, merged to the coarsest modules that
//! lie wholly on one device (`{"": 0}` when the whole model is on one device).

use crate::device::Device;
use crate::inventory::{Inventory, Module};

/// An ordered device map (execution order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMap {
    /// Entries: module path or tensor name, and its device.
    pub entries: Vec<(String, Device)>,
}

impl DeviceMap {
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
    let mut found: Option<Device> = None;
    let mut same = true;
    m.walk(&mut |n| {
        for &i in &n.tensors {
            match found {
                None => found = Some(devices[i]),
                Some(d) if d != devices[i] => same = false,
                _ => {}
            }
        }
    });
    found.filter(|_| same)
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
