//! The reference architectures against checkpoints nobody here wrote (all-MiniLM-L6-v2 and
//! transformers' outputs for it) and against a naive implementation (tiny random Llamas),
//! loaded with `stowage::load`, whole and block by block.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn_ndarray::{NdArray, NdArrayDevice};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};
use stowage::models::{
    BertConfig, BertInput, BertModel, Layered, LlamaConfig, LlamaForCausalLM, token_ids,
};
use stowage::planner::RuntimeOptions;
use stowage::{
    Budgets, Inventory, InventoryOptions, LoadOptions, ModuleLoadOptions, ModuleLoadReport, Plan,
    PlanOptions,
};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

pub(crate) fn inventory(spec: &Path) -> Inventory {
    Inventory::from_spec(spec.to_str().unwrap(), &InventoryOptions::default()).unwrap()
}

/// Everything on the CPU.
pub(crate) fn plan(inventory: &Inventory) -> Plan {
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 1 << 30,
        disk_bytes: 1 << 30,
    };
    let opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        ..Default::default()
    };
    stowage::plan(inventory, &budgets, &opts).unwrap()
}

fn load<M: Layered<B>>(model: M, inv: &Inventory, dir: &Path) -> (M, ModuleLoadReport) {
    let options = ModuleLoadOptions {
        renames: model.renames(),
        store: LoadOptions {
            offload_folder: dir.join("offload"),
            ..Default::default()
        },
        ..Default::default()
    };
    stowage::load(model, inv, &plan(inv), &DEV, &options).unwrap()
}

pub(crate) fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

// all-MiniLM-L6-v2 against transformers

pub(crate) use crate::minilm_fixture::minilm_dir;

pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) ids: Vec<u32>,
    pub(crate) types: Vec<u32>,
    /// `[seq, hidden]`, row-major.
    pub(crate) hidden: Vec<f64>,
    pub(crate) pooled: Vec<f64>,
}

pub(crate) fn reference() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let u32s = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let f64s = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().into(),
            ids: u32s(&c["input_ids"]),
            types: u32s(&c["token_type_ids"]),
            hidden: c["last_hidden_state"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(f64s)
                .collect(),
            pooled: f64s(&c["pooler_output"]),
        })
        .collect()
}

