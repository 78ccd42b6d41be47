//! The inventory of a model: every tensor's name, shape, dtype and size, arranged as an
//! ordered module tree, with the blocks that must not be split and the tied weights.
//!
//! Ways to take one:
//! - [`Inventory::from_spec`]: a folder, a `.safetensors` file, an index, a `config.json`, or
//!   `ORG/NAME[@rev]` from the local Hugging Face cache (see [`crate::resolve`]);
//! - [`Inventory::from_files`]: files already resolved;
//! - [`Inventory::from_config`]: a parsed config of a known architecture;
//! - [`Inventory::from_tensors`]: any tensor list (e.g. walked from a burn module).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::arch;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::header::read_header;
use crate::index::read_index;
use crate::order::{module_tree, permute};
use crate::pattern::Pattern;
use crate::source::{ModelFiles, SourceOptions, resolve};
use crate::tensor::TensorInfo;

/// Options for taking an inventory.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// Where to look inside a model folder or cache entry.
    pub source: SourceOptions,
    /// Extra no-split patterns (see [`Pattern`]), added to the defaults.
    pub no_split: Vec<String>,
    /// Whether numbered blocks (`layers.N`, `h.N`, `block.N`, `layer.N`, `blocks.N`,
    /// `experts.N`) are no-split units. On by default.
    pub default_no_split: bool,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            source: SourceOptions::default(),
            no_split: Vec::new(),
            default_no_split: true,
        }
    }
}

/// Container names whose numbered children are no-split blocks by default.
pub const BLOCK_CONTAINERS: &[&str] = &["layers", "h", "block", "layer", "blocks", "experts"];

/// A module: a dot path, the tensors directly under it, and its child modules, in
/// execution order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    /// Dot path (`model.layers.3`); `""` for the root.
    pub path: String,
    /// Indices into [`Inventory::tensors`] of the tensors directly under this module.
    pub tensors: Vec<usize>,
    /// Child modules.
    pub children: Vec<Module>,
    /// Whether this module must be placed whole on one device.
    pub no_split: bool,
    /// The indices of every tensor in this module and below: tensors are numbered depth
    /// first, so they are contiguous.
    pub range: std::ops::Range<usize>,
}

impl Module {
    /// Visits this module and all below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Module)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }

    /// Indices of every tensor in this module and below, in execution order.
    pub fn all_tensors(&self) -> Vec<usize> {
        self.range.clone().collect()
    }
}

/// An ordered description of a model, taken without reading tensor data.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Every tensor, in execution order (module tree order, depth first).
    pub tensors: Vec<TensorInfo>,
    /// The module tree; tensor indices point into `tensors`.
    pub root: Module,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Length and mtime of each file read, as it was then (empty for inventories not read
    /// from files).
    pub fingerprints: Vec<Fingerprint>,
    /// The model's config, if one was found.
    pub config: Option<ModelConfig>,
    /// The dtype `--dtype auto` means: the config's `torch_dtype`, else the checkpoint's first
    /// floating dtype.
    pub auto_dtype: Option<DType>,
}

impl Inventory {
    /// Resolves `spec` and takes its inventory.
    pub fn from_spec(spec: &str, opts: &InventoryOptions) -> Result<Inventory> {
        let files = resolve(spec, &opts.source)?;
        Self::from_files(&files, opts)
    }

    /// Takes the inventory of resolved model files.
    pub fn from_files(files: &ModelFiles, opts: &InventoryOptions) -> Result<Inventory> {
        let config = files.config().map(ModelConfig::from_file).transpose()?;
        let (tensors, paths) = match files {
            ModelFiles::Single { weights, .. } => {
                let tensors = read_header(weights)?.tensors;
                if tensors.is_empty() {
                    return Err(Error::NoTensors {
                        path: weights.clone(),
                    });
                }
                (tensors, vec![weights.clone()])
            }
            ModelFiles::Sharded { index, .. } => {
                let tensors = read_index(index)?;
                let mut paths = vec![index.clone()];
                for t in &tensors {
                    if let crate::TensorSource::File { path, .. } = &t.source
                        && !paths.contains(path)
                    {
                        paths.push(path.clone());
                    }
                }
                (tensors, paths)
            }
            ModelFiles::ConfigOnly { config: path } => {
                let config = config.as_ref().expect("config-only always has a config");
                (arch::expand(config, None)?, vec![path.clone()])
            }
        };
        let mut inv = Self::from_tensors(tensors, config, opts)?;
        inv.fingerprints = paths
            .iter()
            .map(|p| Fingerprint::of(p))
            .collect::<Result<_>>()?;
        inv.files = paths;
        Ok(inv)
    }

