//! Linear-layer weights quantized at load: int8 or int4 values with one f32 scale per group of
//! values along the input dimension, held in burn's own quantized tensors
//! (`TensorPrimitive::QFloat`) and dequantized in the forward pass.
//!
//! # The format
//!
//! stowage-kernels' blockwise format, which the planner sizes ([`Quantize`]): a checkpoint
//! weight `[rows, cols]` (PyTorch's `[out, in]`) is cut into groups of `G` consecutive values
//! along each row, `⌈cols / G⌉` per row (the last one shorter when `G` does not divide
//! `cols`). With `amax` a group's largest magnitude and `qmax` = 127 (int8) or 7 (int4):
//! - the scale is `amax × fl(1 / qmax)`, rounded to f32;
//! - a value is `q = round(qmax × |x| / amax)` with the sign of `x`, rounded **half away from
//!   zero** on the exact quotient (not on `x / scale`), so `q ∈ [-qmax, qmax]`;
//! - it dequantizes to `fl(q × scale)`, within `scale × (1/2 + 2⁻¹⁴)` of `x`;
//! - a group whose `amax` is below 2⁻¹¹² has scale 0 and values 0; a group holding a NaN or an
//!   infinity has a NaN scale and dequantizes to NaN throughout.
//!
//! [`QuantizedWeight::quantize`] computes it on the host; stowage-kernels' `reference` module
//! computes the same bit for bit (a test compares them).
//!
//! # How burn 0.21 holds it (measured)
//!
//! burn's quantized tensors hold this format exactly only in one shape: the checkpoint's own
//! `[out, in]`, blocks of `b` values along the last dimension. What each backend accepts:
//!
//! | backend | int8 | int4 | storage |
//! |---|---|---|---|
//! | burn-ndarray (cpu) | `Q8S`, `QuantStore::Native` | not supported: held as `Q8S` values in `[-7, 7]` | 1 byte a value + an f32 per block |
//! | burn-cubecl: wgpu, cuda | `Q8S`, `QuantStore::PackedU32(0)` | `Q4S`, `QuantStore::PackedU32(0)` | 4 or 8 values per u32, low bits first (the kernels' packing), + an f32 per block |
//!
//! Three things burn 0.21 does not do decide the design:
//! - **Transposed quantized tensors dequantize wrongly** on both backends (a `swap_dims` view:
//!   1422 of 1536 values wrong on burn-ndarray, 1461 on wgpu, in a 6×256 test), and burn's
//!   `nn::Linear` holds its weight as `[in, out]`, a transposed view of the checkpoint's
//!   `[out, in]`. Blocks along the first dimension (`[G, 1]`) are ignored too: burn-ndarray
//!   cuts blocks as flat runs of the row-major values, and cubecl's dequantize kernel takes one
//!   scale per packed word. So `nn::Linear` cannot hold a weight grouped along its input
//!   dimension, and stowage's [`QuantLinear`] (same parameters, same names) holds the
//!   quantized weight as `[out, in]` and dequantizes then transposes it in its forward.
//! - **Block sizes are `u8`**: a group of 256 or more is held as blocks of 128 (or of the
//!   largest power of two dividing both the group and the row), each block repeating its
//!   group's scale, so it computes exactly the same; only the scales take more room.
//! - **burn's own quantizer differs from ours** (`quantize_dynamic`: scale
//!   `2·amax / (2·qmax)` by f32 division, then `round(x / scale)` in f32; on a 6×256 test 35 of
//!   1536 int8 values came out different from ours). stowage therefore never asks burn to
//!   quantize: on a GPU the kernels of stowage-kernels write the packed values and scales
//!   straight into the memory of a burn quantized tensor, laid out as burn lays out one it
//!   uploads ([`DeviceTransforms::quantize_on_device`](crate::DeviceTransforms::quantize_on_device),
//!   when the blocks are exactly the groups: groups of at most 128 and rows of whole groups);
//!   otherwise the host quantizes ([`QuantizedWeight::quantize`]) and hands burn the values and
//!   scales (`TensorData`). burn only stores and dequantizes them, `fl(q × scale)` with one f32
//!   multiply, which is ours: a loaded weight dequantizes to exactly
//!   [`QuantizedWeight::dequantize`] (tested on lavapipe for weights quantized both ways).
//!
//! A device holds a weight quantized only when its backend reports the scheme supported and a
//! small probe tensor, encoded the same way, dequantizes there bit for bit as
//! [`QuantizedWeight::dequantize`] does (checked once per device and scheme). Otherwise, and
//! for weights whose shape does not fit the packing (`in` not a multiple of the values per
//! word), the weight is held dequantized, in f32: the same numbers, without the memory saved.
//! [`ModuleLoadReport::quantized`](crate::ModuleLoadReport::quantized) says which, and the
//! bytes each takes.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::quantization::{QuantLevel, QuantScheme, QuantStore, QuantValue};
use burn::tensor::{DType as BurnDType, TensorData};
use stowage_planner::Quantize;

