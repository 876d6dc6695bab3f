//! The configuration layer both binaries share (feature `config`).
//!
//! Every setting of `sender` and `receiver` comes from the first of these that gives it,
//! for every key alike:
//! 1. the command line (`--ttl 2m`);
//! 2. the environment (`KUBE_RELAY_RECEIVER_TTL=2m`; an empty variable counts as unset);
//! 3. the config file (`--config`, `KUBE_RELAY_CONFIG`; TOML or YAML by extension);
//! 4. the binary's default, shown by `--help`.
//!
//! # One file and one environment for both binaries
//! A setting only one binary has lives in that binary's section: `[sender]` or `[receiver]`
//! in the file, `KUBE_RELAY_SENDER_*` or `KUBE_RELAY_RECEIVER_*` in the environment. The
//! settings both have, with one meaning ([`SHARED_KEYS`]: the config file, the link's shared
//! secret, the log format), sit at the top level (`token-file = ...`, `KUBE_RELAY_TOKEN`).
//! So one config file or env file can serve both binaries, no variable means two things
//! (a receiver's `--heartbeat-interval` and a sender's used to share one), and each binary
//! still refuses an unknown key in its own section, naming the file. A variable of the old
//! unsectioned names (`KUBE_RELAY_TTL`) stops the start-up naming its new name instead of
//! being ignored.
//!
//! `--token` and `--token-file` are one setting in two forms ([`ALTERNATIVES`]): the highest
//! layer that gives either decides, and one layer giving both is refused.
//!
//! # Layout
//! - [`layers`]: the command (help with `[env: …]` and [`PRECEDENCE`]), the three layers,
//!   their merge into the binary's clap struct, which is also the schema of the file and the
//!   environment: adding a field adds a setting everywhere.
//! - [`file`]: the config file, by extension, and the binary's section of it.
//! - [`values`]: [`HumanDuration`] (humantime's grammar, one for both binaries) and
//!   [`LogFormat`].
//! - [`secret`]: [`read_secret_file`], the one reader of token and password files.

pub mod file;
pub mod layers;
pub mod secret;
pub mod values;

use std::path::PathBuf;

pub use layers::{Key, command, file_keys, keys, load, schema_problems};
pub use secret::read_secret_file;
pub use values::{HumanDuration, LogFormat, parse_duration};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "KUBE_RELAY_";

/// Settings both binaries have, with one meaning: at the top level of the file and named
/// `KUBE_RELAY_<KEY>` in the environment.
pub const SHARED_KEYS: &[&str] = &["config", "token", "token_file", "log_format"];

/// Pairs of keys that are one setting in two forms.
pub const ALTERNATIVES: &[[&str; 2]] = &[["token", "token_file"]];

/// The precedence rules, worded once for both binaries' `--help`.
pub const PRECEDENCE: &str = "\
Precedence, for every setting: flag > environment > config file > default.

Environment: each setting's variable is shown as [env: ...]. KUBE_RELAY_CONFIG, \
KUBE_RELAY_TOKEN, KUBE_RELAY_TOKEN_FILE and KUBE_RELAY_LOG_FORMAT are shared by sender and \
receiver; every other variable names its binary (KUBE_RELAY_SENDER_*, KUBE_RELAY_RECEIVER_*). \
An empty variable counts as unset.

Config file (--config): TOML (.toml) or YAML (.yaml, .yml). The shared settings (token, \
token-file, log-format) go at the top level, every other one under [sender] or [receiver], \
named like its long flag (usage-interval or usage_interval). Each binary reads its own \
section and ignores the other's, so one file can serve both.";

/// Whose settings: names the config-file section and the environment prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `sender`: `[sender]`, `KUBE_RELAY_SENDER_*`.
    Sender,
    /// `receiver`: `[receiver]`, `KUBE_RELAY_RECEIVER_*`.
    Receiver,
}

impl Section {
    /// Every section.
    pub const ALL: [Section; 2] = [Section::Sender, Section::Receiver];

