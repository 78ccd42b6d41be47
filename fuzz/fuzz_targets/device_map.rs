//! Any JSON as a device map: an error or a map, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = stowage_planner::DeviceMap::from_json(&v, None);
    }
});
