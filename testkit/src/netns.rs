//! Two hosts on one machine: the test's own network namespace is host A, a new namespace is
//! host B, joined by a veth pair.
//!
//! [`HostB`] creates the namespace and link (root and `iproute2` required), runs workspace
//! binaries inside it, and breaks the link on demand: [`HostB::cut`] takes the link down
//! (packets vanish, no RST: exactly a pulled cable), [`HostB::set_loss`] drops a share of
//! packets at random with nftables' `numgen random` (this kernel has no `tc netem`; for
//! latency use [`crate::proxy::LinkProxy`]). Everything is removed when the value drops.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::process::ChildProcess;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why two-host tests cannot run here, or `None` when they can (root, `ip`, `nft`).
pub fn unavailable() -> Option<String> {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if euid != "0" {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "nft"] {
        if crate::prometheus::which(tool).is_none() {
            return Some(format!("`{tool}` is not installed (iproute2 / nftables)"));
        }
    }
    None
}

/// Host B: a network namespace reachable from the test's namespace over a veth pair.
#[derive(Debug)]
pub struct HostB {
    ns: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("failed to run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl HostB {
    /// Creates the namespace, the veth pair and addresses (a /30 per host pair), and brings
    /// the link up.
    ///
    /// # Errors
    /// When not root or `ip` fails; see [`unavailable`].
    pub fn create() -> Result<HostB> {
        if let Some(why) = unavailable() {
            bail!("cannot simulate two hosts: {why}");
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, n);
        // A distinct /30 per (process, pair): 10.(100 + n % 100).(pid % 250).{0..3}
        let (o2, o3) = (100 + (n % 100) as u8, (pid % 250) as u8);
        let host = HostB {
            ns: format!("krb{tag}"),
            host_if: format!("kra{tag}"),
            ns_if: format!("krb{tag}"),
            host_ip: Ipv4Addr::new(10, o2, o3, 1),
            ns_ip: Ipv4Addr::new(10, o2, o3, 2),
        };
        let (ns, hif, nif) = (&host.ns, &host.host_if, &host.ns_if);
        let (hip, nip) = (format!("{}/30", host.host_ip), format!("{}/30", host.ns_ip));
        run(&["ip", "netns", "add", ns])?;
        run(&[
            "ip", "link", "add", hif, "type", "veth", "peer", "name", nif,
        ])?;
        run(&["ip", "link", "set", nif, "netns", ns])?;
        run(&["ip", "addr", "add", &hip, "dev", hif])?;
        run(&["ip", "link", "set", hif, "up"])?;
        run(&["ip", "-n", ns, "addr", "add", &nip, "dev", nif])?;
        run(&["ip", "-n", ns, "link", "set", nif, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Host B's address as seen from host A.
    pub fn ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Host A's address as seen from host B.
    pub fn host_a_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// `host B ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ns_ip, port))
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Runs workspace binary `bin` inside host B.
    ///
    /// # Errors
    /// When the binary is missing or cannot start.
    pub fn spawn(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Result<ChildProcess> {
        let path = crate::process::bin_path(bin)?;
        let path = path.display().to_string();
        let mut full = vec!["netns", "exec", self.ns.as_str(), path.as_str()];
        full.extend_from_slice(args);
        ChildProcess::spawn_program(bin, "ip", full, env)
    }

    /// Pulls the cable: the link goes down on both ends; packets vanish without a reset.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn cut(&self) -> Result<()> {
        run(&["ip", "link", "set", &self.host_if, "down"])?;
        run(&["ip", "-n", &self.ns, "link", "set", &self.ns_if, "down"])
    }

    /// Plugs the cable back in.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn restore(&self) -> Result<()> {
        run(&["ip", "-n", &self.ns, "link", "set", &self.ns_if, "up"])?;
        run(&["ip", "link", "set", &self.host_if, "up"])
    }

    /// Drops `percent` % of the packets entering and leaving host B, at random (nftables
    /// `numgen random`); 0 removes the rule.
    ///
    /// # Errors
    /// When `nft` fails.
    pub fn set_loss(&self, percent: u8) -> Result<()> {
        let ns = self.ns.as_str();
        let _ = run(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "krloss",
        ]);
        if percent == 0 {
            return Ok(());
        }
        // `numgen random mod 100` yields 0..=99, so `< 100` is out of its range: all is all.
        let cond = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let rules = format!(
            "table inet krloss {{\n\
               chain input {{ type filter hook input priority 0; policy accept;\n\
                 iifname \"{nif}\" {cond}drop\n\
               }}\n\
               chain output {{ type filter hook output priority 0; policy accept;\n\
                 oifname \"{nif}\" {cond}drop\n\
               }}\n\
             }}\n",
            nif = self.ns_if
        );
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("loss.nft");
        std::fs::write(&file, rules)?;
        let file = file.display().to_string();
        run(&["ip", "netns", "exec", ns, "nft", "-f", &file])
    }

    /// Runs a command inside host B and returns its stdout (e.g. `curl` against a server
    /// that listens only there).
    ///
    /// # Errors
    /// When the command fails.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .context("failed to run ip netns exec")?;
        if !out.status.success() {
            bail!(
                "`{}` in {} failed: {}",
                args.join(" "),
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for HostB {
    fn drop(&mut self) {
        // Deleting the namespace destroys its end of the veth pair and with it ours.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}
