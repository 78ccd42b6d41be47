//! `stowage convert`: a checkpoint written again as (sharded) safetensors.

use std::path::PathBuf;
use std::process::ExitCode;

use stowage::planner::SourceOptions;
use stowage::{Inventory, InventoryOptions, format_bytes, parse_size, save_safetensors};

use super::Output;

const AFTER: &str = "\
Reads the tensors of MODEL (a pytorch_model.bin, its sharded index, a safetensors checkpoint,
a folder or ORG/NAME from the local Hugging Face cache) and writes them into OUT as safetensors,
streamed one tensor at a time: model.safetensors, or model-0000i-of-0000n.safetensors with
model.safetensors.index.json above --max-shard-size; config.json is copied. Tensor data are the
bytes safetensors.torch.save_file writes for the same tensors. Tied tensors are written once.

Examples:
  stowage convert ./bert-base-uncased ./bert-base-uncased-st
  stowage convert ./model/pytorch_model.bin.index.json ./out --max-shard-size 2GB";

/// Arguments of `stowage convert`.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER)]
pub struct ConvertArgs {
    /// The checkpoint to read
    model: String,
    /// The folder to write (created if missing)
    out: PathBuf,
    /// The largest shard [default: 5GB, as save_pretrained]
    #[arg(long, value_name = "SIZE")]
    max_shard_size: Option<String>,
    /// Branch, tag or commit in the HF cache
    #[arg(long)]
    revision: Option<String>,
    /// A folder inside the model
    #[arg(long)]
    subfolder: Option<String>,
    /// A weights variant (`fp16`: pytorch_model.fp16.bin)
    #[arg(long)]
    variant: Option<String>,
}

pub fn run(args: ConvertArgs, out: Output) -> anyhow::Result<ExitCode> {
    let max = match &args.max_shard_size {
        Some(s) => parse_size(s)?,
        None => stowage::DEFAULT_MAX_SHARD_BYTES,
    };
    let opts = InventoryOptions {
        source: SourceOptions {
            revision: args.revision,
            subfolder: args.subfolder,
            variant: args.variant,
        },
        ..InventoryOptions::default()
    };
    let inventory = Inventory::from_spec(&args.model, &opts)?;
    let mut last = 0u64;
    let report = save_safetensors(&inventory, &args.out, max, &mut |done, total| {
        if total > 0 && done * 10 / total > last {
            last = done * 10 / total;
            out.note(&format!(
                "converted {} of {}",
                format_bytes(done),
                format_bytes(total)
            ));
        }
    })?;
    for (t, owner) in &report.tied {
        out.note(&format!(
            "`{t}` shares `{owner}`'s storage: written once, as `{owner}`"
        ));
    }
    println!(
        "wrote {} tensors ({}) to {}:",
        report.tensors,
        format_bytes(report.bytes),
        args.out.display()
    );
    for f in &report.files {
        println!("  {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
