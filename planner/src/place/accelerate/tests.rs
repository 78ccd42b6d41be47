//! `--compat accelerate` against maps the real tools computed (`tests/fixtures/accelerate/`,
//! written by `scripts/accelerate_fixtures.py`), keys of parameterless modules included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::infer::clean;
use super::place;
use crate::budget::Budgets;
use crate::config::ModelConfig;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Error;
use crate::inventory::{Inventory, InventoryOptions};
use crate::strategy::Strategy;
use crate::tensor::{TensorInfo, TensorSource};

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/accelerate");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn device(v: &Value) -> Device {
    match v {
        Value::Number(n) => Device::Gpu(n.as_u64().unwrap() as u32),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a device: {other}"),
    }
}

/// The inventory, budgets, dtype and strategy of a fixture.
fn inputs(v: &Value) -> (Inventory, Budgets, Option<DType>, Strategy) {
    let config =
        ModelConfig::from_json_str(Path::new("fixture/config.json"), &v["config"].to_string())
            .unwrap();
    let inv = Inventory::from_config(config, &InventoryOptions::default()).unwrap();
    let overrides: Vec<(Device, u64)> = v["max_memory"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, b)| (k.parse().unwrap(), b.as_u64().unwrap()))
        .collect();
    let budgets = Budgets {
        gpus: Vec::new(),
        cpu_bytes: 0,
        disk_bytes: 1 << 40,
    }
    .with_max_memory(&overrides);
    let dtype = DType::from_user(v["dtype"].as_str().unwrap());
    let strategy = v["strategy"].as_str().unwrap().parse().unwrap();
    (inv, budgets, dtype, strategy)
}

#[test]
fn every_fixture_map_is_reproduced_exactly() {
    let all = fixtures();
    assert!(all.len() >= 20, "only {} fixtures", all.len());
    for (path, v) in all {
        let (inv, budgets, dtype, strategy) = inputs(&v);
        let got: BTreeMap<String, Device> = device_map(&inv, &budgets, dtype, strategy)
            .unwrap()
            .into_iter()
            .collect();
        let want: BTreeMap<String, Device> = v["device_map"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, d)| (k.clone(), device(d)))
            .collect();
        assert_eq!(got, want, "{}", path.display());
    }
}

#[test]
fn units_cover_every_tensor_once_and_follow_the_map() {
    for (path, v) in fixtures() {
        let (inv, budgets, dtype, strategy) = inputs(&v);
        let placed = place(&inv, &budgets, dtype, strategy).unwrap();
        let mut seen = vec![0u32; inv.tensors.len()];
        for u in &placed.units {
            for &i in &u.tensors {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{}", path.display());
        let map = device_map(&inv, &budgets, dtype, strategy).unwrap();
        for u in &placed.units {
            for &i in &u.tensors {
                let name = &inv.tensors[i].name;
                let d = map
                    .iter()
                    .filter(|(k, _)| {
                        k.is_empty() || *name == *k || name.starts_with(&format!("{k}."))
                    })
                    .max_by_key(|(k, _)| k.len())
                    .map(|e| e.1);
                assert_eq!(d, Some(u.device), "{}: {name}", path.display());
            }
        }
    }
}

#[test]
fn optimal_has_no_accelerate_equivalent() {
    let (_, v) = &fixtures()[0];
    let (inv, budgets, dtype, _) = inputs(v);
    let err = place(&inv, &budgets, dtype, Strategy::Optimal).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("no Accelerate equivalent"),
        "{err}"
    );
}

#[test]
fn unknown_architectures_use_the_inventory_order() {
    let t = |name: &str| TensorInfo {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![64],
        source: TensorSource::Config,
        tied_to: None,
    };
    let names = [
        "embed.weight",
        "layers.0.w",
        "layers.1.w",
        "layers.2.w",
        "head.weight",
    ];
    let inv = Inventory::from_tensors(names.map(t).to_vec(), None, &Default::default()).unwrap();
    // Each tensor is 256 bytes; GPU 0 keeps 256 free for the largest layer.
    let budgets = Budgets {
        gpus: Vec::new(),
        cpu_bytes: 1 << 20,
        disk_bytes: 1 << 20,
    }
    .with_max_memory(&[(Device::Gpu(0), 3 * 256)]);
    let map = device_map(&inv, &budgets, None, Strategy::Sequential).unwrap();
    let cpu = Device::Cpu;
    assert_eq!(
        map,
        [
            ("embed".to_string(), Device::Gpu(0)),
            ("layers.0".to_string(), Device::Gpu(0)),
            ("layers.1".to_string(), cpu),
            ("layers.2".to_string(), cpu),
            ("head".to_string(), cpu),
        ]
    );
    let placed = place(&inv, &budgets, None, Strategy::Sequential).unwrap();
    assert!(placed.decisions[0].contains("inventory's execution order"));
}

#[test]
fn clean_merges_two_or_more_keys_only() {
    let gpu = Device::Gpu(0);
    let mut single = vec![
        ("model.decoder".to_string(), gpu),
        ("lm_head".to_string(), Device::Cpu),
    ];
    clean(&mut single, "");
    assert_eq!(
        single[0].0, "model.decoder",
        "one key under `model.` stays as it is"
    );
    let mut two = vec![
        ("a.x".to_string(), gpu),
        ("a.y".to_string(), gpu),
        ("b".to_string(), Device::Cpu),
    ];
    clean(&mut two, "");
    assert_eq!(
        two,
        [("b".to_string(), Device::Cpu), ("a".to_string(), gpu)]
    );
    let mut all = vec![("a".to_string(), gpu), ("b".to_string(), gpu)];
    clean(&mut all, "");
    assert_eq!(all, [(String::new(), gpu)]);
}

/// The device map [`place`] reports: Accelerate's keys, after `clean_device_map`.
fn device_map(
    inv: &Inventory,
    budgets: &Budgets,
    dtype: Option<DType>,
    strategy: Strategy,
) -> crate::error::Result<Vec<(String, Device)>> {
    Ok(place(inv, budgets, dtype, strategy)?
        .device_map
        .expect("compat always sets the map"))
}
