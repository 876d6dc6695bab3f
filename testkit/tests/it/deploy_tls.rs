//! docs/deploy.md's "Securing the link" steps, run as written: the `openssl` block and the
//! `.env` block in a scratch directory (`sudo` dropped: the test runs as root), then
//! `docker-compose config` on the `.env` they leave, then the receiver binary as the image's
//! user (uid and gid 10001, through `setpriv`) with exactly the receiver environment compose
//! gives it, `/etc/kube-relay` mapped to the scratch `certs/`. The receiver must start with
//! TLS and the token, its certificate must verify against the CA for the documented name,
//! and before the documented `chgrp`/`chmod` line it must stop with "Permission denied"
//! (the files openssl and the umask leave are readable by their owner only). Docker itself
//! cannot run here.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube_relay_testkit::process::{ChildProcess, bin_path};
use kube_relay_testkit::prometheus::which;
use kube_relay_testkit::{skip, wait_until};

/// The receiver image's user and group (receiver/Dockerfile).
const IMAGE_UID: u32 = 10001;
/// Where docker-compose.yml mounts `./certs` in the receiver.
const MOUNT_TARGET: &str = "/etc/kube-relay";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

fn deploy_md() -> String {
    std::fs::read_to_string(root().join("docs/deploy.md")).expect("docs/deploy.md")
}

/// The lines of the first fenced block of `doc` that contains `needle`.
fn block_containing(doc: &str, needle: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push(line.to_owned());
        }
    }
    blocks
        .into_iter()
        .find(|b| b.iter().any(|l| l.contains(needle)))
        .unwrap_or_else(|| panic!("docs/deploy.md has no block with {needle:?}"))
}

