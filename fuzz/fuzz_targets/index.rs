//! Any bytes as `model.safetensors.index.json` beside a real shard: an error or the indexed
//! tensors, never a panic.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

/// A folder holding one small, valid shard.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("stowage-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = br#"{"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.weight":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}"#;
        let mut shard = (header.len() as u64).to_le_bytes().to_vec();
        shard.extend_from_slice(header);
        shard.extend_from_slice(&[0u8; 10]);
        std::fs::write(dir.join("model-00001-of-00001.safetensors"), shard).unwrap();
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let index = folder().join("model.safetensors.index.json");
    std::fs::write(&index, data).unwrap();
    let _ = stowage_planner::read_index(&index);
});
