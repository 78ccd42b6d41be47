//! Plans saved as JSON (`stowage plan --json`, [`plan_json`]) and read back: the budgets and
//! options a plan was made with, so that it can be loaded again exactly as planned, and
//! [`read_device_map`] for the forms a device map comes in.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stowage_planner::{GpuBudget, Quantize, QuantizeModule, RuntimeOptions};

use crate::error::{Error, Result};
use crate::{Budgets, Compat, DType, Device, DeviceMap, Inventory, OffloadOrder, Plan};
use crate::{PlanOptions, Strategy};

/// The plan as one JSON object: enough to print it again, diff it, or load it again
/// ([`crate::Pretrained::device_map_str`] with the file's path, `stowage plan --plan`).
pub fn plan_json(spec: &str, inventory: &Inventory, plan: &Plan, budgets: &Budgets) -> Value {
    let devices: Vec<Value> = plan
        .devices
        .iter()
        .map(|d| {
            json!({
                "device": d.device.to_json(),
                "name": d.name,
                "budget_bytes": d.budget_bytes,
                "used_bytes": d.used_bytes,
                "kv_cache_bytes": d.kv_cache_bytes,
                "activation_bytes": d.activation_bytes,
                "overhead_bytes": d.overhead_bytes,
                "reserved_bytes": d.reserved_bytes,
                "free_bytes": d.free_bytes(),
            })
        })
        .collect();
    let units: Vec<Value> = plan
        .units
        .iter()
        .map(|u| {
            json!({
                "name": u.path,
                "bytes": u.bytes,
                "kv_cache_bytes": u.kv_bytes,
                "device": u.device.to_json(),
            })
        })
        .collect();
    json!({
        "model": spec,
        "description": inventory.describe(),
        "strategy": plan.strategy.as_str(),
        "dtype": plan.dtype.map(|d| d.as_str().to_ascii_lowercase()),
        "total_bytes": plan.total_bytes,
        "param_count": inventory.param_count(),
        "offloaded_bytes": plan.offloaded_bytes(),
        "device_map": plan.device_map(inventory).to_json(),
        "devices": devices,
        "budgets": budgets_json(budgets),
        "options": options_json(&plan.options),
        "no_split": inventory.no_split_units(),
        "units": units,
        "decisions": plan.decisions,
        "notes": plan.notes,
    })
}

/// A device map as a user gives it, read by [`read_device_map`].
#[derive(Debug, Clone)]
pub struct ReadMap {
    /// The map.
    pub map: DeviceMap,
    /// The whole saved plan, when the map came from one ([`plan_json`]'s shape): its model,
    /// budgets and options are reused.
    pub saved: Option<Value>,
}

/// Reads a device map: a device (`cpu`, `0`, `disk`), a JSON object (`{"": "cpu"}`), or the
/// path of a file holding a map or a saved plan.
///
/// # Errors
///
/// Text that is none of these, an unreadable file, a map naming an unknown device.
pub fn read_device_map(spec: &str) -> Result<ReadMap> {
    if let Ok(device) = spec.parse::<Device>() {
        return Ok(ReadMap {
            map: DeviceMap::single(device),
            saved: None,
        });
    }
    let (value, path): (Value, Option<PathBuf>) = if spec.trim_start().starts_with('{') {
        let value = serde_json::from_str(spec)
            .map_err(|e| Error::options_from("--device-map is not valid JSON", e))?;
        (value, None)
    } else {
        let path = PathBuf::from(spec);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::options_from(format!("cannot read device map `{}`", path.display()), e)
        })?;
        let value = serde_json::from_str(&text).map_err(|e| {
            Error::options_from(format!("`{}` is not valid JSON", path.display()), e)
        })?;
        (value, Some(path))
    };
    match value.get("device_map") {
        Some(map) => Ok(ReadMap {
            map: DeviceMap::from_json(map, path.as_deref())?,
            saved: Some(value),
        }),
        None => Ok(ReadMap {
            map: DeviceMap::from_json(&value, path.as_deref())?,
            saved: None,
        }),
    }
}

/// Reads a saved plan's JSON file ([`plan_json`]'s shape).
///
/// # Errors
///
/// An unreadable file, or text that is not JSON.
pub fn read_plan_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::options_from(format!("cannot read `{}`", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::options_from(
            format!("`{}` is not a plan saved with --json", path.display()),
            e,
        )
    })
}

/// The budgets as JSON.
pub fn budgets_json(b: &Budgets) -> Value {
    let gpus: Vec<Value> = b
        .gpus
        .iter()
        .map(|g| json!({"index": g.index, "name": g.name, "bytes": g.bytes, "present": g.present}))
        .collect();
    json!({ "gpus": gpus, "cpu_bytes": b.cpu_bytes, "disk_bytes": b.disk_bytes })
}

