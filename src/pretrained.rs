//! The front door: [`Pretrained`], what `from_pretrained(..., device_map="auto")` is to
//! transformers users. One builder finds the checkpoint, measures the machine, plans and
//! loads, and hands back what the caller asks for: a ready split model of a shipped
//! architecture ([`Pretrained::load_bert`], [`Pretrained::load_llama`],
//! [`Pretrained::load_auto`]), the caller's own burn `Module` ([`Pretrained::load_module`]),
//! a split model of the caller's own [`Layered`] model ([`Pretrained::load_split`]), or the
//! name → tensor store ([`Pretrained::load_store`]). [`Pretrained::plan`] stops after
//! planning and returns a [`Planned`], which loads the same ways.
//!
//! `stowage plan`, `load`, `run` and `demo` are this builder with flags: every option below
//! has its flag, and the library and the CLI give the same maps, bytes and reports.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let config = stowage::synthetic::tiny_config("bert", 2).unwrap();
//! # stowage::synthetic::write_from_config(dir.path(), &config, stowage::DType::F32)?;
//! use stowage::{Pretrained, models::BertInput};
//! let cpu = burn_ndarray::NdArrayDevice::Cpu;
//! let (bert, report) = Pretrained::new(dir.path()).load_bert::<burn_ndarray::NdArray>(&cpu)?;
//! let (out, _) = bert.forward(&BertInput::from_ids(&[101, 42, 102], &cpu))?;
//! # assert_eq!(out.last_hidden_state.dims()[1], 3);
//! # assert!(report.unexpected.is_empty());
//! # Ok::<(), stowage::Error>(())
//! ```
//!
//! Your own burn module, built with lazy params (nothing is allocated until the checkpoint
//! fills it), or the name → tensor store (here from a checkpoint the doc writes itself):
//!
//! ```
//! # use burn::prelude::*;
//! # #[derive(burn::module::Module, Debug)]
//! # struct Mlp<B: Backend> { up: burn::nn::Linear<B> }
//! # let dir = tempfile::tempdir().unwrap();
//! # let mut sd = stowage::StateDict::new();
//! # sd.insert_f32("up.weight", &[2, 3], &[1., 2., 3., 4., 5., 6.])?;
//! # sd.insert_f32("up.bias", &[2], &[0.5, -0.5])?;
//! # sd.write(&dir.path().join("model.safetensors"))?;
//! use stowage::Pretrained;
//! let cpu = burn_ndarray::NdArrayDevice::Cpu;
//! let lazy = Mlp { up: burn::nn::LinearConfig::new(3, 2).init::<burn_ndarray::NdArray>(&cpu) };
//! let (mlp, report) = Pretrained::new(dir.path()).load_module(lazy, &cpu)?;
//! let y = mlp.up.forward(Tensor::<_, 2>::from_floats([[1.0, 0.0, 0.0]], &cpu));
//! # assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [1.5, 3.5]);
//! # assert!(report.missing.is_empty() && report.unexpected.is_empty());
//!
//! let (store, _) = Pretrained::new(dir.path()).load_store::<burn_ndarray::NdArray>(&cpu)?;
//! let bias = store.float::<1>("up.bias")?;
//! # assert_eq!(bias.into_data().to_vec::<f32>().unwrap(), [0.5, -0.5]);
//! # Ok::<(), stowage::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::Backend;
use serde_json::Value;
use stowage_planner::{
    InventoryOptions, Quantize, QuantizeAs, QuantizeModule, RuntimeOptions, SourceOptions,
};

use crate::error::{Error, Result};
use crate::models::{BertConfig, BertModel, Layered, LlamaConfig, LlamaForCausalLM};
use crate::saved::{budgets_from_json, options_from_json, read_device_map};
use crate::{
    BudgetOverrides, Budgets, Compat, DType, Device, DeviceMap, Inventory, LoadOptions, LoadReport,
    ModuleLoadOptions, ModuleLoadReport, OffloadOrder, Plan, PlanOptions, Renames, SplitLoadReport,
    SplitModel, SplitOptions, StateDict, Strategy, Targets, TensorStore, WeightLayout, builtin,
};

/// Where a model goes: a strategy, one device, or an explicit map
/// ([`Pretrained::device_map`]). The names are those of transformers' `device_map`.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceMapSpec {
    /// `"auto"`: the same as [`DeviceMapSpec::Balanced`], as in Accelerate.
    Auto,
    /// `"balanced"`: even shares over the GPUs, the last keeping its full budget, then cpu,
    /// then disk.
    Balanced,
    /// `"balanced_low_0"`: like balanced over GPUs 1…n; GPU 0 only gets what does not fit.
    BalancedLow0,
    /// `"sequential"`: GPU 0, GPU 1, …, cpu, disk, in order.
    Sequential,
    /// stowage's own: the contiguous split minimising the fullest GPU's relative load.
    Optimal,
    /// Everything on one device (`"cpu"`, `0`, `"disk"`).
    Device(Device),
    /// An explicit map (checked against the budgets).
    Map(DeviceMap),
    /// Any placement strategy by value (what `stowage plan --strategy` takes).
    Strategy(Strategy),
}