/// Runs `script` with bash in `dir`, failing on the first failing command.
fn bash(dir: &Path, script: &str) -> Result<()> {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .context("failed to run bash")?;
    ensure!(
        out.status.success(),
        "{script}\nfailed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Why this test cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        });
    if euid.as_deref() != Some("0") {
        return Some("the documented `sudo chgrp` and running as uid 10001 need root".into());
    }
    for tool in ["openssl", "setpriv", "docker-compose"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// The receiver's environment as `docker-compose config` resolves it with the `.env` at
/// `env_file`: the variables with a value (passed-through ones the file does not set have
/// none), and the host directory mounted at [`MOUNT_TARGET`].
fn compose_receiver(env_file: &Path) -> Result<(BTreeMap<String, String>, PathBuf)> {
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", "docker-compose.yml", "--env-file"])
        .arg(env_file)
        .arg("config")
        .current_dir(root());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KUBE_RELAY_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().context("failed to run docker-compose")?;
    ensure!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_yaml::from_slice(&out.stdout)?;
    let receiver = &config["services"]["receiver"];
    let env = receiver["environment"]
        .as_object()
        .context("receiver environment")?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let mount = receiver["volumes"]
        .as_array()
        .context("receiver volumes")?
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|short| {
            let mut parts = short.split(':');
            let source = parts.next()?;
            (parts.next()? == MOUNT_TARGET).then(|| PathBuf::from(source))
        })
        .with_context(|| format!("the receiver mounts nothing at {MOUNT_TARGET}"))?;
    Ok((env, mount))
}

#[tokio::test]
async fn the_documented_tls_steps_let_the_receiver_image_user_read_its_files() -> Result<()> {
    if let Some(why) = unavailable() {
        skip(&why);
        return Ok(());
    }
    let doc = deploy_md();
    // The scratch directory stands for the clone on host B; uid 10001 must reach into it.
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let receiver_bin = dir.join("receiver");
    std::fs::copy(bin_path("receiver")?, &receiver_bin)?;
    std::fs::set_permissions(&receiver_bin, std::fs::Permissions::from_mode(0o755))?;

    // Step 1 leaves a .env with a token; the TLS steps replace it by a token file.
    let step1 = block_containing(&doc, "> .env");
    let make_env = step1
        .iter()
        .find(|l| l.contains("> .env"))
        .expect("step 1 writes .env");
    bash(dir, make_env)?;

    let pki = block_containing(&doc, "openssl req -x509");
    let (grant, setup): (Vec<&String>, Vec<&String>) =
        pki.iter().partition(|l| l.contains("chgrp"));
    ensure!(grant.len() == 1, "one chgrp line in the block: {pki:?}");
    let join = |lines: &[&String]| {
        lines
            .iter()
            .map(|l| l.replace("sudo ", ""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    bash(dir, &join(&setup))?;

    let compose_env = block_containing(&doc, "cat >> .env");
    let (up, edit): (Vec<&String>, Vec<&String>) = compose_env
        .iter()
        .partition(|l| l.starts_with("docker-compose up"));
    ensure!(up.len() == 1, "the .env block ends with docker-compose up");
    bash(dir, &join(&edit))?;
    let dotenv = std::fs::read_to_string(dir.join(".env"))?;
    assert!(
        !dotenv.lines().any(|l| l.starts_with("KUBE_RELAY_TOKEN=")),
        "the token file replaces the token: {dotenv}"
    );

    let (env, mount) = compose_receiver(&dir.join(".env"))?;
    assert_eq!(mount, root().join("certs"), "compose mounts ./certs");
    for name in [
        "KUBE_RELAY_TOKEN_FILE",
        "KUBE_RELAY_RECEIVER_TLS_CERT",
        "KUBE_RELAY_RECEIVER_TLS_KEY",
    ] {
        assert!(env.contains_key(name), "compose passes {name}: {env:?}");
    }
    // The container's view of ./certs is the scratch certs/ here.
    let certs = dir.join("certs");
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| {
            let v = match v.strip_prefix(&format!("{MOUNT_TARGET}/")) {
                Some(file) => certs.join(file).display().to_string(),
                None => v,
            };
            (k, v)
        })
        .collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let as_image_user = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "--reuid",
            "10001",
            "--regid",
            "10001",
            "--clear-groups",
            "--",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(receiver_bin.display().to_string());
        args.extend(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"].map(str::to_owned));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // Before the chgrp/chmod line: what openssl and the umask leave is the owner's alone.
    let mut receiver =
        ChildProcess::spawn_program("receiver", "setpriv", as_image_user(&[]), &env_refs)?;
    let status = wait_until(
        "the receiver to stop on files it cannot read",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let status = receiver.try_status();
            async move { Ok(status) }
        },
    )
    .await?;
    let log = receiver.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("Permission denied") && log.contains(&certs.display().to_string()),
        "names the file it cannot read: {log}"
    );

    bash(dir, &join(&grant))?;
    for file in ["receiver.key", "token"] {
        let meta = std::fs::metadata(certs.join(file))?;
        assert_eq!(meta.mode() & 0o777, 0o640, "{file}");
        assert_eq!(meta.gid(), IMAGE_UID, "{file}");
    }
    let ca_dir = std::fs::metadata(dir.join("ca"))?;
    assert_eq!(ca_dir.mode() & 0o777, 0o700, "the CA's key stays private");

    let mut receiver =
        ChildProcess::spawn_program("receiver", "setpriv", as_image_user(&[]), &env_refs)?;
    let receiver_ref = &mut receiver;
    let ingest = wait_until(
        "the receiver, as uid 10001, to listen with TLS and the token",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let exited = receiver_ref.try_status();
            let log = receiver_ref.log();
            async move {
                if let Some(status) = exited {
                    bail!("the receiver exited ({status}):\n{log}");
                }
                let Some(line) = log.lines().find(|l| l.contains("receiver listening")) else {
                    return Ok(None);
                };
                ensure!(
                    line.contains("tls=true") && line.contains("token=true"),
                    "{line}"
                );
                let ingest = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("ingest="))
                    .context("the listening line names the ingest address")?;
                Ok(Some(ingest.to_owned()))
            }
        },
    )
    .await?;

    // The sender's side: the documented name, checked against the CA's certificate.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &ingest, "-servername", "hostb"])
        .args([
            "-verify_hostname",
            "hostb",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(dir.join("ca/ca.crt"))
        .stdin(std::process::Stdio::null())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "openssl s_client:\n{text}"
    );
    let status = receiver.terminate().await?;
    assert!(status.success(), "{}", receiver.log());
    Ok(())
}
