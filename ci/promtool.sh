#!/usr/bin/env bash
# /metrics passes `promtool check metrics` (Debian's prometheus package), on real traffic:
#   1. `tollgate demo`: the printed curl lines (200, 401, 403, anonymous 200) must answer what
#      their comments say; more traffic for other failure reasons; scrape /metrics.
#   2. `tollgate run` with an egress target behind a loopback IMDS stand-in (ci/mock_identity.py)
#      and an anonymous route: egress traffic, a good and a bad reload (SIGHUP); scrape.
#   3. promtool check metrics on both scrapes; the core metrics (requests, auth failures,
#      durations, JWKS, egress tokens, reloads) are present.
#   4. The Grafana dashboard's queries: PromQL syntax (promtool check rules), then a
#      Prometheus server scrapes both processes and every panel query must return data.
# Everything listens on free loopback ports. Exit 1 on any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ci_apt promtool prometheus
ci_apt curl curl
tollgate=$(tollgate_bin)
work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

failures=0
passed=0
check() { # check NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then
        passed=$((passed + 1)); printf 'ok    %s: %s\n' "$1" "$3"
    else
        failures=$((failures + 1)); printf 'FAIL  %s: expected %s, got %s\n' "$1" "$2" "$3"
    fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for FILE PATTERN: until PATTERN appears in FILE (30 s)
    for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}
# No `producer | grep -q` or `| head` here: under pipefail the producer's SIGPIPE fails a
# pipeline that matched (a CI run once reported a present metric as missing).
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# ---- 1. the demo and its printed curl lines ---------------------------------------------
log "tollgate demo"
"$tollgate" demo --port 0 --admin-port 0 > "$work/demo.out" 2>&1 &
pids+=($!)
wait_for "$work/demo.out" "Press Ctrl-C"
# Each "# NNN: ..." comment is followed by the curl line it describes.
expected=""
while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*#\ ([0-9]{3}) ]]; then
        expected="${BASH_REMATCH[1]}"
    elif [[ -n "$expected" && "$line" =~ ^[[:space:]]*curl\ -i\ (.*)$ ]]; then
        args="${BASH_REMATCH[1]}"
        got=$(eval "curl -s -o /dev/null -w '%{http_code}' $args")
        check "demo line '${line:0:60}...'" "$expected" "$got"
        expected=""
    fi
done < "$work/demo.out"
inbound=$(grep -m1 -o 'proxy http://[0-9.:]*' "$work/demo.out" | cut -d' ' -f2)
admin=$(grep -m1 -o 'http://[0-9.:]*/metrics' "$work/demo.out" | sed 's#/metrics##')
check "demo malformed token" 401 "$(status -H 'Authorization: Bearer not.a.jwt' "$inbound/api/orders")"
check "demo no route" 403 "$(status "$inbound/elsewhere")"
check "demo encoded slash" 400 "$(status "$inbound/api%2Forders")"
check "demo /readyz" 200 "$(status "$admin/readyz")"

# ---- 2. tollgate run: egress through a stand-in IMDS, reloads -----------------------------
log "tollgate run with egress"
python3 ci/mock_identity.py > "$work/mock.port" &
pids+=($!)
wait_for "$work/mock.port" "[0-9]"
mock=$(cat "$work/mock.port")
run_inbound=$(free_port); run_admin=$(free_port); run_egress=$(free_port)
cat > "$work/run.toml" <<EOF
[server]
listen   = "127.0.0.1:$run_inbound"
upstream = "http://127.0.0.1:$mock"

[admin]
listen = "127.0.0.1:$run_admin"

[[routes]]
name = "open"
prefix = "/open"
allow_anonymous = true

[egress]
listen = "127.0.0.1:$run_egress"

[[egress.targets]]
name  = "down"
url   = "http://127.0.0.1:$mock"
scope = "api://down/.default"
credential = "mi"

