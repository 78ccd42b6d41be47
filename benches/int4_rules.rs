//! Which rounding rule for int4 weights keeps all-MiniLM-L6-v2's sentence embeddings closest
//! to f32: an experiment over data-free rules in the "int4 values + one f32 scale per group"
//! format (and, for comparison, an asymmetric one), with ablations and mixed int8/int4.
//!
//! Run: `cargo bench --bench int4_rules` (about 70 s for all rules at groups 32, 64 and 128 on
//! the project's 2-core VM). It needs the MiniLM fixture (fetched on first use by `scripts/fetch_minilm.sh`, or
//! `STOWAGE_MINILM_DIR`) and prints markdown tables.
//!
//! Each rule fake-quantizes the 36 linear weights of the 6 layers: the dequantized values,
//! `fl(q × scale)` exactly as burn dequantizes them, are written back as f32 into a copy of the
//! checkpoint, which is loaded in f32 and compared with the original on the 10 sentences of
//! `quantize_accuracy` (cosine of the mean-pooled embedding per sentence, smallest and mean,
//! and the smallest over single token rows). Rule `A` is stowage's own (it reproduces the
//! `quantize_accuracy` int4 figures exactly, which checks the harness). What stowage's loader
//! and kernels implement is rule `A` only; the others live here.
//!
//! Environment:
//! - `INT4_MODE`: `rules` (default: every rule × group), `ablate` (one weight kind or one layer
//!   quantized, the rest f32), `mixed` (some weights int8, the rest int4), `time` (host time of
//!   each rule alone);
//! - `INT4_RULES`: a comma list of rule names (the `Rule` variants, `CFix32`, `CGrid`,
//!   `CSearch32-44`), default all of `RULES`;
//! - `INT4_GROUPS`: a comma list of group sizes, default `32,64,128`;
//! - `INT4_MIXED` (`mixed`): `;`-separated configurations `kinds|layers` kept in int8, e.g.
//!   `ffn_up,value|` or `|4,5`;
//! - `INT4_PERWEIGHT` (`rules`): also print each weight's relative squared error.

#[path = "common/minilm.rs"]
mod minilm;

use std::path::Path;
use std::time::Instant;

use minilm::*;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use stowage::models::BertConfig;
use stowage::planner::Quantize;
use stowage::{Inventory, InventoryOptions};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// stowage's rule: scale amax·fl(1/7), values in [-7, 7] (QuantizedWeight::quantize itself).
    A,
    /// amax·α/7, α = 0.50..1.00 step 0.01 minimizing the group's squared error, [-7, 7].
    BMse,
    /// Q4_0: scale = m / -8 (m the signed value of largest magnitude), values in [-8, 7].
    C,
    /// Q4_0 + α grid: scale = m·α / -8.
    CMse,
    /// C' then least-squares refits (s = <w,q>/<q,q>, requantize) until stable (≤ 10).
    CMseLs,
    /// every α of C' followed by one LS refit + requantize; best of all.
    EGridLs,
    /// llama.cpp make_qx_quants (unweighted): iscale = -(8 + 0.1·i)/m, i = -9..9, LS scale.
    ELlama,
    /// B (symmetric [-7,7] grid) then LS refits, values in [-7, 7].
    BMseLs,
    /// asymmetric: min/max (range including 0), integer zero point in [0, 15].
    D,
    /// asymmetric with the range shrunk by α (0.50..1.00) minimizing squared error.
    DMse,
    /// C' with the squared error weighted per input channel by γ² + β² of the LayerNorm whose
    /// output the projection reads (query, key, value, ffn_up; others unweighted).
    CMseW,
    /// stowage's int8 rule (for mixed precision).
    Int8,
    /// Q4_0 with a fixed clip: d = c/4 (8 ≤ d), q = clamp(σ·sgn(x)·round(d·|x|/amax), -8, 7)
    /// with σ = -sgn(m), scale = σ·fl(amax·fl(4/c)).
    CFix(u32),
    /// CFix with c = 32..=64 chosen per group by the least squared error of the dequantized
    /// group (f64, index order); ties to the smallest c.
    CGrid,
    /// The proposed exact rule: c = lo..=hi chosen by an integer error metric (see `csearch`).
    CSearch(u32, u32),
}

