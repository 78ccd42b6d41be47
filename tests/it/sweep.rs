//! The parser sweep: every parser of outside input (safetensors headers, shard indexes, size
//! strings, device maps, configs, saved plans, PyTorch pickles and archives) is fed mutations
//! of real inputs, byte by byte and value by value, and must give a result or an error, never
//! a panic. The sweeps are deterministic (a failure reruns the same) and bounded: all of them
//! take a minute or two of CI; `STOWAGE_SWEEP_SCALE=N` runs N times as many cases. The longer
//! campaigns run the cargo-fuzz targets in `fuzz/`; every crash either found is kept as a
//! regression test beside the parser it crashed.
//!
//! `STOWAGE_SWEEP_SEEDS=DIR` also writes each sweep's real inputs under `DIR/<fuzz target>/`:
//! the seed corpora of the fuzz campaigns.
//!
//! Each sweep also checks that it reaches past the first check: some mutations must still
//! parse, or the sweep would only be testing the JSON parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use stowage::synthetic::{tiny_config, write_from_config};
use stowage::{DType, Device, DeviceMap, ModelConfig, Pretrained};
use stowage_planner::{arch, parse_gpus, parse_header, parse_max_memory, parse_size, read_index};

/// xorshift64: deterministic randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `n` cases, times `STOWAGE_SWEEP_SCALE`.
fn cases(n: usize) -> usize {
    let scale: f64 = std::env::var("STOWAGE_SWEEP_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

/// Bytes that mean something to one of the formats.
const BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'0', b'9', b'-', b'.', b'e',
    b'\\', b'=', b'x', b' ', b'G', b'i', b'B', b'(', b'c', b'R', b'h', b'q', b'X', b'\n',
];

/// `seed` with one to four edits: a flipped bit, an inserted, deleted or overwritten byte, a
/// truncation. Edits fall in `span` (of `seed`) and, when `keep_len`, keep the length.
fn mutate_bytes_in(
    rng: &mut Rng,
    seed: &[u8],
    span: std::ops::Range<usize>,
    keep_len: bool,
) -> Vec<u8> {
    let mut p = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if p.is_empty() || span.start >= p.len() {
            break;
        }
        let i = span.start + rng.below(span.end.min(p.len()) - span.start);
        let byte = if rng.next().is_multiple_of(2) {
            *rng.pick(BYTES)
        } else {
            rng.next() as u8
        };
        match (rng.below(5), keep_len) {
            (0, _) => p[i] ^= 1 << rng.below(8),
            (1, false) => p.insert(i, byte),
            (2, false) => {
                p.remove(i);
            }
            (3, false) => p.truncate(i),
            _ => p[i] = byte,
        }
    }
    p
}

fn mutate_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    mutate_bytes_in(rng, seed, 0..seed.len(), false)
}

/// Strings that mean something to one of the parsers.
const STRINGS: &[&str] = &[
    "",
    "cpu",
    "disk",
    "0",
    "1",
    "-1",
    "7",
    "cuda:0",
    "meta",
    "12GiB",
    "1.5 GB",
    "0B",
    "18446744073709551616",
    "1e30GiB",
    "-3KiB",
    "2x24GiB",
    "cpu=1KiB",
    "float16",
    "bfloat16",
    "float32",
    "F32",
    "BF16",
    "I64",
    "F8_E4M3",
    "int8",
    "int4",
    "llama",
    "bert",
    "gpt2",
    "t5",
    "mixtral",
    "deepseek_v3",
    "opt",
    "model.safetensors",
    "b.safetensors",
    "missing.safetensors",
    "../model.safetensors",
    "/etc/passwd",
    "model",
    "model.layers",
    "model.layers.0",
    "model.layers.1.mlp",
    "lm_head",
    "*",
    ".",
    "a..b",
    "é",
    "\u{0}",
    "auto",
    "balanced",
    "balanced_low_0",
    "sequential",
    "optimal",
    "last",
    "experts-first",
    "accelerate",
];