/// Groups whose largest magnitude has fewer f32 bits than this are all zeros (2⁻¹¹²), as in
/// stowage-kernels.
const MIN_AMAX_BITS: u32 = 15 << 23;

/// The largest block burn's `BlockSize` can hold (its sizes are `u8`), as a power of two.
const MAX_BURN_BLOCK: usize = 128;

/// The quiet NaN a broken group's scale is.
const NAN_BITS: u32 = 0x7FC0_0000;

/// A weight quantized in stowage's format (see the module docs), on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// int8 or int4, and the group size.
    pub quantize: Quantize,
    /// Rows of the weight (`out` for a PyTorch `Linear` weight).
    pub rows: usize,
    /// Columns: the dimension groups run along (`in`).
    pub cols: usize,
    /// `rows × cols` values in `[-qmax, qmax]`, row-major (int4 values take a byte each here).
    pub values: Vec<i8>,
    /// `rows × ⌈cols / G⌉` scales, row-major.
    pub scales: Vec<f32>,
}

/// How a weight ended up held on its device: [`QuantizedWeight::to_tensor`].
#[derive(Debug, Clone)]
pub enum Held<B: Backend> {
    /// As burn's quantized tensor, `[rows, cols]`, with this scheme.
    Quantized(Tensor<B, 2>, QuantScheme),
    /// Dequantized to f32, `[rows, cols]`: the device cannot hold the format.
    Dequantized(Tensor<B, 2>),
}

impl<B: Backend> Held<B> {
    /// The tensor, quantized or not.
    pub fn tensor(&self) -> &Tensor<B, 2> {
        match self {
            Held::Quantized(t, _) | Held::Dequantized(t) => t,
        }
    }

    /// burn's scheme when held quantized.
    pub fn scheme(&self) -> Option<QuantScheme> {
        match self {
            Held::Quantized(_, s) => Some(*s),
            Held::Dequantized(_) => None,
        }
    }
}

impl QuantizedWeight {
    /// Quantizes a row-major `[rows, cols]` weight; `None` for [`Quantize::None`] or when
    /// `values` does not hold `rows × cols` values.
    ///
    /// ```
    /// use stowage::QuantizedWeight;
    /// use stowage::planner::Quantize;
    ///
    /// // One row, int4 in groups of 8: the scale is 7 × fl(1/7) = 1.0, so the values are the
    /// // inputs rounded half away from zero.
    /// let w = [7.0, 0.5, -0.5, 2.5, -2.5, 1.0, 0.0, 6.5];
    /// let q = QuantizedWeight::quantize(&w, 1, 8, Quantize::Int4 { group: 8 }).unwrap();
    /// assert_eq!(q.scales, [1.0]);
    /// assert_eq!(q.values, [7, 1, -1, 3, -3, 1, 0, 7]);
    /// assert_eq!(q.dequantize()[3], 3.0);
    /// ```
    pub fn quantize(values: &[f32], rows: usize, cols: usize, quantize: Quantize) -> Option<Self> {
        let group = quantize.group()? as usize;
        if values.len() != rows.checked_mul(cols)? {
            return None;
        }
        let qmax = qmax(quantize);
        let factor = 1.0 / qmax as f32;
        let per_row = cols.div_ceil(group);
        let mut out = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(rows * per_row);
        for row in values.chunks(cols.max(1)).take(rows) {
            for g in row.chunks(group) {
                let amax = if g.iter().any(|x| x.is_nan()) {
                    f32::NAN
                } else {
                    g.iter().fold(0.0f32, |m, x| m.max(x.abs()))
                };
                let zero = !amax.is_finite() || amax.to_bits() < MIN_AMAX_BITS;
                scales.push(if !amax.is_finite() {
                    f32::from_bits(NAN_BITS)
                } else if zero {
                    0.0
                } else {
                    amax * factor
                });
                out.extend(g.iter().map(|&x| {
                    if zero || x == 0.0 {
                        return 0;
                    }
                    // Exact: qmax × |x| is exact in f64, and the quotient is far enough from
                    // any half-integer it is not equal to for the f64 division not to matter
                    // (stowage-kernels' reference says why).
                    let q = (f64::from(qmax) * f64::from(x.abs()) / f64::from(amax) + 0.5).floor();
                    let q = q as i8;
                    if x.is_sign_negative() { -q } else { q }
                }));
            }
        }
        Some(QuantizedWeight {
            quantize,
            rows,
            cols,
            values: out,
            scales,
        })
    }

