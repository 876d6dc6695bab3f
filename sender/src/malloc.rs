//! glibc malloc tuning for a small, steady footprint.
//!
//! The sender's live heap at 10,000 pods is about 25 MiB, but with glibc's defaults its RSS
//! stayed near 90 MiB: each runtime thread gets its own arena that keeps its high-water mark,
//! and after a large buffer is freed (a 4 MiB PodMetrics list, a page of pods) glibc raises its
//! mmap and trim thresholds, so later bursts land in the heap and are never returned. One
//! arena and fixed 128 KiB thresholds bring it to about 50 MiB (see `bench/sender.sh`).
//!
//! glibc reads these settings from the environment only at start-up, and setting them from
//! inside would take `mallopt` (unsafe code, which this workspace forbids), so
//! [`tune_and_reexec`] re-executes the binary once with them set. Settings already present
//! in the environment are respected; `KUBE_RELAY_MALLOC_TUNING=off` disables the re-exec.
//!
//! A global allocator crate would need no re-exec, but measured against this (10,000 pods,
//! `sender/bench/sender.sh`, back to back) jemalloc peaked higher with its defaults (72 MiB
//! high-water against 58) and, tuned, still peaked higher and needed its settings from the
//! environment too; the figures are in `sender/README.md` (Memory).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The settings: one arena, fixed mmap and trim thresholds.
pub const TUNABLES: [(&str, &str); 3] = [
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
];

/// Set (to `on`) in the re-executed process, so it does not loop; `off` disables tuning.
pub const SWITCH: &str = "KUBE_RELAY_MALLOC_TUNING";

/// Re-executes the current binary with [`TUNABLES`] unless they (or [`SWITCH`]) are already
/// set. Returns only when no re-exec happened, with the reason; call it first thing in
/// `main`, before any thread starts.
pub fn tune_and_reexec() -> &'static str {
    if std::env::var_os(SWITCH).is_some() {
        return "already decided";
    }
    if TUNABLES
        .iter()
        .any(|(name, _)| std::env::var_os(name).is_some())
    {
        return "malloc settings given by the environment";
    }
    let Ok(exe) = std::env::current_exe() else {
        return "current executable unknown";
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // `exec` only returns on failure; the sender then runs with glibc's defaults.
    let _error = Command::new(exe)
        .args(args)
        .envs(TUNABLES)
        .env(SWITCH, "on")
        .exec();
    "re-exec failed"
}
