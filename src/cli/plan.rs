//! `stowage plan`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use stowage::builtin;
use stowage::planner::{InventoryOptions, SourceOptions};
use stowage::{BudgetOverrides, DType, Inventory, PlanOptions, Strategy};

use super::Output;

const PLAN_HELP: &str = "\
MODEL is one of:
  a folder with model.safetensors, or sharded shards + model.safetensors.index.json
  a .safetensors file, a model.safetensors.index.json, or a config.json alone
  ORG/NAME[@REVISION] from the local Hugging Face cache (never downloaded)
  builtin:NAME for a shipped config: llama-3-8b, llama-3-70b, mixtral-8x7b, kimi-k2
With no MODEL, plans builtin:llama-3-8b against this machine.

Strategy sequential: fill GPU 0, then GPU 1, ..., then cpu, then disk, in execution order.
A module that does not fit is split into its children; a no-split unit (numbered blocks
such as layers.N, h.N, block.N, experts.N, and --no-split patterns) moves on to the next
device. When anything is offloaded, room for the largest offloaded unit stays free on GPU 0
(and on cpu when disk is used); when nothing is, nothing is reserved.

Sizes: GiB/MiB/KiB are powers of 2, GB/MB/KB/TB powers of 10, bare numbers are bytes.

Examples:
  stowage plan
  stowage plan builtin:llama-3-70b --gpus 2x24GiB --max-memory cpu=64GiB
  stowage plan ./Llama-3-8B --max-memory 0=10GiB --max-memory 1=10GiB --json
  stowage plan meta-llama/Meta-Llama-3-8B@main --max-memory '{\"0\":\"20GiB\",\"cpu\":\"64GiB\"}'

Exit codes: 0 a plan was found, 1 error (including a model that does not fit), 2 usage.";

/// Arguments of `stowage plan`.
#[derive(Args, Debug)]
#[command(after_help = PLAN_HELP)]
pub struct PlanArgs {
    /// The model: a path, ORG/NAME[@REV] in the HF cache, or builtin:NAME
    model: Option<String>,

    /// Placement strategy
    #[arg(long, value_enum, default_value_t = StrategyArg::Sequential)]
    strategy: StrategyArg,

    /// dtype to size floating tensors with (auto: config's torch_dtype, else the checkpoint's)
    #[arg(long, value_enum, default_value_t = DTypeArg::Auto)]
    dtype: DTypeArg,

    /// Budget of a device, DEVICE=SIZE (0=20GiB, cpu=64GiB, disk=500GB) or a JSON object;
    /// repeatable; a GPU index not present adds a planned GPU
    #[arg(long = "max-memory", value_name = "DEVICE=SIZE")]
    max_memory: Vec<String>,

    /// Plan for GPUs this machine does not have: 2x24GiB, or 80GiB,24GiB
    #[arg(long, value_name = "SPEC")]
    gpus: Option<String>,

    /// Folder for disk-offloaded tensors; its filesystem's free space is the disk budget
    #[arg(long, value_name = "DIR")]
    offload_folder: Option<PathBuf>,

    /// Extra no-split module pattern (`*` within a segment, `**` across segments); repeatable
    #[arg(long = "no-split", value_name = "PATTERN")]
    no_split: Vec<String>,

    /// Revision for ORG/NAME models (branch, tag or commit)
    #[arg(long)]
    revision: Option<String>,

    /// Folder inside the model repository
    #[arg(long)]
    subfolder: Option<String>,

    /// Weights variant (fp16 selects model.fp16.safetensors)
    #[arg(long)]
    variant: Option<String>,

    /// Print one JSON object (with an HF-shaped `device_map`) instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Fill devices in order: GPU 0, GPU 1, ..., cpu, disk
    Sequential,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DTypeArg {
    /// The config's torch_dtype, else the checkpoint's first floating dtype
    Auto,
    /// 32-bit float
    F32,
    /// 16-bit float
    F16,
    /// bfloat16
    Bf16,
}

pub fn run(args: PlanArgs, out: Output) -> anyhow::Result<ExitCode> {
    let opts = InventoryOptions {
        source: SourceOptions {
            revision: args.revision.clone(),
            subfolder: args.subfolder.clone(),
            variant: args.variant.clone(),
        },
        no_split: args.no_split.clone(),
        ..InventoryOptions::default()
    };
    let spec = args
        .model
        .clone()
        .unwrap_or_else(|| format!("{}{}", builtin::PREFIX, builtin::DEFAULT));
    let inventory = load_inventory(&spec, &opts)?;
    tracing::info!("{}", inventory.describe());

    let mut overrides = BudgetOverrides::default();
    if let Some(gpus) = &args.gpus {
        overrides.gpus = Some(stowage::parse_gpus(gpus)?);
    }
    for m in &args.max_memory {
        overrides.max_memory.extend(stowage::parse_max_memory(m)?);
    }
    let offload_folder = args
        .offload_folder
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("stowage-offload"));
    let probe = stowage::probe(&offload_folder);
    if overrides.gpus.is_none()
        && !overrides.max_memory.iter().any(|(d, _)| d.is_gpu())
        && let Some(note) = &probe.gpu_note
    {
        out.note(note);
    }
    let budgets = probe.budgets(&overrides)?;

    let dtype = match args.dtype {
        DTypeArg::Auto => None,
        DTypeArg::F32 => Some(DType::F32),
        DTypeArg::F16 => Some(DType::F16),
        DTypeArg::Bf16 => Some(DType::BF16),
    };
    let strategy = match args.strategy {
        StrategyArg::Sequential => Strategy::Sequential,
    };
    let plan = stowage::plan(&inventory, &budgets, &PlanOptions { strategy, dtype })
        .with_context(|| format!("cannot place `{spec}`"))?;

    let mut stdout = std::io::stdout().lock();
    if args.json {
        let value = super::table::plan_json(&spec, &inventory, &plan);
        serde_json::to_writer_pretty(&mut stdout, &value)?;
        writeln!(stdout)?;
    } else {
        super::table::write_plan(&mut stdout, &spec, &inventory, &plan, out.color)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn load_inventory(spec: &str, opts: &InventoryOptions) -> anyhow::Result<Inventory> {
    if let Some(name) = spec.strip_prefix(builtin::PREFIX) {
        let config = builtin::config(name).with_context(|| {
            format!(
                "no builtin `{name}`; available: {}",
                builtin::names().join(", ")
            )
        })??;
        return Ok(Inventory::from_config(config, opts)?);
    }
    Ok(Inventory::from_spec(spec, opts)?)
}
