#!/usr/bin/env bash
# Whole-proxy load benchmark, in one run with one CPU pinning. Two suites:
#   plain: the same static backend reached directly, through nginx as a plain reverse proxy,
#          and through tollgate on an anonymous route (issue 2);
#   jwt:   an authenticated route, tollgate against HAProxy 2.6 with jwt_verify, with one
#          token for every request and with 10,000 distinct tokens cycled (issue 3), and
#          tollgate with a browser session cookie instead of the token (issue 14).
# Prints requests/s, p50 and p99 per case (median of interleaved rounds) and the ratios. See
# README.md, section "Performance", for what it measures and why.
#
#   bench/load.sh [--report FILE] [--no-build] [--help]
#
# Knobs (environment): SUITES ("plain jwt"), DURATION (10s), WARMUP (3s), CONNECTIONS (32),
# THREADS (1), ROUNDS (5), MODES ("off on": access logs off, then on), PROXY_CPU (0),
# LOAD_CPU (1), PORT_BASE (18400; the suites use PORT_BASE to PORT_BASE+14),
# NGINX_LOG_BUFFER (64k; empty for one write per line), KEEP_TMP (1 keeps the temp dir),
# NOISE_LIMIT (5 %), NOISE_TRIES (4), QUIET_TIMEOUT (600 s): see "Noise" below;
# TOLLGATE_B (another tollgate binary, measured as the extra plain case "tollgate_b", for A/B);
# TOKENS (10000: distinct tokens of the jwt suite's cycled cases); TOKEN_CACHE (10000:
# tollgate's token_cache_entries in the jwt suite; 0 verifies every signature, as HAProxy does).
#
# Adding a case: write case_NAME_start MODE (start what it needs with start_bg, wait_http,
# then set URL[NAME] and optionally HDR[NAME] or SCRIPT[NAME], a wrk Lua script that must end
# with report.lua's done()) and case_NAME_stop (usually stop_bg), and add NAME to a suite's
# SUITE_CASES and a pair to its SUITE_COMPARE.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-5}
MODES=${MODES:-off on}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-18400}
NGINX_LOG_BUFFER=${NGINX_LOG_BUFFER-64k}
# The machine may be shared: a measurement during which other processes used more than
# NOISE_LIMIT % of a core is repeated (up to NOISE_TRIES times); before each, the script waits
# up to QUIET_TIMEOUT seconds for the machine to be quiet.
NOISE_LIMIT=${NOISE_LIMIT:-5}
NOISE_TRIES=${NOISE_TRIES:-4}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-600}
# Targets of issue 2, for the verdict line: tollgate/nginx requests/s >= 1, p99 <= 1.2.
TARGET_RPS_RATIO=1.0
TARGET_P99_RATIO=1.2

BACKEND_PORT=$((PORT_BASE + 0))
NGINX_PORT=$((PORT_BASE + 1))
TOLLGATE_PORT=$((PORT_BASE + 2))
TOLLGATE_ADMIN_PORT=$((PORT_BASE + 3))
# PORT_BASE + 4 and + 5: tollgate_b. The jwt suite:
ISSUER_PORT=$((PORT_BASE + 6))
HAPROXY_JWT1_PORT=$((PORT_BASE + 7))
HAPROXY_JWT10K_PORT=$((PORT_BASE + 8))
TOLLGATE_JWT1_PORT=$((PORT_BASE + 9)) # admin + 10
TOLLGATE_JWT10K_PORT=$((PORT_BASE + 11)) # admin + 12
TOLLGATE_SESSION_PORT=$((PORT_BASE + 13)) # admin + 14

SUITES=${SUITES:-plain jwt}
TOKENS=${TOKENS:-10000}
TOKEN_CACHE=${TOKEN_CACHE:-10000}
# Targets of issue 3, for the verdict line: tollgate/haproxy requests/s > 1 in both token modes.
TARGET_JWT_RPS_RATIO=1.0

# Cases of each suite in measuring order (rotated each round), and the pairs compared as A/B.
declare -A SUITE_CASES=(
    [plain]="direct nginx tollgate"
    [jwt]="tollgate_jwt1 haproxy_jwt1 tollgate_jwt10k haproxy_jwt10k tollgate_session"
)
declare -A SUITE_COMPARE=(
    [plain]="tollgate:nginx"
    [jwt]="tollgate_jwt1:haproxy_jwt1 tollgate_jwt10k:haproxy_jwt10k tollgate_session:tollgate_jwt1"
)
TOLLGATE_B=${TOLLGATE_B:-}
if [[ -n $TOLLGATE_B ]]; then
    SUITE_CASES[plain]+=" tollgate_b"
    SUITE_COMPARE[plain]+=" tollgate_b:tollgate tollgate_b:nginx"
