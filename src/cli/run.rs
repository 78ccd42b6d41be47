//! `stowage run`: plan, load as a split model, run one forward pass (or greedy generation),
//! print the output and where each unit ran.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use burn::prelude::*;
use burn_ndarray::{NdArray, NdArrayDevice};
use clap::{Args, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};
use stowage::models::{BertInput, token_ids};
use stowage::{
    AutoModel, ChosenBackend, OffloadMode, Planned, RunTrace, SplitOptions, Targets, UnitSource,
};

use super::Output;
use super::backend::BackendArg;
use super::plan::PlanInputs;

const RUN_HELP: &str = "\
Plans MODEL exactly as `stowage plan` does (same options, or --plan plan.json), loads it as a
split model (each block where the plan puts it; disk blocks read just before use, the next
--prefetch ones ahead of time), runs one forward pass on --ids (batch 1) and prints the output:
BERT's last_hidden_state, or a decoder's logits at the last position. Then a table of the
units (embed, each block, finish): where each was planned, where it ran, where its weights came
from, and its time.

Architectures: BERT (model_type bert) and the Llama family (llama, mistral, qwen2), read from
the checkpoint's config.json.

--quantize int8|int4 [--quantize-group N] quantizes the linear weights inside the blocks as
they are loaded, disk blocks at each run included: symmetric, one f32 scale per N values along
each weight's input dimension. GPUs hold them as burn's quantized tensors; the CPU backend
holds int8 (int4 values in int8 storage), dequantized in each forward pass.

Examples:
  stowage run ./all-MiniLM-L6-v2 --ids 101,7592,2088,102
  stowage run ./TinyLlama --ids 1,450,4996 --generate 8 --max-memory cpu=1GiB
  stowage run ./all-MiniLM-L6-v2 --ids 101,7592,2088,102 --quantize int4 --quantize-group 64
  stowage run ./model --ids 1,2,3 --gpus 2x8GiB --backend wgpu --offload-mode upload --json

Exit codes: 0 ran, 1 error, 2 usage.";

/// How offloaded blocks run (`--offload-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// cpu blocks run on the CPU, disk blocks are read into the CPU and run there
    InPlace,
    /// cpu and disk blocks are copied to GPU 0 before use (Accelerate's behaviour)
    Upload,
}

/// Arguments of `stowage run`.
#[derive(Args, Debug)]
#[command(after_help = RUN_HELP)]
pub struct RunArgs {
    #[command(flatten)]
    inputs: PlanInputs,

    /// Token ids, comma-separated (batch 1)
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    ids: Vec<u32>,

    /// Decoders: generate this many tokens greedily after --ids
    #[arg(long, value_name = "N")]
    generate: Option<usize>,

    /// Where blocks placed on cpu or disk run
    #[arg(long, value_enum, default_value = "in-place")]
    offload_mode: ModeArg,

    /// Offloaded blocks brought in ahead, while a block computes (0: when reached)
    #[arg(long, default_value_t = 1, value_name = "N")]
    prefetch: usize,

    /// The burn backend to run on
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,

    /// Prove the weights loaded onto GPUs bit-exact (quantized ones against the host's rule),
    /// as `stowage load --verify` does
    #[arg(long)]
    verify: bool,

    /// How many output values to print (the first ones)
    #[arg(long, default_value_t = 8, value_name = "N")]
    show: usize,

    /// Print the result as one JSON object, with the full output tensor as nested arrays
    #[arg(long)]
    json: bool,
}

/// What a run computed, for printing.
struct Ran {
    architecture: &'static str,
    output_name: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
    generated: Option<Vec<u32>>,
    trace: RunTrace,
    load_seconds: f64,
    /// Tensors proved bit-exact on their GPU at load (`--verify`).
    verified: usize,
    generate_seconds: Option<f64>,
}