    /// The dequantized weight, row-major: `fl(q × scale)`, NaN for a NaN scale.
    pub fn dequantize(&self) -> Vec<f32> {
        let group = self.group();
        let per_row = self.cols.div_ceil(group);
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let s = self.scales[(i / self.cols) * per_row + (i % self.cols) / group];
                if s.is_nan() {
                    f32::from_bits(NAN_BITS)
                } else {
                    f32::from(q) * s
                }
            })
            .collect()
    }

    fn group(&self) -> usize {
        self.quantize.group().unwrap_or(1).max(1) as usize
    }

    /// Bytes the planner sizes it at ([`Quantize::bytes`]).
    pub fn planned_bytes(&self) -> u64 {
        self.quantize
            .bytes(self.rows as u64, self.cols as u64)
            .unwrap_or(0)
    }

    /// The weight on `device`: as burn's quantized tensor where that device holds the format
    /// exactly (see the module docs), else dequantized to f32. Either way `[rows, cols]`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Held<B> {
        match holding::<B>(device, self.quantize, self.cols) {
            Some(scheme) => Held::Quantized(Tensor::from_data(self.encode(scheme), device), scheme),
            None => Held::Dequantized(Tensor::from_data(
                TensorData::new(self.dequantize(), [self.rows, self.cols]),
                device,
            )),
        }
    }

    /// Reads a quantized tensor made by [`QuantizedWeight::to_tensor`] back from its device;
    /// `None` when `tensor` is not one (a float tensor, another scheme, another shape).
    pub fn from_tensor<B: Backend>(tensor: &Tensor<B, 2>, quantize: Quantize) -> Option<Self> {
        let BurnDType::QFloat(scheme) = tensor.dtype() else {
            return None;
        };
        let group = quantize.group()? as usize;
        let [rows, cols] = tensor.dims();
        let b = burn_block(&scheme)?;
        let int4 = matches!(quantize, Quantize::Int4 { .. });
        if b == 0
            || !cols.is_multiple_of(b)
            || !group.is_multiple_of(b) && b != cols
            || scheme.value == QuantValue::Q4S && !int4
        {
            return None;
        }
        let data = tensor.to_data();
        let bytes = data.as_bytes();
        let n = rows * cols;
        let (values, values_len) = match (scheme.store, scheme.value) {
            (QuantStore::Native, QuantValue::Q8S) => (
                bytes.get(..n)?.iter().map(|&b| b as i8).collect::<Vec<_>>(),
                n,
            ),
            (QuantStore::PackedU32(0), value @ (QuantValue::Q8S | QuantValue::Q4S)) => {
                let bits = value.size_bits();
                let k = 32 / bits;
                let words = n.div_ceil(k);
                let v = (0..n)
                    .map(|i| {
                        let w = u32::from_le_bytes(
                            bytes.get(4 * (i / k)..4 * (i / k) + 4)?.try_into().ok()?,
                        );
                        let raw = (w >> ((i % k) * bits)) as u8;
                        Some(((raw << (8 - bits)) as i8) >> (8 - bits))
                    })
                    .collect::<Option<Vec<i8>>>()?;
                (v, 4 * words)
            }
            _ => return None,
        };
        let start = values_len.next_multiple_of(4);
        let blocks_per_row = cols / b;
        let burn_scales: Vec<f32> = bytes
            .get(start..start + 4 * rows * blocks_per_row)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Each group's scale is its first block's.
        let per_row = cols.div_ceil(group);
        let scales = (0..rows * per_row)
            .map(|i| burn_scales[(i / per_row) * blocks_per_row + (i % per_row) * group / b])
            .collect();
        Some(QuantizedWeight {
            quantize,
            rows,
            cols,
            values,
            scales,
        })
    }

    /// The values packed into 32-bit words as burn's `PackedU32` store and the kernels hold
    /// them: row-major, 4 (int8) or 8 (int4) to a word, the first in the lowest bits, the last
    /// word padded with zeros.
    pub(crate) fn packed_words(&self) -> Vec<u32> {
        let bits = match self.quantize {
            Quantize::Int4 { .. } => 4,
            _ => 8,
        };
        let k = 32 / bits;
        let mask = (1u32 << bits) - 1;
        let mut words = vec![0u32; self.values.len().div_ceil(k)];
        for (i, &q) in self.values.iter().enumerate() {
            words[i / k] |= (q as u32 & mask) << ((i % k) * bits);
        }
        words
    }

    /// The scale of each of burn's blocks of `b` values, row-major.
    pub(crate) fn block_scales(&self, b: usize) -> Vec<f32> {
        let group = self.group();
        let per_row = self.cols.div_ceil(group);
        let blocks = self.cols / b;
        (0..self.rows * blocks)
            .map(|i| self.scales[(i / blocks) * per_row + (i % blocks) * b / group])
            .collect()
    }

    /// The bytes burn reads for `scheme`.
    fn encode(&self, scheme: QuantScheme) -> TensorData {
        let b = burn_block(&scheme).expect("a block scheme");
        let scales = self.block_scales(b);
        let shape = [self.rows, self.cols];
        match scheme.store {
            QuantStore::PackedU32(_) => {
                let mut bytes: Vec<u8> = self
                    .packed_words()
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                bytes.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
                TensorData::from_bytes_vec(bytes, shape, BurnDType::QFloat(scheme))
            }
            _ => TensorData::quantized(self.values.clone(), shape, scheme, &scales),
        }
    }
}