fi
CASES=()
declare -A URL=() HDR=() SCRIPT=()

REPORT=""
BUILD=1
while (($#)); do
    case $1 in
        --report) REPORT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

BENCH_NAME=load.sh
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------------------------------------
# Tools

has_suite() { [[ " $SUITES " == *" $1 "* ]]; }

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    if has_suite jwt; then
        command -v haproxy >/dev/null || missing+=(haproxy)
        command -v openssl >/dev/null || missing+=(openssl)
    fi
    apt_install "${missing[@]}"
}

build_tollgate() {
    command -v cargo >/dev/null || die "cargo is needed to build tollgate"
    if ((BUILD)); then
        log "cargo build --release (incremental; the first build takes minutes)"
        (cd "$ROOT" && cargo build --release --locked >&2)
    fi
    local target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    TOLLGATE=$target/release/tollgate
    [[ -x $TOLLGATE ]] || die "$TOLLGATE is missing"
}

# ---------------------------------------------------------------------------------------------
# Processes: everything started is registered and torn down on exit.

# start_bg NAME CPU COMMAND... : runs COMMAND pinned to CPU, output appended to $TMP/NAME.out.
start_bg() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >>"$TMP/$name.out" 2>&1 &
    PID[$name]=$!
}

# wait_http NAME PORT [PATH] [STATUS]: until GET PATH (/) answers STATUS (200); the process
# must stay alive meanwhile. An authenticated route is ready when it answers 401.
wait_http() {
    local name=$1 port=$2 path=${3:-/} status=${4:-200} i
    for i in $(seq 100); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path" || true) == "$status" ]]; then
            return 0
        fi
        kill -0 "${PID[$name]}" 2>/dev/null || { cat "$TMP/$name.out" >&2; die "$name exited"; }
        sleep 0.1
    done
    cat "$TMP/$name.out" >&2
    die "$name did not answer $status to GET $path on port $port"
}

# render TEMPLATE OUT [KEY=VALUE...]: substitutes @TMP@, the ports and every @KEY@ given.
render() {
    local template=$1 out=$2 kv args=()
    shift 2
    # The KEY=VALUE arguments come first, so they override the defaults after them.
    for kv in "$@" "TMP=$TMP" "BACKEND_PORT=$BACKEND_PORT" "NGINX_PORT=$NGINX_PORT" \
        "TOLLGATE_PORT=$TOLLGATE_PORT" "TOLLGATE_ADMIN_PORT=$TOLLGATE_ADMIN_PORT"; do
        args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then die "unrendered placeholder in $out"; fi
}

# ---------------------------------------------------------------------------------------------
# The backend, shared by every case: one nginx worker on the load CPU answering "ok".

start_backend() {
    render "$HERE/nginx-backend.conf.in" "$TMP/backend.conf"
    start_bg backend "$LOAD_CPU" nginx -p "$TMP" -c "$TMP/backend.conf"
    wait_http backend "$BACKEND_PORT"
}

# ---------------------------------------------------------------------------------------------
# Cases. MODE is "off" (no access log) or "on" (one access-log line per request).

case_direct_start() { URL[direct]="http://127.0.0.1:$BACKEND_PORT/"; }
case_direct_stop() { :; }

case_nginx_start() {
    local mode=$1 access="access_log off;"
    if [[ $mode == on ]]; then
        access="access_log $TMP/nginx-access.log bench${NGINX_LOG_BUFFER:+ buffer=$NGINX_LOG_BUFFER flush=1s};"
    fi
    render "$HERE/nginx-proxy.conf.in" "$TMP/nginx-proxy.conf" \
        "ACCESS_LOG=$access" "UPSTREAM_KEEPALIVE=$((CONNECTIONS * 2))"
    start_bg nginx "$PROXY_CPU" nginx -p "$TMP" -c "$TMP/nginx-proxy.conf"
    wait_http nginx "$NGINX_PORT"
    URL[nginx]="http://127.0.0.1:$NGINX_PORT/"
}
case_nginx_stop() { stop_bg nginx; }

