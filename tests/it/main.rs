//! Integration tests: real safetensors files written to temp folders, and the real `stowage`
//! binary run on them.

mod bad_input;
mod cli;
mod compat;
mod execute;
mod explicit;
mod fixtures;
mod gpu;
mod hub;
mod inventory;
mod load;
mod minilm_fixture;
mod models;
mod module;
mod offload;
mod pretrained;
mod quantize;
mod quantized;
mod snapshots;
mod strategies;
mod sweep;
mod torch;
