//! Any bytes as the start of a safetensors file: an error or a header, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = stowage_planner::parse_header(std::path::Path::new("fuzz"), data, data.len() as u64);
});
