//! `scripts/demo.sh` as a user runs it, on the debug binaries (`KUBE_RELAY_BIN_DIR`) and ports
//! picked for the test: it must trust only its own processes. A taken port, a receiver that
//! exits and pods that never show up each stop it with a message and status 1, leaving no
//! process behind; "kube-relay is running" is said only once its own receiver holds Running
//! pods; Ctrl-C stops the sender first, which says goodbye to the receiver, then the receiver
//! and the simulated cluster (`kube-sim`, whose kubeconfig the sender watches through).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use kube_relay_testkit::process::bin_path;
use kube_relay_testkit::prometheus::free_loopback_addr;
use kube_relay_testkit::wait_until;

/// A run of the demo script, its output in files.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the script with the workspace's debug binaries, the given ports and `env`.
    fn start(ingest_port: u16, http_port: u16, env: &[(&str, &str)]) -> Result<Demo> {
        let bin_dir = bin_path("receiver")?
            .parent()
            .context("the receiver binary has a directory")?
            .to_path_buf();
        bin_path("sender")?;
        bin_path("kube-sim")?;
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(script());
        // A process group of its own, as a shell gives a foreground job: Ctrl-C at a terminal
        // signals that group.
        cmd.process_group(0);
        cmd.env("KUBE_RELAY_BIN_DIR", &bin_dir)
            .env("INGEST_PORT", ingest_port.to_string())
            .env("HTTP_PORT", http_port.to_string())
            // The demo's log directory is made under TMPDIR: inside the test's directory.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr"))?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("failed to run scripts/demo.sh")?;
        Ok(Demo { child, dir })
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for the script to end (bounded: it is killed after `timeout`).
    async fn status(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = &mut self.child;
        wait_until(
            "the demo script to exit",
            timeout,
            Duration::from_millis(50),
            || {
                let status = child.try_wait();
                async move { Ok(status?) }
            },
        )
        .await
    }

    /// The pids the script said it started (`==> started NAME (pid N, ...`).
    fn started_pids(&self) -> Vec<(String, u32)> {
        self.stdout()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("==> started ")?;
                let (name, rest) = rest.split_once(" (pid ")?;
                let pid = rest.split(|c: char| !c.is_ascii_digit()).next()?;
                Some((name.to_string(), pid.parse().ok()?))
            })
            .collect()
    }

    /// The log file of a started process, from the path the script printed.
    fn log(&self, name: &str) -> String {
        let marker = format!("==> started {name} (pid ");
        self.stdout()
            .lines()
            .find(|l| l.starts_with(&marker))
            .and_then(|l| l.split_once(", log "))
            .map(|(_, path)| path.trim_end_matches(')'))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM lets the script stop its children; a killed script would leave them.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .join("scripts/demo.sh")
}

/// Whether this process ignores SIGINT (inherited by the script, which then cannot trap it).
fn sigint_ignored() -> bool {
    const SIGINT: u32 = 2;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (SIGINT - 1)) != 0)
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// After a failed run: status 1, nothing claimed, every started process gone.
fn assert_failed_cleanly(demo: &Demo, status: ExitStatus) {
    let out = demo.describe();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(!demo.stdout().contains("kube-relay is running"), "{out}");
    for (name, pid) in demo.started_pids() {
        assert!(
            !process_exists(pid),
            "the {name} (pid {pid}) outlived the demo\n{out}"
        );
    }
}

#[tokio::test]
async fn a_taken_port_stops_the_demo_before_it_starts_anything() -> Result<()> {
    // Something that accepts connections, as node_exporter on 9100 would: the HTTP port ...
    let foreign = TcpListener::bind("127.0.0.1:0")?;
    let taken = foreign.local_addr()?.port();
    let free = free_loopback_addr()?.port();
    let mut demo = Demo::start(free, taken, &[])?;
    let status = demo.status(Duration::from_secs(30)).await?;
    assert_failed_cleanly(&demo, status);
    let err = demo.stderr();
    assert!(
        err.contains(&format!("port {taken} (the receiver's HTTP port"))
            && err.contains("is taken")
            && err.contains("HTTP_PORT="),
        "{}",
        demo.describe()
    );
    assert!(demo.started_pids().is_empty(), "{}", demo.describe());

    // ... and the senders' port.
    let mut demo = Demo::start(taken, free, &[])?;
    let status = demo.status(Duration::from_secs(30)).await?;
    assert_failed_cleanly(&demo, status);
    assert!(
        demo.stderr()
            .contains(&format!("port {taken} (the receiver's port for senders)")),
        "{}",
        demo.describe()
    );
    drop(foreign);
    Ok(())
}