fn qmax(quantize: Quantize) -> i32 {
    match quantize {
        Quantize::Int4 { .. } => 7,
        _ => 127,
    }
}

/// burn's block size for groups of `group` along rows of `cols`: the largest power of two
/// dividing both, at most [`MAX_BURN_BLOCK`], so each block lies in one group.
fn block_for(group: usize, cols: usize) -> usize {
    if cols == 0 || group == 0 {
        return 0;
    }
    let common = 1usize << group.trailing_zeros().min(cols.trailing_zeros());
    // A row shorter than a group is one group: a block may be the whole row.
    let b = if cols < group && cols <= MAX_BURN_BLOCK {
        cols
    } else {
        common
    };
    b.min(MAX_BURN_BLOCK)
}

pub(crate) fn burn_block(scheme: &QuantScheme) -> Option<usize> {
    match scheme.level {
        QuantLevel::Block(size) => Some(size.num_elements()),
        QuantLevel::Tensor => None,
    }
}

/// The scheme `device` holds `quantize` in for rows of `cols`, or `None` (held dequantized).
pub(crate) fn holding<B: Backend>(
    device: &B::Device,
    quantize: Quantize,
    cols: usize,
) -> Option<QuantScheme> {
    let group = quantize.group()? as usize;
    let b = block_for(group, cols);
    if b == 0 || b > usize::from(u8::MAX) {
        return None;
    }
    let level = QuantLevel::block([b as u8]);
    let packed = QuantScheme::default()
        .with_value(match quantize {
            Quantize::Int4 { .. } => QuantValue::Q4S,
            _ => QuantValue::Q8S,
        })
        .with_level(level)
        .with_store(QuantStore::PackedU32(0));
    // int4 values fit int8 storage: burn-ndarray holds no 4-bit values.
    let native = QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_level(level)
        .with_store(QuantStore::Native);
    let k = 32 / packed.value.size_bits();
    [(packed, b.is_multiple_of(k)), (native, true)]
        .into_iter()
        .find(|&(scheme, fits)| fits && exact_on::<B>(device, scheme, quantize))
        .map(|(scheme, _)| scheme)
}

