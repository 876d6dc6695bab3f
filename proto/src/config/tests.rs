//! The layer with a small schema of each kind of setting, as a binary declares one.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A receiver-like schema: the shared keys and one of each kind of value.
#[derive(Debug, Default, PartialEq, clap::Parser, serde::Deserialize)]
#[command(name = "receiver", version)]
struct Cli {
    /// Config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shared secret.
    #[arg(long)]
    token: Option<String>,
    /// Shared secret, from a file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// A duration.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<HumanDuration>,
    /// A number.
    #[arg(long)]
    max_connections: Option<usize>,
    /// A list.
    #[arg(long)]
    namespace: Option<Vec<String>>,
    /// Only a config file can give this: a list of tables.
    #[arg(skip)]
    upstream: Option<Vec<Upstream>>,
}

/// An entry of the file-only list.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    url: String,
    timeout: Option<HumanDuration>,
}

fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn load_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Cli, Error> {
    let args = std::iter::once("receiver").chain(args.iter().copied());
    load(Section::Receiver, args, env(vars))
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn the_flag_beats_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        &dir,
        "kr.toml",
        "[receiver]\nttl = \"3m\"\nmax-connections = 3\n",
    );
    let ttl = |args: &[&str], vars: &[(&str, &str)]| {
        load_with(args, vars)
            .expect("load")
            .ttl
            .map(HumanDuration::get)
    };
    let config = ["--config", path.as_str()];
    assert_eq!(ttl(&[], &[]), None, "no layer: the binary's default");
    assert_eq!(ttl(&config, &[]), Some(Duration::from_secs(180)));
    let from_env = [("KUBE_RELAY_RECEIVER_TTL", "2m")];
    assert_eq!(ttl(&config, &from_env), Some(Duration::from_secs(120)));
    let mut with_flag = config.to_vec();
    with_flag.extend(["--ttl", "1m"]);
    assert_eq!(ttl(&with_flag, &from_env), Some(Duration::from_secs(60)));
    // The file is named by the environment just as well.
    let via_env = load_with(&[], &[("KUBE_RELAY_CONFIG", &path)]).expect("load");
    assert_eq!(via_env.max_connections, Some(3));
}