/// A scalar (or a small container) that means something to one of the parsers.
fn scalar(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(false),
        3 => json!(0),
        4 => json!(1),
        5 => json!(-1),
        6 => json!(u64::MAX),
        7 => json!(i64::MIN),
        8 => json!(1e300),
        9 => json!(0.5),
        10 => json!(1u64 << rng.below(64)),
        11 => json!(rng.next() % 100_000),
        12 => json!([]),
        13 => json!({}),
        _ => json!(rng.pick(STRINGS)),
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `k`-th node of `v` in pre-order.
fn nth_mut<'a>(v: &'a mut Value, k: &mut usize) -> Option<&'a mut Value> {
    if *k == 0 {
        return Some(v);
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|x| nth_mut(x, k)),
        Value::Object(o) => o.values_mut().find_map(|x| nth_mut(x, k)),
        _ => None,
    }
}

/// `seed` with one to four edits at random nodes: a node replaced by a scalar or by a copy of
/// another node; a key or element removed, added or duplicated; a number nudged.
fn mutate_value(rng: &mut Rng, seed: &Value) -> Value {
    let mut v = seed.clone();
    for _ in 0..1 + rng.below(4) {
        let n = count(&v);
        let donor = {
            let mut k = rng.below(n);
            nth_mut(&mut v, &mut k).cloned().unwrap_or(Value::Null)
        };
        let extra = scalar(rng);
        let key = rng.pick(STRINGS).to_string();
        let (a, b, c) = (rng.next(), rng.next() as usize, rng.below(8));
        let mut k = rng.below(n);
        let Some(node) = nth_mut(&mut v, &mut k) else {
            continue;
        };
        let mut replace = None;
        match (c, &mut *node) {
            (0, _) => replace = Some(extra),
            (1, _) => replace = Some(donor),
            (_, Value::Object(o)) if !o.is_empty() && a % 3 == 0 => {
                let key = o.keys().nth(b % o.len()).cloned().unwrap_or_default();
                o.remove(&key);
            }
            (_, Value::Object(o)) if !o.is_empty() && a % 3 == 1 => {
                let (k, x) = o.iter().nth(b % o.len()).expect("non-empty");
                let (k, x) = (format!("{k}{key}"), x.clone());
                o.insert(k, x);
            }
            (_, Value::Object(o)) => {
                o.insert(key, extra);
            }
            (_, Value::Array(l)) if !l.is_empty() && a % 3 == 0 => {
                l.remove(b % l.len());
            }
            (_, Value::Array(l)) if !l.is_empty() && a % 3 == 1 => {
                let x = l[b % l.len()].clone();
                l.push(x);
            }
            (_, Value::Array(l)) => l.push(extra),
            (_, Value::Number(x)) => {
                let x = x.as_f64().unwrap_or(0.0);
                replace = Some(match a % 5 {
                    0 => json!(x + 1.0),
                    1 => json!(x - 1.0),
                    2 => json!(x * 2.0),
                    3 => json!(-x),
                    _ => json!((x as i64).wrapping_mul(1 << 20)),
                });
            }
            _ => replace = Some(extra),
        }
        if let Some(r) = replace {
            *node = r;
        }
    }
    v
}

/// The text of a mutation of `seed`: a value mutation, sometimes with byte edits on top.
fn mutate_text(rng: &mut Rng, seed: &Value) -> String {
    let text = mutate_value(rng, seed).to_string();
    if rng.below(4) == 0 {
        String::from_utf8_lossy(&mutate_bytes(rng, text.as_bytes())).into_owned()
    } else {
        text
    }
}

/// Counts of cases that parsed and that were refused; a sweep whose cases all fail (or all
/// pass) is not reaching the parser.
#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
}

