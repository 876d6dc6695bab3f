//! The layers and their merge: the command line, the environment and the config file, each
//! read into a figment layer that knows how it names a setting, merged flag over
//! environment over file, and extracted into the binary's settings (whose defaults the
//! binary applies to what no layer set).
//!
//! A key is a long flag's id (`usage_interval`); its names are the flag (`--usage-interval`),
//! the environment variable ([`Section::env_name`]) and the file key
//! ([`Section::file_key`]). A binary adds a setting by adding a field to its clap struct:
//! the environment variable, the file key, `--help`'s `[env: …]` and the precedence follow.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory};
use figment::value::{Dict, Empty, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Visitor};

use super::{ALTERNATIVES, ENV_PREFIX, Error, PRECEDENCE, SHARED_KEYS, Section, file};

/// One setting of a binary: a long flag with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The argument id, snake_case (`usage_interval`): the key in the merged settings.
    pub id: String,
    /// The long flag without dashes (`usage-interval`).
    pub long: String,
    /// Takes several values (a repeated flag; comma-separated in the environment).
    pub multiple: bool,
}

/// The keys of `command`: every argument with a long flag but `--help` and `--version`.
pub fn keys(command: &Command) -> Vec<Key> {
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .filter_map(|a| {
            Some(Key {
                id: a.get_id().to_string(),
                long: a.get_long()?.to_owned(),
                multiple: matches!(a.get_action(), ArgAction::Append)
                    || a.get_num_args().is_some_and(|n| n.max_values() > 1),
            })
        })
        .collect()
}

/// `C`'s command as the binary shows it: each argument's help ends with its environment
/// variable, and the long help with the precedence rules both binaries share ([`PRECEDENCE`]).
pub fn command<C: CommandFactory>(section: Section) -> Command {
    C::command()
        .mut_args(|arg| {
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
                || arg.get_long().is_none()
            {
                return arg;
            }
            let env = section.env_name(arg.get_id().as_str());
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let long = arg.get_long_help().map(ToString::to_string);
            let arg = arg.help(format!("{help} [env: {env}]"));
            match long {
                Some(long) => arg.long_help(format!("{long}\n[env: {env}]")),
                None => arg,
            }
        })
        .after_long_help(PRECEDENCE)
}

/// What is wrong with `C`'s schema as a configuration layer, for the binaries' tests: an
/// argument without a long flag, a long flag that is not its id in kebab-case (the file
/// and environment names derive from the id), an `env = ...` attribute (clap would read the
/// environment behind the layer's back), a shared key missing, or a key whose environment
/// variable Kubernetes could set for a Service (`<SERVICE>_PORT`, `_SERVICE_HOST`, ...).
pub fn schema_problems<C: CommandFactory>(section: Section) -> Vec<String> {
    let command = C::command();
    let mut problems = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        match arg.get_long() {
            None => problems.push(format!("{id}: every setting needs a long flag")),
            Some(long) if long != id.replace('_', "-") => problems.push(format!(
                "{id}: the long flag --{long} must be the id in kebab-case"
            )),
            Some(_) => {}
        }
        if arg.get_env().is_some() {
            problems.push(format!(
                "{id}: remove `env = ...`; the environment variable is {}",
                section.env_name(id)
            ));
        }
        if id == "port" || id == "service_host" || id == "service_port" || id.starts_with("port_") {
            problems.push(format!(
                "{id}: {} could be set by Kubernetes for a Service; choose another name",
                section.env_name(id)
            ));
        }
    }
    let ids: Vec<Key> = keys(&command);
    for shared in SHARED_KEYS {
        if !ids.iter().any(|k| k.id == *shared) {
            problems.push(format!("the shared setting {shared} is missing"));
        }
    }
    problems
}

