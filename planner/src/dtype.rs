//! Element types as safetensors stores them, and the sizing rule for a target dtype.

use std::fmt;
use std::str::FromStr;

/// An element type, named as in the safetensors header (`"BF16"`, `"F8_E4M3"`, …).
///
/// Sizes come from bits, as safetensors' own `Dtype::bitsize` does, so the 4- and 6-bit
/// formats size correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
#[non_exhaustive]
pub enum DType {
    /// Boolean, one byte each.
    BOOL,
    /// 4-bit float (MX FP4, E2M1).
    F4,
    /// 6-bit float, E2M3.
    F6_E2M3,
    /// 6-bit float, E3M2.
    F6_E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, E5M2.
    F8_E5M2,
    /// 8-bit float, E4M3.
    F8_E4M3,
    /// 8-bit exponent-only scale (MX E8M0).
    F8_E8M0,
    /// 8-bit float, E4M3 with no negative zero.
    F8_E4M3FNUZ,
    /// 8-bit float, E5M2 with no negative zero.
    F8_E5M2FNUZ,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// Complex of two f32.
    C64,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

const ALL: [DType; 22] = [
    DType::BOOL,
    DType::F4,
    DType::F6_E2M3,
    DType::F6_E3M2,
    DType::U8,
    DType::I8,
    DType::F8_E5M2,
    DType::F8_E4M3,
    DType::F8_E8M0,
    DType::F8_E4M3FNUZ,
    DType::F8_E5M2FNUZ,
    DType::I16,
    DType::U16,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::U32,
    DType::F32,
    DType::C64,
    DType::F64,
    DType::I64,
    DType::U64,
];

impl DType {
    /// Bits per element.
    pub fn bits(self) -> u64 {
        match self {
            DType::F4 => 4,
            DType::F6_E2M3 | DType::F6_E3M2 => 6,
            DType::BOOL
            | DType::U8
            | DType::I8
            | DType::F8_E5M2
            | DType::F8_E4M3
            | DType::F8_E8M0
            | DType::F8_E4M3FNUZ
            | DType::F8_E5M2FNUZ => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::C64 | DType::F64 | DType::I64 | DType::U64 => 64,
        }
    }

    /// Whether the type is a floating-point one (these are the ones a target dtype resizes).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F4
                | DType::F6_E2M3
                | DType::F6_E3M2
                | DType::F8_E5M2
                | DType::F8_E4M3
                | DType::F8_E8M0
                | DType::F8_E4M3FNUZ
                | DType::F8_E5M2FNUZ
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64
        )
    }

    /// The name as written in a safetensors header.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::BOOL => "BOOL",
            DType::F4 => "F4",
            DType::F6_E2M3 => "F6_E2M3",
            DType::F6_E3M2 => "F6_E3M2",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8_E5M2 => "F8_E5M2",
            DType::F8_E4M3 => "F8_E4M3",
            DType::F8_E8M0 => "F8_E8M0",
            DType::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            DType::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::C64 => "C64",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
        }
    }

    /// Parses a header dtype (`"BF16"`), exactly as safetensors spells it.
    pub fn from_header(s: &str) -> Option<DType> {
        ALL.iter().copied().find(|d| d.as_str() == s)
    }

    /// Parses a dtype as users and `config.json` write it: `bf16`, `bfloat16`, `float16`,
    /// `fp16`, `half`, `f32`, `float32`, `float`, `fp8`/`float8_e4m3fn`, `int8`, …
    pub fn from_user(s: &str) -> Option<DType> {
        let lower = s.trim().trim_start_matches("torch.").to_ascii_lowercase();
        let d = match lower.as_str() {
            "bf16" | "bfloat16" => DType::BF16,
            "f16" | "fp16" | "float16" | "half" => DType::F16,
            "f32" | "fp32" | "float32" | "float" => DType::F32,
            "f64" | "fp64" | "float64" | "double" => DType::F64,
            "fp8" | "f8" | "f8_e4m3" | "float8_e4m3fn" | "float8_e4m3" => DType::F8_E4M3,
            "f8_e5m2" | "float8_e5m2" => DType::F8_E5M2,
            "int8" | "i8" => DType::I8,
            "uint8" | "u8" => DType::U8,
            "int16" | "i16" => DType::I16,
            "int32" | "i32" => DType::I32,
            "int64" | "i64" => DType::I64,
            "bool" => DType::BOOL,
            _ => return DType::from_header(s.trim()),
        };
        Some(d)
    }

    /// Bytes taken by `elems` elements, rounded up to whole bytes.
    pub fn bytes_for(self, elems: u64) -> Option<u64> {
        elems.checked_mul(self.bits()).map(|bits| bits.div_ceil(8))
    }

    /// The dtype a tensor stored as `self` takes once loaded with `target` requested:
    /// floating tensors take the narrower of `target` and the stored type (as Accelerate
    /// sizes them); integer and boolean tensors keep their type.
    pub fn sized_as(self, target: Option<DType>) -> DType {
        match target {
            Some(t) if self.is_float() && t.is_float() => {
                if t.bits() < self.bits() {
                    t
                } else {
                    self
                }
            }
            _ => self,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::from_user(s)
            .ok_or_else(|| format!("unknown dtype `{s}` (expected f32, f16, bf16, …)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_name_round_trips() {
        for d in ALL {
            assert_eq!(DType::from_header(d.as_str()), Some(d));
        }
        assert_eq!(
            DType::from_header("bf16"),
            None,
            "header names are case-sensitive"
        );
    }

    #[test]
    fn sizes_come_from_bits() {
        assert_eq!(DType::F4.bytes_for(3), Some(2));
        assert_eq!(DType::F6_E2M3.bytes_for(4), Some(3));
        assert_eq!(DType::BF16.bytes_for(10), Some(20));
        assert_eq!(DType::F64.bytes_for(u64::MAX), None);
    }

    #[test]
    fn target_dtype_only_narrows_floats() {
        assert_eq!(DType::F32.sized_as(Some(DType::BF16)), DType::BF16);
        assert_eq!(DType::BF16.sized_as(Some(DType::F32)), DType::BF16);
        assert_eq!(DType::F8_E4M3.sized_as(Some(DType::F16)), DType::F8_E4M3);
        assert_eq!(DType::I64.sized_as(Some(DType::F16)), DType::I64);
        assert_eq!(DType::F32.sized_as(None), DType::F32);
    }

    #[test]
    fn user_spellings() {
        assert_eq!(DType::from_user("torch.bfloat16"), Some(DType::BF16));
        assert_eq!(DType::from_user("float16"), Some(DType::F16));
        assert_eq!(DType::from_user("F32"), Some(DType::F32));
        assert_eq!(DType::from_user("q4"), None);
    }
}
