//! Loading onto a GPU: how fast a bf16 checkpoint gets there as f32 when the GPU widens it
//! (the checkpoint's bytes cross the bus) and when the host does (twice the bytes cross), side
//! by side in one run, against copying the same bytes with nothing else to do (from pageable
//! memory, and from pinned memory where the runtime has it: the limit); and int8 quantization at
//! load, on the GPU from the checkpoint's bytes vs on the host.
//!
//! Run on an NVIDIA machine: `cargo bench --features cuda --bench gpu_load`. With
//! `--features wgpu` it runs on any Vulkan device; on Mesa's lavapipe (no GPU: the "device" is
//! the CPU) the figures only show that every path runs, not a bus. `STOWAGE_BENCH_GB` sets the
//! checkpoint size (default 2), `STOWAGE_BENCH_RUNS` the passes (default 3, the median is
//! reported, after one warm-up pass of each). The checkpoint is a llama-shaped bf16 one
//! (`stowage::synthetic`) in the page cache (read once first), so the disk is out of it.
//! Results go to stdout as markdown and to `target/bench/gpu_load.json`.
//!
//! Each load is `stowage::load_store` onto GPU 0 of everything, then a device sync, timed
//! together; the store is dropped (and the device synced) before the next. "Widened / quantized
//! on the host" are the same loads with targets that carry no device transforms, which is what
//! the loader does for a backend without them.

