//! `--compat accelerate`: what Accelerate 1.x's `infer_auto_device_map` computes.
//!
//! Work in progress: not available yet.

use super::Placed;
use crate::budget::Budgets;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::strategy::Strategy;

pub(crate) fn place(
    inv: &Inventory,
    budgets: &Budgets,
    dtype: Option<DType>,
    strategy: Strategy,
) -> Result<Placed> {
    let _ = (inv, budgets, dtype, strategy);
    Err(Error::Unsupported {
        what: "--compat accelerate".into(),
        hint: " yet; use the default stowage mode".into(),
    })
}
