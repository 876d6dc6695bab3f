#!/usr/bin/env bash
# The demo: a receiver and a sender on this machine, the sender watching kube-relay's
# simulated cluster, `kube-sim` (a php-apache Deployment whose HPA scales up and down as load
# comes and goes), through the kubeconfig kube-sim writes, as it would watch a real cluster.
# Ctrl-C stops the sender (it says goodbye to the receiver), then the receiver and kube-sim.
#
#   ./scripts/demo.sh                    # receiver on 127.0.0.1:9000 (senders) and :9100 (/metrics)
#   HTTP_PORT=9101 ./scripts/demo.sh     # /metrics on 9101 (9100 is node_exporter's default)
#   PORT_BASE=19000 ./scripts/demo.sh    # 19000 and 19100 instead
#
# Environment:
#   PORT_BASE            the senders' port; the HTTP port is PORT_BASE + 100 (default 9000)
#   INGEST_PORT          the senders' port on its own (default PORT_BASE)
#   HTTP_PORT            the HTTP port (/metrics, status page) on its own (default PORT_BASE + 100)
#   DEMO_TIMEOUT         seconds to wait for php-apache Running at the receiver (default 60)
#   KUBE_RELAY_BIN_DIR   run the `receiver`, `sender` and `kube-sim` binaries found here
#                        instead of building release ones (e.g. target/debug after
#                        `cargo build --bins`)
#
# The demo trusts nothing but its own processes. It stops with a message and exit status 1
# when a port is taken, when the receiver, the sender or kube-sim exits, or when php-apache's
# pod is not Running at the receiver within DEMO_TIMEOUT; it says "kube-relay is running" only
# once its own receiver (alive, logging that it listens on these ports, answering /healthz)
# reports the simulated cluster up with that pod Running. Logs go to files in
# a temporary directory, named at the start; the end of a failed process's log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${PORT_BASE:-9000}"
ingest_port="${INGEST_PORT:-$base}"
http_port="${HTTP_PORT:-$((base + 100))}"
ingest="127.0.0.1:${ingest_port}"
http="127.0.0.1:${http_port}"
timeout="${DEMO_TIMEOUT:-60}"
cluster="kube-sim" # the simulated cluster's name (its kubeconfig context)

fail() {
  echo "demo: $*" >&2
  exit 1
}

# Something accepting connections on 127.0.0.1:PORT (a listener on 0.0.0.0 included).
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port() { # PORT WHAT HOW-TO-MOVE
  if port_taken "$1"; then
    fail "port $1 ($2) is taken by another program on this machine; stop it or move the demo: $3
(to see which program: ss -ltnp 'sport = :$1')"
  fi
}

check_ports() {
  check_port "$ingest_port" "the receiver's port for senders" "INGEST_PORT=<free port> $0"
  check_port "$http_port" "the receiver's HTTP port; node_exporter's default is 9100" \
    "HTTP_PORT=<free port> $0"
}

check_ports
if [[ -n "${KUBE_RELAY_BIN_DIR:-}" ]]; then
  bin="$KUBE_RELAY_BIN_DIR"
  for name in receiver sender kube-sim; do
    [[ -x "$bin/$name" ]] || fail "KUBE_RELAY_BIN_DIR=$bin holds no executable $name"
  done
else
  echo "==> building (release; the first build takes a few minutes)"
  cargo build --release --quiet --bin receiver --bin sender --bin kube-sim
  bin=target/release
  check_ports # the build took a while: the ports may have been taken meanwhile
fi

logs="$(mktemp -d "${TMPDIR:-/tmp}/kube-relay-demo.XXXXXX")"
names=()
pids=()

