#!/usr/bin/env bash
# Fuzzes the wire decoder (frames and payloads, both directions) with libFuzzer.
#   ./scripts/fuzz.sh             # 10 million inputs (about 2.5 minutes on 2 cores)
#   ./scripts/fuzz.sh 300000      # a short run, as CI does
# cargo-fuzz builds on stable Rust with `-s none` (no sanitizer; coverage still guides it).
# Allocations over 64 MiB and RSS over 512 MiB count as crashes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs="${1:-10000000}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
cargo fuzz run -s none decode_frames -- \
  -runs="$runs" -max_len=4096 -rss_limit_mb=512 -malloc_limit_mb=64 >"$log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  tail -n 60 "$log"
  echo "fuzz: FAILED (exit $rc); the crashing input is under fuzz/artifacts/decode_frames/" >&2
  exit "$rc"
fi
grep -E '^Done|DONE' "$log" | tail -n 2
