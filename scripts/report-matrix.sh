#!/usr/bin/env bash
# The seed load matrix end to end on the simulated cluster, and its scaling report:
# kube-sim plays the scenario faster than real time, a sender watches it, a receiver serves
# it, a real Prometheus scrapes the receiver every second, and kube-relay-report reads
# Prometheus and writes CSV tables and PNG plots into one folder per scenario.
#
#   ./scripts/report-matrix.sh                         # echo-matrix and echo-matrix-hpa at --speed 10
#   SCENARIOS=echo-matrix-hpa SPEED=20 OUT=/tmp/r ./scripts/report-matrix.sh
#   PROFILE=dev ./scripts/report-matrix.sh             # debug binaries instead of a release build
#
# Each scenario runs until TAIL simulated seconds (default 120) after its last step, so the
# HPA's scale-down is in the report: (900 + 120) / 10 = 102 s for the echo matrices at
# --speed 10. A faster SPEED squeezes each step into fewer scrapes and usage polls: at 10, a
# one-minute step is 6 scrapes and 4 PodMetrics windows (15 simulated seconds each). Needs
# Debian's prometheus (scripts/install-test-deps.sh) and a TrueType font
# (fonts-dejavu-core; or FONT=/path/to/font.ttf).
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios="${SCENARIOS:-echo-matrix echo-matrix-hpa}"
speed="${SPEED:-10}"
tail_s="${TAIL:-120}"
out="${OUT:-report-out}"
profile="${PROFILE:-release}"
cluster="matrix"

command -v prometheus >/dev/null || {
  echo "report-matrix: no prometheus binary; run scripts/install-test-deps.sh" >&2
  exit 1
}
dir="$profile"; [ "$profile" = dev ] && dir=debug
echo "==> building ($profile)"
cargo build --profile "$profile" --quiet -p kube-relay-sim -p kube-relay-sender -p kube-relay-receiver -p kube-relay-report \
  --bin kube-sim --bin sender --bin receiver --bin kube-relay-report
bin="target/$dir"

# A loopback port nobody listens on (other tools may run beside this script).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_http() { # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "report-matrix: $1 did not answer within $2 s" >&2; return 1; }
    sleep 0.2
  done
}

for scenario in $scenarios; do
  file="sim/scenarios/$scenario.yaml"
  [ -f "$file" ] || { echo "report-matrix: no scenario file $file" >&2; exit 1; }
  # the last step's time (the `done` step), in simulated seconds
  last=$(grep -oE '\bat: *[0-9]+s' "$file" | grep -oE '[0-9]+' | sort -n | tail -n 1)
  run_s=$(awk -v l="$last" -v t="$tail_s" -v s="$speed" 'BEGIN { printf "%d", (l + t) / s + 1 }')
  dest="$out/$scenario"
  rm -rf "$dest"; mkdir -p "$dest/logs"
  work=$(mktemp -d)
  api=$(free_port); ingest=$(free_port); http=$(free_port); prom=$(free_port)

  cat >"$work/prometheus.yml" <<EOT
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: kube-relay
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:$http"]}]
EOT
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom" --log.level=warn >"$dest/logs/prometheus.log" 2>&1 &
  pids+=($!)
  "$bin/receiver" --listen "127.0.0.1:$ingest" --http-listen "127.0.0.1:$http" --ttl 10m \
    >"$dest/logs/receiver.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$prom/-/ready" 60
  wait_http "http://127.0.0.1:$http/metrics" 30

  echo "==> $scenario: $(((last + tail_s) / 60)) simulated minutes at --speed $speed, about $run_s s"
  from=$(date +%s.%N)
  "$bin/kube-sim" --listen "127.0.0.1:$api" --scenario "$scenario" --speed "$speed" \
    --kubeconfig-out "$work/kubeconfig" >"$dest/logs/kube-sim.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$api/healthz" 30
  "$bin/sender" --target "127.0.0.1:$ingest" --kubeconfig "$work/kubeconfig" --cluster "$cluster" \
    --usage-interval 1s >"$dest/logs/sender.log" 2>&1 &
  pids+=($!)
  sleep "$run_s"
  # let Prometheus take the last scrapes of the scenario's end
  sleep 2
  to=$(date +%s.%N)

  plot=()
  [ "$scenario" = echo-matrix ] && plot=(--plot-deployment echo-server)
  "$bin/kube-relay-report" --prometheus "http://127.0.0.1:$prom" --cluster "$cluster" \
    --from "$from" --to "$to" --resolution 1s --speed "$speed" --rate-window 4s --settle 1s \
    --scenario "$file" "${plot[@]}" ${FONT:+--font "$FONT"} --out "$dest"

  cleanup; pids=()
  rm -rf "$work"
done
echo "==> reports in $out/"