# start NAME COMMAND...: runs COMMAND in the background, its output in $logs/NAME.log, in a
# process group of its own so that Ctrl-C at the terminal reaches only this script, which
# then stops the processes in order.
start() {
  local name="$1"
  shift
  set -m
  "$@" </dev/null >"$logs/$name.log" 2>&1 &
  local pid=$!
  set +m
  names+=("$name")
  pids+=("$pid")
  echo "==> started $name (pid $pid, log $logs/$name.log)"
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop PID NAME: SIGTERM, then up to 15 s to finish (the sender flushes and says goodbye),
# then SIGKILL.
stop() {
  local pid="$1" name="$2"
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    alive "$pid" || {
      wait "$pid" 2>/dev/null || true
      return 0
    }
    sleep 0.1
  done
  echo "==> $name did not stop within 15 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Stops every process, the last started first: the sender before the receiver, kube-sim last.
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop "${pids[$i]}" "${names[$i]}"
  done
}

# If a process has exited: says which, with the end of its log, and fails.
check_alive() {
  local i status
  for i in "${!pids[@]}"; do
    if ! alive "${pids[$i]}"; then
      status=0
      wait "${pids[$i]}" 2>/dev/null || status=$?
      echo "demo: the ${names[$i]} exited (status $status); the end of $logs/${names[$i]}.log:" >&2
      tail -n 15 "$logs/${names[$i]}.log" | sed 's/^/    /' >&2
      exit 1
    fi
  done
}

on_interrupt() {
  trap - INT TERM
  echo
  echo "==> stopping the sender, then the receiver and kube-sim"
  stop_all
  exit 0
}
trap stop_all EXIT
trap on_interrupt INT TERM

# The simulated cluster on a free loopback port; it writes its kubeconfig once it serves.
kubeconfig="$logs/kubeconfig"
start kube-sim "$bin/kube-sim" --listen 127.0.0.1:0 --scenario demo --kubeconfig-out "$kubeconfig"
started=$SECONDS
until [[ -s "$kubeconfig" ]]; do
  check_alive
  ((SECONDS - started < timeout)) || fail "kube-sim wrote no kubeconfig within $timeout s; its log: $logs/kube-sim.log"
  sleep 0.1
done
start receiver "$bin/receiver" --listen "$ingest" --http-listen "$http" --ttl 2m --log-format text
start sender "$bin/sender" --kubeconfig "$kubeconfig" --target "$ingest" --log-format text

# Ours once our receiver logged that it listens on these ports (it exits if it cannot bind
# them) and is still alive: then what answers on $http is this receiver.
ours() {
  grep -qF "receiver listening ingest=$ingest http=$http" "$logs/receiver.log"
}

echo "==> waiting up to $timeout s for Running pods at http://$http/metrics"
# The simulated pods start Pending and are Running a few seconds later, as in a real cluster.
started=$SECONDS
metrics=""
while true; do
  check_alive
  if ours && curl -fsS --max-time 2 "http://$http/healthz" >/dev/null 2>&1; then
    metrics="$(curl -fsS --max-time 5 "http://$http/metrics" 2>/dev/null || true)"
    # php-apache, the pod the demo is about, Running (not merely the first pod to start).
    if grep -qxF "relay_cluster_up{cluster=\"$cluster\"} 1" <<<"$metrics" &&
      grep -qE "^kube_pod_status_phase\{cluster=\"$cluster\",namespace=\"default\",pod=\"php-apache-.*phase=\"Running\"\} 1$" <<<"$metrics"; then
      check_alive
      break
    fi
  fi
  if ((SECONDS - started >= timeout)); then
    if ! ours; then
      fail "after $timeout s the receiver has not logged that it listens on $ingest and $http; its log: $logs/receiver.log"
    fi
    fail "no php-apache pod of cluster $cluster Running at http://$http/metrics after $timeout s; logs: $logs/receiver.log, $logs/sender.log"
  fi
  sleep 0.2
done
echo "==> pods Running at the receiver after $((SECONDS - started)) s"
echo
grep -E '^kube_pod_status_phase\{.*phase="Running"\} 1|^kube_horizontalpodautoscaler_status_(current|desired)_replicas' <<<"$metrics" | head -n 12 || true
cat <<EOT

kube-relay is running:
  metrics      curl -s http://$http/metrics | grep ^kube_
  status page  http://$http/
  Prometheus   scrape http://$http/metrics (see prometheus/prometheus.yml)
  logs         tail -f $logs/receiver.log $logs/sender.log $logs/kube-sim.log
  the cluster  KUBECONFIG=$kubeconfig kubectl get pods,hpa
The simulated load rises within a minute: watch the HPA scale php-apache up, then down:
  watch -n2 "curl -s http://$http/metrics | grep -E 'horizontalpodautoscaler_(status_desired_replicas|scaling_events_total)'"
Ctrl-C to stop.
EOT

# Supervise: a process that exits ends the demo, with the others stopped.
while true; do
  check_alive
  sleep 0.5
done
