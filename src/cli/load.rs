//! `stowage load`: plan, then load into the name → tensor store, and report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use burn_ndarray::{NdArray, NdArrayDevice};
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Map, Value, json};
use stowage::{LoadOptions, LoadReport, format_bytes};

use super::Output;
use super::backend::{BackendArg, Chosen, choose};
use super::plan::{PlanInputs, make_plan};

const LOAD_HELP: &str = "\
Plans MODEL exactly as `stowage plan` does (same options, or --plan plan.json), then loads every
tensor onto its device: cpu tensors into burn-ndarray (floats as f32, zero-copy from the mapped
file when stored as f32), disk tensors left in place when the checkpoint already has the dtype
asked for, else converted once into --offload-folder. GPU tensors go to the device as stored
(or converted to the planned dtype) through burn-cuda (build with --features cuda) or wgpu
(--features wgpu); see --backend. With --gpu-float f32, a bf16 or f16 checkpoint crosses to the
GPUs as stored and is widened to f32 there, on the device.

--verify proves the GPU tensors bit-exact without copying them back: each one's checksum is
taken on its device and compared with the same checksum of the values the file says it holds,
taken on the host; a difference is an error naming the tensor and its file.

Examples:
  stowage load ./Llama-3-8B --max-memory cpu=8GiB
  stowage load ./model --plan plan.json --checksums --json
  stowage load ./model --gpus 2x24GiB --gpu-float f32 --verify

Exit codes: 0 loaded, 1 error, 2 usage.";

/// Arguments of `stowage load`.
#[derive(Args, Debug)]
#[command(after_help = LOAD_HELP)]
pub struct LoadArgs {
    #[command(flatten)]
    inputs: PlanInputs,

    /// Add per-tensor checksums: device, shape, and f64 sum and sum of absolute values
    #[arg(long)]
    checksums: bool,

    /// Check every tensor loaded onto a GPU against the file: a checksum taken on the device
    /// must equal the same checksum of the file's values, taken on the host
    #[arg(long)]
    verify: bool,

    /// Print the report as one JSON object
    #[arg(long)]
    json: bool,

    /// The burn backend to load onto
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
}

pub fn run(args: LoadArgs, out: Output) -> anyhow::Result<ExitCode> {
    let planned = make_plan(&args.inputs, out)?;
    if !planned.plan.options.quantize.is_none() {
        anyhow::bail!(
            "`--quantize {}`: the loader cannot quantize yet (plans can: `stowage plan --quantize`); load without --quantize",
            planned.plan.options.quantize.as_str()
        );
    }
    let total: u64 = planned
        .inventory
        .tensors
        .iter()
        .filter(|t| t.tied_to.is_none())
        .map(|t| t.stored_bytes())
        .sum();
    let bar = if out.quiet || args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        )
    };
    let progress_bar = bar.clone();
    let opts = LoadOptions {
        offload_folder: planned.offload_folder.clone(),
        checksums: args.checksums,
        verify: args.verify,
        progress: Some(Box::new(move |done, _| progress_bar.set_position(done))),
    };
    let report = match choose(args.backend, &planned.plan)? {
        Chosen::Cpu => {
            stowage::load_store::<NdArray>(
                &planned.inventory,
                &planned.plan,
                &NdArrayDevice::Cpu,
                &opts,
            )?
            .1
        }
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        Chosen::Gpu(targets) => {
            stowage::load_store::<stowage::GpuBackend>(
                &planned.inventory,
                &planned.plan,
                targets,
                &opts,
            )?
            .1
        }
    };
    bar.finish_and_clear();
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report_json(&planned.spec, &report))?;
        writeln!(stdout)?;
    } else {
        write_report(&mut stdout, &planned.spec, &report)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn report_json(spec: &str, r: &LoadReport) -> Value {
    let checksums: Map<String, Value> = r
        .checksums
        .iter()
        .map(|(name, c)| {
            let v = json!({"device": c.device.to_json(), "shape": c.shape, "sum": c.sum, "abs_sum": c.abs_sum});
            (name.clone(), v)
        })
        .collect();
    let mut v = json!({
        "model": spec,
        "loaded": r.loaded,
        "tied": r.tied,
        "disk_in_place": r.disk_in_place,
        "offload": r.offload.as_ref().map(|o| json!({
            "folder": o.folder, "tensors": o.tensors, "written_bytes": o.written_bytes, "reused": o.reused,
        })),
        "devices": r.devices.iter().map(|d| json!({
            "device": d.device.to_json(), "planned_bytes": d.planned_bytes, "actual_bytes": d.actual_bytes,
        })).collect::<Vec<_>>(),
        "widened_on_device": r.widened_on_device,
        "verified": r.verified,
        "bytes_read": r.bytes_read,
        "seconds": r.seconds,
        "throughput_gbps": r.throughput_gbps(),
        "memory": {
            "peak_bytes": r.memory.peak_bytes,
            "rss_bytes": r.memory.rss_bytes,
            "anon_bytes": r.memory.anon_bytes,
            "file_bytes": r.memory.file_bytes,
        },
    });
    if !checksums.is_empty() {
        v["checksums"] = Value::Object(checksums);
    }
    v
}

pub fn write_report(w: &mut impl Write, spec: &str, r: &LoadReport) -> std::io::Result<()> {
    writeln!(
        w,
        "{spec}: loaded {} tensors ({} tied, {} left in place on disk) in {:.2} s, {} read at {:.2} GB/s",
        r.loaded,
        r.tied.len(),
        r.disk_in_place,
        r.seconds,
        format_bytes(r.bytes_read),
        r.throughput_gbps()
    )?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).force_no_tty();
    table.set_header(["device", "planned", "loaded"]);
    for d in r
        .devices
        .iter()
        .filter(|d| d.planned_bytes > 0 || d.actual_bytes > 0)
    {
        table.add_row(vec![
            Cell::new(d.device.to_string()),
            Cell::new(format_bytes(d.planned_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(format_bytes(d.actual_bytes)).set_alignment(CellAlignment::Right),
        ]);
    }
    writeln!(w, "{table}")?;
    if r.widened_on_device > 0 {
        writeln!(
            w,
            "{} tensors widened to f32 on the GPUs from the checkpoint's bytes",
            r.widened_on_device
        )?;
    }
    if r.verified > 0 {
        writeln!(
            w,
            "verified: {} tensors on the GPUs hold exactly the file's values (checksums taken on the devices)",
            r.verified
        )?;
    }
    if let Some(o) = &r.offload {
        writeln!(
            w,
            "offload folder {}: {} tensors, {}",
            o.folder.display(),
            o.tensors,
            if o.reused {
                "reused (matching sources)".to_string()
            } else {
                format!("{} written", format_bytes(o.written_bytes))
            }
        )?;
    }
    writeln!(
        w,
        "memory: peak RSS {} during the load; now {} anonymous, {} file-backed (mapped checkpoint pages)",
        format_bytes(r.memory.peak_bytes),
        format_bytes(r.memory.anon_bytes),
        format_bytes(r.memory.file_bytes)
    )?;
    for (name, c) in &r.checksums {
        writeln!(
            w,
            "  {name} on {}: sum {:.6e}, abs_sum {:.6e}",
            c.device, c.sum, c.abs_sum
        )?;
    }
    Ok(())
}
