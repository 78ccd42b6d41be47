//! Property tests of the invariants every strategy keeps.

use proptest::prelude::*;

use crate::budget::Budgets;
use crate::device::Device;
use crate::dtype::DType;
use crate::inventory::{Inventory, InventoryOptions};
use crate::placement::{Plan, PlanOptions, plan};
use crate::runtime::RuntimeOptions;
use crate::strategy::Strategy as Placement;
use crate::tensor::{TensorInfo, TensorSource};

fn tensor(name: String, elems: u64, dtype: DType) -> TensorInfo {
    TensorInfo {
        name,
        dtype,
        shape: vec![elems],
        source: TensorSource::Config,
        tied_to: None,
    }
}

/// A decoder-like model: embedding, `layers` blocks of two or three tensors, norm, head
/// (tied to the embedding or not), with sizes drawn at random.
fn model() -> impl Strategy<Value = Inventory> {
    (
        1u64..400,
        proptest::collection::vec((1u64..300, 1u64..300, 0u64..50), 1..12),
        1u64..20,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(embed, layers, norm, tied, bf16)| {
            let dt = if bf16 { DType::BF16 } else { DType::F32 };
            let mut t = vec![tensor("model.embed_tokens.weight".into(), embed, dt)];
            for (i, &(a, b, c)) in layers.iter().enumerate() {
                t.push(tensor(format!("model.layers.{i}.attn.weight"), a, dt));
                t.push(tensor(format!("model.layers.{i}.mlp.weight"), b, dt));
                if c > 0 {
                    t.push(tensor(format!("model.layers.{i}.mlp.ids"), c, DType::I64));
                }
            }
            t.push(tensor("model.norm.weight".into(), norm, dt));
            let mut head = tensor("lm_head.weight".into(), embed, dt);
            if tied {
                head.tied_to = Some("model.embed_tokens.weight".into());
            }
            t.push(head);
            Inventory::from_tensors(t, None, &InventoryOptions::default()).unwrap()
        })
}

fn budgets() -> impl Strategy<Value = Budgets> {
    (
        proptest::collection::vec(0u64..3000, 0..4),
        0u64..4000,
        2000u64..20000,
    )
        .prop_map(|(gpus, cpu, disk)| {
            Budgets {
                gpus: Vec::new(),
                cpu_bytes: cpu,
                disk_bytes: disk,
            }
            .with_planned_gpus(&gpus)
        })
}