const RULES: [Rule; 12] = [
    Rule::CMseW,
    Rule::Int8,
    Rule::A,
    Rule::BMse,
    Rule::BMseLs,
    Rule::C,
    Rule::CMse,
    Rule::CMseLs,
    Rule::EGridLs,
    Rule::ELlama,
    Rule::D,
    Rule::DMse,
];

/// Squared error of `x` quantized with `scale`, values clamped to [lo, hi]; writes the
/// dequantized values to `out` when given.
fn sym_eval(x: &[f32], scale: f32, lo: f64, hi: f64, out: Option<&mut [f32]>) -> f64 {
    sym_eval_w(x, None, scale, lo, hi, out)
}

fn sym_eval_w(
    x: &[f32],
    imp: Option<&[f32]>,
    scale: f32,
    lo: f64,
    hi: f64,
    out: Option<&mut [f32]>,
) -> f64 {
    let s = scale as f64;
    let mut err = 0.0;
    let mut out = out;
    for (i, &xi) in x.iter().enumerate() {
        let q = if s == 0.0 {
            0.0
        } else {
            (xi as f64 / s).round().clamp(lo, hi)
        };
        let d = (q as f32) * scale;
        let e = (xi - d) as f64;
        err += e * e * imp.map_or(1.0, |w| w[i] as f64);
        if let Some(o) = out.as_deref_mut() {
            o[i] = d;
        }
    }
    err
}

/// Least-squares scale for the values `x` rounds to with `scale`.
fn ls_scale(x: &[f32], scale: f32, lo: f64, hi: f64) -> f32 {
    let s = scale as f64;
    let (mut xq, mut qq) = (0.0f64, 0.0f64);
    for &xi in x {
        let q = (xi as f64 / s).round().clamp(lo, hi);
        xq += xi as f64 * q;
        qq += q * q;
    }
    if qq == 0.0 { scale } else { (xq / qq) as f32 }
}

fn alphas() -> impl Iterator<Item = f64> {
    (50..=100).rev().map(|k| k as f64 / 100.0)
}

static CHOSEN: [std::sync::atomic::AtomicU64; 65] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 65];

/// Q4_0 with d = c/4: the squared error (f64, index order) of the dequantized group.
fn cfix(x: &[f32], amax: f32, m: f32, c: u32, out: Option<&mut [f32]>) -> f64 {
    let sigma: f32 = if m > 0.0 { -1.0 } else { 1.0 };
    let scale = sigma * (amax * (4.0f32 / c as f32));
    let mut out = out;
    let mut err = 0.0;
    for (i, &xi) in x.iter().enumerate() {
        // c·|x| is exact in f64; / (4·amax) is one correctly rounded division.
        let t = (c as f64 * (xi.abs() as f64) / (4.0 * amax as f64)).round();
        let sx = if xi.is_sign_negative() { -1.0 } else { 1.0 };
        let q = (sigma as f64 * sx * t).clamp(-8.0, 7.0);
        let d = (q as f32) * scale;
        err += ((xi - d) as f64).powi(2);
        if let Some(o) = out.as_deref_mut() {
            o[i] = d;
        }
    }
    err
}

/// The proposed rule's choice of c (d = c/4) for a finite group with amax ≥ 2⁻¹¹²:
/// - `U_i = floor(2¹⁶·|x_i| / amax)` (exact: f64 quotient, see the report);
/// - for each c: `t_i = round_half_away(c·|x_i| / (4·amax))` (exact, as stowage's rule),
///   clamped to 8 where σ·sgn(x_i) < 0 else 7; `R_i = floor(2¹⁸·t_i / c)` (integer division);
///   `S_c = Σ (U_i − R_i)²` in u64;
/// - the smallest S_c, ties to the smallest c.
fn csearch(x: &[f32], amax: f32, m: f32, lo: u32, hi: u32) -> u32 {
    let neg_side_is_x_pos = m > 0.0; // σ = -1: positive x get negative q
    let a = amax as f64;
    let u: Vec<u64> = x
        .iter()
        .map(|v| ((65536.0 * v.abs() as f64) / a).floor() as u64)
        .collect();
    let mut best = (u64::MAX, lo);
    for c in lo..=hi {
        let mut s: u64 = 0;
        for (i, &xi) in x.iter().enumerate() {
            let t = ((c as f64 * xi.abs() as f64) / (4.0 * a) + 0.5).floor() as u64;
            let x_pos = !xi.is_sign_negative();
            let lim = if x_pos == neg_side_is_x_pos { 8 } else { 7 };
            let t = t.min(lim);
            let r = (t << 18) / c as u64;
            let e = u[i].abs_diff(r);
            s += e * e;
        }
        if s < best.0 {
            best = (s, c);
        }
    }
    best.1
}