impl Tally {
    fn add<T, E>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(t) => {
                self.ok += 1;
                Some(t)
            }
            Err(_) => {
                self.err += 1;
                None
            }
        }
    }

    /// Runs one case; a panic fails the sweep, showing the input (as `input` renders it) to
    /// keep as a regression test.
    fn run<T, E>(
        &mut self,
        input: impl Fn() -> String,
        case: impl FnOnce() -> Result<T, E>,
    ) -> Option<T> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
            Ok(r) => self.add(r),
            Err(_) => panic!("a sweep case panicked on this input: {}", input()),
        }
    }

    fn check(&self, what: &str) {
        eprintln!("{what}: {} parsed, {} refused", self.ok, self.err);
        assert!(
            self.ok > 0 && self.err > 0,
            "{what}: {} ok, {} refused",
            self.ok,
            self.err
        );
    }
}

/// Keeps `bytes` as a seed of fuzz target `target` when `STOWAGE_SWEEP_SEEDS` names a folder.
fn keep_seed(target: &str, name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("STOWAGE_SWEEP_SEEDS") {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn shown(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A tiny Llama checkpoint (config and single safetensors file) in a fresh folder.
fn tiny_llama(layers: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama", layers).unwrap();
    write_from_config(dir.path(), &config, DType::F32).unwrap();
    dir
}

#[test]
fn safetensors_headers() {
    let dir = tiny_llama(2);
    let file = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header = &file[..8 + n];
    let json: Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let len = file.len() as u64;
    let path = Path::new("model.safetensors");
    assert!(parse_header(path, header, len).is_ok());
    keep_seed(
        "header",
        "tiny-llama",
        &file[..(8 + n + 64).min(file.len())],
    );

    let mut rng = Rng::new(1);
    let mut tally = Tally::default();
    for i in 0..cases(20_000) {
        let bytes = if i % 2 == 0 {
            mutate_bytes(&mut rng, header)
        } else {
            let text = mutate_text(&mut rng, &json);
            let mut b = (text.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(text.as_bytes());
            b
        };
        let file_len = match rng.below(4) {
            0 => rng.next() % (2 * len),
            1 => bytes.len() as u64,
            _ => len,
        };
        tally.run(
            || format!("{} (file length {file_len})", shown(&bytes)),
            || parse_header(path, &bytes, file_len),
        );
    }
    tally.check("safetensors headers");
}

#[test]
fn shard_indexes() {
    let dir = tiny_llama(2);
    let shard = dir.path().join("model.safetensors");
    std::fs::copy(&shard, dir.path().join("b.safetensors")).unwrap();
    let header = stowage_planner::read_header(&shard).unwrap();
    let map: serde_json::Map<String, Value> = header
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let file = ["model.safetensors", "b.safetensors"][i % 2];
            (t.name.clone(), json!(file))
        })
        .collect();
    let seed = json!({"metadata": {"total_size": 1234}, "weight_map": map});
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, seed.to_string()).unwrap();
    assert!(read_index(&index).is_ok());
    // The fuzz target's shard holds `a.weight` and `b.weight`.
    let shard = "model-00001-of-00001.safetensors";
    let fuzz_seed = json!({"metadata": {"total_size": 10}, "weight_map": {"a.weight": shard, "b.weight": shard}});
    keep_seed("index", "two-tensors", fuzz_seed.to_string().as_bytes());

    let mut rng = Rng::new(2);
    let mut tally = Tally::default();
    for _ in 0..cases(3_000) {
        let text = mutate_text(&mut rng, &seed);
        std::fs::write(&index, &text).unwrap();
        tally.run(|| text.clone(), || read_index(&index));
    }
    tally.check("shard indexes");
}

#[test]
fn size_strings() {
    let sizes = [
        "12GiB", "1.5 GB", "512", "0", "10MiB", "3 TB", "1e3KB", "0.5KiB",
    ];
    let memory = [
        "0=10GiB",
        "cpu=30GB",
        "disk=1TB",
        "mps=1GiB",
        "cpu = 1.5 GiB",
    ];
    let gpus = ["2x24GiB", "80GiB,1KiB", "2x80GiB,24GiB", "4*1GB"];
    for (i, seed) in sizes.iter().chain(&memory).chain(&gpus).enumerate() {
        keep_seed("sizes", &i.to_string(), seed.as_bytes());
    }
    let mut rng = Rng::new(3);
    let mut tally = Tally::default();
    for _ in 0..cases(60_000) {
        let (kind, seed) = match rng.below(3) {
            0 => (0, *rng.pick(&sizes)),
            1 => (1, *rng.pick(&memory)),
            _ => (2, *rng.pick(&gpus)),
        };
        let text = String::from_utf8_lossy(&mutate_bytes(&mut rng, seed.as_bytes())).into_owned();
        match kind {
            0 => tally.run(|| text.clone(), || parse_size(&text)).map(drop),
            1 => tally
                .run(|| text.clone(), || parse_max_memory(&text))
                .map(drop),
            _ => tally.run(|| text.clone(), || parse_gpus(&text)).map(drop),
        };
    }
    tally.check("size strings");
}

/// Budgets that split a tiny Llama over two planned GPUs, the CPU and the disk.
fn split(p: Pretrained) -> Pretrained {
    p.gpus(&[100 << 10, 100 << 10])
        .gpu_overhead(0)
        .max_seq_len(8)
        .max_memory(Device::Cpu, 80 << 10)
        .max_memory(Device::Disk, 1 << 30)
}

/// A plan of a tiny Llama split by [`split`], as `stowage plan --json` saves it.
fn saved_plan(dir: &Path) -> Value {
    split(Pretrained::new(dir)).plan().unwrap().to_json()
}

#[test]
fn device_maps() {
    let dir = tiny_llama(8);
    let seed = saved_plan(dir.path())["device_map"].clone();
    let devices: Vec<String> = seed
        .as_object()
        .unwrap()
        .values()
        .map(|d| d.as_str().map_or(d.to_string(), str::to_string))
        .collect();
    assert!(
        ["0", "1", "cpu", "disk"]
            .iter()
            .all(|d| devices.iter().any(|x| x == d)),
        "{seed}"
    );
    let names: Vec<String> = stowage_planner::read_header(&dir.path().join("model.safetensors"))
        .unwrap()
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect();

    keep_seed("device_map", "tiny-llama", seed.to_string().as_bytes());
    let mut rng = Rng::new(4);
    let mut tally = Tally::default();
    for _ in 0..cases(30_000) {
        let v = mutate_value(&mut rng, &seed);
        let name = &names[rng.below(names.len())];
        tally.run(
            || v.to_string(),
            || {
                DeviceMap::from_json(&v, Some(dir.path())).map(|map| {
                    let _ = map.device_of(name);
                    map.to_json()
                })
            },
        );
    }
    tally.check("device maps");

    // The maps as `--device-map` gives them to a plan of the real checkpoint.
    let mut tally = Tally::default();
    for _ in 0..cases(600) {
        let text = mutate_text(&mut rng, &seed);
        tally.run(
            || text.clone(),
            || split(Pretrained::new(dir.path()).device_map_str(text.clone())).plan(),
        );
    }
    tally.check("device maps, planned");
}

#[test]
fn configs() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seeds: Vec<Value> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    seeds.extend(["llama", "bert"].map(|m| tiny_config(m, 2).unwrap()));
    assert!(seeds.len() >= 10);
    let path = Path::new("config.json");

    for (i, seed) in seeds.iter().enumerate() {
        keep_seed("config", &i.to_string(), seed.to_string().as_bytes());
    }
    let mut rng = Rng::new(5);
    let mut tally = Tally::default();
    for _ in 0..cases(2_500) {
        let seed = rng.pick(&seeds).clone();
        let text = mutate_text(&mut rng, &seed);
        let dtype = [None, Some(DType::F16), Some(DType::F32)][rng.below(3)];
        tally.run(
            || text.clone(),
            || {
                let config = ModelConfig::from_json_str(path, &text)?;
                let _ = arch::tied_pairs(&config);
                arch::expand(&config, dtype)
            },
        );
    }
    tally.check("configs");
}