fn check_invariants(inv: &Inventory, budgets: &Budgets, p: &Plan) {
    // Every tensor placed exactly once.
    let mut seen = vec![0u32; inv.tensors.len()];
    for u in &p.units {
        for &i in &u.tensors {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "placed counts {seen:?}");
    // No device over budget, every line item included.
    for d in &p.devices {
        assert!(d.committed_bytes() <= d.budget_bytes, "{d:?}");
        assert_eq!(Some(d.budget_bytes), budgets.get(d.device));
    }
    // Weights add up to the model's size when every device holds them as sized.
    if p.options.cpu_float.is_none() && p.options.gpu_float.is_none() {
        assert_eq!(
            p.devices.iter().map(|d| d.used_bytes).sum::<u64>(),
            p.total_bytes
        );
    }
    // No-split units whole.
    inv.root.walk(&mut |m| {
        if m.no_split {
            let devs: Vec<Device> = m
                .all_tensors()
                .iter()
                .map(|&i| p.tensor_devices[i])
                .collect();
            assert!(
                devs.windows(2).all(|w| w[0] == w[1]),
                "{} split: {devs:?}",
                m.path
            );
        }
    });
    // Tied tensors with their owner.
    for (i, t) in inv.tensors.iter().enumerate() {
        if let Some(owner) = &t.tied_to {
            assert_eq!(
                p.tensor_devices[i],
                p.tensor_devices[inv.find(owner).unwrap()]
            );
        }
    }
    // The device map covers every tensor with its device.
    let map = p.device_map(inv);
    for (i, t) in inv.tensors.iter().enumerate() {
        assert_eq!(
            map.device_of(&t.name),
            Some(p.tensor_devices[i]),
            "{}",
            t.name
        );
    }
}

const STRATEGIES: [Placement; 4] = [
    Placement::Sequential,
    Placement::Balanced,
    Placement::BalancedLow0,
    Placement::Optimal,
];

fn options(strategy: Placement, overhead: u64) -> PlanOptions {
    PlanOptions {
        strategy,
        runtime: RuntimeOptions {
            gpu_overhead_bytes: overhead,
            ..RuntimeOptions::off()
        },
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn every_strategy_keeps_invariants(
        inv in model(), budgets in budgets(), narrow in any::<bool>(), overhead in 0u64..200,
    ) {
        for strategy in STRATEGIES {
            let opts = PlanOptions { dtype: narrow.then_some(DType::F16), ..options(strategy, overhead) };
            if let Ok(p) = plan(&inv, &budgets, &opts) {
                check_invariants(&inv, &budgets, &p);
            }
        }
    }

    #[test]
    fn more_memory_never_means_more_offload(
        inv in model(), budgets in budgets(), which in 0usize..5, extra in 1u64..2000,
        overhead in 0u64..200,
    ) {
        let mut bigger = budgets.clone();
        match which {
            0 => bigger.cpu_bytes += extra,
            1 => bigger.disk_bytes += extra,
            k => match bigger.gpus.get_mut(k - 2) {
                Some(g) => g.bytes += extra,
                None => bigger.cpu_bytes += extra,
            },
        }
        // Balanced shares move with every GPU's budget, so only the strategies whose GPU
        // capacities are the budgets themselves promise this.
        for strategy in STRATEGIES {
            let opts = options(strategy, overhead);
            let Ok(before) = plan(&inv, &budgets, &opts) else { continue };
            let after = plan(&inv, &bigger, &opts).expect("a plan that fit still fits with more memory");
            prop_assert!(after.offloaded_bytes() <= before.offloaded_bytes(),
                "{strategy}: offload grew from {} to {}", before.offloaded_bytes(), after.offloaded_bytes());
            prop_assert!(after.used_on(Device::Disk) <= before.used_on(Device::Disk), "{strategy}");
        }
    }

    #[test]
    fn optimal_is_never_worse(inv in model(), budgets in budgets(), overhead in 0u64..200) {
        let Ok(best) = plan(&inv, &budgets, &options(Placement::Optimal, overhead)) else { return Ok(()) };
        for strategy in [Placement::Sequential, Placement::Balanced, Placement::BalancedLow0] {
            let Ok(other) = plan(&inv, &budgets, &options(strategy, overhead)) else { continue };
            prop_assert!(best.offloaded_bytes() <= other.offloaded_bytes(), "{strategy} offloads less");
            if best.offloaded_bytes() == other.offloaded_bytes() {
                let gpu_max = |p: &Plan| p.devices.iter().filter(|d| d.device.is_gpu())
                    .map(|d| d.used_bytes).max().unwrap_or(0);
                if budgets.gpus.windows(2).all(|w| w[0].bytes == w[1].bytes) {
                    prop_assert!(gpu_max(&best) <= gpu_max(&other),
                        "{strategy}: largest GPU load {} < optimal's {}", gpu_max(&other), gpu_max(&best));
                }
                prop_assert!(best.max_gpu_load() <= other.max_gpu_load() + 1e-12,
                    "{strategy}: relative load {} < optimal's {}", other.max_gpu_load(), best.max_gpu_load());
            }
        }
    }
}

/// Bytes of the tensors `p` puts on `device`, floats as `float`, the rest as stored.
fn held_on(inv: &Inventory, p: &Plan, device: Device, float: DType) -> u64 {
    inv.tensors
        .iter()
        .zip(&p.tensor_devices)
        .filter(|(t, d)| **d == device && t.tied_to.is_none())
        .map(|(t, _)| {
            let dtype = if t.dtype.is_float() { float } else { t.dtype };
            dtype.bytes_for(t.elems()).unwrap()
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// GPUs holding floats wider (f32 from bf16) or narrower (f16 from f32) than stored: no
    /// device goes over budget, and each GPU's weights are its tensors as held.
    #[test]
    fn gpu_float_keeps_invariants(
        inv in model(), budgets in budgets(), wide in any::<bool>(), overhead in 0u64..200,
    ) {
        let gpu_float = if wide { DType::F32 } else { DType::F16 };
        for strategy in STRATEGIES {
            let opts = PlanOptions {
                gpu_float: Some(gpu_float),
                cpu_float: Some(DType::F32),
                ..options(strategy, overhead)
            };
            let Ok(p) = plan(&inv, &budgets, &opts) else { continue };
            check_invariants(&inv, &budgets, &p);
            for d in p.devices.iter().filter(|d| d.device.is_gpu()) {
                let held = held_on(&inv, &p, d.device, gpu_float);
                prop_assert_eq!(d.used_bytes, held, "{}", strategy);
            }
            prop_assert_eq!(p.used_on(Device::Cpu), held_on(&inv, &p, Device::Cpu, DType::F32));
        }
    }
}

#[test]
fn gpu_float_f32_sizes_a_bf16_model_twice_on_gpus_only() {
    let t = |n: &str| tensor(n.into(), 100, DType::BF16);
    let names = ["e.weight", "layers.0.w", "layers.1.w", "head.weight"];
    let inv =
        Inventory::from_tensors(names.map(t).to_vec(), None, &InventoryOptions::default()).unwrap();
    // 800 bytes as stored: fits the GPU; 1600 as f32: two tensors stay (with 400 kept to
    // bring one back in), two go to cpu, still bf16 there.
    let budgets = Budgets {
        gpus: Vec::new(),
        cpu_bytes: 1000,
        disk_bytes: 0,
    }
    .with_planned_gpus(&[1200]);
    let stored = plan(&inv, &budgets, &options(Placement::Sequential, 0)).unwrap();
    assert_eq!(stored.used_on(Device::Gpu(0)), 800);
    assert_eq!(stored.offloaded_bytes(), 0);
    let opts = PlanOptions {
        gpu_float: Some(DType::F32),
        ..options(Placement::Sequential, 0)
    };
    let wide = plan(&inv, &budgets, &opts).unwrap();
    assert_eq!(wide.options.gpu_float, Some(DType::F32));
    assert_eq!(wide.used_on(Device::Gpu(0)), 800, "two tensors as f32");
    assert_eq!(wide.used_on(Device::Cpu), 400, "two tensors as bf16");
    assert_eq!(wide.total_bytes, 800, "the model as sized by dtype");
    // Accelerate sizes its own way, and says the option was ignored.
    let opts = PlanOptions {
        gpu_float: Some(DType::F32),
        compat: crate::strategy::Compat::Accelerate,
        ..options(Placement::Sequential, 0)
    };
    let acc = plan(&inv, &budgets, &opts).unwrap();
    assert_eq!(acc.options.gpu_float, None);
    assert!(
        acc.notes.iter().any(|n| n.contains("--gpu-float f32")),
        "{:?}",
        acc.notes
    );
}

#[test]
fn reserve_only_when_something_is_offloaded() {
    let t = |n: &str| tensor(n.into(), 100, DType::F32);
    let names = ["e.weight", "layers.0.w", "layers.1.w", "head.weight"];
    let inv =
        Inventory::from_tensors(names.map(t).to_vec(), None, &InventoryOptions::default()).unwrap();
    let fits = Budgets {
        gpus: Vec::new(),
        cpu_bytes: 0,
        disk_bytes: 0,
    }
    .with_planned_gpus(&[1600]);
    let p = plan(&inv, &fits, &options(Placement::Sequential, 0)).unwrap();
    assert_eq!(p.devices[0].reserved_bytes, 0);
    assert_eq!(
        p.offloaded_bytes(),
        0,
        "exactly fits: Accelerate would have offloaded here"
    );
    let tight = Budgets {
        gpus: Vec::new(),
        cpu_bytes: 1000,
        disk_bytes: 0,
    }
    .with_planned_gpus(&[1500]);
    let p = plan(&inv, &tight, &options(Placement::Sequential, 0)).unwrap();
    assert_eq!(p.devices[0].reserved_bytes, 400);
    assert_eq!(p.devices[0].used_bytes, 800);
    assert_eq!(p.used_on(Device::Cpu), 800);
}
