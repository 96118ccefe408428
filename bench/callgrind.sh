#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable to within ~2%
# on a noisy machine, where requests/s are not. Runs the plain suite's setup (a static nginx
# backend, tollgate on an anonymous route with one worker thread), drives it with wrk, and
# counts only while the load runs (instrumentation is switched on after a warm-up).
#
#   bench/callgrind.sh [TOLLGATE_BINARY]      default: target/release/tollgate
#
# `cargo bench` writes its own build (thin LTO) to target/release/tollgate too: run
# `cargo build --release` after it, before measuring the default binary.
#
# Settings (environment): CONNECTIONS (8), SECONDS_ON (10), WARMUP (3), PORT_BASE (18420),
# CONFIG (bench/tollgate.toml.in), RUST_LOG (warn: access log off), KEEP (1: keep the
# callgrind output and print its path, for callgrind_annotate).
# Needs valgrind, wrk, nginx and curl (apt-get install valgrind wrk nginx-light curl).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../target/release/tollgate}
CONNECTIONS=${CONNECTIONS:-8}
SECONDS_ON=${SECONDS_ON:-10}
WARMUP=${WARMUP:-3}
PORT_BASE=${PORT_BASE:-18420}
CONFIG=${CONFIG:-$HERE/tollgate.toml.in}
export RUST_LOG=${RUST_LOG:-warn}

for tool in valgrind callgrind_control wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "callgrind.sh: no binary at $BIN (cargo build --release)" >&2; exit 1; }

BACKEND_PORT=$PORT_BASE
TOLLGATE_PORT=$((PORT_BASE + 1))
TOLLGATE_ADMIN_PORT=$((PORT_BASE + 2))
TMP=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$TMP"
}
trap cleanup EXIT

render() {
    sed -e "s|@TMP@|$TMP|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@TOLLGATE_PORT@|$TOLLGATE_PORT|g" -e "s|@TOLLGATE_ADMIN_PORT@|$TOLLGATE_ADMIN_PORT|g" \
        "$1" >"$2"
}

render "$HERE/nginx-backend.conf.in" "$TMP/backend.conf"
nginx -c "$TMP/backend.conf" -e "$TMP/backend-error.log" &
pids+=($!)
render "$CONFIG" "$TMP/tollgate.toml"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/callgrind.out" \
    "$BIN" run --config "$TMP/tollgate.toml" >"$TMP/tollgate.log" 2>&1 &
pids+=($!)
tollgate_pid=$!

ready=""
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.2
done
[ -n "$ready" ] || { cat "$TMP/tollgate.log" >&2; echo "callgrind.sh: tollgate never became ready" >&2; exit 1; }

requests() {
    curl -fsS "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" |
        awk '/^tollgate_requests_total\{/ { n += $NF } END { printf "%d\n", n }'
}

wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$TOLLGATE_PORT/" >/dev/null
before=$(requests)
callgrind_control -i on "$tollgate_pid" >/dev/null 2>&1
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_ON}s" "http://127.0.0.1:$TOLLGATE_PORT/" >/dev/null
callgrind_control -i off "$tollgate_pid" >/dev/null 2>&1
after=$(requests)
callgrind_control -d "$tollgate_pid" >/dev/null 2>&1
# The dump is written asynchronously: wait for the file.
for _ in $(seq 1 100); do
    ls "$TMP"/callgrind.out* >/dev/null 2>&1 && break
    sleep 0.1
done
sleep 1

# The metrics scrapes inside the window count as two requests' worth of noise: negligible.
total=$(cat "$TMP"/callgrind.out* | awk '/^totals:/ { s += $2 } END { printf "%d\n", s }')
n=$((after - before))
[ "$n" -gt 0 ] || { echo "callgrind.sh: no requests counted" >&2; exit 1; }
echo "requests: $n"
echo "instructions: $total"
echo "instructions per request: $((total / n))"
if [ "${KEEP:-0}" = 1 ]; then echo "callgrind output: $(ls "$TMP"/callgrind.out*)"; fi