/// Whether `device` holds `scheme` and dequantizes a probe encoded with it bit for bit as
/// [`QuantizedWeight::dequantize`] does; asked once per backend, device and scheme.
fn exact_on<B: Backend>(device: &B::Device, scheme: QuantScheme, quantize: Quantize) -> bool {
    type Key = (TypeId, String, QuantScheme);
    static CHECKED: OnceLock<Mutex<HashMap<Key, bool>>> = OnceLock::new();
    let key = (TypeId::of::<B>(), format!("{device:?}"), scheme);
    let checked = CHECKED.get_or_init(Default::default);
    if let Some(&ok) = checked.lock().expect("not poisoned").get(&key) {
        return ok;
    }
    let ok = B::supports_dtype(device, BurnDType::QFloat(scheme))
        && probe::<B>(device, scheme, quantize);
    checked.lock().expect("not poisoned").insert(key, ok);
    ok
}

/// Two rows of two blocks each, every block with its own scale and values up to ±qmax.
fn probe<B: Backend>(device: &B::Device, scheme: QuantScheme, quantize: Quantize) -> bool {
    let Some(b) = burn_block(&scheme) else {
        return false;
    };
    let (rows, cols) = (2, 2 * b);
    let quantize = match quantize {
        Quantize::Int4 { .. } => Quantize::Int4 { group: b as u32 },
        _ => Quantize::Int8 { group: b as u32 },
    };
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let block = (i / b) as f32 + 1.0;
            let x = ((i * 7919) % 23) as f32 / 11.0 - 1.0;
            x * block * if i % 3 == 0 { -1.0 } else { 1.0 }
        })
        .collect();
    let Some(w) = QuantizedWeight::quantize(&values, rows, cols, quantize) else {
        return false;
    };
    let t = Tensor::<B, 2>::from_data(w.encode(scheme), device);
    let Ok(back) = t.dequantize().into_data().to_vec::<f32>() else {
        return false;
    };
    back.iter()
        .zip(w.dequantize())
        .all(|(a, b)| a.to_bits() == b.to_bits())
}

/// Bytes a `[rows, cols]` tensor held quantized in `scheme` takes on its device: the values
/// (packed into 32-bit words, or a byte each) and an f32 scale per block.
pub(crate) fn held_bytes(scheme: &QuantScheme, rows: usize, cols: usize) -> u64 {
    let n = (rows * cols) as u64;
    let b = burn_block(scheme).unwrap_or(1).max(1) as u64;
    let values = match scheme.store {
        QuantStore::PackedU32(_) => 4 * n.div_ceil(32 / scheme.value.size_bits() as u64),
        _ => n,
    };
    values + 4 * n / b
}

/// A parameter quantized at load ([`ModuleLoadReport::quantized`](crate::ModuleLoadReport::quantized)).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedParam {
    /// The parameter's path in the model.
    pub param: String,
    /// Its checkpoint tensor.
    pub tensor: String,
    /// What it was quantized to: the plan's quantization, or a per-module rule's
    /// ([`PlanOptions::quantize_modules`](crate::PlanOptions::quantize_modules)).
    pub quantize: Quantize,
    /// burn's scheme when held as a quantized tensor; `None` when held dequantized (f32): the
    /// device cannot hold the format, the weight's shape does not fit its packing, or the
    /// parameter is no [`QuantLinear`] weight.
    pub scheme: Option<QuantScheme>,
    /// Bytes its device holds for it: values and scales as burn stores them, or 4 a value.
    pub bytes: u64,
    /// Bytes the planner sized it at on a GPU ([`Quantize::bytes`]).
    pub planned_bytes: u64,
    /// Whether it was quantized on its device from the checkpoint's bytes (stowage-kernels),
    /// rather than on the host.
    pub on_device: bool,
    /// Whether its checksum on its GPU was found equal to the host's over the file's weight
    /// quantized by the host's rule ([`LoadOptions::verify`](crate::LoadOptions::verify)).
    pub verified: bool,
}

