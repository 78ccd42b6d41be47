//! stowage-planner
#![allow(missing_docs)]
pub mod arch;
mod config;
mod dtype;
mod error;
mod header;
mod tensor;
mod units;
pub use config::ModelConfig;
pub use dtype::DType;
pub use error::{Error, Result};
pub use header::{read_header, Header, MAX_HEADER_BYTES};
pub use tensor::{TensorInfo, TensorSource};
pub use units::{format_bytes, parse_size};
