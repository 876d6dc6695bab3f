//! The value types settings share: durations in one grammar ([`HumanDuration`]) and the log
//! format ([`LogFormat`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// What a duration setting accepts, for messages and `--help`.
pub const DURATION_GRAMMAR: &str = "a duration such as 500ms, 30s, 5m, 1h30m or plain seconds";

/// A duration written for people: humantime's grammar (`500ms`, `30s`, `5m`, `1h30m`,
/// `2days`), or a plain number of seconds (`90`, `1.5`), in a flag, an environment variable
/// or the config file alike (where a bare number is seconds too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

/// Parses a duration: humantime's grammar or plain (possibly fractional) seconds.
///
/// # Errors
/// A message naming the input and the accepted grammar.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let plain_seconds = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let parsed = if plain_seconds {
        s.parse::<f64>()
            .map_err(|e| e.to_string())
            .and_then(|secs| Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()))
    } else {
        humantime::parse_duration(s).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("invalid duration {s:?} ({e}): expected {DURATION_GRAMMAR}"))
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(HumanDuration)
    }
}

/// humantime's compact form (`5m`, `1s 500ms`), which [`parse_duration`] reads back.
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_GRAMMAR)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                s.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }

            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(secs)))
            }

            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<HumanDuration, E> {
                u64::try_from(secs)
                    .map(|secs| HumanDuration(Duration::from_secs(secs)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(secs), &self))
            }

            fn visit_f64<E: de::Error>(self, secs: f64) -> Result<HumanDuration, E> {
                Duration::try_from_secs_f64(secs)
                    .map(HumanDuration)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(secs), &self))
            }
        }

        d.deserialize_any(Visitor)
    }
}

/// How log lines are written (the level comes from `RUST_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_reads_what_either_binary_used_to() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("15s", Duration::from_secs(15)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h", Duration::from_secs(3600)),
            ("90", Duration::from_secs(90)),
            ("1.5", Duration::from_millis(1500)),
            (" 30s ", Duration::from_secs(30)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "abc", "-1s", "5 minutes and", "1.5.2", "m"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("{:?}", bad.trim())), "{err}");
        }
    }

    #[test]
    fn durations_display_in_a_form_they_parse_from() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(5),
            Duration::from_millis(1500),
            Duration::from_secs(15),
            Duration::from_secs(300),
            Duration::from_secs(5400),
        ] {
            let shown = HumanDuration(d).to_string();
            assert_eq!(parse_duration(&shown), Ok(d), "{shown}");
        }
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
    }

    #[test]
    fn durations_deserialize_from_text_or_seconds() {
        #[derive(serde::Deserialize)]
        struct S {
            a: HumanDuration,
            b: HumanDuration,
            c: HumanDuration,
        }
        let s: S = toml::from_str("a = \"1m\"\nb = 90\nc = 0.25\n").expect("parse");
        assert_eq!(s.a.get(), Duration::from_secs(60));
        assert_eq!(s.b.get(), Duration::from_secs(90));
        assert_eq!(s.c.get(), Duration::from_millis(250));
        let err = toml::from_str::<S>("a = \"soon\"\nb = 1\nc = 1\n")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