impl From<Strategy> for DeviceMapSpec {
    fn from(s: Strategy) -> Self {
        DeviceMapSpec::Strategy(s)
    }
}

impl From<Device> for DeviceMapSpec {
    fn from(d: Device) -> Self {
        DeviceMapSpec::Device(d)
    }
}

impl From<DeviceMap> for DeviceMapSpec {
    fn from(m: DeviceMap) -> Self {
        DeviceMapSpec::Map(m)
    }
}

/// A value given either typed or as the text a user typed (parsed when planning, so a bad
/// string is an error of [`Pretrained::plan`]).
#[derive(Debug, Clone)]
enum Given<T> {
    Typed(T),
    Text(String),
}

/// A callback for progress: bytes done, bytes in all.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;
/// A callback for notes: one line each (a GPU that could not be probed, an option that is
/// ignored, what the planner decided that a user could question).
pub type NoteFn = Arc<dyn Fn(&str) + Send + Sync>;

/// How to load once planned: what [`Pretrained`]'s load options say.
#[derive(Clone, Default)]
struct LoadSettings {
    checksums: bool,
    verify: bool,
    progress: Option<ProgressFn>,
    ignore_mismatched_sizes: bool,
    allow_missing: bool,
    renames: Renames,
    layout: WeightLayout,
    split: SplitOptions,
}

impl std::fmt::Debug for LoadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSettings")
            .field("checksums", &self.checksums)
            .field("verify", &self.verify)
            .field("progress", &self.progress.is_some())
            .field("ignore_mismatched_sizes", &self.ignore_mismatched_sizes)
            .field("allow_missing", &self.allow_missing)
            .field("split", &self.split)
            .finish()
    }
}

/// `from_pretrained` as a builder: name the model, set what you would pass to transformers,
/// then plan or load. Every option is optional; unset ones take the defaults of
/// `stowage plan` (or of the saved plan given to [`Pretrained::device_map_str`]).
///
/// The README's "`from_pretrained` parameters" table maps each transformers parameter to
/// its method here, or says why it does not apply.
#[derive(Clone, Default)]
pub struct Pretrained {
    model: Option<String>,
    source: SourceOptions,
    no_split: Vec<String>,
    strategy: Option<Strategy>,
    map: Option<Given<DeviceMap>>,
    compat: Option<Compat>,
    dtype: Option<Option<DType>>,
    gpu_float: Option<DType>,
    max_memory: Vec<Given<(Device, u64)>>,
    gpus: Option<Given<Vec<u64>>>,
    budgets: Option<Budgets>,
    offload_folder: Option<PathBuf>,
    max_seq_len: Option<u64>,
    batch: Option<u64>,
    gpu_overhead: Option<Given<u64>>,
    offload_order: Option<OffloadOrder>,
    quantize: Option<Quantize>,
    quantize_group: Option<u32>,
    quantize_modules: Vec<Given<QuantizeModule>>,
    state_dict: Option<Arc<StateDict>>,
    config_overrides: Vec<(String, Value)>,
    notes: Option<NoteFn>,
    load: LoadSettings,
}

impl std::fmt::Debug for Pretrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrained")
            .field("model", &self.model)
            .field("strategy", &self.strategy)
            .field("map", &self.map)
            .field("load", &self.load)
            .finish_non_exhaustive()
    }
}

impl Pretrained {
    /// The model to load: a folder (`model.safetensors`, or shards with
    /// `model.safetensors.index.json`, beside `config.json`), a `.safetensors` file, an index,
    /// a `config.json` alone (plans only), `ORG/NAME[@REVISION]` from the local Hugging Face
    /// cache (never downloaded: the error lists the paths tried), or `builtin:NAME`.
    pub fn new(model: impl AsRef<Path>) -> Self {
        Pretrained {
            model: Some(model.as_ref().to_string_lossy().into_owned()),
            ..Self::default()
        }
    }

    /// Like [`Pretrained::new`], with the model optional: `None` takes the model of the saved
    /// plan given to [`Pretrained::device_map_str`], else `builtin:llama-3-8b`.
    pub fn maybe(model: Option<String>) -> Self {
        Pretrained {
            model,
            ..Self::default()
        }
    }

