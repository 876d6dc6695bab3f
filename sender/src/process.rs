//! The process's own figures, read from `/proc/self` at scrape time and exposed under the
//! names every Prometheus client library's process collector uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), so the usual dashboards and
//! alerts work on the sender unchanged.
//!
//! Linux only (the sender's platform); elsewhere, or when `/proc` is not mounted, there are
//! no process metrics. CPU times and the start time are in clock ticks of `USER_HZ`, which
//! Linux fixes at 100 for user space on every architecture it supports today (`times(2)`).

use std::fs;
use std::io;
use std::path::Path;

use kube_relay_proto::MetricKind;

use crate::exposition::Exposition;

/// Clock ticks per second in `/proc/<pid>/stat`.
const USER_HZ: f64 = 100.0;

/// One reading of the process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// Threads.
    pub threads: u64,
}

impl ProcessStats {
    /// Reads this process's figures from `/proc/self`. Blocking file reads (of the kernel's
    /// memory, not a disk): call it off the runtime.
    ///
    /// # Errors
    /// When `/proc` cannot be read or its content is not what Linux writes.
    pub fn read() -> io::Result<ProcessStats> {
        ProcessStats::read_from(Path::new("/proc"), Path::new("/proc/self"))
    }

    fn read_from(proc: &Path, process: &Path) -> io::Result<ProcessStats> {
        let stat = fs::read_to_string(process.join("stat"))?;
        let status = fs::read_to_string(process.join("status"))?;
        let limits = fs::read_to_string(process.join("limits"))?;
        let boot = fs::read_to_string(proc.join("stat"))?;
        let open_fds = fs::read_dir(process.join("fd"))?.count() as u64;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());

        // The command name in parentheses may hold spaces and parentheses: fields start
        // after the last `)`, at field 3 of proc(5).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .ok_or_else(|| invalid("no ')' in /proc/self/stat"))?
            .1
            .split_whitespace()
            .collect();
        let field = |n: usize| -> io::Result<f64> {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| invalid("short /proc/self/stat"))
        };
        let kib = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .map(|k: u64| k * 1024)
                .ok_or_else(|| invalid("no memory figures in /proc/self/status"))
        };
        let boot_time: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
            .ok_or_else(|| invalid("no btime in /proc/stat"))?;
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|soft| soft.parse().ok());
        Ok(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
            resident_memory_bytes: kib("VmRSS:")?,
            virtual_memory_bytes: kib("VmSize:")?,
            open_fds,
            max_fds,
            start_time_seconds: boot_time + field(22)? / USER_HZ,
            threads: field(20)? as u64,
        })
    }

    /// Appends the `process_*` families.
    pub fn encode(&self, out: &mut Exposition) {
        use MetricKind::{Counter, Gauge};
        out.single(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Counter,
            self.cpu_seconds,
        );
        out.single(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Gauge,
            self.resident_memory_bytes as f64,
        );
        out.single(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            Gauge,
            self.virtual_memory_bytes as f64,
        );
        out.single(
            "process_open_fds",
            "Number of open file descriptors.",
            Gauge,
            self.open_fds as f64,
        );
        if let Some(max) = self.max_fds {
            out.single(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                max as f64,
            );
        }
        out.single(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Gauge,
            self.start_time_seconds,
        );
        out.single(
            "process_threads",
            "Number of OS threads in the process.",
            Gauge,
            self.threads as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_proc_tree_reads_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let process = dir.path().join("self");
        std::fs::create_dir_all(process.join("fd")).expect("mkdir");
        for fd in ["0", "1", "2"] {
            std::fs::write(process.join("fd").join(fd), "").expect("fd");
        }
        // A command name with a space and a parenthesis, as a thread may be named.
        std::fs::write(
            process.join("stat"),
            "4242 (send er)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
             123400 987654 321 18446744073709551615",
        )
        .expect("stat");
        std::fs::write(
            process.join("status"),
            "Name:\tsender\nVmSize:\t  204800 kB\nVmRSS:\t   51200 kB\n",
        )
        .expect("status");
        std::fs::write(
            process.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1024                 524288               files\n",
        )
        .expect("limits");
        std::fs::write(dir.path().join("stat"), "cpu  1 2 3\nbtime 1700000000\n").expect("stat");
        let stats = ProcessStats::read_from(dir.path(), &process).expect("read");
        assert_eq!(
            stats,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_memory_bytes: 51200 * 1024,
                virtual_memory_bytes: 204800 * 1024,
                open_fds: 3,
                max_fds: Some(1024),
                start_time_seconds: 1_700_001_234.0,
                threads: 7,
            }
        );
    }

    #[test]
    fn this_process_reads_plausibly() {
        let Ok(stats) = ProcessStats::read() else {
            kube_relay_testkit::skip("/proc is not mounted");
            return;
        };
        assert!(stats.resident_memory_bytes > 0 && stats.open_fds > 0 && stats.threads > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            stats.start_time_seconds <= now + 1.0
                && stats.start_time_seconds > now - 86_400.0 * 365.0,
            "{stats:?}"
        );
    }
}
