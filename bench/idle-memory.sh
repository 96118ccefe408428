#!/usr/bin/env bash
# Memory per idle keep-alive client connection: the resident set (VmRSS) of tollgate and of
# nginx, each a plain reverse proxy in front of the same static backend (nginx answering
# "ok"), measured idle after a few warm-up requests, then with 1,000 and with 10,000 client
# connections open and silent. Three kinds of connection, each in a fresh proxy process:
#   spoke:    each sent one complete GET and read the complete response, then went quiet
#             (an idle keep-alive connection);
#   silent:   opened and never sent a byte (before the first request);
#   inflight: sent one GET that is still in flight: the proxy's upstream is then a black hole
#             that never answers, so each also holds an upstream connection (1,000 only: at
#             10,000 the proxy would need 20,000 descriptors).
# KiB per connection is (RSS with N open - RSS idle) / N, from the same process. Prints a
# Markdown table. See README.md, section "Performance", "Memory per connection".
#
#   bench/idle-memory.sh [--thin] [--no-build] [--report FILE] [--help]
#
#   --thin      build with thin LTO over 4 codegen units (about a minute instead of three);
#               memory per connection does not depend on LTO
#   --no-build  use the binary as it is (TOLLGATE, default $CARGO_TARGET_DIR/release/tollgate)
#
# Knobs (environment): COUNTS ("1000 10000": cumulative, measured in one process),
# INFLIGHT_COUNTS ("1000"), MODES ("spoke silent inflight"), PROXIES ("tollgate nginx"),
# WORKER_THREADS (1: tollgate's runtime threads, as nginx's one worker), CONCURRENCY (32:
# connections being opened, or with a request in flight, at once; so each proxy needs at most
# that many upstream connections), RESPONSE_BYTES (empty: the backend answers "ok\n"; a
# size: it answers that many bytes, to see what a connection keeps after a larger response),
# SETTLE (2 s before each reading), PORT_BASE (18440; uses PORT_BASE to PORT_BASE+4),
# TOLLGATE (binary), KEEP_TMP (1 keeps the temp dir).
#
# tollgate's figure is the VmRSS of its one process, nginx's that of its one worker (the
# master, ~1 MiB more, does not change with connections). The client (bench/idle_clients.py)
# checks afterwards that no connection was closed by the proxy while measured.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

COUNTS=${COUNTS:-1000 10000}
INFLIGHT_COUNTS=${INFLIGHT_COUNTS:-1000}
MODES=${MODES:-spoke silent inflight}
PROXIES=${PROXIES:-tollgate nginx}
WORKER_THREADS=${WORKER_THREADS:-1}
CONCURRENCY=${CONCURRENCY:-32}
SETTLE=${SETTLE:-2}
PORT_BASE=${PORT_BASE:-18440}
RESPONSE_BYTES=${RESPONSE_BYTES:-}
TOLLGATE=${TOLLGATE:-}

BACKEND_PORT=$((PORT_BASE + 0))
NGINX_PORT=$((PORT_BASE + 1))
TOLLGATE_PORT=$((PORT_BASE + 2))
TOLLGATE_ADMIN_PORT=$((PORT_BASE + 3))
BLACKHOLE_PORT=$((PORT_BASE + 4))
# The proxies' upstream: the backend, or the black hole in inflight mode.
UPSTREAM_PORT=$BACKEND_PORT

BUILD=1
THIN=0
REPORT=""
while (($#)); do
    case $1 in
        --thin) THIN=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --report) REPORT=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

BENCH_NAME=idle-memory.sh
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

install_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    apt_install "${missing[@]}"
}

build_tollgate() {
    if [[ -z $TOLLGATE ]]; then
        local target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target=$ROOT/$target
        TOLLGATE=$target/release/tollgate
    fi
    if ((BUILD)); then
        command -v cargo >/dev/null || die "cargo is needed to build tollgate"
        local args=(--release --locked)
        ((THIN)) && args+=(--config 'profile.release.lto="thin"' --config 'profile.release.codegen-units=4')
        log "cargo build ${args[*]}"
        (cd "$ROOT" && cargo build "${args[@]}" >&2)
    fi
    [[ -x $TOLLGATE ]] || die "$TOLLGATE is missing"
}

# ---------------------------------------------------------------------------------------------
# Processes: everything started is registered and stopped on exit.