# start_tollgate NAME BINARY PORT ADMIN_PORT MODE [TEMPLATE [KEY=VALUE...]]
start_tollgate() {
    local name=$1 binary=$2 port=$3 admin=$4 mode=$5 template=${6:-$HERE/tollgate.toml.in} level=warn
    shift $(($# < 6 ? $# : 6))
    [[ $mode == on ]] && level=info
    # tollgate watches the directory of its configuration file and wakes on every change in
    # it, so the file gets a directory of its own: the logs written to $TMP would wake it.
    mkdir -p "$TMP/$name"
    render "$template" "$TMP/$name/tollgate.toml" \
        "TOLLGATE_PORT=$port" "TOLLGATE_ADMIN_PORT=$admin" "$@"
    # Standard output carries the access log (JSON lines) in "on" mode.
    start_bg "$name" "$PROXY_CPU" env RUST_LOG="$level" "$binary" run --config "$TMP/$name/tollgate.toml"
    # Ready: listeners bound and the issuers' keys fetched.
    wait_http "$name" "$admin" /readyz 200
    URL[$name]="http://127.0.0.1:$port/"
}

case_tollgate_start() { start_tollgate tollgate "$TOLLGATE" "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT" "$1"; }
case_tollgate_stop() { stop_bg tollgate; }

# A/B: TOLLGATE_B=/path/to/another/tollgate adds the case "tollgate_b" (that binary, same
# configuration), compared with "tollgate".
case_tollgate_b_start() { start_tollgate tollgate_b "$TOLLGATE_B" "$((PORT_BASE + 4))" "$((PORT_BASE + 5))" "$1"; }
case_tollgate_b_stop() { stop_bg tollgate_b; }

# ---------------------------------------------------------------------------------------------
# The jwt suite: an authenticated route. One RSA 2048 key (PKCS#8, made by openssl) signs
# every token; tollgate's development issuer serves its JWKS, HAProxy reads its public key
# from a PEM file. Tokens: iss, aud, a role, tid, oid, azp, iat/nbf/exp, kid, typ JWT, as
# `tollgate dev token` mints them; the 10,000 differ in their `uti`.

JWT_ISS=http://127.0.0.1:8079/ # the development issuer's default `iss`
JWT_AUD=api://tollgate-bench
JWT_ROLE=Bench.Read

# mint [ARGS...]: tokens from the benchmark's key, valid for the whole run; MINT_ISS, MINT_AUD
# and MINT_ROLE replace the benchmark's iss, aud and role.
mint() {
    "$TOLLGATE" dev token --key "$TMP/jwt/key.pem" --iss "${MINT_ISS:-$JWT_ISS}" \
        --aud "${MINT_AUD:-$JWT_AUD}" --role "${MINT_ROLE:-$JWT_ROLE}" --tid 72f988bf-86f1-41af-91ab-2d7cd011db47 \
        --azp 0b3c6d5e-1f2a-4b7c-9d8e-5f6a7b8c9d0e --exp 6h "$@"
}

jwt_setup() {
    local t
    t=$(haproxy -v 2>/dev/null | sed -n 1p)
    log "$t"
    [[ $t == *"version 2.6."* ]] || log "warning: the peer to beat is HAProxy 2.6; this is: $t"
    grep -q 'USE_OPENSSL=1' <<< "$(haproxy -vv 2>/dev/null)" || die "haproxy is built without OpenSSL (no jwt_verify)"
    mkdir -p "$TMP/jwt"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/jwt/key.pem" 2>/dev/null
    openssl pkey -in "$TMP/jwt/key.pem" -pubout -out "$TMP/jwt/pub.pem"
    chmod 644 "$TMP/jwt/pub.pem"
    log "minting 1 + $TOKENS tokens"
    mint >"$TMP/jwt/token1"
    mint --count "$TOKENS" >"$TMP/jwt/tokens"
    (($(sort -u "$TMP/jwt/tokens" | wc -l) == TOKENS)) || die "expected $TOKENS distinct tokens"
    # Tokens both proxies must refuse, to check they do before measuring.
    local good other
    good=$(<"$TMP/jwt/token1")
    other=$(head -1 "$TMP/jwt/tokens")
    # A valid header and payload with another token's signature.
    printf '%s.%s\n' "${good%.*}" "${other##*.}" >"$TMP/jwt/bad-signature"
    MINT_AUD=api://someone-else mint >"$TMP/jwt/bad-aud"
    MINT_ISS=https://login.example/other/ mint >"$TMP/jwt/bad-iss"
    mint --claim exp=1700000000 >"$TMP/jwt/bad-exp"
    render "$HERE/tokens.lua.in" "$TMP/jwt/tokens.lua" "TOKENS=$TMP/jwt/tokens" "HERE=$HERE"
    start_bg issuer "$LOAD_CPU" "$TOLLGATE" dev --port "$ISSUER_PORT" --key "$TMP/jwt/key.pem" --iss "$JWT_ISS"
    wait_http issuer "$ISSUER_PORT" /keys 200
}
jwt_teardown() { stop_bg issuer; }

# check_auth NAME PORT: the proxy answers 200 to the good tokens (the single one, the first
# and the last of the cycled ones) and 401 to none, a forged signature, another audience,
# another issuer and an expired token; exits otherwise.
check_auth() {
    local name=$1 port=$2 what token want got
    for what in token1 first last none bad-signature bad-aud bad-iss bad-exp; do
        case $what in
            token1 | bad-*) token=$(<"$TMP/jwt/$what") ;;
            first) token=$(head -1 "$TMP/jwt/tokens") ;;
            last) token=$(tail -1 "$TMP/jwt/tokens") ;;
            none) token="" ;;
        esac
        want=401
        [[ $what == token1 || $what == first || $what == last ]] && want=200
        got=$(curl -s -o /dev/null -w '%{http_code}' ${token:+-H "Authorization: Bearer $token"} "http://127.0.0.1:$port/")
        [[ $got == "$want" ]] || { cat "$TMP/$name.out" >&2; die "$name answered $got to $what (expected $want)"; }
    done
}

