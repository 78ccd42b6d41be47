//! Loading a planned checkpoint into a burn module, parameter by parameter.
//!
//! Three ways in, from cheapest to complete:
//! - [`module_tensors`]: a model's parameters as [`TensorInfo`]s (path, shape, dtype), read
//!   from a model built with lazy parameters without initialising any of them, so a model of
//!   any size costs nothing to describe. This is the third inventory source, after checkpoint
//!   headers and `config.json`: `Inventory::from_tensors(module_tensors(&model), None, ..)`.
//! - [`check_module`]: matches a model against an [`Inventory`]: which parameter takes which
//!   tensor, which parameters are missing from the checkpoint, which tensors no parameter uses,
//!   and which shapes disagree. It reads no tensor data.
//! - [`load`]: [`check_module`], then [`crate::load_store`] for the tensors the model uses,
//!   then a [`ModuleMapper`] that puts each tensor in its parameter with
//!   [`Param::transform_for_load`]. The random init of a loaded parameter never runs; a
//!   parameter that is not loaded stays as it was (lazy ones stay lazy).
//!
//! With [`ModuleLoadOptions::quantize`], the weights the planner's rule picks are read one by
//! one and quantized as they are loaded: on their GPU from the checkpoint's bytes where the
//! targets have device transforms and the kernels' layout fits, else on the host with the same
//! rule; a [`QuantLinear`](crate::QuantLinear)'s weight is then held as burn's quantized tensor ([`crate::quantized`] has the format, what
//! burn 0.21 can hold and why burn's own `Linear` cannot).
//!
//! Names go through [`Renames`] from the model path to the checkpoint name (`gamma` →
//! `weight`, a `model.` prefix, …). Tied tensors (`lm_head.weight` tied to
//! `model.embed_tokens.weight` by the inventory or its config) load once: every parameter
//! that uses them holds a view of the same storage.
//!
//! # Linear layout
//!
//! PyTorch, and so every Hugging Face checkpoint, stores a `Linear` weight as `[out, in]` and
//! computes `x Wᵀ`; burn's [`Linear`](burn::nn::Linear) computes `x W` with `W` as
//! `[in, out]`. burn 0.21 has two layouts for it ([`LinearLayout`](burn::nn::LinearLayout)):
//! - `LinearLayout::Col` (`LinearConfig::with_layout`): the weight is initialised as
//!   `[out, in]` and its load mapper transposes whatever is loaded. A PyTorch tensor goes in
//!   as it is, and the transpose is a stride swap, not a copy.
//! - `LinearLayout::Row`, the default: there is no mapper, so [`load`] transposes the
//!   `[out, in]` tensor itself (a view again) before [`Param::transform_for_load`].
//!
//! Either way the parameter ends up `[in, out]` holding the checkpoint's numbers, and both
//! layouts load the same checkpoint. On the CPU the view is not kept: burn-ndarray 0.21 would
//! re-lay it out (a strided copy of the whole weight) at every matmul, so a weight the
//! parameter sees transposed is read from the file as its transpose, once, into row-major
//! memory, and the file's pages are released. Other CPU matrices (an embedding) get their own
//! memory too, since burn-ndarray copies a tensor over mapped pages at every operation;
//! vectors (norms, biases) stay zero-copy over the mapped pages, where that copy costs next to
//! nothing. GPU tensors are as [`crate::load_store`] gives them.
//!
//! A Linear weight is the `weight` parameter of a module of type `Linear` (burn's container
//! name `Struct:Linear`); whether its load mapper transposes is found by loading a 1×2 probe
//! into a clone of the parameter, which initialises nothing.
//! [`module_tensors`] and mismatch errors give Linear shapes as PyTorch does, `[out, in]`.
//! Checkpoints written by burn itself (burn-store) hold each weight as its save mapper gives
//! it; load those with [`WeightLayout::Burn`]. A square weight saved in the other layout
//! cannot be told apart by its shape: pick the layout that matches the checkpoint.
//!
//! # Example
//!
//! A model of two `Linear` layers and an `Embedding`, built lazily, loaded from a
//! Hugging Face style checkpoint:
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, LinearLayout};
//! use burn::prelude::*;
//! use burn_ndarray::{NdArray, NdArrayDevice};
//! use stowage::{Budgets, Inventory, InventoryOptions, ModuleLoadOptions, PlanOptions};
//!
//! #[derive(Module, Debug)]
//! struct Tiny<B: Backend> {
//!     embed: Embedding<B>,
//!     up: Linear<B>,
//!     down: Linear<B>,
//! }
//!
//! # use safetensors::tensor::{Dtype, TensorView};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("model.safetensors");
//! # let f32s = |n: usize| (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect::<Vec<u8>>();
//! # let (embed, up_w, up_b, down_w) = (f32s(8), f32s(6), f32s(3), f32s(6));
//! # let views = vec![
//! #     ("embed.weight", TensorView::new(Dtype::F32, vec![4, 2], &embed).unwrap()),
//! #     ("up.weight", TensorView::new(Dtype::F32, vec![3, 2], &up_w).unwrap()),
//! #     ("up.bias", TensorView::new(Dtype::F32, vec![3], &up_b).unwrap()),
//! #     ("down.weight", TensorView::new(Dtype::F32, vec![2, 3], &down_w).unwrap()),
//! # ];
//! # safetensors::serialize_to_file(views, None, &path).unwrap();
//! // model.safetensors holds embed.weight [4, 2], up.weight [3, 2] (PyTorch's [out, in]),
//! // up.bias [3] and down.weight [2, 3], each counting 0, 1, 2, … in f32.
//! let inventory = Inventory::from_spec(path.to_str().unwrap(), &InventoryOptions::default())?;
//! let budgets = Budgets { gpus: vec![], cpu_bytes: 1 << 20, disk_bytes: 1 << 20 };
//! let plan = stowage::plan(&inventory, &budgets, &PlanOptions::default())?;
//!
//! // Lazy: nothing is allocated, and the random init of what is loaded never runs.
//! let device = NdArrayDevice::Cpu;
//! let model = Tiny::<NdArray> {
//!     embed: EmbeddingConfig::new(4, 2).init(&device),
//!     up: LinearConfig::new(2, 3).init(&device),
//!     down: LinearConfig::new(3, 2)
//!         .with_bias(false)
//!         .with_layout(LinearLayout::Col)
//!         .init(&device),
//! };
//! let options = ModuleLoadOptions::default();
//! let (model, report) = stowage::load(model, &inventory, &plan, &device, &options)?;
//! assert_eq!(report.loaded.len(), 4);
//!
//! // up.weight was [[0, 1], [2, 3], [4, 5]] as [out, in]: burn holds it as [in, out].
//! assert_eq!(model.up.weight.dims(), [2, 3]);
//! let x = Tensor::<NdArray, 2>::from_floats([[1.0, 10.0]], &device);
//! let y = model.up.forward(x.clone());
//! // y[o] = Σ_i x[i]·W[o][i] + b[o]: 0·1 + 1·10 + 0, 2 + 30 + 1, 4 + 50 + 2
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [10.0, 33.0, 56.0]);
//! // The Col layout loads the same checkpoint the same way.
//! let z = model.down.forward(Tensor::<NdArray, 2>::from_floats([[1.0, 0.0, 0.0]], &device));
//! assert_eq!(z.into_data().to_vec::<f32>().unwrap(), [0.0, 3.0]);
//! # Ok::<(), stowage::Error>(())
//! ```

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{
    AllocationProperty, Bool, DType as BurnDType, Int, TensorData, TensorPrimitive,
    get_device_settings,
};
use stowage_planner::{DType, Inventory, Plan, Quantize, QuantizeModule, TensorInfo, TensorSource};

