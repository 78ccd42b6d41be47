//! Loading real safetensors checkpoints into burn modules built with lazy parameters:
//! values, layouts, renames, disk placement, missing/unexpected/mismatched tensors and ties.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, LinearLayout,
};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_ndarray::{NdArray, NdArrayDevice, NdArrayTensor};
use safetensors::tensor::{Dtype, TensorView};
use stowage::planner::{DeviceMap, RuntimeOptions};
use stowage::{
    Budgets, Device, Inventory, InventoryOptions, LoadOptions, ModuleLoadOptions, Plan,
    PlanOptions, Renames, WeightLayout,
};

use crate::fixtures::p;

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;
const VOCAB: usize = 6;
const HIDDEN: usize = 4;
const INTER: usize = 5;
const OUT: usize = 3;
const EPS: f64 = 1e-5;

/// A tiny model: embedding, two Linear layers in a Vec (one per layout), a LayerNorm, a
/// non-square head, and a custom parameter whose init panics.
#[derive(Module, Debug)]
struct Net<B: Backend> {
    embed: Embedding<B>,
    layers: Vec<Linear<B>>,
    norm: LayerNorm<B>,
    head: Linear<B>,
    scale: Param<Tensor<B, 1>>,
}

fn net() -> Net<B> {
    Net {
        embed: EmbeddingConfig::new(VOCAB, HIDDEN).init(&DEV),
        layers: vec![
            LinearConfig::new(HIDDEN, INTER).init(&DEV),
            LinearConfig::new(INTER, HIDDEN)
                .with_layout(LinearLayout::Col)
                .init(&DEV),
        ],
        norm: LayerNormConfig::new(HIDDEN).init(&DEV),
        head: LinearConfig::new(HIDDEN, OUT).with_bias(false).init(&DEV),
        scale: Param::uninitialized(
            ParamId::new(),
            |_, _| panic!("the init of a loaded parameter ran"),
            DEV,
            false,
            [HIDDEN].into(),
        ),
    }
}

/// Checkpoint tensors: name → (shape, values), with Hugging Face names and layouts.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Small distinct values, exact in bf16 (8 significant bits).
fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37 + seed * 11) % 29) as f32 - 14.0) / 16.0)
        .collect()
}

fn hf_tensors() -> Tensors {
    let mut t = Tensors::new();
    let mut add = |name: &str, shape: &[usize]| {
        let seed = t.len() + 1;
        let n = shape.iter().product();
        t.insert(name.into(), (shape.to_vec(), values(seed, n)));
    };
    add("model.embed.weight", &[VOCAB, HIDDEN]);
    add("model.layers.0.weight", &[INTER, HIDDEN]);
    add("model.layers.0.bias", &[INTER]);
    add("model.layers.1.weight", &[HIDDEN, INTER]);
    add("model.layers.1.bias", &[HIDDEN]);
    add("model.norm.weight", &[HIDDEN]);
    add("model.norm.bias", &[HIDDEN]);
    add("model.head.weight", &[OUT, HIDDEN]);
    add("model.scale", &[HIDDEN]);
    t
}

fn renames() -> Renames {
    Renames::new()
        .segment("gamma", "weight")
        .segment("beta", "bias")
        .add_prefix("model")
}

fn write(path: &Path, tensors: &Tensors, dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors
        .values()
        .map(|(_, v)| match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            other => panic!("{other:?}"),
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, (s, _)), b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn plan(inventory: &Inventory, map: Option<serde_json::Value>) -> Plan {
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 1 << 20,
        disk_bytes: 1 << 20,
    };
    let opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        device_map: map.map(|m| DeviceMap::from_json(&m, None).unwrap()),
        ..Default::default()
    };
    stowage::plan(inventory, &budgets, &opts).unwrap()
}

fn inventory(path: &Path) -> Inventory {
    Inventory::from_spec(path.to_str().unwrap(), &InventoryOptions::default()).unwrap()
}

