//! Rendering a plan: a readable table, or JSON with an HF-shaped `device_map`.

use std::io::Write;

use comfy_table::{Cell, CellAlignment, Color, Table, presets::UTF8_FULL_CONDENSED};
use stowage::planner::Unit;
use stowage::planner::summarize_names;
use stowage::{Device, Inventory, Plan, format_bytes};

fn bytes_cell(b: u64) -> Cell {
    let text = if b == 0 {
        "-".to_string()
    } else {
        format_bytes(b)
    };
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// The plan as a table, one row per device with its line items, plus totals.
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
    let rt = &plan.options.runtime;
    let runtime = if plan.options.device_map.is_some() {
        "explicit device map".to_string()
    } else {
        format!("strategy {}", plan.strategy)
    };
    let quantized =
        if !plan.options.quantizes() || plan.options.compat == stowage::Compat::Accelerate {
            String::new()
        } else {
            format!(
                ", linear weights on GPUs as {}",
                stowage::planner::quantize_summary(&plan.options)
            )
        };
    let gpu_float = match plan.options.gpu_float {
        Some(f) => format!(", floats on GPUs as {}", f.as_str().to_ascii_lowercase()),
        None => String::new(),
    };
    writeln!(
        w,
        "{runtime}, dtype {dtype}{gpu_float}{quantized}, {} of weights in {} units; run-time room for batch {} × {} tokens, GPU overhead {}",
        format_bytes(plan.total_bytes),
        plan.units.len(),
        rt.batch,
        rt.max_seq_len,
        format_bytes(rt.gpu_overhead_bytes),
    )?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    }
    table.set_header([
        "device",
        "name",
        "budget",
        "weights",
        "kv cache",
        "activations",
        "overhead",
        "reserve",
        "free",
        "modules",
    ]);
    for d in &plan.devices {
        let units: Vec<&Unit> = plan.units.iter().filter(|u| u.device == d.device).collect();
        if d.used_bytes == 0 && units.is_empty() && d.device == Device::Disk {
            continue;
        }
        let mut weights = bytes_cell(d.used_bytes);
        if color && d.used_bytes > 0 && !d.device.is_gpu() {
            weights = weights.fg(Color::Yellow);
        }
        table.add_row(vec![
            Cell::new(d.device.to_string()),
            Cell::new(&d.name),
            Cell::new(format_bytes(d.budget_bytes)).set_alignment(CellAlignment::Right),
            weights,
            bytes_cell(d.kv_cache_bytes),
            bytes_cell(d.activation_bytes),
            bytes_cell(d.overhead_bytes),
            bytes_cell(d.reserved_bytes),
            Cell::new(format_bytes(d.free_bytes())).set_alignment(CellAlignment::Right),
            Cell::new(summarize(&units)),
        ]);
    }
    writeln!(w, "{table}")?;
    let has_gpu = plan.devices.iter().any(|d| d.device.is_gpu());
    let on = |dev: Device| plan.used_on(dev);
    let cpu_note = match plan.options.cpu_float {
        Some(f) if on(Device::Cpu) > 0 && plan.dtype != Some(f) => {
            format!(
                " (floats as {}, as the CPU backend stores them)",
                f.as_str().to_ascii_lowercase()
            )
        }
        _ => String::new(),
    };
    let gpu_note = match plan.options.gpu_float {
        Some(f) => format!(" (floats as {})", f.as_str().to_ascii_lowercase()),
        None => String::new(),
    };
    if has_gpu {
        let gpu: u64 = plan
            .devices
            .iter()
            .filter(|d| d.device.is_gpu())
            .map(|d| d.used_bytes)
            .sum();
        writeln!(
            w,
            "total {}: {} on GPUs{}, {} offloaded to cpu{}, {} to disk",
            format_bytes(plan.total_bytes),
            format_bytes(gpu),
            gpu_note,
            format_bytes(on(Device::Cpu)),
            cpu_note,
            format_bytes(on(Device::Disk)),
        )?;
    } else {
        writeln!(
            w,
            "total {}: {} on cpu{}, {} offloaded to disk",
            format_bytes(plan.total_bytes),
            format_bytes(on(Device::Cpu)),
            cpu_note,
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

/// `--explain`: one line per decision.
pub fn write_explanation(w: &mut impl Write, plan: &Plan) -> std::io::Result<()> {
    writeln!(w, "why:")?;
    if plan.decisions.is_empty() {
        writeln!(
            w,
            "  everything fit where the fill started; nothing to explain"
        )?;
    }
    for d in &plan.decisions {
        writeln!(w, "  {d}")?;
    }
    for d in plan.devices.iter().filter(|d| d.reserved_bytes > 0) {
        writeln!(
            w,
            "  {} keeps {} free to bring in the largest offloaded unit",
            d.device,
            format_bytes(d.reserved_bytes)
        )?;
    }
    Ok(())
}

/// Compresses unit names (see [`summarize_names`]).
pub fn summarize(units: &[&Unit]) -> String {
    summarize_names(units.iter().map(|u| u.path.as_str()))
}
