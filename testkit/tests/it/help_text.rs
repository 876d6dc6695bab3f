//! `sender --help` and `receiver --help` read as one product: the same precedence sentence
//! and the same explanation of variables and config files, and the same placeholder for
//! every flag the two share (`<FILE>` for a file on both, never `<PATH>` on one).

use std::collections::BTreeMap;
use std::process::Command;

use kube_relay_testkit::process::bin_path;

fn help(binary: &str) -> String {
    let out = Command::new(bin_path(binary).expect("binary built"))
        .arg("--help")
        .output()
        .expect("--help runs");
    assert!(out.status.success(), "{binary} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each long flag with its placeholder (empty for a switch).
fn flags(help: &str) -> BTreeMap<String, String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix("-")
                .filter(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
                .and_then(|rest| rest.split_once(", "))
                .map_or(line, |(_, long)| long);
            let rest = line.strip_prefix("--")?;
            let (name, placeholder) = match rest.split_once(' ') {
                Some((name, tail)) => (
                    name,
                    tail.strip_prefix('<')
                        .and_then(|t| t.split_once('>'))
                        .map_or("", |(p, _)| p),
                ),
                None => (rest, ""),
            };
            Some((name.to_owned(), placeholder.to_owned()))
        })
        .collect()
}

/// The paragraph of `help` that starts with `start`.
fn paragraph<'a>(help: &'a str, start: &str) -> &'a str {
    help.split("\n\n")
        .find(|p| p.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("--help has no paragraph starting {start:?}:\n{help}"))
        .trim()
}

#[test]
fn sender_and_receiver_help_word_settings_the_same_way() {
    let sender = help("sender");
    let receiver = help("receiver");
    for start in ["Precedence", "Environment:", "Config file"] {
        assert_eq!(
            paragraph(&sender, start),
            paragraph(&receiver, start),
            "the {start:?} paragraph differs"
        );
    }
    assert!(
        paragraph(&sender, "Precedence").contains("flag > environment > config file > default")
    );

    let sender_flags = flags(&sender);
    let receiver_flags = flags(&receiver);
    assert!(sender_flags.contains_key("token-file") && receiver_flags.contains_key("listen"));
    let mut shared = 0;
    for (flag, placeholder) in &sender_flags {
        let Some(theirs) = receiver_flags.get(flag) else {
            continue;
        };
        shared += 1;
        if flag == "http-listen" {
            // The sender's takes a host name too (it binds what the name resolves to); the
            // receiver's is a socket address. Each placeholder says which.
            assert_eq!(
                (placeholder.as_str(), theirs.as_str()),
                ("HOST:PORT", "IP:PORT")
            );
            continue;
        }
        assert_eq!(placeholder, theirs, "--{flag}: sender vs receiver");
    }
    assert!(shared >= 8, "{shared} shared flags: {sender_flags:?}");
    // One word per kind of value across both binaries.
    for (flag, placeholder) in sender_flags.iter().chain(&receiver_flags) {
        assert!(
            !matches!(
                placeholder.as_str(),
                "PATH" | "LOG_FORMAT" | "ADDR" | "SECONDS"
            ),
            "--{flag} <{placeholder}>: the binaries say FILE/DIR, FORMAT, IP:PORT or \
             HOST:PORT, DURATION"
        );
    }
}