fn minilm() -> BertModel<B> {
    let dir = minilm_dir();
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(
        (config.num_hidden_layers, config.hidden_size),
        (6, 384),
        "{config:?}"
    );
    let inv = inventory(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let (model, report) = load(config.init::<B>(&DEV), &inv, tmp.path());
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    // The checkpoint also stores the `position_ids` buffer, which is no parameter.
    assert_eq!(report.unexpected, ["embeddings.position_ids"]);
    assert_eq!(report.loaded.len(), 5 + 6 * 16 + 2);
    model
}

#[test]
fn minilm_reproduces_transformers() {
    let model = minilm();
    let cases = reference();
    assert_eq!(cases.len(), 4);
    let mut worst = 0.0f64;
    for c in &cases {
        let types = token_ids::<B>(&[&c.types], &DEV);
        let input = BertInput::from_ids(&c.ids, &DEV).with_token_type_ids(types);
        let out = model.forward(&input);
        assert_eq!(out.last_hidden_state.dims(), [1, c.ids.len(), 384]);
        let hidden = max_abs_diff(&vals(out.last_hidden_state), &c.hidden);
        let pooled = max_abs_diff(&vals(out.pooler_output.unwrap()), &c.pooled);
        assert!(
            hidden < 1e-4 && pooled < 1e-4,
            "`{}`: max abs diff {hidden:e} (last_hidden_state), {pooled:e} (pooler_output)",
            c.name
        );
        worst = worst.max(hidden).max(pooled);
    }
    eprintln!("minilm: max abs diff vs transformers {worst:e}");
}

#[test]
fn minilm_padding_changes_nothing_for_the_real_tokens() {
    let model = minilm();
    let cases = reference();
    let (short, long) = (&cases[0], &cases[3]);
    assert!(short.ids.len() < long.ids.len());
    let input = BertInput::padded(&[&short.ids, &long.ids], 0, &DEV);
    let out = vals(model.forward(&input).last_hidden_state);
    let seq = long.ids.len();
    let row = |b: usize, len: usize| out[b * seq * 384..(b * seq + len) * 384].to_vec();
    let (d0, d1) = (
        max_abs_diff(&row(0, short.ids.len()), &short.hidden),
        max_abs_diff(&row(1, seq), &long.hidden),
    );
    assert!(
        d0 < 1e-4 && d1 < 1e-4,
        "max abs diff {d0:e} (padded), {d1:e}"
    );
}

// Tiny random Llama-family checkpoints against a naive implementation

/// Checkpoint tensors: name → (shape, values), with transformers' names and layouts.
pub(crate) type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A tiny Llama-family model: sizes and the family details under test.
#[derive(Clone, Copy)]
pub(crate) struct Tiny {
    pub(crate) model_type: &'static str,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) tied: bool,
    /// `attention_bias` (llama) or Qwen2's q/k/v biases.
    pub(crate) bias: bool,
    pub(crate) window: Option<usize>,
}

const HIDDEN: usize = 16;
const INTER: usize = 24;
const VOCAB: usize = 32;
const THETA: f64 = 10_000.0;
const EPS: f64 = 1e-5;

pub(crate) const LLAMA: Tiny = Tiny {
    model_type: "llama",
    layers: 2,
    heads: 4,
    kv_heads: 2,
    head_dim: 4,
    tied: false,
    bias: false,
    window: None,
};

impl Tiny {
    fn config(&self) -> Value {
        let mut c = json!({
            "architectures": [match self.model_type {
                "qwen2" => "Qwen2ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            }],
            "model_type": self.model_type, "hidden_size": HIDDEN, "intermediate_size": INTER,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "vocab_size": VOCAB, "rope_theta": THETA,
            "rms_norm_eps": EPS, "tie_word_embeddings": self.tied, "torch_dtype": "float32",
        });
        if self.head_dim * self.heads != HIDDEN {
            c["head_dim"] = json!(self.head_dim);
        }
        if self.model_type == "llama" {
            c["attention_bias"] = json!(self.bias);
        }
        if let Some(w) = self.window {
            c["sliding_window"] = json!(w);
        }
        c
    }

    /// Whether q/k/v (and for llama o) have biases.
    fn qkv_bias(&self) -> bool {
        self.bias || self.model_type == "qwen2"
    }

    fn o_bias(&self) -> bool {
        self.bias && self.model_type == "llama"
    }

    fn tensors(&self) -> Tensors {
        let mut t = Tensors::new();
        let mut add = |name: String, shape: &[usize], around: f32| {
            let seed = t.len() as u64 + 1;
            let n = shape.iter().product();
            t.insert(name, (shape.to_vec(), random(seed, n, around)));
        };
        let (q, kv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        add("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], 0.0);
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            add(format!("{p}.input_layernorm.weight"), &[HIDDEN], 1.0);
            for (proj, out, inp) in [
                ("q", q, HIDDEN),
                ("k", kv, HIDDEN),
                ("v", kv, HIDDEN),
                ("o", HIDDEN, q),
            ] {
                add(
                    format!("{p}.self_attn.{proj}_proj.weight"),
                    &[out, inp],
                    0.0,
                );
                if (proj != "o" && self.qkv_bias()) || (proj == "o" && self.o_bias()) {
                    add(format!("{p}.self_attn.{proj}_proj.bias"), &[out], 0.0);
                }
            }
            add(
                format!("{p}.post_attention_layernorm.weight"),
                &[HIDDEN],
                1.0,
            );
            add(format!("{p}.mlp.gate_proj.weight"), &[INTER, HIDDEN], 0.0);
            add(format!("{p}.mlp.up_proj.weight"), &[INTER, HIDDEN], 0.0);
            add(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, INTER], 0.0);
        }
        add("model.norm.weight".into(), &[HIDDEN], 1.0);
        if !self.tied {
            add("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.0);
        }
        t
    }

    /// Writes `config.json` and `model.safetensors` into `dir`; returns the tensors.
    pub(crate) fn write(&self, dir: &Path) -> Tensors {
        let t = self.tensors();
        std::fs::write(dir.join("config.json"), self.config().to_string()).unwrap();
        let bytes: Vec<Vec<u8>> = t
            .values()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, TensorView)> = t
            .iter()
            .zip(&bytes)
            .map(|((n, (s, _)), b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        t
    }

    fn load(&self, dir: &Path) -> (LlamaForCausalLM<B>, ModuleLoadReport, Tensors) {
        let t = self.write(dir);
        let config = LlamaConfig::from_file(&dir.join("config.json")).unwrap();
        let (model, report) = load(config.init::<B>(&DEV), &inventory(dir), dir);
        (model, report, t)
    }
}

/// Deterministic values in `around ± 0.4` (xorshift).
fn random(seed: u64, n: usize, around: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            around + ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.8
        })
        .collect()
}

/// transformers' Llama forward written out in plain f64 loops: logits `[seq][vocab]`.
fn naive_logits(tiny: &Tiny, t: &Tensors, ids: &[u32]) -> Vec<Vec<f64>> {
    let w = |name: &str| &t[name].1;
    let linear = |x: &[f64], name: &str| -> Vec<f64> {
        let (shape, weight) = &t[&format!("{name}.weight")];
        let (out, inp) = (shape[0], shape[1]);
        let bias = t.get(&format!("{name}.bias")).map(|(_, b)| b);
        (0..out)
            .map(|o| {
                let dot: f64 = (0..inp).map(|i| x[i] * weight[o * inp + i] as f64).sum();
                dot + bias.map_or(0.0, |b| b[o] as f64)
            })
            .collect()
    };
    let rms = |x: &[f64], name: &str| -> Vec<f64> {
        let g = w(name);
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = (ms + EPS).sqrt();
        x.iter().zip(g).map(|(v, g)| v / r * *g as f64).collect()
    };
    let d = tiny.head_dim;
    // Rotate halves: pair (j, j + d/2) by position · θ^(-2j/d).
    let rope = |v: &mut [f64], pos: usize| {
        for j in 0..d / 2 {
            let a = pos as f64 * THETA.powf(-2.0 * j as f64 / d as f64);
            let (x1, x2) = (v[j], v[j + d / 2]);
            v[j] = x1 * a.cos() - x2 * a.sin();
            v[j + d / 2] = x2 * a.cos() + x1 * a.sin();
        }
    };
    let seq = ids.len();
    let embed = w("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = ids
        .iter()
        .map(|&id| {
            (0..HIDDEN)
                .map(|h| embed[id as usize * HIDDEN + h] as f64)
                .collect()
        })
        .collect();
    for l in 0..tiny.layers {
        let p = format!("model.layers.{l}");
        let hn: Vec<Vec<f64>> = x
            .iter()
            .map(|r| rms(r, &format!("{p}.input_layernorm.weight")))
            .collect();
        let proj = |name: &str| -> Vec<Vec<f64>> {
            hn.iter()
                .map(|r| linear(r, &format!("{p}.self_attn.{name}")))
                .collect()
        };
        let (mut q, mut k, v) = (proj("q_proj"), proj("k_proj"), proj("v_proj"));
        for pos in 0..seq {
            for h in 0..tiny.heads {
                rope(&mut q[pos][h * d..(h + 1) * d], pos);
            }
            for h in 0..tiny.kv_heads {
                rope(&mut k[pos][h * d..(h + 1) * d], pos);
            }
        }
        let group = tiny.heads / tiny.kv_heads;
        let mut attn = vec![vec![0.0; tiny.heads * d]; seq];
        for h in 0..tiny.heads {
            let kvh = h / group;
            for i in 0..seq {
                let visible: Vec<usize> = (0..=i)
                    .filter(|&j| tiny.window.is_none_or(|win| i - j < win))
                    .collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        (0..d)
                            .map(|e| q[i][h * d + e] * k[j][kvh * d + e])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (&j, e) in visible.iter().zip(&exps) {
                    for c in 0..d {
                        attn[i][h * d + c] += e / sum * v[j][kvh * d + c];
                    }
                }
            }
        }
        for i in 0..seq {
            let o = linear(&attn[i], &format!("{p}.self_attn.o_proj"));
            x[i].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let hn = rms(&x[i], &format!("{p}.post_attention_layernorm.weight"));
            let gate = linear(&hn, &format!("{p}.mlp.gate_proj"));
            let up = linear(&hn, &format!("{p}.mlp.up_proj"));
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = linear(&act, &format!("{p}.mlp.down_proj"));
            x[i].iter_mut().zip(down).for_each(|(a, b)| *a += b);
        }
    }
    let head = if tiny.tied {
        "model.embed_tokens"
    } else {
        "lm_head"
    };
    x.iter()
        .map(|r| linear(&rms(r, "model.norm.weight"), head))
        .collect()
}

pub(crate) const PROMPT: [u32; 6] = [3, 17, 8, 30, 1, 12];

fn logits_diff(model: &LlamaForCausalLM<B>, tiny: &Tiny, t: &Tensors, ids: &[u32]) -> f64 {
    let got = vals(model.forward(token_ids(&[ids], &DEV)));
    let want: Vec<f64> = naive_logits(tiny, t, ids).into_iter().flatten().collect();
    max_abs_diff(&got, &want)
}

#[test]
fn tiny_llamas_load_fully_and_match_a_naive_implementation() {
    let variants = [
        ("llama, GQA, untied", LLAMA),
        (
            "llama, tied head",
            Tiny {
                tied: true,
                ..LLAMA
            },
        ),
        (
            "llama, attention_bias, MHA, head_dim ≠ hidden / heads",
            Tiny {
                bias: true,
                kv_heads: 4,
                head_dim: 6,
                ..LLAMA
            },
        ),
        (
            "qwen2, q/k/v biases, tied",
            Tiny {
                model_type: "qwen2",
                tied: true,
                ..LLAMA
            },
        ),
        (
            "mistral, sliding window 3",
            Tiny {
                model_type: "mistral",
                kv_heads: 1,
                window: Some(3),
                ..LLAMA
            },
        ),
    ];
    for (name, tiny) in variants {
        let dir = tempfile::tempdir().unwrap();
        let (model, report, t) = tiny.load(dir.path());
        assert!(
            report.missing.is_empty(),
            "{name}: missing {:?}",
            report.missing
        );
        assert!(
            report.unexpected.is_empty(),
            "{name}: unexpected {:?}",
            report.unexpected
        );
        assert!(report.mismatched.is_empty(), "{name}");
        let tied = [(
            "lm_head.weight".to_string(),
            "model.embed_tokens.weight".to_string(),
        )];
        assert_eq!(
            report.tied,
            if tiny.tied { &tied[..] } else { &[] },
            "{name}"
        );
        assert_eq!(
            report.loaded.len(),
            t.len() + usize::from(tiny.tied),
            "{name}"
        );
        let diff = logits_diff(&model, &tiny, &t, &PROMPT);
        assert!(
            diff < 1e-4,
            "{name}: max abs diff {diff:e} against the naive logits"
        );
    }
}

#[test]
fn greedy_generation_is_deterministic_and_follows_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, t) = LLAMA.load(dir.path());
    let tokens = model.generate_greedy(&PROMPT, 5);
    assert_eq!(tokens.len(), 5);
    assert!(tokens.iter().all(|&id| (id as usize) < VOCAB));
    assert_eq!(model.generate_greedy(&PROMPT, 5), tokens);
    // Each token is the argmax of the naive logits of everything before it.
    let mut ids = PROMPT.to_vec();
    for _ in 0..5 {
        let logits = naive_logits(&LLAMA, &t, &ids);
        let last = logits.last().unwrap();
        let best = (0..VOCAB).fold(0, |b, v| if last[v] > last[b] { v } else { b });
        ids.push(best as u32);
    }
    assert_eq!(tokens, ids[PROMPT.len()..]);
}

#[test]
fn blocks_built_alone_load_alone_and_run_as_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let (mut model, _, _) = LLAMA.load(dir.path());
    let inv = inventory(dir.path());
    let ids = token_ids::<B>(&[&PROMPT], &DEV);
    let whole = vals(model.forward(ids.clone()));

    assert_eq!(model.num_blocks(), 2);
    assert_eq!(model.block_path(1), "model.layers.1");
    assert_eq!(model.block_prefix(1), "model.layers.1");
    // Take the blocks out; build each again lazily and load it from the whole inventory.
    let loaded = std::mem::take(model.blocks_mut());
    assert!(model.blocks().is_empty());
    let mut fresh = Vec::new();
    for i in 0..model.num_blocks() {
        let block = model.make_block(i, &DEV);
        assert!(!block.mlp.up_proj.weight.is_initialized());
        let options = ModuleLoadOptions {
            renames: model.block_renames(i),
            ..Default::default()
        };
        let (block, report) = stowage::load(block, &inv, &plan(&inv), &DEV, &options).unwrap();
        assert_eq!(report.loaded.len(), 9);
        assert!(
            report
                .loaded
                .iter()
                .all(|(_, tensor)| tensor.starts_with(&format!("model.layers.{i}.")))
        );
        assert_eq!(report.store.loaded, 9, "only the block's tensors are read");
        fresh.push(block);
    }
    let (mut x, ctx) = model.embed(&ids);
    for block in &fresh {
        let ctx = LlamaForCausalLM::context_to(&ctx, &DEV);
        x = LlamaForCausalLM::run_block(block, x, &ctx);
    }
    assert_eq!(vals(model.finish(x)), whole);
    // Back in place, the whole model runs again.
    *model.blocks_mut() = loaded;
    assert_eq!(vals(model.forward(ids)), whole);
}

#[test]
#[should_panic(expected = "put them back")]
fn running_whole_with_blocks_out_panics() {
    let config = LlamaConfig::from_model_config(
        &stowage::ModelConfig::from_json_str(Path::new("config.json"), &LLAMA.config().to_string())
            .unwrap(),
    )
    .unwrap();
    let mut model = config.init::<B>(&DEV);
    model.blocks_mut().pop();
    model.forward(token_ids(&[&[1]], &DEV));
}

// Names: every parameter against the planner's expansion of the same config

/// The model's parameters, renamed, match exactly the tensors the planner lists for the
/// config, checked without reading (or having) any weight.
fn assert_names_match<M: Layered<B>>(model: &M, config: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let inv = inventory(&path);
    let options = ModuleLoadOptions {
        renames: model.renames(),
        ..Default::default()
    };
    let check = stowage::check_module(model, &inv, &options).unwrap();
    assert!(
        check.unexpected.is_empty(),
        "{config}: {:?}",
        check.unexpected
    );
    assert_eq!(
        check.matched.len(),
        stowage::module_tensors(model).len(),
        "{config}"
    );
}

#[test]
fn parameter_names_are_transformers_names() {
    let bert = |arch: &str| {
        json!({
            "architectures": [arch], "model_type": "bert", "vocab_size": 50, "hidden_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12,
            "max_position_embeddings": 16, "type_vocab_size": 2,
        })
    };
    for (arch, pooler, prefix) in [
        ("BertModel", true, ""),
        ("BertForMaskedLM", false, "bert."),
        ("BertForSequenceClassification", true, "bert."),
    ] {
        let config = bert(arch);
        let c = BertConfig::from_model_config(
            &stowage::ModelConfig::from_json_str(Path::new("config.json"), &config.to_string())
                .unwrap(),
        )
        .unwrap();
        let model = c.init::<B>(&DEV);
        assert_eq!(model.pooler.is_some(), pooler, "{arch}");
        assert_eq!(model.block_prefix(1), format!("{prefix}encoder.layer.1"));
        assert!(!model.embeddings.word_embeddings.weight.is_initialized());
        // BertForMaskedLM and the classifiers have heads of their own: only the encoder's
        // names need matching there.
        if arch == "BertModel" {
            assert_names_match(&model, &config);
        }
        let names: Vec<String> = stowage::module_tensors(&model)
            .iter()
            .map(|t| model.renames().apply(&t.name))
            .collect();
        for want in [
            "embeddings.LayerNorm.weight",
            "encoder.layer.1.attention.self.query.weight",
            "encoder.layer.0.attention.output.LayerNorm.bias",
            "encoder.layer.1.output.dense.weight",
        ] {
            assert!(
                names.contains(&format!("{prefix}{want}")),
                "{arch}: {names:?}"
            );
        }
    }
    for tiny in [
        LLAMA,
        Tiny {
            tied: true,
            bias: true,
            ..LLAMA
        },
        Tiny {
            model_type: "qwen2",
            ..LLAMA
        },
        Tiny {
            model_type: "mistral",
            window: Some(8),
            ..LLAMA
        },
    ] {
        let config = tiny.config();
        let c = LlamaConfig::from_model_config(
            &stowage::ModelConfig::from_json_str(Path::new("config.json"), &config.to_string())
                .unwrap(),
        )
        .unwrap();
        assert_names_match(&c.init::<B>(&DEV), &config);
    }
}