impl QuantizedParam {
    /// A `[rows, cols]` weight quantized to `quantize`, held in `scheme` (`None`: dequantized,
    /// f32), not yet verified.
    pub(crate) fn new(
        (param, tensor): (String, String),
        quantize: Quantize,
        (rows, cols): (usize, usize),
        scheme: Option<QuantScheme>,
        on_device: bool,
    ) -> Self {
        QuantizedParam {
            param,
            tensor,
            quantize,
            scheme,
            bytes: scheme.map_or(4 * (rows * cols) as u64, |s| held_bytes(&s, rows, cols)),
            planned_bytes: quantize.bytes(rows as u64, cols as u64).unwrap_or(0),
            on_device,
            verified: false,
        }
    }
}

/// How to build a [`QuantLinear`]: `d_input`, `d_output`, a bias or not, as burn's
/// `LinearConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether it has a bias (default true).
    pub bias: bool,
}

impl QuantLinearConfig {
    /// `d_input` to `d_output` features, with a bias.
    pub fn new(d_input: usize, d_output: usize) -> Self {
        QuantLinearConfig {
            d_input,
            d_output,
            bias: true,
        }
    }

    /// With or without a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The layer with lazy parameters, initialised as burn's `Linear` (`LinearLayout::Row`)
    /// would be.
    pub fn init<B: Backend>(&self, device: &B::Device) -> QuantLinear<B> {
        let linear = LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device);
        QuantLinear {
            weight: linear.weight,
            bias: linear.bias,
        }
    }
}

/// burn's `Linear` (`y = x W + b`), whose weight can also be held quantized.
///
/// Its parameters are burn's: `weight` and `bias`, under the same names, loaded the same way.
/// `weight` is either a float tensor `[in, out]`, as burn's `Linear` holds it, or a quantized
/// tensor `[out, in]` as the checkpoint stores it, which [`crate::load`] with
/// [`ModuleLoadOptions::quantize`](crate::ModuleLoadOptions::quantize) gives it and
/// [`QuantLinear::forward`] dequantizes and transposes (see the module docs for why burn's
/// `Linear` cannot hold it). With a float weight it computes what burn's `Linear` does (to the
/// bit on burn-ndarray, tested), as one 2-D product over the input's rows, which saves
/// burn-ndarray a copy of the weight at every forward.
#[derive(Module, Debug)]
pub struct QuantLinear<B: Backend> {
    /// `[in, out]` floats, or `[out, in]` quantized.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> QuantLinear<B> {
    /// `input [..., in]` → `[..., out]`.
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let weight = self.weight.val();
        let weight = if is_quantized(&weight) {
            weight.dequantize().transpose()
        } else {
            weight
        };
        // One 2-D matmul over the rows, rather than burn's `linear`, which gives the weight a
        // leading unit dimension first: burn-ndarray 0.21 copies the whole weight for that
        // reshape (then once more inside its matmul), at every forward. The rows' products
        // are the same.
        let dims = input.dims();
        let d_in = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        let out = input.reshape([rows, d_in]).matmul(weight);
        let out = match &self.bias {
            Some(b) => out + b.val().unsqueeze::<2>(),
            None => out,
        };
        let mut out_dims = dims;
        out_dims[D - 1] = out.dims()[1];
        out.reshape(out_dims)
    }

    /// Whether the weight is held quantized (a lazy weight is not: this initialises nothing).
    pub fn is_quantized(&self) -> bool {
        self.weight.is_initialized() && is_quantized(&self.weight.val())
    }
}

fn is_quantized<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    matches!(t.dtype(), BurnDType::QFloat(_))
}

/// `module` moved to `device`, its quantized weights re-encoded for that device's backend
/// (burn-ndarray's int8 storage is not what a GPU reads): what [`Module::to_device`] does
/// for everything else.
/// `group` is the plan's group size: every quantized weight of a plan shares it, int8 or int4
/// as the tensor's own scheme says.
pub(crate) fn to_device<B: Backend, M: Module<B>>(module: M, device: &B::Device, group: u32) -> M {
    module.map(&mut Mover { device, group })
}

