//! `stowage plan`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, ValueEnum};
use stowage::planner::Quantize;
use stowage::{Compat, DType, DeviceMapSpec, OffloadOrder, Planned, Pretrained};

use super::Output;

const PLAN_HELP: &str = "\
MODEL is one of:
  a folder with model.safetensors, or sharded shards + model.safetensors.index.json
  a .safetensors file, a model.safetensors.index.json, or a config.json alone
  ORG/NAME[@REVISION] from the local Hugging Face cache (never downloaded)
  builtin:NAME for a shipped config: llama-3-8b, llama-3-70b, mixtral-8x7b, kimi-k2
With no MODEL, plans builtin:llama-3-8b against this machine.

Strategies (units are the no-split blocks - layers.N, h.N, block.N, experts.N, --no-split
patterns - and the tensors outside them, in execution order):
  sequential      fill GPU 0, then GPU 1, ..., then cpu, then disk; a module that does not
                  fit is split into its children, a no-split unit that does not fit moves the
                  fill to the next device.
  balanced, auto  every GPU but the last is capped at total / GPUs + the largest unit, the
                  last keeps its full budget, then the sequential fill.
  balanced_low_0  the same over GPUs 1..n; GPU 0 only gets what does not fit on them.
  optimal         the contiguous split over the GPUs minimising the fullest GPU's load
                  relative to its room (exact dynamic programming); when the model does not
                  fit, the fewest units leave the GPUs, in --offload-order, for cpu then disk.
Every strategy keeps room for the run: the KV cache of each layer where it sits
(batch x max-seq-len x keys and values per token), peak activations and --gpu-overhead on
each GPU. When anything is offloaded, room for the largest offloaded unit stays free on
GPU 0 (and on cpu when disk is used); when nothing is, nothing is reserved.
--compat accelerate reproduces Accelerate's infer_auto_device_map instead, quirks included,
with no run-time room.

--quantize int8|int4 sizes the 2-D weights of linear layers inside the numbered blocks
(attention, MLP, experts; not embeddings, norms, routers or the head) as the GPUs hold them
once quantized at load: 1 or 1/2 byte per value, plus a 4-byte scale per --quantize-group
values (default 128) of each row. cpu and disk keep their sizing.

--gpu-float f32|f16|bf16 sizes the floating tensors placed on GPUs as held in that dtype,
whatever the checkpoint stores: --gpu-float f32 plans a bf16 or f16 checkpoint as f32 on the
GPUs, which `stowage load` widens there, on the device. cpu and disk keep their sizing.

Sizes: GiB/MiB/KiB are powers of 2, GB/MB/KB/TB powers of 10, bare numbers are bytes.

Examples:
  stowage plan
  stowage plan builtin:llama-3-70b --gpus 2x24GiB --max-memory cpu=64GiB --explain
  stowage plan builtin:llama-3-70b --gpus 2x48GiB --diff '--gpus 3x48GiB'
  stowage plan builtin:llama-3-70b --gpus 2x24GiB --quantize int4
  stowage plan ./Llama-3-8B --max-memory 0=10GiB --max-memory 1=10GiB --json > plan.json
  stowage plan --plan plan.json
  stowage plan org/model@main --max-memory '{\"0\":\"20GiB\",\"cpu\":\"64GiB\"}'

Exit codes: 0 a plan was found, 1 error (including a model that does not fit), 2 usage.";

/// Arguments of `stowage plan`.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = PLAN_HELP)]
pub struct PlanArgs {
    #[command(flatten)]
    inputs: PlanInputs,

    /// Print one reason per decision a user could question
    #[arg(long)]
    explain: bool,

    /// Also plan with these extra options and show what changes, e.g. '--gpus 3x24GiB'
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    diff: Option<String>,

    /// Print one JSON object (with an HF-shaped `device_map`) instead of a table
    #[arg(long)]
    json: bool,
}

/// What a plan is made from: the model and every planning option (shared by `plan` and `load`).
#[derive(Args, Debug, Clone, Default)]
pub struct PlanInputs {
    /// The model: a path, ORG/NAME[@REV] in the HF cache, or builtin:NAME
    model: Option<String>,

    /// Placement strategy [default: auto]
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,

    /// Whose semantics to follow [default: stowage]
    #[arg(long, value_enum)]
    compat: Option<CompatArg>,

    /// dtype to size floating tensors with [default: auto: config's torch_dtype, else the
    /// checkpoint's first floating dtype]
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,

    /// dtype the GPUs hold floating tensors in, whatever the checkpoint stores (f32 widens a
    /// bf16 or f16 checkpoint on the GPUs at load) [default: as --dtype sizes them]
    #[arg(long, value_enum, value_name = "DTYPE")]
    gpu_float: Option<FloatArg>,

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

