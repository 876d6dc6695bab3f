//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) as numbers.
//!
//! The grammar is `apimachinery`'s: a signed decimal number followed by a binary suffix
//! (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`), a decimal SI suffix (`n`, `u`, `m`, `k`, `M`, `G`,
//! `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`). Values come from the API server, so
//! anything else is `None`, never a panic.

/// The value of a quantity string in base units (cores, bytes, ...), or `None` when it is
/// not a valid quantity.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "+" || number == "-" {
        return None;
    }
    // Signs only in front.
    if number[1..].contains(['+', '-']) {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    // Binary suffixes multiply; decimal ones scale by a power of ten (dividing for negative
    // powers, so `100u` is exactly the double nearest 1e-4).
    let binary = |power: i32| Some(number * 1024f64.powi(power));
    let decimal = |power: i32| {
        Some(if power >= 0 {
            number * 10f64.powi(power)
        } else {
            number / 10f64.powi(-power)
        })
    };
    let value = match suffix {
        "" => Some(number),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        exp if exp.starts_with(['e', 'E']) => decimal(exp[1..].parse().ok()?),
        _ => None,
    }?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_suffix_family() {
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("500000n"), Some(0.0005));
        assert_eq!(parse_quantity("100u"), Some(0.0001));
        assert_eq!(parse_quantity("64Mi"), Some(67_108_864.0));
        assert_eq!(parse_quantity("1Gi"), Some(1_073_741_824.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1_610_612_736.0));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848.0));
        assert_eq!(parse_quantity("129e6"), Some(129_000_000.0));
        assert_eq!(parse_quantity("1E-3"), Some(0.001));
        assert_eq!(parse_quantity("123M"), Some(123_000_000.0));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("-1"), Some(-1.0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "m", "Gi", "1x", "1..2", "1-2", "1e", "abc", "1 Gi"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