    /// `revision`: the branch, tag or commit of an `ORG/NAME` model in the cache.
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.source.revision = Some(revision.into());
        self
    }

    /// `subfolder`: a folder inside the model repository.
    pub fn subfolder(mut self, subfolder: impl Into<String>) -> Self {
        self.source.subfolder = Some(subfolder.into());
        self
    }

    /// `variant`: `fp16` selects `model.fp16.safetensors` (and its index).
    pub fn variant(mut self, variant: impl Into<String>) -> Self {
        self.source.variant = Some(variant.into());
        self
    }

    /// `no_split_module_classes`, by path: one more module pattern placed whole (`*` within
    /// a segment, `**` across segments); numbered blocks are no-split already.
    pub fn no_split(mut self, pattern: impl Into<String>) -> Self {
        self.no_split.push(pattern.into());
        self
    }

    /// `device_map`: a strategy (`Auto` is the default), one device, or an explicit map.
    pub fn device_map(mut self, spec: impl Into<DeviceMapSpec>) -> Self {
        match spec.into() {
            DeviceMapSpec::Auto | DeviceMapSpec::Balanced => {
                self.strategy = Some(Strategy::Balanced)
            }
            DeviceMapSpec::BalancedLow0 => self.strategy = Some(Strategy::BalancedLow0),
            DeviceMapSpec::Sequential => self.strategy = Some(Strategy::Sequential),
            DeviceMapSpec::Optimal => self.strategy = Some(Strategy::Optimal),
            DeviceMapSpec::Device(d) => self.map = Some(Given::Typed(DeviceMap::single(d))),
            DeviceMapSpec::Map(m) => self.map = Some(Given::Typed(m)),
            DeviceMapSpec::Strategy(s) => self.strategy = Some(s),
        }
        self
    }

    /// `device_map` as text: a device (`cpu`, `0`, `disk`), a JSON object
    /// (`{"": "cpu"}`), or a file holding a map or a plan saved with
    /// [`crate::saved::plan_json`] (`stowage plan --json`), whose model, budgets and options
    /// are then reused. Read when planning.
    pub fn device_map_str(mut self, spec: impl Into<String>) -> Self {
        self.map = Some(Given::Text(spec.into()));
        self
    }

    /// Whose placement rules to follow: stowage's (default) or Accelerate's, quirks included.
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = Some(compat);
        self
    }

    /// `torch_dtype`: the dtype floating tensors are sized and converted to: `F32`, `F16` or
    /// `BF16`. Unset, or [`Pretrained::dtype_auto`], is `"auto"`: the config's
    /// `torch_dtype`, else the checkpoint's first floating dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(Some(dtype));
        self
    }

    /// `torch_dtype="auto"` (the default; undoes [`Pretrained::dtype`] and a saved plan's).
    pub fn dtype_auto(mut self) -> Self {
        self.dtype = Some(None);
        self
    }

    /// The dtype GPUs hold floats in, whatever the checkpoint stores (`F32` widens a bf16
    /// checkpoint on the device).
    pub fn gpu_float(mut self, dtype: DType) -> Self {
        self.gpu_float = Some(dtype);
        self
    }

    /// `max_memory`: the budget of one device, in bytes (repeat for more devices). A GPU
    /// index this machine lacks adds a planned GPU.
    pub fn max_memory(mut self, device: Device, bytes: u64) -> Self {
        self.max_memory.push(Given::Typed((device, bytes)));
        self
    }

    /// `max_memory` as text: `0=20GiB`, `cpu=64GiB`, or a JSON object
    /// (`{"0": "20GiB", "cpu": "64GiB"}`). Read when planning.
    pub fn max_memory_str(mut self, spec: impl Into<String>) -> Self {
        self.max_memory.push(Given::Text(spec.into()));
        self
    }

    /// Plan for GPUs of these sizes (bytes) instead of the ones present.
    pub fn gpus(mut self, sizes: &[u64]) -> Self {
        self.gpus = Some(Given::Typed(sizes.to_vec()));
        self
    }

    /// [`Pretrained::gpus`] as text: `2x24GiB`, or `80GiB,24GiB`. Read when planning.
    pub fn gpus_str(mut self, spec: impl Into<String>) -> Self {
        self.gpus = Some(Given::Text(spec.into()));
        self
    }

    /// Plan against these budgets instead of measuring the machine (then
    /// [`Pretrained::gpus`] and [`Pretrained::max_memory`] apply on top).
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// `offload_folder`: where disk-placed tensors that need converting are written; its
    /// filesystem's free space is the disk budget. Default: `$TMPDIR/stowage-offload`.
    pub fn offload_folder(mut self, folder: impl Into<PathBuf>) -> Self {
        self.offload_folder = Some(folder.into());
        self
    }

    /// The longest sequence to keep a KV cache and activations for (0 turns run-time room
    /// off). Default 4096.
    pub fn max_seq_len(mut self, tokens: u64) -> Self {
        self.max_seq_len = Some(tokens);
        self
    }

    /// Sequences run at once (KV cache and activations scale with it). Default 1.
    pub fn batch(mut self, batch: u64) -> Self {
        self.batch = Some(batch);
        self
    }

    /// Room kept on each GPU for the CUDA context and allocator slack. Default 512 MiB.
    pub fn gpu_overhead(mut self, bytes: u64) -> Self {
        self.gpu_overhead = Some(Given::Typed(bytes));
        self
    }

    /// [`Pretrained::gpu_overhead`] as text (`1GiB`). Read when planning.
    pub fn gpu_overhead_str(mut self, size: impl Into<String>) -> Self {
        self.gpu_overhead = Some(Given::Text(size.into()));
        self
    }

    /// Which units leave the GPUs first with [`DeviceMapSpec::Optimal`].
    pub fn offload_order(mut self, order: OffloadOrder) -> Self {
        self.offload_order = Some(order);
        self
    }

    /// `quantization_config`: quantize the linear weights inside the blocks as they go to a
    /// GPU (int8 or int4 values, one f32 scale per group).
    pub fn quantize(mut self, quantize: Quantize) -> Self {
        self.quantize = Some(quantize);
        self
    }

    /// `load_in_8bit=True`: int8, one scale per 128 values.
    pub fn load_in_8bit(self) -> Self {
        self.quantize(Quantize::Int8 {
            group: Quantize::DEFAULT_GROUP,
        })
    }

    /// `load_in_4bit=True`: int4, one scale per 128 values.
    pub fn load_in_4bit(self) -> Self {
        self.quantize(Quantize::Int4 {
            group: Quantize::DEFAULT_GROUP,
        })
    }

    /// `state_dict`: take the weights from tensors held in memory instead of the model's
    /// files. The model spec, if any, still gives the `config.json` (for `load_auto`,
    /// `load_bert`, `load_llama` and config overrides); [`Pretrained::maybe`]`(None)` plans the
    /// tensors alone. The tensors are written once into the offload folder as a safetensors
    /// file named by their contents, then planned and streamed as any checkpoint (see
    /// [`StateDict`]).
    pub fn state_dict(mut self, state_dict: StateDict) -> Self {
        self.state_dict = Some(Arc::new(state_dict));
        self
    }

    /// A per-module precision (`llm_int8_skip_modules`, and more): the linear weights of the
    /// modules `pattern` matches are quantized as `quantize` says (int8, int4, or
    /// [`QuantizeAs::Keep`] for the checkpoint's dtype) instead of as [`Pretrained::quantize`]
    /// says. The first matching rule wins; patterns match module paths as in
    /// [`QuantizeModule`] (`intermediate.dense` matches it in every layer). Rules given here
    /// replace a saved plan's.
    ///
    /// int4 in groups of 32 with the MLP's up-projection and attention's value in int8 keeps
    /// all-MiniLM-L6-v2's sentence embeddings at cosine ≥ 0.98 against f32, where plain int4
    /// does not (`cargo bench --bench quantize_accuracy`).
    pub fn quantize_module(mut self, pattern: &str, quantize: QuantizeAs) -> Self {
        self.quantize_modules
            .push(match QuantizeModule::new(pattern, quantize) {
                Ok(rule) => Given::Typed(rule),
                Err(_) => Given::Text(format!("{pattern}={}", quantize.as_str())),
            });
        self
    }

    /// [`Pretrained::quantize_module`] from text: `PATTERN=int8`, `PATTERN=int4` or
    /// `PATTERN=none` (`--quantize-module`).
    pub fn quantize_module_str(mut self, spec: &str) -> Self {
        self.quantize_modules.push(Given::Text(spec.to_string()));
        self
    }

    /// Values per quantization scale (a power of two from 8 to 1024), for the quantization
    /// set by [`Pretrained::quantize`] or by a saved plan.
    pub fn quantize_group(mut self, group: u32) -> Self {
        self.quantize_group = Some(group);
        self
    }

    /// `**kwargs` on the config: set `key` in `config.json` before planning, so that the
    /// plan and the model agree (`num_hidden_layers` = 2 plans and builds two layers; the
    /// checkpoint's tensors of the others are then unexpected and never read).
    pub fn config_override(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.config_overrides.push((key.into(), value.into()));
        self
    }

    /// `ignore_mismatched_sizes`: a checkpoint tensor whose shape differs from its
    /// parameter's is reported ([`ModuleLoadReport::mismatched`]) and the parameter keeps its
    /// own init, instead of failing ([`Pretrained::load_module`]).
    pub fn ignore_mismatched_sizes(mut self, yes: bool) -> Self {
        self.load.ignore_mismatched_sizes = yes;
        self
    }

    /// A parameter with no tensor in the checkpoint keeps its own init and is reported
    /// ([`ModuleLoadReport::missing`]) instead of failing ([`Pretrained::load_module`]).
    pub fn allow_missing(mut self, yes: bool) -> Self {
        self.load.allow_missing = yes;
        self
    }

    /// Rules from the caller's module paths to checkpoint names ([`Pretrained::load_module`]).
    pub fn renames(mut self, renames: Renames) -> Self {
        self.load.renames = renames;
        self
    }

    /// How the checkpoint lays out `Linear` weights ([`Pretrained::load_module`]).
    pub fn weight_layout(mut self, layout: WeightLayout) -> Self {
        self.load.layout = layout;
        self
    }

    /// Per-tensor checksums in the [`LoadReport`] (device, shape, sum, sum of absolute
    /// values).
    pub fn checksums(mut self, yes: bool) -> Self {
        self.load.checksums = yes;
        self
    }

    /// Prove every tensor loaded onto a GPU bit-exact against the file, with checksums taken
    /// on the device.
    pub fn verify(mut self, yes: bool) -> Self {
        self.load.verify = yes;
        self.load.split.verify = yes;
        self
    }

    /// Called as tensors are loaded with bytes done and bytes in all.
    pub fn progress(mut self, progress: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.load.progress = Some(Arc::new(progress));
        self
    }

    /// Called with each note as it arises (they are also in [`Planned::notes`]).
    pub fn on_note(mut self, note: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.notes = Some(Arc::new(note));
        self
    }

    /// How a split model runs its offloaded blocks (mode, prefetch, timings).
    pub fn split_options(mut self, options: SplitOptions) -> Self {
        let verify = options.verify || self.load.verify;
        self.load.split = options;
        self.load.split.verify = verify;
        self
    }

    /// Finds the model, takes its inventory, measures the machine (unless
    /// [`Pretrained::budgets`] or a saved plan gives budgets) and plans.
    ///
    /// # Errors
    ///
    /// A model that cannot be found or read, an option that cannot be used, a model that
    /// does not fit ([`Error::Place`]).
    pub fn plan(&self) -> Result<Planned> {
        let mut notes = Vec::new();
        let mut note = |n: &str| {
            if let Some(f) = &self.notes {
                f(n);
            }
            notes.push(n.to_string());
        };

        // A saved plan supplies the model, budgets and options it was made with.
        let (map, saved) = match &self.map {
            Some(Given::Typed(m)) => (Some(m.clone()), None),
            Some(Given::Text(spec)) => {
                let read = read_device_map(spec)?;
                (Some(read.map), read.saved)
            }
            None => (None, None),
        };
        let saved_str = |k: &str| {
            saved
                .as_ref()
                .and_then(|s| s.get(k))
                .and_then(Value::as_str)
        };
        let spec = self
            .model
            .clone()
            .or_else(|| saved_str("model").map(str::to_string))
            .unwrap_or_else(|| format!("{}{}", builtin::PREFIX, builtin::DEFAULT));
        let opts = InventoryOptions {
            source: self.source.clone(),
            no_split: self.no_split.clone(),
            ..InventoryOptions::default()
        };
        let offload_folder = self
            .offload_folder
            .clone()
            .unwrap_or_else(default_offload_folder);
        let (spec, inventory) = match &self.state_dict {
            None => {
                let inventory = inventory_of(&spec, &opts, &self.config_overrides)?;
                (spec, inventory)
            }
            Some(sd) => {
                let inventory =
                    state_dict_inventory(sd, self.model.as_deref(), &opts, &offload_folder)?;
                let inventory = if self.config_overrides.is_empty() {
                    inventory
                } else {
                    crate::overrides::apply(inventory, &self.config_overrides, &opts)?
                };
                let spec = match &self.model {
                    Some(m) => format!("state_dict ({} tensors, config of {m})", sd.len()),
                    None => format!("state_dict ({} tensors)", sd.len()),
                };
                (spec, inventory)
            }
        };
        tracing::info!("{}", inventory.describe());

        let mut overrides = BudgetOverrides::default();
        match &self.gpus {
            Some(Given::Typed(sizes)) => overrides.gpus = Some(sizes.clone()),
            Some(Given::Text(s)) => overrides.gpus = Some(crate::parse_gpus(s)?),
            None => {}
        }
        for m in &self.max_memory {
            match m {
                Given::Typed(pair) => overrides.max_memory.push(*pair),
                Given::Text(s) => overrides.max_memory.extend(crate::parse_max_memory(s)?),
            }
        }
        let given_budgets = match saved.as_ref().and_then(|s| s.get("budgets")) {
            Some(b) => Some(budgets_from_json(b)?),
            None => self.budgets.clone(),
        };
        let budgets = match given_budgets {
            Some(b) => {
                let b = match &overrides.gpus {
                    Some(sizes) => b.with_planned_gpus(sizes),
                    None => b,
                };
                b.with_max_memory(&overrides.max_memory)
            }
            None => {
                let probe = crate::probe(&offload_folder);
                if overrides.gpus.is_none()
                    && !overrides.max_memory.iter().any(|(d, _)| d.is_gpu())
                    && let Some(n) = &probe.gpu_note
                {
                    note(n);
                }
                probe.budgets(&overrides)?
            }
        };

        let mut options = match saved.as_ref().and_then(|s| s.get("options")) {
            Some(o) => options_from_json(o)?,
            None => default_plan_options(),
        };
        if let Some(s) = self.strategy {
            options.strategy = s;
        }
        if let Some(c) = self.compat {
            options.compat = c;
        }
        if let Some(d) = self.dtype {
            if let Some(d) = d
                && !matches!(d, DType::F32 | DType::F16 | DType::BF16)
            {
                return Err(Error::options(format!(
                    "dtype {d}: stowage sizes and converts floats to f32, f16 or bf16"
                )));
            }
            options.dtype = d;
        }
        if let Some(f) = self.gpu_float {
            if !matches!(f, DType::F32 | DType::F16 | DType::BF16) {
                return Err(Error::options(format!(
                    "gpu_float {f}: GPUs hold floats as f32, f16 or bf16"
                )));
            }
            options.gpu_float = Some(f);
        }
        if let Some(o) = self.offload_order {
            options.offload_order = o;
        }
        match (self.quantize, self.quantize_group) {
            (Some(q), None) => options.quantize = q,
            (Some(q), Some(group)) => options.quantize = Quantize::new(q.as_str(), Some(group))?,
            (None, Some(group)) if !options.quantize.is_none() => {
                options.quantize = Quantize::new(options.quantize.as_str(), Some(group))?;
            }
            (None, Some(_)) => {
                return Err(Error::options(
                    "--quantize-group needs --quantize int8 or --quantize int4",
                ));
            }
            (None, None) => {}
        }
        if !self.quantize_modules.is_empty() {
            options.quantize_modules = self
                .quantize_modules
                .iter()
                .map(|rule| match rule {
                    Given::Typed(rule) => Ok(rule.clone()),
                    Given::Text(spec) => QuantizeModule::parse(spec)
                        .map_err(|e| Error::options(format!("--quantize-module: {e}"))),
                })
                .collect::<Result<_>>()?;
        }
        let runtime: &mut RuntimeOptions = &mut options.runtime;
        if let Some(n) = self.max_seq_len {
            runtime.max_seq_len = n;
        }
        if let Some(b) = self.batch {
            runtime.batch = b;
        }
        match &self.gpu_overhead {
            Some(Given::Typed(b)) => runtime.gpu_overhead_bytes = *b,
            Some(Given::Text(s)) => runtime.gpu_overhead_bytes = crate::parse_size(s)?,
            None => {}
        }
        if options.offload_order == OffloadOrder::ExpertsFirst
            && options.strategy != Strategy::Optimal
        {
            return Err(Error::options(
                "--offload-order experts-first needs --strategy optimal",
            ));
        }
        options.device_map = map;
        if options.compat == Compat::Accelerate && !self.no_split.is_empty() {
            note(
                "--no-split is ignored by --compat accelerate for known architectures: Accelerate uses the model's own no-split classes",
            );
        }

        let plan = crate::plan(&inventory, &budgets, &options).map_err(|source| Error::Place {
            spec: spec.clone(),
            source: Box::new(source),
        })?;
        for n in &plan.notes {
            note(n);
        }
        let index = Arc::new(crate::module::name_index(&inventory));
        Ok(Planned {
            spec,
            index,
            inventory: Arc::new(inventory),
            plan,
            budgets,
            offload_folder,
            notes,
            load: self.load.clone(),
        })
    }

    /// [`Pretrained::plan`], then [`Planned::load_store`].
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`crate::load_store`].
    pub fn load_store<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(TensorStore<B>, LoadReport)> {
        self.plan()?.load_store(targets)
    }

    /// [`Pretrained::plan`], then [`Planned::load_module`]: fills the caller's burn module
    /// (built with lazy params), every parameter on the device the plan gives it.
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`crate::load`].
    pub fn load_module<B: Backend, M: burn::module::Module<B>>(
        &self,
        model: M,
        targets: impl Into<Targets<B>>,
    ) -> Result<(M, ModuleLoadReport)> {
        self.plan()?.load_module(model, targets)
    }

    /// [`Pretrained::plan`], then [`Planned::load_split`].
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`SplitModel::load`].
    pub fn load_split<B, M>(
        &self,
        build: impl Fn(&B::Device) -> M,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, M>, SplitLoadReport)>
    where
        B: Backend,
        M: Layered<B> + Sync,
        M::Block: Send + Sync,
    {
        self.plan()?.load_split(build, targets)
    }

    /// [`Pretrained::plan`], then [`Planned::load_bert`].
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`Planned::load_bert`].
    pub fn load_bert<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, BertModel<B>>, SplitLoadReport)> {
        self.plan()?.load_bert(targets)
    }

    /// [`Pretrained::plan`], then [`Planned::load_llama`].
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`Planned::load_llama`].
    pub fn load_llama<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, LlamaForCausalLM<B>>, SplitLoadReport)> {
        self.plan()?.load_llama(targets)
    }

    /// [`Pretrained::plan`], then [`Planned::load_auto`].
    ///
    /// # Errors
    ///
    /// Those of [`Pretrained::plan`] and [`Planned::load_auto`].
    pub fn load_auto<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(AutoModel<B>, SplitLoadReport)> {
        self.plan()?.load_auto(targets)
    }
}