#[test]
fn a_bad_value_names_the_variable_the_flag_or_the_file_key() {
    let err = load_with(&[], &[("KUBE_RELAY_RECEIVER_TTL", "abc")]).expect_err("bad");
    let text = err.to_string();
    assert!(text.contains("KUBE_RELAY_RECEIVER_TTL"), "{text}");
    assert!(text.contains("\"abc\""), "{text}");

    let err = load_with(&[], &[("KUBE_RELAY_RECEIVER_MAX_CONNECTIONS", "many")]).expect_err("bad");
    assert!(
        err.to_string()
            .contains("KUBE_RELAY_RECEIVER_MAX_CONNECTIONS"),
        "{err}"
    );

    let err = load_with(&["--ttl", "soon"], &[]).expect_err("bad");
    assert!(err.to_string().contains("--ttl"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(&dir, "kr.yaml", "receiver:\n  ttl: later\n");
    let err = load_with(&["--config", &path], &[]).expect_err("bad");
    let text = err.to_string();
    assert!(text.contains("receiver.ttl"), "{text}");
    assert!(text.contains("kr.yaml"), "{text}");
    assert!(text.contains("later"), "{text}");
}

#[test]
fn unsectioned_variables_are_refused_with_their_new_name() {
    let err = load_with(&[], &[("KUBE_RELAY_TTL", "abc")]).expect_err("old name");
    let text = err.to_string();
    assert!(text.contains("KUBE_RELAY_TTL"), "{text}");
    assert!(text.contains("KUBE_RELAY_RECEIVER_TTL"), "{text}");
    // Shared ones keep their names; the other binary's variables are none of our business.
    let ok = load_with(
        &[],
        &[
            ("KUBE_RELAY_LOG_FORMAT", "json"),
            ("KUBE_RELAY_SENDER_TTL", "x"),
            ("KUBE_RELAY_TARGET", "x"),
            ("KUBE_RELAY_RECEIVER_SERVICE_HOST", "10.0.0.1"),
        ],
    )
    .expect("load");
    assert_eq!(ok.log_format, Some(LogFormat::Json));
}

#[test]
fn a_misspelt_variable_of_ours_is_refused_but_kubernetes_service_links_are_not() {
    let err = load_with(&[], &[("KUBE_RELAY_RECEIVER_TTLL", "1m")]).expect_err("typo");
    let text = err.to_string();
    assert!(text.contains("KUBE_RELAY_RECEIVER_TTLL"), "{text}");
    assert!(text.ends_with("KUBE_RELAY_RECEIVER_TTL"), "{text}");
    // What Kubernetes sets for a Service named kube-relay-receiver (or -receiver-metrics).
    for service in [
        "KUBE_RELAY_RECEIVER_SERVICE_HOST",
        "KUBE_RELAY_RECEIVER_SERVICE_PORT",
        "KUBE_RELAY_RECEIVER_SERVICE_PORT_INGEST",
        "KUBE_RELAY_RECEIVER_PORT",
        "KUBE_RELAY_RECEIVER_PORT_9000_TCP",
        "KUBE_RELAY_RECEIVER_PORT_9000_TCP_PROTO",
        "KUBE_RELAY_RECEIVER_PORT_9000_TCP_PORT",
        "KUBE_RELAY_RECEIVER_PORT_9000_TCP_ADDR",
        "KUBE_RELAY_RECEIVER_METRICS_PORT_9100_TCP_ADDR",
    ] {
        load_with(&[], &[(service, "tcp://10.0.0.1:9000")])
            .unwrap_or_else(|e| panic!("{service}: {e}"));
    }
}

#[test]
fn empty_variables_count_as_unset_and_lists_are_comma_separated() {
    let cli = load_with(
        &[],
        &[
            ("KUBE_RELAY_TOKEN", ""),
            ("KUBE_RELAY_RECEIVER_NAMESPACE", "a, b,,c"),
        ],
    )
    .expect("load");
    assert_eq!(cli.token, None);
    assert_eq!(
        cli.namespace,
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
    let cli = load_with(&["--namespace", "x", "--namespace", "y"], &[]).expect("load");
    assert_eq!(cli.namespace, Some(vec!["x".to_owned(), "y".to_owned()]));
}

#[test]
fn one_file_serves_both_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = file(
        &dir,
        "kube-relay.toml",
        "token-file = \"/run/secrets/token\"\nlog_format = \"json\"\n\
         [sender]\ntarget = \"hostb:9000\"\nanything = 1\n\
         [receiver]\nttl = \"10m\"\n",
    );
    let cli = load_with(&["--config", &toml], &[]).expect("load");
    assert_eq!(cli.token_file, Some(PathBuf::from("/run/secrets/token")));
    assert_eq!(cli.log_format, Some(LogFormat::Json));
    assert_eq!(cli.ttl, Some(HumanDuration(Duration::from_secs(600))));

    let yaml = file(
        &dir,
        "kube-relay.yml",
        "token: t\nsender: {target: 'b:1'}\nreceiver:\n  max_connections: 9\n",
    );
    let cli = load_with(&["--config", &yaml], &[]).expect("load");
    assert_eq!(cli.token.as_deref(), Some("t"));
    assert_eq!(cli.max_connections, Some(9));
}

#[test]
fn a_file_only_setting_is_read_from_the_file_and_nowhere_else() {
    assert!(file_keys::<Cli>().contains(&"upstream"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(
        &dir,
        "kr.yaml",
        "receiver:\n  upstream:\n    - url: http://a\n      timeout: 2s\n    - url: http://b\n",
    );
    let cli = load_with(&["--config", &path], &[]).expect("load");
    assert_eq!(
        cli.upstream,
        Some(vec![
            Upstream {
                url: "http://a".into(),
                timeout: Some(HumanDuration(Duration::from_secs(2))),
            },
            Upstream {
                url: "http://b".into(),
                timeout: None,
            },
        ])
    );
    assert!(load_with(&["--upstream", "x"], &[]).is_err(), "no flag");
    let err = load_with(&[], &[("KUBE_RELAY_RECEIVER_UPSTREAM", "x")]).expect_err("no variable");
    assert!(matches!(err, Error::UnknownVariable { .. }), "{err}");
    let bad = file(
        &dir,
        "bad.yaml",
        "receiver:\n  upstream:\n    - url: a\n      tmeout: 1s\n",
    );
    let err = load_with(&["--config", &bad], &[]).expect_err("typo inside");
    assert!(err.to_string().contains("tmeout"), "{err}");
}

#[test]
fn unknown_or_misplaced_file_keys_are_refused_with_the_file_and_the_known_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, key, needle) in [
        (
            "[receiver]\nlistn = 1\n",
            "receiver.listn",
            "max-connections",
        ),
        ("ttl = \"1m\"\n", "ttl", "under [receiver]"),
        ("[receiver]\ntoken = \"t\"\n", "receiver.token", "top level"),
        ("bogus = 1\n", "bogus", "unknown key"),
        ("config = \"other.toml\"\n", "config", "--config"),
        ("receiver = 3\n", "receiver", "table"),
    ] {
        let path = file(&dir, "kr.toml", text);
        let err = load_with(&["--config", &path], &[]).expect_err(text);
        let message = err.to_string();
        assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
        assert!(message.contains("kr.toml"), "{text}: {message}");
    }
}

#[test]
fn a_config_file_must_say_its_format_and_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = file(&dir, "receiver-config", "[receiver]\n");
    let err = load_with(&["--config", &bare], &[]).expect_err("no extension");
    let text = err.to_string();
    assert!(text.contains("receiver-config"), "{text}");
    assert!(text.contains(".toml") && text.contains(".yaml"), "{text}");

    let missing = dir.path().join("missing.toml");
    let err = load_with(&["--config", missing.to_str().expect("utf-8")], &[]).expect_err("missing");
    assert!(matches!(err, Error::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let broken = file(&dir, "broken.toml", "[receiver\n");
    let err = load_with(&["--config", &broken], &[]).expect_err("broken");
    assert!(err.to_string().contains("broken.toml"), "{err}");
}

#[test]
fn token_and_token_file_are_one_setting_decided_by_the_highest_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(&dir, "kr.toml", "token = \"from-file\"\n");
    let cli = load_with(&["--config", &path, "--token-file", "/t"], &[]).expect("load");
    assert_eq!(
        cli.token, None,
        "the file's token does not beat --token-file"
    );
    assert_eq!(cli.token_file, Some(PathBuf::from("/t")));

    let cli = load_with(&["--token", "flag"], &[("KUBE_RELAY_TOKEN_FILE", "/t")]).expect("load");
    assert_eq!(cli.token.as_deref(), Some("flag"));
    assert_eq!(cli.token_file, None, "--token beats KUBE_RELAY_TOKEN_FILE");

    let err = load_with(&["--token", "a", "--token-file", "/t"], &[]).expect_err("both");
    let text = err.to_string();
    assert!(
        text.contains("--token ") && text.contains("--token-file"),
        "{text}"
    );
    let err = load_with(
        &[],
        &[("KUBE_RELAY_TOKEN", "a"), ("KUBE_RELAY_TOKEN_FILE", "/t")],
    )
    .expect_err("both");
    assert!(err.to_string().contains("KUBE_RELAY_TOKEN_FILE"), "{err}");
}

#[test]
fn help_shows_each_variable_and_the_precedence() {
    let help = command::<Cli>(Section::Receiver)
        .render_long_help()
        .to_string();
    for needle in [
        "[env: KUBE_RELAY_RECEIVER_TTL]",
        "[env: KUBE_RELAY_TOKEN_FILE]",
        "[env: KUBE_RELAY_CONFIG]",
        "flag > environment > config file > default",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
    assert!(schema_problems::<Cli>(Section::Receiver).is_empty());
}

#[test]
fn schema_problems_name_what_would_break_the_layer() {
    #[derive(Debug, clap::Parser, serde::Deserialize)]
    struct Bad {
        #[arg(long = "other-name")]
        renamed: Option<String>,
        #[arg(long, env = "X")]
        read_by_clap: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    }
    let problems = schema_problems::<Bad>(Section::Sender).join("\n");
    for needle in [
        "renamed",
        "read_by_clap",
        "KUBE_RELAY_SENDER_PORT",
        "token_file",
    ] {
        assert!(problems.contains(needle), "{needle}: {problems}");
    }
}

#[test]
fn help_and_version_come_back_as_clap_errors_to_print() {
    for flag in ["--help", "--version"] {
        match load_with(&[flag], &[]) {
            Err(Error::CommandLine(e)) => assert!(!e.use_stderr(), "{flag} goes to stdout"),
            other => panic!("{flag}: {other:?}"),
        }
    }
}

#[test]
fn an_error_chain_says_each_cause_once() {
    let io = std::io::Error::other("connection refused");
    let outer = Error::ReadFile {
        path: PathBuf::from("/x.toml"),
        source: io,
    };
    let chain = error_chain(
        [&outer as &(dyn std::error::Error + 'static)]
            .into_iter()
            .chain(std::iter::successors(
                std::error::Error::source(&outer),
                |e| e.source(),
            )),
    );
    assert_eq!(
        chain,
        "failed to read the config file /x.toml: connection refused"
    );
    let repeats = Error::Invalid {
        setting: "x".to_owned(),
        problem: "connection refused".to_owned(),
    };
    let io = std::io::Error::other("connection refused");
    let chain = error_chain([
        &repeats as &(dyn std::error::Error + 'static),
        &io as &(dyn std::error::Error + 'static),
    ]);
    assert_eq!(chain, "x: connection refused");
}
