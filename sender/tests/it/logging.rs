//! The binary's log output: plain text (no ANSI colours) when stderr is not a terminal, and
//! on a terminal unless `NO_COLOR` is set; a loud warning when the link has neither TLS nor
//! a token. The sender runs against a port nobody listens on, so it logs its retries.

use crate::support;

use std::time::Duration;

use kube_relay_testkit::process::{ChildProcess, bin_path};
use kube_relay_testkit::wait_until;

use support::{KubeSim, POLL};

const WAIT: Duration = Duration::from_secs(30);
const ESC: &str = "\x1b[";

/// A loopback address nothing listens on (bound, then released).
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Waits until the process has logged a failed connection attempt, then returns its log.
async fn log_after_a_retry(child: &ChildProcess) -> String {
    wait_until("a failed attempt logged", WAIT, POLL, || {
        let log = child.log();
        async move {
            Ok(log
                .contains("connection to the receiver failed")
                .then_some(log))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", child.log()))
}

#[tokio::test]
async fn logs_to_a_file_carry_no_colours_and_warn_about_a_plain_link() {
    let sim = KubeSim::start().await;
    let target = closed_port().await;
    let child = ChildProcess::spawn(
        "sender",
        [
            "--kubeconfig",
            sim.kubeconfig(),
            "--target",
            target.as_str(),
        ],
        &[("RUST_LOG", "info")],
    )
    .expect("sender starts");
    let log = log_after_a_retry(&child).await;
    assert!(!log.contains(ESC), "ANSI escapes in a log file:\n{log}");
    assert!(log.contains("NO TLS AND NO TOKEN"), "{log}");
    assert!(
        log.contains("kind=\"connect\"") || log.contains("kind=connect"),
        "{log}"
    );
}

/// Runs the sender on a pseudo-terminal (util-linux `script`), so stderr is a terminal.
fn on_a_terminal(kubeconfig: &str, target: &str, no_color: &str) -> ChildProcess {
    let sender = bin_path("sender").expect("sender built");
    let command = format!(
        "{} --kubeconfig {kubeconfig} --target {target}",
        sender.display()
    );
    // An empty NO_COLOR counts as unset (no-color.org).
    let env = [
        ("RUST_LOG", "info"),
        ("TERM", "xterm"),
        ("NO_COLOR", no_color),
    ];
    ChildProcess::spawn_program(
        "sender-on-a-tty",
        "script",
        [
            "--quiet",
            "--return",
            "--command",
            command.as_str(),
            "/dev/null",
        ],
        &env,
    )
    .expect("script starts")
}

#[tokio::test]
async fn a_terminal_gets_colours_unless_no_color_is_set() {
    let sim = KubeSim::start().await;
    let target = closed_port().await;
    let coloured = on_a_terminal(sim.kubeconfig(), &target, "");
    let log = log_after_a_retry(&coloured).await;
    assert!(log.contains(ESC), "a terminal gets colours:\n{log}");
    drop(coloured);

    let plain = on_a_terminal(sim.kubeconfig(), &target, "1");
    let log = log_after_a_retry(&plain).await;
    assert!(!log.contains(ESC), "NO_COLOR=1 on a terminal:\n{log:?}");
}