#[tokio::test]
async fn a_receiver_that_exits_stops_the_demo_and_its_sender() -> Result<()> {
    // A setting the receiver refuses at start-up: it exits with status 2 at once.
    let mut demo = Demo::start(
        free_loopback_addr()?.port(),
        free_loopback_addr()?.port(),
        &[("KUBE_RELAY_RECEIVER_MAX_CLUSTERS", "many")],
    )?;
    let status = demo.status(Duration::from_secs(60)).await?;
    assert_failed_cleanly(&demo, status);
    let err = demo.stderr();
    assert!(
        err.contains("the receiver exited (status 2)")
            && err.contains("KUBE_RELAY_RECEIVER_MAX_CLUSTERS"),
        "the message names the process, its status and (from its log) the cause\n{}",
        demo.describe()
    );
    Ok(())
}

#[tokio::test]
async fn no_running_pods_in_time_stops_the_demo_and_its_processes() -> Result<()> {
    // A selector no pod matches: the link works, but no pod ever reaches the receiver.
    let mut demo = Demo::start(
        free_loopback_addr()?.port(),
        free_loopback_addr()?.port(),
        &[
            ("KUBE_RELAY_SENDER_SELECTOR", "app=no-such-app"),
            ("DEMO_TIMEOUT", "3"),
        ],
    )?;
    let status = demo.status(Duration::from_secs(60)).await?;
    assert_failed_cleanly(&demo, status);
    assert!(
        demo.stderr()
            .contains("no php-apache pod of cluster kube-sim Running at http://"),
        "{}",
        demo.describe()
    );
    assert_eq!(demo.started_pids().len(), 3, "{}", demo.describe());
    Ok(())
}

#[tokio::test]
async fn ctrl_c_stops_the_sender_first_and_it_says_goodbye() -> Result<()> {
    let mut demo = Demo::start(
        free_loopback_addr()?.port(),
        free_loopback_addr()?.port(),
        &[("DEMO_TIMEOUT", "120")],
    )?;
    let demo_ref = &demo;
    wait_until(
        "the demo to say kube-relay is running",
        Duration::from_secs(150),
        Duration::from_millis(100),
        || async move {
            anyhow::ensure!(
                !demo_ref.stderr().contains("demo:"),
                "the demo failed:\n{}",
                demo_ref.describe()
            );
            Ok(demo_ref
                .stdout()
                .contains("kube-relay is running")
                .then_some(()))
        },
    )
    .await?;
    let stdout = demo.stdout();
    assert!(
        stdout.contains("==> pods Running at the receiver after")
            && stdout.contains(
                "kube_pod_status_phase{cluster=\"kube-sim\",namespace=\"default\",pod=\"php-apache-"
            ),
        "{}",
        demo.describe()
    );

    // Ctrl-C at a terminal signals the foreground process group: the script's. Its children
    // run in groups of their own, so the script alone decides the order. A shell started
    // with SIGINT ignored (this test run in the background of a script) cannot trap it; the
    // demo stops the same way on SIGTERM.
    let signal = if sigint_ignored() {
        eprintln!("SIGINT is ignored in this test process: the demo is sent SIGTERM instead");
        "-TERM"
    } else {
        "-INT"
    };
    let status = Command::new("kill")
        .args([signal, "--", &format!("-{}", demo.child.id())])
        .status()?;
    assert!(status.success());
    let status = demo.status(Duration::from_secs(60)).await?;
    let out = demo.describe();
    assert_eq!(status.code(), Some(0), "{out}");
    for (name, pid) in demo.started_pids() {
        assert!(
            !process_exists(pid),
            "the {name} (pid {pid}) outlived the demo\n{out}"
        );
    }
    let sender = demo.log("sender");
    let receiver = demo.log("receiver");
    assert!(sender.contains("said goodbye"), "sender log:\n{sender}");
    let goodbye = receiver.find("sender said goodbye");
    let stopped = receiver.find("receiver stopped");
    assert!(
        matches!((goodbye, stopped), (Some(g), Some(s)) if g < s),
        "the receiver hears the goodbye, then stops; receiver log:\n{receiver}"
    );
    Ok(())
}