fn options(dir: &Path) -> ModuleLoadOptions {
    ModuleLoadOptions {
        renames: renames(),
        store: LoadOptions {
            offload_folder: dir.join("offload"),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// `[rows, cols]` row-major values transposed.
fn transposed(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

/// Every parameter holds its checkpoint values, Linear weights as burn's `[in, out]`.
fn assert_params(model: &Net<B>, t: &Tensors) {
    let src = |n: &str| t[n].1.clone();
    assert_eq!(vals(model.embed.weight.val()), src("model.embed.weight"));
    assert_eq!(
        vals(model.layers[0].weight.val()),
        transposed(&src("model.layers.0.weight"), INTER, HIDDEN)
    );
    assert_eq!(model.layers[0].weight.dims(), [HIDDEN, INTER]);
    assert_eq!(
        vals(model.layers[0].bias.as_ref().unwrap().val()),
        src("model.layers.0.bias")
    );
    assert_eq!(
        vals(model.layers[1].weight.val()),
        transposed(&src("model.layers.1.weight"), HIDDEN, INTER)
    );
    assert_eq!(model.layers[1].weight.dims(), [INTER, HIDDEN]);
    assert_eq!(
        vals(model.layers[1].bias.as_ref().unwrap().val()),
        src("model.layers.1.bias")
    );
    assert_eq!(vals(model.norm.gamma.val()), src("model.norm.weight"));
    assert_eq!(
        vals(model.norm.beta.as_ref().unwrap().val()),
        src("model.norm.bias")
    );
    assert_eq!(
        vals(model.head.weight.val()),
        transposed(&src("model.head.weight"), OUT, HIDDEN)
    );
    assert_eq!(vals(model.scale.val()), src("model.scale"));
}

/// `y[o] = Σ_i x[i]·w[o][i] + b[o]`, with `w` as PyTorch stores it (`[out, in]`).
fn linear_ref(x: &[f64], w: &[f32], b: Option<&[f32]>, out: usize) -> Vec<f64> {
    let inp = x.len();
    (0..out)
        .map(|o| {
            let dot: f64 = (0..inp).map(|i| x[i] * w[o * inp + i] as f64).sum();
            dot + b.map_or(0.0, |b| b[o] as f64)
        })
        .collect()
}

/// The forward pass of [`Net`] on one token, in plain Rust from the checkpoint numbers.
fn forward_ref(t: &Tensors, token: usize) -> Vec<f64> {
    let src = |n: &str| &t[n].1;
    let x: Vec<f64> = src("model.embed.weight")[token * HIDDEN..(token + 1) * HIDDEN]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let h = linear_ref(
        &x,
        src("model.layers.0.weight"),
        Some(src("model.layers.0.bias")),
        INTER,
    );
    let h = linear_ref(
        &h,
        src("model.layers.1.weight"),
        Some(src("model.layers.1.bias")),
        HIDDEN,
    );
    let mean = h.iter().sum::<f64>() / HIDDEN as f64;
    let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / HIDDEN as f64;
    let n: Vec<f64> = (0..HIDDEN)
        .map(|i| {
            let normed = (h[i] - mean) / (var + EPS).sqrt();
            (normed * src("model.norm.weight")[i] as f64 + src("model.norm.bias")[i] as f64)
                * src("model.scale")[i] as f64
        })
        .collect();
    linear_ref(&n, src("model.head.weight"), None, OUT)
}

fn forward(model: &Net<B>, tokens: &[i64]) -> Tensor<B, 2> {
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), &DEV);
    let x = model.embed.forward(ids).squeeze_dim::<2>(0);
    let x = model.layers[0].forward(x);
    let x = model.layers[1].forward(x);
    let x = model.norm.forward(x) * model.scale.val().unsqueeze_dim(0);
    model.head.forward(x)
}

fn assert_forward(model: &Net<B>, t: &Tensors) {
    let tokens = [0i64, 3, 5];
    let got = vals(forward(model, &tokens));
    for (k, &tok) in tokens.iter().enumerate() {
        let want = forward_ref(t, tok as usize);
        for o in 0..OUT {
            let g = got[k * OUT + o] as f64;
            assert!(
                (g - want[o]).abs() < 1e-5,
                "token {tok}, output {o}: burn {g}, reference {}",
                want[o]
            );
        }
    }
}

/// Lists each parameter's path and whether it is initialised.
#[derive(Default)]
struct Inits {
    stack: Vec<String>,
    out: Vec<(String, bool)>,
}

impl<B: Backend> ModuleVisitor<B> for Inits {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.out.push((self.stack.join("."), p.is_initialized()));
    }
}

fn inits<M: Module<B>>(model: &M) -> Vec<(String, bool)> {
    let mut v = Inits::default();
    model.visit(&mut v);
    v.out
}

fn initialized<M: Module<B>>(model: &M, path: &str) -> bool {
    inits(model)
        .into_iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no parameter `{path}`"))
        .1
}

/// The address of a CPU tensor's first element.
fn data_ptr<const D: usize>(t: Tensor<B, D>) -> usize {
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(s)) => s.view().as_ptr() as usize,
        other => panic!("not an f32 CPU tensor: {other:?}"),
    }
}

