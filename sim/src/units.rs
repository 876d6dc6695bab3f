//! Units as Kubernetes writes them: Go durations (`1m30s`), quantities (`250m`, `64Mi`,
//! `123456789n`) and kubectl's human ages (`2m5s`, `3h`, `4d`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a Go-style duration: `500ms`, `30s`, `5m`, `1h30m`, `1.5s`, or `0`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let value: f64 = number.parse().ok()?;
        let unit_seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(value * unit_seconds).ok()?;
        rest = tail;
    }
    Some(total)
}

/// Formats a duration the way Go's `time.Duration.String` does for whole milliseconds:
/// `15s`, `1m30s`, `1.5s`, `250ms`.
pub(crate) fn format_go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let millis = ms % 60_000;
    let seconds = if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        let text = format!("{:.3}", millis as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Parses a CPU quantity into millicores: `250m`, `1`, `0.5`, `1500000n`, `2k`.
pub(crate) fn parse_cpu_millis(text: &str) -> Option<u64> {
    let nanos = parse_quantity_scaled(text, 1e9)?;
    Some((nanos / 1_000_000.0).ceil() as u64)
}

/// Parses a memory quantity into bytes: `64Mi`, `1Gi`, `128974848`, `129M`, `12345Ki`.
pub(crate) fn parse_memory_bytes(text: &str) -> Option<u64> {
    parse_quantity_scaled(text, 1.0).map(|v| v.ceil() as u64)
}

/// Parses a quantity and multiplies it by `scale` (to keep sub-unit precision).
fn parse_quantity_scaled(text: &str, scale: f64) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    if value < 0.0 || !value.is_finite() {
        return None;
    }
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * factor * scale)
}

/// Formats millicores as Kubernetes does: `250m`, `1`, `1500m`.
pub(crate) fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest exact binary suffix: `64Mi`, `1Gi`, `1000`.
pub(crate) fn format_memory_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{suffix}", bytes / size);
        }
    }
    bytes.to_string()
}

/// kubectl's `HumanDuration` (k8s.io/apimachinery/pkg/util/duration), used for AGE columns.
pub(crate) fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// A scenario duration: a Go duration string (`30s`, `1m30s`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Dur(pub Duration);

impl Dur {
    /// Milliseconds, saturating.
    pub(crate) fn ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h30m, 500ms, or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("invalid duration `{v}`: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Duration::try_from_secs_f64(v)
                    .map(Dur)
                    .map_err(|_| E::custom(format!("invalid duration `{v}`")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration `{v}`: expected e.g. 30s, 5m, 1h30m, 500ms"
                    ))
                })
            }
        }
        deserializer.deserialize_any(DurVisitor)
    }
}

/// A scenario CPU quantity in millicores (`250m`, `1`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Cpu(pub u64);

impl<'de> serde::Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = quantity_text(deserializer)?;
        parse_cpu_millis(&text).map(Cpu).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid CPU quantity `{text}`: expected e.g. 250m, 1, 0.5"
            ))
        })
    }
}

/// A scenario memory quantity in bytes (`64Mi`, `1Gi`, `128974848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mem(pub u64);

impl<'de> serde::Deserialize<'de> for Mem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = quantity_text(deserializer)?;
        parse_memory_bytes(&text).map(Mem).ok_or_else(|| {
            de::Error::custom(format!(
                "invalid memory quantity `{text}`: expected e.g. 64Mi, 1Gi, 500M"
            ))
        })
    }
}

/// Reads a quantity written either as a string or as a bare YAML number.
fn quantity_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct TextVisitor;
    impl Visitor<'_> for TextVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a quantity such as 250m or 64Mi")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(TextVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn go_durations_format() {
        assert_eq!(format_go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_go_duration(Duration::from_millis(14_982)), "14.982s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(parse_cpu_millis("250m"), Some(250));
        assert_eq!(parse_cpu_millis("1"), Some(1000));
        assert_eq!(parse_cpu_millis("0.5"), Some(500));
        assert_eq!(
            parse_cpu_millis("123456789n"),
            Some(124),
            "rounds up like MilliValue"
        );
        assert_eq!(parse_memory_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_memory_bytes("12345Ki"), Some(12345 << 10));
        assert_eq!(parse_memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory_bytes("lots"), None);
        assert_eq!(format_cpu_millis(250), "250m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_memory_bytes(64 << 20), "64Mi");
        assert_eq!(format_memory_bytes(1000), "1000");
    }

    #[test]
    fn ages_match_kubectl() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(119)), "119s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 60)), "3h1m");
        assert_eq!(human_duration(Duration::from_secs(10 * 3600)), "10h");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3d");
    }
}
