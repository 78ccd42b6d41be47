//! Reference architectures written with burn's `nn` modules, loadable by [`crate::load`] from
//! Hugging Face checkpoints under their real tensor names.
//!
//! | model | transformers class | config |
//! |---|---|---|
//! | [`BertModel`] | `BertModel` (and the encoder of every `BertFor*`) | [`BertConfig`] |
//! | [`LlamaForCausalLM`] | `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM` | [`LlamaConfig`] |
//!
//! Loading one takes four steps, the same for both:
//! 1. read the config: [`LlamaConfig::from_file`] / [`BertConfig::from_file`] on the
//!    checkpoint's `config.json`;
//! 2. build the model with lazy parameters: `config.init::<B>(&device)` allocates nothing
//!    and never runs a random init for what is then loaded;
//! 3. take the checkpoint's [`Inventory`](crate::Inventory) and [`plan`](crate::plan) it;
//! 4. [`crate::load`] with the model's [`Layered::renames`], which map burn's parameter
//!    names (`gamma`, `layer_norm`, `self_attn`) to transformers' (`weight`, `LayerNorm`,
//!    `self`).
//!
//! `Linear` weights use burn's default layout, [`LinearLayout::Row`](burn::nn::LinearLayout):
//! [`crate::load`] takes PyTorch's `[out, in]` tensors and transposes them as views, so no
//! weight is copied to be laid out.
//!
//! # Block by block
//!
//! Both models implement [`Layered`]: a model runs as embed → blocks in order → finish, and
//! each step can run on its own device. Their `forward` is [`Layered::run`], the same steps
//! on one device, so a split run and a single-device run compute the same thing.
//!
//! # Example
//!
//! A tiny Llama with random weights (two layers, grouped-query attention, a tied head),
//! loaded and run whole, then block by block:
//!
//! ```
//! use burn_ndarray::{NdArray, NdArrayDevice};
//! use stowage::models::{Layered, LlamaConfig, LlamaForCausalLM, move_to, token_ids};
//! use stowage::{Budgets, Inventory, InventoryOptions, ModuleLoadOptions, PlanOptions};
//!
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
//! #         ("input_layernorm.weight", vec![8]),
//! #         ("self_attn.q_proj.weight", vec![8, 8]),
//! #         ("self_attn.k_proj.weight", vec![4, 8]),
//! #         ("self_attn.v_proj.weight", vec![4, 8]),
//! #         ("self_attn.o_proj.weight", vec![8, 8]),
//! #         ("post_attention_layernorm.weight", vec![8]),
//! #         ("mlp.gate_proj.weight", vec![16, 8]),
//! #         ("mlp.up_proj.weight", vec![16, 8]),
//! #         ("mlp.down_proj.weight", vec![8, 16]),
//! #     ] {
//! #         shapes.push((format!("model.layers.{i}.{name}"), shape));
//! #     }
//! # }
//! # shapes.push(("model.norm.weight".to_string(), vec![8]));
//! # let bytes: Vec<Vec<u8>> = shapes
//! #     .iter()
//! #     .enumerate()
//! #     .map(|(k, (_, shape))| {
//! #         (0..shape.iter().product::<usize>())
//! #             .flat_map(|i| (((i * 37 + k * 11) % 23) as f32 / 23.0 - 0.5).to_le_bytes())
//! #             .collect()
//! #     })
//! #     .collect();
//! # let views: Vec<(String, TensorView)> = shapes
//! #     .iter()
//! #     .zip(&bytes)
//! #     .map(|((n, s), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
//! #     .collect();
//! # safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
//! // `dir` holds config.json and model.safetensors, with no lm_head: the config ties it.
//! let config = LlamaConfig::from_file(&dir.path().join("config.json"))?;
//! let device = NdArrayDevice::Cpu;
//! let model = config.init::<NdArray>(&device);
//!
//! let inventory = Inventory::from_spec(dir.path().to_str().unwrap(), &InventoryOptions::default())?;
//! let budgets = Budgets { gpus: vec![], cpu_bytes: 1 << 30, disk_bytes: 1 << 30 };
//! let plan = stowage::plan(&inventory, &budgets, &PlanOptions::default())?;
//! let options = ModuleLoadOptions { renames: model.renames(), ..Default::default() };
//! let (model, report) = stowage::load(model, &inventory, &plan, &device, &options)?;
//! assert!(report.missing.is_empty() && report.unexpected.is_empty());
//! assert_eq!(report.tied, [("lm_head.weight".into(), "model.embed_tokens.weight".into())]);
//!
//! let tokens = model.generate_greedy(&[1, 2, 3], 4);
//! assert_eq!(tokens.len(), 4);
//!
//! // Block by block, as an executor spreading the model over devices would, moving the
//! // hidden states and the context at each boundary.
//! let ids = token_ids::<NdArray>(&[&[1, 2, 3]], &device);
//! let (mut x, mut ctx) = model.embed(&ids);
//! for block in model.blocks() {
//!     ctx = LlamaForCausalLM::context_to(&ctx, &device);
//!     x = LlamaForCausalLM::run_block(block, move_to(x, &device), &ctx);
//! }
//! let logits = model.finish(x);
//! assert_eq!(logits.dims(), [1, 3, 16]);
//! let whole = model.forward(ids);
//! assert_eq!(logits.into_data(), whole.into_data());
//! # Ok::<(), stowage::Error>(())
//! ```

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::rename::Renames;