use crate::backend::Targets;
use crate::convert;
use crate::cube::{Site, Transforms};
use crate::error::{Error, Result};
use crate::load::{HostLayout, LoadOptions, load_store_as, quantize_for, verify_quantized};
use crate::quantized::{Held, QuantizedParam, QuantizedWeight};
use crate::rename::Renames;
use crate::report::LoadReport;
use crate::store::{DiskTensor, StoredTensor, TensorStore};

/// How the checkpoint lays out `Linear` weights (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// As PyTorch and Hugging Face store them: a `Linear` weight is `[out, in]`.
    #[default]
    PyTorch,
    /// As burn saves a module (burn-store): each parameter as its save mapper gives it, so
    /// `[in, out]` for the default `LinearLayout::Row` and `[out, in]` for `Col`.
    Burn,
}

/// How to load a module.
#[derive(Debug, Default)]
pub struct ModuleLoadOptions {
    /// Rules from model paths to checkpoint names.
    pub renames: Renames,
    /// A tensor whose shape differs from its parameter's is reported in
    /// [`ModuleLoadReport::mismatched`] and the parameter keeps its own init, instead of
    /// failing (transformers' `ignore_mismatched_sizes`).
    pub ignore_mismatched_sizes: bool,
    /// A parameter with no tensor in the checkpoint is reported in
    /// [`ModuleLoadReport::missing`] and keeps its own init, instead of failing.
    pub allow_missing: bool,
    /// How the checkpoint lays out `Linear` weights.
    pub layout: WeightLayout,
    /// How the store is loaded (offload folder, checksums, progress).
    pub store: LoadOptions,
    /// Quantize the weights the planner's rule picks ([`Quantize::applies_to`]: 2-D linear
    /// weights inside numbered blocks) as they are loaded, in groups of the option's size (the
    /// format: [`crate::quantized`]'s docs). Each is read from the checkpoint on its own, never
    /// through [`crate::load_store`]. A [`QuantLinear`](crate::QuantLinear) weight in PyTorch
    /// layout is held as burn's quantized tensor where its device can hold the format:
    /// quantized there from the checkpoint's bytes by the kernels when the targets carry device
    /// transforms (`GpuBackend`'s GPU targets) and its rows are whole groups of a size burn's
    /// blocks can take (at most 128), else quantized on the host. Every other one is
    /// dequantized (f32). With [`LoadOptions::verify`] in [`Self::store`], each one held on a
    /// GPU is proved there as [`crate::load_store`] proves quantized weights.
    /// [`ModuleLoadReport::quantized`] lists them, where each was quantized and whether it was
    /// verified. `Quantize::None` (the default) quantizes nothing.
    pub quantize: Quantize,
    /// Per-module precisions over [`Self::quantize`] (the plan's
    /// [`PlanOptions::quantize_modules`](crate::PlanOptions::quantize_modules)): the first rule
    /// matching a weight's module decides (see [`QuantizeModule`]).
    pub quantize_modules: Vec<QuantizeModule>,
}

