//! Rotary position embeddings as Hugging Face's Llama family applies them (`rotate_half`).
//!
//! A head of `d` dims is rotated in pairs `(j, j + d/2)`, `j < d/2`, by the angle
//! `position · inv_freq[j]`, with `inv_freq[j] = θ^(-2j/d)`:
//!
//! ```text
//! out[j]       = x[j] cos a − x[j + d/2] sin a
//! out[j + d/2] = x[j + d/2] cos a + x[j] sin a
//! ```
//!
//! that is `x · cos + rotate_half(x) · sin` with `cos` and `sin` of the angles repeated
//! twice along the head (`cat(freqs, freqs)`), and `rotate_half(x) = cat(−x₂, x₁)`. burn's
//! [`RotaryEncoding`](burn::nn::RotaryEncoding) rotates adjacent pairs `(2j, 2j + 1)` instead
//! (the interleaved convention of the original RoFormer and Meta's Llama code), which would
//! need the q/k projection rows permuted, as transformers' conversion script does, to give
//! the same result; so the tables here are stowage's own.
//!
//! The angles are computed in `f64` on the host and rounded to `f32` once, for any position
//! range, so a table is as exact at position 100 000 as at 0.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorData;

/// How `rope_scaling` (or `rope_parameters`) changes the frequencies for long contexts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    /// `default`: no scaling.
    #[default]
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The interpolation factor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, the band between
    /// interpolated smoothly (Llama 3.1 and later).
    Llama3 {
        /// The scale of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was trained with before scaling.
        original_max_position_embeddings: f64,
    },
}

/// The rotary embedding of one attention head size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// The base `θ` (`rope_theta`).
    pub theta: f64,
    /// The dims of one head; must be even.
    pub head_dim: usize,
    /// Long-context scaling.
    pub scaling: RopeScaling,
}

/// The `cos` and `sin` tables of a range of positions, each `[positions, head_dim]`.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    /// `cos(position · inv_freq)`, repeated twice along the head.
    pub cos: Tensor<B, 2>,
    /// `sin(position · inv_freq)`, repeated twice along the head.
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTables<B> {
    /// The same tables on `device`.
    pub fn to_device(&self, device: &B::Device) -> Self {
        RopeTables {
            cos: super::move_to(self.cos.clone(), device),
            sin: super::move_to(self.sin.clone(), device),
        }
    }

    /// Rotates `x`, `[batch, heads, positions, head_dim]`, position `p` of `x` by row `p` of
    /// the tables: `x · cos + rotate_half(x) · sin`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, seq, dim] = x.dims();
        let cos = self.cos.clone().slice([0..seq, 0..dim]).unsqueeze::<4>();
        let sin = self.sin.clone().slice([0..seq, 0..dim]).unsqueeze::<4>();
        x.clone() * cos + rotate_half(x) * sin
    }
}

/// `cat(−x[.., d/2..], x[.., ..d/2])` along the last dim.
pub fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

impl Rope {
    /// The inverse frequencies, `head_dim / 2` of them, after scaling.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|j| {
                let f = self.theta.powf(-((2 * j) as f64) / d);
                match self.scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position_embeddings: old,
                    } => {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < old / high_freq_factor {
                            f
                        } else if wavelen > old / low_freq_factor {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect()
    }

    /// The tables of `positions` on `device`.
    pub fn tables<B: Backend>(&self, positions: Range<usize>, device: &B::Device) -> RopeTables<B> {
        let inv = self.inv_freq();
        let n = positions.len();
        let mut cos = Vec::with_capacity(n * self.head_dim);
        let mut sin = Vec::with_capacity(n * self.head_dim);
        for p in positions {
            for _ in 0..2 {
                for f in &inv {
                    let a = p as f64 * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        let shape = [n, self.head_dim];
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::RotaryEncodingConfig;
    use burn_ndarray::{NdArray, NdArrayDevice};

    type B = NdArray;
    const DEV: NdArrayDevice = NdArrayDevice::Cpu;

    fn rope(head_dim: usize) -> Rope {
        Rope {
            theta: 10_000.0,
            head_dim,
            scaling: RopeScaling::None,
        }
    }

    /// One head at `positions`, by the formula in the module docs.
    fn naive(x: &[f32], position: usize, rope: &Rope) -> Vec<f32> {
        let d = rope.head_dim;
        let mut out = vec![0.0; d];
        for (j, f) in rope.inv_freq().iter().enumerate() {
            let a = position as f64 * f;
            let (c, s) = (a.cos(), a.sin());
            let (lo, hi) = (x[j] as f64, x[j + d / 2] as f64);
            out[j] = (lo * c - hi * s) as f32;
            out[j + d / 2] = (hi * c + lo * s) as f32;
        }
        out
    }

    #[test]
    fn rotates_halves_not_adjacent_pairs() {
        let r = rope(8);
        let seq = 5;
        let x: Vec<f32> = (0..seq * 8)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let t = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [1, 1, seq, 8]), &DEV);
        let got: Vec<f32> = r
            .tables::<B>(0..seq, &DEV)
            .apply(t.clone())
            .into_data()
            .to_vec()
            .unwrap();
        for p in 0..seq {
            let want = naive(&x[p * 8..(p + 1) * 8], p, &r);
            for (g, w) in got[p * 8..(p + 1) * 8].iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "position {p}: {got:?} vs {want:?}");
            }
        }
        // Position 0 is the identity; burn's interleaved RotaryEncoding differs elsewhere.
        assert_eq!(&got[..8], &x[..8]);
        let burn_rope = RotaryEncodingConfig::new(seq, 8).init::<B>(&DEV);
        let interleaved: Vec<f32> = burn_rope.forward(t).into_data().to_vec().unwrap();
        let diff = got
            .iter()
            .zip(&interleaved)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff > 0.1, "the conventions should differ, max diff {diff}");
    }

    #[test]
    fn tables_of_later_positions_match_a_slice_of_the_full_table() {
        let r = rope(4);
        let full = r.tables::<B>(0..10, &DEV);
        let part = r.tables::<B>(6..10, &DEV);
        let f: Vec<f32> = full.sin.slice([6..10, 0..4]).into_data().to_vec().unwrap();
        let p: Vec<f32> = part.sin.into_data().to_vec().unwrap();
        assert_eq!(f, p);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = Rope {
            theta: 500_000.0,
            head_dim: 128,
            scaling: RopeScaling::None,
        };
        let scaled = Rope {
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
            ..plain
        };
        let (a, b) = (plain.inv_freq(), scaled.inv_freq());
        assert_eq!(a[0], b[0]);
        assert!((a[63] / 8.0 - b[63]).abs() < 1e-18);
        // In the band between: divided by less than the factor.
        let mid = (0..64)
            .find(|&j| 2.0 * std::f64::consts::PI / a[j] > 8192.0 / 4.0)
            .unwrap();
        assert!(b[mid] < a[mid] && b[mid] > a[mid] / 8.0);
        let linear = Rope {
            scaling: RopeScaling::Linear { factor: 2.0 },
            ..plain
        };
        assert_eq!(linear.inv_freq()[5], a[5] / 2.0);
    }
}
