//! Running a model split across devices: each block where the plan put it, activations moved
//! at block boundaries, offloaded blocks brought in just before use with prefetch.
//!
//! A [`SplitModel`] drives any [`Layered`] model (embed → blocks → finish):
//! - Blocks the plan puts on a GPU, or on the CPU in [`OffloadMode::InPlace`], are loaded
//!   once onto that device and run there. The hidden states and the per-forward context
//!   (masks, rotary tables) move whenever the next block is elsewhere, through host memory
//!   ([`move_to`](crate::models::move_to) says why); burn does not move activations by itself.
//! - Offloaded blocks are brought to the execution device just before they run and dropped
//!   right after: a `disk` block is read from the checkpoint (converted on the way, as
//!   [`crate::load_store`] does), and in [`OffloadMode::Upload`] a `cpu` block, kept loaded
//!   in host memory, is copied to GPU 0 (what Accelerate's hooks do). The execution device is
//!   GPU 0 in [`OffloadMode::Upload`] when there is a GPU, else the CPU.
//! - With [`SplitOptions::prefetch`] = `n` > 0, the next `n` offloaded blocks are brought in
//!   on background threads while the current block computes, so at most `n + 1` offloaded
//!   blocks are held at once. `0` brings each in when it is reached.
//! - Everything outside the blocks (embeddings, final norm, head, pooler) lives on one
//!   device, the *outer device*: where the plan puts those tensors when it puts them all on
//!   one GPU or the CPU, else the execution device.
//!
//! The forward pass is the model's own steps ([`Layered::embed`], [`Layered::run_block`],
//! [`Layered::finish`]) on the devices the plan chose, so a split run computes what a
//! single-device run does: bit for bit when every block runs on the same backend.
//!
//! # Example
//!
//! A two-layer Llama with one block on the CPU and one on disk, brought in with prefetch:
//!
//! ```
//! use burn_ndarray::{NdArray, NdArrayDevice};
//! use stowage::models::{LlamaConfig, token_ids};
//! use stowage::{Budgets, Device, Inventory, InventoryOptions, PlanOptions, SplitModel, SplitOptions};
//! # use safetensors::tensor::{Dtype, TensorView};
//! # let dir = tempfile::tempdir().unwrap();
//! # let config = serde_json::json!({
//! #     "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
//! #     "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
//! #     "num_key_value_heads": 1, "vocab_size": 16, "tie_word_embeddings": true,
//! # });
//! # std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
//! # let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![16, 8])];
//! # for i in 0..2 {
//! #     for (name, shape) in [
//! #         ("input_layernorm.weight", vec![8]), ("self_attn.q_proj.weight", vec![8, 8]),
//! #         ("self_attn.k_proj.weight", vec![4, 8]), ("self_attn.v_proj.weight", vec![4, 8]),
//! #         ("self_attn.o_proj.weight", vec![8, 8]), ("post_attention_layernorm.weight", vec![8]),
//! #         ("mlp.gate_proj.weight", vec![16, 8]), ("mlp.up_proj.weight", vec![16, 8]),
//! #         ("mlp.down_proj.weight", vec![8, 16]),
//! #     ] {
//! #         shapes.push((format!("model.layers.{i}.{name}"), shape));
//! #     }
//! # }
//! # shapes.push(("model.norm.weight".to_string(), vec![8]));
//! # let bytes: Vec<Vec<u8>> = shapes.iter().enumerate().map(|(k, (_, s))| {
//! #     (0..s.iter().product::<usize>())
//! #         .flat_map(|i| (((i * 37 + k * 11) % 23) as f32 / 23.0 - 0.5).to_le_bytes()).collect()
//! # }).collect();
//! # let views: Vec<(String, TensorView)> = shapes.iter().zip(&bytes)
//! #     .map(|((n, s), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
//! # safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
//! let config = LlamaConfig::from_file(&dir.path().join("config.json"))?;
//! let inventory = Inventory::from_spec(dir.path().to_str().unwrap(), &InventoryOptions::default())?;
//! let budgets = Budgets { gpus: vec![], cpu_bytes: 1 << 30, disk_bytes: 1 << 30 };
//! let mut plan = stowage::plan(&inventory, &budgets, &PlanOptions::default())?;
//! // Put layer 1 on disk, as a tight budget would.
//! for (t, d) in inventory.tensors.iter().zip(plan.tensor_devices.iter_mut()) {
//!     if t.name.starts_with("model.layers.1.") {
//!         *d = Device::Disk;
//!     }
//! }
//! let device = NdArrayDevice::Cpu;
//! let (split, _report) = SplitModel::<NdArray, _>::load(
//!     |device| config.init::<NdArray>(device),
//!     &inventory,
//!     &plan,
//!     &device,
//!     &SplitOptions::default(),
//! )?;
//! let (logits, trace) = split.forward(&token_ids::<NdArray>(&[&[1, 2, 3]], &device))?;
//! assert_eq!(logits.dims(), [1, 3, 16]);
//! assert_eq!(trace.units[2].source, stowage::UnitSource::Disk); // embed, layer 0, layer 1, …
//!
//! // The same model on one device computes the same logits, bit for bit.
//! let whole = stowage::load(config.init::<NdArray>(&device), &inventory, &plan, &device,
//!     &stowage::ModuleLoadOptions { renames: split.model().renames(), ..Default::default() })?.0;
//! assert_eq!(whole.forward(token_ids(&[&[1, 2, 3]], &device)).into_data(), logits.into_data());
//! # Ok::<(), stowage::Error>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use stowage_planner::{Device, Inventory, Plan};

