//! What can go wrong launching a kernel: a handle too small for what it should hold, a format
//! the kernels do not produce, a tensor too large for one launch, or a failed read-back.

use cubecl::server::ServerError;

/// Errors of the kernel launchers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handle given to a launcher holds fewer bytes than the launch reads or writes.
    #[error(
        "the {what} handle holds {actual} bytes, {expected} are needed; upload with \
         `stowage_kernels::upload`, which pads to whole 4-byte words"
    )]
    HandleTooSmall {
        /// Which argument (`input`, `values`, `scales`, `words`).
        what: &'static str,
        /// Bytes the launch needs.
        expected: u64,
        /// Bytes the handle holds.
        actual: u64,
    },
    /// Host bytes that are not a whole number of elements.
    #[error("{len} bytes are not a whole number of {format} elements ({elem_bytes} bytes each)")]
    PartialElement {
        /// Bytes given.
        len: usize,
        /// The element format (`bf16`, `f16`, `f32`).
        format: &'static str,
        /// Bytes per element.
        elem_bytes: usize,
    },
    /// Host data whose length does not match the shape it is said to have.
    #[error("{what}: {actual} elements given for shape [{rows}, {cols}], which needs {expected}")]
    ShapeMismatch {
        /// Which argument.
        what: &'static str,
        /// Rows of the shape.
        rows: usize,
        /// Columns of the shape.
        cols: usize,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// A group size the quantization kernels do not use.
    #[error(
        "group size {group} is not supported: use a power of two from {min} to {max} \
         (128 is the default)"
    )]
    GroupSize {
        /// The group size asked for.
        group: u32,
        /// Smallest group size.
        min: u32,
        /// Largest group size.
        max: u32,
    },
    /// A tensor with more elements (or words) than one launch can index with 32-bit positions.
    #[error(
        "{elems} elements are more than one launch can index (at most {max}); split the tensor"
    )]
    TooLarge {
        /// Elements asked for.
        elems: u64,
        /// The most one launch takes.
        max: u64,
    },
    /// Reading a result back from the device failed.
    #[error("cannot read the {what} back from the device")]
    ReadBack {
        /// What was being read.
        what: &'static str,
        /// The runtime's error.
        #[source]
        source: ServerError,
    },
}

/// Result of the kernel launchers.
pub type Result<T> = std::result::Result<T, Error>;