/// The plan options `stowage plan` starts from: the defaults, with cpu sized as stowage's
/// CPU backend (burn-ndarray) holds floats, f32.
pub fn default_plan_options() -> PlanOptions {
    PlanOptions {
        cpu_float: Some(DType::F32),
        ..PlanOptions::default()
    }
}

/// The offload folder when none is given: `stowage-offload` in the temp folder.
pub fn default_offload_folder() -> PathBuf {
    std::env::temp_dir().join("stowage-offload")
}

/// The inventory of `spec` (a path, `ORG/NAME`, or `builtin:NAME`), with `overrides` set in
/// its config first.
/// The inventory of a state dict, written into `folder`, with the config of `model` if one is
/// named.
fn state_dict_inventory(
    sd: &StateDict,
    model: Option<&str>,
    opts: &InventoryOptions,
    folder: &Path,
) -> Result<Inventory> {
    let weights = sd.write_into(folder)?;
    let (config, builtin_config) = match model {
        Some(name) if name.starts_with(builtin::PREFIX) => {
            let name = &name[builtin::PREFIX.len()..];
            let config = builtin::config(name)
                .ok_or_else(|| Error::options(format!("no builtin `{name}`")))??;
            (None, Some(config))
        }
        Some(m) => {
            let files = stowage_planner::resolve(m, &opts.source)?;
            (files.config().map(Path::to_path_buf), None)
        }
        None => (None, None),
    };
    let files = stowage_planner::ModelFiles::Single { weights, config };
    let mut inventory = Inventory::from_files(&files, opts)?;
    if builtin_config.is_some() {
        inventory.config = builtin_config;
    }
    Ok(inventory)
}

