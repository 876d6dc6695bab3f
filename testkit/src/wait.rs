//! Polling with a deadline: tests wait for a condition, never for a fixed time.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};

/// Calls `probe` every `every` until it returns `Ok(Some(v))`, then returns `v`.
///
/// `Ok(None)` and `Err(_)` both mean "not yet"; the last error or `what` is reported when
/// `timeout` passes.
///
/// # Errors
/// When the condition does not hold within `timeout`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}
