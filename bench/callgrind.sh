#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable to within ~2%
# on a noisy machine, where requests/s are not. Runs the plain suite's setup (a static nginx
# backend, tollgate on an anonymous route with one worker thread), drives it with wrk, and
# counts only while the load runs (instrumentation is switched on after a warm-up).
#
#   bench/callgrind.sh [TOLLGATE_BINARY]      default: target/release/tollgate
#   SUITE=jwt bench/callgrind.sh [BINARY]     an authenticated route instead: one RS256 token
#                                             (the development issuer's key, its JWKS served by
#                                             `tollgate dev`), a role requirement, the
#                                             verified-signature cache (TOKEN_CACHE, 10000)
#   SUITE=session bench/callgrind.sh [BINARY] the same route for a signed-in browser: the user
#                                             signs in at `tollgate dev`'s provider first, then
#                                             every request carries the session cookie
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

SUITE=${SUITE:-plain}
BACKEND_PORT=$PORT_BASE
TOLLGATE_PORT=$((PORT_BASE + 1))
TOLLGATE_ADMIN_PORT=$((PORT_BASE + 2))
ISSUER_PORT=$((PORT_BASE + 3))
JWT_ISS=http://127.0.0.1:$ISSUER_PORT/
JWT_AUD=api://tollgate-bench
JWT_ROLE=Bench.Read
TOKEN_CACHE=${TOKEN_CACHE:-10000}
[ "$SUITE" = jwt ] && CONFIG=${CONFIG_JWT:-$HERE/tollgate-jwt.toml.in}
[ "$SUITE" = session ] && CONFIG=${CONFIG_SESSION:-$HERE/tollgate-session.toml.in}
export TOLLGATE_BENCH_WEB_SECRET=tollgate-dev-secret # the dev web app's (not a secret)
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
        -e "s|@ISSUER_PORT@|$ISSUER_PORT|g" -e "s|@ISS@|$JWT_ISS|g" -e "s|@AUD@|$JWT_AUD|g" \
        -e "s|@ROLE@|$JWT_ROLE|g" -e "s|@TOKEN_CACHE@|$TOKEN_CACHE|g" \
        "$1" >"$2"
}

# The jwt suite's issuer and token: `tollgate dev` serves the JWKS of a key made here.
header=()
if [ "$SUITE" = jwt ] || [ "$SUITE" = session ]; then
    "$BIN" dev token --key "$TMP/key.pem" --iss "$JWT_ISS" --aud "$JWT_AUD" --role "$JWT_ROLE" \
        --tid 72f988bf-86f1-41af-91ab-2d7cd011db47 --exp 6h >"$TMP/token"
    "$BIN" dev --port "$ISSUER_PORT" --key "$TMP/key.pem" --iss "$JWT_ISS" >"$TMP/issuer.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$ISSUER_PORT/keys" >/dev/null 2>&1 && break
        sleep 0.1
    done
    header=(-H "Authorization: Bearer $(cat "$TMP/token")")
fi

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

# The session suite: sign in once (the authorize form posted as a browser would), then send
# the session cookie instead of the token.
if [ "$SUITE" = session ]; then
    jar="$TMP/jar"
    authorize=$(curl -s -o /dev/null -c "$jar" -w '%{redirect_url}' "http://127.0.0.1:$TOLLGATE_PORT/.auth/login/aad?post_login_redirect_uri=/")
    form="${authorize#*\?}&name=Bench&preferred_username=bench%40tollgate.dev&oid=d3e7d3e7-0000-4000-8000-0000000000d1&roles=$JWT_ROLE&groups=&action=sign_in"
    callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "$form" "${authorize%%\?*}")
    curl -s -o /dev/null -b "$jar" -c "$jar" "$callback"
    header=(-H "Cookie: $(awk '$6 ~ /^AppServiceAuthSession/ {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$jar")")
fi

requests() {
    curl -fsS "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" |
        awk '/^tollgate_requests_total\{/ { n += $NF } END { printf "%d\n", n }'
}

wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${header[@]}" "http://127.0.0.1:$TOLLGATE_PORT/" >/dev/null
before=$(requests)
callgrind_control -i on "$tollgate_pid" >/dev/null 2>&1
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_ON}s" "${header[@]}" "http://127.0.0.1:$TOLLGATE_PORT/" >/dev/null
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
total=$(cat "$TMP"/callgrind.out* | awk '/^totals:/ { s += $2 } END { printf "%.0f\n", s }')
n=$((after - before))
[ "$n" -gt 0 ] || { echo "callgrind.sh: no requests counted" >&2; exit 1; }
denied=$(curl -fsS "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" | awk '/^tollgate_requests_total\{.*decision="denied"/ { n += $NF } END { printf "%d\n", n }')
[ "$denied" -eq 0 ] || { echo "callgrind.sh: $denied requests were refused: the suite measures the wrong path" >&2; exit 1; }
echo "suite: $SUITE"
echo "requests: $n"
echo "instructions: $total"
echo "instructions per request: $((total / n))"
if [ "${KEEP:-0}" = 1 ]; then echo "callgrind output: $(ls "$TMP"/callgrind.out*)"; fi