fn inventory_of(
    spec: &str,
    opts: &InventoryOptions,
    overrides: &[(String, Value)],
) -> Result<Inventory> {
    let inventory = if let Some(name) = spec.strip_prefix(builtin::PREFIX) {
        let config = builtin::config(name).ok_or_else(|| {
            Error::options(format!(
                "no builtin `{name}`; available: {}",
                builtin::names().join(", ")
            ))
        })??;
        Inventory::from_config(config, opts)?
    } else {
        Inventory::from_spec(spec, opts)?
    };
    if overrides.is_empty() {
        return Ok(inventory);
    }
    crate::overrides::apply(inventory, overrides, opts)
}

/// A plan with everything needed to print or load it: the model's inventory, where every
/// tensor goes, the budgets it was made for, the offload folder, the notes, and how to load
/// (the options of the [`Pretrained`] that made it).
#[derive(Debug, Clone)]
pub struct Planned {
    /// The model as named.
    pub spec: String,
    /// The model's tensors and module tree (shared with the split models loaded from it).
    pub inventory: Arc<Inventory>,
    /// Where everything goes.
    pub plan: Plan,
    /// The budgets it was made for.
    pub budgets: Budgets,
    /// The offload folder.
    pub offload_folder: PathBuf,
    /// The notes, in the order they arose.
    pub notes: Vec<String>,
    /// Each tensor's index by name, built once and shared by every load from this plan.
    index: Arc<HashMap<String, usize>>,
    load: LoadSettings,
}