    /// Longest sequence to keep a KV cache and activations for; 0 turns them off [default: 4096]
    #[arg(long, value_name = "TOKENS")]
    max_seq_len: Option<u64>,

    /// Sequences run at once [default: 1]
    #[arg(long, value_name = "N")]
    batch: Option<u64>,

    /// Room kept on each GPU for the CUDA context and allocator slack [default: 512MiB]
    #[arg(long, value_name = "SIZE")]
    gpu_overhead: Option<String>,

    /// Which units leave the GPUs first with --strategy optimal [default: last]
    #[arg(long, value_enum)]
    offload_order: Option<OffloadOrderArg>,

    /// Quantize linear-layer weights at load, on the GPUs: int8 or int4 values plus one f32
    /// scale per group; the plan sizes them exactly [default: none]
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,

    /// Values per quantization scale, along each weight's input dimension: a power of two
    /// from 8 to 1024 [default: 128]
    #[arg(long, value_name = "N")]
    quantize_group: Option<u32>,

    /// A per-module precision over --quantize, repeatable: the linear weights of the modules
    /// PATTERN matches (as --no-split patterns, and at the end of a path: `intermediate.dense`
    /// matches it in every layer) as int8, int4 or none; the first matching rule wins
    #[arg(long, value_name = "PATTERN=int8|int4|none")]
    quantize_module: Vec<String>,

    /// Use this device map instead of a strategy: cpu, 0, disk, a JSON object, or a file
    /// holding a map or a saved `--json` plan (whose budgets and options are reused)
    #[arg(long, value_name = "MAP", visible_alias = "plan")]
    device_map: Option<String>,

    /// Revision for ORG/NAME models (branch, tag or commit)
    #[arg(long)]
    revision: Option<String>,

    /// Folder inside the model repository
    #[arg(long)]
    subfolder: Option<String>,