/// Budgets from [`budgets_json`]'s shape.
///
/// # Errors
///
/// A field missing or of the wrong type.
pub fn budgets_from_json(v: &Value) -> Result<Budgets> {
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::options(format!("saved budgets lack `{k}`")))
    };
    let gpus = v
        .get("gpus")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::options("saved budgets lack `gpus`"))?
        .iter()
        .map(|g| {
            let index = num(g, "index")?;
            Ok(GpuBudget {
                index: u32::try_from(index).map_err(|e| {
                    Error::options_from(format!("saved budgets: GPU index {index}"), e)
                })?,
                name: g
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("GPU")
                    .to_string(),
                bytes: num(g, "bytes")?,
                present: g.get("present").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Budgets {
        gpus,
        cpu_bytes: num(v, "cpu_bytes")?,
        disk_bytes: num(v, "disk_bytes")?,
    })
}

/// The options as JSON (the device map itself is the plan's `device_map`). `quantize` and
/// `quantize_group` are written only when weights are quantized, `gpu_float` and
/// `quantize_modules` only when set.
pub fn options_json(o: &PlanOptions) -> Value {
    let mut v = json!({
        "strategy": o.strategy.as_str(),
        "compat": match o.compat { Compat::Accelerate => "accelerate", _ => "stowage" },
        "dtype": o.dtype.map(|d| d.as_str().to_ascii_lowercase()),
        "offload_order": match o.offload_order { OffloadOrder::ExpertsFirst => "experts-first", _ => "last" },
        "max_seq_len": o.runtime.max_seq_len,
        "batch": o.runtime.batch,
        "gpu_overhead_bytes": o.runtime.gpu_overhead_bytes,
        "explicit_device_map": o.device_map.is_some(),
        "cpu_float": o.cpu_float.map(|d| d.as_str().to_ascii_lowercase()),
    });
    if let Some(group) = o.quantize.group() {
        v["quantize"] = json!(o.quantize.as_str());
        v["quantize_group"] = json!(group);
    }
    if let Some(f) = o.gpu_float {
        v["gpu_float"] = json!(f.as_str().to_ascii_lowercase());
    }
    if !o.quantize_modules.is_empty() {
        v["quantize_modules"] = o
            .quantize_modules
            .iter()
            .map(|m| json!({"pattern": m.pattern(), "quantize": m.quantize.as_str()}))
            .collect();
    }
    v
}

/// Options from [`options_json`]'s shape.
///
/// # Errors
///
/// An unknown strategy, compat, dtype or quantization.
pub fn options_from_json(v: &Value) -> Result<PlanOptions> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let strategy = match s("strategy") {
        Some(x) => x.parse::<Strategy>().map_err(Error::options)?,
        None => Strategy::default(),
    };
    let compat = match s("compat") {
        Some("accelerate") => Compat::Accelerate,
        Some("stowage") | None => Compat::Stowage,
        Some(other) => {
            return Err(Error::options(format!(
                "saved options: unknown compat `{other}`"
            )));
        }
    };
    let dtype_of = |key: &str| -> Result<Option<DType>> {
        match s(key) {
            Some(d) => DType::from_user(d)
                .map(Some)
                .ok_or_else(|| Error::options(format!("saved options: {key} `{d}`"))),
            None => Ok(None),
        }
    };
    let offload_order = match s("offload_order") {
        Some("experts-first") => OffloadOrder::ExpertsFirst,
        _ => OffloadOrder::Last,
    };
    let d = RuntimeOptions::default();
    let runtime = RuntimeOptions {
        max_seq_len: n("max_seq_len").unwrap_or(d.max_seq_len),
        batch: n("batch").unwrap_or(d.batch),
        gpu_overhead_bytes: n("gpu_overhead_bytes").unwrap_or(d.gpu_overhead_bytes),
    };
    let quantize = match s("quantize") {
        Some(q) => {
            let group = match n("quantize_group") {
                Some(g) => Some(u32::try_from(g).map_err(|e| {
                    Error::options_from(format!("saved options: quantize_group {g}"), e)
                })?),
                None => None,
            };
            Quantize::new(q, group)
                .map_err(|e| Error::options_from("saved options: quantize", e))?
        }
        None => Quantize::None,
    };
    let mut quantize_modules = Vec::new();
    for rule in v
        .get("quantize_modules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("");
        let spec = format!("{}={}", field("pattern"), field("quantize"));
        quantize_modules.push(
            QuantizeModule::parse(&spec)
                .map_err(|e| Error::options_from("saved options: quantize_modules", e))?,
        );
    }
    Ok(PlanOptions {
        strategy,
        dtype: dtype_of("dtype")?,
        compat,
        offload_order,
        runtime,
        device_map: None,
        cpu_float: dtype_of("cpu_float")?,
        gpu_float: dtype_of("gpu_float")?,
        quantize,
        quantize_modules,
    })
}
