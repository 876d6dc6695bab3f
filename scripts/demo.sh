#!/usr/bin/env bash
# The demo: a receiver and a sender on this machine, the sender watching kube-relay's built-in
# simulated cluster (a php-apache Deployment whose HPA scales up and down as load comes and
# goes). Ctrl-C stops both.
#
#   ./scripts/demo.sh            # receiver on 127.0.0.1:9000 (senders) and :9100 (/metrics)
#   PORT_BASE=19000 ./scripts/demo.sh   # 19000 and 19100 instead
set -euo pipefail
cd "$(dirname "$0")/.."
base="${PORT_BASE:-9000}"
ingest="127.0.0.1:${base}"
http="127.0.0.1:$((base + 100))"

echo "==> building (release; the first build takes a few minutes)"
cargo build --release --quiet --bin receiver --bin sender

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/receiver --listen "$ingest" --http-listen "$http" --ttl 2m &
pids+=($!)
target/release/sender --simulate demo --target "$ingest" &
pids+=($!)

echo "==> waiting for cluster state at http://$http/metrics"
# The simulated pods start Pending and are Running a few seconds later, as in a real cluster.
start=$SECONDS
for _ in $(seq 1 150); do
  if curl -fsS "http://$http/metrics" 2>/dev/null | grep -qE '^kube_pod_status_phase\{.*phase="Running"\} 1$'; then
    echo "==> pods Running at the receiver after $((SECONDS - start)) s"
    break
  fi
  sleep 0.2
done
echo
curl -fsS "http://$http/metrics" | grep -E '^kube_pod_status_phase\{.*phase="Running"\} 1|^kube_horizontalpodautoscaler_status_(current|desired)_replicas' | head -n 12 || true
cat <<EOT

kube-relay is running:
  metrics      curl -s http://$http/metrics | grep ^kube_
  status page  http://$http/
  Prometheus   scrape http://$http/metrics (see prometheus/prometheus.yml)
The simulated load rises within a minute: watch the HPA scale php-apache up, then down:
  watch -n2 "curl -s http://$http/metrics | grep -E 'horizontalpodautoscaler_(status_desired_replicas|scaling_events_total)'"
Ctrl-C to stop.
EOT
wait
