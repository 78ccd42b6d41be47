//! Inventories of real safetensors files: order, sharding, ties, dtypes.

use safetensors::Dtype;
use stowage::planner::{InventoryOptions, TensorSource};
use stowage::{DType, Inventory};

use crate::fixtures::*;

fn names(inv: &Inventory) -> Vec<&str> {
    inv.tensors.iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn execution_order_not_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    write_safetensors(&path, &llama_tensors(12, 16, Dtype::F32, false));
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let n = names(&inv);
    assert_eq!(n[0], "model.embed_tokens.weight");
    assert_eq!(n[n.len() - 2], "model.norm.weight");
    assert_eq!(n[n.len() - 1], "lm_head.weight");
    let pos = |name: &str| n.iter().position(|x| *x == name).unwrap();
    assert!(
        pos("model.layers.2.mlp.up_proj.weight") < pos("model.layers.10.input_layernorm.weight")
    );
    assert!(
        pos("model.layers.9.mlp.down_proj.weight") < pos("model.layers.10.input_layernorm.weight")
    );
    let units = inv.no_split_units();
    assert_eq!(units.len(), 12);
    assert_eq!(units[2], "model.layers.2");
    assert_eq!(units[10], "model.layers.10");
    assert_eq!(inv.auto_dtype, Some(DType::F32));
}

#[test]
fn sharded_equals_single() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tensors = llama_tensors(6, 16, Dtype::BF16, false);
    write_safetensors(&p(a.path(), "model.safetensors"), &tensors);
    write_sharded(b.path(), &tensors, 3);
    let single = Inventory::from_spec(s(a.path()), &InventoryOptions::default()).unwrap();
    let sharded = Inventory::from_spec(s(b.path()), &InventoryOptions::default()).unwrap();
    assert_eq!(names(&single), names(&sharded));
    assert_eq!(single.total_bytes(None), sharded.total_bytes(None));
    assert_eq!(
        sharded.files.len(),
        4,
        "index + 3 shards: {:?}",
        sharded.files
    );
    // Offsets point into the shard that holds each tensor.
    let last = sharded.tensors.last().unwrap();
    match &last.source {
        TensorSource::File {
            path, start, end, ..
        } => {
            assert!(
                path.ends_with("model-00003-of-00003.safetensors"),
                "{path:?}"
            );
            assert_eq!(end - start, last.stored_bytes());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tie_from_config_when_head_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(2, 16, Dtype::BF16, true),
    );
    std::fs::write(p(dir.path(), "config.json"), llama_config(2, 16, true)).unwrap();
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let head = &inv.tensors[inv.find("lm_head.weight").expect("tied head is listed")];
    assert_eq!(head.tied_to.as_deref(), Some("model.embed_tokens.weight"));
    assert_eq!(head.bytes_as(None), 0);
    let untied: u64 = llama_tensors(2, 16, Dtype::BF16, true)
        .iter()
        .map(|(_, _, s)| s.iter().product::<usize>() as u64 * 2)
        .sum();
    assert_eq!(inv.total_bytes(None), untied, "tied tensors count once");
}

#[test]
fn untied_config_adds_no_tie() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(2, 16, Dtype::BF16, false),
    );
    std::fs::write(p(dir.path(), "config.json"), llama_config(2, 16, false)).unwrap();
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    assert!(inv.tensors.iter().all(|t| t.tied_to.is_none()));
}

#[test]
fn tie_from_shared_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"wte.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"lm_head.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]},"h.0.w":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}}"#;
    write_raw(&path, header, 40);
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    assert_eq!(inv.total_bytes(None), 40);
    let tied: Vec<_> = inv.tensors.iter().filter(|t| t.tied_to.is_some()).collect();
    assert_eq!(tied.len(), 1);
    assert_eq!(names(&inv), ["wte.weight", "h.0.w", "lm_head.weight"]);
}

