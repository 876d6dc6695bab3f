//! What is checked before a peer is trusted, and how refusals are reported.
//!
//! - [`secret_matches`]: the constant-time comparison behind the sender token and the HTTP
//!   password; its running time depends only on the configured secret, never on how much of
//!   a guess is right or on the guess's length.
//! - [`BasicAuth`]: HTTP basic authentication for `/metrics` and the status page.
//! - [`RefusalLog`]: refused connections are always counted, but logged at most once per
//!   peer IP and kind per [`REFUSAL_LOG_WINDOW`], with a periodic summary of what was
//!   suppressed, so an unauthenticated client cannot flood the log.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use subtle::{Choice, ConstantTimeEq};
use tokio::time::Instant;
use tracing::warn;

/// Shortest time between two log lines about refusals of the same kind from one peer IP.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Most (peer IP, kind) pairs remembered by a [`RefusalLog`]; refusals from further pairs
/// within a window are counted as suppressed, so the log's memory stays bounded.
pub const REFUSAL_LOG_MAX_PEERS: usize = 10_000;

/// Compares a presented secret with the configured one in constant time.
///
/// The work done depends only on `expected.len()`: a wrong guess of any length costs the
/// same, so timing reveals neither a matching prefix nor the secret's length.
pub fn secret_matches(expected: &[u8], given: &[u8]) -> bool {
    let mut same: Choice = (expected.len() as u64).ct_eq(&(given.len() as u64));
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        same &= e.ct_eq(&g);
    }
    same.into()
}

/// The sender token check: with no token configured every sender is accepted.
pub fn token_matches(required: Option<&str>, given: Option<&str>) -> bool {
    match (required, given) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(required), Some(given)) => secret_matches(required.as_bytes(), given.as_bytes()),
    }
}

/// HTTP basic authentication credentials required on `/metrics` and `/`.
///
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name (`--http-basic-auth-user`).
    pub user: String,
    /// Password, read from `--http-basic-auth-password-file`.
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `WWW-Authenticate` challenge sent with a 401.
pub const BASIC_AUTH_CHALLENGE: &str = "Basic realm=\"kube-relay\"";

impl BasicAuth {
    /// Whether an `Authorization` header value carries these credentials
    /// (`Basic base64(user:password)`, scheme case-insensitive). User and password are both
    /// compared in constant time.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(encoded) = strip_scheme(value) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both compared, always: no early exit on a wrong user name.
        let user_ok = secret_matches(self.user.as_bytes(), user);
        let password_ok = secret_matches(self.password.as_bytes(), password);
        user_ok & password_ok
    }
}

/// `Basic <credentials>` → the credentials, trimmed.
fn strip_scheme(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    scheme
        .eq_ignore_ascii_case(b"basic ")
        .then(|| rest.trim_ascii())
}

/// Rate-limited logging of refused connections (bad tokens, TLS failures, busy, timeouts,
/// pre-authentication protocol errors).
///
/// [`RefusalLog::refused`] logs a `WARN` line with the peer at most once per
/// [`REFUSAL_LOG_WINDOW`] for each (peer IP, kind); the others are suppressed and reported
/// in aggregate by [`RefusalLog::summarize`], which the receiver calls every window.
/// Counting in metrics is the caller's job and is never rate-limited.
#[derive(Debug)]
pub struct RefusalLog {
    window: Duration,
    state: Mutex<RefusalState>,
}

#[derive(Debug, Default)]
struct RefusalState {
    last_logged: HashMap<(IpAddr, &'static str), Instant>,
    suppressed: u64,
}

/// Whether a refusal gets its own log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// A line for this peer and kind was written less than a window ago.
    Suppress,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(REFUSAL_LOG_WINDOW)
    }
}

impl RefusalLog {
    /// A log allowing one line per (peer IP, kind) per `window`.
    pub fn new(window: Duration) -> Self {
        RefusalLog {
            window,
            state: Mutex::new(RefusalState::default()),
        }
    }