struct Mover<'a, B: Backend> {
    device: &'a B::Device,
    group: u32,
}

impl<B: Backend> ModuleMapper<B> for Mover<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (device, group) = (self.device, self.group);
        param.map(|t| {
            let BurnDType::QFloat(scheme) = t.dtype() else {
                return t.to_device(device);
            };
            if D != 2 {
                return t.to_device(device);
            }
            let quantize = match scheme.value {
                QuantValue::Q4S => Quantize::Int4 { group },
                _ => Quantize::Int8 { group },
            };
            let t2 = Tensor::<B, 2>::from_primitive(t.clone().into_primitive());
            let Some(w) = QuantizedWeight::from_tensor(&t2, quantize) else {
                return t.to_device(device);
            };
            // Only QuantLinear weights are quantized: dequantized, they are `[in, out]`.
            let moved = match w.to_tensor::<B>(device) {
                Held::Quantized(q, _) => q,
                Held::Dequantized(f) => f.transpose(),
            };
            Tensor::from_primitive(moved.into_primitive())
        })
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        param.map(|t| t.to_device(self.device))
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        param.map(|t| t.to_device(self.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_groups_and_rows() {
        assert_eq!(block_for(128, 384), 128);
        assert_eq!(block_for(64, 1536), 64);
        assert_eq!(block_for(256, 384), 128); // scales repeated twice
        assert_eq!(block_for(1024, 4096), 128);
        assert_eq!(block_for(128, 16), 16); // a row shorter than a group is one group
        assert_eq!(block_for(8, 24), 8);
        assert_eq!(block_for(32, 100), 4); // the last group of 4 values
        assert_eq!(block_for(128, 0), 0);
    }

    /// With a float weight, the 2-D product over the rows is burn's `Linear` to the bit on
    /// burn-ndarray, batched input included.
    #[test]
    fn float_forward_is_burns_linear() {
        use burn::module::Param;
        use burn_ndarray::{NdArray, NdArrayDevice};
        type B = NdArray;
        let device = NdArrayDevice::Cpu;
        let (d_in, d_out) = (48, 40);
        let value = |i: usize| ((i * 7919) % 211) as f32 / 97.0 - 1.0;
        let weight: Vec<f32> = (0..d_in * d_out).map(value).collect();
        let bias: Vec<f32> = (0..d_out).map(|i| value(i * 13)).collect();
        let w = Tensor::<B, 2>::from_data(TensorData::new(weight, [d_in, d_out]), &device);
        let b = Tensor::<B, 1>::from_data(TensorData::new(bias, [d_out]), &device);
        let burns = burn::nn::Linear {
            weight: Param::from_tensor(w.clone()),
            bias: Some(Param::from_tensor(b.clone())),
        };
        let ours = QuantLinear {
            weight: Param::from_tensor(w),
            bias: Some(Param::from_tensor(b)),
        };
        let x: Vec<f32> = (0..3 * 5 * d_in).map(|i| value(i * 31)).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(x, [3, 5, d_in]), &device);
        let want = burns
            .forward(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let got = ours.forward(x).into_data();
        assert_eq!(got.shape.to_vec(), [3, 5, d_out]);
        let got = got.to_vec::<f32>().unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn edge_groups() {
        let q = Quantize::Int8 { group: 8 };
        // An all-zero group, a tiny one, one with a NaN, one with an infinity.
        let mut w = vec![0.0f32; 8];
        w.extend([1e-35f32; 8]);
        w.extend([1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        w.extend([1.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let qw = QuantizedWeight::quantize(&w, 1, 32, q).unwrap();
        assert_eq!(qw.scales[..2], [0.0, 0.0]);
        assert!(qw.scales[2].is_nan() && qw.scales[3].is_nan());
        assert!(qw.values.iter().all(|&v| v == 0));
        let back = qw.dequantize();
        assert!(back[..16].iter().all(|&x| x == 0.0));
        assert!(back[16..].iter().all(|x| x.is_nan()));
        assert!(QuantizedWeight::quantize(&w, 2, 32, q).is_none());
        assert!(QuantizedWeight::quantize(&w, 1, 32, Quantize::None).is_none());
    }
}
