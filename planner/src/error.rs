//! The one error type of the planner: every variant names the file, and the tensor where there is one.

use std::path::PathBuf;

/// What can go wrong while taking an inventory, reading budgets or placing a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or inspected.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The file is shorter than the 8-byte header length that starts every safetensors file.
    #[error("`{path}` is not a safetensors file: {len} bytes, fewer than the 8-byte header length")]
    HeaderTooShort {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },

    /// The header length is above the cap safetensors enforces.
    #[error(
        "`{path}`: header length {header_len} exceeds the {cap}-byte cap; the file is corrupt or not safetensors"
    )]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The header length the file claims.
        header_len: u64,
        /// The cap.
        cap: u64,
    },

    /// The header length points past the end of the file.
    #[error(
        "`{path}`: header claims {header_len} bytes but the file holds only {file_len}; the file is truncated"
    )]
    HeaderBeyondFile {
        /// The file.
        path: PathBuf,
        /// The header length the file claims.
        header_len: u64,
        /// The file's length.
        file_len: u64,
    },

    /// The header is not valid UTF-8 JSON of the safetensors shape.
    #[error("`{path}`: header is not valid safetensors JSON: {reason}")]
    HeaderNotJson {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        reason: String,
    },

    /// A PyTorch archive (`pytorch_model.bin`) that is malformed or not one.
    #[error("`{path}`: {reason}")]
    TorchArchive {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A PyTorch archive's pickle names a global outside the allow-list: nothing in it is run.
    #[error(
        "`{path}`: the pickle uses `{global}`, which a state dict of tensors does not need; refused (nothing in the file was run; only what torch.load(weights_only=True) accepts for a state dict is read)"
    )]
    TorchGlobal {
        /// The file.
        path: PathBuf,
        /// `module.name`.
        global: String,
    },

    /// A tensor entry in a header lacks a field or has one of the wrong type.
    #[error("`{path}`: tensor `{tensor}` has a malformed entry: {reason}")]
    TensorEntryInvalid {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor's dtype is not one safetensors defines.
    #[error("`{path}`: tensor `{tensor}` has unknown dtype `{dtype}`")]
    UnknownDType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype string as stored.
        dtype: String,
    },

    /// A tensor's byte range does not match its dtype and shape.
    #[error(
        "`{path}`: tensor `{tensor}` spans {actual_bytes} bytes but its dtype and shape need {expected_bytes}"
    )]
    TensorSizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// dtype × shape, in bytes.
        expected_bytes: u64,
        /// end − start of its data offsets.
        actual_bytes: u64,
    },

    /// A tensor's data offsets overlap another's, leave a gap, or run backwards.
    #[error(
        "`{path}`: tensor `{tensor}` has data offsets [{start}, {end}) but the previous tensor ends at {expected_start}; offsets must be contiguous and not overlap"
    )]
    OffsetsNotContiguous {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its start offset.
        start: u64,
        /// Its end offset.
        end: u64,
        /// Where it should have started.
        expected_start: u64,
    },

    /// The tensor data does not end exactly at the end of the file.
    #[error("`{path}`: tensor data ends at byte {data_end} of the data section but the section holds {data_len} bytes{}", if data_end > data_len { "; the file is truncated" } else { "; the file has trailing bytes" })]
    DataLengthMismatch {
        /// The file.
        path: PathBuf,
        /// Where the last tensor ends, relative to the data section.
        data_end: u64,
        /// How long the data section is.
        data_len: u64,
    },

    /// An element count or byte count overflowed 64 bits.
    #[error("`{path}`: tensor `{tensor}` has a shape whose size overflows 64 bits")]
    SizeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },

    /// A sharded checkpoint's index is not valid JSON of the expected shape.
    #[error("`{path}`: not a valid shard index: {reason}")]
    IndexInvalid {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The index names a shard that does not exist.
    #[error("`{index}` maps tensor `{tensor}` to shard `{shard}`, which does not exist")]
    ShardMissing {
        /// The index file.
        index: PathBuf,
        /// The missing shard.
        shard: PathBuf,
        /// The first tensor the index maps to it.
        tensor: String,
    },

    /// The index maps a tensor to a shard that does not hold it.
    #[error("`{index}` maps tensor `{tensor}` to `{shard}`, but that shard has no such tensor")]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// The shard.
        shard: PathBuf,
        /// The tensor.
        tensor: String,
    },

    /// The same tensor name appears twice across the files of one checkpoint.
    #[error("tensor `{tensor}` appears in both `{first}` and `{second}`")]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// Where it was seen first.
        first: PathBuf,
        /// Where it was seen again.
        second: PathBuf,
    },

    /// A folder holds neither weights nor a config of a known architecture.
    #[error("no model found in `{path}`: tried {}", list_paths(tried))]
    NoWeights {
        /// The folder.
        path: PathBuf,
        /// The files looked for.
        tried: Vec<PathBuf>,
    },

    /// A checkpoint file holds no tensors at all (an empty safetensors header).
    #[error("`{path}` holds no tensors; it is not a usable checkpoint")]
    NoTensors {
        /// The file.
        path: PathBuf,
    },

    /// A folder holds several safetensors files and no index saying how they fit together.
    #[error(
        "`{path}` holds several safetensors files ({}) and no `model.safetensors.index.json`; pass one file, or the folder of a single checkpoint",
        list_paths(files)
    )]
    AmbiguousWeights {
        /// The folder.
        path: PathBuf,
        /// The files found.
        files: Vec<PathBuf>,
    },

    /// A `config.json` is not valid JSON, or lacks a field its architecture needs.
    #[error("`{path}`: {reason}")]
    ConfigInvalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A `config.json` names an architecture the planner cannot expand, and there are no weights.
    #[error("`{path}`: architecture `{model_type}` is not one stowage can expand from a config alone (known: {}); point at the folder with the safetensors weights instead", known.join(", "))]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `model_type` it names.
        model_type: String,
        /// The architectures that can be expanded.
        known: Vec<&'static str>,
    },

    /// An `ORG/NAME` model is not in any Hugging Face cache.
    #[error(
        "model `{spec}` not found locally (stowage never downloads); tried {}. Download it first, e.g. `hf download {repo}`",
        list_paths(tried)
    )]
    ModelNotFound {
        /// What the user asked for.
        spec: String,
        /// The `ORG/NAME` part.
        repo: String,
        /// The paths looked at.
        tried: Vec<PathBuf>,
    },

    /// A size string such as `20GiB` could not be read.
    #[error("invalid size `{input}`: {reason}")]
    InvalidSize {
        /// What the user wrote.
        input: String,
        /// Why it was rejected, with a hint.
        reason: String,
    },

    /// A `--max-memory` or `--gpus` value could not be read.
    #[error("invalid memory budget `{input}`: {reason}")]
    InvalidBudget {
        /// What the user wrote.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A `--no-split` pattern is empty or malformed.
    #[error("invalid module pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A budget could not be measured and the user did not give it.
    #[error("cannot measure the {device} budget ({reason}); give it with {hint}")]
    BudgetUnreadable {
        /// `cpu` or `disk`.
        device: String,
        /// Why measuring failed.
        reason: String,
        /// The flag that supplies it.
        hint: String,
    },

    /// An explicit device map leaves a tensor without a device.
    #[error(
        "the device map covers no entry for tensor `{tensor}`; add `{module}` (or a prefix of it, or \"\" for everything)"
    )]
    MapIncomplete {
        /// The uncovered tensor.
        tensor: String,
        /// Its module, the entry to add.
        module: String,
    },

    /// An explicit device map names a module or tensor the model does not have.
    #[error("the device map names `{entry}`, which is no module or tensor of this model")]
    MapUnknownEntry {
        /// The entry.
        entry: String,
    },

    /// An explicit device map puts parts of a no-split unit on different devices.
    #[error("the device map splits no-split unit `{unit}` over {devices}; map it to one device")]
    MapSplitsUnit {
        /// The unit.
        unit: String,
        /// The devices it is spread over.
        devices: String,
    },

    /// An explicit device map separates a tied tensor from its owner.
    #[error(
        "the device map puts `{tensor}` on {device} but the tensor it is tied to, `{owner}`, on {owner_device}; tied tensors share storage and must be on one device"
    )]
    MapSeparatesTie {
        /// The tied tensor.
        tensor: String,
        /// Where the map puts it.
        device: String,
        /// Its owner.
        owner: String,
        /// Where the map puts the owner.
        owner_device: String,
    },

    /// An explicit device map puts more on a device than its budget.
    #[error("the device map puts {} on {device} (weights {}, run-time room {}) but its budget is {}", crate::units::format_bytes(*needed), crate::units::format_bytes(*weights), crate::units::format_bytes(needed - weights), crate::units::format_bytes(*budget))]
    MapOverBudget {
        /// The device.
        device: String,
        /// Everything the map commits there.
        needed: u64,
        /// Of which weights.
        weights: u64,
        /// The device's budget.
        budget: u64,
    },

    /// A device map names a device the budgets do not have.
    #[error(
        "the device map uses device {device}, which has no budget; add one with --max-memory {device}=SIZE or --gpus"
    )]
    MapUnknownDevice {
        /// The device.
        device: String,
    },

    /// A device map or saved plan could not be read.
    #[error("invalid device map{}: {reason}", path.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    MapInvalid {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },

    /// A file changed between taking the inventory (or making the plan) and using it.
    #[error("`{path}` changed since it was planned (length {} → {}, modified {} → {} ns); plan again", then.0, now.0, then.1, now.1)]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Length and mtime (ns) when planned.
        then: (u64, u128),
        /// Length and mtime (ns) now.
        now: (u64, u128),
    },

    /// A combination of options stowage does not support.
    #[error("{what} is not supported{hint}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// How to get something close, starting with `; `.
        hint: String,
    },

    /// A unit does not fit on any device, disk included.
    #[error("`{unit}` does not fit: it needs {} but no device has that much left (largest free: {} on {device}); raise a budget with --max-memory (e.g. --max-memory disk=1TiB) or free space", crate::units::format_bytes(*needed), crate::units::format_bytes(*available))]
    DoesNotFit {
        /// The module or tensor that could not be placed.
        unit: String,
        /// Its size in bytes.
        needed: u64,
        /// The device with the most room left.
        device: String,
        /// How much room it had.
        available: u64,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

/// The planner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