    /// Expands a config of a known architecture (see [`crate::arch`]) into an inventory.
    pub fn from_config(config: ModelConfig, opts: &InventoryOptions) -> Result<Inventory> {
        let tensors = arch::expand(&config, None)?;
        let path = config.path.clone();
        let mut inv = Self::from_tensors(tensors, Some(config), opts)?;
        inv.files = vec![path];
        Ok(inv)
    }

    /// Builds an inventory from any list of tensors: orders them, builds the module tree,
    /// marks no-split units and detects ties the config implies.
    pub fn from_tensors(
        mut tensors: Vec<TensorInfo>,
        config: Option<ModelConfig>,
        opts: &InventoryOptions,
    ) -> Result<Inventory> {
        let patterns = opts
            .no_split
            .iter()
            .map(|p| Pattern::new(p))
            .collect::<Result<Vec<Pattern>>>()?;
        if let Some(config) = &config {
            add_config_ties(&mut tensors, config);
        }
        let auto_dtype = config
            .as_ref()
            .and_then(ModelConfig::torch_dtype)
            .or_else(|| tensors.iter().map(|t| t.dtype).find(|d| d.is_float()));

        // Build the ordered module tree over the names (duplicates are caught there), then put
        // the tensors in its depth-first order.
        let (root, order) = module_tree(&tensors, &patterns, opts.default_no_split)?;
        permute(&mut tensors, order);
        Ok(Inventory {
            tensors,
            root,
            files: Vec::new(),
            fingerprints: Vec::new(),
            config,
            auto_dtype,
        })
    }

    /// Bytes of one tensor once loaded with `dtype` requested (zero when tied): as
    /// [`Self::bytes_of`] sizes it.
    pub fn tensor_bytes(&self, index: usize, dtype: Option<DType>) -> u64 {
        self.bytes_of(&self.tensors[index], dtype)
    }

    /// Whether `t` is kept in f32 when the model is loaded in f16: a floating tensor inside a
    /// module the architecture keeps in f32 ([`crate::arch::keep_in_fp32`], e.g. T5's `wo`).
    pub fn keeps_in_fp32(&self, t: &TensorInfo) -> bool {
        let keep = self
            .config
            .as_ref()
            .and_then(ModelConfig::model_type)
            .map_or(&[][..], crate::arch::keep_in_fp32);
        t.dtype.is_float() && t.name.split('.').any(|segment| keep.contains(&segment))
    }

    /// The dtype `t` is held in with `dtype` requested: f32 for a tensor the architecture
    /// keeps in f32 when `dtype` is f16 ([`Self::keeps_in_fp32`]), else `t`'s dtype sized as
    /// [`DType::sized_as`] says.
    pub fn dtype_of(&self, t: &TensorInfo, dtype: Option<DType>) -> DType {
        if dtype == Some(DType::F16) && self.keeps_in_fp32(t) {
            DType::F32
        } else {
            t.dtype.sized_as(dtype)
        }
    }

    /// Bytes of `t` once loaded with `dtype` requested (zero when tied), in
    /// [`Self::dtype_of`].
    pub fn bytes_of(&self, t: &TensorInfo, dtype: Option<DType>) -> u64 {
        if t.tied_to.is_some() {
            return 0;
        }
        self.dtype_of(t, dtype)
            .bytes_for(t.elems())
            .unwrap_or(u64::MAX)
    }

    /// Bytes of a module and everything below it.
    pub fn module_bytes(&self, module: &Module, dtype: Option<DType>) -> u64 {
        module
            .range
            .clone()
            .map(|i| self.tensor_bytes(i, dtype))
            .fold(0, u64::saturating_add)
    }

    /// Bytes of the whole model with `dtype` requested, tied tensors counted once.
    pub fn total_bytes(&self, dtype: Option<DType>) -> u64 {
        self.module_bytes(&self.root, dtype)
    }

    /// Number of parameters, tied tensors counted once.
    pub fn param_count(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.tied_to.is_none())
            .map(TensorInfo::elems)
            .sum()
    }

    /// The index of the tensor called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Paths of the no-split units, in execution order.
    pub fn no_split_units(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.root.walk(&mut |m| {
            if m.no_split {
                out.push(m.path.as_str());
            }
        });
        out
    }

    /// A one-line description: architecture, files, tensor and parameter counts.
    pub fn describe(&self) -> String {
        let arch = self
            .config
            .as_ref()
            .and_then(|c| c.architecture().or(c.model_type()))
            .unwrap_or("unknown architecture");
        let n = self.param_count() as f64;
        let params = if n >= 1e9 {
            format!("{:.3} B", n / 1e9)
        } else {
            format!("{:.2} M", n / 1e6)
        };
        format!(
            "{arch}: {} tensors, {params} parameters",
            self.tensors.len()
        )
    }
}

