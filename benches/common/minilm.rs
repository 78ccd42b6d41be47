//! What the MiniLM accuracy benches share (`quantize_accuracy`, `int4_rules`): the fixture, the
//! sentences, loading with quantization, embedding and comparing. Included by each with
//! `#[path]`; not every bench uses every item.
#![allow(dead_code)]

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn_ndarray::{NdArray, NdArrayDevice};
use serde_json::Value;
use stowage::models::{BertConfig, BertInput, BertModel, token_ids};
use stowage::planner::{Quantize, QuantizeModule, RuntimeOptions};
use stowage::{Budgets, Inventory, ModuleLoadOptions, PlanOptions};

pub(crate) type B = NdArray;
pub(crate) const DEV: NdArrayDevice = NdArrayDevice::Cpu;

/// `[CLS] … [SEP]` for six more sentences, by bert-base-uncased's vocabulary.
pub(crate) const MORE: [&[u32]; 6] = [
    // a man is playing a guitar on the stage .
    &[
        101, 1037, 2158, 2003, 2652, 1037, 2858, 2006, 1996, 2754, 1012, 102,
    ],
    // the weather is lovely today and the sun is shining .
    &[
        101, 1996, 4633, 2003, 8403, 2651, 1998, 1996, 3103, 2003, 9716, 1012, 102,
    ],
    // machine learning models need a lot of memory to run .
    &[
        101, 3698, 4083, 4275, 2342, 1037, 2843, 1997, 3638, 2000, 2448, 1012, 102,
    ],
    // she bought fresh bread at the market this morning .
    &[
        101, 2016, 4149, 4840, 7852, 2012, 1996, 3006, 2023, 2851, 1012, 102,
    ],
    // the quick brown fox jumps over the lazy dog .
    &[
        101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102,
    ],
    // where can i find a good place to eat near the station ?
    &[
        101, 2073, 2064, 1045, 2424, 1037, 2204, 2173, 2000, 4521, 2379, 1996, 2276, 1029, 102,
    ],
];

#[path = "../../tests/it/minilm_fixture.rs"]
mod minilm_fixture;
pub(crate) use minilm_fixture::minilm_dir;

/// The MiniLM fixture: its inventory and config.
pub(crate) fn open_minilm() -> (Inventory, BertConfig) {
    let dir = minilm_dir();
    let inv = Inventory::from_spec(dir.to_str().unwrap(), &stowage::InventoryOptions::default())
        .expect("inventory");
    let config = BertConfig::from_file(&dir.join("config.json")).expect("config");
    (inv, config)
}

/// `(input_ids, token_type_ids)` of every sentence.
pub(crate) fn sentences() -> Vec<(Vec<u32>, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let u32s = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut out: Vec<(Vec<u32>, Vec<u32>)> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (u32s(&c["input_ids"]), u32s(&c["token_type_ids"])))
        .collect();
    out.extend(MORE.iter().map(|ids| (ids.to_vec(), vec![0; ids.len()])));
    out
}

/// The bytes of the backend's data for every quantized float parameter.
#[derive(Default)]
pub(crate) struct HeldBytes(u64);

impl<Bk: Backend> ModuleVisitor<Bk> for HeldBytes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let t = param.val();
        if matches!(t.dtype(), burn::tensor::DType::QFloat(_)) {
            self.0 += t.into_data().bytes.len() as u64;
        }
    }
}

pub(crate) struct Loaded<Bk: Backend> {
    pub(crate) model: BertModel<Bk>,
    /// Bytes of the quantized weights: as f32, as planned, as held.
    pub(crate) f32_bytes: u64,
    pub(crate) planned: u64,
    pub(crate) held: u64,
}

pub(crate) fn load<Bk: Backend>(
    inv: &Inventory,
    config: &BertConfig,
    quantize: Quantize,
    targets: stowage::Targets<Bk>,
) -> Loaded<Bk> {
    load_with(inv, config, (quantize, &[]), targets)
}

/// [`load`] with per-module precisions over `quantize`.
pub(crate) fn load_with<Bk: Backend>(
    inv: &Inventory,
    config: &BertConfig,
    (quantize, modules): (Quantize, &[QuantizeModule]),
    targets: stowage::Targets<Bk>,
) -> Loaded<Bk> {
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 1 << 34,
        disk_bytes: 1 << 34,
    };
    let plan_opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        quantize,
        quantize_modules: modules.to_vec(),
        ..Default::default()
    };
    let mut plan = stowage::plan(inv, &budgets, &plan_opts).expect("plan");
    // On a GPU target, everything goes to GPU 0.
    if !targets.gpus.is_empty() {
        plan.tensor_devices.fill(stowage::Device::Gpu(0));
    }
    let device = targets.gpus.first().unwrap_or(&targets.cpu).clone();
    let model = config.init::<Bk>(&device);
    let options = ModuleLoadOptions {
        renames: model.renames(),
        quantize,
        quantize_modules: modules.to_vec(),
        ..Default::default()
    };
    let (model, report) = stowage::load(model, inv, &plan, targets, &options).expect("load");
    let mut held = HeldBytes::default();
    model.visit(&mut held);
    let f32_bytes = if quantize.is_none() && modules.is_empty() {
        inv.tensors
            .iter()
            .filter(|t| Quantize::Int8 { group: 128 }.applies_to(t))
            .map(|t| t.elems() * 4)
            .sum()
    } else {
        report
            .quantized
            .iter()
            .map(|q| inv.tensors[inv.find(&q.tensor).unwrap()].elems() * 4)
            .sum()
    };
    Loaded {
        model,
        f32_bytes,
        planned: report.quantized.iter().map(|q| q.planned_bytes).sum(),
        held: held.0,
    }
}

/// Per sentence: the mean-pooled embedding and the `[seq, hidden]` rows.
pub(crate) fn embed(
    model: &BertModel<B>,
    sentences: &[(Vec<u32>, Vec<u32>)],
) -> Vec<(Vec<f32>, Vec<f32>)> {
    sentences
        .iter()
        .map(|(ids, types)| {
            let input =
                BertInput::from_ids(ids, &DEV).with_token_type_ids(token_ids::<B>(&[types], &DEV));
            let hidden = model.forward(&input).last_hidden_state; // [1, seq, h]
            let pooled = hidden
                .clone()
                .mean_dim(1)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            (pooled, hidden.into_data().to_vec::<f32>().unwrap())
        })
        .collect()
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}