#[test]
fn module_tensors_describe_a_lazy_model_without_initialising_it() {
    let model = net();
    let tensors = stowage::module_tensors(&model);
    let got: Vec<(&str, &[u64])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("embed.weight", &[6u64, 4][..]),
            ("layers.0.weight", &[5, 4]),
            ("layers.0.bias", &[5]),
            ("layers.1.weight", &[4, 5]),
            ("layers.1.bias", &[4]),
            ("norm.gamma", &[4]),
            ("norm.beta", &[4]),
            ("head.weight", &[3, 4]),
            ("scale", &[4]),
        ]
    );
    assert!(tensors.iter().all(|t| t.dtype == stowage::DType::F32));
    // After describing (and checking against a checkpoint), nothing is initialised; the
    // panicking init of `scale` would have fired otherwise.
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    write(&path, &hf_tensors(), Dtype::F32);
    let check = stowage::check_module(&model, &inventory(&path), &options(dir.path())).unwrap();
    assert_eq!(check.matched.len(), 9);
    assert!(check.missing.is_empty() && check.unexpected.is_empty());
    assert!(
        inits(&model).iter().all(|(_, init)| !init),
        "{:?}",
        inits(&model)
    );

    // The module tensors are an inventory to plan, as any other.
    let inv = Inventory::from_tensors(tensors, None, &InventoryOptions::default()).unwrap();
    assert_eq!(inv.param_count(), 24 + (20 + 5) + (20 + 4) + 8 + 12 + 4);

    // A big lazy layer costs nothing to describe.
    let big = LinearConfig::new(8192, 8192).init::<B>(&DEV);
    let t = stowage::module_tensors(&big);
    assert_eq!(t[0].shape, [8192, 8192]);
    assert!(!big.weight.is_initialized());
}

#[test]
fn hf_checkpoints_load_with_renames_and_layouts() {
    for dtype in [Dtype::F32, Dtype::BF16] {
        let dir = tempfile::tempdir().unwrap();
        let path = p(dir.path(), "model.safetensors");
        let t = hf_tensors();
        write(&path, &t, dtype);
        let inv = inventory(&path);
        let plan = plan(&inv, None);
        let (model, report) =
            stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap();
        assert_eq!(report.loaded.len(), 9, "{dtype:?}");
        assert!(
            report
                .loaded
                .contains(&("norm.gamma".into(), "model.norm.weight".into()))
        );
        assert!(report.missing.is_empty() && report.unexpected.is_empty());
        assert!(report.mismatched.is_empty() && report.tied.is_empty());
        assert_eq!(report.store.loaded, 9);
        assert!(inits(&model).iter().all(|(_, init)| *init));
        assert_params(&model, &t);
        assert_forward(&model, &t);

        // Loading into a model already loaded (initialised, Col weight included) replaces
        // the values the same way.
        let mut t2 = t.clone();
        for (seed, (_, v)) in t2.values_mut().enumerate() {
            *v = values(seed + 50, v.len());
        }
        let path = p(dir.path(), "v2.safetensors");
        write(&path, &t2, dtype);
        let inv = inventory(&path);
        let (model, _) = stowage::load(model, &inv, &plan, &DEV, &options(dir.path())).unwrap();
        assert_params(&model, &t2);
        assert_forward(&model, &t2);
    }
}

