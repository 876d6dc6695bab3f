//! The test binary's own log lines, captured for assertions on what a library component
//! logs (a hint, a chosen delay, a peer's address). One global subscriber per test binary,
//! installed by the first [`capture`]; tests running in parallel share it, so each filters
//! the lines by something only it logs (its cluster name, its listener's address).

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Installs the capturing subscriber with `filter` (an `EnvFilter` directive such as
/// `kube_relay_sender=info`) unless one is installed already, whose filter then stays.
pub fn capture(filter: &str) {
    buffer(filter);
}

/// Everything logged since the first [`capture`].
pub fn logged() -> String {
    let Some(buf) = LOGS.get() else {
        return String::new();
    };
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();

fn buffer(filter: &str) -> &'static Mutex<Vec<u8>> {
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        // Another subscriber may already be global (a test's own): then nothing is captured
        // and the test's assertion says so.
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(buf))
            .with_env_filter(filter)
            .try_init();
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
