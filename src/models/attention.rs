//! Scaled dot-product attention and the head reshapes around it, shared by the reference
//! architectures.

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// `[batch, seq, heads · head_dim]` → `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [batch, seq, width] = x.dims();
    x.reshape([batch, seq, heads, width / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, seq, head_dim]` → `[batch, seq, heads · head_dim]`.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, heads, seq, dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, seq, heads * dim])
}

/// Each of the `kv_heads` heads of `x` repeated `times` in place, as transformers'
/// `repeat_kv`: query head `h` uses key/value head `h / times`.
pub(crate) fn repeat_kv<B: Backend>(x: Tensor<B, 4>, times: usize) -> Tensor<B, 4> {
    if times == 1 {
        return x;
    }
    let [batch, kv_heads, seq, dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, times, seq, dim])
        .reshape([batch, kv_heads * times, seq, dim])
}

/// `softmax(q kᵀ / √head_dim) v` over `[batch, heads, seq, head_dim]` tensors, where `mask`
/// (true: may not attend) broadcasts to the `[batch, heads, queries, keys]` scores.
///
/// Masked scores are set to `f32::MIN`, not `-∞`, so a row with every key masked gives a
/// uniform average rather than NaN (transformers' eager attention adds `finfo.min` the same
/// way).
pub(crate) fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<&Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let scale = (q.dims()[3] as f64).sqrt().recip();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = match mask {
        Some(mask) => {
            let dims = scores.dims();
            scores.mask_fill(mask.clone().expand(dims), f32::MIN)
        }
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_ndarray::{NdArray, NdArrayDevice};

    type B = NdArray;
    const DEV: NdArrayDevice = NdArrayDevice::Cpu;

    fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn heads_split_and_merge_back() {
        let x = Tensor::<B, 3>::from_data(
            TensorData::new((0..24).map(|i| i as f32).collect(), [1, 2, 12]),
            &DEV,
        );
        let h = split_heads(x.clone(), 3);
        assert_eq!(h.dims(), [1, 3, 2, 4]);
        // Head 1 of position 1 is columns 4..8 of row 1.
        assert_eq!(
            vals(h.clone().slice([0..1, 1..2, 1..2, 0..4])),
            [16.0, 17.0, 18.0, 19.0]
        );
        assert_eq!(vals(merge_heads(h)), vals(x));
    }

    #[test]
    fn repeated_kv_heads_stay_together() {
        let x = Tensor::<B, 4>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2, 1, 1]), &DEV);
        assert_eq!(vals(repeat_kv(x, 3)), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn masked_keys_get_no_weight() {
        let q = Tensor::<B, 4>::ones([1, 1, 2, 2], &DEV);
        let k = Tensor::<B, 4>::ones([1, 1, 2, 2], &DEV);
        let v = Tensor::<B, 4>::from_data(
            TensorData::new(vec![1.0f32, 10.0, 3.0, 30.0], [1, 1, 2, 2]),
            &DEV,
        );
        // Causal: query 0 sees key 0 only, query 1 both (equal scores: the mean).
        let mask = Tensor::<B, 4, Bool>::from_data(
            TensorData::new(vec![false, true, false, false], [1, 1, 2, 2]),
            &DEV,
        );
        assert_eq!(
            vals(attend(q.clone(), k.clone(), v.clone(), Some(&mask))),
            [1.0, 10.0, 2.0, 20.0]
        );
        // Every key masked: the mean, not NaN.
        let all =
            Tensor::<B, 4, Bool>::from_data(TensorData::new(vec![true, true], [1, 1, 1, 2]), &DEV);
        assert_eq!(vals(attend(q, k, v, Some(&all))), [2.0, 20.0, 2.0, 20.0]);
    }
}