mod attention;
pub mod bert;
mod fields;
pub mod llama;
pub mod rope;

pub use bert::{BertConfig, BertInput, BertModel, BertModelOutput};
pub use llama::{LlamaConfig, LlamaFamily, LlamaForCausalLM};

/// A model that runs as embed → blocks in order → finish, so that it can be spread over
/// devices one block at a time.
///
/// The blocks are the repeated layers (`encoder.layer.N`, `model.layers.N`): they hold nearly
/// all the weights, they all have the same type, and each one maps hidden states
/// `[batch, seq, hidden]` to hidden states of the same shape. Everything else (embeddings,
/// final norm, head, pooler) belongs to [`embed`](Layered::embed) or
/// [`finish`](Layered::finish).
///
/// An executor that places blocks on several devices, or keeps some on disk, drives a model
/// through this trait only:
///
/// ```text
/// let (mut x, ctx) = model.embed(&input);                // on the embedding's device
/// for i in 0..model.num_blocks() {
///     let block = /* model.blocks()[i], or model.make_block(i, &dev) loaded from the store */;
///     let ctx_i = M::context_to(&ctx, &dev);             // once per device, not per block
///     x = M::run_block(&block, move_to(x, &dev), &ctx_i);
/// }
/// let out = model.finish(move_to(x, &head_device));
/// ```
///
/// [`run`](Layered::run) is exactly that on one device, and every model's `forward` is
/// [`run`](Layered::run): there is one code path, so a split run computes what a
/// single-device run does.
///
/// # Names
///
/// [`block_path`](Layered::block_path) is block `i`'s path in the model (`model.layers.3`),
/// [`renames`](Layered::renames) map model paths to checkpoint names, and
/// [`block_prefix`](Layered::block_prefix) is block `i`'s prefix in the checkpoint. A block
/// built alone by [`make_block`](Layered::make_block) has paths relative to the block
/// (`self_attn.q_proj.weight`); [`block_renames`](Layered::block_renames) maps those to
/// checkpoint names, so [`crate::load`] fills a lone block from the whole model's inventory,
/// reading that block's tensors only.
///
/// # Taking blocks out
///
/// [`blocks_mut`](Layered::blocks_mut) is the model's own `Vec` of blocks: an executor can
/// take them all (`std::mem::take`), keep the rest of the model (embeddings and head) where
/// it is, and run blocks it holds elsewhere or builds on demand; [`run`](Layered::run)
/// needs them back in place. [`num_blocks`](Layered::num_blocks) comes from the config, so
/// it stays right while the blocks are out.
pub trait Layered<B: Backend>: Module<B> {
    /// What the model takes: token ids, with masks where the model has them.
    type Input;
    /// One repeated layer.
    type Block: Module<B>;
    /// What every block needs besides the hidden states, computed once per forward by
    /// [`embed`](Layered::embed): masks, rotary tables.
    type Context: Clone;
    /// What the model computes.
    type Output;