[credentials.mi]
kind = "managed_identity"
endpoint = "http://127.0.0.1:$mock"
EOF
cp "$work/run.toml" "$work/good.toml"
"$tollgate" run --config "$work/run.toml" > "$work/run.out" 2>&1 &
run_pid=$!
pids+=("$run_pid")
for _ in $(seq 100); do [[ "$(status "http://127.0.0.1:$run_admin/readyz")" == 200 ]] && break; sleep 0.1; done
check "run /readyz" 200 "$(status "http://127.0.0.1:$run_admin/readyz")"
check "run anonymous route" 200 "$(status "http://127.0.0.1:$run_inbound/open/x")"
check "run no route" 403 "$(status "http://127.0.0.1:$run_inbound/closed")"
check "egress with token" 200 "$(status "http://127.0.0.1:$run_egress/down/orders")"
check "egress unknown target" 404 "$(status "http://127.0.0.1:$run_egress/nowhere/x")"
kill -HUP "$run_pid"                       # a good reload
sleep 0.5
echo 'this is = not [valid' > "$work/run.toml"
kill -HUP "$run_pid"                       # a bad one: counted, nothing changes
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$run_admin/metrics" > "$work/run.prom"
    grep -q 'tollgate_config_reloads_total{result="error"} [1-9]' "$work/run.prom" \
        && grep -q 'tollgate_config_reloads_total{result="success"} [1-9]' "$work/run.prom" && break
    sleep 0.1
done
cp "$work/good.toml" "$work/run.toml"
check "reload success counted" yes "$(grep -q 'tollgate_config_reloads_total{result="success"} [1-9]' "$work/run.prom" && echo yes || echo no)"
check "reload error counted" yes "$(grep -q 'tollgate_config_reloads_total{result="error"} [1-9]' "$work/run.prom" && echo yes || echo no)"
check "egress after the bad reload" 200 "$(status "http://127.0.0.1:$run_egress/down/orders")"

# ---- 3. promtool check metrics ------------------------------------------------------------
curl -s "$admin/metrics" > "$work/demo.prom"
curl -s "http://127.0.0.1:$run_admin/metrics" > "$work/run.prom"
for scrape in demo run; do
    if out=$(promtool check metrics < "$work/$scrape.prom" 2>&1) && [[ -z "$out" ]]; then
        check "promtool check metrics ($scrape, $(grep -c '^# TYPE' "$work/$scrape.prom") families)" clean clean
    else
        check "promtool check metrics ($scrape)" clean "findings:"$'\n'"$out"
    fi
done
for metric in tollgate_requests_total tollgate_auth_failures_total tollgate_request_duration_seconds \
    tollgate_upstream_duration_seconds tollgate_jwks_refresh_total tollgate_jwks_keys \
    tollgate_egress_token_requests_total tollgate_egress_token_expiry_timestamp_seconds \
    tollgate_config_reloads_total; do
    check "core metric $metric exposed" yes \
        "$(grep -qh "^# TYPE $metric " "$work"/*.prom && echo yes || echo no)"
done

# ---- 4. the dashboard's queries -------------------------------------------------------------
log "Grafana dashboard queries"
python3 - deploy/grafana/tollgate.json > "$work/queries.txt" <<'EOF'
import json, sys
def walk(o):
    if isinstance(o, dict):
        if isinstance(o.get("expr"), str):
            yield o["expr"]
        for v in o.values():
            yield from walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from walk(v)
subst = {"$__rate_interval": "1m", "$__range": "5m", "$job": ".*", "$instance": ".*", "$route": ".*"}
for e in walk(json.load(open(sys.argv[1]))["panels"]):
    for k, v in subst.items():
        e = e.replace(k, v)
    print(" ".join(e.split()))
EOF
{
    echo "groups:"; echo "  - name: dashboard"; echo "    rules:"
    n=0
    while IFS= read -r q; do
        n=$((n + 1))
        printf '      - record: dashboard:query_%d\n        expr: %s\n' "$n" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$q")"
    done < "$work/queries.txt"
} > "$work/dashboard-rules.yaml"
if out=$(promtool check rules "$work/dashboard-rules.yaml" 2>&1); then
    check "dashboard PromQL syntax ($(wc -l < "$work/queries.txt") queries)" ok ok
else
    check "dashboard PromQL syntax" ok "$out"
fi

prom_port=$(free_port)
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tollgate
    static_configs:
      - targets: ["${admin#http://}", "127.0.0.1:$run_admin"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ "$(status "http://127.0.0.1:$prom_port/-/ready")" == 200 ]] && break; sleep 0.2; done
# A few scrapes with traffic between them, so rates and quantiles have something to work on.
token=$(grep -A1 '# 200: a token' "$work/demo.out" | tail -1 | grep -o "Bearer [^']*")
for _ in $(seq 8); do
    status -H "Authorization: $token" "$inbound/api/orders" > /dev/null
    status "$inbound/api/orders" > /dev/null
    status "http://127.0.0.1:$run_egress/down/orders" > /dev/null
    sleep 1
done
while IFS= read -r q; do
    got=$(curl -s --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$q" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["status"], len(r["data"]["result"]) if r["status"]=="success" else r.get("error"))')
    case "$q" in
        # Legitimately empty here: no identity header exceeded 8 KiB.
        *tollgate_identity_headers_dropped_total*) check "query returns (may be empty): ${q:0:70}" success "${got%% *}" ;;
        *) check "query returns data: ${q:0:70}" nonempty "$([[ "$got" =~ ^success\ [1-9] ]] && echo nonempty || echo "$got")" ;;
    esac
done < "$work/queries.txt"

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