    /// Weights variant (fp16 selects model.fp16.safetensors)
    #[arg(long)]
    variant: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Alias of balanced, as in Accelerate
    Auto,
    /// Even shares over the GPUs, the last GPU keeping its full budget, then cpu, then disk
    Balanced,
    /// Like balanced over GPUs 1..n; GPU 0 only gets what does not fit on them
    #[value(name = "balanced_low_0", alias = "balanced-low-0")]
    BalancedLow0,
    /// Fill devices in order: GPU 0, GPU 1, ..., cpu, disk
    Sequential,
    /// Contiguous split minimising the largest relative GPU load, computed exactly
    Optimal,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompatArg {
    /// Stowage's own rules
    Stowage,
    /// Reproduce Accelerate 1.x's infer_auto_device_map, quirks included
    Accelerate,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FloatArg {
    /// 32-bit float
    F32,
    /// 16-bit float
    F16,
    /// bfloat16
    Bf16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum QuantizeArg {
    /// Weights keep their dtype
    None,
    /// 8-bit values, one f32 scale per group
    Int8,
    /// 4-bit values, one f32 scale per group
    Int4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OffloadOrderArg {
    /// The head, then the last layers
    Last,
    /// Routed experts (last layer first) before any whole layer
    ExpertsFirst,
}

/// Parses the `--diff` string as more `stowage plan` options.
#[derive(Parser, Debug)]
#[command(name = "--diff", no_binary_name = true)]
struct DiffArgs {
    #[command(flatten)]
    args: PlanInputs,
}

pub fn run(args: PlanArgs, out: Output) -> anyhow::Result<ExitCode> {
    let base = make_plan(&args.inputs, out)?;
    let mut stdout = std::io::stdout().lock();
    if let Some(extra) = &args.diff {
        let words = split_words(extra)?;
        let diff = DiffArgs::try_parse_from(&words)
            .with_context(|| format!("cannot read --diff options `{extra}`"))?;
        let other = make_plan(
            &args.inputs.merged_with(diff.args),
            Output { quiet: true, ..out },
        )?;
        let a = stowage::saved::plan_json(&base.spec, &base.inventory, &base.plan, &base.budgets);
        let b =
            stowage::saved::plan_json(&other.spec, &other.inventory, &other.plan, &other.budgets);
        super::diff::write_diff(&mut stdout, &a, &b, args.json)?;
    } else if args.json {
        let value =
            stowage::saved::plan_json(&base.spec, &base.inventory, &base.plan, &base.budgets);
        serde_json::to_writer_pretty(&mut stdout, &value)?;
        writeln!(stdout)?;
    } else {
        super::table::write_plan(
            &mut stdout,
            &base.spec,
            &base.inventory,
            &base.plan,
            out.color,
        )?;
        if args.explain {
            super::table::write_explanation(&mut stdout, &base.plan)?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

impl PlanInputs {
    /// These options with `more` on top: options `more` sets win, lists are extended.
    fn merged_with(&self, more: PlanInputs) -> PlanInputs {
        let mut m = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if more.$f.is_some() { m.$f = more.$f; } )* };
        }
        take!(
            model,
            strategy,
            compat,
            dtype,
            gpus,
            offload_folder,
            max_seq_len,
            batch
        );
        take!(
            gpu_overhead,
            offload_order,
            device_map,
            revision,
            subfolder,
            variant
        );
        take!(quantize, quantize_group, gpu_float);
        m.max_memory.extend(more.max_memory);
        m.no_split.extend(more.no_split);
        m.quantize_module.extend(more.quantize_module);
        m
    }
}

/// Plans as the flags say: each flag given becomes one [`Pretrained`] call, the notes go to
/// stderr.
pub fn make_plan(args: &PlanInputs, out: Output) -> anyhow::Result<Planned> {
    Ok(args.builder(out).plan()?)
}

impl PlanInputs {
    /// The [`Pretrained`] these flags describe.
    pub fn builder(&self, out: Output) -> Pretrained {
        let mut b = Pretrained::maybe(self.model.clone()).on_note(move |n| out.note(n));
        if let Some(r) = &self.revision {
            b = b.revision(r);
        }
        if let Some(s) = &self.subfolder {
            b = b.subfolder(s);
        }
        if let Some(v) = &self.variant {
            b = b.variant(v);
        }
        for p in &self.no_split {
            b = b.no_split(p);
        }
        if let Some(m) = &self.device_map {
            b = b.device_map_str(m);
        }
        if let Some(g) = &self.gpus {
            b = b.gpus_str(g);
        }
        for m in &self.max_memory {
            b = b.max_memory_str(m);
        }
        if let Some(f) = &self.offload_folder {
            b = b.offload_folder(f);
        }
        if let Some(s) = self.strategy {
            b = b.device_map(match s {
                StrategyArg::Auto => DeviceMapSpec::Auto,
                StrategyArg::Balanced => DeviceMapSpec::Balanced,
                StrategyArg::BalancedLow0 => DeviceMapSpec::BalancedLow0,
                StrategyArg::Sequential => DeviceMapSpec::Sequential,
                StrategyArg::Optimal => DeviceMapSpec::Optimal,
            });
        }
        if let Some(c) = self.compat {
            b = b.compat(match c {
                CompatArg::Stowage => Compat::Stowage,
                CompatArg::Accelerate => Compat::Accelerate,
            });
        }
        b = match self.dtype {
            Some(DTypeArg::Auto) => b.dtype_auto(),
            Some(DTypeArg::F32) => b.dtype(DType::F32),
            Some(DTypeArg::F16) => b.dtype(DType::F16),
            Some(DTypeArg::Bf16) => b.dtype(DType::BF16),
            None => b,
        };
        if let Some(f) = self.gpu_float {
            b = b.gpu_float(match f {
                FloatArg::F32 => DType::F32,
                FloatArg::F16 => DType::F16,
                FloatArg::Bf16 => DType::BF16,
            });
        }
        if let Some(o) = self.offload_order {
            b = b.offload_order(match o {
                OffloadOrderArg::Last => OffloadOrder::Last,
                OffloadOrderArg::ExpertsFirst => OffloadOrder::ExpertsFirst,
            });
        }
        if let Some(q) = self.quantize {
            b = b.quantize(match q {
                QuantizeArg::None => Quantize::None,
                QuantizeArg::Int8 => Quantize::Int8 {
                    group: Quantize::DEFAULT_GROUP,
                },
                QuantizeArg::Int4 => Quantize::Int4 {
                    group: Quantize::DEFAULT_GROUP,
                },
            });
        }
        if let Some(g) = self.quantize_group {
            b = b.quantize_group(g);
        }
        for rule in &self.quantize_module {
            b = b.quantize_module_str(rule);
        }
        if let Some(n) = self.max_seq_len {
            b = b.max_seq_len(n);
        }
        if let Some(n) = self.batch {
            b = b.batch(n);
        }
        if let Some(o) = &self.gpu_overhead {
            b = b.gpu_overhead_str(o);
        }
        b
    }
}

/// Splits a `--diff` string into words, honouring single and double quotes.
fn split_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unclosed quote in --diff `{s}`");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            split_words("--gpus 3x24GiB").unwrap(),
            ["--gpus", "3x24GiB"]
        );
        assert_eq!(
            split_words(r#"--max-memory '{"0": "1GiB"}' --dtype f16"#).unwrap(),
            ["--max-memory", r#"{"0": "1GiB"}"#, "--dtype", "f16"]
        );
        assert!(split_words("--x 'open").is_err());
    }
}
