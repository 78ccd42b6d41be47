//! Mixtral's sparse MoE block, which takes the MLP's place in the Llama layout
//! (see [`super::llama`]).
//!
//! Per layer the checkpoint stores `block_sparse_moe.gate.weight` (the router,
//! `[num_local_experts, hidden]`), then for each expert `experts.E.w1` (gate), `w3` (up) and
//! `w2` (down), in the order the expert's forward pass uses them: `w2(act(w1(x)) * w3(x))`.

use super::builder::Tensors;
use super::fields::Fields;
use crate::error::Result;

/// The expert count of a Mixtral config.
pub(super) struct SparseMoe {
    experts: u64,
}

impl SparseMoe {
    /// Reads `num_local_experts`.
    pub(super) fn read(f: Fields) -> Result<Self> {
        Ok(SparseMoe {
            experts: f.dim("num_local_experts")?,
        })
    }

    /// Pushes the MoE block of the layer whose tensors start with `layer`.
    pub(super) fn push(
        &self,
        t: &mut Tensors,
        layer: &str,
        hidden: u64,
        intermediate: u64,
    ) -> Result<()> {
        let m = format!("{layer}.block_sparse_moe");
        t.linear(&format!("{m}.gate"), self.experts, hidden, false)?;
        for e in 0..self.experts {
            t.linear(&format!("{m}.experts.{e}.w1"), intermediate, hidden, false)?;
            t.linear(&format!("{m}.experts.{e}.w3"), intermediate, hidden, false)?;
            t.linear(&format!("{m}.experts.{e}.w2"), hidden, intermediate, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::llama::{Family, expand};
    use super::super::testing::{check, load, params};

    #[test]
    fn mixtral_8x7b_has_the_published_count() {
        let c = load("mixtral-8x7b.json");
        let ts = expand(&c, None, Family::Mixtral).unwrap();
        assert_eq!(params(&ts), 46_702_792_704);
        assert_eq!(ts.len(), 2 + 32 * (6 + 1 + 8 * 3) + 1);
        check(&c, &ts, &[("model.layers.", 32)]);
        let names: Vec<&str> = ts[7..12].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.block_sparse_moe.gate.weight",
                "model.layers.0.block_sparse_moe.experts.0.w1.weight",
                "model.layers.0.block_sparse_moe.experts.0.w3.weight",
                "model.layers.0.block_sparse_moe.experts.0.w2.weight",
                "model.layers.0.block_sparse_moe.experts.1.w1.weight",
            ]
        );
        assert_eq!(ts[7].shape, [8, 4096]);
        assert_eq!(ts[10].shape, [4096, 14_336]);
        assert!(!ts.iter().any(|t| t.name.contains(".mlp.")));
    }
}