/// A parameter whose checkpoint tensor has another shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The parameter's path in the model.
    pub param: String,
    /// The checkpoint tensor.
    pub tensor: String,
    /// The shape the parameter needs, in checkpoint layout (a `Linear` weight as
    /// [`WeightLayout`] says).
    pub expected: Vec<u64>,
    /// The checkpoint tensor's shape.
    pub got: Vec<u64>,
}

/// How a model matches an inventory, before anything is read: [`check_module`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleCheck {
    /// `(parameter, tensor)`: each parameter that will be loaded and its checkpoint tensor.
    pub matched: Vec<(String, String)>,
    /// `(parameter, tensor)`: parameters with no tensor in the checkpoint, under the name
    /// looked for (only with [`ModuleLoadOptions::allow_missing`]; otherwise an error).
    pub missing: Vec<(String, String)>,
    /// Checkpoint tensors no parameter uses (tied aliases are not counted).
    pub unexpected: Vec<String>,
    /// Parameters whose tensor has another shape (only with
    /// [`ModuleLoadOptions::ignore_mismatched_sizes`]; otherwise an error).
    pub mismatched: Vec<Mismatch>,
    /// `(parameter, owner)`: matched parameters whose tensor is tied to `owner`, whose
    /// storage they share.
    pub tied: Vec<(String, String)>,
}

/// What [`load`] did, after burn-store's `ApplyResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleLoadReport {
    /// `(parameter, tensor)`: parameters loaded and the tensor each took.
    pub loaded: Vec<(String, String)>,
    /// `(parameter, tensor)`: parameters left with their own init, no tensor being found
    /// under that name.
    pub missing: Vec<(String, String)>,
    /// Checkpoint tensors no parameter uses; they are not loaded.
    pub unexpected: Vec<String>,
    /// Parameters left with their own init, their tensor having another shape.
    pub mismatched: Vec<Mismatch>,
    /// `(parameter, owner)`: parameters sharing the storage of the tensor they are tied to.
    pub tied: Vec<(String, String)>,
    /// The store's load: bytes, devices, ties, time, memory. Quantized parameters are not in
    /// it: they are read apart, and listed in [`ModuleLoadReport::quantized`].
    pub store: LoadReport,
    /// Parameters quantized as they were loaded ([`ModuleLoadOptions::quantize`]): how each is
    /// held and the bytes it takes.
    pub quantized: Vec<QuantizedParam>,
}

/// The parameters of `model` as tensors to plan, in visiting order, without initialising
/// any lazy parameter.
///
/// Names are the model's own paths (apply [`Renames`] for checkpoint names); `source` is
/// [`TensorSource::Config`] and nothing is tied. Shapes are in checkpoint layout as PyTorch
/// stores it, so a `Linear` weight is `[out, in]` whatever its burn layout. The dtype is the
/// parameter's own once initialised, else the device's default (`f32` unless changed).
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn_ndarray::{NdArray, NdArrayDevice};
///
/// let layer = LinearConfig::new(4096, 1024).init::<NdArray>(&NdArrayDevice::Cpu);
/// let tensors = stowage::module_tensors(&layer);
/// assert_eq!(tensors[0].name, "weight");
/// assert_eq!(tensors[0].shape, [1024, 4096]);
/// assert_eq!(tensors[1].name, "bias");
/// assert_eq!(tensors[1].dtype, stowage::DType::F32);
/// assert!(!layer.weight.is_initialized());
/// ```
pub fn module_tensors<B: Backend, M: Module<B>>(model: &M) -> Vec<TensorInfo> {
    walk(model)
        .into_iter()
        .map(|slot| {
            let (dims, _) = slot.checkpoint_dims(WeightLayout::PyTorch);
            TensorInfo {
                name: slot.path,
                dtype: slot.dtype,
                shape: dims.iter().map(|&d| d as u64).collect(),
                source: TensorSource::Config,
                tied_to: None,
            }
        })
        .collect()
}

/// Matches `model`'s parameters with `inventory`'s tensors, reading no tensor data: the
/// dry run of [`load`], failing where it would fail.
///
/// # Errors
///
/// A parameter with no tensor (unless [`ModuleLoadOptions::allow_missing`]), a tensor whose
/// shape differs from its parameter's (unless [`ModuleLoadOptions::ignore_mismatched_sizes`]),
/// or a tensor of another kind (a float parameter and an integer tensor). Each error names
/// the parameter, the tensor and, for shapes, both shapes.
pub fn check_module<B: Backend, M: Module<B>>(
    model: &M,
    inventory: &Inventory,
    options: &ModuleLoadOptions,
) -> Result<ModuleCheck> {
    let slots = walk(model);
    Ok(match_slots(&slots, inventory, &name_index(inventory), options, true)?.0)
}

