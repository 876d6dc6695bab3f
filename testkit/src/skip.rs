//! Tests that need something this machine may lack (root, Debian's `prometheus`, chromium,
//! kubectl) say so loudly and return, instead of failing on a developer's laptop. In CI
//! everything is installed, and a skip there would be a test that cannot fail: `.ci/run`
//! sets [`STRICT_ENV`], which turns every skip into a failure.

use std::io::Write;

/// Environment variable that makes [`skip`] fail the test (any value but empty or `0`).
pub const STRICT_ENV: &str = "KUBE_RELAY_TEST_STRICT";

/// Reports that the calling test does not run here because of `why`; the caller returns
/// right after.
///
/// # Panics
/// When [`STRICT_ENV`] is set: the test was required to run.
pub fn skip(why: &str) {
    skip_or_fail(
        std::env::var_os(STRICT_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
        why,
    );
}

fn skip_or_fail(strict: bool, why: &str) {
    if strict {
        panic!("this test must run ({STRICT_ENV} is set) but cannot: {why}");
    }
    // Straight to the process' stderr: `eprintln!` would be captured by the test harness
    // and shown only for failing tests, so a skip would pass silently.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_fails_only_when_strict() {
        assert!(std::panic::catch_unwind(|| skip_or_fail(false, "no tool")).is_ok());
        let failed = std::panic::catch_unwind(|| skip_or_fail(true, "no tool"))
            .expect_err("strict skips fail");
        let message = failed
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(
            message.contains("no tool") && message.contains(STRICT_ENV),
            "{message}"
        );
    }
}