pub fn run(args: RunArgs, out: Output) -> anyhow::Result<ExitCode> {
    let options = SplitOptions {
        mode: match args.offload_mode {
            ModeArg::InPlace => OffloadMode::InPlace,
            ModeArg::Upload => OffloadMode::Upload,
        },
        prefetch: args.prefetch,
        sync_timings: true,
        verify: args.verify,
    };
    let planned = args
        .inputs
        .builder(out)
        .verify(args.verify)
        .split_options(options)
        .plan()?;
    let model_type = planned
        .inventory
        .config
        .as_ref()
        .and_then(|c| c.model_type());
    if args.generate.is_some() && model_type == Some("bert") {
        bail!(
            "--generate: `{}` is an encoder (BERT); only decoders generate",
            planned.spec
        );
    }
    let ran = match stowage::choose_backend(args.backend.into(), &planned.plan)? {
        ChosenBackend::Cpu => run_on::<NdArray>(&planned, Targets::cpu(NdArrayDevice::Cpu), &args)?,
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        ChosenBackend::Gpu(targets) => run_on::<stowage::GpuBackend>(&planned, targets, &args)?,
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &ran_json(&planned.spec, &ran))?;
        writeln!(stdout)?;
    } else {
        write_ran(&mut stdout, &planned.spec, &ran, args.show)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn run_on<B: Backend>(
    planned: &Planned,
    targets: Targets<B>,
    args: &RunArgs,
) -> anyhow::Result<Ran> {
    let started = Instant::now();
    let (model, report) = planned.load_auto(targets.clone())?;
    let load_seconds = started.elapsed().as_secs_f64();
    let input_device = |outer: stowage::Device| {
        targets
            .device(outer)
            .cloned()
            .unwrap_or_else(|| targets.cpu.clone())
    };
    let verified = report.verified;
    match model {
        AutoModel::Bert(split) => {
            let device = input_device(split.outer_device());
            let (output, trace) = split.forward(&BertInput::from_ids(&args.ids, &device))?;
            let hidden = output.last_hidden_state;
            Ok(Ran {
                architecture: "BertModel",
                output_name: "last_hidden_state",
                shape: hidden.dims().to_vec(),
                values: hidden
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32 values"),
                generated: None,
                trace,
                load_seconds,
                verified,
                generate_seconds: None,
            })
        }
        AutoModel::Llama(split) => {
            let device = input_device(split.outer_device());
            let last_logits = |ids: &[u32]| -> anyhow::Result<(Tensor<B, 1>, RunTrace)> {
                let (logits, trace) = split.forward(&token_ids::<B>(&[ids], &device))?;
                let [_, seq, vocab] = logits.dims();
                Ok((
                    logits
                        .slice([0..1, seq - 1..seq, 0..vocab])
                        .reshape([vocab]),
                    trace,
                ))
            };
            let (last, trace) = last_logits(&args.ids)?;
            let values: Vec<f32> = last
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 values");
            let mut generated = None;
            let mut generate_seconds = None;
            if let Some(n) = args.generate {
                let t = Instant::now();
                let mut ids = args.ids.clone();
                let mut next = argmax(&values);
                for k in 0..n {
                    ids.push(next);
                    if k + 1 < n {
                        let (logits, _) = last_logits(&ids)?;
                        next = argmax(
                            &logits
                                .into_data()
                                .convert::<f32>()
                                .to_vec()
                                .expect("f32 values"),
                        );
                    }
                }
                generated = Some(ids.split_off(args.ids.len()));
                generate_seconds = Some(t.elapsed().as_secs_f64());
            }
            Ok(Ran {
                architecture: "LlamaForCausalLM",
                output_name: "logits at the last position",
                shape: vec![values.len()],
                values,
                generated,
                trace,
                load_seconds,
                verified,
                generate_seconds,
            })
        }
    }
}

/// The index of the largest value (the first of equals), as greedy decoding picks it.
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn source_name(s: UnitSource) -> &'static str {
    match s {
        UnitSource::Resident => "resident",
        UnitSource::Cpu => "copied from cpu",
        UnitSource::Disk => "read from disk",
    }
}

/// `values` with `shape` as nested JSON arrays.
fn nested(values: &[f32], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => json!(values),
        [n, rest @ ..] => {
            let step = values.len() / n.max(&1);
            Value::Array(
                values
                    .chunks(step.max(1))
                    .map(|chunk| nested(chunk, rest))
                    .collect(),
            )
        }
    }
}

fn ran_json(spec: &str, r: &Ran) -> Value {
    json!({
        "model": spec,
        "architecture": r.architecture,
        "output": {
            "name": r.output_name,
            "shape": r.shape,
            "values": nested(&r.values, &r.shape),
        },
        "generated": r.generated,
        "units": r.trace.units.iter().map(|u| json!({
            "name": u.name,
            "planned": u.planned.to_json(),
            "ran_on": u.ran_on.to_json(),
            "weights": match u.source {
                UnitSource::Resident => "resident",
                UnitSource::Cpu => "cpu",
                UnitSource::Disk => "disk",
            },
            "seconds": u.seconds,
            "wait_seconds": u.wait_seconds,
        })).collect::<Vec<_>>(),
        "forward_seconds": r.trace.seconds,
        "load_seconds": r.load_seconds,
        "verified": r.verified,
        "generate_seconds": r.generate_seconds,
    })
}

fn write_ran(w: &mut impl Write, spec: &str, r: &Ran, show: usize) -> std::io::Result<()> {
    writeln!(
        w,
        "{spec} ({}): loaded in {:.2} s, forward pass in {:.3} s",
        r.architecture, r.load_seconds, r.trace.seconds
    )?;
    if r.verified > 0 {
        writeln!(
            w,
            "verified: {} tensors on the GPUs hold exactly the file's values (quantized ones: the host rule's)",
            r.verified
        )?;
    }
    let first: Vec<String> = r
        .values
        .iter()
        .take(show)
        .map(|v| format!("{v:.6}"))
        .collect();
    writeln!(
        w,
        "{} {:?}: [{}{}]",
        r.output_name,
        r.shape,
        first.join(", "),
        if r.values.len() > show { ", …" } else { "" }
    )?;
    if let Some(g) = &r.generated {
        let ids: Vec<String> = g.iter().map(u32::to_string).collect();
        writeln!(
            w,
            "generated {} tokens in {:.2} s: {}",
            g.len(),
            r.generate_seconds.unwrap_or(0.0),
            ids.join(",")
        )?;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).force_no_tty();
    table.set_header([
        "unit",
        "planned",
        "ran on",
        "weights",
        "compute ms",
        "wait ms",
    ]);
    for u in &r.trace.units {
        table.add_row(vec![
            Cell::new(&u.name),
            Cell::new(u.planned.to_string()),
            Cell::new(u.ran_on.to_string()),
            Cell::new(source_name(u.source)),
            Cell::new(format!("{:.2}", u.seconds * 1e3)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.2}", u.wait_seconds * 1e3)).set_alignment(CellAlignment::Right),
        ]);
    }
    writeln!(w, "{table}")
}
