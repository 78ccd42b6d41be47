//! The crate docs' quick start, run per runtime: the doc example is `no_run` (it needs a
//! device, and `cargo test --workspace` must pass on a machine with no Vulkan driver), so this
//! test keeps it honest in the GPU builds.

use cubecl::Runtime;
use cubecl::client::ComputeClient;

use crate::testing::per_runtime;
use crate::*;

fn quick_start<R: Runtime>(client: &ComputeClient<R>) {
    let bytes: Vec<u8> = [0x3F80u16, 0xC020, 0x0001]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    let handle = upload(client, &bytes);
    let widened = widen(client, handle, FloatFormat::BF16, 3).unwrap();
    assert_eq!(
        checksum(client, widened, 3).unwrap(),
        reference::checksum([1.0f32.to_bits(), (-2.5f32).to_bits(), 0x0001_0000])
    );

    let w = [0.5f32, -1.0, 0.25, 7.0, 0.0, -3.5];
    let w_bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let format = QuantFormat::int4(8).unwrap();
    let q = quantize_slice(client, &w_bytes, FloatFormat::F32, 2, 3, format).unwrap();
    assert_eq!(q.scales, [1.0 / 7.0, 1.0]);
    let back = dequantize_slice(client, &q, 2, 3, format).unwrap();
    assert_eq!(back[3..], [7.0, 0.0, -4.0]);
}

per_runtime!(quick_start);
