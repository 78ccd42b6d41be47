//! Split models running: blocks on the CPU and on disk, brought in with and without prefetch,
//! against the same model on one device.

use burn_ndarray::{NdArray, NdArrayDevice};
use stowage::models::{BertConfig, BertInput, LlamaConfig, LlamaForCausalLM, token_ids};
use stowage::{
    Device, Inventory, ModuleLoadOptions, OffloadMode, Plan, SplitModel, SplitOptions, UnitSource,
};

use crate::models::{
    LLAMA, PROMPT, Tiny, inventory, max_abs_diff, minilm_dir, plan, reference, vals,
};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

/// `plan` with the blocks whose index `pick` accepts moved to `to` (`prefix.N.`).
pub(crate) fn move_blocks(
    inv: &Inventory,
    plan: &Plan,
    prefix: &str,
    to: Device,
    pick: impl Fn(usize) -> bool,
) -> Plan {
    let mut plan = plan.clone();
    for (t, d) in inv.tensors.iter().zip(plan.tensor_devices.iter_mut()) {
        let Some(rest) = t.name.strip_prefix(prefix) else {
            continue;
        };
        let n: usize = rest.split('.').next().unwrap().parse().unwrap();
        if pick(n) {
            *d = to;
        }
    }
    plan
}

fn whole_llama(dir: &std::path::Path, inv: &Inventory) -> LlamaForCausalLM<B> {
    let config = LlamaConfig::from_file(&dir.join("config.json")).unwrap();
    let model = config.init::<B>(&DEV);
    let options = ModuleLoadOptions {
        renames: model.renames(),
        ..Default::default()
    };
    stowage::load(model, inv, &plan(inv), &DEV, &options)
        .unwrap()
        .0
}

pub(crate) const DEEP: Tiny = Tiny {
    layers: 6,
    tied: true,
    ..LLAMA
};

#[test]
fn llama_split_over_cpu_and_disk_matches_one_device_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    DEEP.write(dir.path());
    let inv = inventory(dir.path());
    let config = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap();
    let whole = whole_llama(dir.path(), &inv);
    let ids = token_ids::<B>(&[&PROMPT], &DEV);
    let want = vals(whole.forward(ids.clone()));
    let want_tokens = whole.generate_greedy(&PROMPT, 5);

    // Odd layers on disk.
    let split_plan = move_blocks(&inv, &plan(&inv), "model.layers.", Device::Disk, |n| {
        n % 2 == 1
    });
    for prefetch in [0, 1, 3] {
        let options = SplitOptions {
            prefetch,
            ..Default::default()
        };
        let (split, report) =
            SplitModel::<B, _>::load(|d| config.init::<B>(d), &inv, &split_plan, &DEV, &options)
                .unwrap();
        assert_eq!(report.outer, Device::Cpu);
        assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
        // Embeddings, final norm (the head is tied) and three resident layers of 9 tensors.
        assert_eq!(report.loaded, 2 + 3 * 9 + 1, "{report:?}");
        let (logits, trace) = split.forward(&ids).unwrap();
        assert_eq!(vals(logits), want, "prefetch {prefetch}");
        let units: Vec<(&str, UnitSource)> = trace
            .units
            .iter()
            .map(|u| (u.name.as_str(), u.source))
            .collect();
        assert_eq!(units.len(), 8);
        assert_eq!(units[1], ("model.layers.0", UnitSource::Resident));
        assert_eq!(units[2], ("model.layers.1", UnitSource::Disk));
        assert_eq!(units[7].0, "finish");
        assert!(trace.units.iter().all(|u| u.ran_on == Device::Cpu));

        // Greedy generation through the split model gives the same tokens.
        let mut tokens = PROMPT.to_vec();
        for _ in 0..5 {
            let (logits, _) = split.forward(&token_ids::<B>(&[&tokens], &DEV)).unwrap();
            let [_, seq, vocab] = logits.dims();
            let last = logits
                .slice([0..1, seq - 1..seq, 0..vocab])
                .reshape([vocab]);
            tokens.push(last.argmax(0).into_scalar() as u32);
        }
        assert_eq!(tokens[PROMPT.len()..], want_tokens);
    }
}

#[test]
fn a_block_split_between_devices_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    LLAMA.write(dir.path());
    let inv = inventory(dir.path());
    let config = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap();
    let mut bad = plan(&inv);
    let k = inv.find("model.layers.1.mlp.up_proj.weight").unwrap();
    bad.tensor_devices[k] = Device::Disk;
    let err = SplitModel::<B, _>::load(
        |d| config.init::<B>(d),
        &inv,
        &bad,
        &DEV,
        &SplitOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.layers.1") && err.contains("mlp.up_proj") && err.contains("one device"),
        "{err}"
    );
}

#[test]
fn minilm_split_over_cpu_and_disk_with_prefetch_reproduces_transformers() {
    let dir = minilm_dir();
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let inv = inventory(&dir);
    // Layers 2..6 on disk, read in two ahead.
    let split_plan = move_blocks(&inv, &plan(&inv), "encoder.layer.", Device::Disk, |n| {
        n >= 2
    });
    let options = SplitOptions {
        prefetch: 2,
        mode: OffloadMode::InPlace,
        ..Default::default()
    };
    let (split, report) =
        SplitModel::<B, _>::load(|d| config.init::<B>(d), &inv, &split_plan, &DEV, &options)
            .unwrap();
    assert_eq!(report.unexpected, ["embeddings.position_ids"]);
    let disk = report
        .blocks
        .iter()
        .filter(|b| b.2 == UnitSource::Disk)
        .count();
    assert_eq!(disk, 4);
    let mut worst = 0.0f64;
    for c in reference() {
        let types = token_ids::<B>(&[&c.types], &DEV);
        let input = BertInput::from_ids(&c.ids, &DEV).with_token_type_ids(types);
        let (out, trace) = split.forward(&input).unwrap();
        let diff = max_abs_diff(&vals(out.last_hidden_state), &c.hidden);
        assert!(diff < 1e-4, "{}: max abs diff {diff}", c.name);
        worst = worst.max(diff);
        assert_eq!(
            trace
                .units
                .iter()
                .filter(|u| u.source == UnitSource::Disk)
                .count(),
            4
        );
    }
    eprintln!("MiniLM split over cpu + disk: max abs diff {worst:.2e}");
}

