//! `from_pretrained(device_map="auto")` in Rust: load a local checkpoint with a CPU budget that
//! forces part of it onto disk, run one forward pass, print the load report.
//!
//! ```text
//! cargo run --release --example from_pretrained -- [MODEL_DIR] [CPU_BUDGET]
//! ```
//!
//! MODEL_DIR is a folder with `config.json` and safetensors weights of a BERT or Llama-family
//! model (without one, a tiny Llama is written to a temporary folder first). CPU_BUDGET
//! defaults to a third of the checkpoint, so the rest is planned on disk and read block by
//! block as the forward pass reaches it.

use burn_ndarray::{NdArray, NdArrayDevice};
use stowage::models::{BertInput, token_ids};
use stowage::{AutoModel, DType, Device, Pretrained, format_bytes};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let temp = tempfile::tempdir()?;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let config = stowage::synthetic::tiny_config("llama", 8).expect("llama");
            stowage::synthetic::write_from_config(temp.path(), &config, DType::F32)?;
            println!("wrote a tiny Llama to {}", temp.path().display());
            temp.path().to_path_buf()
        }
    };
    let cpu = NdArrayDevice::Cpu;

    // Plan once to learn the model's size, then give the CPU a third of it.
    let pretrained = Pretrained::new(&dir).max_seq_len(16);
    let budget = match args.next() {
        Some(b) => stowage::parse_size(&b)?,
        None => pretrained.plan()?.checkpoint_bytes() / 3,
    };
    let planned = pretrained
        .max_memory(Device::Cpu, budget)
        .offload_folder(temp.path().join("offload"))
        .plan()?;
    println!(
        "{}: {} of weights, cpu budget {}",
        planned.spec,
        format_bytes(planned.plan.total_bytes),
        format_bytes(budget)
    );

    let (model, report) = planned.load_auto::<NdArray>(&cpu)?;
    println!(
        "loaded {} tensors in {:.2} s ({} read); peak RSS {}",
        report.loaded,
        report.seconds,
        format_bytes(report.bytes_read),
        format_bytes(report.memory.peak_bytes)
    );
    for d in report.devices.iter().filter(|d| d.planned_bytes > 0) {
        println!(
            "  {:<5} planned {:>12}  loaded {:>12}",
            d.device.to_string(),
            format_bytes(d.planned_bytes),
            format_bytes(d.actual_bytes)
        );
    }
    for (block, device, source) in &report.blocks {
        println!("  {block}: {device} ({source:?})");
    }

    let vocab = planned
        .inventory
        .config
        .as_ref()
        .and_then(|c| c.opt_u64("vocab_size"))
        .unwrap_or(128) as u32;
    let ids: Vec<u32> = [101, 2023, 102].iter().map(|i| i % vocab).collect();
    let (shape, first, trace) = match model {
        AutoModel::Bert(bert) => {
            let (out, trace) = bert.forward(&BertInput::from_ids(&ids, &cpu))?;
            let h = out.last_hidden_state;
            (h.dims().to_vec(), h.into_data().to_vec::<f32>()?, trace)
        }
        AutoModel::Llama(llama) => {
            let (logits, trace) = llama.forward(&token_ids(&[&ids], &cpu))?;
            (
                logits.dims().to_vec(),
                logits.into_data().to_vec::<f32>()?,
                trace,
            )
        }
    };
    let from_disk = trace
        .units
        .iter()
        .filter(|u| u.source == stowage::UnitSource::Disk)
        .count();
    println!(
        "forward pass in {:.3} s ({from_disk} blocks read from disk): output {shape:?}, first values {:?}",
        trace.seconds,
        &first[..4.min(first.len())]
    );
    Ok(())
}
