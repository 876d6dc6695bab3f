//! Receiver addresses (`--target`): `HOST:PORT` each, several in failover order.
//!
//! Every value is checked at start-up, so a typo stops the sender with the bad entry named
//! instead of turning into a reconnect loop: a host that is a DNS name, an IPv4 address or
//! a bracketed IPv6 address (`[::1]:9000`); a port in 1–65535; no scheme (`tcp://`); no
//! empty entry; no receiver listed twice. A value may hold several entries separated by
//! commas (`a:9000,b:9000`), the flag may be repeated, and the config file takes a string or
//! a list.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use rustls::pki_types::ServerName;
use serde::{Deserialize, Deserializer};

/// The receivers `values` name, in order: each value split at commas, every entry checked.
///
/// # Errors
/// A message naming the first bad entry and what is wrong with it.
pub fn parse_targets<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, String> {
    let mut targets: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for value in values {
        let value = value.as_ref();
        for entry in value.split(',') {
            let entry = entry.trim();
            // An empty entry is only visible in the whole value.
            let named = if entry.is_empty() { value } else { entry };
            check_target(entry).map_err(|problem| format!("--target {named:?}: {problem}"))?;
            if !seen.insert(entry.to_ascii_lowercase()) {
                return Err(format!(
                    "--target lists {entry} twice: each receiver once, in failover order"
                ));
            }
            targets.push(entry.to_owned());
        }
    }
    if targets.is_empty() {
        return Err("--target names no receiver".to_owned());
    }
    Ok(targets)
}

/// Checks a list already split into entries (a programmatic [`Config`](crate::Config)).
///
/// # Errors
/// As [`parse_targets`]; a comma inside an entry is refused too.
pub fn check_targets(targets: &[String]) -> Result<(), String> {
    if let Some(entry) = targets.iter().find(|t| t.contains(',')) {
        return Err(format!("--target {entry:?}: one HOST:PORT per entry"));
    }
    parse_targets(targets).map(|_| ())
}

/// Checks one `HOST:PORT` entry.
///
/// # Errors
/// What is wrong with it, in words an operator can act on.
pub fn check_target(entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("an empty entry (a stray comma?); give HOST:PORT".to_owned());
    }
    if let Some((scheme, _)) = entry.split_once("://") {
        return Err(format!(
            "no scheme here: give HOST:PORT, not {scheme}://HOST:PORT"
        ));
    }
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err("not HOST:PORT (the port is missing)".to_owned());
    };
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => {}
        Ok(p) => return Err(format!("port {p} is not in 1-65535")),
        Err(_) => return Err(format!("port {port:?} is not a number")),
    }
    if host.is_empty() {
        return Err("the host is missing".to_owned());
    }
    if let Some(inner) = host.strip_prefix('[') {
        let address = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{host:?} opens a bracket it does not close"))?;
        return address
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{address:?} is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err("an IPv6 address goes in brackets: [ADDRESS]:PORT".to_owned());
    }
    // The same rule TLS applies to a server name: a DNS name or an IP address.
    ServerName::try_from(host)
        .map(|_| ())
        .map_err(|_| format!("{host:?} is neither a host name nor an IP address"))
}

/// Deserializes a list of strings from a list or from one string (the config file may say
/// `target = "a:9000"` or `target = ["a:9000", "b:9000"]`).
///
/// # Errors
/// The deserializer's, for anything else.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_targets_pass_in_order() {
        assert_eq!(
            parse_targets(&["a.example:9000,10.0.0.7:9000", "[::1]:9001"]),
            Ok(vec![
                "a.example:9000".to_owned(),
                "10.0.0.7:9000".to_owned(),
                "[::1]:9001".to_owned()
            ])
        );
        assert_eq!(
            parse_targets(&[" relay:1 "]),
            Ok(vec!["relay:1".to_owned()])
        );
    }

    #[test]
    fn bad_targets_are_refused_naming_the_entry_and_the_problem() {
        for (value, needles) in [
            (
                "127.0.0.1:99999",
                &["127.0.0.1:99999", "port 99999 is not in 1-65535"][..],
            ),
            (
                "tcp://host:9000",
                &["tcp://host:9000", "no scheme", "not tcp://"],
            ),
            ("a:9000,,b:9000", &["\"a:9000,,b:9000\"", "empty entry"]),
            ("a:9000,", &["empty entry"]),
            ("", &["empty entry"]),
            ("hostb", &["hostb", "port is missing"]),
            ("hostb:http", &["\"http\" is not a number"]),
            ("hostb:0", &["port 0"]),
            (":9000", &["host is missing"]),
            ("::1:9000", &["brackets"]),
            ("[::1:9000", &["bracket"]),
            ("[nope]:9000", &["not an IPv6 address"]),
            ("bad host:9000", &["\"bad host\"", "neither a host name"]),
            ("a:9000,A:9000", &["A:9000 twice"]),
        ] {
            let err = parse_targets(&[value]).expect_err(value);
            for needle in needles {
                assert!(err.contains(needle), "{value:?}: {err}");
            }
            assert!(err.starts_with("--target"), "{err}");
        }
    }
}