#[test]
fn layers_planned_on_disk_are_read_in() {
    for dtype in [Dtype::F32, Dtype::BF16] {
        let dir = tempfile::tempdir().unwrap();
        let path = p(dir.path(), "model.safetensors");
        let t = hf_tensors();
        write(&path, &t, dtype);
        let inv = inventory(&path);
        let map = serde_json::json!({
            "model.embed": "cpu",
            "model.layers.0": "cpu",
            "model.layers.1": "disk",
            "model.norm": "cpu",
            "model.head": "disk",
            "model.scale": "cpu",
        });
        let plan = plan(&inv, Some(map));
        let on_disk = inv
            .tensors
            .iter()
            .zip(&plan.tensor_devices)
            .filter(|(_, d)| **d == Device::Disk)
            .count();
        assert_eq!(on_disk, 3);
        let (model, report) =
            stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap();
        assert_eq!(report.loaded.len(), 9);
        assert_eq!(report.store.disk_in_place, 3);
        assert_params(&model, &t);
        assert_forward(&model, &t);
    }
}

/// `(own memory, row-major)` of a CPU f32 tensor: not over borrowed (mapped) bytes, and laid
/// out as burn-ndarray's matmul takes it without copying it into a new layout first.
fn layout<const D: usize>(t: Tensor<B, D>) -> (bool, bool) {
    match t.into_primitive() {
        TensorPrimitive::Float(NdArrayTensor::F32(s)) => {
            (!s.is_borrowed(), s.view().is_standard_layout())
        }
        other => panic!("not an f32 CPU tensor: {other:?}"),
    }
}

#[test]
fn cpu_matrices_are_row_major_in_their_own_memory_and_vectors_stay_zero_copy() {
    let disk = serde_json::json!({
        "model.embed": "cpu", "model.layers.0": "disk", "model.layers.1": "disk",
        "model.norm": "cpu", "model.head": "cpu", "model.scale": "cpu",
    });
    for (dtype, map, layout_) in [
        (Dtype::F32, None, WeightLayout::PyTorch),
        (Dtype::BF16, None, WeightLayout::PyTorch),
        (Dtype::F32, Some(disk.clone()), WeightLayout::PyTorch),
        (Dtype::BF16, Some(disk), WeightLayout::PyTorch),
        (Dtype::F32, None, WeightLayout::Burn),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = p(dir.path(), "model.safetensors");
        let hf = hf_tensors();
        let mut t = hf.clone();
        if layout_ == WeightLayout::Burn {
            for (name, rows, cols) in [
                ("model.layers.0.weight", INTER, HIDDEN),
                ("model.head.weight", OUT, HIDDEN),
            ] {
                let (_, v) = &hf[name];
                t.insert(name.into(), (vec![cols, rows], transposed(v, rows, cols)));
            }
        }
        write(&path, &t, dtype);
        let inv = inventory(&path);
        let plan = plan(&inv, map.clone());
        let opts = ModuleLoadOptions {
            layout: layout_,
            ..options(dir.path())
        };
        let (model, _) = stowage::load(net(), &inv, &plan, &DEV, &opts).unwrap();
        let case = format!("{dtype:?} {} {layout_:?}", map.is_some());
        // Linear weights (Row and Col layouts, `[in, out]` over `[out, in]`) and the embedding.
        for (name, w) in [
            ("layers.0", model.layers[0].weight.val()),
            ("layers.1", model.layers[1].weight.val()),
            ("head", model.head.weight.val()),
            ("embed", model.embed.weight.val()),
        ] {
            assert_eq!(layout(w), (true, true), "{name} {case}");
        }
        // Vectors stay over the mapped pages where the checkpoint is f32 (zero copy).
        let gamma = model.norm.gamma.val();
        assert_eq!(layout(gamma), (dtype == Dtype::BF16, true), "{case}");
        assert_params(&model, &hf);
        assert_forward(&model, &hf);
    }
}