# start_haproxy NAME PORT MODE
start_haproxy() {
    local name=$1 port=$2 mode=$3 glog="# no logger" flog="no log"
    if [[ $mode == on ]]; then
        # Standard output (the file $TMP/NAME.out), one line per request, written at once.
        glog="log stdout format raw local0 info"
        flog="log global"
    fi
    mkdir -p "$TMP/$name"
    render "$HERE/haproxy-jwt.cfg.in" "$TMP/$name/haproxy.cfg" "GLOBAL_LOG=$glog" "FRONTEND_LOG=$flog" \
        "HAPROXY_PORT=$port" "ISS=$JWT_ISS" "AUD=$JWT_AUD" "PUBKEY=$TMP/jwt/pub.pem"
    haproxy -c -q -f "$TMP/$name/haproxy.cfg" >&2 || die "$TMP/$name/haproxy.cfg is invalid"
    start_bg "$name" "$PROXY_CPU" haproxy -db -f "$TMP/$name/haproxy.cfg"
    wait_http "$name" "$port" / 401
    check_auth "$name" "$port"
    URL[$name]="http://127.0.0.1:$port/"
}

# start_tollgate_jwt NAME PORT MODE
start_tollgate_jwt() {
    local name=$1 port=$2 mode=$3
    start_tollgate "$name" "$TOLLGATE" "$port" "$((port + 1))" "$mode" "$HERE/tollgate-jwt.toml.in" \
        "ISSUER_PORT=$ISSUER_PORT" "ISS=$JWT_ISS" "AUD=$JWT_AUD" "ROLE=$JWT_ROLE" \
        "TOKEN_CACHE=$TOKEN_CACHE"
    check_auth "$name" "$port"
    # tollgate also checks the route's requirement: a valid token without the role gets 403.
    local got
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(MINT_ROLE=Other mint)" "http://127.0.0.1:$port/")
    [[ $got == 403 ]] || die "$name answered $got to a token without the role (expected 403)"
}

# A browser session: the same route, the user signed in through the development issuer's
# sign-in provider (with the role), every request carrying the session cookie (two chunks,
# about 4.8 KB, as an Entra session's) instead of a bearer token.
case_tollgate_session_start() {
    local name=tollgate_session port=$TOLLGATE_SESSION_PORT jar="$TMP/session.jar" authorize callback form got
    export TOLLGATE_BENCH_WEB_SECRET=tollgate-dev-secret # the dev web app's (not a secret)
    start_tollgate "$name" "$TOLLGATE" "$port" "$((port + 1))" "$1" \
        "$HERE/tollgate-session.toml.in" "ISSUER_PORT=$ISSUER_PORT" "ISS=$JWT_ISS" "AUD=$JWT_AUD" "ROLE=$JWT_ROLE"
    rm -f "$jar"
    authorize=$(curl -s -o /dev/null -c "$jar" -w '%{redirect_url}' "http://127.0.0.1:$port/.auth/login/aad?post_login_redirect_uri=/")
    form="${authorize#*\?}&name=Bench&preferred_username=bench%40tollgate.dev&oid=d3e7d3e7-0000-4000-8000-0000000000d1&roles=$JWT_ROLE&groups=&action=sign_in"
    callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "$form" "${authorize%%\?*}")
    curl -s -o /dev/null -b "$jar" -c "$jar" "$callback"
    HDR[$name]="Cookie: $(awk '$6 ~ /^AppServiceAuthSession/ {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$jar")"
    [[ ${HDR[$name]} == "Cookie: AppServiceAuthSession="* ]] || die "$name: sign-in gave no session cookie"
    got=$(curl -s -o /dev/null -w '%{http_code}' -H "${HDR[$name]}" "http://127.0.0.1:$port/")
    [[ $got == 200 ]] || die "$name answered $got with the session cookie (expected 200)"
    got=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
    [[ $got == 401 ]] || die "$name answered $got without it (expected 401)"
}
case_tollgate_session_stop() { stop_bg tollgate_session; }

