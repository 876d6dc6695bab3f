//! The config file (`--config`, `KUBE_RELAY_CONFIG`): TOML or YAML by extension, read into
//! one binary's settings.
//!
//! One file may configure both binaries: the shared keys ([`SHARED_KEYS`]) sit at the top
//! level, every other key in its binary's section (`[sender]`, `[receiver]`). A binary reads
//! the top level and its own section, ignores the other binary's section, and refuses any
//! other key (a typo) naming the file and the keys it knows. Keys are spelled like the long
//! flags (`usage-interval`) or in snake_case (`usage_interval`).

use std::path::Path;

use figment::value::{Dict, Value};

use super::{Error, SHARED_KEYS, Section};

/// The formats a config file may be in, by extension.
pub const FORMATS: &str = "TOML (.toml) or YAML (.yaml, .yml)";

/// Most bytes read from a config file.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Reads `path` and returns the settings it gives `section`'s binary, keyed like its schema's
/// fields (`keys`, snake_case).
///
/// # Errors
/// [`Error::FileFormat`] for an unknown extension, [`Error::ReadFile`] when it cannot be
/// read, [`Error::ParseFile`] when it does not parse, [`Error::FileKey`] for a key this
/// binary does not know or one in the wrong place.
pub fn read(section: Section, keys: &[&str], path: &Path) -> Result<Dict, Error> {
    use std::io::Read;

    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = match extension.as_deref() {
        Some("toml") => false,
        Some("yaml" | "yml") => true,
        _ => {
            return Err(Error::FileFormat {
                path: path.to_owned(),
            });
        }
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_FILE_BYTES).read_to_string(&mut text))
        .map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
    let parse_error = |message: String| Error::ParseFile {
        path: path.to_owned(),
        message,
    };
    let document: Dict = if text.trim().is_empty() {
        Dict::new()
    } else if yaml {
        serde_saphyr::from_str(&text).map_err(|e| parse_error(e.to_string()))?
    } else {
        toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?
    };
    select(section, keys, document, path)
}

/// The top-level shared keys and `section`'s own keys of a parsed file.
fn select(section: Section, keys: &[&str], document: Dict, path: &Path) -> Result<Dict, Error> {
    let known = |key: &str| keys.contains(&key);
    let wrong = |key: String, problem: String| Error::FileKey {
        path: path.to_owned(),
        key,
        problem,
    };
    let mut settings = Dict::new();
    for (raw, value) in document {
        let key = raw.replace('-', "_");
        if key == "config" {
            return Err(wrong(
                raw,
                "the config file cannot name a config file; give --config or KUBE_RELAY_CONFIG"
                    .to_owned(),
            ));
        }
        if SHARED_KEYS.contains(&key.as_str()) {
            settings.insert(key, value);
        } else if key == section.name() {
            let Value::Dict(_, table) = value else {
                return Err(wrong(raw, "must be a table of settings".to_owned()));
            };
            for (raw_inner, value) in table {
                let inner = raw_inner.replace('-', "_");
                let name = format!("{raw}.{raw_inner}");
                if SHARED_KEYS.contains(&inner.as_str()) {
                    return Err(wrong(
                        name,
                        format!(
                            "`{raw_inner}` is shared by both binaries: put it at the top level"
                        ),
                    ));
                }
                if !known(&inner) {
                    return Err(wrong(name, unknown(section, keys)));
                }
                settings.insert(inner, value);
            }
        } else if Section::ALL.iter().any(|s| s.name() == key) {
            // The other binary's section.
        } else if known(&key) {
            return Err(wrong(
                raw,
                format!(
                    "a {} setting: put it under [{}]",
                    section.name(),
                    section.name()
                ),
            ));
        } else {
            return Err(wrong(raw, unknown(section, keys)));
        }
    }
    Ok(settings)
}

fn unknown(section: Section, keys: &[&str]) -> String {
    let own: Vec<String> = keys
        .iter()
        .filter(|k| !SHARED_KEYS.contains(k))
        .map(|k| k.replace('_', "-"))
        .collect();
    let shared: Vec<String> = SHARED_KEYS
        .iter()
        .filter(|k| **k != "config")
        .map(|k| k.replace('_', "-"))
        .collect();
    format!(
        "unknown key; [{}] takes {}, the top level {}",
        section.name(),
        own.join(", "),
        shared.join(", ")
    )
}
