//! Peak memory and speed of loading, side by side with candle's loader, PyTorch when present
//! and the limits of this machine, in one run; and how long config-only planning takes.
//!
//! Run: `cargo bench --bench load_memory` (11.5–15 minutes on the project's 2-core VM). It
//! prints markdown tables on stdout, writes `target/bench/load_memory.json` and the plot
//! `target/bench/load_memory.svg`, and, run with the default sizes and runs, copies both to
//! `benches/` for the README. Environment:
//! - `STOWAGE_BENCH_SIZES`: checkpoint sizes in GB, default `0.5,1,2,4,8`;
//! - `STOWAGE_BENCH_WIDEN_MAX`: the largest size, in GB, with a bf16 checkpoint, default 4.
//!   Above it only the f32 checkpoint is written and loaded: a bf16 → f32 load of an 8 GB
//!   checkpoint owns 16 GB of fresh f32 (candle's peaks near 24 GB), over what a 24 GiB VM
//!   shared with compiling agents can hold, while an 8 GB f32 checkpoint loads zero-copy
//!   (candle's owned copy needs 8 GB);
//! - `STOWAGE_BENCH_RUNS`: runs per scenario, one number for every size or one per size;
//!   default 3 up to 2 GB and 1 above, so the run fits in 15 minutes. Every figure is the
//!   median of its runs;
//! - `STOWAGE_BENCH_WORKDIR`: where checkpoints are written, kept afterwards (default: a
//!   temporary directory, removed). With it one scenario can be rerun alone, e.g. under
//!   `perf record`: `STOWAGE_BENCH_SCENARIO=stowage_widen STOWAGE_BENCH_DIR=$WORKDIR/bf16-4
//!   target/release/deps/load_memory-<hash>`;
//! - `STOWAGE_BENCH_PYTHON`: the Python to look for torch and transformers in (`python3`).
//!
//! First it plans the shipped configs from `config.json` alone (`planning.rs`: Llama-3-8B up
//! to Kimi K2, ≈1 T parameters), 5 fresh processes each. Then, for each size, it writes
//! llama-shaped sharded checkpoints (bf16 and f32) with `stowage::synthetic`, and runs every
//! scenario in a fresh child process (`child.rs`), in rounds of one run each (see
//! `RUN_ORDER`). Before each child it re-reads that checkpoint (warm page cache), pauses (4 s
//! after a child that owned gigabytes, 1 s otherwise: freed memory goes back to the VM's host
//! meanwhile) and checks that the memory the scenario needs is available (else it is skipped,
//! with a note, rather than risk the OOM killer); the child resets its peak RSS right before
//! the measured phase. Scenarios:
//! - `read_reused`: `read()` every shard into one reused 64 MiB buffer (the page cache's speed:
//!   the limit for a zero-copy load);
//! - `read_fresh`: `read()` each shard into a fresh buffer of its size (the limit for a load
//!   that must own its memory);
//! - `touch_widen`: allocate and write, with every core, one fresh f32 buffer per tensor of the
//!   bf16 checkpoint, reading nothing (the limit for a load that widens: it must own twice the
//!   checkpoint's size of fresh memory);
//! - `naive_widen`: read each shard whole into memory, then widen its bf16 tensors to f32 (what a
//!   loader without mmap streaming does);
//! - `candle_bf16`: candle-core's `MmapedSafetensors::multi` over the shards, then `load` of
//!   every tensor onto `Device::Cpu` (an owned copy), with the tensors and the maps kept alive;
//! - `candle_widen`: the same, each tensor then `to_dtype(F32)` as candle-nn's `VarBuilder`
//!   does for an f32 model (the bf16 copy is dropped);
//! - `candle_f32`: `candle_bf16`'s load of the f32 checkpoint;
//! - `stowage_widen`: `stowage::load_store` of the bf16 checkpoint onto the CPU, widened to f32;
//! - `stowage_split`: the bf16 checkpoint planned with a CPU budget of half the model as the
//!   CPU holds it (f32): the first layers widened onto the CPU, the rest left in place on disk;
//! - `stowage_f32`: the f32 checkpoint onto the CPU (zero copy: tensors are the mapped pages),
//!   then, timed apart, one pass summing every tensor (the page reads the load deferred);
//! - `stowage_disk`: the f32 checkpoint planned wholly to disk (left in place);
//! - `stowage_offload`: the f32 checkpoint planned as bf16 with half of it on the CPU (zero
//!   copy) and the rest converted to bf16 and written to a fresh offload folder (fsynced);
//! - `write_fsync`: write and fsync as many bytes as `stowage_offload` writes, from a reused
//!   buffer (the disk's limit for it);
//! - `torch_widen`, `torch_f32`: transformers' `from_pretrained(low_cpu_mem_usage=True)` of the
//!   bf16 and the f32 checkpoint as f32 (`torch.rs`), only where torch is installed.
//!
//! Each row: wall seconds, GB/s of checkpoint bytes, peak RSS (VmHWM) and its anonymous and
//! file-backed parts at the end (everything loaded still alive), the bytes the CPU holds and
//! peak / those bytes. Then ratios per size: stowage against candle (time, peak) and against
//! the `read()` limits (GB/s), and the peak against the target "bytes on cpu + 2 staging
//! buffers + 5%", a staging buffer being the largest tensor as loaded (f32), the most a
//! tensor-at-a-time loader holds in flight; then the targets, met or missed, over all sizes.
//! Ratios come from medians measured in the same run. Not here: the GPU variant (host-to-device
//! throughput, peak GPU memory against the plan), which needs a GPU these VMs lack.

