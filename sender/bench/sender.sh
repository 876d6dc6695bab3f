#!/usr/bin/env bash
# Sender benchmark: RSS and CPU of the `sender` process watching 1,000 and 10,000 simulated
# pods under churn, and bytes on the wire per changed sample.
#
#   sender/bench/sender.sh                 # PODS="1000 10000" FLIPS=200 WARMUP=30 WINDOW=60
#   PODS=10000 FLIPS=1000 sender/bench/sender.sh
#   NO_BUILD=1 ...                         # use the release binaries already in target/
#   TRANSPORTS="plain tls" PODS=1000 ...   # the same load over plain TCP and over TLS + token
#   PODS=100000 FLIPS="200 1000" ...       # one run per churn rate (FLIPS takes a list)
#   SENDERS="/tmp/sender-old target/release/sender" PODS=10000 ...   # two sender builds, back to back
#   WRAP="heaptrack -o /tmp/ht" PODS=50000 ...  # the sender under a profiler (heaptrack, perf record)
#
# Each size (and churn rate) runs three processes (release builds): `kube-sim` (the simulated cluster, its own
# process so the sender's RSS is the sender's alone) with a bulk scenario of N Running pods in
# namespace `bulk` whose readiness flaps FLIPS times per second, `receiver`, and `sender`
# pointed at both. It records when the sender has listed everything (its /readyz) and when the
# receiver holds the full state (its status page: every pod, and as many series as the
# sender's relay_sender_series); after the first usage series (metrics.k8s.io reports a
# pod after ~15-30 s) and WARMUP more seconds, it measures for WINDOW seconds:
#   - RSS: VmRSS of the sender, peak and at the end, and VmHWM (peak since start, which covers
#     the initial list and snapshot);
#   - CPU: utime + stime of the sender over the window, in cores;
#   - wire: bytes the receiver read from this sender (every frame: batches, heartbeats) over
#     changed samples it applied (updates + removals), from relay_receiver_bytes_received_total
#     and relay_receiver_updates_received_total;
#   - the simulator, so it is seen not to be the bottleneck: its CPU (cores) while the sender
#     lists and over the window, its RSS, and after the window a paged list of every pod
#     (`limit=500` and `continue`, as the sender's watcher lists) timed page by page while
#     the churn goes on;
#   - baseline, same run: the seed design's JSON line ({"name","labels","value"}) for the same
#     kinds of samples (pod readiness and usage series of the run, averaged), as a ratio.
# With TRANSPORTS="plain tls" each size runs once per transport, so TLS's cost is read against
# plain TCP from the same run: `tls` gives the receiver a certificate from a throw-away CA
# (openssl CLI) and a token file, and the sender --tls-ca and --token-file. Wire bytes are
# what the receiver decoded (inside TLS), so they do not include TLS record overhead.
# With SENDERS (sender binaries, default target/release/sender) each size and transport runs
# once per binary, one after the other, so two builds (an allocator, a change) are compared in
# the same run; the `sender` column names the binary by its file name.
# With WRAP (a command line the sender is started under, such as `heaptrack -o FILE` or
# `perf record -g -o FILE --`), the figures are the sender's own process (found under the
# wrapper by its executable) but include the profiler's overhead; the glibc settings of
# `sender/src/malloc.rs` are then given in the environment, so the sender does not re-execute
# itself under the profiler. The sender is then stopped with SIGKILL, so it frees nothing on
# the way out: what a heap profiler reports as leaked is what it held at the end of the window
# (`heaptrack_print --print-leaks`, or `-F stacks --flamegraph-cost-type leaked`).
# Figures go to stdout as a table; logs stay in the temporary directory printed at the start.
set -euo pipefail

cd "$(dirname "$0")/../.."
PODS=${PODS:-"1000 10000"}
FLIPS_LIST=${FLIPS:-200}
WARMUP=${WARMUP:-30}
WINDOW=${WINDOW:-60}
TRANSPORTS=${TRANSPORTS:-plain}

if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p kube-relay-sender -p kube-relay-receiver -p kube-relay-sim --bins
fi
BIN=$PWD/target/release
SENDERS=${SENDERS:-$BIN/sender}
TMP=$(mktemp -d /tmp/sender-bench.XXXXXX)
echo "logs in $TMP" >&2
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# metric NAME LABEL_FILTER -> the value of the first matching sample (or 0)
metric() {
    curl -sf "http://127.0.0.1:$HTTP/metrics" | python3 -c '
import sys
name, needle = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    if line.startswith(name + "{") and needle in line:
        print(line.rsplit(" ", 1)[1].strip()); break
else:
    print(0)' "$1" "$2"
}