/// Parses `args` (the first is the program name) as `C`'s command line, reads `env` and
/// the config file the flags or the environment name, and returns the settings every layer
/// gave, the flag over the environment over the file over the default `C` declares
/// (`default_value_t`, so `--help` shows it). Settings without a default that no layer
/// gives are `None`.
///
/// # Errors
/// [`Error::CommandLine`] for a bad command line, `--help` or `--version` (print it with
/// `clap::Error::exit`); [`Error::Invalid`] naming the flag, variable or file key of a bad
/// value; [`Error::Renamed`] for a variable of the old unsectioned names; the file's errors
/// (see [`file::read`]); [`Error::Conflict`] when one layer gives two alternatives.
pub fn load<C>(
    section: Section,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<C, Error>
where
    C: CommandFactory + DeserializeOwned,
{
    let command = command::<C>(section);
    let keys = keys(&command);
    let matches = command.try_get_matches_from(args)?;
    let env: BTreeMap<OsString, OsString> = env.into_iter().collect();

    let defaults = Layer::defaults(&keys, &matches)?;
    let flags = Layer::flags(&keys, &matches)?;
    let environment = Layer::environment(section, &keys, &env)?;
    let config_path =
        [&flags, &environment]
            .into_iter()
            .find_map(|layer| match layer.values.get("config") {
                Some(Value::String(_, path)) => Some(PathBuf::from(path)),
                _ => None,
            });
    let file = Layer::file(section, &file_keys::<C>(), config_path.as_deref())?;
    let mut layers = [file, environment, flags];
    for layer in &mut layers {
        layer.settle_alternatives()?;
    }
    let [file, environment, flags] = layers;
    Figment::new()
        .merge(defaults)
        .merge(file)
        .merge(environment)
        .merge(flags)
        .extract_lossy()
        .map_err(invalid)
}

/// Every key of `C`'s schema, as serde names its fields: the flags' and those only a config
/// file can give (`#[arg(skip)]` fields, such as a list of tables).
pub fn file_keys<'de, C: Deserialize<'de>>() -> Vec<&'static str> {
    /// A deserializer that only records the field names a struct asks for.
    struct FieldNames(&'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for &mut FieldNames {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("field names recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut names = FieldNames(&[]);
    let _ = C::deserialize(&mut names);
    names.0.to_vec()
}

/// A figment error as [`Error::Invalid`], naming the setting as its layer spells it.
fn invalid(err: figment::Error) -> Error {
    let setting = match &err.metadata {
        Some(md) if !err.path.is_empty() => md.interpolate(&Profile::Default, &err.path),
        Some(md) => md.name.to_string(),
        None => err.path.join("."),
    };
    Error::Invalid {
        setting,
        problem: err.kind.to_string(),
    }
}

/// One layer's settings and how it names them.
struct Layer {
    /// `command line`, `environment`, `config file`.
    kind: &'static str,
    values: Dict,
    /// Key id → this layer's name for it (`--ttl`, `KUBE_RELAY_RECEIVER_TTL`,
    /// `receiver.ttl in /etc/kube-relay.toml`).
    names: Arc<BTreeMap<String, String>>,
}

impl Layer {
    /// The flags given on the command line.
    fn flags(keys: &[Key], matches: &ArgMatches) -> Result<Layer, Error> {
        Layer::from_matches(keys, matches, ValueSource::CommandLine, "command line")
    }

    /// The defaults the binary declares (`default_value_t`), below every other layer.
    fn defaults(keys: &[Key], matches: &ArgMatches) -> Result<Layer, Error> {
        Layer::from_matches(keys, matches, ValueSource::DefaultValue, "default")
    }

    fn from_matches(
        keys: &[Key],
        matches: &ArgMatches,
        source: ValueSource,
        kind: &'static str,
    ) -> Result<Layer, Error> {
        let names: BTreeMap<String, String> = keys
            .iter()
            .map(|k| match source {
                ValueSource::DefaultValue => (k.id.clone(), format!("the default of --{}", k.long)),
                _ => (k.id.clone(), format!("--{}", k.long)),
            })
            .collect();
        let mut values = Dict::new();
        for key in keys {
            if matches.value_source(&key.id) != Some(source) {
                continue;
            }
            let Some(raw) = matches.get_raw(&key.id) else {
                continue;
            };
            let texts = raw
                .map(|v| text(v, || format!("--{}", key.long)))
                .collect::<Result<Vec<_>, _>>()?;
            values.insert(key.id.clone(), value(key, texts));
        }
        Ok(Layer {
            kind,
            values,
            names: Arc::new(names),
        })
    }

    fn environment(
        section: Section,
        keys: &[Key],
        env: &BTreeMap<OsString, OsString>,
    ) -> Result<Layer, Error> {
        let set = |name: &str| {
            env.get(OsStr::new(name))
                .filter(|v| !v.is_empty())
                .map(|v| text(v, || name.to_owned()))
                .transpose()
        };
        let mut names = BTreeMap::new();
        let mut values = Dict::new();
        for key in keys {
            let name = section.env_name(&key.id);
            if !SHARED_KEYS.contains(&key.id.as_str()) {
                let unsectioned = format!("{ENV_PREFIX}{}", key.id.to_ascii_uppercase());
                if set(&unsectioned)?.is_some() {
                    return Err(Error::Renamed {
                        old: unsectioned,
                        new: name,
                    });
                }
            }
            if let Some(text) = set(&name)? {
                let texts = if key.multiple {
                    text.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                } else {
                    vec![text]
                };
                values.insert(key.id.clone(), value(key, texts));
            }
            names.insert(key.id.clone(), name);
        }
        let prefix = format!("{ENV_PREFIX}{}_", section.name().to_ascii_uppercase());
        for (name, value) in env {
            let Some(name) = name.to_str() else { continue };
            let ours = name.starts_with(&prefix) && !value.is_empty();
            if ours && !names.values().any(|n| n == name) && !is_service_link(name) {
                let mut known: Vec<&str> = names
                    .values()
                    .map(String::as_str)
                    .filter(|n| n.starts_with(&prefix))
                    .collect();
                known.sort_unstable();
                return Err(Error::UnknownVariable {
                    name: name.to_owned(),
                    section: section.name(),
                    known: known.join(", "),
                });
            }
        }
        Ok(Layer {
            kind: "environment",
            values,
            names: Arc::new(names),
        })
    }

    /// The config file's layer; without a file, an empty one. `file_keys` are every key a
    /// file may give: the flags' and file-only ones (a list of tables, say).
    fn file(
        section: Section,
        file_keys: &[&'static str],
        path: Option<&Path>,
    ) -> Result<Layer, Error> {
        let names = file_keys
            .iter()
            .map(|id| {
                let name = section.file_key(id);
                let name = match path {
                    Some(path) => format!("{name} in {}", path.display()),
                    None => name,
                };
                ((*id).to_owned(), name)
            })
            .collect();
        Ok(Layer {
            kind: "config file",
            values: match path {
                Some(path) => file::read(section, file_keys, path)?,
                None => Dict::new(),
            },
            names: Arc::new(names),
        })
    }

    fn name(&self, key: &str) -> String {
        self.names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.replace('_', "-"))
    }

    /// Alternatives ([`ALTERNATIVES`]) are one setting: the layer that gives either decides
    /// both (its other is unset, so a lower layer's cannot creep in), and one layer giving
    /// both is refused.
    fn settle_alternatives(&mut self) -> Result<(), Error> {
        for [a, b] in ALTERNATIVES {
            match (self.values.contains_key(*a), self.values.contains_key(*b)) {
                (true, true) => {
                    return Err(Error::Conflict {
                        first: self.name(a),
                        second: self.name(b),
                    });
                }
                (true, false) => self.unset(b),
                (false, true) => self.unset(a),
                (false, false) => {}
            }
        }
        Ok(())
    }

    fn unset(&mut self, key: &str) {
        self.values
            .insert(key.to_owned(), Value::Empty(Tag::Default, Empty::None));
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let names = self.names.clone();
        Metadata::named(self.kind).interpolater(move |_: &Profile, path: &[&str]| {
            let key = path.first().copied().unwrap_or_default();
            names
                .get(key)
                .cloned()
                .unwrap_or_else(|| path.join(".").replace('_', "-"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// Whether `name` has the shape of a variable Kubernetes sets for a Service in the pod's
/// namespace (`<SERVICE>_SERVICE_HOST`, `_SERVICE_PORT[_<NAME>]`, `_PORT`,
/// `_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`): a Service named `kube-relay-receiver` gives
/// `KUBE_RELAY_RECEIVER_SERVICE_HOST`, which is no typo of ours.
fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT")
    {
        return true;
    }
    let Some((_, tail)) = name.rsplit_once("_PORT_").or_else(|| {
        // `..._PORT_9000_TCP_PORT`: the last `_PORT_` is the suffix, look before it.
        let cut = name.strip_suffix("_PORT")?;
        cut.rsplit_once("_PORT_")
    }) else {
        return false;
    };
    let mut parts = tail.split('_');
    let number = parts
        .next()
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let protocol = parts
        .next()
        .is_some_and(|p| matches!(p, "TCP" | "UDP" | "SCTP"));
    let rest = parts.next();
    number
        && protocol
        && matches!(rest, None | Some("PROTO" | "PORT" | "ADDR"))
        && parts.next().is_none()
}

/// A flag's or variable's value as UTF-8.
fn text(value: &OsStr, name: impl FnOnce() -> String) -> Result<String, Error> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid {
            setting: name(),
            problem: "not valid UTF-8".to_owned(),
        })
}

fn value(key: &Key, texts: Vec<String>) -> Value {
    if key.multiple {
        Value::from(texts)
    } else {
        Value::from(texts.into_iter().next_back().unwrap_or_default())
    }
}