use crate::backend::Targets;
use crate::error::{Error, Result};
use crate::load::LoadOptions;
use crate::models::{Layered, move_to};
use crate::module::{ModuleLoadOptions, load_indexed};

/// How blocks placed on `cpu` or `disk` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OffloadMode {
    /// `cpu` blocks run on the CPU backend where they are; `disk` blocks are read into the
    /// CPU just before use. Nothing offloaded crosses to a GPU.
    #[default]
    InPlace,
    /// `cpu` and `disk` blocks are copied to GPU 0 just before use and dropped after
    /// (Accelerate's behaviour); without a GPU, the same as [`OffloadMode::InPlace`].
    Upload,
}

/// How to run a split model.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// Where offloaded blocks run.
    pub mode: OffloadMode,
    /// How many offloaded blocks are brought in ahead, on background threads, while a block
    /// computes (`0`: each when reached).
    pub prefetch: usize,
    /// Wait for each unit's device to finish before timing the next, so that
    /// [`UnitRun::seconds`] is the unit's own time. GPU backends otherwise queue work and
    /// the times land on whichever unit first waits.
    pub sync_timings: bool,
    /// Prove the weights loaded onto GPUs bit-exact as they are loaded (quantized ones
    /// against the host's rule): [`LoadOptions::verify`](crate::LoadOptions::verify). Blocks
    /// brought in while running are not re-verified.
    pub verify: bool,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            mode: OffloadMode::InPlace,
            prefetch: 1,
            sync_timings: true,
            verify: false,
        }
    }
}

/// Where a unit's weights came from for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitSource {
    /// Loaded once on the device it ran on.
    Resident,
    /// Kept in host memory, copied to the execution device for this run.
    Cpu,
    /// Read from the checkpoint for this run.
    Disk,
}

/// One unit of a forward pass.
#[derive(Debug, Clone)]
pub struct UnitRun {
    /// `embed`, a block's path (`model.layers.3`), or `finish`.
    pub name: String,
    /// The plan's device for the unit.
    pub planned: Device,
    /// The device it ran on.
    pub ran_on: Device,
    /// Where its weights came from.
    pub source: UnitSource,
    /// Time spent computing it (with [`SplitOptions::sync_timings`], its own).
    pub seconds: f64,
    /// Time spent waiting for its weights to be brought in (the part prefetch did not hide).
    pub wait_seconds: f64,
}

/// What a forward pass did, unit by unit.
#[derive(Debug, Clone, Default)]
pub struct RunTrace {
    /// The units in execution order: `embed`, the blocks, `finish`.
    pub units: Vec<UnitRun>,
    /// Wall time of the whole pass.
    pub seconds: f64,
}