#[path = "load_memory/child.rs"]
mod child;
#[path = "load_memory/planning.rs"]
mod planning;
#[path = "load_memory/plot.rs"]
mod plot;
#[path = "load_memory/torch.rs"]
mod torch;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stowage::DType;

const ENV: &str = "STOWAGE_BENCH_SCENARIO";
const MIB: f64 = (1u64 << 20) as f64;
const GIB: u64 = 1 << 30;
/// The pause before a child that follows one that owned gigabytes. This VM hands freed
/// memory back to its host about 2 s after it is freed; a child started sooner finds some of
/// it still mapped and first-touches it ~20% faster, which favours whichever scenario follows
/// a big one.
const PAUSE: Duration = Duration::from_secs(4);
/// The pause before any other child (the one before it freed little).
const SHORT_PAUSE: Duration = Duration::from_secs(1);
/// The loader compared against, as pinned in `Cargo.toml`.
const CANDLE: &str = "candle-core 0.11.1";
/// Sizes run by default, in GB.
const SIZES: &str = "0.5,1,2,4,8";
/// Runs per scenario by default: this many up to [`MANY_RUNS_MAX`] GB, one above.
const RUNS: usize = 3;
const MANY_RUNS_MAX: f64 = 2.0;
/// The largest size with a bf16 checkpoint by default (see the header).
const WIDEN_MAX: f64 = 4.0;
/// Fresh processes per planned model, and the pause before each.
const PLAN_RUNS: usize = 5;
const PLAN_PAUSE: Duration = Duration::from_millis(500);
/// Memory left free beyond what a scenario needs, for the rest of the machine.
const MARGIN: u64 = 2 * GIB;

/// A scenario and the checkpoint it reads, in the order of the tables.
const CASES: [(&str, &str); 16] = [
    ("read_reused", "bf16"),
    ("read_fresh", "bf16"),
    ("touch_widen", "bf16"),
    ("naive_widen", "bf16"),
    ("candle_bf16", "bf16"),
    ("candle_widen", "bf16"),
    ("stowage_widen", "bf16"),
    ("stowage_split", "bf16"),
    ("read_reused", "f32"),
    ("write_fsync", "f32"),
    ("candle_f32", "f32"),
    ("stowage_f32", "f32"),
    ("stowage_disk", "f32"),
    ("stowage_offload", "f32"),
    ("torch_widen", "bf16"),
    ("torch_f32", "f32"),
];

/// The order the cases run in each round (indices into [`CASES`]; those whose checkpoint is
/// not written at a size, or torch's without torch, are left out): one that allocates little
/// between two that own gigabytes (see [`owns_memory`]), so each big one starts after a longer
/// quiet spell (the VM returns a big free to its host over several seconds; a child started
/// meanwhile first-touches memory faster).
const RUN_ORDER: [usize; 16] = [0, 2, 1, 6, 12, 5, 8, 3, 11, 7, 9, 4, 13, 10, 15, 14];

/// Whether a scenario owns memory of the order of the checkpoint: the child after it waits
/// [`PAUSE`], the others [`SHORT_PAUSE`].
fn owns_memory(scenario: &str) -> bool {
    matches!(
        scenario,
        "touch_widen"
            | "naive_widen"
            | "candle_bf16"
            | "candle_widen"
            | "candle_f32"
            | "stowage_widen"
            | "stowage_split"
            | "torch_widen"
            | "torch_f32"
    )
}

/// The row label of a case: the scenario, tagged `(f32)` when its name does not say so.
fn label(scenario: &str, checkpoint: &str) -> String {
    if checkpoint == "f32" && !scenario.ends_with("f32") {
        format!("{scenario} (f32)")
    } else {
        scenario.to_string()
    }
}

/// Anonymous memory a scenario needs at its peak, with room, from the checkpoint's bytes and
/// its largest shard: the owned f32 of a widening load, candle's owned copies.
fn need(scenario: &str, bytes: u64, shard: u64) -> u64 {
    match scenario {
        "touch_widen" | "stowage_widen" => 2 * bytes,
        "naive_widen" => 2 * bytes + shard,
        "candle_widen" | "torch_widen" => 2 * bytes + bytes / 2,
        "candle_bf16" | "candle_f32" | "stowage_split" | "torch_f32" => bytes + shard,
        _ => shard,
    }
}

