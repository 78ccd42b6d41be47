//! Rendering a plan: a readable table, or JSON with an HF-shaped `device_map`.

use std::io::Write;

use comfy_table::{Cell, CellAlignment, Color, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use stowage::planner::Unit;
use stowage::{Device, Inventory, Plan, format_bytes};

/// The plan as one JSON object.
pub fn plan_json(spec: &str, inventory: &Inventory, plan: &Plan) -> Value {
    let devices: Vec<Value> = plan
        .devices
        .iter()
        .map(|d| {
            json!({
                "device": d.device.to_json(),
                "name": d.name,
                "budget_bytes": d.budget_bytes,
                "used_bytes": d.used_bytes,
                "reserved_bytes": d.reserved_bytes,
            })
        })
        .collect();
    let units: Vec<Value> = plan
        .units
        .iter()
        .map(|u| json!({ "name": u.path, "bytes": u.bytes, "device": u.device.to_json() }))
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
        "no_split": inventory.no_split_units(),
        "units": units,
    })
}

/// The plan as a table, one row per device, plus totals.
pub fn write_plan(
    w: &mut impl Write,
    spec: &str,
    inventory: &Inventory,
    plan: &Plan,
    color: bool,
) -> std::io::Result<()> {
    let dtype = plan
        .dtype
        .map_or("as stored".to_string(), |d| d.as_str().to_ascii_lowercase());
    writeln!(w, "{spec}: {}", inventory.describe())?;
    writeln!(
        w,
        "strategy {}, dtype {dtype}, {} in {} units",
        plan.strategy,
        format_bytes(plan.total_bytes),
        plan.units.len()
    )?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    }
    table.set_header([
        "device", "name", "budget", "planned", "used", "reserved", "modules",
    ]);
    for d in &plan.devices {
        let units: Vec<&Unit> = plan.units.iter().filter(|u| u.device == d.device).collect();
        if d.used_bytes == 0 && units.is_empty() && d.device == Device::Disk {
            continue;
        }
        let pct = if d.budget_bytes == 0 {
            if d.used_bytes == 0 {
                "-".to_string()
            } else {
                "over".to_string()
            }
        } else {
            format!(
                "{:.1}%",
                100.0 * d.used_bytes as f64 / d.budget_bytes as f64
            )
        };
        let mut used = Cell::new(pct).set_alignment(CellAlignment::Right);
        if color && d.used_bytes > 0 && !d.device.is_gpu() {
            used = used.fg(Color::Yellow);
        }
        table.add_row(vec![
            Cell::new(d.device.to_string()),
            Cell::new(&d.name),
            Cell::new(format_bytes(d.budget_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(format_bytes(d.used_bytes)).set_alignment(CellAlignment::Right),
            used,
            Cell::new(if d.reserved_bytes > 0 {
                format_bytes(d.reserved_bytes)
            } else {
                "-".into()
            })
            .set_alignment(CellAlignment::Right),
            Cell::new(summarize(&units)),
        ]);
    }
    writeln!(w, "{table}")?;
    let has_gpu = plan.devices.iter().any(|d| d.device.is_gpu());
    let on = |dev: Device| plan.used_on(dev);
    if has_gpu {
        let gpu: u64 = plan
            .devices
            .iter()
            .filter(|d| d.device.is_gpu())
            .map(|d| d.used_bytes)
            .sum();
        writeln!(
            w,
            "total {}: {} on GPUs, {} offloaded to cpu, {} to disk",
            format_bytes(plan.total_bytes),
            format_bytes(gpu),
            format_bytes(on(Device::Cpu)),
            format_bytes(on(Device::Disk)),
        )?;
    } else {
        writeln!(
            w,
            "total {}: {} on cpu, {} offloaded to disk",
            format_bytes(plan.total_bytes),
            format_bytes(on(Device::Cpu)),
            format_bytes(on(Device::Disk)),
        )?;
    }
    let spilled: Vec<&Unit> = plan
        .units
        .iter()
        .filter(|u| {
            if has_gpu {
                !u.device.is_gpu()
            } else {
                u.device == Device::Disk
            }
        })
        .filter(|u| u.bytes > 0)
        .collect();
    if spilled.is_empty() {
        writeln!(
            w,
            "everything fits{}",
            if has_gpu { " on the GPUs" } else { " in RAM" }
        )?;
    } else {
        writeln!(
            w,
            "did not fit {}: {} units, {}",
            if has_gpu { "on the GPUs" } else { "in RAM" },
            spilled.len(),
            summarize(&spilled)
        )?;
    }
    Ok(())
}

/// Compresses unit names: consecutive numbered siblings become one range
/// (`model.layers.0–17`), and long lists are cut with a count.
fn summarize(units: &[&Unit]) -> String {
    const MAX: usize = 6;
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(String, u64, u64)> = None;
    let flush = |run: &mut Option<(String, u64, u64)>, parts: &mut Vec<String>| {
        if let Some((prefix, a, b)) = run.take() {
            parts.push(if a == b {
                format!("{prefix}.{a}")
            } else {
                format!("{prefix}.{a}–{b}")
            });
        }
    };
    for u in units {
        let numbered = u
            .path
            .rsplit_once('.')
            .and_then(|(p, n)| Some((p, n.parse::<u64>().ok()?)));
        match (numbered, &mut run) {
            (Some((p, n)), Some((rp, _, b))) if p == rp && n == *b + 1 => *b = n,
            (Some((p, n)), _) => {
                flush(&mut run, &mut parts);
                run = Some((p.to_string(), n, n));
            }
            (None, _) => {
                flush(&mut run, &mut parts);
                parts.push(u.path.clone());
            }
        }
    }
    flush(&mut run, &mut parts);
    if parts.len() > MAX {
        let more = parts.len() - MAX;
        parts.truncate(MAX);
        parts.push(format!("… (+{more} more)"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