# start_bg NAME COMMAND... : runs COMMAND, output to $TMP/NAME.out.
start_bg() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>&1 &
    PID[$name]=$!
}

# wait_listening NAME PORT: until PORT accepts connections; NAME must stay alive meanwhile.
wait_listening() {
    local name=$1 port=$2 i
    for i in $(seq 100); do
        port_free "$port" || return 0
        kill -0 "${PID[$name]}" 2>/dev/null || { cat "$TMP/$name.out" >&2; die "$name exited"; }
        sleep 0.1
    done
    cat "$TMP/$name.out" >&2
    die "$name is not listening on port $port"
}

render() {
    local template=$1 out=$2
    sed -e "s|@TMP@|$TMP|g" -e "s|@BACKEND_PORT@|$UPSTREAM_PORT|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
        -e "s|@TOLLGATE_PORT@|$TOLLGATE_PORT|g" -e "s|@TOLLGATE_ADMIN_PORT@|$TOLLGATE_ADMIN_PORT|g" \
        -e "s|@MAX_CONNECTIONS@|$MAX_CONNECTIONS|g" -e "s|@WORKER_THREADS@|$WORKER_THREADS|g" \
        "$template" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unrendered placeholder in $out"; fi
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# Proxies: proxy_start sets PROXY_PID (the process whose RSS is measured) and PROXY_PORT.

tollgate_start() {
    render "$HERE/tollgate-idle.toml.in" "$TMP/tollgate.toml"
    start_bg proxy env RUST_LOG=warn "$TOLLGATE" run --config "$TMP/tollgate.toml"
    wait_listening proxy "$TOLLGATE_PORT"
    PROXY_PID=${PID[proxy]}
    PROXY_PORT=$TOLLGATE_PORT
}

# The connections tollgate counts as open, or "-" for nginx.
tollgate_open() {
    curl -s -m 5 "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/metrics" |
        awk '/^tollgate_open_connections\{listener="inbound"\}/ { print $2 }'
}

nginx_start() {
    render "$HERE/nginx-idle.conf.in" "$TMP/nginx-proxy.conf"
    start_bg proxy nginx -p "$TMP" -c "$TMP/nginx-proxy.conf" -e "$TMP/nginx-proxy-error.log"
    wait_listening proxy "$NGINX_PORT"
    local i
    for i in $(seq 50); do
        PROXY_PID=$(pgrep -P "${PID[proxy]}" | head -n1 || true)
        [[ -z $PROXY_PID ]] || break
        sleep 0.1
    done
    [[ -n $PROXY_PID ]] || die "no nginx worker"
    PROXY_PORT=$NGINX_PORT
}
nginx_open() { echo -; }

# ---------------------------------------------------------------------------------------------

# measure PROXY MODE: one fresh proxy process; appends a line "PROXY MODE IDLE N RSS" (KiB)
# per count to $TMP/results.
measure() {
    local proxy=$1 mode=$2 counts=$COUNTS idle n line rss open i
    # In inflight mode the proxy's upstream is the black hole, and the warm-up requests are
    # abandoned after 0.2 s.
    if [[ $mode == inflight ]]; then counts=$INFLIGHT_COUNTS UPSTREAM_PORT=$BLACKHOLE_PORT; fi
    "${proxy}_start"
    UPSTREAM_PORT=$BACKEND_PORT
    for i in $(seq 10); do curl -s -o /dev/null -m 0.2 "http://127.0.0.1:$PROXY_PORT/" || true; done
    sleep "$SETTLE"
    idle=$(rss_kib "$PROXY_PID")
    start_bg client python3 "$HERE/idle_clients.py" --port "$PROXY_PORT" --mode "$mode" \
        --counts "${counts// /,}" --concurrency "$CONCURRENCY"
    for n in $counts; do
        for i in $(seq 6000); do
            grep -qx "ready $n" "$TMP/client.out" && break
            kill -0 "${PID[client]}" 2>/dev/null || { cat "$TMP/client.out" >&2; die "the client exited"; }
            sleep 0.05
        done
        grep -qx "ready $n" "$TMP/client.out" || die "$n connections were not open after 300 s"
        sleep "$SETTLE"
        rss=$(rss_kib "$PROXY_PID")
        open=$("${proxy}_open")
        log "$(printf '%-8s %-6s %6d connections: RSS %7d KiB (idle %d), %.2f KiB per connection; open per the proxy: %s' \
            "$proxy" "$mode" "$n" "$rss" "$idle" "$(awk -v a="$rss" -v b="$idle" -v n="$n" 'BEGIN { print (a - b) / n }')" "$open")"
        [[ $open == - || $open == "$n" ]] || log "warning: tollgate counts $open open connections, not $n"
        echo "$proxy $mode $idle $n $rss" >>"$TMP/results"
        kill -USR1 "${PID[client]}"
    done
    kill -TERM "${PID[client]}"
    wait "${PID[client]}" || die "the client failed: $(cat "$TMP/client.out")"
    unset "PID[client]"
    line=$(sed -n 's/^closed_by_peer //p' "$TMP/client.out")
    ((line == 0)) || log "warning: $proxy closed $line of the $mode connections while they were measured"
    stop_bg proxy
}

report() {
    echo "## Memory per connection, $(date -u +%Y-%m-%d)"
    echo
    [[ " $PROXIES " != *" tollgate "* ]] ||
        echo "- tollgate: commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (modified)'), $TOLLGATE, worker_threads = $WORKER_THREADS"
    echo "- $(nginx -v 2>&1 | sed 's|^nginx version: ||'), one worker; $(uname -sr); $(nproc) CPUs"
    echo "- RSS: VmRSS of tollgate's process and of nginx's worker, idle (after 10 requests) and with N client connections open."
    echo "- Responses of ${RESPONSE_BYTES:-3} bytes."
    echo
    echo "| proxy | connections | N | idle RSS | RSS with N | KiB per connection |"
    echo "|---|---|--:|--:|--:|--:|"
    awk '
        function thousands(n,    s) { s = n ""; while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
        {
            kind = $2 == "spoke" ? "after one request" : $2 == "silent" ? "never spoke" : "request in flight"
            printf "| %s | %s | %s | %.1f MiB | %.1f MiB | %.1f |\n", $1, kind, thousands($4), $3 / 1024, $5 / 1024, ($5 - $3) / $4
        }' "$TMP/results"
}

main() {
    local max proxy mode i c
    install_tools
    [[ " $PROXIES " != *" tollgate "* ]] || build_tollgate
    max=0
    for c in $COUNTS; do ((c > max)) && max=$c; done
    # Room for the client connections, the upstream ones and the listeners of each process.
    MAX_CONNECTIONS=$((max + 1000))
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    (($(ulimit -n) >= MAX_CONNECTIONS)) ||
        die "ulimit -n is $(ulimit -n); $MAX_CONNECTIONS descriptors are needed (raise the hard limit)"
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-idle.XXXXXX")
    chmod 755 "$TMP" # nginx workers drop to an unprivileged user when started as root
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    local port
    for ((port = PORT_BASE; port <= PORT_BASE + 4; port++)); do
        port_free "$port" || die "port $port is in use (set PORT_BASE)"
    done
    : >"$TMP/results"
    if [[ " $MODES " == *" inflight "* ]]; then
        start_bg blackhole python3 "$HERE/idle_clients.py" --blackhole --port "$BLACKHOLE_PORT"
        for i in $(seq 100); do grep -qx ready "$TMP/blackhole.out" && break; sleep 0.1; done
        grep -qx ready "$TMP/blackhole.out" || die "the black-hole upstream did not start"
    fi
    if [[ -n $RESPONSE_BYTES ]]; then
        mkdir -p "$TMP/www"
        head -c "$RESPONSE_BYTES" /dev/urandom >"$TMP/www/body"
        chmod -R a+rX "$TMP/www"
        render "$HERE/nginx-backend-file.conf.in" "$TMP/backend.conf"
    else
        render "$HERE/nginx-backend.conf.in" "$TMP/backend.conf"
    fi
    start_bg backend nginx -p "$TMP" -c "$TMP/backend.conf" -e "$TMP/backend-error.log"
    wait_listening backend "$BACKEND_PORT"
    for proxy in $PROXIES; do
        for mode in $MODES; do measure "$proxy" "$mode"; done
    done
    local text
    text=$(report)
    printf '%s\n' "$text"
    if [[ -n $REPORT ]]; then printf '%s\n' "$text" >"$REPORT"; fi
}

main
