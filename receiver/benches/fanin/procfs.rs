//! What a process costs, read from `/proc`: CPU time (utime + stime) and resident memory
//! (VmRSS, sampled to catch the peak, and VmHWM), and this process' open-files limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .with_context(|| format!("bad {field} line {line:?}"))?;
    Ok(kib * 1024)
}

/// Samples a process' RSS every 50 ms on a thread of its own, keeping the peak since the
/// last `reset_peak`.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match status_bytes(pid, "VmRSS") {
                    Ok(rss) => {
                        p.fetch_max(rss, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { peak, stop }
    }

    /// The highest RSS sampled since the last reset, and a new window started.
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU used by `pid` over a window, in cores.
pub struct CpuWindow {
    pid: u32,
    cpu: f64,
    at: Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Result<CpuWindow> {
        Ok(CpuWindow {
            pid,
            cpu: cpu_seconds(pid)?,
            at: Instant::now(),
        })
    }

    /// Cores used since `start`.
    pub fn cores(&self) -> Result<f64> {
        Ok((cpu_seconds(self.pid)? - self.cpu) / self.at.elapsed().as_secs_f64())
    }
}

/// Raises this process' soft open-files limit to `needed` (up to the hard limit, or past it
/// when allowed, as root is); the soft limit in effect afterwards, and whether it suffices.
pub fn raise_open_files(needed: u64) -> (u64, bool) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return (soft, true);
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    // Past the hard limit first (works with CAP_SYS_RESOURCE), else up to it.
    for (cur, max) in [(needed, needed.max(hard)), (needed.min(hard), hard)] {
        let wanted = Rlimit {
            current: Some(cur),
            maximum: Some(max),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            break;
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    (soft, soft >= needed)
}
