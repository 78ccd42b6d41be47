//! Any bytes as a torch.save archive's `data.pkl`: an error or a list of tensors, never a
//! panic, never unbounded memory (the interpreter runs nothing and bounds its stack and copies).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = stowage_planner::torch::tensors_in_pickle(std::path::Path::new("fuzz"), data);
});
