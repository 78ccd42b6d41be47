//! Any JSON as a saved plan (`stowage plan --json`): its device map, budgets and options read
//! back as errors or values, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Other text is read as a file's path.
    if text.trim_start().starts_with('{') {
        let _ = stowage::saved::read_device_map(text);
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = stowage::saved::budgets_from_json(v.get("budgets").unwrap_or(&v));
        let _ = stowage::saved::options_from_json(v.get("options").unwrap_or(&v));
    }
});