/// The dequantized group.
fn quant_group(rule: Rule, x: &[f32], imp: Option<&[f32]>, out: &mut [f32]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        out.fill(0.0);
        return;
    }
    // The signed value of largest magnitude (first one).
    let m = *x.iter().find(|v| v.abs() == amax).unwrap();
    let best_of = |cands: &mut dyn Iterator<Item = f32>, lo: f64, hi: f64| -> f32 {
        let mut best = (f64::INFINITY, 0.0f32);
        for s in cands {
            let e = sym_eval(x, s, lo, hi, None);
            if e < best.0 {
                best = (e, s);
            }
        }
        best.1
    };
    let refine = |mut s: f32, lo: f64, hi: f64| -> f32 {
        let mut e = sym_eval(x, s, lo, hi, None);
        for _ in 0..10 {
            let s2 = ls_scale(x, s, lo, hi);
            let e2 = sym_eval(x, s2, lo, hi, None);
            if e2 < e {
                (s, e) = (s2, e2);
            } else {
                break;
            }
        }
        s
    };
    match rule {
        Rule::A | Rule::Int8 => unreachable!("A uses QuantizedWeight::quantize"),
        Rule::CFix(c) => {
            cfix(x, amax, m, c, Some(out));
        }
        Rule::CGrid => {
            let mut best = (f64::INFINITY, 32);
            for c in 32..=64 {
                let e = cfix(x, amax, m, c, None);
                if e < best.0 {
                    best = (e, c);
                }
            }
            CHOSEN[best.1 as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cfix(x, amax, m, best.1, Some(out));
        }
        Rule::CSearch(lo, hi) => {
            let c = csearch(x, amax, m, lo, hi);
            CHOSEN[c as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cfix(x, amax, m, c, Some(out));
        }
        Rule::CMseW => {
            let mut best = (f64::INFINITY, 0.0f32);
            for a in alphas() {
                let s = (m as f64 * a / -8.0) as f32;
                let e = sym_eval_w(x, imp, s, -8.0, 7.0, None);
                if e < best.0 {
                    best = (e, s);
                }
            }
            sym_eval(x, best.1, -8.0, 7.0, Some(out));
        }
        Rule::BMse | Rule::BMseLs => {
            let s = best_of(
                &mut alphas().map(|a| (amax as f64 * a / 7.0) as f32),
                -7.0,
                7.0,
            );
            let s = if rule == Rule::BMseLs {
                refine(s, -7.0, 7.0)
            } else {
                s
            };
            sym_eval(x, s, -7.0, 7.0, Some(out));
        }
        Rule::C => {
            sym_eval(x, (m as f64 / -8.0) as f32, -8.0, 7.0, Some(out));
        }
        Rule::CMse | Rule::CMseLs => {
            let s = best_of(
                &mut alphas().map(|a| (m as f64 * a / -8.0) as f32),
                -8.0,
                7.0,
            );
            let s = if rule == Rule::CMseLs {
                refine(s, -8.0, 7.0)
            } else {
                s
            };
            sym_eval(x, s, -8.0, 7.0, Some(out));
        }
        Rule::EGridLs => {
            let s = best_of(
                &mut alphas().flat_map(|a| {
                    let s0 = (m as f64 * a / -8.0) as f32;
                    [s0, ls_scale(x, s0, -8.0, 7.0)]
                }),
                -8.0,
                7.0,
            );
            sym_eval(x, s, -8.0, 7.0, Some(out));
        }
        Rule::ELlama => {
            let s = best_of(
                &mut (-9..=9).map(|i| {
                    let iscale = -(8.0 + 0.1 * i as f64) / m as f64;
                    ls_scale(x, (1.0 / iscale) as f32, -8.0, 7.0)
                }),
                -8.0,
                7.0,
            );
            sym_eval(x, s, -8.0, 7.0, Some(out));
        }
        Rule::D | Rule::DMse => {
            let mn = x.iter().fold(0.0f32, |a, v| a.min(*v)) as f64;
            let mx = x.iter().fold(0.0f32, |a, v| a.max(*v)) as f64;
            let eval = |a: f64, out: Option<&mut [f32]>| -> f64 {
                let scale = ((mx - mn) * a / 15.0) as f32;
                let s = scale as f64;
                let z = (-mn * a / s).round().clamp(0.0, 15.0);
                let mut err = 0.0;
                let mut out = out;
                for (i, &xi) in x.iter().enumerate() {
                    let q = ((xi as f64 / s).round() + z).clamp(0.0, 15.0);
                    let d = ((q - z) as f32) * scale;
                    err += ((xi - d) as f64).powi(2);
                    if let Some(o) = out.as_deref_mut() {
                        o[i] = d;
                    }
                }
                err
            };
            let a = if rule == Rule::D {
                1.0
            } else {
                let mut best = (f64::INFINITY, 1.0);
                for a in alphas() {
                    let e = eval(a, None);
                    if e < best.0 {
                        best = (e, a);
                    }
                }
                best.1
            };
            eval(a, Some(out));
        }
    }
}

/// `[rows, cols]` fake-quantized in groups of `group` along rows.
fn fake_quant(
    rule: Rule,
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    imp: Option<&[f32]>,
) -> Vec<f32> {
    if rule == Rule::A || rule == Rule::Int8 {
        let g = group as u32;
        let q = if rule == Rule::A {
            Quantize::Int4 { group: g }
        } else {
            Quantize::Int8 { group: g }
        };
        let q = stowage::QuantizedWeight::quantize(w, rows, cols, q).unwrap();
        return q.dequantize();
    }
    let mut out = vec![0.0f32; w.len()];
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .for_each(|(o, r)| {
            for (j, (og, rg)) in o.chunks_mut(group).zip(r.chunks(group)).enumerate() {
                let ig = imp.map(|v| &v[j * group..(j * group + rg.len())]);
                quant_group(rule, rg, ig, og);
            }
        });
    out
}

/// A checkpoint tensor of the 36 projections: `(layer, kind)`.
fn projection(name: &str) -> Option<(usize, &'static str)> {
    let rest = name.strip_prefix("encoder.layer.")?;
    let (layer, rest) = rest.split_once('.')?;
    let kind = match rest {
        "attention.self.query.weight" => "query",
        "attention.self.key.weight" => "key",
        "attention.self.value.weight" => "value",
        "attention.output.dense.weight" => "attn_out",
        "intermediate.dense.weight" => "ffn_up",
        "output.dense.weight" => "ffn_down",
        _ => return None,
    };
    Some((layer.parse().ok()?, kind))
}

const KINDS: [&str; 6] = ["query", "key", "value", "attn_out", "ffn_up", "ffn_down"];

/// What to quantize in each projection: `None` keeps f32.
type Choose<'a> = &'a dyn Fn(usize, &str) -> Option<(Rule, usize)>;

/// Writes the checkpoint with the chosen projections fake-quantized into `out`; returns the
/// relative squared error per projection name.
fn write_checkpoint(src: &Path, out: &Path, choose: Choose) -> Vec<(String, f64)> {
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    let mut errs = vec![];
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    // γ² + β² of the LayerNorm a projection reads.
    let importance = |layer: usize, kind: &str| -> Option<Vec<f32>> {
        let ln = match kind {
            "query" | "key" | "value" if layer == 0 => "embeddings.LayerNorm".to_string(),
            "query" | "key" | "value" => format!("encoder.layer.{}.output.LayerNorm", layer - 1),
            "ffn_up" => format!("encoder.layer.{layer}.attention.output.LayerNorm"),
            _ => return None,
        };
        let g = f32s(&format!("{ln}.weight"));
        let b = f32s(&format!("{ln}.bias"));
        Some(g.iter().zip(&b).map(|(g, b)| g * g + b * b).collect())
    };
    for (name, view) in st.tensors() {
        let data = view.data();
        let new = projection(&name).and_then(|(layer, kind)| {
            let (rule, group) = choose(layer, kind)?;
            assert_eq!(view.dtype(), Dtype::F32);
            let shape = view.shape();
            let w: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let imp = if rule == Rule::CMseW {
                importance(layer, kind)
            } else {
                None
            };
            let q = fake_quant(rule, &w, shape[0], shape[1], group, imp.as_deref());
            let e: f64 = w
                .iter()
                .zip(&q)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let n: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
            errs.push((name.clone(), e / n));
            Some(q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        });
        owned.push((
            name,
            view.dtype(),
            view.shape().to_vec(),
            new.unwrap_or_else(|| data.to_vec()),
        ));
    }
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    errs
}

struct Score {
    min: f64,
    mean: f64,
    token_min: f64,
}

fn score(
    dir: &Path,
    sentences: &[(Vec<u32>, Vec<u32>)],
    want: &[(Vec<f32>, Vec<f32>)],
    hidden: usize,
) -> Score {
    let inv = Inventory::from_spec(dir.to_str().unwrap(), &InventoryOptions::default()).unwrap();
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let loaded = load(&inv, &config, Quantize::None, stowage::Targets::cpu(DEV));
    let got = embed(&loaded.model, sentences);
    let sentence: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|((a, _), (b, _))| cosine(a, b))
        .collect();
    let token_min = got
        .iter()
        .zip(want)
        .flat_map(|((_, a), (_, b))| {
            a.chunks(hidden)
                .zip(b.chunks(hidden))
                .map(|(x, y)| cosine(x, y))
                .collect::<Vec<_>>()
        })
        .fold(f64::INFINITY, f64::min);
    Score {
        min: sentence.iter().copied().fold(f64::INFINITY, f64::min),
        mean: sentence.iter().sum::<f64>() / sentence.len() as f64,
        token_min,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let started = Instant::now();
    let dir = minilm_dir();
    let (inv, config) = open_minilm();
    let sentences = sentences();
    let hidden = config.hidden_size;
    let base = load(&inv, &config, Quantize::None, stowage::Targets::cpu(DEV));
    let want = embed(&base.model, &sentences);
    drop(base);
    let scratch_dir = tempfile::tempdir().expect("temp dir");
    let scratch = scratch_dir.path().join("model");
    let mode = std::env::var("INT4_MODE").unwrap_or("rules".into());
    let rules: Vec<Rule> = match std::env::var("INT4_RULES") {
        Ok(s) => s
            .split(',')
            .map(|r| {
                if let Some(c) = r.strip_prefix("CFix") {
                    return Rule::CFix(c.parse().unwrap());
                }
                if r == "CGrid" {
                    return Rule::CGrid;
                }
                if let Some(c) = r.strip_prefix("CSearch") {
                    let (lo, hi) = c.split_once('-').unwrap();
                    return Rule::CSearch(lo.parse().unwrap(), hi.parse().unwrap());
                }
                *RULES
                    .iter()
                    .find(|x| format!("{x:?}") == r)
                    .expect("a rule")
            })
            .collect(),
        Err(_) => RULES.to_vec(),
    };
    let groups: Vec<usize> = std::env::var("INT4_GROUPS")
        .unwrap_or("32,64,128".into())
        .split(',')
        .map(|g| g.parse().unwrap())
        .collect();

    // Sanity: rule A through the real loader equals rule A fake-quantized.
    if mode == "rules" {
        println!(
            "| rule | group | cosine min | cosine mean | token cosine min | weight rel. MSE (all 36) | s |"
        );
        println!("|---|---|---|---|---|---|---|");
        for &rule in &rules {
            for &group in &groups {
                let t = Instant::now();
                let errs = write_checkpoint(&dir, &scratch, &|_, _| Some((rule, group)));
                let s = score(&scratch, &sentences, &want, hidden);
                let wmse = errs.iter().map(|e| e.1).sum::<f64>() / errs.len() as f64;
                println!(
                    "| {rule:?} | {group} | {:.5} | {:.5} | {:.4} | {:.5} | {:.1} |",
                    s.min,
                    s.mean,
                    s.token_min,
                    wmse,
                    t.elapsed().as_secs_f64()
                );
                if matches!(rule, Rule::CGrid | Rule::CSearch(..)) {
                    let h: Vec<String> = (0..=64)
                        .map(|c| CHOSEN[c].swap(0, std::sync::atomic::Ordering::Relaxed))
                        .enumerate()
                        .filter(|(_, n)| *n > 0)
                        .map(|(i, n)| format!("{i}:{n}"))
                        .collect();
                    println!("    chosen c (d = c/4): {}", h.join(" "));
                }
                if std::env::var_os("INT4_PERWEIGHT").is_some() {
                    for kind in KINDS {
                        let v: Vec<String> = errs
                            .iter()
                            .filter(|(n, _)| projection(n).unwrap().1 == kind)
                            .map(|(n, e)| format!("L{}={:.4}", projection(n).unwrap().0, e))
                            .collect();
                        println!("    {kind}: {}", v.join(" "));
                    }
                }
            }
        }
    } else if mode == "time" {
        // Quantization time alone for all 36 projections (set RAYON_NUM_THREADS=1).
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let ws: Vec<(Vec<f32>, usize, usize)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| projection(n).is_some())
            .map(|(_, v)| {
                let w = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (w, v.shape()[0], v.shape()[1])
            })
            .collect();
        let n: usize = ws.iter().map(|w| w.0.len()).sum();
        for &rule in &rules {
            for &group in &groups {
                let t = Instant::now();
                let mut sink = 0.0f32;
                for (w, r, c) in &ws {
                    sink += fake_quant(rule, w, *r, *c, group, None)[0];
                }
                let dt = t.elapsed().as_secs_f64();
                println!(
                    "time {rule:?} g{group}: {:.3} s for {n} values ({:.1} ns/value) {sink}",
                    dt,
                    dt * 1e9 / n as f64
                );
            }
        }
    } else if mode == "mixed" {
        // INT4_MIXED: `;`-separated configs, each `kinds-in-int8|layers-in-int8` with `,` lists,
        // e.g. `ffn_up,value|` or `|4,5`; the rest int4 with each rule and group.
        let mixed = std::env::var("INT4_MIXED")
            .unwrap_or("ffn_up|;ffn_up,value|;value,ffn_up,ffn_down|;|4,5".into());
        println!(
            "| rule | group | int8 | cosine min | cosine mean | token min | int4 share of params |"
        );
        println!("|---|---|---|---|---|---|---|");
        for &rule in &rules {
            for &group in &groups {
                for cfg in mixed.split(';') {
                    let (kinds, layers) = cfg.split_once('|').unwrap();
                    let kinds: Vec<&str> = kinds.split(',').filter(|k| !k.is_empty()).collect();
                    let layers: Vec<usize> = layers
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(|l| l.parse().unwrap())
                        .collect();
                    let errs = write_checkpoint(&dir, &scratch, &|l, k| {
                        if kinds.contains(&k) || layers.contains(&l) {
                            Some((Rule::Int8, group))
                        } else {
                            Some((rule, group))
                        }
                    });
                    let _ = errs;
                    let size = |k: &str| if k.starts_with("ffn") { 4.0 } else { 1.0 };
                    let total: f64 = KINDS.iter().map(|k| size(k)).sum::<f64>() * 6.0;
                    let int4: f64 = (0..6)
                        .flat_map(|l| KINDS.iter().map(move |k| (l, *k)))
                        .filter(|(l, k)| !kinds.contains(k) && !layers.contains(l))
                        .map(|(_, k)| size(k))
                        .sum();
                    let s = score(&scratch, &sentences, &want, hidden);
                    println!(
                        "| {rule:?} | {group} | {cfg} | {:.5} | {:.5} | {:.4} | {:.2} |",
                        s.min,
                        s.mean,
                        s.token_min,
                        int4 / total
                    );
                }
            }
        }
    } else if mode == "ablate" {
        // Only one kind (all layers), only one layer (all kinds), all but one kind.
        println!("| rule | group | quantized | cosine min | cosine mean | token min |");
        println!("|---|---|---|---|---|---|");
        for &rule in &rules {
            for &group in &groups {
                let run = |label: String, choose: Choose| {
                    write_checkpoint(&dir, &scratch, choose);
                    let s = score(&scratch, &sentences, &want, hidden);
                    println!(
                        "| {rule:?} | {group} | {label} | {:.5} | {:.5} | {:.4} |",
                        s.min, s.mean, s.token_min
                    );
                };
                for kind in KINDS {
                    run(format!("only {kind}"), &|_, k| {
                        (k == kind).then_some((rule, group))
                    });
                }
                for layer in 0..6 {
                    run(format!("only layer {layer}"), &|l, _| {
                        (l == layer).then_some((rule, group))
                    });
                }
                for kind in KINDS {
                    run(format!("all but {kind}"), &|_, k| {
                        (k != kind).then_some((rule, group))
                    });
                }
            }
        }
    }
    eprintln!("int4_rules: {:.1} s", started.elapsed().as_secs_f64());
}
