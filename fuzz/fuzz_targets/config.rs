//! Any `config.json`: expanding it is an error or a tensor list, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let path = std::path::Path::new("config.json");
        if let Ok(config) = stowage_planner::ModelConfig::from_json_str(path, s) {
            let _ = stowage_planner::arch::expand(&config, None);
        }
    }
});