#[test]
fn saved_plans() {
    let dir = tiny_llama(8);
    let seed = saved_plan(dir.path());
    let budgets = seed["budgets"].clone();
    let options = seed["options"].clone();
    assert!(stowage::saved::budgets_from_json(&budgets).is_ok());
    assert!(stowage::saved::options_from_json(&options).is_ok());

    keep_seed("saved_plan", "tiny-llama", seed.to_string().as_bytes());
    let mut rng = Rng::new(6);
    let mut tally = Tally::default();
    for _ in 0..cases(20_000) {
        match rng.below(3) {
            0 => {
                let v = mutate_value(&mut rng, &budgets);
                tally.run(
                    || v.to_string(),
                    || stowage::saved::budgets_from_json(&v).map(drop),
                )
            }
            1 => {
                let v = mutate_value(&mut rng, &options);
                tally.run(
                    || v.to_string(),
                    || stowage::saved::options_from_json(&v).map(drop),
                )
            }
            _ => {
                let text = mutate_text(&mut rng, &seed);
                tally.run(
                    || text.clone(),
                    || stowage::saved::read_device_map(&text).map(drop),
                )
            }
        };
    }
    tally.check("saved plans, parsed");

    // The plans given back to a load's planning (`--plan plan.json`), model, budgets and
    // options included.
    let file = dir.path().join("plan.json");
    let mut tally = Tally::default();
    for _ in 0..cases(600) {
        let text = mutate_text(&mut rng, &seed);
        std::fs::write(&file, &text).unwrap();
        tally.run(
            || text.clone(),
            || {
                Pretrained::maybe(None)
                    .device_map_str(file.to_str().unwrap())
                    .plan()
            },
        );
    }
    tally.check("saved plans, planned");
}