    /// `sender` or `receiver`.
    pub fn name(self) -> &'static str {
        match self {
            Section::Sender => "sender",
            Section::Receiver => "receiver",
        }
    }

    /// The environment variable of `key` (an argument id such as `usage_interval`):
    /// `KUBE_RELAY_<KEY>` for a shared key, `KUBE_RELAY_<SECTION>_<KEY>` otherwise.
    pub fn env_name(self, key: &str) -> String {
        let key = key.to_ascii_uppercase().replace('-', "_");
        if SHARED_KEYS.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
            format!("{ENV_PREFIX}{key}")
        } else {
            format!("{ENV_PREFIX}{}_{key}", self.name().to_ascii_uppercase())
        }
    }

    /// The config-file key of `key`: `token-file` for a shared key, `receiver.ttl`
    /// otherwise.
    pub fn file_key(self, key: &str) -> String {
        let kebab = key.replace('_', "-");
        if SHARED_KEYS.contains(&key) {
            kebab
        } else {
            format!("{}.{kebab}", self.name())
        }
    }
}

/// What can go wrong loading the configuration. Each message names the flag, variable, file
/// or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line does not parse, or asks for `--help` or `--version`: clap's own
    /// message (print it with [`clap::Error::exit`], which exits 0 for help).
    #[error("{0}")]
    CommandLine(#[from] clap::Error),

    /// A value (from a flag, a variable or the file) is not what its setting takes.
    #[error("{setting}: {problem}")]
    Invalid {
        /// The flag, variable or file key as the user wrote it (`KUBE_RELAY_RECEIVER_TTL`).
        setting: String,
        /// What is wrong, with the value.
        problem: String,
    },

    /// A variable of the unsectioned names that settings of one binary used to have.
    #[error(
        "{old} is not read any more: settings of one binary are named after it; set {new} \
         (only KUBE_RELAY_CONFIG, KUBE_RELAY_TOKEN, KUBE_RELAY_TOKEN_FILE and \
         KUBE_RELAY_LOG_FORMAT are shared by sender and receiver)"
    )]
    Renamed {
        /// The variable set.
        old: String,
        /// Its name now.
        new: String,
    },

    /// A variable named like one of this binary's settings (`KUBE_RELAY_RECEIVER_*`) that is
    /// none: a typo, which would otherwise be ignored.
    #[error("{name} is not a {section} setting; its variables are {known}")]
    UnknownVariable {
        /// The variable set.
        name: String,
        /// `sender` or `receiver`.
        section: &'static str,
        /// The variables this binary reads under its prefix.
        known: String,
    },

    /// One layer gives both forms of one setting.
    #[error("{first} and {second} are two forms of one setting: give only one")]
    Conflict {
        /// The first, as its layer names it.
        first: String,
        /// The second.
        second: String,
    },

    /// The config file's name does not say its format.
    #[error(
        "failed to read the config file {path}: its extension must name its format, {}",
        file::FORMATS
    )]
    FileFormat {
        /// The file.
        path: PathBuf,
    },

    /// The config file could not be read.
    #[error("failed to read the config file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid TOML or YAML.
    #[error("failed to parse the config file {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What the parser reported (with the line).
        message: String,
    },

    /// A key of the config file this binary does not take, or in the wrong place.
    #[error("invalid key `{key}` in the config file {path}: {problem}")]
    FileKey {
        /// The file.
        path: PathBuf,
        /// The key as written (`receiver.listn`).
        key: String,
        /// Why, with the keys that are known.
        problem: String,
    },

    /// A token or password file could not be read.
    #[error("failed to read the {what} file {path}")]
    SecretFile {
        /// `token`, `password`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },

    /// A token or password file holds no secret (or far too much).
    #[error("the {what} file {path} {problem}")]
    BadSecretFile {
        /// `token`, `password`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// `is empty`, ...
        problem: String,
    },
}

/// An error and its causes on one line, each cause once: a cause whose text the line
/// already holds (an error that prints its source in its own message) is not repeated.
/// For the binaries' last word, which must not say the same thing twice.
pub fn error_chain<'a>(
    causes: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut line = String::new();
    for cause in causes {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests;