/// Each tensor's index in `inventory`, by name: built once per model and shared by every load
/// from it (a split model's blocks look their tensors up here at each run).
pub(crate) fn name_index(inventory: &Inventory) -> HashMap<String, usize> {
    inventory
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// Loads `inventory` where `plan` puts it and moves every tensor into its parameter of
/// `model`.
///
/// Tensors no parameter uses are not read. Each loaded tensor is shaped to its parameter
/// (a `Linear` weight per [`ModuleLoadOptions::layout`]) and given to
/// [`Param::transform_for_load`], so the parameter's load mapper applies, the tensor moves to
/// the device the parameter was built on, and the parameter's init never runs. Tensors the
/// plan leaves on disk are read in. Parameters not loaded (missing or mismatched, when
/// allowed) are left untouched.
///
/// The tensors come from [`crate::load_store`] onto `targets` (a CPU device, or
/// [`Targets`] with GPUs); see the module docs for an example.
///
/// # Errors
///
/// Those of [`check_module`], then those of [`crate::load_store`], then any read of a disk
/// tensor.
pub fn load<B: Backend, M: Module<B>>(
    model: M,
    inventory: &Inventory,
    plan: &Plan,
    targets: impl Into<Targets<B>>,
    options: &ModuleLoadOptions,
) -> Result<(M, ModuleLoadReport)> {
    load_indexed(
        model,
        inventory,
        &name_index(inventory),
        plan,
        targets,
        options,
        true,
    )
}

/// [`load`] with the inventory's [`name_index`] given. `unexpected` says whether to list the
/// checkpoint tensors no parameter uses (a block of a split model skips it: every tensor
/// outside the block would be listed).
pub(crate) fn load_indexed<B: Backend, M: Module<B>>(
    model: M,
    inventory: &Inventory,
    index: &HashMap<String, usize>,
    plan: &Plan,
    targets: impl Into<Targets<B>>,
    options: &ModuleLoadOptions,
    unexpected: bool,
) -> Result<(M, ModuleLoadReport)> {
    let slots = walk(&model);
    let (check, actions) = match_slots(&slots, inventory, index, options, unexpected)?;
    let layouts = host_layouts(&slots, &actions, inventory);
    let subset = subset(inventory, index, &actions);
    let targets: Targets<B> = targets.into();
    let transforms = targets.transforms;
    let gpus = targets.gpus.clone();
    let (store, store_report) = load_store_as::<B>(
        inventory,
        plan,
        targets,
        &options.store,
        &layouts,
        subset.as_deref(),
    )?;

    let mut loader = Loader {
        store: &store,
        slots: &slots,
        actions: &actions,
        next: 0,
        stack: Vec::new(),
        floats: HashMap::new(),
        quantized: Vec::new(),
        transforms,
        gpus,
        verify: options.store.verify,
        error: None,
    };
    let model = model.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    Ok((
        model,
        ModuleLoadReport {
            loaded: check.matched,
            missing: check.missing,
            unexpected: check.unexpected,
            mismatched: check.mismatched,
            tied: check.tied,
            store: store_report,
            quantized: loader.quantized,
        },
    ))
}

/// The kind of a parameter's tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Bool,
}

impl Kind {
    fn accepts(self, dtype: DType) -> bool {
        match self {
            Kind::Float => dtype.is_float(),
            Kind::Bool => dtype == DType::BOOL,
            Kind::Int => !dtype.is_float() && dtype != DType::BOOL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Float => "float",
            Kind::Int => "int",
            Kind::Bool => "bool",
        }
    }
}

/// One parameter as visited: everything matching needs, taken without initialising it.
#[derive(Debug, Clone)]
struct Slot {
    path: String,
    kind: Kind,
    dtype: DType,
    /// The dims of the parameter's value (a `Linear` weight: `[in, out]`).
    dims: Vec<usize>,
    /// `Some(transposes)` for a `Linear` weight: whether its load mapper transposes.
    linear: Option<bool>,
    /// Whether it is a [`QuantLinear`](crate::QuantLinear)'s weight, which can hold it
    /// quantized.
    quant_linear: bool,
}

impl Slot {
    /// The dims the checkpoint tensor must have under `layout`, and whether the tensor so
    /// shaped must be transposed before `transform_for_load`.
    fn checkpoint_dims(&self, layout: WeightLayout) -> (Vec<usize>, bool) {
        let reversed = || self.dims.iter().rev().copied().collect::<Vec<_>>();
        match (self.linear, layout) {
            (None, _) => (self.dims.clone(), false),
            // [out, in]: the mapper transposes it, or we do.
            (Some(transposes), WeightLayout::PyTorch) => (reversed(), !transposes),
            // As the save mapper wrote it: the load mapper undoes it.
            (Some(true), WeightLayout::Burn) => (reversed(), false),
            (Some(false), WeightLayout::Burn) => (self.dims.clone(), false),
        }
    }
}