/// MemAvailable, in bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// Free bytes on the filesystem of `dir`, from `df` (`None` when it cannot tell).
fn disk_free(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reads every shard of `dir` through `buf`, so its pages are in the page cache.
fn warm(dir: &Path, buf: &mut [u8]) {
    for f in child::shards(dir) {
        let mut file = std::fs::File::open(f).unwrap();
        while file.read(buf).unwrap() > 0 {}
    }
}

/// Runs `command` (one scenario in a fresh process) after re-warming the checkpoint in `dir`
/// and `pause`, and returns the JSON line it printed, or why it failed. These VMs page out
/// memory idle for a minute (a DAMON `pageout` scheme), page cache included, so a checkpoint
/// last read a round ago may have gone cold.
fn run_child(
    mut command: Command,
    dir: &Path,
    buf: &mut [u8],
    pause: Duration,
) -> Result<Value, String> {
    let started = Instant::now();
    warm(dir, buf);
    std::thread::sleep(pause.saturating_sub(started.elapsed()));
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(2).map(str::trim).collect();
        return Err(format!(
            "{}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("no JSON line on stdout")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// The bench's own binary, running one scenario of `checkpoint`.
fn scenario_command(exe: &str, scenario: &str, checkpoint: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env(ENV, scenario).env("STOWAGE_BENCH_DIR", checkpoint);
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one case's runs at one size.
struct Row {
    label: String,
    checkpoint: &'static str,
    bytes: u64,
    seconds: f64,
    spread: f64,
    peak: f64,
    anon: f64,
    file: f64,
    cpu: f64,
    runs: Vec<Value>,
}

impl Row {
    fn new(label: String, checkpoint: &'static str, runs: Vec<Value>) -> Row {
        let med = |k: &str| median(runs.iter().map(|r| r[k].as_f64().unwrap()).collect());
        let secs: Vec<f64> = runs
            .iter()
            .map(|r| r["seconds"].as_f64().unwrap())
            .collect();
        let (lo, hi) = secs
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &s| (l.min(s), h.max(s)));
        let seconds = med("seconds");
        Row {
            label,
            checkpoint,
            bytes: runs[0]["bytes"].as_u64().unwrap(),
            spread: if seconds > 0.0 {
                (hi - lo) / seconds
            } else {
                0.0
            },
            seconds,
            peak: med("peak"),
            anon: med("anon"),
            file: med("file"),
            cpu: med("cpu_bytes"),
            runs,
        }
    }

    /// The median of a figure only some scenarios report (`None` when this one does not).
    fn extra(&self, key: &str) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r[key].as_f64()).collect();
        (!v.is_empty()).then(|| median(v))
    }

    fn gbs(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    fn line(&self) -> String {
        let ratio = if self.cpu > 0.0 {
            format!("{:.3}", self.peak / self.cpu)
        } else {
            "-".into()
        };
        format!(
            "| {} | {} | {:.2} | {} | {:.4} | {:.0}% | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            self.label,
            self.checkpoint,
            self.bytes as f64 / 1e9,
            self.runs.len(),
            self.seconds,
            self.spread * 100.0,
            self.gbs(),
            self.peak / MIB,
            self.anon / MIB,
            self.file / MIB,
            self.cpu / MIB,
            ratio
        )
    }

    fn json(&self) -> Value {
        json!({"scenario": self.label, "checkpoint": self.checkpoint, "bytes": self.bytes,
            "seconds": self.seconds, "seconds_spread": self.spread, "gb_per_s": self.gbs(),
            "peak": self.peak, "anon": self.anon, "file": self.file, "cpu_bytes": self.cpu,
            "runs": self.runs})
    }
}

/// One size's results.
struct Size {
    /// Nominal size, GB.
    gb: f64,
    /// The largest tensor as loaded (f32): one staging buffer.
    staging: f64,
    rows: Vec<Row>,
    /// Cases not run, and why.
    skipped: Vec<(String, String)>,
}

impl Size {
    fn get(&self, label: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.label == label)
    }

    /// `f` of two rows, when both ran.
    fn pair(&self, a: &str, b: &str, f: impl Fn(&Row, &Row) -> f64) -> Option<f64> {
        Some(f(self.get(a)?, self.get(b)?))
    }

    /// `f` of one row, when it ran.
    fn one(&self, a: &str, f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
        f(self.get(a)?)
    }

    /// The peak allowed by the target: bytes on cpu + 5% + 2 staging buffers.
    fn bound(&self, r: &Row) -> f64 {
        r.cpu * 1.05 + 2.0 * self.staging
    }

    /// `stowage_f32` and the pass over its tensors: seconds in all.
    fn f32_with_pass(r: &Row) -> Option<f64> {
        Some(r.seconds + r.extra("pass_seconds")?)
    }

    /// The ratios the targets are read against, from this size's medians.
    fn ratios(&self) -> Vec<(&'static str, Option<f64>)> {
        let time = |a: &Row, b: &Row| a.seconds / b.seconds;
        let peak = |a: &Row, b: &Row| a.peak / b.peak;
        let gbs = |a: &Row, b: &Row| a.gbs() / b.gbs();
        let pass_gbs = |a: &Row, b: &Row| {
            Size::f32_with_pass(a).map_or(f64::NAN, |s| a.bytes as f64 / s / 1e9) / b.gbs()
        };
        vec![
            (
                "stowage_widen / candle_widen, time",
                self.pair("stowage_widen", "candle_widen", time),
            ),
            (
                "stowage_widen / candle_widen, peak",
                self.pair("stowage_widen", "candle_widen", peak),
            ),
            (
                "stowage_widen / touch_widen, time",
                self.pair("stowage_widen", "touch_widen", time),
            ),
            (
                "stowage_widen / read_fresh, GB/s",
                self.pair("stowage_widen", "read_fresh", gbs),
            ),
            (
                "stowage_widen / read_reused, GB/s",
                self.pair("stowage_widen", "read_reused", gbs),
            ),
            (
                "stowage_widen / naive_widen, time",
                self.pair("stowage_widen", "naive_widen", time),
            ),
            (
                "stowage_widen peak / bytes on cpu",
                self.one("stowage_widen", |r| Some(r.peak / r.cpu)),
            ),
            (
                "stowage_widen peak / (1.05 cpu + 2 staging)",
                self.one("stowage_widen", |r| Some(r.peak / self.bound(r))),
            ),
            (
                "stowage_widen peak - bytes on cpu, MiB",
                self.one("stowage_widen", |r| Some((r.peak - r.cpu) / MIB)),
            ),
            (
                "candle_widen peak / bytes on cpu",
                self.one("candle_widen", |r| Some(r.peak / r.cpu)),
            ),
            (
                "stowage_split: share of the model on cpu",
                self.one("stowage_split", |r| Some(r.cpu / r.extra("loaded_bytes")?)),
            ),
            (
                "stowage_split peak / (1.05 cpu + 2 staging)",
                self.one("stowage_split", |r| Some(r.peak / self.bound(r))),
            ),
            (
                "stowage_split peak - bytes on cpu, MiB",
                self.one("stowage_split", |r| Some((r.peak - r.cpu) / MIB)),
            ),
            (
                "stowage_split / stowage_widen, time",
                self.pair("stowage_split", "stowage_widen", time),
            ),
            (
                "stowage_disk (f32) peak, MiB",
                self.one("stowage_disk (f32)", |r| Some(r.peak / MIB)),
            ),
            (
                "stowage_offload (f32) peak, MiB",
                self.one("stowage_offload (f32)", |r| Some(r.peak / MIB)),
            ),
            (
                "stowage_offload (f32) peak / (1.05 cpu + 2 staging)",
                self.one("stowage_offload (f32)", |r| Some(r.peak / self.bound(r))),
            ),
            (
                "stowage_offload (f32) written, GB/s",
                self.one("stowage_offload (f32)", |r| {
                    Some(r.extra("written_bytes")? / r.seconds / 1e9)
                }),
            ),
            (
                "stowage_offload (f32) / write_fsync (f32), time",
                self.pair("stowage_offload (f32)", "write_fsync (f32)", time),
            ),
            (
                "stowage_f32 / candle_f32, time",
                self.pair("stowage_f32", "candle_f32", time),
            ),
            (
                "stowage_f32 / read_reused (f32), GB/s",
                self.pair("stowage_f32", "read_reused (f32)", gbs),
            ),
            (
                "stowage_f32 + pass / read_reused (f32), GB/s",
                self.pair("stowage_f32", "read_reused (f32)", pass_gbs),
            ),
            (
                "stowage_f32 + pass / candle_f32, time",
                self.pair("stowage_f32", "candle_f32", |a, b| {
                    Size::f32_with_pass(a).map_or(f64::NAN, |s| s / b.seconds)
                }),
            ),
            (
                "stowage_f32 + burn sum / candle_f32, time",
                self.pair("stowage_f32", "candle_f32", |a, b| {
                    a.extra("burn_pass_seconds")
                        .map_or(f64::NAN, |p| (a.seconds + p) / b.seconds)
                }),
            ),
            (
                "candle_bf16 / read_fresh, GB/s",
                self.pair("candle_bf16", "read_fresh", gbs),
            ),
            (
                "stowage_widen / torch_widen, time",
                self.pair("stowage_widen", "torch_widen", time),
            ),
            (
                "stowage_widen / torch_widen, peak",
                self.pair("stowage_widen", "torch_widen", peak),
            ),
            (
                "stowage_f32 / torch_f32, time",
                self.pair("stowage_f32", "torch_f32", time),
            ),
            (
                "stowage_f32 / torch_f32, peak",
                self.pair("stowage_f32", "torch_f32", peak),
            ),
        ]
    }
}

/// Medians of one planned model's runs.
struct PlanRow {
    model: &'static str,
    strategy: &'static str,
    runs: Vec<Value>,
}

impl PlanRow {
    fn med(&self, key: &str) -> f64 {
        median(self.runs.iter().filter_map(|r| r[key].as_f64()).collect())
    }

    fn line(&self) -> String {
        let r = &self.runs[0];
        format!(
            "| {} | {} | {} | {} | {:.2} T | {:.1} | {:.1} | {:.1} | {:.2} | **{:.1}** | {:.1} | {:.0} |",
            self.model,
            self.strategy,
            r["gpus"].as_str().unwrap_or("?"),
            r["tensors"],
            r["params"].as_f64().unwrap_or(0.0) / 1e12,
            r["weights_bytes"].as_f64().unwrap_or(0.0) / GIB as f64,
            self.med("inventory_s") * 1e3,
            self.med("plan_s") * 1e3,
            self.med("device_map_s") * 1e3,
            self.med("seconds") * 1e3,
            self.med("warm_seconds") * 1e3,
            self.med("peak") / MIB,
        )
    }

    fn json(&self) -> Value {
        json!({"model": self.model, "strategy": self.strategy, "seconds": self.med("seconds"),
            "inventory_s": self.med("inventory_s"), "plan_s": self.med("plan_s"),
            "device_map_s": self.med("device_map_s"), "warm_seconds": self.med("warm_seconds"),
            "peak": self.med("peak"),
            "runs": self.runs})
    }
}

/// A ratio as a table cell.
fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v != 0.0 && v.abs() < 0.01 => format!("{v:.1e}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Over all sizes: the values of ratio `name` where it was measured.
fn across(sizes: &[Size], name: &str) -> Vec<f64> {
    sizes
        .iter()
        .flat_map(|s| s.ratios())
        .filter(|(k, _)| *k == name)
        .filter_map(|(_, v)| v.filter(|v| !v.is_nan()))
        .collect()
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)))
}

