//! How much quantizing the linear weights at load changes all-MiniLM-L6-v2's sentence
//! embeddings, and how much memory it saves.
//!
//! Run: `cargo bench --bench quantize_accuracy` (about a minute on the project's 2-core VM;
//! `--features wgpu` adds what a wgpu GPU holds). It needs the MiniLM fixture
//! (fetched on first use by `scripts/fetch_minilm.sh`, or `STOWAGE_MINILM_DIR`) and prints a markdown table.
//!
//! For each setting — f32, int8 and int4 in groups of 32, 64 and 128, then int4 (G=32) with
//! some weights kept in int8 by per-module precision ([`stowage::PlanOptions::quantize_modules`]:
//! the MLP's up-projection `intermediate.dense` and attention's `value`; those and the last two
//! layers; those and the MLP's down-projection) — it loads the model
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

#[path = "common/minilm.rs"]
mod minilm;

use std::time::Instant;

use minilm::*;
use stowage::planner::{Quantize, QuantizeModule};

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let (inv, config) = open_minilm();
    let sentences = sentences();
    let hidden = config.hidden_size;

    let base = load(&inv, &config, Quantize::None, stowage::Targets::cpu(DEV));
    let want = embed(&base.model, &sentences);
    let f32_linear = base.f32_bytes;
    drop(base);

    let mut settings: Vec<(Quantize, Vec<QuantizeModule>)> = vec![];
    for kind in ["int8", "int4"] {
        for group in [32, 64, 128] {
            settings.push((Quantize::new(kind, Some(group)).expect("a setting"), vec![]));
        }
    }
    // int4 where MiniLM tolerates it, int8 where it does not (what `cargo bench --bench
    // int4_rules` found by ablation: FFN-up, value, FFN-down and the last layers carry the error).
    let rules = |specs: &[&str]| -> Vec<QuantizeModule> {
        specs
            .iter()
            .map(|r| QuantizeModule::parse(r).expect("a rule"))
            .collect()
    };
    let up_value = ["intermediate.dense=int8", "attention.self.value=int8"];
    let mixes = [
        rules(&up_value),
        rules(&[&up_value[..], &["layer.4.**=int8", "layer.5.**=int8"]].concat()),
        rules(&[&up_value[..], &["layer.*.output.dense=int8"]].concat()),
    ];
    for mix in mixes {
        settings.push((Quantize::Int4 { group: 32 }, mix));
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
    for (q, rules) in settings {
        let loaded = load_with(&inv, &config, (q, &rules), stowage::Targets::cpu(DEV));
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
            let on_gpu = load_with(&inv, &config, (q, &rules), targets);
            format!(
                " {} ({:.2}x) |",
                mib(on_gpu.held),
                on_gpu.held as f64 / f32_linear as f64
            )
        };
        #[cfg(not(feature = "wgpu"))]
        let gpu = String::new();
        let label = std::iter::once(q.to_string())
            .chain(rules.iter().map(|r| format!("`{r}`")))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {label} | {min:.5} | {mean:.5} | {token:.4} | {} | {} ({:.2}x) | {} ({:.2}x) |{gpu}",
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