#[test]
fn bf16_sizes_and_dtype_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"a.w":{"dtype":"BF16","shape":[8],"data_offsets":[0,16]},"a.ids":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},"b.w":{"dtype":"F32","shape":[4],"data_offsets":[32,48]}}"#;
    write_raw(&path, header, 48);
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    assert_eq!(inv.auto_dtype, Some(DType::BF16), "first floating dtype");
    assert_eq!(inv.total_bytes(None), 48);
    // Floats take min(target, stored); integers keep their size.
    assert_eq!(inv.total_bytes(Some(DType::F16)), 16 + 16 + 8);
    assert_eq!(inv.total_bytes(Some(DType::F32)), 48);
}

#[test]
fn user_no_split_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    write_safetensors(&path, &llama_tensors(2, 16, Dtype::F32, false));
    let opts = InventoryOptions {
        no_split: vec!["model".into()],
        ..Default::default()
    };
    let inv = Inventory::from_spec(s(&path), &opts).unwrap();
    assert_eq!(inv.no_split_units(), ["model"], "outermost unit wins");
    let opts = InventoryOptions {
        no_split: vec!["a..b".into()],
        ..Default::default()
    };
    assert!(Inventory::from_spec(s(&path), &opts).is_err());
}

#[test]
fn gpt2_checkpoint_without_prefix_ties_head_to_wte() {
    // openai-community/gpt2 stores `wte.weight`, not `transformer.wte.weight`, and no head.
    let dir = tempfile::tempdir().unwrap();
    let t = |n: &str, s: &[usize]| (n.to_string(), Dtype::F32, s.to_vec());
    let tensors = vec![
        t("wte.weight", &[64, 16]),
        t("wpe.weight", &[32, 16]),
        t("h.0.ln_1.weight", &[16]),
        t("h.0.attn.c_attn.weight", &[16, 48]),
        t("ln_f.weight", &[16]),
    ];
    write_safetensors(&p(dir.path(), "model.safetensors"), &tensors);
    std::fs::write(
        p(dir.path(), "config.json"),
        r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"],"n_embd":16,"n_layer":1,"n_head":2,"vocab_size":64,"n_positions":32}"#,
    )
    .unwrap();
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let head = &inv.tensors[inv.find("lm_head.weight").expect("head added as a tie")];
    assert_eq!(head.tied_to.as_deref(), Some("wte.weight"));
    assert_eq!(names(&inv)[..2], ["wte.weight", "wpe.weight"]);
    assert_eq!(*names(&inv).last().unwrap(), "lm_head.weight");
    assert_eq!(inv.no_split_units(), ["h.0"]);
}

#[test]
fn t5_embed_tokens_stored_twice_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = |n: &str, s: &[usize]| (n.to_string(), Dtype::F32, s.to_vec());
    let tensors = vec![
        t("shared.weight", &[64, 8]),
        t("encoder.embed_tokens.weight", &[64, 8]),
        t("encoder.block.0.layer.0.layer_norm.weight", &[8]),
        t("encoder.final_layer_norm.weight", &[8]),
        t("decoder.embed_tokens.weight", &[64, 8]),
        t("decoder.block.0.layer.0.layer_norm.weight", &[8]),
        t("decoder.final_layer_norm.weight", &[8]),
    ];
    write_safetensors(&p(dir.path(), "model.safetensors"), &tensors);
    std::fs::write(
        p(dir.path(), "config.json"),
        r#"{"model_type":"t5","architectures":["T5ForConditionalGeneration"],"d_model":8,"d_kv":4,"d_ff":16,"num_layers":1,"num_heads":2,"vocab_size":64}"#,
    )
    .unwrap();
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    for name in [
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
        "lm_head.weight",
    ] {
        let t = &inv.tensors[inv.find(name).unwrap()];
        assert_eq!(t.tied_to.as_deref(), Some("shared.weight"), "{name}");
    }
    // 64×8 counted once, plus four norms of 8, in f32.
    assert_eq!(inv.total_bytes(None), (64 * 8 + 4 * 8) * 4);
    let n = names(&inv);
    let pos = |x: &str| n.iter().position(|y| *y == x).unwrap();
    assert!(pos("shared.weight") < pos("encoder.block.0.layer.0.layer_norm.weight"));
    assert!(
        pos("encoder.final_layer_norm.weight") < pos("decoder.block.0.layer.0.layer_norm.weight")
    );
}