    /// How many blocks the model has (from its config, whether or not they are in place).
    fn num_blocks(&self) -> usize;

    /// The blocks in execution order.
    fn blocks(&self) -> &[Self::Block];

    /// The model's blocks, to take out, replace or put back.
    fn blocks_mut(&mut self) -> &mut Vec<Self::Block>;

    /// Block `i`'s path in the model, such as `model.layers.3`.
    fn block_path(&self, i: usize) -> String;

    /// The rules from the model's parameter paths to its checkpoint's tensor names, for
    /// [`ModuleLoadOptions::renames`](crate::ModuleLoadOptions::renames).
    fn renames(&self) -> Renames;

    /// Block `i` built on `device` with lazy parameters, for [`crate::load`] (with
    /// [`block_renames`](Layered::block_renames)) or a store to fill.
    fn make_block(&self, i: usize, device: &B::Device) -> Self::Block;

    /// The hidden states `[batch, seq, hidden]` entering the first block, and the context
    /// every block needs, both on the embedding's device (the input is moved there).
    fn embed(&self, input: &Self::Input) -> (Tensor<B, 3>, Self::Context);

    /// `ctx` on `device`.
    fn context_to(ctx: &Self::Context, device: &B::Device) -> Self::Context;

    /// One block. `x`, `ctx` and the block's parameters must be on one device.
    fn run_block(block: &Self::Block, x: Tensor<B, 3>, ctx: &Self::Context) -> Tensor<B, 3>;

    /// The output from the last block's hidden states (final norm, head, pooler), which must
    /// be on the device of those modules.
    fn finish(&self, x: Tensor<B, 3>) -> Self::Output;

    /// Block `i`'s prefix in the checkpoint, such as `model.layers.3` or
    /// `bert.encoder.layer.3`.
    fn block_prefix(&self, i: usize) -> String {
        self.renames().apply(&self.block_path(i))
    }

    /// The rules from the paths of a lone block `i` (as [`make_block`](Layered::make_block)
    /// builds it) to checkpoint names: [`block_path`](Layered::block_path) in front, then
    /// [`renames`](Layered::renames).
    fn block_renames(&self, i: usize) -> Renames {
        self.renames()
            .rules()
            .iter()
            .fold(Renames::new().add_prefix(self.block_path(i)), |r, rule| {
                r.with(rule.clone())
            })
    }

    /// The whole model on one device: [`embed`](Layered::embed), every block in order,
    /// [`finish`](Layered::finish).
    ///
    /// # Panics
    ///
    /// If blocks were taken out and not all put back.
    fn run(&self, input: &Self::Input) -> Self::Output {
        assert_eq!(
            self.blocks().len(),
            self.num_blocks(),
            "the model holds {} of its {} blocks; put them back before running it whole",
            self.blocks().len(),
            self.num_blocks()
        );
        let (mut x, ctx) = self.embed(input);
        for block in self.blocks() {
            x = Self::run_block(block, x, &ctx);
        }
        self.finish(x)
    }
}

/// `tensor` on `device`, copied through host memory when it is elsewhere.
///
/// Use this rather than `Tensor::to_device` to move activations and contexts between
/// devices: burn 0.21's GPU backends copy from one device to another with server-to-server
/// transfers, which wgpu does not implement (the device thread panics and the copy holds
/// garbage). Through the host it works on every backend, and it is what a CPU ↔ GPU copy
/// costs anyway; activations are small next to weights.
pub fn move_to<B: Backend, const D: usize, K>(
    tensor: Tensor<B, D, K>,
    device: &B::Device,
) -> Tensor<B, D, K>
where
    K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>,
{
    if &tensor.device() == device {
        return tensor;
    }
    Tensor::from_data(tensor.into_data(), device)
}

/// Rows of token ids, all of one length, as a `[rows, len]` int tensor on `device`.
///
/// # Panics
///
/// If the rows differ in length.
pub fn token_ids<B: Backend>(rows: &[&[u32]], device: &B::Device) -> Tensor<B, 2, Int> {
    let len = rows.first().map_or(0, |r| r.len());
    assert!(
        rows.iter().all(|r| r.len() == len),
        "token id rows must have equal lengths"
    );
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&i| i64::from(i)))
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows.len(), len]), device)
}