/// A torch.save archive of a tiny Llama (written by `scripts/torch_save.py`), and where its
/// pickle lies in it.
fn torch_archive() -> (tempfile::TempDir, PathBuf, Vec<u8>, std::ops::Range<usize>) {
    let dir = tiny_llama(2);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_save.py");
    let out = dir.path().join("bin");
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("python3")
        .arg(script)
        .arg(dir.path().join("model.safetensors"))
        .arg(&out)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let path = out.join("pytorch_model.bin");
    let bytes = std::fs::read(&path).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let pickle = (0..zip.len())
        .find_map(|i| {
            let e = zip.by_index_raw(i).unwrap();
            let start = e.data_start().unwrap() as usize;
            e.name()
                .ends_with("data.pkl")
                .then(|| start..start + e.size() as usize)
        })
        .expect("a data.pkl");
    (dir, path, bytes, pickle)
}

#[test]
fn torch_pickles_and_archives() {
    let (dir, path, archive, span) = torch_archive();
    let pickle = archive[span.clone()].to_vec();
    let pkl = Path::new("data.pkl");
    assert!(stowage_planner::torch::tensors_in_pickle(pkl, &pickle).is_ok());
    assert!(stowage_planner::torch::read_archive(&path).is_ok());
    keep_seed("torch_pickle", "tiny-llama", &pickle);

    let mut rng = Rng::new(7);
    let mut tally = Tally::default();
    for _ in 0..cases(60_000) {
        let p = mutate_bytes(&mut rng, &pickle);
        tally.run(
            || shown(&p),
            || stowage_planner::torch::tensors_in_pickle(pkl, &p),
        );
    }
    tally.check("torch pickles");

    // Whole archives: edits inside the pickle (its length kept, so the zip still reads) or
    // anywhere, truncations included.
    let file = dir.path().join("mutated.bin");
    let mut tally = Tally::default();
    for _ in 0..cases(2_000) {
        let bytes = if rng.below(2) == 0 {
            mutate_bytes_in(&mut rng, &archive, span.clone(), true)
        } else {
            mutate_bytes(&mut rng, &archive)
        };
        std::fs::write(&file, &bytes).unwrap();
        tally.run(
            || shown(&bytes),
            || stowage_planner::torch::read_archive(&file),
        );
    }
    tally.check("torch archives");
}