# The receiver's status page row for cluster `bench`: "<pods> <series>" (pods in any phase).
receiver_row() {
    curl -sf "http://127.0.0.1:$HTTP/" | python3 -c '
import re, sys
html = sys.stdin.read()
row = re.search(r"data-cluster=\"bench\".*?<td class=\"pods\">(.*?)</td><td class=\"series\">(\d+)</td>", html)
if not row:
    print(0, 0)
else:
    pods = sum(int(n) for n in re.findall(r"(\d+) \w+", row.group(1)))
    print(pods, row.group(2))' || echo 0 0
}

# sender_metric NAME -> the value of the sender's own unlabelled sample NAME (or 0)
sender_metric() {
    curl -sf "http://127.0.0.1:$SHTTP/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {print $2; f=1; exit} END {if (!f) print 0}'
}

# A paged list of every pod (limit=500, continue), as a watcher's initial list reads it:
# "<pods> <seconds> <slowest page ms>".
paged_list() {
    python3 -c '
import json, sys, time, urllib.parse, urllib.request
base, pods, cont, slowest = sys.argv[1], 0, "", 0.0
start = time.time()
while True:
    url = base + "/api/v1/pods?limit=500" + ("&continue=" + urllib.parse.quote(cont) if cont else "")
    t = time.time()
    page = json.load(urllib.request.urlopen(url))
    slowest = max(slowest, time.time() - t)
    pods += len(page["items"])
    cont = page["metadata"].get("continue")
    if not cont:
        break
print(pods, round(time.time() - start, 2), round(slowest * 1000))' "http://127.0.0.1:$SIM"
}

# wrapped_pid WRAPPER EXE -> the pid of the process running EXE under WRAPPER (itself or a
# descendant), waiting for it to start.
wrapped_pid() {
    for _ in $(seq 300); do
        local queue=("$1") pid
        while [ ${#queue[@]} -gt 0 ]; do
            pid=${queue[0]}; queue=("${queue[@]:1}")
            if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$2" ]; then echo "$pid"; return; fi
            # shellcheck disable=SC2207
            queue+=($(cat "/proc/$pid/task/"*/children 2>/dev/null))
        done
        sleep 0.1
    done
    echo "no process runs $2 under pid $1" >&2; exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# A throw-away CA and a receiver certificate for 127.0.0.1, for the `tls` transport.
pki() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=receiver" \
        -keyout "$TMP/receiver.key" -out "$TMP/receiver.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$TMP/ext.cnf"
    openssl x509 -req -in "$TMP/receiver.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
        -CAcreateserial -days 1 -extfile "$TMP/ext.cnf" -out "$TMP/receiver.crt" 2>/dev/null
    head -c 24 /dev/urandom | base64 > "$TMP/token"
}
case " $TRANSPORTS " in *" tls "*) pki ;; esac

RESULTS=()
SIM_RESULTS=()
for n in $PODS; do
for FLIPS in $FLIPS_LIST; do
for transport in $TRANSPORTS; do
for sender_bin in $SENDERS; do
    sender_name=$(basename "$sender_bin")
    tag=$n-$FLIPS-$transport-$sender_name
    case $transport in
        plain) RX_TLS=(); TX_TLS=() ;;
        tls) RX_TLS=(--tls-cert "$TMP/receiver.crt" --tls-key "$TMP/receiver.key" --token-file "$TMP/token")
             TX_TLS=(--tls-ca "$TMP/ca.crt" --token-file "$TMP/token") ;;
        *) echo "unknown transport $transport (plain, tls)" >&2; exit 2 ;;
    esac
    deployments=$(( (n + 99) / 100 ))
    scenario=$TMP/bench-$n.yaml
    cat > "$scenario" <<EOF