/// What the loader does with one parameter.
#[derive(Debug, Clone)]
enum Action {
    /// Leave it as it is.
    Keep,
    /// Fill it from the store.
    Load {
        /// The tensor as the store names it.
        tensor: String,
        /// The tensor whose storage is used (the owner, for a tied tensor).
        storage: String,
        /// The dims to give the tensor before the optional transpose.
        dims: Vec<usize>,
        /// Whether to transpose it (a Row-layout `Linear` weight from `[out, in]`).
        transpose: bool,
    },
    /// Read it from the checkpoint and quantize it ([`ModuleLoadOptions::quantize`]).
    Quantize {
        /// The checkpoint tensor (2-D, its dims those of the parameter before the transpose).
        source: TensorInfo,
        /// What to quantize it to.
        quantize: Quantize,
        /// Whether a dequantized weight is transposed, as [`Action::Load`] says.
        transpose: bool,
        /// Whether it may be held quantized: a `QuantLinear` weight in PyTorch layout.
        hold: bool,
        /// Whether the parameter holds it transposed ([`seen_transposed`]): dequantized, it is
        /// then made as its transpose, so that the parameter is row-major.
        seen_transposed: bool,
    },
}

/// Visits every parameter, recording its path and facts without initialising it.
fn walk<B: Backend, M: Module<B>>(model: &M) -> Vec<Slot> {
    let mut v = Walker {
        stack: Vec::new(),
        slots: Vec::new(),
    };
    model.visit(&mut v);
    v.slots
}

struct Walker {
    /// `(name, container type of the module holding it)`, outermost first.
    stack: Vec<(String, String)>,
    slots: Vec<Slot>,
}

impl Walker {
    fn path(&self) -> String {
        let names: Vec<&str> = self.stack.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }

    /// `Some(is a QuantLinear)` inside a `Linear` or `QuantLinear`'s `weight`.
    fn in_linear_weight(&self) -> Option<bool> {
        match self.stack.last() {
            Some((n, c)) if n == "weight" && c == "Struct:Linear" => Some(false),
            Some((n, c)) if n == "weight" && c == "Struct:QuantLinear" => Some(true),
            _ => None,
        }
    }
}

