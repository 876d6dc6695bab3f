//! kube-sim's logging: `RUST_LOG` filters (default `info`), text lines on stderr, coloured
//! only when stderr is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>),
//! so log files and pipes get plain text. (The sender's rule, kept here because the
//! simulator depends on no other crate of the workspace.)

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            no_color.as_deref(),
        ))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Whether to colour log lines: only on a terminal, and only when `NO_COLOR` (its value
/// given) is unset or empty.
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