name: bench-$n
seed: 1
nodes: {count: $deployments, cpu: "32", memory: 128Gi, pods: 110}
bulk: {deployments: $deployments, replicas: 100, namespace: bulk, requests: {cpu: 10m, memory: 16Mi}}
churn: {ready_flips_per_second: $FLIPS, namespace: bulk}
events: {pod_events: false}
api: {watch_history: $(( n > 50000 ? n : 50000 ))}
EOF
    SIM=$(free_port); INGEST=$(free_port); HTTP=$(free_port); SHTTP=$(free_port)
    "$BIN/kube-sim" --listen "127.0.0.1:$SIM" --scenario "$scenario" \
        --kubeconfig-out "$TMP/kubeconfig-$tag" > "$TMP/sim-$tag.log" 2>&1 &
    sim_pid=$!; PIDS+=("$sim_pid")
    # The receiver's default cap (500,000 series per cluster) is below what 100,000 pods
    # make (~27 series each): raised, so the receiver can hold the whole cluster.
    "$BIN/receiver" --listen "127.0.0.1:$INGEST" --http-listen "127.0.0.1:$HTTP" \
        --max-series-per-cluster $(( n * 40 > 500000 ? n * 40 : 500000 )) "${RX_TLS[@]}" > "$TMP/receiver-$tag.log" 2>&1 &
    receiver_pid=$!; PIDS+=("$receiver_pid")
    # The simulator builds its cluster before it writes the kubeconfig (100,000 pods: tens of
    # seconds).
    for _ in $(seq 3000); do [ -s "$TMP/kubeconfig-$tag" ] && break; sleep 0.2; done
    [ -s "$TMP/kubeconfig-$tag" ] || { echo "kube-sim did not start; see $TMP" >&2; exit 1; }
    sim_ticks0=$(cpu_ticks "$sim_pid")
    start=$(date +%s.%N)
    # shellcheck disable=SC2086 # WRAP is a command line, split on purpose
    ${WRAP:+env MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 $WRAP} \
        "$sender_bin" --kubeconfig "$TMP/kubeconfig-$tag" --target "127.0.0.1:$INGEST" \
        --cluster bench --http-listen "127.0.0.1:$SHTTP" "${TX_TLS[@]}" \
        > "$TMP/sender-$tag.log" 2>&1 &
    sender_pid=$!; PIDS+=("$sender_pid")
    wrapper_pid=$sender_pid
    if [ -n "${WRAP:-}" ]; then
        sender_pid=$(wrapped_pid "$wrapper_pid" "$(readlink -f "$sender_bin")")
    fi
    since() { python3 -c "import time; print(round(time.time() - $1, 1))"; }

    # Listed: every watcher completed its first list. Synced: the receiver holds every pod
    # and every series the sender holds. Both read from small pages (the status page and the
    # sender's own metrics), not the receiver's /metrics, which is large at 100,000 pods.
    listed=""
    for _ in $(seq 3000); do
        if [ -z "$listed" ] && curl -sf "http://127.0.0.1:$SHTTP/readyz" > /dev/null; then
            listed=$(since "$start")
        fi
        read -r rx_pods rx_series < <(receiver_row)
        if [ -n "$listed" ] && [ "$rx_pods" -ge "$n" ] \
            && [ "$rx_series" = "$(sender_metric relay_sender_series | cut -d. -f1)" ]; then
            break
        fi
        sleep 0.2
    done
    synced=$(since "$start")
    sim_sync_cores=$(python3 -c "print(round(($(cpu_ticks "$sim_pid") - $sim_ticks0) / 100 / $synced, 2))")
    # Usage series come later: metrics.k8s.io (as the real metrics-server) reports a container
    # only after two samples, ~15-30 s in. Their one-time definitions (~100 B per series,
    # ~200 KB at 1,000 pods) are not steady state, so the window starts after them.
    # (The receiver's whole /metrics is read here, so larger clusters poll it less often.)
    poll=$(( n > 20000 ? 5 : 1 ))
    for _ in $(seq $(( 240 / poll ))); do
        usage=$(curl -sf "http://127.0.0.1:$HTTP/metrics" \
            | grep -c '^container_cpu_usage_seconds_total{cluster="bench",namespace="bulk"' || true)
        [ "$usage" -ge "$n" ] && break
        sleep "$poll"
    done
    [ "$usage" -ge "$n" ] || echo "warning: only $usage of $n pods have usage series; the window includes their definitions" >&2
    usage_at=$(python3 -c "import time; print(round(time.time() - $start, 1))")
    sleep "$WARMUP"

    bytes0=$(metric relay_receiver_bytes_received_total 'cluster="bench"')
    updates0=$(metric relay_receiver_updates_received_total 'cluster="bench"')
    ticks0=$(cpu_ticks "$sender_pid")
    sim_ticks0=$(cpu_ticks "$sim_pid")
    peak=0
    for _ in $(seq "$WINDOW"); do
        rss=$(rss_kib "$sender_pid"); [ "$rss" -gt "$peak" ] && peak=$rss
        sleep 1
    done
    ticks1=$(cpu_ticks "$sender_pid")
    sim_ticks1=$(cpu_ticks "$sim_pid")
    bytes1=$(metric relay_receiver_bytes_received_total 'cluster="bench"')
    updates1=$(metric relay_receiver_updates_received_total 'cluster="bench"')
    rss_end=$(rss_kib "$sender_pid")
    hwm=$(hwm_kib "$sender_pid")
    series=$(metric relay_sender_series 'cluster="bench"')
    sim_rss=$(rss_kib "$sim_pid")
    read -r listed_pods list_s slowest_page_ms < <(paged_list)
    [ "$listed_pods" -ge "$n" ] || echo "warning: the paged list returned $listed_pods pods of $n" >&2

    # The seed design's JSON line for the same kinds of samples (readiness and usage of the
    # bulk pods), averaged over every such series of this run.
    baseline=$(curl -sf "http://127.0.0.1:$HTTP/metrics" | python3 -c '
import json, re, sys
families = ("kube_pod_status_ready", "kube_pod_container_status_ready",
            "container_cpu_usage_seconds_total", "container_memory_working_set_bytes")
sizes = []
for line in sys.stdin:
    name = line.split("{", 1)[0]
    if name not in families or "namespace=\"bulk\"" not in line:
        continue
    body, value = line.rsplit(" ", 1)
    labels = dict(re.findall(r"(\w+)=\"((?:[^\"\\\\]|\\\\.)*)\"", body.split("{", 1)[1]))
    labels.pop("cluster", None)
    sizes.append(len(json.dumps({"name": name, "labels": labels, "value": float(value)})) + 1)
print(round(sum(sizes) / max(len(sizes), 1), 1))')

    if [ -n "${WRAP:-}" ]; then stop=KILL; else stop=TERM; fi
    kill "-$stop" "$sender_pid"; wait "$wrapper_pid" || true
    kill "$receiver_pid" "$sim_pid" 2>/dev/null || true
    wait "$receiver_pid" "$sim_pid" 2>/dev/null || true
    PIDS=()

    RESULTS+=("$(python3 -c "
n, flips, window = $n, $FLIPS, $WINDOW
db, du = $bytes1 - $bytes0, $updates1 - $updates0
cpu = ($ticks1 - $ticks0) / 100 / window
bps = db / du if du else float('nan')
print(f'{n:>6} | {flips:>5} | {\"$transport\":>5} | {\"$sender_name\":>14} | {int(float($series)):>7} | {$listed:>6} | {$synced:>6} | {$usage_at:>7} | {$hwm/1024:>8.1f} | {$peak/1024:>8.1f} | {$rss_end/1024:>7.1f} | {cpu:>6.3f} | {du/window:>9.0f} | {bps:>7.2f} | {$baseline:>8.1f} | {$baseline/bps:>6.1f}x')
")")
    SIM_RESULTS+=("$(printf '%6s | %5s | %-5s | %14s | %10s | %12s | %7s | %6s | %15s' "$n" "$FLIPS" "$transport" "$sender_name" \
        "$sim_sync_cores" "$(python3 -c "print(round(($sim_ticks1 - $sim_ticks0) / 100 / $WINDOW, 3))")" \
        "$(( sim_rss / 1024 ))" "$list_s" "$slowest_page_ms")")
done
done
done
done

echo
echo "sender benchmark: churn in readiness flips/s, warm-up ${WARMUP}s, window ${WINDOW}s"
echo "  pods | flips | link  |         sender | series  | list s | sync s | usage s | HWM MiB  | peak MiB | end MiB | cores  | samples/s | B/sample | seed B/s | ratio"
for r in "${RESULTS[@]}"; do echo "$r"; done
echo
echo "the simulator: cores while the sender listed and synced, over the window; RSS; a paged list of every pod after the window"
echo "  pods | flips | link  |         sender | sync cores | window cores | RSS MiB | list s | slowest page ms"
for r in "${SIM_RESULTS[@]}"; do echo "$r"; done
