#!/usr/bin/env bash
# Browser sign-in in a real browser: headless Chromium, driven over WebDriver (Python selenium),
# signs in through tollgate to `tollgate dev`'s sign-in page and uses the session.
#
# 1. installs Debian's chromium and chromium-driver (ci_apt) and selenium (ci_venv, pinned in
#    ci/lib.sh), builds tollgate unless TOLLGATE_BIN names a binary;
# 2. starts `tollgate dev --port 0 --no-https --lifetime 2m` (access tokens inside tollgate's
#    5-minute refresh margin, so that requests refresh them), an echo backend, and
#    `tollgate run` with [login]
#    (the dev web client's secret through secret_env, a fresh session key), a route /admin
#    that needs a role and / with unauthenticated = "redirect", all on 127.0.0.1;
# 3. tests/browser/signin.py drives the browser: the app redirects to the provider's page, the
#    form is filled and submitted, the browser lands back on the page it asked for and the
#    backend got the user's headers and tokens; the session cookie is HttpOnly; fetch() from
#    the page works, a cross-origin POST with the cookie is refused as CSRF and never reaches
#    the backend; requests refresh the access token by themselves, /.auth/refresh answers 200; /.auth/logout goes through the provider's
#    end-session endpoint back to the app with every session cookie gone, after which the app
#    asks for sign-in again (and a user without the role gets 403 on /admin).
#
# Exits non-zero on any failure and stops every process it started; the logs it prints then
# hold no token, cookie or secret. Environment: TOLLGATE_BIN (skip the build), CHROMIUM and
# CHROMEDRIVER (default /usr/bin/chromium and /usr/bin/chromedriver).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=../../ci/lib.sh
source ci/lib.sh
here=tests/browser
role=Browser.Admin
pids=()
work=$(mktemp -d)

trap 'ci_cleanup "browser"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "browser: $*" >&2
    exit 1
}

step() {
    echo "== $*"
}

step "chromium, chromedriver and selenium"
ci_apt chromium chromium
ci_apt chromedriver chromium-driver
venv=$(ci_venv "${CI_PY_PINS[@]}")
py="$venv/bin/python"
echo "   $(chromium --version 2>/dev/null | head -n1); $(chromedriver --version | cut -d' ' -f1-2);" \
    "selenium $("$py" -c 'import selenium; print(selenium.__version__)')"
bin=$(tollgate_bin)
helper=("$py" -u "$here/signin.py")

# A clean environment for every child: no proxy or Azure variable leaks in from the caller.
clean=(env -i "PATH=$PATH" "HOME=$work" "RUST_LOG=info")

step "tollgate dev"
"${clean[@]}" "$bin" dev --port 0 --no-https --lifetime 2m --key "$work/dev-issuer.pem" >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -qs '^export AZURE_POD_IDENTITY_AUTHORITY_HOST=' "$work/dev.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "tollgate dev exited"
    sleep 0.2
done
dev=$(sed -n 's/^export AZURE_POD_IDENTITY_AUTHORITY_HOST=//p' "$work/dev.log")
tenant=$(sed -n 's/^  identity   tid \([^,]*\),.*/\1/p' "$work/dev.log")
[ -n "$dev" ] && [ -n "$tenant" ] || fail "tollgate dev did not print its URL and tenant"
echo "   $dev"
issuers=$(sed -n '/^\[\[issuers\]\]$/,/^$/p' "$work/dev.log")

read -r app_port admin_port echo_port <<<"$("${helper[@]}" free-ports 3)"
app="http://127.0.0.1:$app_port"

step "echo backend and tollgate with [login]"
"${clean[@]}" "${helper[@]}" echo "$echo_port" >"$work/echo.log" 2>&1 &
pids+=($!)
session_key=$("$bin" dev session-key)
cat >"$work/app.toml" <<EOF
[server]
listen = "127.0.0.1:$app_port"
upstream = "http://127.0.0.1:$echo_port"

[admin]
listen = "127.0.0.1:$admin_port"

[log]
format = "text"

$issuers

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
session_keys = ["\${SESSION_KEY}"]

[[routes]]
prefix = "/admin"
roles_any = ["$role"]
unauthenticated = "redirect"

[[routes]]
prefix = "/"
unauthenticated = "redirect"
EOF
app_env=("${clean[@]}" "WEB_SECRET=tollgate-dev-secret" "SESSION_KEY=$session_key")
"${app_env[@]}" "$bin" check --config "$work/app.toml" >"$work/check.log" 2>&1 ||
    fail "tollgate check refused the configuration"
"${app_env[@]}" "$bin" run --config "$work/app.toml" >"$work/app.log" 2>&1 &
pids+=($!)
"${helper[@]}" wait "http://127.0.0.1:$admin_port/readyz"
"${helper[@]}" wait "http://127.0.0.1:$echo_port/__seen"

step "headless Chromium"
"${clean[@]}" "${helper[@]}" drive --app "$app" --dev "$dev" --echo "http://127.0.0.1:$echo_port" \
    --admin "http://127.0.0.1:$admin_port" --role "$role" --dev-log "$work/dev.log"

# No token, secret or session key in any log (tollgate dev prints its own in `export` lines).
for log in "$work"/*.log; do
    if grep -v '^export ' "$log" | grep -qF -e "tollgate-dev-secret" -e "$session_key"; then
        fail "a secret appeared in $(basename "$log")"
    fi
    if grep -q 'eyJ' "$log"; then
        fail "a token appeared in $(basename "$log")"
    fi
done

echo "browser: Chromium signed in through tollgate, used the session, refreshed it and signed out"
