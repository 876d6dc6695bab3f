//! Where the opt-in proofs against published dashboards and rules (`public_dashboards`,
//! `mixin_alerts`) find their data: files the user builds from their own checkout of those
//! projects (docs/metrics.md, "Community dashboards and the kubernetes-mixin", gives the format
//! and the steps), in the directory named by [`DIR_ENV`]. The repository holds none of that
//! material, so the proofs are `#[ignore]`d and run on request:
//!
//! ```sh
//! KUBE_RELAY_PUBLIC_PROOF_DIR=/path/to/proof cargo test -p kube-relay-testkit --test it public_dashboards -- --ignored --nocapture
//! ```

use std::path::PathBuf;

/// The environment variable naming the directory that holds the proofs' data files.
pub const DIR_ENV: &str = "KUBE_RELAY_PUBLIC_PROOF_DIR";

/// The data file `name` in the [`DIR_ENV`] directory. Panics saying what to do when the
/// variable is unset or the file is missing: whoever runs an ignored proof asked for it.
pub fn file(name: &str) -> PathBuf {
    let how = "build it from your own checkout of the published dashboards and rules as \
               docs/metrics.md (\"Community dashboards and the kubernetes-mixin\") describes";
    let dir = std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            panic!("{DIR_ENV} is not set: this proof reads {name} from that directory; {how}")
        });
    let path = PathBuf::from(dir).join(name);
    assert!(
        path.is_file(),
        "{} does not exist ({DIR_ENV} names its directory); {how}",
        path.display()
    );
    path
}
