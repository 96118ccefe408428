#!/usr/bin/env bash
# Two tollgate processes sharing browser sessions through a real Redis, as two replicas do:
# a user signs in on the first, the second serves the same session, logout on the first
# revokes it on the second, and with Redis down the second answers 503 to the session while
# an anonymous route still works. Run by ci/redis.sh (REDIS_SERVER: the redis-server binary).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../ci/lib.sh"
cd "$REPO_ROOT"

work=$(mktemp -d)
pids=()
trap 'ci_cleanup "replicas"' EXIT
fail() { echo "replicas: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
wait_status() { # URL STATUS
    for _ in $(seq 150); do [ "$(status "$1")" = "$2" ] && return 0; sleep 0.1; done
    fail "$1 never answered $2"
}

bin=$(tollgate_bin)
redis_bin=${REDIS_SERVER:-redis-server}
clean=(env -i "PATH=$PATH" "HOME=$work" "RUST_LOG=info")

redis_port=$(free_port)
"$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")

"${clean[@]}" "$bin" dev --port 0 --no-https --key "$work/dev.pem" >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -qs '^export AZURE_POD_IDENTITY_AUTHORITY_HOST=' "$work/dev.log" && break
    sleep 0.1
done
dev=$(sed -n 's/^export AZURE_POD_IDENTITY_AUTHORITY_HOST=//p' "$work/dev.log")
tenant=$(sed -n 's/^  identity   tid \([^,]*\),.*/\1/p' "$work/dev.log")
[ -n "$dev" ] && [ -n "$tenant" ] || fail "tollgate dev did not print its URL and tenant"

backend_port=$(free_port)
mkdir -p "$work/www/public" && echo ok >"$work/www/index.html" && echo ok >"$work/www/public/index.html"
(cd "$work/www" && exec python3 -m http.server "$backend_port" --bind 127.0.0.1) >"$work/backend.log" 2>&1 &
pids+=($!)

key=$("$bin" dev session-key)
start_replica() { # NAME PORT ADMIN
    cat >"$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
upstream = "http://127.0.0.1:$backend_port"
[admin]
listen = "127.0.0.1:$3"
[[issuers]]
name = "dev"
issuer = "http://127.0.0.1:8079/"
discovery = "$dev/.well-known/openid-configuration"
audiences = ["api://tollgate-dev"]
[credentials.web]
kind = "client_secret"
tenant_id = "$tenant"
client_id = "d3e7d3e7-0000-4000-8000-0000000000a1"
secret_env = "WEB_SECRET"
[login]
issuer = "dev"
client_id = "d3e7d3e7-0000-4000-8000-0000000000a1"
credential = "web"
scopes = ["openid", "profile", "offline_access"]
session_keys = ["$key"]
session_store = "redis://127.0.0.1:$redis_port/0"
[[routes]]
prefix = "/public"
allow_anonymous = true
[[routes]]
prefix = "/"
EOF
    "${clean[@]}" WEB_SECRET=tollgate-dev-secret "$bin" run --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
    pids+=($!)
    wait_status "http://127.0.0.1:$3/readyz" 200
}
a=$(free_port) b=$(free_port)
start_replica first "$a" "$(free_port)"
start_replica second "$b" "$(free_port)"
echo "== two tollgate processes on :$a and :$b, Redis on :$redis_port"

# Sign in on the first: the provider's form posted as a browser would.
jar="$work/jar"
authorize=$(curl -s -o /dev/null -c "$jar" -w '%{redirect_url}' "http://127.0.0.1:$a/.auth/login/aad?post_login_redirect_uri=/")
form="${authorize#*\?}&name=Replica&preferred_username=replica%40tollgate.dev&oid=d3e7d3e7-0000-4000-8000-0000000000d1&roles=&groups=&action=sign_in"
callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "$form" "${authorize%%\?*}")
[ "$(curl -s -o /dev/null -w '%{http_code}' -b "$jar" -c "$jar" "$callback")" = 302 ] || fail "the callback did not sign in"
cookie="Cookie: $(awk '$6 ~ /^AppServiceAuthSession/ {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$jar")"
[ "$cookie" != "Cookie: " ] || fail "no session cookie"

check() { # WHAT WANT GOT
    [ "$2" = "$3" ] || fail "$1: expected $2, got $3"
    echo "ok: $1 ($3)"
}
check "the first serves its session" 200 "$(status -H "$cookie" "http://127.0.0.1:$a/")"
check "the second serves the same session" 200 "$(status -H "$cookie" "http://127.0.0.1:$b/")"
check "without the cookie" 401 "$(status "http://127.0.0.1:$b/")"
check "logout on the first" 302 "$(status -H "$cookie" "http://127.0.0.1:$a/.auth/logout")"
check "the copied cookie on the second after logout" 401 "$(status -H "$cookie" "http://127.0.0.1:$b/")"

# Sign in again, then stop Redis: the session answers 503, the anonymous route still 200.
rm -f "$jar"
authorize=$(curl -s -o /dev/null -c "$jar" -w '%{redirect_url}' "http://127.0.0.1:$a/.auth/login/aad?post_login_redirect_uri=/")
form="${authorize#*\?}&name=Replica&preferred_username=replica%40tollgate.dev&oid=d3e7d3e7-0000-4000-8000-0000000000d1&roles=&groups=&action=sign_in"
callback=$(curl -s -o /dev/null -w '%{redirect_url}' --data "$form" "${authorize%%\?*}")
curl -s -o /dev/null -b "$jar" -c "$jar" "$callback"
cookie="Cookie: $(awk '$6 ~ /^AppServiceAuthSession/ {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$jar")"
check "signed in again, on the second" 200 "$(status -H "$cookie" "http://127.0.0.1:$b/")"
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
check "Redis down: the session" 503 "$(status -H "$cookie" "http://127.0.0.1:$b/")"
check "Redis down: an anonymous route" 200 "$(status "http://127.0.0.1:$b/public/")"
echo "replicas: ok"