#[test]
fn cli_runs_minilm_split_over_cpu_and_disk() {
    use crate::fixtures::{assert_clean_error, s, stdout, stowage};
    let dir = minilm_dir();
    let case = reference()
        .into_iter()
        .find(|c| c.types.iter().all(|&t| t == 0))
        .expect("a single-segment case");
    let ids: Vec<String> = case.ids.iter().map(u32::to_string).collect();
    let ids = ids.join(",");
    // 30 MB of RAM holds the embeddings but no layer: every layer is read from disk.
    let o = stowage(&[
        "run",
        s(&dir),
        "--ids",
        &ids,
        "--max-memory",
        "cpu=30MB",
        "--max-seq-len",
        "0",
        "--prefetch",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::fixtures::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["architecture"], "BertModel");
    let shape: Vec<u64> = v["output"]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(shape, [1, case.ids.len() as u64, 384]);
    let got: Vec<f32> = v["output"]["values"][0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let diff = max_abs_diff(&got, &case.hidden);
    assert!(diff < 1e-4, "max abs diff {diff}");
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 8);
    assert!(
        units[1..7]
            .iter()
            .all(|u| u["weights"] == "disk" && u["ran_on"] == "cpu"),
        "{units:?}"
    );

    let o = stowage(&["run", s(&dir), "--ids", &ids, "--generate", "3"]);
    assert_clean_error(&o, &["--generate", "encoder"]);
}

#[test]
fn cli_generates_what_the_whole_model_generates() {
    use crate::fixtures::{s, stdout, stowage};
    let dir = tempfile::tempdir().unwrap();
    DEEP.write(dir.path());
    let inv = inventory(dir.path());
    let want = whole_llama(dir.path(), &inv).generate_greedy(&PROMPT, 4);
    let ids: Vec<String> = PROMPT.iter().map(u32::to_string).collect();
    let total = inv.total_bytes(None);
    let cpu = format!("cpu={}B", total / 2);
    let o = stowage(&[
        "run",
        s(dir.path()),
        "--ids",
        &ids.join(","),
        "--generate",
        "4",
        "--max-memory",
        &cpu,
        "--max-seq-len",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::fixtures::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got: Vec<u32> = v["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, want);
    let disk = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["weights"] == "disk")
        .count();
    assert!(
        disk > 0,
        "half the RAM puts some layers on disk: {}",
        v["units"]
    );
}

#[test]
fn cli_run_refuses_architectures_it_does_not_know() {
    use crate::fixtures::{assert_clean_error, s, stowage};
    let dir = tempfile::tempdir().unwrap();
    crate::load::write_valued(
        &crate::fixtures::p(dir.path(), "model.safetensors"),
        &crate::load::llama_valued(1, safetensors::Dtype::F32),
    );
    let o = stowage(&["run", s(dir.path()), "--ids", "1,2"]);
    assert_clean_error(&o, &["no config.json"]);
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "gpt2", "n_layer": 1}"#,
    )
    .unwrap();
    let o = stowage(&["run", s(dir.path()), "--ids", "1,2"]);
    assert_clean_error(&o, &["gpt2"]);
}

#[test]
#[cfg(feature = "wgpu")]
fn cli_runs_on_two_wgpu_gpus_with_upload() {
    use crate::fixtures::{s, stdout, stowage};
    let dir = tempfile::tempdir().unwrap();
    DEEP.write(dir.path());
    let inv = inventory(dir.path());
    let want = whole_llama(dir.path(), &inv).generate_greedy(&PROMPT, 3);
    let ids: Vec<String> = PROMPT.iter().map(u32::to_string).collect();
    let total = inv.total_bytes(None);
    // Two GPUs of a quarter each, the CPU another quarter, the rest on disk.
    let gpus = format!("2x{}B", total / 4);
    let cpu = format!("cpu={}B", total / 4);
    let o = stowage(&[
        "run",
        s(dir.path()),
        "--ids",
        &ids.join(","),
        "--generate",
        "3",
        "--gpus",
        &gpus,
        "--max-memory",
        &cpu,
        "--max-seq-len",
        "0",
        "--gpu-overhead",
        "0",
        "--strategy",
        "sequential",
        "--backend",
        "wgpu",
        "--offload-mode",
        "upload",
        "--verify",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::fixtures::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // `--verify` proved what was loaded onto the two GPUs: the embedding and their layers.
    assert!(v["verified"].as_u64().unwrap() > 1, "{}", v["verified"]);
    let got: Vec<u32> = v["generated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    // lavapipe and burn-ndarray may round differently; greedy tokens are robust to that.
    assert_eq!(got, want);
    let units = v["units"].as_array().unwrap();
    let ran: Vec<(String, String)> = units
        .iter()
        .map(|u| {
            (
                u["ran_on"].to_string(),
                u["weights"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        ran.iter().any(|r| r.0 == "1"),
        "some unit runs on GPU 1: {ran:?}"
    );
    assert!(
        ran.iter().any(|r| r.1 == "disk" && r.0 == "0")
            || ran.iter().any(|r| r.1 == "cpu" && r.0 == "0"),
        "offloaded units are uploaded to GPU 0: {ran:?}"
    );
}
