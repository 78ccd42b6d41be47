//! Test support: the edge values every kernel is tried on, seeded random data, and
//! [`per_runtime!`], which runs each test once per runtime.

/// Instantiates generic tests `fn name<R: Runtime>(client: &ComputeClient<R>)` (defined in the
/// calling module) once per runtime, like cubecl's `testgen_*!`: `wgpu` with `--features wgpu`
/// (Mesa's lavapipe without a GPU), `cuda` with `--features cuda`, on device 0, each failing
/// when there is no device. The default build runs neither: `cargo test --workspace` must pass
/// on a machine with no Vulkan driver; CI runs `cargo test -p stowage-kernels --features wgpu`.
macro_rules! per_runtime {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "wgpu")]
        mod wgpu {
            fn client() -> cubecl::client::ComputeClient<cubecl::wgpu::WgpuRuntime> {
                <cubecl::wgpu::WgpuRuntime as cubecl::Runtime>::client(
                    &cubecl::wgpu::WgpuDevice::DefaultDevice,
                )
            }
            $(
                #[test]
                fn $name() {
                    super::$name(&client());
                }
            )*
        }

        #[cfg(feature = "cuda")]
        mod cuda {
            fn client() -> cubecl::client::ComputeClient<cubecl::cuda::CudaRuntime> {
                <cubecl::cuda::CudaRuntime as cubecl::Runtime>::client(
                    &cubecl::cuda::CudaDevice::new(0),
                )
            }
            $(
                #[test]
                fn $name() {
                    super::$name(&client());
                }
            )*
        }
    };
}
pub(crate) use per_runtime;

/// f32 edge values: signed zeros, subnormals, the smallest and largest normals, infinities,
/// quiet and signalling NaNs with payloads, and ordinary values.
pub(crate) fn f32_edges() -> Vec<f32> {
    [
        0x0000_0000u32, // +0
        0x8000_0000,    // -0
        0x0000_0001,    // smallest subnormal
        0x8000_0001,
        0x007F_FFFF, // largest subnormal
        0x0080_0000, // smallest normal
        0x7F7F_FFFF, // largest finite
        0xFF7F_FFFF,
        0x7F80_0000, // +inf
        0xFF80_0000, // -inf
        0x7FC0_0000, // quiet NaN
        0xFFC0_0001, // negative quiet NaN with a payload
        0x7F80_0001, // signalling NaN
        0x3F80_0000, // 1
        0xBFC0_0000, // -1.5
        0x3EAA_AAAB, // 1/3
    ]
    .map(f32::from_bits)
    .to_vec()
}

/// bf16 edge values (bits): signed zeros, subnormals, largest finite, infinities, NaNs with
/// payloads (quiet and signalling), ordinary values.
pub(crate) fn bf16_edges() -> Vec<u16> {
    vec![
        0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0,
        0xFFC1, 0x7F81, 0x7FBF, 0x3F80, 0xC020, 0x3EAB,
    ]
}

/// f16 edge values (bits), the same kinds as [`bf16_edges`], every subnormal bit position.
pub(crate) fn f16_edges() -> Vec<u16> {
    let mut v = vec![
        0x0000, 0x8000, 0x03FF, 0x83FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01,
        0x7C01, 0x7DFF, 0x3C00, 0xC100, 0x3555,
    ];
    v.extend((0..10).map(|b| 1u16 << b));
    v.extend((0..10).map(|b| 0x8000 | (1u16 << b) | 1));
    v
}

/// A small deterministic generator (SplitMix64), so the random tests need no extra crate and
/// replay the same data on every run.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A value spread over many magnitudes: `±m × 2^e`, `m` in [0, 1), `e` in [-20, 20).
    pub fn weight(&mut self) -> f32 {
        let m = (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        let e = (self.next_u32() % 40) as i32 - 20;
        let v = m * 2f32.powi(e);
        if self.next_u32() & 1 == 1 { -v } else { v }
    }
}

/// Little-endian bytes of 16-bit words.
pub(crate) fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// Little-endian bytes of f32 values.
pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Asserts two f32 slices are equal bit for bit, naming the first position that differs.
#[track_caller]
pub(crate) fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} is {:#010x} ({}), expected {:#010x} ({})",
            got[i].to_bits(),
            got[i],
            want[i].to_bits(),
            want[i]
        );
    }
}
