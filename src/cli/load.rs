//! `stowage load`: plan, then load into the name → tensor store, and report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use burn_ndarray::{NdArray, NdArrayDevice};
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Map, Value, json};
use stowage::{ChosenBackend, LoadReport, format_bytes};

use super::Output;
use super::backend::BackendArg;
use super::plan::PlanInputs;

const LOAD_HELP: &str = "\
Plans MODEL exactly as `stowage plan` does (same options, or --plan plan.json), then loads every
tensor onto its device: cpu tensors into burn-ndarray (floats as f32, zero-copy from the mapped
file when stored as f32), disk tensors left in place when the checkpoint already has the dtype
asked for, else converted once into --offload-folder. GPU tensors go to the device as stored
(or converted to the planned dtype) through burn-cuda (build with --features cuda) or wgpu
(--features wgpu); see --backend. With --gpu-float f32, a bf16 or f16 checkpoint crosses to the
GPUs as stored and is widened to f32 there, on the device. With --quantize int8|int4, the
linear weights inside the blocks that go to a GPU cross as stored and are quantized there
(stowage's blockwise format, one f32 scale per --quantize-group values); the report lists how
each is held.

--verify proves the GPU tensors bit-exact without copying them back: each one's checksum is
taken on its device and compared with the same checksum of the values the file says it holds,
taken on the host; a difference is an error naming the tensor and its file. It also checks
each tensor of --offload-folder against the checksum (XXH3-64) written with it whenever it is
read in. Every load that reuses an offload folder checks those checksums: a tensor that fails
is rewritten from the checkpoint and named on stderr.

Examples:
  stowage load ./Llama-3-8B --max-memory cpu=8GiB
  stowage load ./model --plan plan.json --checksums --json
  stowage load ./model --gpus 2x24GiB --gpu-float f32 --verify
  stowage load ./model --backend wgpu --quantize int4 --verify

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
    /// must equal the same checksum of the file's values (quantized weights: of the file's
    /// weight quantized on the host), taken on the host
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
    let bar = if out.quiet || args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        )
    };
    let progress_bar = bar.clone();
    let planned = args
        .inputs
        .builder(out)
        .checksums(args.checksums)
        .verify(args.verify)
        .progress(move |done, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(done);
        })
        .plan()?;
    if let Some(note) = planned.quantize_note() {
        out.note(&note);
    }
    bar.set_length(planned.checkpoint_bytes());
    let report = match stowage::choose_backend(args.backend.into(), &planned.plan)? {
        ChosenBackend::Cpu => planned.load_store::<NdArray>(&NdArrayDevice::Cpu)?.1,
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        ChosenBackend::Gpu(targets) => planned.load_store::<stowage::GpuBackend>(targets)?.1,
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
            "repaired": o.repaired,
            "removed_leftovers": o.removed_leftovers.iter().map(|(p, len)| json!({"path": p, "bytes": len})).collect::<Vec<_>>(),
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
    if !r.quantized.is_empty() {
        v["quantized"] = r
            .quantized
            .iter()
            .map(|q| {
                json!({
                    "tensor": q.tensor,
                    "quantize": q.quantize.to_string(),
                    "held_as": held_as(q),
                    "on_device": q.on_device,
                    "bytes": q.bytes,
                    "planned_bytes": q.planned_bytes,
                })
            })
            .collect();
    }
    v
}

/// How a quantized tensor is held, in words: burn's scheme, or f32.
fn held_as(q: &stowage::QuantizedParam) -> String {
    use burn::tensor::quantization::{QuantLevel, QuantStore, QuantValue};
    let Some(s) = q.scheme else {
        return "f32 (dequantized: the device cannot hold the format)".into();
    };
    let value = match s.value {
        QuantValue::Q4S => "int4",
        _ => "int8",
    };
    let store = match s.store {
        QuantStore::PackedU32(_) => "packed in u32 words",
        _ => "a byte each",
    };
    let block = match s.level {
        QuantLevel::Block(b) => b.num_elements(),
        QuantLevel::Tensor => 0,
    };
    format!("{value}, {store}, an f32 scale per {block} values")
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
    if !r.quantized.is_empty() {
        let on_device = r.quantized.iter().filter(|q| q.on_device).count();
        let held: u64 = r.quantized.iter().map(|q| q.bytes).sum();
        let planned: u64 = r.quantized.iter().map(|q| q.planned_bytes).sum();
        writeln!(
            w,
            "quantized: {} weights on the GPUs ({} on the device from the checkpoint's bytes, {} on the host), holding {} (planned {})",
            r.quantized.len(),
            on_device,
            r.quantized.len() - on_device,
            format_bytes(held),
            format_bytes(planned)
        )?;
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for q in &r.quantized {
            let k = held_as(q);
            match kinds.iter_mut().find(|(h, _)| *h == k) {
                Some((_, n)) => *n += 1,
                None => kinds.push((k, 1)),
            }
        }
        for (k, n) in kinds {
            writeln!(w, "  {n} held as {k}")?;
        }
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
