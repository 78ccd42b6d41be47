//! Byte sizes as users write them (`20GiB`, `500GB`, `1073741824`) and as stowage prints them.
//!
//! `KiB`/`MiB`/`GiB`/`TiB` are powers of two, `KB`/`MB`/`GB`/`TB` powers of ten, a bare
//! number is bytes. Lower-case `b` is rejected: Accelerate reads `10gb` as gigabits, a known
//! trap, so stowage asks the user to say which they mean.

use crate::error::{Error, Result};

/// Parses a size string into bytes.
///
/// ```
/// use stowage_planner::parse_size;
/// assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
/// assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
/// assert_eq!(parse_size("4096").unwrap(), 4096);
/// assert!(parse_size("10gb").is_err());
/// ```
pub fn parse_size(input: &str) -> Result<u64> {
    let invalid = |reason: String| Error::InvalidSize {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(invalid(
            "expected a number followed by a unit, e.g. `20GiB`".into(),
        ));
    }
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u if u.ends_with('b') => {
            let upper = u[..u.len() - 1].to_ascii_uppercase();
            return Err(invalid(format!(
                "lower-case `b` means bits to some tools; write `{number}{upper}B` (powers of 10) or `{number}{}iB` (powers of 2)",
                upper.trim_end_matches('I')
            )));
        }
        u => {
            return Err(invalid(format!(
                "unknown unit `{u}`; use B, KiB, MiB, GiB, TiB (powers of 2) or KB, MB, GB, TB (powers of 10)"
            )));
        }
    };
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(factor)
            .ok_or_else(|| invalid("too large".into()));
    }
    let x: f64 = number
        .parse()
        .map_err(|_| invalid(format!("`{number}` is not a number")))?;
    let bytes = (x * factor as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid("too large".into()));
    }
    Ok(bytes as u64)
}

/// Formats bytes with IEC units (`1.50 GiB`), always powers of two.
///
/// ```
/// use stowage_planner::format_bytes;
/// assert_eq!(format_bytes(1536 << 20), "1.50 GiB");
/// assert_eq!(format_bytes(512), "512 B");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("3MiB").unwrap(), 3 << 20);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("500GB").unwrap(), 500_000_000_000);
        assert_eq!(parse_size("1kB").unwrap(), 1000);
        assert_eq!(parse_size("0.5GiB").unwrap(), 1 << 29);
        assert_eq!(parse_size(" 7 B ").unwrap(), 7);
    }

    #[test]
    fn bits_trap_is_rejected_with_a_hint() {
        for s in ["10gb", "10Gb", "10GiBb", "3mb"] {
            let err = parse_size(s).unwrap_err().to_string();
            assert!(err.contains("bits"), "{s}: {err}");
        }
        let err = parse_size("10Gb").unwrap_err().to_string();
        assert!(err.contains("10GB") && err.contains("10GiB"), "{err}");
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("1.2.3GB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn formats_iec() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1024), "1.00 KiB");
        assert_eq!(format_bytes(20 << 30), "20.00 GiB");
    }
}