#[test]
fn burn_layout_checkpoints_load_as_saved() {
    // As burn-store saves the model: Row weights as [in, out], Col weights as [out, in].
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let hf = hf_tensors();
    let mut t = hf.clone();
    for (name, rows, cols) in [
        ("model.layers.0.weight", INTER, HIDDEN),
        ("model.head.weight", OUT, HIDDEN),
    ] {
        let (_, v) = &hf[name];
        t.insert(name.into(), (vec![cols, rows], transposed(v, rows, cols)));
    }
    write(&path, &t, Dtype::F32);
    let inv = inventory(&path);
    let plan = plan(&inv, None);
    let err = stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("model.layers.0.weight") && msg.contains("WeightLayout::Burn"),
        "{msg}"
    );
    let opts = ModuleLoadOptions {
        layout: WeightLayout::Burn,
        ..options(dir.path())
    };
    let (model, _) = stowage::load(net(), &inv, &plan, &DEV, &opts).unwrap();
    assert_params(&model, &hf);
    assert_forward(&model, &hf);
}

#[test]
fn a_missing_tensor_is_an_error_naming_it_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let mut t = hf_tensors();
    t.remove("model.head.weight");
    write(&path, &t, Dtype::F32);
    let inv = inventory(&path);
    let plan = plan(&inv, None);
    let err = stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`head.weight`")
            && msg.contains("`model.head.weight`")
            && msg.contains("model.safetensors"),
        "{msg}"
    );

    let opts = ModuleLoadOptions {
        allow_missing: true,
        ..options(dir.path())
    };
    let (model, report) = stowage::load(net(), &inv, &plan, &DEV, &opts).unwrap();
    assert_eq!(
        report.missing,
        [("head.weight".to_string(), "model.head.weight".to_string())]
    );
    assert_eq!(report.loaded.len(), 8);
    assert!(!initialized(&model, "head.weight"));
    assert!(initialized(&model, "layers.0.weight"));
}

#[test]
fn unexpected_tensors_are_reported_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let mut t = hf_tensors();
    t.insert("model.extra.weight".into(), (vec![2, 2], values(99, 4)));
    t.insert("pooler.dense.bias".into(), (vec![3], values(98, 3)));
    write(&path, &t, Dtype::BF16);
    let inv = inventory(&path);
    let plan = plan(&inv, None);
    let (model, report) = stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap();
    assert_eq!(
        report.unexpected,
        ["model.extra.weight", "pooler.dense.bias"]
    );
    assert_eq!(report.loaded.len(), 9);
    assert_eq!(report.store.loaded, 9, "unused tensors are not loaded");
    assert_params(&model, &t);
}

#[test]
fn a_shape_mismatch_names_both_shapes_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let mut t = hf_tensors();
    t.insert("model.norm.weight".into(), (vec![5], values(7, 5)));
    write(&path, &t, Dtype::F32);
    let inv = inventory(&path);
    let plan = plan(&inv, None);
    let err = stowage::load(net(), &inv, &plan, &DEV, &options(dir.path())).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "`model.norm.weight`",
        "`norm.gamma`",
        "[5]",
        "[4]",
        "model.safetensors",
    ] {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }

    let opts = ModuleLoadOptions {
        ignore_mismatched_sizes: true,
        ..options(dir.path())
    };
    let (model, report) = stowage::load(net(), &inv, &plan, &DEV, &opts).unwrap();
    assert_eq!(report.mismatched.len(), 1);
    let m = &report.mismatched[0];
    assert_eq!(
        (
            m.param.as_str(),
            m.tensor.as_str(),
            &m.expected[..],
            &m.got[..]
        ),
        ("norm.gamma", "model.norm.weight", &[4u64][..], &[5u64][..])
    );
    assert_eq!(report.loaded.len(), 8);
    // The parameter keeps its own init (LayerNorm's gamma: ones), still lazy until used.
    assert!(!initialized(&model, "norm.gamma"));
    assert_eq!(vals(model.norm.gamma.val()), [1.0; HIDDEN]);
    assert_eq!(
        vals(model.norm.beta.as_ref().unwrap().val()),
        t["model.norm.bias"].1
    );
}

