//! Size strings, `--max-memory` and `--gpus` values: an error or a value, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = stowage_planner::parse_size(s);
        let _ = stowage_planner::parse_max_memory(s);
        let _ = stowage_planner::parse_gpus(s);
    }
});
