#!/usr/bin/env bash
# The test command: formatting, lints, then every test of the workspace.
# Needs Debian's prometheus/promtool, kubectl, docker-compose and chromium on PATH
# (.ci/run installs them on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace"
cargo test --workspace