# One token for every request: a static header, wrk's fast path.
case_tollgate_jwt1_start() {
    start_tollgate_jwt tollgate_jwt1 "$TOLLGATE_JWT1_PORT" "$1"
    HDR[tollgate_jwt1]="Authorization: Bearer $(<"$TMP/jwt/token1")"
}
case_tollgate_jwt1_stop() { stop_bg tollgate_jwt1; }
case_haproxy_jwt1_start() {
    start_haproxy haproxy_jwt1 "$HAPROXY_JWT1_PORT" "$1"
    HDR[haproxy_jwt1]="Authorization: Bearer $(<"$TMP/jwt/token1")"
}
case_haproxy_jwt1_stop() { stop_bg haproxy_jwt1; }

# TOKENS distinct tokens, each request the next one (bench/tokens.lua.in).
case_tollgate_jwt10k_start() {
    start_tollgate_jwt tollgate_jwt10k "$TOLLGATE_JWT10K_PORT" "$1"
    SCRIPT[tollgate_jwt10k]=$TMP/jwt/tokens.lua
}
case_tollgate_jwt10k_stop() { stop_bg tollgate_jwt10k; }
case_haproxy_jwt10k_start() {
    start_haproxy haproxy_jwt10k "$HAPROXY_JWT10K_PORT" "$1"
    SCRIPT[haproxy_jwt10k]=$TMP/jwt/tokens.lua
}
case_haproxy_jwt10k_stop() { stop_bg haproxy_jwt10k; }

# ---------------------------------------------------------------------------------------------
# Noise: CPU time used by processes that are neither this script's descendants (the backend,
# the proxies, wrk) nor kernel threads (loopback softirq work is the benchmark's own).

CLK_TCK=$(getconf CLK_TCK)

# Prints "pid ticks" (utime + stime) for every such foreign process.
foreign_snapshot() {
    # Processes may exit between the glob and the read: cat then fails, harmlessly.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v me=$$ '
        { pid = $1; rest = $0; sub(/^[0-9]+ \(.*\) /, "", rest); split(rest, f, " ")
          ppid[pid] = f[2]; ticks[pid] = f[12] + f[13] }
        END {
            for (p in ticks) {
                q = p; ours = 0
                for (d = 0; d < 64 && q > 1; d++) { if (q == me || q == 2) { ours = 1; break }; q = ppid[q] }
                if (!ours) print p, ticks[p]
            }
        }'
}

# foreign_percent BEFORE AFTER SECONDS: share of one core the foreign processes used between two
# snapshots (processes that started in between count from zero).
foreign_percent() {
    awk -v secs="$3" -v hz="$CLK_TCK" 'FNR == NR { before[$1] = $2; next }
        { d = $2 - before[$1]; if (d > 0) sum += d }
        END { printf "%d", sum * 100 / hz / secs }' "$1" "$2"
}

# Waits until foreign processes use less than NOISE_LIMIT % of a core over a second.
wait_quiet() {
    local waited=0 busy
    while :; do
        foreign_snapshot >"$TMP/quiet.0"
        sleep 1
        foreign_snapshot >"$TMP/quiet.1"
        busy=$(foreign_percent "$TMP/quiet.0" "$TMP/quiet.1" 1)
        ((busy >= NOISE_LIMIT)) || return 0
        if ((waited >= QUIET_TIMEOUT)); then
            log "warning: other processes still use ${busy}% of a core; measuring anyway"
            return 0
        fi
        ((waited % 60)) || log "other processes use ${busy}% of a core; waiting for a quiet machine"
        sleep 4
        waited=$((waited + 5))
    done
}

# ---------------------------------------------------------------------------------------------
# Measuring

# Busy, total and stolen jiffies of one CPU, from /proc/stat. Steal is time the hypervisor
# gave to other guests while this one wanted the CPU.
cpu_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6, $9 }' /proc/stat
}

