//! What a model needs besides its weights once it runs: the shapes behind its KV cache and
//! its activations, read from the config of a known architecture.

use crate::config::ModelConfig;

/// Sizes that decide run-time memory, per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeDims {
    /// KV-cache elements one token adds to one layer (keys and values together).
    pub kv_elems_per_token: u64,
    /// The container whose numbered children hold a KV cache (`layers`, `h`,
    /// `decoder.block`); matched against the end of a block's parent path.
    pub kv_container: &'static str,
    /// Hidden width.
    pub hidden: u64,
    /// Widest intermediate activation per token (MLP, or the active experts of a MoE).
    pub intermediate: u64,
    /// Vocabulary size (logits of the last position).
    pub vocab: u64,
}

/// The run-time dimensions of `config`'s architecture; `None` when unknown or incomplete.
pub fn runtime_dims(config: &ModelConfig) -> Option<RuntimeDims> {
    let c = config;
    let any = |keys: &[&str]| keys.iter().find_map(|k| c.opt_u64(k));
    match c.model_type()? {
        "llama" | "mistral" | "qwen2" | "mixtral" => {
            let hidden = c.opt_u64("hidden_size")?;
            let heads = c.opt_u64("num_attention_heads").filter(|&h| h > 0)?;
            let kv_heads = c.opt_u64("num_key_value_heads").unwrap_or(heads);
            let head_dim = c.opt_u64("head_dim").unwrap_or(hidden / heads);
            let inter = c.opt_u64("intermediate_size")?;
            let active = c.opt_u64("num_experts_per_tok").unwrap_or(1);
            Some(RuntimeDims {
                kv_elems_per_token: 2 * kv_heads * head_dim,
                kv_container: "layers",
                hidden,
                intermediate: inter * active,
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        "deepseek_v3" | "kimi_k2" => {
            let hidden = c.opt_u64("hidden_size")?;
            let heads = c.opt_u64("num_attention_heads")?;
            let qk = c.opt_u64("qk_nope_head_dim")? + c.opt_u64("qk_rope_head_dim")?;
            let v = c.opt_u64("v_head_dim")?;
            let experts = c.opt_u64("num_experts_per_tok").unwrap_or(1)
                + c.opt_u64("n_shared_experts").unwrap_or(0);
            let moe = c.opt_u64("moe_intermediate_size").unwrap_or(0) * experts;
            Some(RuntimeDims {
                // transformers caches the decompressed keys and values of every head.
                kv_elems_per_token: heads * (qk + v),
                kv_container: "layers",
                hidden,
                intermediate: moe.max(c.opt_u64("intermediate_size")?),
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        "gpt2" => {
            let hidden = any(&["n_embd", "hidden_size"])?;
            Some(RuntimeDims {
                kv_elems_per_token: 2 * hidden,
                kv_container: "h",
                hidden,
                intermediate: c.opt_u64("n_inner").unwrap_or(4 * hidden),
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        "opt" => {
            let hidden = c.opt_u64("hidden_size")?;
            Some(RuntimeDims {
                kv_elems_per_token: 2 * hidden,
                kv_container: "layers",
                hidden,
                intermediate: c.opt_u64("ffn_dim")?,
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        "t5" | "mt5" => {
            let inner = c.opt_u64("num_heads")? * c.opt_u64("d_kv")?;
            Some(RuntimeDims {
                // Self-attention and cross-attention caches of each decoder block.
                kv_elems_per_token: 4 * inner,
                kv_container: "decoder.block",
                hidden: c.opt_u64("d_model")?,
                intermediate: c.opt_u64("d_ff")?,
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        "bert" => {
            let hidden = c.opt_u64("hidden_size")?;
            Some(RuntimeDims {
                kv_elems_per_token: 0,
                kv_container: "layer",
                hidden,
                intermediate: c.opt_u64("intermediate_size")?,
                vocab: c.opt_u64("vocab_size")?,
            })
        }
        _ => None,
    }
}