impl<B: Backend> ModuleVisitor<B> for Walker {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push((name.into(), container_type.into()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let initialized = param.is_initialized();
        let dtype = if initialized {
            param.val().dtype()
        } else {
            get_device_settings::<B>(&param.lazy_device())
                .float_dtype
                .into()
        };
        let mut dims = param.lazy_shape().to_vec();
        let container = if D == 2 {
            self.in_linear_weight()
        } else {
            None
        };
        let linear = container.map(|_| {
            // Load a 1×2 probe into a clone (a lazy clone initialises nothing): a transposing
            // load mapper gives 2×1.
            let mut probe = [1usize; D];
            probe[D - 1] = 2;
            let probe = Tensor::<B, D>::zeros(probe, &param.lazy_device());
            let loaded = param.clone().transform_for_load(probe, param.id);
            loaded.lazy_shape().as_slice()[0] == 2
        });
        // burn's Col layout initialises `[out, in]` and transposes after init, so a lazy
        // one reports the init shape.
        if linear == Some(true) && !initialized {
            dims.reverse();
        }
        self.slots.push(Slot {
            path: self.path(),
            kind: Kind::Float,
            dtype: planner_dtype(dtype),
            dims,
            linear,
            quant_linear: container == Some(true),
        });
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let dtype = if param.is_initialized() {
            param.val().dtype()
        } else {
            get_device_settings::<B>(&param.lazy_device())
                .int_dtype
                .into()
        };
        self.slots.push(Slot {
            path: self.path(),
            kind: Kind::Int,
            dtype: planner_dtype(dtype),
            dims: param.lazy_shape().to_vec(),
            linear: None,
            quant_linear: false,
        });
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.slots.push(Slot {
            path: self.path(),
            kind: Kind::Bool,
            dtype: DType::BOOL,
            dims: param.lazy_shape().to_vec(),
            linear: None,
            quant_linear: false,
        });
    }
}

/// burn's dtype as the planner names it (quantized floats count as 8-bit integers).
fn planner_dtype(d: BurnDType) -> DType {
    match d {
        BurnDType::F64 => DType::F64,
        BurnDType::F32 | BurnDType::Flex32 => DType::F32,
        BurnDType::F16 => DType::F16,
        BurnDType::BF16 => DType::BF16,
        BurnDType::I64 => DType::I64,
        BurnDType::I32 => DType::I32,
        BurnDType::I16 => DType::I16,
        BurnDType::I8 | BurnDType::QFloat(_) => DType::I8,
        BurnDType::U64 => DType::U64,
        BurnDType::U32 => DType::U32,
        BurnDType::U16 => DType::U16,
        BurnDType::U8 => DType::U8,
        BurnDType::Bool(_) => DType::BOOL,
    }
}

/// Same shape up to dimensions of size 1, so one can be reshaped into the other.
fn compatible(expected: &[usize], got: &[u64]) -> bool {
    let a = expected.iter().map(|&d| d as u64).filter(|&d| d != 1);
    let b = got.iter().copied().filter(|&d| d != 1);
    a.eq(b)
}

fn file_of(t: &TensorInfo) -> String {
    match &t.source {
        TensorSource::File { path, .. } => format!("`{}`", path.display()),
        TensorSource::Config => "the config".to_string(),
    }
}

/// Matches slots with tensors: the check, and one action per slot.
fn match_slots(
    slots: &[Slot],
    inventory: &Inventory,
    index: &HashMap<String, usize>,
    options: &ModuleLoadOptions,
    unexpected: bool,
) -> Result<(ModuleCheck, Vec<Action>)> {
    let mut check = ModuleCheck::default();
    let mut actions = Vec::with_capacity(slots.len());
    let mut used = vec![false; inventory.tensors.len()];

    for slot in slots {
        let name = options.renames.apply(&slot.path);
        let Some(&i) = index.get(name.as_str()) else {
            if options.allow_missing {
                check.missing.push((slot.path.clone(), name));
                actions.push(Action::Keep);
                continue;
            }
            let files = match inventory.files.as_slice() {
                [] => "the checkpoint".to_string(),
                files => files
                    .iter()
                    .map(|f| format!("`{}`", f.display()))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Err(Error::MissingTensor {
                param: slot.path.clone(),
                tensor: name,
                files,
            });
        };
        let t = &inventory.tensors[i];
        used[i] = true;
        if !slot.kind.accepts(t.dtype) {
            return Err(Error::KindMismatch {
                param: slot.path.clone(),
                kind: slot.kind.name(),
                tensor: t.name.clone(),
                dtype: t.dtype,
                file: file_of(t),
            });
        }
        let (dims, transpose) = slot.checkpoint_dims(options.layout);
        if !compatible(&dims, &t.shape) {
            let mismatch = Mismatch {
                param: slot.path.clone(),
                tensor: t.name.clone(),
                expected: dims.iter().map(|&d| d as u64).collect(),
                got: t.shape.clone(),
            };
            if options.ignore_mismatched_sizes {
                check.mismatched.push(mismatch);
                actions.push(Action::Keep);
                continue;
            }
            let mut hint = String::new();
            if slot.linear.is_some() && mismatch.got.iter().rev().eq(mismatch.expected.iter()) {
                let other = match options.layout {
                    WeightLayout::PyTorch => WeightLayout::Burn,
                    WeightLayout::Burn => WeightLayout::PyTorch,
                };
                hint = format!(
                    " (a Linear weight laid out the other way: \
                     set ModuleLoadOptions::layout to WeightLayout::{other:?})"
                );
            }
            return Err(Error::ShapeMismatch(Box::new(
                crate::error::ShapeMismatch {
                    tensor: t.name.clone(),
                    file: file_of(t),
                    param: mismatch.param,
                    expected: mismatch.expected,
                    got: mismatch.got,
                    hint,
                },
            )));
        }
        let stored: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        // The planner's rule picks what is quantized (and sized so); a parameter whose dims
        // are not the tensor's own (up to the transpose) is loaded as it is.
        let quantize =
            stowage_planner::quantize_for(options.quantize, &options.quantize_modules, t);
        if slot.kind == Kind::Float && dims == stored && quantize.applies_to(t) {
            check.matched.push((slot.path.clone(), t.name.clone()));
            actions.push(Action::Quantize {
                source: t.clone(),
                quantize,
                transpose,
                hold: slot.quant_linear && transpose,
                seen_transposed: seen_transposed(slot, transpose),
            });
            continue;
        }
        let storage = match &t.tied_to {
            Some(owner) => {
                check.tied.push((slot.path.clone(), owner.clone()));
                if let Some(&o) = index.get(owner.as_str()) {
                    used[o] = true;
                }
                owner.clone()
            }
            None => t.name.clone(),
        };
        check.matched.push((slot.path.clone(), t.name.clone()));
        actions.push(Action::Load {
            tensor: t.name.clone(),
            storage,
            // The checkpoint's own shape may differ by dims of 1: the parameter's rank wins.
            dims,
            transpose,
        });
    }
    if unexpected {
        check.unexpected = inventory
            .tensors
            .iter()
            .zip(&used)
            .filter(|(t, used)| !**used && t.tied_to.is_none())
            .map(|(t, _)| t.name.clone())
            .collect();
    }
    Ok((check, actions))
}

/// How the CPU holds each float tensor the actions load ([`HostLayout`]): a vector as
/// [`crate::load_store`] holds it (zero copy where it can: burn-ndarray copying a norm's weight
/// at each use costs next to nothing), a matrix or more in its own row-major memory, and a
/// matrix its parameter sees transposed (a `Linear` weight from PyTorch's `[out, in]`) as its
/// transpose, so that the parameter is row-major. burn-ndarray would otherwise copy the
/// mapped pages, or re-lay out the transposed view, at every operation.
fn host_layouts(
    slots: &[Slot],
    actions: &[Action],
    inventory: &Inventory,
) -> HashMap<String, HostLayout> {
    let mut layouts: HashMap<String, HostLayout> = HashMap::new();
    for (slot, action) in slots.iter().zip(actions) {
        let Action::Load {
            storage,
            dims,
            transpose,
            ..
        } = action
        else {
            continue;
        };
        if slot.kind != Kind::Float {
            continue;
        }
        let stored = inventory.find(storage).map(|i| &inventory.tensors[i].shape);
        let as_stored = stored.is_some_and(|s| s.iter().map(|&d| d as usize).eq(dims.clone()));
        let layout = if dims.len() < 2 {
            HostLayout::AsStored
        } else if dims.len() == 2 && as_stored && seen_transposed(slot, *transpose) {
            HostLayout::Transposed
        } else {
            HostLayout::Owned
        };
        layouts
            .entry(storage.clone())
            .and_modify(|l| *l = l.join(layout))
            .or_insert(layout);
    }
    layouts.retain(|_, l| *l != HostLayout::AsStored);
    layouts
}

/// Whether a parameter holds its checkpoint tensor transposed: once, by the loader
/// (`transpose`) or by its load mapper (a `LinearLayout::Col` weight), not by both.
fn seen_transposed(slot: &Slot, transpose: bool) -> bool {
    transpose != (slot.linear == Some(true))
}

/// The indices of the tensors the actions load (and the owners of tied ones), in inventory
/// order, so unused tensors are not read; `None` when that is every tensor.
fn subset(
    inventory: &Inventory,
    index: &HashMap<String, usize>,
    actions: &[Action],
) -> Option<Vec<usize>> {
    let mut keep: Vec<usize> = Vec::new();
    for a in actions {
        if let Action::Load {
            tensor, storage, ..
        } = a
        {
            keep.extend(index.get(tensor.as_str()));
            keep.extend(index.get(storage.as_str()));
        }
    }
    keep.sort_unstable();
    keep.dedup();
    (keep.len() != inventory.tensors.len()).then_some(keep)
}

/// Fills parameters from the store, visiting them in the order [`walk`] did.
struct Loader<'a, B: Backend> {
    store: &'a TensorStore<B>,

    slots: &'a [Slot],
    actions: &'a [Action],
    next: usize,
    stack: Vec<String>,
    /// Float tensors already shaped, by storage name and dims, so tied parameters share them.
    floats: HashMap<(String, Vec<usize>), TensorPrimitive<B>>,
    /// The parameters quantized so far.
    quantized: Vec<QuantizedParam>,
    /// The targets' device transforms: quantizing on a GPU.
    transforms: Transforms<B>,
    /// The targets' GPUs, to name one in errors.
    gpus: Vec<B::Device>,
    /// Whether to verify quantized weights held on GPUs ([`LoadOptions::verify`]).
    verify: bool,
    /// The first failure; later parameters are left alone.
    error: Option<Error>,
}

impl<B: Backend> Loader<'_, B> {
    /// The action for the parameter being mapped, if there is one to run.
    fn take_action(&mut self) -> Option<&'_ Action> {
        let i = self.next;
        self.next += 1;
        if self.error.is_some() {
            return None;
        }
        let path = self.stack.join(".");
        match self.slots.get(i) {
            Some(slot) if slot.path == path => match &self.actions[i] {
                Action::Keep => None,
                a => Some(a),
            },
            _ => {
                self.error = Some(Error::PlanMismatch {
                    reason: format!(
                        "the model's parameters changed while loading (`{path}` was not visited \
                         in that place)"
                    ),
                });
                None
            }
        }
    }

    fn float<const D: usize>(&mut self, storage: &str, dims: &[usize]) -> Result<Tensor<B, D>> {
        // Tied params share one tensor: the first read is kept for the others.
        let key = (storage.to_string(), dims.to_vec());
        if let Some(p) = self.floats.get(&key) {
            return Ok(Tensor::from_primitive(p.clone()));
        }
        let tensor = self.store.float_as::<D>(storage, dims)?;
        self.floats.insert(key, tensor.clone().into_primitive());
        Ok(tensor)
    }

    /// The quantized (or dequantized) value of a parameter, from its checkpoint tensor read
    /// on its own, on `device`.
    fn quantized<const D: usize>(
        &mut self,
        source: &TensorInfo,
        quantize: Quantize,
        (transpose, hold, seen_transposed): (bool, bool, bool),
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let TensorSource::File {
            path,
            start,
            end,
            strides,
        } = &source.source
        else {
            return Err(Error::PlanMismatch {
                reason: format!(
                    "tensor `{}` comes from a config, not a checkpoint: there are no weights to load",
                    source.name
                ),
            });
        };
        let (rows, cols) = (source.shape[0] as usize, source.shape[1] as usize);
        let disk = DiskTensor {
            path: path.clone(),
            start: *start,
            end: *end,
            dtype: source.dtype,
            shape: vec![rows, cols],
        };
        let unsupported = || Error::UnsupportedDType {
            path: path.clone(),
            tensor: source.name.clone(),
            dtype: source.dtype,
        };
        let bytes = match strides {
            None => bytes::Bytes::from(disk.read()?),
            // A strided view, gathered in row-major order.
            Some(_) => {
                let file = crate::mmap::MappedFile::open(path)?;
                if *end as usize > file.len() {
                    return Err(Error::Plan(stowage_planner::Error::FileChanged {
                        path: path.clone(),
                        then: (*end, 0),
                        now: (file.len() as u64, 0),
                    }));
                }
                let gathered = source.contiguous(file.slice(*start, *end)).into_owned();
                file.release(*start, *end);
                bytes::Bytes::from(gathered)
            }
        };
        // The GPU it goes to, if it goes to one: `verify` proves weights there.
        let gpu = self.gpus.iter().position(|g| g == device).map(|i| i as u32);
        let site = Site {
            path,
            tensor: &source.name,
            index: gpu.unwrap_or(0),
        };
        let verify = self.verify && gpu.is_some();
        let (held, on_device, verified) = if hold {
            // The file's bytes for the device, shared (no copy).
            let data = crate::load::burn_dtype(source.dtype).map(|dtype| {
                let shared =
                    burn::tensor::Bytes::from_shared(bytes.clone(), AllocationProperty::Native);
                TensorData::from_bytes(shared, [rows, cols], dtype)
            });
            let done = quantize_for(
                (&bytes, data, source.dtype, rows, cols),
                (device, quantize),
                (site, verify),
                &self.transforms,
                false,
            )?;
            (done.held, done.on_device, done.verified)
        } else {
            let values = convert::to_f32(source.dtype, &bytes).ok_or_else(unsupported)?;
            drop(bytes);
            let weight =
                QuantizedWeight::quantize(&values, rows, cols, quantize).ok_or_else(unsupported)?;
            drop(values);
            let f = if seen_transposed {
                // Row-major once the parameter transposes it (see `HostLayout::Transposed`).
                let values = convert::transpose_f32(&weight.dequantize(), rows, cols);
                Tensor::<B, 2>::from_data(TensorData::new(values, [cols, rows]), device).transpose()
            } else {
                Tensor::from_data(TensorData::new(weight.dequantize(), [rows, cols]), device)
            };
            if verify {
                let stored = StoredTensor::Float {
                    tensor: f.clone().into_primitive(),
                    shape: vec![rows, cols],
                };
                verify_quantized(&stored, &weight, None, site, &self.transforms)?;
            }
            (Held::Dequantized(f), false, verify)
        };
        let names = (self.stack.join("."), source.name.clone());
        self.quantized.push(QuantizedParam {
            verified,
            ..QuantizedParam::new(names, quantize, (rows, cols), held.scheme(), on_device)
        });
        let t = match held {
            Held::Quantized(q, _) => q,
            Held::Dequantized(f) if transpose => f.transpose(),
            Held::Dequantized(f) => f,
        };
        Ok(Tensor::from_primitive(t.into_primitive()))
    }

    fn int<const D: usize>(&self, storage: &str, dims: &[usize]) -> Result<Tensor<B, D, Int>> {
        self.store.int_as::<D>(storage, dims)
    }

    fn bool<const D: usize>(&self, storage: &str, dims: &[usize]) -> Result<Tensor<B, D, Bool>> {
        self.store.bool_as::<D>(storage, dims)
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.into());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let action = self.take_action().cloned();
        if let Some(Action::Quantize {
            source,
            quantize,
            transpose,
            hold,
            seen_transposed,
        }) = action
        {
            let device = param.lazy_device();
            let how = (transpose, hold, seen_transposed);
            return match self.quantized::<D>(&source, quantize, how, &device) {
                Ok(t) => {
                    let id = param.id;
                    param.transform_for_load(t, id)
                }
                Err(e) => {
                    self.error = Some(e);
                    param
                }
            };
        }
        let Some(Action::Load {
            storage,
            dims,
            transpose,
            ..
        }) = action
        else {
            return param;
        };
        match self.float::<D>(&storage, &dims) {
            Ok(t) => {
                let t = if transpose { t.transpose() } else { t };
                let id = param.id;
                param.transform_for_load(t, id)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let Some(Action::Load { storage, dims, .. }) = self.take_action().cloned() else {
            return param;
        };
        match self.int::<D>(&storage, &dims) {
            Ok(t) => {
                let id = param.id;
                param.transform_for_load(t, id)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let Some(Action::Load { storage, dims, .. }) = self.take_action().cloned() else {
            return param;
        };
        match self.bool::<D>(&storage, &dims) {
            Ok(t) => {
                let id = param.id;
                param.transform_for_load(t, id)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_up_to_unit_dims() {
        assert!(compatible(&[4, 2], &[4, 2]));
        assert!(compatible(&[8], &[1, 8]));
        assert!(compatible(&[1], &[]));
        assert!(!compatible(&[4, 2], &[2, 4]));
        assert!(!compatible(&[4], &[5]));
    }

    #[test]
    fn linear_checkpoint_dims() {
        let slot = |linear| Slot {
            path: "w".into(),
            kind: Kind::Float,
            dtype: DType::F32,
            dims: vec![2, 3],
            linear,
            quant_linear: false,
        };
        assert_eq!(
            slot(None).checkpoint_dims(WeightLayout::PyTorch),
            (vec![2, 3], false)
        );
        assert_eq!(
            slot(Some(false)).checkpoint_dims(WeightLayout::PyTorch),
            (vec![3, 2], true)
        );
        assert_eq!(
            slot(Some(true)).checkpoint_dims(WeightLayout::PyTorch),
            (vec![3, 2], false)
        );
        assert_eq!(
            slot(Some(false)).checkpoint_dims(WeightLayout::Burn),
            (vec![2, 3], false)
        );
        assert_eq!(
            slot(Some(true)).checkpoint_dims(WeightLayout::Burn),
            (vec![3, 2], false)
        );
    }
}