/// The error for a name listed twice.
pub(crate) fn duplicate(first: &TensorInfo, second: &TensorInfo) -> Error {
    let path = |t: &TensorInfo| match &t.source {
        crate::TensorSource::File { path, .. } => path.clone(),
        crate::TensorSource::Config => PathBuf::from("config"),
    };
    Error::DuplicateTensor {
        tensor: second.name.clone(),
        first: path(first),
        second: path(second),
    }
}

/// Fails on the first name listed twice.
pub(crate) fn check_unique(tensors: &[TensorInfo]) -> Result<()> {
    let mut seen: HashMap<&str, &TensorInfo> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if let Some(first) = seen.insert(&t.name, t) {
            return Err(duplicate(first, t));
        }
    }
    Ok(())
}

/// Applies the ties the config implies: a tied tensor absent from the checkpoint is added as
/// an alias of its owner; one present with the owner's shape is marked tied (transformers
/// ties them at load, so its bytes are not loaded twice).
fn add_config_ties(tensors: &mut Vec<TensorInfo>, config: &ModelConfig) {
    let pairs = arch::tied_pairs(config);
    if pairs.is_empty() {
        return;
    }
    // Checkpoints of base classes drop the first segment (`wte.weight` for
    // `transformer.wte.weight`); try the owner as written, then without its prefix, among the
    // tensors as listed (not the aliases added below). A few pairs, so a scan for each rather
    // than a set of every name.
    let owners: Vec<Option<String>> = pairs
        .iter()
        .map(|(_, owner)| {
            let stripped = owner.split_once('.').map(|(_, rest)| rest);
            [Some(owner.as_str()), stripped]
                .into_iter()
                .flatten()
                .find(|o| tensors.iter().any(|t| t.name == *o))
                .map(str::to_string)
        })
        .collect();
    for ((tied, _), owner) in pairs.into_iter().zip(owners) {
        let Some(owner) = owner else {
            continue;
        };
        let Some(owner_info) = tensors.iter().find(|t| t.name == owner).cloned() else {
            continue;
        };
        match tensors.iter_mut().find(|t| t.name == tied) {
            Some(t) if t.shape == owner_info.shape && t.tied_to.is_none() => {
                t.tied_to = Some(owner.clone())
            }
            Some(_) => {}
            None => tensors.push(TensorInfo {
                name: tied,
                tied_to: Some(owner_info.tied_to.clone().unwrap_or(owner)),
                ..owner_info
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The sequence of placement atoms (no-split units, and the two-segment modules of
    /// tensors outside any unit), with consecutive repeats removed.
    fn atoms(names: &[&str], units: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let module = n.split('.').take(2).collect::<Vec<_>>().join(".");
            let key = units
                .iter()
                .find(|u| n.starts_with(&format!("{u}.")))
                .map_or(module, |u| u.to_string());
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        out
    }

    /// An inventory of no tensors (a library caller's empty list) is built and planned
    /// without a panic.
    #[test]
    fn no_tensors_is_an_empty_inventory() {
        let inv = Inventory::from_tensors(Vec::new(), None, &InventoryOptions::default()).unwrap();
        assert!(inv.tensors.is_empty());
        let budgets = crate::Budgets {
            gpus: vec![],
            cpu_bytes: 1 << 20,
            disk_bytes: 1 << 20,
        };
        let _ = crate::plan(&inv, &budgets, &crate::PlanOptions::default());
    }

    /// Recovering execution order from names alone agrees, at the level placement works on,
    /// with the exact order each architecture's expansion gives, for every shipped config.
    #[test]
    fn name_order_matches_every_architecture() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let config = ModelConfig::from_file(&path).unwrap();
            let expanded = arch::expand(&config, None).unwrap();
            let exact: Vec<&str> = expanded.iter().map(|t| t.name.as_str()).collect();
            // Shuffle deterministically (reverse, then alphabetical, as headers list them).
            let mut shuffled = expanded.clone();
            shuffled.sort_by(|a, b| a.name.cmp(&b.name));
            let inv = Inventory::from_tensors(shuffled, Some(config), &InventoryOptions::default())
                .unwrap();
            let got: Vec<&str> = inv.tensors.iter().map(|t| t.name.as_str()).collect();
            let units = inv.no_split_units();
            assert!(!units.is_empty(), "{path:?} has no blocks");
            assert_eq!(
                atoms(&got, &units),
                atoms(&exact, &units),
                "{}",
                path.display()
            );
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} configs found");
    }
}
