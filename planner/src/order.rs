//! Execution order of a model's modules, recovered from tensor names alone.
//!
//! Safetensors headers list tensors by offset, which writers sort by dtype and name, so
//! `layers.10` comes before `layers.2` and `lm_head` before `model`. Stowage orders each
//! level of the module tree by what the name says about when the module runs: embeddings
//! first, then numbered blocks in numeric order, then final norms, then heads. Names it has
//! no rule for keep the order in which they first appear.

/// A sort key for one path segment; lower runs earlier. Digits sort numerically among
/// themselves, after names of the same rank.
pub(crate) fn segment_rank(segment: &str) -> (u32, u64) {
    if let Ok(n) = segment.parse::<u64>() {
        return (50, n);
    }
    let lower;
    let s: &str = if segment.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = segment.to_ascii_lowercase();
        &lower
    } else {
        segment
    };
    let rank = match s {
        "wte" | "shared" | "tok_embeddings" | "emb" | "embed" | "word_embeddings"
        | "embed_tokens" | "embed_in" => 0,
        "wpe" | "embed_positions" | "position_embeddings" => 1,
        "token_type_embeddings" => 2,
        _ if s.starts_with("embed") || s.contains("embedding") => 3,
        "project_in" | "layernorm_embedding" | "emb_ln" | "ln_emb" => 10,
        "input_layernorm"
        | "ln_1"
        | "self_attn_layer_norm"
        | "attention_norm"
        | "norm1"
        | "pre_attention_layernorm" => 20,
        "q_proj" | "q" | "query" | "q_a_proj" | "q_a_layernorm" | "q_b_proj" => 31,
        "k_proj" | "k" | "key" | "kv_a_proj_with_mqa" | "kv_a_layernorm" | "kv_b_proj" => 32,
        "v_proj" | "v" | "value" => 33,
        "o_proj" | "o" | "out_proj" | "c_proj" | "dense" => 36,
        "c_attn" => 30,
        "self_attn" | "attn" | "attention" | "selfattention" | "self_attention" | "mixer" => 30,
        "encoder" => 40,
        "post_attention_layernorm"
        | "ln_2"
        | "ffn_norm"
        | "norm2"
        | "pre_feedforward_layernorm" => 55,
        "gate" | "router" => 56,
        "mlp" | "feed_forward" | "block_sparse_moe" | "ffn" | "intermediate" | "densereludense" => {
            60
        }
        "gate_proj" | "w1" | "c_fc" | "fc1" | "wi" | "wi_0" | "wi_1" | "up_proj" | "w3" => 61,
        "down_proj" | "w2" | "fc2" | "wo" => 63,
        "decoder" => 60,
        "output" => 65,
        "post_feedforward_layernorm" => 70,
        "norm" | "ln_f" | "final_layer_norm" | "final_layernorm" | "norm_f" | "final_norm" => 80,
        "project_out" => 90,
        "lm_head" | "head" | "classifier" | "score" | "cls" | "pooler" | "qa_outputs"
        | "embed_out" | "output_layer" => 100,
        "bias" => 52,
        _ => 50,
    };
    (rank, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_by_key(|s| segment_rank(s));
        v
    }

    #[test]
    fn numbers_sort_numerically() {
        assert_eq!(sorted(vec!["10", "2", "1"]), ["1", "2", "10"]);
    }

    #[test]
    fn embeddings_blocks_norm_head() {
        assert_eq!(
            sorted(vec!["lm_head", "norm", "layers", "embed_tokens"]),
            ["embed_tokens", "layers", "norm", "lm_head"]
        );
        assert_eq!(
            sorted(vec!["decoder", "encoder", "shared"]),
            ["shared", "encoder", "decoder"]
        );
    }
}