# measure MODE CASE ROUND: warm up, run wrk pinned to the load CPU, append one TSV row.
# Repeated while other processes disturbed it (see Noise).
measure() {
    local mode=$1 name=$2 round=$3 url=${URL[$2]} out line try t0 t1 other steal
    local args=(-t "$THREADS" -c "$CONNECTIONS") script=${SCRIPT[$2]:-$HERE/report.lua}
    [[ -n ${HDR[$name]:-} ]] && args+=(-H "${HDR[$name]}")
    local p0 l0 p1 l1
    for ((try = 1; ; try++)); do
        wait_quiet
        taskset -c "$LOAD_CPU" wrk "${args[@]}" ${SCRIPT[$name]:+-s "${SCRIPT[$name]}"} -d "$WARMUP" "$url" >/dev/null
        foreign_snapshot >"$TMP/noise.0"
        read -r -a p0 <<<"$(cpu_jiffies "$PROXY_CPU")"
        read -r -a l0 <<<"$(cpu_jiffies "$LOAD_CPU")"
        t0=$(date +%s.%N)
        out=$(taskset -c "$LOAD_CPU" wrk "${args[@]}" -d "$DURATION" --latency -s "$script" "$url")
        t1=$(date +%s.%N)
        read -r -a p1 <<<"$(cpu_jiffies "$PROXY_CPU")"
        read -r -a l1 <<<"$(cpu_jiffies "$LOAD_CPU")"
        foreign_snapshot >"$TMP/noise.1"
        other=$(foreign_percent "$TMP/noise.0" "$TMP/noise.1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
        steal=$(((p1[2] - p0[2] + l1[2] - l0[2]) * 100 / (p1[1] - p0[1] > 0 ? p1[1] - p0[1] : 1)))
        ((other + steal >= NOISE_LIMIT && try < NOISE_TRIES)) || break
        log "$name: other processes used ${other}% of a core and the hypervisor stole ${steal}% during the run; measuring again"
    done
    printf '%s\n' "$out" >>"$TMP/wrk.txt"
    line=$(grep '^BENCH ' <<<"$out") || die "no result from wrk for $name: $out"
    local -A r=()
    local kv
    for kv in ${line#BENCH }; do r[${kv%%=*}]=${kv#*=}; done
    if ((r[err_status] + r[err_connect] > 0)); then
        die "$name: ${r[err_status]} non-2xx responses, ${r[err_connect]} connect errors"
    fi
    ((r[err_read] + r[err_write] + r[err_timeout] == 0)) ||
        log "warning: $name: read/write/timeout errors ${r[err_read]}/${r[err_write]}/${r[err_timeout]}"
    local proxy_busy load_busy
    proxy_busy=$(((p1[0] - p0[0]) * 100 / (p1[1] - p0[1] > 0 ? p1[1] - p0[1] : 1)))
    load_busy=$(((l1[0] - l0[0]) * 100 / (l1[1] - l0[1] > 0 ? l1[1] - l0[1] : 1)))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$name" "$round" "${r[rps]}" \
        "${r[p50_us]}" "${r[p99_us]}" "$proxy_busy" "$load_busy" "$other" "$steal" >>"$TMP/results.tsv"
    log "$(printf 'mode=%-3s round=%s %-15s %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu%s %3s%%  cpu%s %3s%%  other %s%%  steal %s%%' \
        "$mode" "$round" "$name" "${r[rps]}" "$(awk -v u="${r[p50_us]}" 'BEGIN{print u/1000}')" \
        "$(awk -v u="${r[p99_us]}" 'BEGIN{print u/1000}')" "$PROXY_CPU" "$proxy_busy" "$LOAD_CPU" "$load_busy" "$other" "$steal")"
}

run_mode() {
    local mode=$1 round i n=${#CASES[@]} name
    for name in "${CASES[@]}"; do "case_${name}_start" "$mode"; done
    for ((round = 1; round <= ROUNDS; round++)); do
        # Rotate the order each round, so no case always runs first or last.
        for ((i = 0; i < n; i++)); do
            measure "$mode" "${CASES[$(((i + round - 1) % n))]}" "$round"
        done
        # The access logs grow by tens of MB a run; they were opened for appending.
        for name in nginx-access.log "${CASES[@]/%/.out}"; do [[ -f $TMP/$name ]] && : >"$TMP/$name"; done
    done
    for name in "${CASES[@]}"; do "case_${name}_stop"; done
}

# ---------------------------------------------------------------------------------------------
# Reporting

machine() {
    local model hv os
    model=$(lscpu | sed -n 's/^Model name: *//p' | sed -n 1p)
    hv=$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | sed -n 1p)
    # shellcheck disable=SC1091
    os=$(. /etc/os-release && echo "$PRETTY_NAME")
    echo "- CPU: $model, $(nproc) CPUs online${hv:+, $hv guest}"
    echo "- Memory: $(free -g | awk '/^Mem:/ {print $2}') GiB; OS: $os; kernel: $(uname -sr)"
    echo "- nginx $(nginx -v 2>&1 | sed 's|^nginx version: nginx/||'); wrk $(wrk -v 2>&1 | sed -n 1p | awk '{print $2}'); $(rustc -V 2>/dev/null || echo 'rustc ?')"
    if has_suite jwt; then
        echo "- $(haproxy -v 2>/dev/null | sed -n 1p | sed 's/ - https.*//'); $(openssl version | awk '{print $1, $2}') (HAProxy's jwt_verify)"
    fi
    echo "- tollgate: commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (modified)'), release build"
}

report() {
    local suite mode
    echo "## Load benchmark, $(date -u +%Y-%m-%d)"
    echo
    machine
    echo
    echo "Pinning: proxy (nginx worker, tollgate worker_threads = 1, HAProxy nbthread 1) on CPU $PROXY_CPU; backend and wrk on CPU $LOAD_CPU."
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency after a $WARMUP warm-up; median of $ROUNDS interleaved rounds."
    echo "CPU busy: share of each core busy during the measurement (user+system+irq+softirq); other load: CPU"
    echo "used meanwhile by processes outside the benchmark, and steal: CPU time the hypervisor gave other guests,"
    echo "both in % of one core (runs where they added up to $NOISE_LIMIT% or more were repeated, up to $NOISE_TRIES times)."
    for suite in $SUITES; do
        for mode in $MODES; do
            echo
            if [[ $suite == jwt ]]; then
                echo -n "### Authenticated route, tollgate against HAProxy: "
            else
                echo -n "### Plain proxying: "
            fi
            if [[ $suite == jwt && $mode == on ]]; then
                echo "access logs on (one JSON line per request; tollgate RUST_LOG=info, HAProxy log stdout)"
            elif [[ $suite == jwt ]]; then
                echo "access logs off (tollgate RUST_LOG=warn, HAProxy no log)"
            elif [[ $mode == on ]]; then
                echo "access logs on (one JSON line per request; nginx buffer=${NGINX_LOG_BUFFER:-none}, tollgate RUST_LOG=info)"
            else
                echo "access logs off (nginx access_log off, tollgate RUST_LOG=warn)"
            fi
            echo
            [[ $suite == jwt ]] && echo "jwt1: one token in every request; jwt10k: $TOKENS distinct tokens, each request the next one; session: tollgate with a browser session cookie (about 4.8 KB in two chunks) instead of the token." && echo
            report_table "$mode" "${SUITE_CASES[$suite]}" "${SUITE_COMPARE[$suite]}"
        done
    done
}

# report_table MODE CASES COMPARE: the Markdown tables of one suite in one mode.
report_table() {
    awk -F'\t' -v mode="$1" -v cases="$2" -v compare="$3" -v ntokens="$TOKENS" \
        -v pcpu="$PROXY_CPU" -v lcpu="$LOAD_CPU" -v trps="$TARGET_RPS_RATIO" -v tp99="$TARGET_P99_RATIO" -v tjwt="$TARGET_JWT_RPS_RATIO" '
        # paired(A, B): the per-round ratios A/B (both measured in the same round, minutes
        # apart at most, so slow drift of the machine cancels): "median | min-max | k of n".
        # Also sets PM (median), PA (rounds with A >= B) and PN (rounds).
        function paired(a, b,    r, list, lo, hi, x) {
            list = ""; lo = ""; hi = ""; PA = 0; PN = 0
            for (r in rounds) if ((a, r) in byround && (b, r) in byround && byround[b, r] > 0) {
                x = byround[a, r] / byround[b, r]; list = list " " x; PN++
                if (x >= 1) PA++
                if (lo == "" || x < lo) lo = x
                if (hi == "" || x > hi) hi = x
            }
            if (PN == 0) { PM = 0; return "- | - | -" }
            PM = median(list)
            return sprintf("%.2f | %.2f-%.2f | %d of %d", PM, lo, hi, PA, PN)
        }
        # sign_p(k, n): one-sided sign test, the chance of at least k of n rounds ahead if
        # both cases were equally fast (each round a coin toss).
        function sign_p(k, n,    i, c, p) {
            c = 1; p = 0
            for (i = 0; i <= n; i++) { if (i >= k) p += c; c = c * (n - i) / (i + 1) }
            return p / 2 ^ n
        }
        function median(list,    a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
            return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
        }
        $1 == mode { byround[$2, $3] = $4; rounds[$3] = 1
                     rps[$2] = rps[$2] " " $4; p50[$2] = p50[$2] " " $5; p99[$2] = p99[$2] " " $6
                     pb[$2] = pb[$2] " " $7; lb[$2] = lb[$2] " " $8; ot[$2] = ot[$2] " " $9; st[$2] = st[$2] " " $10; all[$2] = all[$2] sprintf(" %.0f", $4) }
        END {
            n = split(cases, c, " ")
            for (i = 1; i <= n; i++) incase[c[i]] = 1
            printf "| case | requests/s | p50 ms | p99 ms | CPU %s busy | CPU %s busy | other load | steal | requests/s per round |\n", pcpu, lcpu
            print "|---|--:|--:|--:|--:|--:|--:|--:|---|"
            for (i = 1; i <= n; i++) {
                k = c[i]; R[k] = median(rps[k]); P50[k] = median(p50[k]); P99[k] = median(p99[k])
                printf "| %s | %.0f | %.3f | %.3f | %d%% | %d%% | %d%% | %d%% |%s |\n", k, R[k], P50[k] / 1000, P99[k] / 1000, median(pb[k]), median(lb[k]), median(ot[k]), median(st[k]), all[k]
            }
            print ""
            print "| ratio | requests/s | paired: median of round ratios | range | rounds ahead | p50 | p99 |"
            print "|---|--:|--:|--:|--:|--:|--:|"
            m = split(compare, pairs, " ")
            for (i = 1; i <= m; i++) {
                split(pairs[i], ab, ":"); a = ab[1]; b = ab[2]
                printf "| %s / %s | %.2f | %s | %.2f | %.2f |\n", a, b, R[a] / R[b], paired(a, b), P50[a] / P50[b], P99[a] / P99[b]
            }
            if ("direct" in incase) for (i = 1; i <= n; i++) if (c[i] != "direct")
                printf "| %s / direct | %.2f | %s | %.2f | %.2f |\n", c[i], R[c[i]] / R["direct"], paired(c[i], "direct"), P50[c[i]] / P50["direct"], P99[c[i]] / P99["direct"]
            if ("tollgate" in incase && "nginx" in incase) {
                rr = R["tollgate"] / R["nginx"]; pr = P99["tollgate"] / P99["nginx"]
                paired("tollgate", "nginx"); met = rr >= trps && PM >= trps
                printf "\nTarget (tollgate/nginx requests/s >= %.1f, both as ratio of medians and as median of round ratios; p99 <= %.1fx): requests/s %.2f and %.2f (tollgate ahead in %d of %d rounds, sign test p = %.3g) %s, p99 %.2fx %s\n", trps, tp99,
                    rr, PM, PA, PN, sign_p(PA, PN), (met ? "met" : "MISSED"), pr, (pr <= tp99 ? "met" : "MISSED")
            }
            if ("tollgate_jwt1" in incase && "haproxy_jwt1" in incase && "tollgate_jwt10k" in incase && "haproxy_jwt10k" in incase) {
                r1 = R["tollgate_jwt1"] / R["haproxy_jwt1"]; rk = R["tollgate_jwt10k"] / R["haproxy_jwt10k"]
                printf "\nTarget (tollgate ahead of HAProxy in requests/s, ratio > %.1f): one token %.2f %s, %d tokens %.2f %s\n", tjwt,
                    r1, (r1 > tjwt ? "met" : "MISSED"), ntokens, rk, (rk > tjwt ? "met" : "MISSED")
            }
        }' "$TMP/results.tsv"
}

# ---------------------------------------------------------------------------------------------

main() {
    local suite
    for suite in $SUITES; do
        [[ -n ${SUITE_CASES[$suite]:-} ]] || die "unknown suite $suite (SUITES: plain, jwt)"
    done
    install_tools
    build_tollgate
    local ncpu
    ncpu=$(nproc)
    ((PROXY_CPU < ncpu && LOAD_CPU < ncpu)) || die "PROXY_CPU/LOAD_CPU must be below $ncpu"
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-load.XXXXXX")
    chmod 755 "$TMP" # nginx workers drop to an unprivileged user when started as root
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    local port
    for ((port = PORT_BASE; port <= PORT_BASE + 12; port++)); do
        port_free "$port" || die "port $port is in use (set PORT_BASE)"
    done
    : >"$TMP/results.tsv"
    start_backend
    local mode
    for suite in $SUITES; do
        read -r -a CASES <<<"${SUITE_CASES[$suite]}"
        [[ $suite == jwt ]] && jwt_setup
        for mode in $MODES; do
            log "$suite, access logs $mode: ${CASES[*]}, $ROUNDS rounds of $DURATION"
            run_mode "$mode"
        done
        [[ $suite == jwt ]] && jwt_teardown
    done
    local text
    text=$(report)
    printf '%s\n' "$text"
    if [[ -n $REPORT ]]; then printf '%s\n' "$text" >"$REPORT"; fi
}

main