impl Planned {
    /// Each tensor's index in [`Planned::inventory`], by name (shared, built once).
    pub(crate) fn index(&self) -> Arc<HashMap<String, usize>> {
        self.index.clone()
    }

    /// The plan as JSON in the shape `stowage plan --json` prints (an HF-shaped
    /// `device_map`, devices, budgets, options, units, decisions), which
    /// [`Pretrained::device_map_str`] reads back.
    pub fn to_json(&self) -> Value {
        crate::saved::plan_json(&self.spec, &self.inventory, &self.plan, &self.budgets)
    }

    /// Bytes of the checkpoint's tensors (tied ones counted once): what a load reads, the
    /// total of its progress.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.inventory
            .tensors
            .iter()
            .filter(|t| t.tied_to.is_none())
            .map(|t| t.stored_bytes())
            .sum()
    }

    /// A note when the plan quantizes but no weight the rule picks is on a GPU (weights are
    /// quantized as they go to a GPU, so nothing would be).
    pub fn quantize_note(&self) -> Option<String> {
        let options = &self.plan.options;
        let on_gpus = self
            .inventory
            .tensors
            .iter()
            .zip(&self.plan.tensor_devices)
            .any(|(t, d)| matches!(d, Device::Gpu(_)) && options.quantize_for(t).applies_to(t));
        (options.quantizes() && !on_gpus).then(|| {
            let quantize = stowage_planner::quantize_summary(options);
            format!(
                "--quantize {quantize}: no weight it applies to is on a GPU in this plan; weights are \
                 quantized as they go to a GPU (cpu keeps f32, disk the checkpoint's bytes), so nothing \
                 is quantized"
            )
        })
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            offload_folder: self.offload_folder.clone(),
            checksums: self.load.checksums,
            verify: self.load.verify,
            progress: self.load.progress.clone().map(|p| {
                let b: Box<dyn Fn(u64, u64) + Send + Sync> = Box::new(move |d, t| p(d, t));
                b
            }),
        }
    }

    /// Loads every tensor onto its device into the name → tensor store ([`crate::load_store`]).
    ///
    /// # Errors
    ///
    /// Those of [`crate::load_store`].
    pub fn load_store<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(TensorStore<B>, LoadReport)> {
        crate::load_store(&self.inventory, &self.plan, targets, &self.load_options())
    }

    /// Fills the caller's burn module, built with lazy params ([`crate::load`]).
    ///
    /// # Errors
    ///
    /// Those of [`crate::load`].
    pub fn load_module<B: Backend, M: burn::module::Module<B>>(
        &self,
        model: M,
        targets: impl Into<Targets<B>>,
    ) -> Result<(M, ModuleLoadReport)> {
        let opts = ModuleLoadOptions {
            renames: self.load.renames.clone(),
            ignore_mismatched_sizes: self.load.ignore_mismatched_sizes,
            allow_missing: self.load.allow_missing,
            layout: self.load.layout,
            store: self.load_options(),
            quantize: self.plan.options.quantize,
            quantize_modules: self.plan.options.quantize_modules.clone(),
        };
        crate::module::load_indexed(
            model,
            &self.inventory,
            &self.index,
            &self.plan,
            targets,
            &opts,
            true,
        )
    }

    /// Loads the caller's [`Layered`] model as a [`SplitModel`]: each block where the plan
    /// puts it, offloaded blocks brought in at each forward pass.
    ///
    /// # Errors
    ///
    /// Those of [`SplitModel::load`].
    pub fn load_split<B, M>(
        &self,
        build: impl Fn(&B::Device) -> M,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, M>, SplitLoadReport)>
    where
        B: Backend,
        M: Layered<B> + Sync,
        M::Block: Send + Sync,
    {
        SplitModel::load_planned(build, self, targets, &self.load.split)
    }

    /// The model's config.json, or an error saying `what` needs one.
    fn config(&self, what: &str) -> Result<&stowage_planner::ModelConfig> {
        self.inventory.config.as_ref().ok_or_else(|| {
            Error::options(format!(
                "`{}` has no config.json: {what} needs one to know the architecture",
                self.spec
            ))
        })
    }

    /// Loads a BERT-family checkpoint (`model_type` `bert`) as a split [`BertModel`].
    ///
    /// # Errors
    ///
    /// No config.json, a config that is not BERT's, and those of [`SplitModel::load`].
    pub fn load_bert<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, BertModel<B>>, SplitLoadReport)> {
        let cfg = BertConfig::from_model_config(self.config("a BERT load")?)?;
        self.load_split(|d| cfg.init::<B>(d), targets)
    }

    /// Loads a Llama-family checkpoint (`llama`, `mistral`, `qwen2`) as a split
    /// [`LlamaForCausalLM`].
    ///
    /// # Errors
    ///
    /// No config.json, a config that is not of the Llama family, and those of
    /// [`SplitModel::load`].
    pub fn load_llama<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(SplitModel<B, LlamaForCausalLM<B>>, SplitLoadReport)> {
        let cfg = LlamaConfig::from_model_config(self.config("a Llama load")?)?;
        self.load_split(|d| cfg.init::<B>(d), targets)
    }

    /// Loads the checkpoint as the shipped architecture its config's `model_type` names:
    /// BERT (`bert`) or the Llama family (`llama`, `mistral`, `qwen2`).
    ///
    /// # Errors
    ///
    /// No config.json, no `model_type`, another architecture, and those of
    /// [`SplitModel::load`].
    pub fn load_auto<B: Backend>(
        &self,
        targets: impl Into<Targets<B>>,
    ) -> Result<(AutoModel<B>, SplitLoadReport)> {
        let config = self.config("`stowage run`")?;
        match config.model_type().unwrap_or("") {
            "bert" => {
                let (m, r) = self.load_bert(targets)?;
                Ok((AutoModel::Bert(Box::new(m)), r))
            }
            "llama" | "mistral" | "qwen2" => {
                let (m, r) = self.load_llama(targets)?;
                Ok((AutoModel::Llama(Box::new(m)), r))
            }
            "" => Err(Error::options(format!(
                "`{}`: config.json has no `model_type`",
                config.path.display()
            ))),
            other => Err(Error::options(format!(
                "`{}`: `stowage run` runs BERT (bert) and the Llama family (llama, mistral, qwen2), not `{other}`",
                config.path.display()
            ))),
        }
    }
}

/// A split model of one of the shipped architectures, as [`Planned::load_auto`] picks it.
#[derive(Debug)]
pub enum AutoModel<B: Backend> {
    /// BERT (`model_type` `bert`): `last_hidden_state` and the pooler output.
    Bert(Box<SplitModel<B, BertModel<B>>>),
    /// The Llama family (`llama`, `mistral`, `qwen2`): logits.
    Llama(Box<SplitModel<B, LlamaForCausalLM<B>>>),
}