/// The targets, each met or missed with the figures behind it.
fn targets(sizes: &[Size], plans: &[PlanRow]) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let mut check = |name: &str, ratio: &str, ok: &dyn Fn(f64) -> bool, what: &str| {
        let v = across(sizes, ratio);
        if v.is_empty() {
            return;
        }
        let (lo, hi) = range(&v);
        out.push((
            name.to_string(),
            v.iter().all(|&x| ok(x)),
            format!("{what} {lo:.3}–{hi:.3} over {} sizes", v.len()),
        ));
    };
    check(
        "peak RSS ≤ bytes on cpu + 2 staging buffers + 5% (widening load)",
        "stowage_widen peak / (1.05 cpu + 2 staging)",
        &|x| x <= 1.0,
        "peak / allowance",
    );
    check(
        "peak RSS ≤ bytes on cpu + 2 staging buffers + 5% (cpu + disk split)",
        "stowage_split peak / (1.05 cpu + 2 staging)",
        &|x| x <= 1.0,
        "peak / allowance",
    );
    check(
        "peak RSS ≤ bytes on cpu + 2 staging buffers + 5% (cpu + disk, written)",
        "stowage_offload (f32) peak / (1.05 cpu + 2 staging)",
        &|x| x <= 1.0,
        "peak / allowance",
    );
    check(
        "CPU throughput ≥ 0.8× read() into a reused buffer (widening load)",
        "stowage_widen / read_reused, GB/s",
        &|x| x >= 0.8,
        "stowage_widen / read_reused",
    );
    check(
        "CPU throughput ≥ 0.8× read() into a reused buffer (f32, load + one pass)",
        "stowage_f32 + pass / read_reused (f32), GB/s",
        &|x| x >= 0.8,
        "(stowage_f32 + pass) / read_reused",
    );
    check(
        "not slower than candle (widening load)",
        "stowage_widen / candle_widen, time",
        &|x| x <= 1.0,
        "time / candle's",
    );
    check(
        "not slower than candle (f32, load + one pass)",
        "stowage_f32 + pass / candle_f32, time",
        &|x| x <= 1.0,
        "time / candle's",
    );
    for (label, ratio) in [
        ("stowage_disk (f32)", "stowage_disk (f32) peak, MiB"),
        ("stowage_offload (f32)", "stowage_offload (f32) peak, MiB"),
    ] {
        let v = across(sizes, ratio);
        let gb: Vec<f64> = sizes
            .iter()
            .filter_map(|s| s.get(label).map(|r| r.bytes as f64 / 1e9))
            .collect();
        if v.len() < 2 {
            continue;
        }
        let (lo, hi) = range(&v);
        let (g0, g1) = range(&gb);
        out.push((
            format!("near-constant host peak when the model goes to disk ({label})"),
            hi - lo <= 64.0,
            format!("peak {lo:.1}–{hi:.1} MiB from {g0:.2} to {g1:.2} GB (met: within 64 MiB)"),
        ));
    }
    for p in plans.iter().filter(|p| p.model == "kimi-k2") {
        let s = p.med("seconds");
        out.push((
            format!("plan of the 1 T MoE < 100 ms (kimi-k2, {})", p.strategy),
            s < 0.1,
            format!(
                "{:.1} ms from config.json to device map in a fresh process, {:.1} ms again in \
                 the same process",
                s * 1e3,
                p.med("warm_seconds") * 1e3
            ),
        ));
    }
    out
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the days since 1970 (Hinnant's civil_from_days).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// CPU model, cores, memory and kernel of this machine.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem_kb as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// Sizes, runs per size and the largest bf16 size, from the environment or the defaults;
/// and whether they are the defaults (only the documented run replaces `benches/`' results).
struct Settings {
    sizes: Vec<f64>,
    runs: Vec<usize>,
    widen_max: f64,
    command: String,
    documented: bool,
}

fn settings() -> Settings {
    let var = |k: &str| std::env::var(k).ok();
    let (sizes_env, runs_env, widen_env) = (
        var("STOWAGE_BENCH_SIZES"),
        var("STOWAGE_BENCH_RUNS"),
        var("STOWAGE_BENCH_WIDEN_MAX"),
    );
    let sizes: Vec<f64> = sizes_env
        .as_deref()
        .unwrap_or(SIZES)
        .split(',')
        .map(|s| s.trim().parse().expect("sizes in GB"))
        .collect();
    let runs: Vec<usize> = match &runs_env {
        None => sizes
            .iter()
            .map(|&s| if s <= MANY_RUNS_MAX { RUNS } else { 1 })
            .collect(),
        Some(r) => {
            let v: Vec<usize> = r
                .split(',')
                .map(|n| n.trim().parse::<usize>().expect("a number of runs").max(1))
                .collect();
            match v.len() {
                1 => vec![v[0]; sizes.len()],
                n if n == sizes.len() => v,
                n => panic!(
                    "STOWAGE_BENCH_RUNS has {n} numbers for {} sizes",
                    sizes.len()
                ),
            }
        }
    };
    let widen_max = widen_env
        .as_deref()
        .map_or(WIDEN_MAX, |v| v.parse().expect("a size in GB"));
    let mut command = String::from("cargo bench --bench load_memory");
    for (k, v) in [
        ("STOWAGE_BENCH_WIDEN_MAX", &widen_env),
        ("STOWAGE_BENCH_RUNS", &runs_env),
        ("STOWAGE_BENCH_SIZES", &sizes_env),
    ] {
        if let Some(v) = v {
            command = format!("{k}={v} {command}");
        }
    }
    Settings {
        sizes,
        runs,
        widen_max,
        command,
        documented: sizes_env.is_none() && runs_env.is_none() && widen_env.is_none(),
    }
}

/// How many runs each size had, for titles: "medians of 3 runs at 0.5–2 GB, 1 run at 4–8 GB".
fn runs_text(sizes: &[f64], runs: &[usize]) -> String {
    let mut groups: Vec<(usize, f64, f64)> = Vec::new();
    for (&s, &r) in sizes.iter().zip(runs) {
        match groups.last_mut() {
            Some(g) if g.0 == r => g.2 = s,
            _ => groups.push((r, s, s)),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|&(r, a, b)| {
            let runs = if r == 1 {
                "1 run".into()
            } else {
                format!("{r} runs")
            };
            match (groups.len(), a == b) {
                (1, _) => runs,
                (_, true) => format!("{runs} at {a} GB"),
                _ => format!("{runs} at {a}–{b} GB"),
            }
        })
        .collect();
    format!("medians of {}", parts.join(", "))
}

/// Plans each of [`planning::MODELS`] in fresh processes.
fn plan_models(exe: &str) -> Vec<PlanRow> {
    planning::MODELS
        .iter()
        .map(|&(model, strategy)| {
            let runs = (0..PLAN_RUNS)
                .map(|_| {
                    std::thread::sleep(PLAN_PAUSE);
                    let out = Command::new(exe)
                        .env(ENV, "plan")
                        .env("STOWAGE_BENCH_MODEL", model)
                        .env("STOWAGE_BENCH_STRATEGY", strategy.as_str())
                        .output()
                        .expect("child runs");
                    assert!(
                        out.status.success(),
                        "plan {model}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let line = out.stdout.split(|&b| b == b'\n').next().unwrap();
                    serde_json::from_slice(line).unwrap()
                })
                .collect();
            PlanRow {
                model,
                strategy: strategy.as_str(),
                runs,
            }
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Ok(scenario) = std::env::var(ENV) {
        let var = |k: &str| std::env::var(k).unwrap();
        if scenario == "plan" {
            planning::run(&var("STOWAGE_BENCH_MODEL"), &var("STOWAGE_BENCH_STRATEGY"));
        } else {
            child::run(&scenario, Path::new(&var("STOWAGE_BENCH_DIR")));
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and should not start a 12-minute run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("load_memory: run it with `cargo bench --bench load_memory`");
        return;
    }
    let started = Instant::now();
    let mut order = RUN_ORDER;
    order.sort();
    assert_eq!(
        order,
        std::array::from_fn(|i| i),
        "RUN_ORDER runs every case once"
    );
    let Settings {
        sizes: size_list,
        runs,
        widen_max,
        command,
        documented,
    } = settings();
    let temp = tempfile::tempdir().unwrap();
    let mut buf = vec![0u8; 64 << 20];
    let workdir = std::env::var_os("STOWAGE_BENCH_WORKDIR").map(PathBuf::from);
    let root = workdir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root).unwrap();
    let torch = torch::probe();
    let script = torch.is_ok().then(|| torch::install(&root));
    let machine = machine();
    let date = today();
    let runs_text = runs_text(&size_list, &runs);
    println!(
        "load_memory: {date}, {} ({} cores, {} GiB), {CANDLE}, warm page cache, {runs_text}; \
         bf16 checkpoints up to {widen_max} GB\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory_gib"]
    );
    match &torch {
        Ok(v) => println!("PyTorch side by side: {v}\n"),
        Err(why) => {
            println!("PyTorch not compared (skipped): {why}\n");
            eprintln!("load_memory: torch scenarios skipped: {why}");
        }
    }

    // Config-only planning first: small, and it should not wait behind the loads.
    let t = Instant::now();
    let plans = plan_models(&args[0]);
    eprintln!("planning: {:.1} s", t.elapsed().as_secs_f64());

    println!(
        "| scenario | checkpoint | GB | runs | s | spread | GB/s | peak MiB | anon MiB \
         | file MiB | cpu MiB | peak / cpu |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut sizes: Vec<Size> = Vec::new();
    let mut previous = "touch_widen";
    for (&gb, &size_runs) in size_list.iter().zip(&runs) {
        let bytes = (gb * 1e9) as u64;
        let with_bf16 = gb <= widen_max;
        let bf16 = root.join(format!("bf16-{gb}"));
        let f32d = root.join(format!("f32-{gb}"));
        let mut skipped = Vec::new();
        // Both checkpoints, the offload folder, and room to spare.
        let needed = bytes * u64::from(with_bf16) + bytes + bytes / 4 + 2 * GIB;
        if let Some(free) = disk_free(&root).filter(|&f| f < needed) {
            let why = format!(
                "{:.1} GB free on the disk of {}, {:.1} GB needed",
                free as f64 / 1e9,
                root.display(),
                needed as f64 / 1e9
            );
            println!("| ({gb} GB skipped: {why}) |");
            skipped.push(("all".to_string(), why));
            sizes.push(Size {
                gb,
                staging: 0.0,
                rows: Vec::new(),
                skipped,
            });
            continue;
        }
        let t = Instant::now();
        let mut dirs = vec![(&f32d, DType::F32)];
        if with_bf16 {
            dirs.insert(0, (&bf16, DType::BF16));
        }
        for &(d, dtype) in &dirs {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
            stowage::synthetic::write_llama(d, bytes, dtype).unwrap();
            warm(d, &mut buf);
        }
        eprintln!(
            "{gb} GB: checkpoints written and read in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // A staging buffer: the largest tensor as loaded (f32); the largest shard, for `need`.
        let staging = child::tensors(&child::shards(&f32d))
            .iter()
            .map(|t| t.1)
            .max()
            .unwrap_or(0) as f64
            * 4.0;
        let largest_shard = |d: &Path| {
            child::shards(d)
                .iter()
                .map(|f| f.metadata().unwrap().len())
                .max()
                .unwrap_or(0)
        };
        let present = |i: usize| {
            let (s, c) = CASES[i];
            (c == "f32" || with_bf16) && (!s.starts_with("torch") || script.is_some())
        };
        let mut results: Vec<Vec<Value>> = vec![Vec::new(); CASES.len()];
        for run in 0..size_runs {
            let t = Instant::now();
            for i in RUN_ORDER.into_iter().filter(|&i| present(i)) {
                let (scenario, checkpoint) = CASES[i];
                let dir = if checkpoint == "f32" { &f32d } else { &bf16 };
                let ckpt_bytes: u64 = child::shards(dir)
                    .iter()
                    .map(|f| f.metadata().unwrap().len())
                    .sum();
                let need = need(scenario, ckpt_bytes, largest_shard(dir)) + MARGIN;
                let available = mem_available();
                if available < need {
                    let why = format!(
                        "run {}: {:.1} GiB available, {:.1} GiB needed",
                        run + 1,
                        available as f64 / GIB as f64,
                        need as f64 / GIB as f64
                    );
                    eprintln!("{gb} GB: {} skipped: {why}", label(scenario, checkpoint));
                    skipped.push((label(scenario, checkpoint), why));
                    continue;
                }
                let command = match &script {
                    Some(script) if scenario.starts_with("torch") => torch::command(script, dir),
                    _ => scenario_command(&args[0], scenario, dir),
                };
                let pause = if owns_memory(previous) {
                    PAUSE
                } else {
                    SHORT_PAUSE
                };
                previous = scenario;
                match run_child(command, dir, &mut buf, pause) {
                    Ok(v) => results[i].push(v),
                    Err(why) if scenario.starts_with("torch") => {
                        eprintln!("{gb} GB: {scenario} failed, skipped: {why}");
                        skipped.push((label(scenario, checkpoint), why));
                    }
                    Err(why) => panic!("{scenario} ({gb} GB): {why}"),
                }
            }
            eprintln!(
                "{gb} GB: run {}/{size_runs} in {:.1} s",
                run + 1,
                t.elapsed().as_secs_f64()
            );
        }
        let rows: Vec<Row> = CASES
            .iter()
            .zip(results)
            .filter(|(_, r)| !r.is_empty())
            .map(|((s, c), r)| Row::new(label(s, c), c, r))
            .collect();
        for r in &rows {
            println!("{}", r.line());
        }
        sizes.push(Size {
            gb,
            staging,
            rows,
            skipped,
        });
        if workdir.is_none() {
            let _ = std::fs::remove_dir_all(&bf16);
            let _ = std::fs::remove_dir_all(&f32d);
        }
    }

    println!("\nRatios (medians of the same run; GB/s of checkpoint bytes; - where not run):\n");
    let head: Vec<String> = sizes.iter().map(|s| format!("{} GB", s.gb)).collect();
    println!("| ratio | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    let all_ratios: Vec<Vec<(&str, Option<f64>)>> = sizes.iter().map(Size::ratios).collect();
    if let Some(first) = all_ratios.first() {
        for (k, (name, _)) in first.iter().enumerate() {
            let cells: Vec<Option<f64>> = all_ratios.iter().map(|r| r[k].1).collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let cells: Vec<String> = cells.into_iter().map(cell).collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
    }

    println!("\nDetails:\n");
    for s in &sizes {
        if let Some(r) = s.get("stowage_split") {
            println!(
                "- {} GB, stowage_split: {:.0} MiB on cpu ({:.0}% of the {:.0} MiB model as \
                 loaded), {:.0} MiB left on disk, peak {:.0} MiB, allowance {:.0} MiB",
                s.gb,
                r.cpu / MIB,
                100.0 * r.cpu / r.extra("loaded_bytes").unwrap_or(f64::NAN),
                r.extra("loaded_bytes").unwrap_or(f64::NAN) / MIB,
                r.extra("disk_bytes").unwrap_or(f64::NAN) / MIB,
                r.peak / MIB,
                s.bound(r) / MIB
            );
        }
        if let Some(r) = s.get("stowage_offload (f32)") {
            println!(
                "- {} GB, stowage_offload (f32): {:.0} MiB on cpu (zero copy), {:.0} MiB written \
                 as bf16 in {:.3} s ({:.2} GB/s written), peak {:.0} MiB",
                s.gb,
                r.cpu / MIB,
                r.extra("written_bytes").unwrap_or(f64::NAN) / MIB,
                r.seconds,
                r.extra("written_bytes").unwrap_or(f64::NAN) / r.seconds / 1e9,
                r.peak / MIB
            );
        }
        if let Some(r) = s.get("stowage_f32") {
            let x = |k: &str| r.extra(k).unwrap_or(f64::NAN);
            println!(
                "- {} GB, stowage_f32: load {:.4} s; then one pass reading every tensor in place \
                 {:.3} s ({:.2} GB/s with the load), after which {:.0} MiB anon, {:.0} MiB \
                 file-backed; then burn's `sum` of each {:.3} s, peak {:.0} MiB (a copy of the \
                 tensor per operation)",
                s.gb,
                r.seconds,
                x("pass_seconds"),
                r.bytes as f64 / (r.seconds + x("pass_seconds")) / 1e9,
                x("pass_anon") / MIB,
                x("pass_file") / MIB,
                x("burn_pass_seconds"),
                x("burn_pass_peak") / MIB,
            );
        }
        if let Some(r) = s.get("write_fsync (f32)") {
            println!(
                "- {} GB, write_fsync (f32): {:.0} MiB written and fsynced in {:.3} s ({:.2} GB/s)",
                s.gb,
                r.extra("written_bytes").unwrap_or(f64::NAN) / MIB,
                r.seconds,
                r.extra("written_bytes").unwrap_or(f64::NAN) / r.seconds / 1e9,
            );
        }
        let cold: Vec<String> = s
            .rows
            .iter()
            .filter_map(|r| Some((r, r.extra("major_faults")?)))
            .filter(|(_, n)| *n > 0.0)
            .map(|(r, n)| format!("{} {n:.0}", r.label))
            .collect();
        if !cold.is_empty() {
            println!(
                "- {} GB, major page faults in the measured phase (pages read from disk, \
                 not the page cache; medians): {}",
                s.gb,
                cold.join(", ")
            );
        }
        for (case, why) in &s.skipped {
            println!("- {} GB, {case} skipped: {why}", s.gb);
        }
    }

    println!(
        "\nPlanning from config.json alone (ms; a fresh process each, medians of {PLAN_RUNS}; \
         'again, warm': the same plan repeated in that process):\n"
    );
    println!(
        "| model | strategy | GPUs | tensors | params | GiB | inventory | plan | device map \
         | total | again, warm | peak MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &plans {
        println!("{}", p.line());
    }

    let targets = targets(&sizes, &plans);
    println!("\nTargets:\n");
    for (name, met, figures) in &targets {
        let verdict = if *met { "met" } else { "MISSED" };
        println!("- {name}: **{verdict}** ({figures})");
    }
    let total = started.elapsed().as_secs_f64();
    println!("\ntotal wall time: {total:.0} s");

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "command": command,
        "date": date,
        "machine": machine,
        "candle": CANDLE,
        "pytorch": match &torch {
            Ok(v) => json!({"versions": v}),
            Err(why) => json!({"skipped": why}),
        },
        "runs": size_list.iter().zip(&runs).map(|(s, r)| json!({"size_gb": s, "runs": r})).collect::<Vec<_>>(),
        "widen_max_gb": widen_max,
        "total_seconds": total,
        "planning": plans.iter().map(PlanRow::json).collect::<Vec<_>>(),
        "sizes": sizes.iter().zip(&all_ratios).map(|(s, r)| json!({
            "size_gb": s.gb,
            "staging_bytes": s.staging,
            "scenarios": s.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "skipped": s.skipped.iter().map(|(c, w)| json!({"scenario": c, "skipped": w})).collect::<Vec<_>>(),
            "ratios": r.iter().map(|(k, v)| (k.to_string(), json!(v.filter(|v| !v.is_nan())))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(n, m, f)| json!({"target": n, "met": m, "figures": f})).collect::<Vec<_>>(),
    });
    let json_path = out.join("load_memory.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report).unwrap()).unwrap();

    let lines: Vec<plot::Line> = CASES
        .iter()
        .filter_map(|&(s, c)| {
            let l = label(s, c);
            let points = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
                sizes
                    .iter()
                    .filter_map(|size| size.get(&l))
                    .map(|r| (r.bytes as f64 / 1e9, f(r)))
                    .collect()
            };
            let peak = points(&|r| r.peak / 1e9);
            (!peak.is_empty()).then(|| plot::Line {
                label: l.clone(),
                points: [peak, points(&|r| r.seconds)],
            })
        })
        .collect();
    let svg = out.join("load_memory.svg");
    let title = format!(
        "stowage vs {CANDLE}: loading to CPU, warm cache, {runs_text} ({date}, {} cores)",
        machine["cores"]
    );
    plot::draw(&svg, &title, &lines).unwrap();
    eprintln!("wrote {} and {}", json_path.display(), svg.display());
    // Only the documented run replaces the README's plot and figures.
    if documented {
        let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
        std::fs::copy(&svg, benches.join("load_memory.svg")).unwrap();
        std::fs::copy(&json_path, benches.join("load_memory.json")).unwrap();
        eprintln!("copied both to {}", benches.display());
    }
}