/// The llama naming of a model whose head is tied to its embedding.
#[derive(Module, Debug)]
struct Base<B: Backend> {
    embed_tokens: Embedding<B>,
    norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
struct Tied<B: Backend> {
    model: Base<B>,
    lm_head: Linear<B>,
}

fn tied(layout: LinearLayout) -> Tied<B> {
    Tied {
        model: Base {
            embed_tokens: EmbeddingConfig::new(VOCAB, HIDDEN).init(&DEV),
            norm: LayerNormConfig::new(HIDDEN).with_bias(false).init(&DEV),
        },
        lm_head: LinearConfig::new(HIDDEN, VOCAB)
            .with_bias(false)
            .with_layout(layout)
            .init(&DEV),
    }
}

#[test]
fn a_tied_head_shares_the_embedding_storage() {
    for (dtype, layout, embed_on) in [
        (Dtype::F32, LinearLayout::Row, "cpu"),
        (Dtype::BF16, LinearLayout::Row, "cpu"),
        (Dtype::BF16, LinearLayout::Col, "cpu"),
        (Dtype::F32, LinearLayout::Row, "disk"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tensors::new();
        t.insert(
            "model.embed_tokens.weight".into(),
            (vec![VOCAB, HIDDEN], values(1, VOCAB * HIDDEN)),
        );
        t.insert(
            "model.norm.weight".into(),
            (vec![HIDDEN], values(2, HIDDEN)),
        );
        write(&p(dir.path(), "model.safetensors"), &t, dtype);
        // The config ties the head (absent from the checkpoint) to the embedding.
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": HIDDEN, "intermediate_size": 8, "num_hidden_layers": 0,
            "num_attention_heads": 1, "num_key_value_heads": 1, "vocab_size": VOCAB,
            "tie_word_embeddings": true,
        });
        std::fs::write(p(dir.path(), "config.json"), config.to_string()).unwrap();
        let inv = inventory(dir.path());
        let map = serde_json::json!({"model.embed_tokens": embed_on, "model.norm": "cpu", "lm_head": embed_on});
        let plan = plan(&inv, Some(map));
        let opts = ModuleLoadOptions {
            renames: Renames::new().segment("gamma", "weight"),
            ..options(dir.path())
        };
        let (model, report) = stowage::load(tied(layout), &inv, &plan, &DEV, &opts).unwrap();
        assert_eq!(
            report.tied,
            [(
                "lm_head.weight".to_string(),
                "model.embed_tokens.weight".to_string()
            )]
        );
        assert_eq!(
            report.store.tied,
            [(
                "lm_head.weight".to_string(),
                "model.embed_tokens.weight".to_string()
            )]
        );
        assert_eq!(report.store.disk_in_place, usize::from(embed_on == "disk"));
        let embed = model.model.embed_tokens.weight.val();
        let head = model.lm_head.weight.val();
        // Equal values: the head is the embedding seen as [in, out] ...
        assert_eq!(head.dims(), [HIDDEN, VOCAB]);
        assert_eq!(
            vals(head.clone()),
            transposed(&vals(embed.clone()), VOCAB, HIDDEN)
        );
        // ... over the same storage: one copy, not two.
        assert_eq!(
            data_ptr(embed),
            data_ptr(head),
            "{dtype:?} {layout:?} {embed_on}"
        );
        // The head computes logits against the embedding.
        let x = Tensor::<B, 2>::from_floats([[1.0, 0.0, 0.0, 0.0]], &DEV);
        let logits = vals(model.lm_head.forward(x));
        let want: Vec<f32> = (0..VOCAB)
            .map(|v| t["model.embed_tokens.weight"].1[v * HIDDEN])
            .collect();
        assert_eq!(logits, want);
    }
}
