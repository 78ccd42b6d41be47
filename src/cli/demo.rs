//! `stowage demo`: the whole pipeline with nothing downloaded. Writes a realistic sharded
//! checkpoint (llama-shaped, bf16, about 1 GiB by default), plans it with a RAM budget that
//! forces part of it to disk, loads it, and prints the plan, the load report and peak memory
//! against the model's size.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use stowage::planner::InventoryOptions;
use stowage::{DType, Device, Inventory, Pretrained, format_bytes};

use super::Output;

/// Arguments of `stowage demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Size of the checkpoint to write (bf16 weights)
    #[arg(long, default_value = "1GiB")]
    size: String,

    /// Folder to write it into, kept afterwards (default: a temporary folder, removed
    /// afterwards unless --keep)
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Keep the temporary folder (checkpoint and offload folder) instead of removing it
    #[arg(long)]
    keep: bool,

    /// RAM budget for the plan [default: the checkpoint's size, so about half of the model,
    /// widened to f32 on the CPU, goes to disk]
    #[arg(long, value_name = "SIZE")]
    cpu: Option<String>,
}

pub fn run(args: DemoArgs, out: Output) -> anyhow::Result<ExitCode> {
    let size = stowage::parse_size(&args.size)?;
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary folder")?),
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp").path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let mut stdout = std::io::stdout().lock();

    let started = std::time::Instant::now();
    let shards = stowage::synthetic::write_llama(&dir, size, DType::BF16)?;
    let inventory = Inventory::from_spec(
        dir.to_str().context("non-UTF-8 path")?,
        &InventoryOptions::default(),
    )?;
    let model_bytes = inventory.total_bytes(None);
    writeln!(
        stdout,
        "wrote {} ({} shards, {}) to {} in {:.1} s",
        inventory.describe(),
        shards,
        format_bytes(model_bytes),
        dir.display(),
        started.elapsed().as_secs_f64()
    )?;

    // No GPU in this build: plan for cpu and disk, with RAM for about half the model.
    let cpu = match &args.cpu {
        Some(c) => stowage::parse_size(c)?,
        None => model_bytes,
    };
    let planned = Pretrained::new(&dir)
        .gpus(&[])
        .max_memory(Device::Cpu, cpu)
        .offload_folder(dir.join("offload"))
        .plan()?;
    writeln!(stdout)?;
    super::table::write_plan(
        &mut stdout,
        &dir.display().to_string(),
        &planned.inventory,
        &planned.plan,
        out.color,
    )?;

    let (store, report) =
        planned.load_store::<burn_ndarray::NdArray>(&burn_ndarray::NdArrayDevice::Cpu)?;
    writeln!(stdout)?;
    super::load::write_report(&mut stdout, &dir.display().to_string(), &report)?;
    let on_cpu = report
        .devices
        .iter()
        .find(|d| d.device == Device::Cpu)
        .map_or(0, |d| d.actual_bytes);
    let vs_cpu = if on_cpu > 0 {
        format!(
            "{:.2}x the {} the cpu holds (f32)",
            report.memory.peak_bytes as f64 / on_cpu as f64,
            format_bytes(on_cpu)
        )
    } else {
        "the cpu holds no weights".to_string()
    };
    writeln!(
        stdout,
        "peak RSS {} = {vs_cpu}; {:.2}x the {} checkpoint; {} tensors loaded",
        format_bytes(report.memory.peak_bytes),
        report.memory.peak_bytes as f64 / model_bytes.max(1) as f64,
        format_bytes(model_bytes),
        store.len(),
    )?;
    drop(store);
    let written = folder_bytes(&dir);
    match temp {
        Some(temp) if !args.keep => {
            let path = temp.path().to_path_buf();
            temp.close()
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
            writeln!(
                stdout,
                "removed {} ({} written: the checkpoint and its offload folder); --keep keeps it",
                path.display(),
                format_bytes(written)
            )?;
        }
        Some(temp) => {
            let path = temp.keep();
            writeln!(
                stdout,
                "kept {} ({}: the checkpoint and its offload folder); remove it when done",
                path.display(),
                format_bytes(written)
            )?;
        }
        None => writeln!(
            stdout,
            "kept {} ({}: the checkpoint and its offload folder)",
            dir.display(),
            format_bytes(written)
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of the files under `dir` (what the demo wrote).
fn folder_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
