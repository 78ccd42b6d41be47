//! What the PyTorch model of each known architecture has that its checkpoint does not say:
//! the order of `named_children` (definition order, which is not execution order), the child
//! modules that hold no parameter (dropouts, rotary embeddings), the bytes of their
//! non-persistent buffers, the containers of the `_no_split_modules` blocks, and the ties
//! transformers makes whatever the config says.
//!
//! | `model_type` | definition order where it differs from execution order | parameterless modules |
//! |---|---|---|
//! | `llama`, `mistral`, `qwen2`, `mixtral` | — | `model.rotary_emb` (after `norm`): `inv_freq` and `original_inv_freq`, f32 |
//! | `opt` | `model.decoder`: `embed_tokens, embed_positions, project_out, project_in, final_layer_norm, layers` (the final norm and `project_out` come before the layers) | — |
//! | `gpt2` | — | `transformer.drop` (after `wpe`) |
//! | `t5`, `mt5` | — | `encoder.dropout`, `decoder.dropout` (last); `lm_head` always tied to `shared` |
//!
//! Inside a no-split block the order does not matter (the block is placed whole), so only the
//! levels above the blocks are described. Any other `model_type`, or no config, has no layout:
//! the caller then uses the inventory's own tree and order.

use serde_json::Value;

use crate::config::ModelConfig;
use crate::inventory::{Inventory, Module};

/// One child in definition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Child {
    /// The child's name (last path segment).
    pub name: &'static str,
    /// `Some(buffer bytes)` for a module that holds no parameter: it is added to the tree
    /// (the inventory cannot know it); `None` for a module the inventory has when the model
    /// has it.
    pub parameterless: Option<u64>,
}

fn child(name: &'static str) -> Child {
    Child {
        name,
        parameterless: None,
    }
}

fn parameterless(name: &'static str, buffer_bytes: u64) -> Child {
    Child {
        name,
        parameterless: Some(buffer_bytes),
    }
}

/// The definition-order facts of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Layout {
    /// Parent module path → its children in definition order. Children the inventory has
    /// but the list does not name keep their inventory order, after the named ones.
    pub orders: Vec<(String, Vec<Child>)>,
    /// Containers whose numbered children are the model's `_no_split_modules` blocks.
    pub blocks: Vec<String>,
    /// `(tied, owner)` parameter pairs transformers ties although the config does not say so.
    pub ties: Vec<(String, String)>,
}

/// The layout of the inventory's architecture, or `None` when it is not one of the known ones
/// (or there is no config).
pub(super) fn layout(inv: &Inventory) -> Option<Layout> {
    let config = inv.config.as_ref()?;
    match config.model_type()? {
        "llama" | "mistral" | "qwen2" | "mixtral" => Some(llama(inv, config)),
        "opt" => Some(opt(inv)),
        "gpt2" => Some(gpt2(inv)),
        "t5" | "mt5" => Some(t5(inv)),
        _ => None,
    }
}

/// `LlamaForCausalLM` (`model`, `lm_head`) around `LlamaModel` (`embed_tokens`, `layers`,
/// `norm`, `rotary_emb`); Mistral, Qwen2 and Mixtral have the same shape.
fn llama(inv: &Inventory, config: &ModelConfig) -> Layout {
    let base = if has(inv, "model") { "model" } else { "" };
    let mut orders = Vec::new();
    if !base.is_empty() {
        orders.push((String::new(), vec![child("model"), child("lm_head")]));
    }
    orders.push((
        base.to_string(),
        vec![
            child("embed_tokens"),
            child("layers"),
            child("norm"),
            parameterless("rotary_emb", rotary_buffer_bytes(config)),
        ],
    ));
    Layout {
        orders,
        blocks: vec![join(base, "layers")],
        ties: Vec::new(),
    }
}

