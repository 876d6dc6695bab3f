#!/usr/bin/env bash
# The test command: installs missing test tools (Debian packages), then formatting, lints
# and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace"
cargo test --workspace
step "fuzz the wire decoder (short run; ./scripts/fuzz.sh runs 10 million)"
./scripts/fuzz.sh 300000