    /// The window between two lines for one peer and kind.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides whether a refusal of `kind` from `ip` at `now` is logged.
    pub fn verdict(&self, ip: IpAddr, kind: &'static str, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        if let Some(last) = state.last_logged.get_mut(&(ip, kind)) {
            if now.saturating_duration_since(*last) < window {
                state.suppressed += 1;
                return Verdict::Suppress;
            }
            *last = now;
            return Verdict::Log;
        }
        if state.last_logged.len() >= REFUSAL_LOG_MAX_PEERS {
            state
                .last_logged
                .retain(|_, last| now.saturating_duration_since(*last) < window);
            if state.last_logged.len() >= REFUSAL_LOG_MAX_PEERS {
                state.suppressed += 1;
                return Verdict::Suppress;
            }
        }
        state.last_logged.insert((ip, kind), now);
        Verdict::Log
    }

    /// Logs a refused connection from `peer` unless one of the same `kind` from the same IP
    /// was logged within the window.
    pub fn refused(&self, peer: SocketAddr, kind: &'static str, cause: &dyn fmt::Display) {
        if self.verdict(peer.ip(), kind, Instant::now()) == Verdict::Log {
            warn!(
                peer = %peer,
                kind,
                cause = %cause,
                "refused connection (further refusals of this kind from this address are \
                 not logged for {:?})",
                self.window
            );
        }
    }

    /// Takes the number of suppressed lines since the last call and forgets peers quiet for
    /// a whole window.
    pub fn take_suppressed(&self, now: Instant) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        state
            .last_logged
            .retain(|_, last| now.saturating_duration_since(*last) < window);
        std::mem::take(&mut state.suppressed)
    }

    /// Logs how many refusals were suppressed since the last summary, if any.
    pub fn summarize(&self) {
        let suppressed = self.take_suppressed(Instant::now());
        if suppressed > 0 {
            warn!(
                suppressed,
                window = ?self.window,
                "more connections were refused than logged; see \
                 relay_receiver_handshakes_rejected_total and relay_receiver_auth_failures_total"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches(None, None));
        assert!(token_matches(None, Some("anything")));
        assert!(token_matches(Some("s3cret"), Some("s3cret")));
        assert!(!token_matches(Some("s3cret"), Some("s3cre")));
        assert!(!token_matches(Some("s3cret"), Some("s3cret ")));
        assert!(!token_matches(Some("s3cret"), Some("")));
        assert!(!token_matches(Some("s3cret"), None));
        // A longer guess whose prefix is the secret padded with zeros is still wrong.
        assert!(!secret_matches(b"ab", b"ab\0"));
        assert!(!secret_matches(b"", b"\0"));
        assert!(secret_matches(b"", b""));
    }

    fn header(user_password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
        .into_bytes()
    }

    #[test]
    fn basic_auth_accepts_only_the_exact_credentials() {
        let auth = BasicAuth {
            user: "prometheus".into(),
            password: "pa:ss word".into(),
        };
        assert!(auth.accepts(Some(&header("prometheus:pa:ss word"))));
        assert!(
            auth.accepts(Some(
                format!(
                    "bAsIc   {}  ",
                    base64::engine::general_purpose::STANDARD.encode("prometheus:pa:ss word")
                )
                .as_bytes()
            ))
        );
        assert!(!auth.accepts(None));
        assert!(!auth.accepts(Some(&header("prometheus:pa:ss wor"))));
        assert!(!auth.accepts(Some(&header("Prometheus:pa:ss word"))));
        assert!(!auth.accepts(Some(&header("prometheus"))));
        assert!(!auth.accepts(Some(b"Bearer cHJvbWV0aGV1cw==")));
        assert!(!auth.accepts(Some(b"Basic !!!not-base64")));
        assert!(!auth.accepts(Some(b"Basic")));
        assert!(!format!("{auth:?}").contains("pa:ss"), "{auth:?}");
    }

    #[test]
    fn refusals_are_logged_once_per_peer_and_kind_per_window() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(log.verdict(a, "wrong_token", t0), Verdict::Log);
        for i in 1..=5 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(log.verdict(a, "wrong_token", at), Verdict::Suppress);
        }
        // Another peer, or another kind from the same peer, gets its own line.
        assert_eq!(log.verdict(b, "wrong_token", t0), Verdict::Log);
        assert_eq!(log.verdict(a, "tls", t0), Verdict::Log);
        assert_eq!(log.take_suppressed(t0 + Duration::from_secs(5)), 5);
        assert_eq!(log.take_suppressed(t0 + Duration::from_secs(6)), 0);
        // A window later, the same peer is logged again.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(log.verdict(a, "wrong_token", later), Verdict::Log);
    }

    #[test]
    fn the_refusal_log_forgets_quiet_peers_and_stays_bounded() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..REFUSAL_LOG_MAX_PEERS as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(log.verdict(ip, "busy", t0), Verdict::Log);
        }
        // Full, and everyone is within the window: a new peer is suppressed, not remembered.
        let newcomer = IpAddr::from([192, 168, 0, 1]);
        assert_eq!(log.verdict(newcomer, "busy", t0), Verdict::Suppress);
        // A window later the old entries are pruned and the newcomer is logged.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(log.verdict(newcomer, "busy", later), Verdict::Log);
        assert_eq!(log.take_suppressed(later), 1);
        let state = log.state.lock().expect("lock");
        assert_eq!(state.last_logged.len(), 1);
    }
}