/// `OPTForCausalLM` (`model`, `lm_head`), `OPTModel` (`decoder`), and `OPTDecoder`, which
/// registers `project_out` before `project_in` and its final norm before its layers.
fn opt(inv: &Inventory) -> Layout {
    let decoder = if has(inv, "model") {
        "model.decoder"
    } else {
        "decoder"
    };
    let mut orders = Vec::new();
    if has(inv, "model") {
        orders.push((String::new(), vec![child("model"), child("lm_head")]));
        orders.push(("model".to_string(), vec![child("decoder")]));
    }
    orders.push((
        decoder.to_string(),
        vec![
            child("embed_tokens"),
            child("embed_positions"),
            child("project_out"),
            child("project_in"),
            child("final_layer_norm"),
            child("layers"),
        ],
    ));
    Layout {
        orders,
        blocks: vec![join(decoder, "layers")],
        ties: Vec::new(),
    }
}

/// `GPT2LMHeadModel` (`transformer`, `lm_head`) around `GPT2Model` (`wte`, `wpe`, `drop`,
/// `h`, `ln_f`).
fn gpt2(inv: &Inventory) -> Layout {
    let base = if has(inv, "transformer") {
        "transformer"
    } else {
        ""
    };
    let mut orders = Vec::new();
    if !base.is_empty() {
        orders.push((String::new(), vec![child("transformer"), child("lm_head")]));
    }
    orders.push((
        base.to_string(),
        vec![
            child("wte"),
            child("wpe"),
            parameterless("drop", 0),
            child("h"),
            child("ln_f"),
        ],
    ));
    Layout {
        orders,
        blocks: vec![join(base, "h")],
        ties: Vec::new(),
    }
}

/// `T5ForConditionalGeneration` (`shared`, `encoder`, `decoder`, `lm_head`), each `T5Stack`
/// with `embed_tokens`, `block`, `final_layer_norm`, `dropout`. transformers 5 forces
/// `tie_word_embeddings` on for T5 and mT5, so `lm_head` is tied to `shared` even when the
/// config unties it (T5 v1.1, FLAN-T5, mT5).
fn t5(inv: &Inventory) -> Layout {
    let stack = || {
        vec![
            child("embed_tokens"),
            child("block"),
            child("final_layer_norm"),
            parameterless("dropout", 0),
        ]
    };
    let ties = if inv.find("lm_head.weight").is_some() && inv.find("shared.weight").is_some() {
        vec![("lm_head.weight".to_string(), "shared.weight".to_string())]
    } else {
        Vec::new()
    };
    Layout {
        orders: vec![
            (
                String::new(),
                vec![
                    child("shared"),
                    child("encoder"),
                    child("decoder"),
                    child("lm_head"),
                ],
            ),
            ("encoder".to_string(), stack()),
            ("decoder".to_string(), stack()),
        ],
        blocks: vec!["encoder.block".to_string(), "decoder.block".to_string()],
        ties,
    }
}

/// Bytes of a Llama-style rotary embedding's buffers: `inv_freq` and `original_inv_freq`,
/// each `ceil(dim / 2)` f32 values, where `dim` is the head dimension (times
/// `partial_rotary_factor` for the non-default rope types, as transformers' rope functions
/// compute it).
fn rotary_buffer_bytes(config: &ModelConfig) -> u64 {
    let head_dim = config
        .opt_u64("head_dim")
        .filter(|&d| d > 0)
        .unwrap_or_else(|| {
            let hidden = config.u64_or("hidden_size", 0);
            let heads = config.u64_or("num_attention_heads", 1).max(1);
            hidden / heads
        });
    let rope = ["rope_parameters", "rope_scaling"]
        .iter()
        .find_map(|k| config.raw.get(*k).and_then(Value::as_object));
    let rope_type = rope
        .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let dim = if rope_type == "default" {
        head_dim
    } else {
        let factor = rope
            .and_then(|r| r.get("partial_rotary_factor"))
            .or_else(|| config.raw.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        (head_dim as f64 * factor) as u64
    };
    2 * dim.div_ceil(2) * 4
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Whether the inventory has a module at `path`.
pub(super) fn has(inv: &Inventory, path: &str) -> bool {
    find(&inv.root, path).is_some()
}

/// The inventory module at `path`.
pub(super) fn find<'a>(root: &'a Module, path: &str) -> Option<&'a Module> {
    if path.is_empty() {
        return Some(root);
    }
    let mut node = root;
    let mut at = String::new();
    for seg in path.split('.') {
        at = join(&at, seg);
        node = node.children.iter().find(|c| c.path == at)?;
    }
    Some(node)
}