/// What loading a [`SplitModel`] did.
#[derive(Debug, Clone)]
pub struct SplitLoadReport {
    /// Parameters loaded now (the offloaded blocks' are loaded at each run).
    pub loaded: usize,
    /// Checkpoint tensors no parameter uses.
    pub unexpected: Vec<String>,
    /// `(parameter, owner)` ties.
    pub tied: Vec<(String, String)>,
    /// Where each block lives: `(block path, planned device, how it runs)`.
    pub blocks: Vec<(String, Device, UnitSource)>,
    /// The device of everything outside the blocks.
    pub outer: Device,
    /// Wall time.
    pub seconds: f64,
    /// Tensors proved bit-exact on their GPU as they were loaded ([`SplitOptions::verify`]).
    pub verified: usize,
    /// Per device: bytes the plan put there and bytes loaded there now (disk: the bytes of
    /// the disk blocks, read from the checkpoint at each run). Tensors outside the blocks
    /// (embeddings, final norm, head) planned on disk are held on the execution device for
    /// the whole run, since only whole blocks are brought in: that device then shows more
    /// than planned, and disk as much less.
    pub devices: Vec<crate::DeviceLoad>,
    /// Bytes read from the checkpoint during the load.
    pub bytes_read: u64,
    /// The process's memory after the load, with the peak during the whole load.
    pub memory: crate::Memory,
}

enum Slot<Blk> {
    /// Loaded on its device.
    Resident(Blk, Device),
    /// Loaded in host memory, uploaded per run.
    Host(Blk),
    /// Read from the checkpoint per run.
    Disk,
}

/// A [`Layered`] model spread over devices as a plan says; see the module docs.
pub struct SplitModel<B: Backend, M: Layered<B>> {
    model: M,
    slots: Vec<Slot<M::Block>>,
    planned: Vec<Device>,
    outer: Device,
    exec: Device,
    /// The model's tensors, shared with the [`crate::Planned`] it was loaded from.
    inventory: Arc<Inventory>,
    /// Each tensor's index by name, built once: blocks brought in at each run look their
    /// tensors up here.
    index: Arc<HashMap<String, usize>>,
    /// The plan with every offloaded tensor moved to the execution device, for bringing
    /// blocks in.
    exec_plan: Plan,
    targets: Targets<B>,
    options: SplitOptions,
}

impl<B: Backend, M: Layered<B>> std::fmt::Debug for SplitModel<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitModel")
            .field("blocks", &self.planned)
            .field("outer", &self.outer)
            .field("exec", &self.exec)
            .field("options", &self.options)
            .finish()
    }
}

