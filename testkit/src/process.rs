//! The workspace's binaries as child processes, for tests that kill and restart them.
//!
//! `cargo test --workspace` builds every binary of the workspace into the target directory
//! beside the test executables; [`bin_path`] finds them there. A [`ChildProcess`] writes its
//! output to a log file (read with [`ChildProcess::log`]) and is killed when dropped.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// Path of a workspace binary (`sender`, `receiver`, `kube-sim`) in the target directory
/// holding the running test executable.
///
/// # Errors
/// When the binary has not been built (run `cargo build --workspace --bins`, which `cargo test
/// --workspace` does).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to locate the test executable")?;
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable is not inside a target directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {} not built; run `cargo build --workspace --bins` (cargo test --workspace does)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ChildProcess {
    /// Starts workspace binary `name` with `args` and extra environment `env`; stdout and
    /// stderr go to a log file.
    ///
    /// # Errors
    /// When the binary is missing or cannot start.
    pub fn spawn<I, S>(name: &str, args: I, env: &[(&str, &str)]) -> Result<ChildProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let path = bin_path(name)?;
        Self::spawn_program(name, path, args, env)
    }

    /// Starts any `program` (e.g. `ip netns exec … binary`), logging under `name`.
    ///
    /// # Errors
    /// When the program cannot start.
    pub fn spawn_program<P, I, S>(
        name: &str,
        program: P,
        args: I,
        env: &[(&str, &str)],
    ) -> Result<ChildProcess>
    where
        P: AsRef<OsStr>,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let path = PathBuf::from(program.as_ref());
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", path.display()))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log_path,
            _log_dir: log_dir,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn kill9(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("failed to kill {}", self.name))
    }

    /// Sends SIGTERM (graceful shutdown) and waits for the exit status.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process cannot be waited for.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = self.child.id().context("process already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("failed to run kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(self.child.wait().await?)
    }

    /// Whether the process has exited, and how.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}
