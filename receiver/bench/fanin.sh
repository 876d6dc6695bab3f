#!/usr/bin/env bash
# Fan-in figures of the README's Measured table in one command: the fan-in load generator
# (receiver/benches/fanin, `cargo bench -p kube-relay-receiver --bench fanin -- --help`)
# against the release receiver, once per row, back to back:
#   - SENDERS x SERIES (1,000 and 10,000 x 100), a change per series every 10 s, one batch a
#     second per sender, over plain TCP and over TLS + token: ack latency, receiver CPU
#     (CPU-seconds from /proc over the window), RSS and bytes per series held;
#   - with the largest size over plain TCP also: `GET /metrics` back to back (text, then
#     OpenMetrics) with the senders' ack latency meanwhile and the floor (the same client
#     reading as many bytes from a plain socket), Pushgateway holding the same series as
#     the baseline (Debian's prometheus-pushgateway), and the reconnect storm.
#
#   receiver/bench/fanin.sh                      # SENDERS="1000 10000" TRANSPORTS="plain tls" WINDOW=60
#   SENDERS=10000 TRANSPORTS=plain receiver/bench/fanin.sh
#   PRIORITY=-10 receiver/bench/fanin.sh         # see below
#
# The generator and the receiver share the machine: on a machine where other work runs
# (builds), latency figures are mostly scheduling delay. PRIORITY=-10 (root) runs the script
# in a session of its own with that autogroup nice value (`/proc/self/autogroup`: with
# autogroup on, the scheduler shares CPU between sessions, so plain `nice` does not lift the
# runs above other sessions' builds); CPU-seconds and memory do not depend on it. The load
# average is printed with every row: report it.
# The rows (`ROW | what | figures |`) are printed again at the end; each run's full output
# is in the temporary directory printed first.
set -euo pipefail

if [ -n "${PRIORITY:-}" ]; then
    # In a session of its own, so the priority covers these runs and nothing else.
    if [ -z "${FANIN_OWN_SESSION:-}" ]; then
        FANIN_OWN_SESSION=1 exec setsid --wait "$0" "$@"
    fi
    echo "$PRIORITY" >/proc/self/autogroup
fi

cd "$(dirname "$0")/../.."
SENDERS=${SENDERS:-"1000 10000"}
SERIES=${SERIES:-100}
TRANSPORTS=${TRANSPORTS:-"plain tls"}
WINDOW=${WINDOW:-60}

BENCH=$(cargo bench -p kube-relay-receiver --bench fanin --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$BENCH" ] || { echo "failed to build the fan-in bench" >&2; exit 1; }
TMP=$(mktemp -d /tmp/fanin-bench.XXXXXX)
echo "logs in $TMP" >&2


largest=$(echo "$SENDERS" | tr ' ' '\n' | sort -n | tail -1)
for senders in $SENDERS; do
    for transport in $TRANSPORTS; do
        extra=()
        [ "$transport" = tls ] && extra+=(--tls)
        if [ "$senders" = "$largest" ] && [ "$transport" = plain ]; then
            extra+=(--scrape --pushgateway --storm)
        fi
        log=$TMP/$senders-$transport.log
        echo "== $senders senders, $transport: $log" >&2
        "$BENCH" --senders "$senders" --series "$SERIES" --window "$WINDOW" "${extra[@]}" \
            >"$log" 2>&1 || echo "ROW | $senders senders, $transport | FAILED, see $log |" >>"$log"
        grep '^ROW ' "$log" >&2 || true
    done
done
echo
cat "$TMP"/*.log | grep '^ROW ' | sed 's/^ROW //'