impl<B, M> SplitModel<B, M>
where
    B: Backend,
    M: Layered<B> + Sync,
    M::Block: Send + Sync,
{
    /// Builds the model with `build` (lazily, on the device it is given), then loads it as
    /// `plan` places it: resident blocks onto their devices, `cpu` blocks in
    /// [`OffloadMode::Upload`] into host memory, `disk` blocks not at all.
    ///
    /// Weights are quantized as the plan was sized, `plan.options.quantize`
    /// ([`ModuleLoadOptions::quantize`]): disk blocks too, each time they are read, and host
    /// blocks are re-encoded for GPU 0's backend when they are uploaded.
    ///
    /// # Errors
    ///
    /// A block the plan splits over devices, a GPU with no device in `targets`, and the
    /// errors of [`crate::load`].
    pub fn load(
        build: impl Fn(&B::Device) -> M,
        inventory: &Inventory,
        plan: &Plan,
        targets: impl Into<Targets<B>>,
        options: &SplitOptions,
    ) -> Result<(Self, SplitLoadReport)> {
        let index = Arc::new(crate::module::name_index(inventory));
        let inventory = Arc::new(inventory.clone());
        Self::load_shared(build, inventory, index, plan, targets, options)
    }

    /// [`SplitModel::load`] from a [`crate::Planned`]: its inventory and name index are
    /// shared, not copied or rebuilt.
    ///
    /// # Errors
    ///
    /// Those of [`SplitModel::load`].
    pub fn load_planned(
        build: impl Fn(&B::Device) -> M,
        planned: &crate::Planned,
        targets: impl Into<Targets<B>>,
        options: &SplitOptions,
    ) -> Result<(Self, SplitLoadReport)> {
        Self::load_shared(
            build,
            planned.inventory.clone(),
            planned.index(),
            &planned.plan,
            targets,
            options,
        )
    }

    fn load_shared(
        build: impl Fn(&B::Device) -> M,
        inventory: Arc<Inventory>,
        index: Arc<HashMap<String, usize>>,
        plan: &Plan,
        targets: impl Into<Targets<B>>,
        options: &SplitOptions,
    ) -> Result<(Self, SplitLoadReport)> {
        let started = Instant::now();
        let inv: &Inventory = &inventory;
        let targets = targets.into();
        if plan.tensor_devices.len() != inv.tensors.len() {
            return Err(Error::PlanMismatch {
                reason: format!(
                    "the plan places {} tensors, the model has {}",
                    plan.tensor_devices.len(),
                    inv.tensors.len()
                ),
            });
        }
        let exec = match options.mode {
            OffloadMode::Upload if !targets.gpus.is_empty() => Device::Gpu(0),
            _ => Device::Cpu,
        };

        // A throwaway lazy model on the CPU gives names and block count, initialising
        // nothing.
        let probe = build(&targets.cpu);
        let n = probe.num_blocks();
        let prefixes: Vec<String> = (0..n)
            .map(|i| format!("{}.", probe.block_prefix(i)))
            .collect();
        let block_of = |name: &str| prefixes.iter().position(|p| name.starts_with(p.as_str()));
        let mut block_devices: Vec<Option<Device>> = vec![None; n];
        let mut outer_devices: Vec<Device> = Vec::new();
        for (t, &d) in inv.tensors.iter().zip(&plan.tensor_devices) {
            if t.tied_to.is_some() {
                continue;
            }
            match block_of(&t.name) {
                Some(b) => match block_devices[b] {
                    None => block_devices[b] = Some(d),
                    Some(other) if other != d => {
                        return Err(Error::PlanMismatch {
                            reason: format!(
                                "block `{}` is split between {other} and {d} (at `{}`); a block runs on one device",
                                probe.block_path(b),
                                t.name
                            ),
                        });
                    }
                    Some(_) => {}
                },
                None => outer_devices.push(d),
            }
        }
        let planned: Vec<Device> = block_devices
            .iter()
            .map(|d| d.unwrap_or(Device::Cpu))
            .collect();
        let outer = match outer_devices.first() {
            Some(&d) if d != Device::Disk && outer_devices.iter().all(|&o| o == d) => d,
            _ => exec,
        };
        let device_of = |d: Device| -> Result<B::Device> {
            targets.device(d).cloned().ok_or_else(|| match d {
                Device::Gpu(index) if targets.gpus.is_empty() => Error::GpuNotCompiled {
                    tensor: format!("{d}"),
                    index,
                },
                Device::Gpu(index) => Error::NoSuchGpu {
                    index,
                    available: targets.gpus.len(),
                    backend: "this backend",
                },
                _ => unreachable!("cpu always has a device"),
            })
        };
        device_of(exec)?;

        // The plan for loading: resident parts where planned, everything else on the
        // execution device (or the CPU for blocks kept in host memory).
        let mut load_plan = plan.clone();
        let mut exec_plan = plan.clone();
        for (k, t) in inv.tensors.iter().enumerate() {
            let d = plan.tensor_devices[k];
            let (now, later) = match block_of(&t.name) {
                None => (outer, outer),
                Some(_) if d == Device::Disk => (Device::Disk, exec),
                Some(_) if d == Device::Cpu && exec != Device::Cpu => (Device::Cpu, exec),
                Some(_) => (d, d),
            };
            load_plan.tensor_devices[k] = now;
            exec_plan.tensor_devices[k] = later;
        }

        // Everything outside the blocks, on the outer device.
        let mut model = build(&device_of(outer)?);
        drop(std::mem::take(model.blocks_mut()));
        let opts = ModuleLoadOptions {
            renames: model.renames(),
            quantize: plan.options.quantize,
            quantize_modules: plan.options.quantize_modules.clone(),
            store: LoadOptions {
                verify: options.verify,
                ..Default::default()
            },
            ..Default::default()
        };
        crate::memory::reset_peak();
        let _hold = crate::memory::HoldPeak::start();
        let (mut model, outer_report) =
            load_indexed(model, inv, &index, &load_plan, targets.clone(), &opts, true)?;
        let verified = verified_in(&outer_report);
        let mut actual: HashMap<Device, u64> = HashMap::new();
        let mut bytes_read = 0u64;
        let mut add = |r: &crate::LoadReport| {
            for d in &r.devices {
                *actual.entry(d.device).or_default() += d.actual_bytes;
            }
            bytes_read += r.bytes_read;
        };
        add(&outer_report.store);
        let mut report = SplitLoadReport {
            loaded: outer_report.loaded.len(),
            unexpected: outer_report
                .unexpected
                .into_iter()
                .filter(|t| block_of(t).is_none())
                .collect(),
            tied: outer_report.tied,
            blocks: Vec::new(),
            outer,
            seconds: 0.0,
            verified,
            devices: Vec::new(),
            bytes_read: 0,
            memory: crate::Memory::default(),
        };

        let mut slots = Vec::with_capacity(n);
        for (i, &d) in planned.iter().enumerate() {
            let path = model.block_path(i);
            let (slot, source) = match d {
                Device::Disk => (Slot::Disk, UnitSource::Disk),
                Device::Cpu if exec != Device::Cpu => {
                    let at = (inv, &*index, &load_plan, &targets);
                    let (block, r) = load_block(&model, i, &targets.cpu, at, false)?;
                    report.loaded += r.loaded.len();
                    add(&r.store);
                    (Slot::Host(block), UnitSource::Cpu)
                }
                d => {
                    let at = (inv, &*index, &load_plan, &targets);
                    let (block, r) = load_block(&model, i, &device_of(d)?, at, options.verify)?;
                    report.loaded += r.loaded.len();
                    report.verified += verified_in(&r);
                    add(&r.store);
                    (Slot::Resident(block, d), UnitSource::Resident)
                }
            };
            report.blocks.push((path, d, source));
            slots.push(slot);
        }
        // Disk blocks stay in the checkpoint, read at each run.
        let on_disk: u64 = inv
            .tensors
            .iter()
            .filter(|t| t.tied_to.is_none())
            .filter(|t| block_of(&t.name).is_some_and(|b| planned[b] == Device::Disk))
            .map(|t| t.stored_bytes())
            .sum();
        *actual.entry(Device::Disk).or_default() += on_disk;
        report.devices = plan
            .devices
            .iter()
            .map(|d| crate::DeviceLoad {
                device: d.device,
                planned_bytes: d.used_bytes,
                actual_bytes: actual.get(&d.device).copied().unwrap_or(0),
            })
            .collect();
        report.bytes_read = bytes_read;
        // The model keeps lazy placeholders, so that `blocks()` still has every block.
        *model.blocks_mut() = (0..n).map(|i| model.make_block(i, &targets.cpu)).collect();
        report.seconds = started.elapsed().as_secs_f64();
        report.memory = crate::memory::current();
        Ok((
            SplitModel {
                model,
                slots,
                planned,
                outer,
                exec,
                inventory,
                index,
                exec_plan,
                targets,
                options: options.clone(),
            },
            report,
        ))
    }

    /// The model outside its blocks (its blocks are lazy placeholders: run it through
    /// [`SplitModel::forward`]).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The device everything outside the blocks lives on.
    pub fn outer_device(&self) -> Device {
        self.outer
    }

    /// The device offloaded blocks run on.
    pub fn exec_device(&self) -> Device {
        self.exec
    }

    /// One forward pass: each block on its device, offloaded blocks brought in (ahead of
    /// time with prefetch) and dropped after use.
    ///
    /// # Errors
    ///
    /// Reading an offloaded block failed (the checkpoint changed, a disk error).
    pub fn forward(&self, input: &M::Input) -> Result<(M::Output, RunTrace)> {
        let started = Instant::now();
        let mut trace = RunTrace::default();
        let dev = |d: Device| self.targets.device(d).expect("checked at load").clone();
        let outer = dev(self.outer);
        let sync = |d: &B::Device| {
            if self.options.sync_timings {
                let _ = B::sync(d);
            }
        };

        let t = Instant::now();
        let (x, ctx) = self.model.embed(input);
        sync(&outer);
        trace.units.push(UnitRun {
            name: "embed".into(),
            planned: self.outer,
            ran_on: self.outer,
            source: UnitSource::Resident,
            seconds: t.elapsed().as_secs_f64(),
            wait_seconds: 0.0,
        });

        // Offloaded blocks, in order: what prefetch brings in.
        let fetched: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !matches!(self.slots[i], Slot::Resident(..)))
            .collect();
        let exec = dev(self.exec);
        let fetch = |i: usize| -> Result<M::Block> {
            match &self.slots[i] {
                Slot::Host(block) => Ok(crate::quantized::to_device(
                    block.clone(),
                    &exec,
                    (self.exec_plan.options.quantize.group())
                        .unwrap_or(stowage_planner::Quantize::DEFAULT_GROUP),
                )),
                Slot::Disk => {
                    let at = (
                        &*self.inventory,
                        &*self.index,
                        &self.exec_plan,
                        &self.targets,
                    );
                    Ok(load_block(&self.model, i, &exec, at, false)?.0)
                }
                Slot::Resident(..) => unreachable!("resident blocks are not fetched"),
            }
        };

        let mut contexts: Vec<(Device, M::Context)> = vec![(self.outer, ctx.clone())];
        let mut context_on = |d: Device| -> M::Context {
            if let Some((_, c)) = contexts.iter().find(|(k, _)| *k == d) {
                return c.clone();
            }
            let c = M::context_to(&ctx, &dev(d));
            contexts.push((d, c.clone()));
            c
        };

        let x = std::thread::scope(|scope| -> Result<Tensor<B, 3>> {
            let mut x = x;
            let mut pending: VecDeque<(
                usize,
                std::thread::ScopedJoinHandle<'_, Result<M::Block>>,
            )> = VecDeque::new();
            let mut next = 0; // index into `fetched` of the next block to start bringing in
            for i in 0..self.slots.len() {
                // Keep up to `prefetch` blocks coming in ahead of the one running.
                while next < fetched.len() && pending.len() < self.options.prefetch {
                    let b = fetched[next];
                    pending.push_back((b, scope.spawn(move || fetch(b))));
                    next += 1;
                }
                let path = self.model.block_path(i);
                let planned = self.planned[i];
                let (block, ran_on, source, wait) = match &self.slots[i] {
                    Slot::Resident(_, d) => (None, *d, UnitSource::Resident, 0.0),
                    slot => {
                        let waited = Instant::now();
                        let block = match pending.front() {
                            Some((b, _)) if *b == i => {
                                let (_, handle) = pending.pop_front().expect("front");
                                handle.join().expect("a block fetch panicked")?
                            }
                            _ => {
                                next =
                                    next.max(fetched.iter().position(|&b| b == i).unwrap_or(0) + 1);
                                fetch(i)?
                            }
                        };
                        let source = match slot {
                            Slot::Host(_) => UnitSource::Cpu,
                            _ => UnitSource::Disk,
                        };
                        (
                            Some(block),
                            self.exec,
                            source,
                            waited.elapsed().as_secs_f64(),
                        )
                    }
                };
                let t = Instant::now();
                let device = dev(ran_on);
                let c = context_on(ran_on);
                let run = |b: &M::Block, x: Tensor<B, 3>| M::run_block(b, move_to(x, &device), &c);
                x = match (&block, &self.slots[i]) {
                    (Some(b), _) => run(b, x),
                    (None, Slot::Resident(b, _)) => run(b, x),
                    _ => unreachable!("every block is resident or fetched"),
                };
                sync(&device);
                drop(block);
                trace.units.push(UnitRun {
                    name: path,
                    planned,
                    ran_on,
                    source,
                    seconds: t.elapsed().as_secs_f64(),
                    wait_seconds: wait,
                });
            }
            Ok(x)
        })?;

        let t = Instant::now();
        let out = self.model.finish(move_to(x, &outer));
        sync(&outer);
        trace.units.push(UnitRun {
            name: "finish".into(),
            planned: self.outer,
            ran_on: self.outer,
            source: UnitSource::Resident,
            seconds: t.elapsed().as_secs_f64(),
            wait_seconds: 0.0,
        });
        trace.seconds = started.elapsed().as_secs_f64();
        Ok((out, trace))
    }
}

/// Tensors a module load proved on their GPU: the store's and the quantized weights'.
fn verified_in(report: &crate::module::ModuleLoadReport) -> usize {
    report.store.verified + report.quantized.iter().filter(|q| q.verified).count()
}

/// Block `i` built lazily on `device` and loaded from the checkpoint as `plan` says; returns
/// it and its load's report.
fn load_block<B: Backend, M: Layered<B>>(
    model: &M,
    i: usize,
    device: &B::Device,
    (inventory, index, plan, targets): (&Inventory, &HashMap<String, usize>, &Plan, &Targets<B>),
    verify: bool,
) -> Result<(M::Block, crate::ModuleLoadReport)> {
    let opts = ModuleLoadOptions {
        renames: model.block_renames(i),
        quantize: plan.options.quantize,
        quantize_modules: plan.options.quantize_modules.clone(),
        store: LoadOptions {
            verify,
            ..Default::default()
        },
        ..Default::default()
    };
    let (block, report) = load_indexed(
        model.make_block(i, device),
        inventory,
        index,
        plan,
        targets.clone(),
        &opts,
        false,
    )?;
    Ok((block, report))
}
