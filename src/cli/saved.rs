//! The parts of a `--json` plan that let it be loaded again exactly as planned: the budgets
//! and the options.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stowage::planner::{GpuBudget, Quantize, RuntimeOptions};
use stowage::{Budgets, Compat, DType, OffloadOrder, PlanOptions, Strategy};

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
pub fn budgets_from_json(v: &Value) -> anyhow::Result<Budgets> {
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .with_context(|| format!("saved budgets lack `{k}`"))
    };
    let gpus = v
        .get("gpus")
        .and_then(Value::as_array)
        .context("saved budgets lack `gpus`")?
        .iter()
        .map(|g| {
            Ok(GpuBudget {
                index: u32::try_from(num(g, "index")?)?,
                name: g
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("GPU")
                    .to_string(),
                bytes: num(g, "bytes")?,
                present: g.get("present").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Budgets {
        gpus,
        cpu_bytes: num(v, "cpu_bytes")?,
        disk_bytes: num(v, "disk_bytes")?,
    })
}

/// The options as JSON (the device map itself is the plan's `device_map`). `quantize` and
/// `quantize_group` are written only when weights are quantized, `gpu_float` only when set.
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
    v
}

/// Options from [`options_json`]'s shape.
pub fn options_from_json(v: &Value) -> anyhow::Result<PlanOptions> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let strategy = match s("strategy") {
        Some(x) => x.parse::<Strategy>().map_err(anyhow::Error::msg)?,
        None => Strategy::default(),
    };
    let compat = match s("compat") {
        Some("accelerate") => Compat::Accelerate,
        Some("stowage") | None => Compat::Stowage,
        Some(other) => bail!("saved options: unknown compat `{other}`"),
    };
    let dtype = match s("dtype") {
        Some(d) => {
            Some(DType::from_user(d).with_context(|| format!("saved options: dtype `{d}`"))?)
        }
        None => None,
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
    let cpu_float = match s("cpu_float") {
        Some(d) => {
            Some(DType::from_user(d).with_context(|| format!("saved options: cpu_float `{d}`"))?)
        }
        None => None,
    };
    let gpu_float = match s("gpu_float") {
        Some(d) => {
            Some(DType::from_user(d).with_context(|| format!("saved options: gpu_float `{d}`"))?)
        }
        None => None,
    };
    let quantize = match s("quantize") {
        Some(q) => {
            let group = n("quantize_group").map(u32::try_from).transpose()?;
            Quantize::new(q, group).context("saved options: quantize")?
        }
        None => Quantize::None,
    };
    Ok(PlanOptions {
        strategy,
        dtype,
        compat,
        offload_order,
        runtime,
        device_map: None,
        cpu_float,
        gpu_float,
        quantize,
    })
}
