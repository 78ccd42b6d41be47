//! `sequential`: fill GPU 0, then GPU 1, …, then cpu, then disk.
//!
//! Entries are taken in execution order. One that fits in what is left of the current device
//! goes there. One that does not is split into its children if it is a splittable module;
//! otherwise the fill moves on to the next device and never comes back (so the layers on each
//! device stay contiguous). When anything ends up offloaded, room for the largest offloaded
//! unit is kept free on GPU 0 (and on cpu when disk is used) so it can be brought in at run
//! time; when nothing is offloaded, nothing is reserved (Accelerate reserves it always and so
//! offloads models that would have fit, accelerate#3041).

use super::{Ctx, Placed, fill, top_level, with_offload_reserve};
use crate::error::Result;

pub(crate) fn place(ctx: &Ctx) -> Result<Placed> {
    with_offload_reserve(ctx, |reserves| {
        fill(ctx, top_level(ctx.inv), &|d| ctx.capacity(d, reserves))
    })
}