fn main() {
    // `cargo test` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    gpu::run();
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    eprintln!("gpu_load needs a GPU build: cargo bench --features cuda (or wgpu) --bench gpu_load");
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
#[path = "common/env.rs"]
mod env;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod gpu {
    use std::path::Path;
    use std::time::Instant;

    use burn::prelude::Backend;
    use burn::tensor::Bytes;
    use cubecl::Runtime;

    use crate::env::{env_or, median};
    use stowage::planner::{GpuBudget, InventoryOptions, Quantize, RuntimeOptions};
    use stowage::{
        Budgets, DType, Device, DispatchDevice, GpuBackend, Inventory, LoadOptions, PlanOptions,
        Strategy, Targets,
    };

    /// One GPU: CUDA's first when built with it and a driver sees one, else wgpu's default.
    fn targets() -> (Targets<GpuBackend>, &'static str) {
        #[cfg(feature = "cuda")]
        match Targets::<GpuBackend>::cuda() {
            Ok(mut t) => {
                t.gpus.truncate(1);
                return (t, "cuda");
            }
            Err(e) => eprintln!("no CUDA GPU ({e})"),
        }
        #[cfg(feature = "wgpu")]
        return (Targets::<GpuBackend>::wgpu_first(1).expect("wgpu"), "wgpu");
        #[allow(unreachable_code)]
        {
            panic!("no GPU: build with --features wgpu to run on a Vulkan device")
        }
    }

    /// The same GPU without device transforms: the loader converts on the host.
    fn host_only(t: &Targets<GpuBackend>) -> Targets<GpuBackend> {
        let mut plain = Targets::<GpuBackend>::cpu(t.cpu.clone());
        plain.gpus = t.gpus.clone();
        plain
    }

    /// Everything on GPU 0, but tensors larger than it allocates at once (`max`: wgpu's
    /// buffer limit, 128 MiB on lavapipe), which go to the CPU.
    fn plan(inv: &Inventory, quantize: Quantize, max: u64) -> stowage::Plan {
        let budgets = Budgets {
            gpus: vec![GpuBudget {
                index: 0,
                name: "gpu 0".into(),
                bytes: 1 << 50,
                present: false,
            }],
            cpu_bytes: 0,
            disk_bytes: 0,
        };
        let opts = PlanOptions {
            strategy: Strategy::Sequential,
            runtime: RuntimeOptions::off(),
            gpu_float: Some(DType::F32),
            quantize,
            ..Default::default()
        };
        let mut plan = stowage::plan(inv, &budgets, &opts).expect("plan");
        assert!(plan.tensor_devices.iter().all(|&d| d == Device::Gpu(0)));
        for (t, d) in inv.tensors.iter().zip(plan.tensor_devices.iter_mut()) {
            if held_bytes(quantize, t) > max {
                *d = Device::Cpu;
            }
        }
        plan
    }

    /// Bytes `t` takes on the GPU: quantized, or f32 (`--gpu-float f32`; the synthetic
    /// checkpoint holds floats only).
    fn held_bytes(quantize: Quantize, t: &stowage::planner::TensorInfo) -> u64 {
        if quantize.applies_to(t) {
            quantize.tensor_bytes(t, None)
        } else {
            4 * t.elems()
        }
    }

    /// Bytes of the GPU's tensors as stored in the file, and as the GPU holds them.
    fn gpu_bytes(inv: &Inventory, plan: &stowage::Plan) -> (u64, u64) {
        inv.tensors
            .iter()
            .zip(&plan.tensor_devices)
            .filter(|(_, d)| **d == Device::Gpu(0))
            .map(|(t, _)| {
                let held = held_bytes(plan.options.quantize, t);
                (t.stored_bytes(), held)
            })
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
    }

    /// Seconds to load `plan` onto `targets` and sync, with what the load reported.
    fn load(
        inv: &Inventory,
        plan: &stowage::Plan,
        targets: &Targets<GpuBackend>,
    ) -> (f64, stowage::LoadReport) {
        let gpu = targets.gpus[0].clone();
        let started = Instant::now();
        let (store, report) =
            stowage::load_store::<GpuBackend>(inv, plan, targets.clone(), &LoadOptions::default())
                .expect("load");
        GpuBackend::sync(&gpu).expect("sync");
        let seconds = started.elapsed().as_secs_f64();
        drop(store);
        GpuBackend::sync(&gpu).expect("sync");
        (seconds, report)
    }

    /// Seconds to copy every `(bytes)` buffer to the device and sync: pageable host memory,
    /// or first moved into the runtime's pinned staging memory (not timed) when `pinned` and
    /// the runtime has it. Returns whether the copies were from pinned memory.
    fn copy<R: Runtime>(device: &R::Device, buffers: &[Vec<u8>], pinned: bool) -> (f64, bool) {
        let client = R::client(device);
        let mut staged: Vec<Bytes> = buffers
            .iter()
            .map(|b| Bytes::from_bytes_vec(b.clone()))
            .collect();
        if pinned {
            client.staging(staged.iter_mut(), false);
        }
        let was_pinned = staged
            .iter()
            .all(|b| b.property() == burn::tensor::AllocationProperty::Pinned);
        let started = Instant::now();
        let handles: Vec<_> = staged.into_iter().map(|b| client.create(b)).collect();
        client.flush().expect("flush");
        cubecl::future::block_on(client.sync()).expect("sync");
        let seconds = started.elapsed().as_secs_f64();
        drop(handles);
        (seconds, was_pinned)
    }

    fn copy_on(device: &DispatchDevice, buffers: &[Vec<u8>], pinned: bool) -> (f64, bool) {
        match device {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(d) => copy::<cubecl::cuda::CudaRuntime>(d, buffers, pinned),
            #[cfg(feature = "wgpu")]
            DispatchDevice::Wgpu(d) => copy::<cubecl::wgpu::WgpuRuntime>(d, buffers, pinned),
            other => panic!("not a GPU: {other:?}"),
        }
    }

    /// The checkpoint's tensors' bytes, in buffers of `chunk` bytes (as the copy runs send
    /// them).
    fn read_buffers(dir: &Path, chunk: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).expect("read");
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            for chunk in bytes[8 + header..].chunks(chunk) {
                out.push(chunk.to_vec());
            }
        }
        out
    }

    pub fn run() {
        let gb: f64 = env_or("STOWAGE_BENCH_GB", 2.0);
        let runs: usize = env_or("STOWAGE_BENCH_RUNS", 3).max(1);
        let (targets, runtime) = targets();
        let plain = host_only(&targets);
        let gpu = targets.gpus[0].clone();
        eprintln!("gpu_load: {gb} GB bf16 checkpoint onto {runtime} ({gpu:?}), {runs} runs");

        let dir = tempfile::tempdir().expect("temp dir");
        stowage::synthetic::write_llama(dir.path(), (gb * 1e9) as u64, DType::BF16)
            .expect("checkpoint");
        use stowage::DeviceTransforms;
        let max = GpuBackend::max_allocation(&gpu).unwrap_or(u64::MAX);
        // Also puts the files in the page cache.
        let buffers = read_buffers(dir.path(), max.min(256 << 20) as usize);
        let copied: u64 = buffers.iter().map(|b| b.len() as u64).sum();
        let inv = Inventory::from_spec(dir.path().to_str().unwrap(), &InventoryOptions::default())
            .expect("inventory");
        let f32_plan = plan(&inv, Quantize::None, max);
        let int8 = Quantize::Int8 {
            group: Quantize::DEFAULT_GROUP,
        };
        let int8_plan = plan(&inv, int8, max);
        let (file_bytes, f32_bytes) = gpu_bytes(&inv, &f32_plan);
        let (_, int8_bytes) = gpu_bytes(&inv, &int8_plan);
        let on_cpu = f32_plan
            .tensor_devices
            .iter()
            .filter(|&&d| d == Device::Cpu)
            .count();
        if on_cpu > 0 {
            eprintln!(
                "  {on_cpu} tensors larger than the device allocates at once ({}) load onto the CPU",
                stowage::format_bytes(max)
            );
        }

        // (name, the run, bytes crossing the bus, checkpoint bytes it brings).
        type Run<'a> = (&'a str, Box<dyn Fn() -> (f64, String) + 'a>, u64, u64);
        let rows: Vec<Run> = vec![
            (
                "bf16 → f32, widened on the GPU",
                Box::new(|| {
                    let (s, r) = load(&inv, &f32_plan, &targets);
                    (s, format!("{} widened on the device", r.widened_on_device))
                }),
                file_bytes,
                file_bytes,
            ),
            (
                "bf16 → f32, widened on the host",
                Box::new(|| {
                    let (s, r) = load(&inv, &f32_plan, &plain);
                    assert_eq!(r.widened_on_device, 0);
                    (s, "f32 crosses".into())
                }),
                f32_bytes,
                file_bytes,
            ),
            (
                "bf16 → int8 (linear weights) + f32 (rest), on the GPU",
                Box::new(|| {
                    let (s, r) = load(&inv, &int8_plan, &targets);
                    let on = r.quantized.iter().filter(|q| q.on_device).count();
                    (
                        s,
                        format!("{on} of {} quantized on the device", r.quantized.len()),
                    )
                }),
                file_bytes,
                file_bytes,
            ),
            (
                "bf16 → int8 (linear weights) + f32 (rest), on the host",
                Box::new(|| {
                    let (s, r) = load(&inv, &int8_plan, &plain);
                    assert!(r.quantized.iter().all(|q| !q.on_device));
                    (s, "int8 + scales cross".into())
                }),
                int8_bytes,
                file_bytes,
            ),
            (
                "copy the checkpoint's bytes (pageable)",
                Box::new(|| {
                    let (s, _) = copy_on(&gpu, &buffers, false);
                    (s, "".into())
                }),
                copied,
                copied,
            ),
            (
                "copy the checkpoint's bytes (pinned: the limit)",
                Box::new(|| {
                    let (s, pinned) = copy_on(&gpu, &buffers, true);
                    let note = if pinned {
                        ""
                    } else {
                        "no pinned memory on this runtime: pageable"
                    };
                    (s, note.into())
                }),
                copied,
                copied,
            ),
        ];

        let mut table = Vec::new();
        for (name, run, crossing, basis) in &rows {
            let _ = run(); // warm-up: kernels compiled, allocator pools grown
            let mut times = Vec::with_capacity(runs);
            let mut note = String::new();
            for _ in 0..runs {
                let (s, n) = run();
                times.push(s);
                note = n;
            }
            let s = median(times);
            eprintln!("  {name}: {s:.3} s");
            table.push((name.to_string(), s, *crossing, note, *basis));
        }

        println!(
            "\nbf16 checkpoint, {:.2} GB of tensors for the GPU ({on_cpu} more on the CPU), onto \
             {runtime} ({gpu:?}); medians of {runs} runs\n",
            file_bytes as f64 / 1e9
        );
        println!("| run | s | checkpoint GB/s | bytes crossing | note |");
        println!("|---|---:|---:|---:|---|");
        for (name, s, crossing, note, basis) in &table {
            println!(
                "| {name} | {s:.3} | {:.2} | {} | {note} |",
                *basis as f64 / s / 1e9,
                stowage::format_bytes(*crossing)
            );
        }
        let json = serde_json::json!({
            "runtime": runtime,
            "device": format!("{gpu:?}"),
            "file_bytes": file_bytes,
            "runs": runs,
            "rows": table.iter().map(|(n, s, c, note, basis)| serde_json::json!({
                "run": n, "seconds": s, "checkpoint_gbps": *basis as f64 / s / 1e9,
                "bytes_crossing": c, "note": note,
            })).collect::<Vec<_>>(),
        });
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&out).expect("target/bench");
        std::fs::write(
            out.join("gpu_load.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .expect("write");
    }
}
