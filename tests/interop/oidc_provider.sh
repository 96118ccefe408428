#!/usr/bin/env bash
# Interop: tollgate's browser sign-in against a real OpenID provider, the `oidc-provider`
# package (pinned in ci/lib.sh), instead of `tollgate dev`.
#
# 1. installs the CI npm packages (ci_npm), builds tollgate unless TOLLGATE_BIN names a binary,
#    and makes a throwaway certificate and RSA key with the openssl command;
# 2. starts oidc-provider on loopback http (tests/interop/oidc_provider.mjs serve): code flow
#    with PKCE S256 required, refresh tokens, 60-second access tokens, RP-initiated logout, and
#    one client that authenticates with private_key_jwt under the certificate's public key;
#    and an echo backend;
# 3. starts `tollgate run` trusting the provider through its discovery document, with [login]
#    whose credential is `kind = "client_certificate"` over that certificate;
# 4. drives the flow over HTTP (oidc_provider.mjs drive): sign-in through the provider's login
#    and consent pages, the backend sees X-MS-CLIENT-PRINCIPAL-ID = the provider's sub, the
#    next request refreshes with a refresh_token grant the provider authenticated by
#    private_key_jwt, and /.auth/logout goes to the provider's end_session_endpoint and back.
#
# Exits non-zero on any failure and stops every process it started; no log it prints holds a
# token or key. Environment: TOLLGATE_BIN (skip the build), NODE_MODULES (skip ci_npm).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=../../ci/lib.sh
source ci/lib.sh
here=tests/interop
client_id=tollgate-interop-web
pids=()
work=$(mktemp -d)

trap 'ci_cleanup "oidc-provider interop"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "oidc-provider interop: $*" >&2
    exit 1
}

step() {
    echo "== $*"
}

step "oidc-provider, tollgate and a certificate"
node_modules=${NODE_MODULES:-$(ci_npm "${CI_NPM_PINS[@]}")}
echo "   node $(node --version), oidc-provider $(node -p "require('$node_modules/oidc-provider/package.json').version")"
bin=$(tollgate_bin)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/client.key" -out "$work/client.crt" \
    -subj "/CN=$client_id" -days 1 2>"$work/openssl.log"
rm "$work/openssl.log"
cat "$work/client.crt" "$work/client.key" >"$work/client.pem"

read -r provider_port echo_port app_port admin_port <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"
provider="http://127.0.0.1:$provider_port"
app="http://127.0.0.1:$app_port"

# A clean environment for every child: no proxy or Azure variable leaks in from the caller.
clean=(env -i "PATH=$PATH" "HOME=$work" "RUST_LOG=info")

step "oidc-provider on $provider and the echo backend"
"${clean[@]}" "NODE_MODULES=$node_modules" node "$here/oidc_provider.mjs" serve \
    "$provider_port" "$echo_port" "$app" "$client_id" "$work/client.crt" >"$work/provider.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -qs '^oidc-provider on ' "$work/provider.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "oidc-provider exited"
    sleep 0.2
done
grep -qs '^oidc-provider on ' "$work/provider.log" || fail "oidc-provider did not start"

step "tollgate with [login] at the provider, client_certificate credential"
cat >"$work/app.toml" <<EOF
[server]
listen = "127.0.0.1:$app_port"
upstream = "http://127.0.0.1:$echo_port"

[admin]
listen = "127.0.0.1:$admin_port"

[log]
format = "text"

[[issuers]]
name = "oidc"
issuer = "$provider"
discovery = "$provider/.well-known/openid-configuration"
audiences = ["api://interop"]

[credentials.web]
kind = "client_certificate"
tenant_id = "interop"            # Entra's tenant, unused here: the token endpoint is discovered
client_id = "$client_id"
certificate = "$work/client.pem"
assertion_algorithm = "PS256"

[login]
issuer = "oidc"
client_id = "$client_id"
credential = "web"
scopes = ["openid", "profile", "offline_access"]
session_keys = ["\${SESSION_KEY}"]

[[routes]]
prefix = "/"
unauthenticated = "redirect"
EOF
session_key=$("$bin" dev session-key)
app_env=("${clean[@]}" "SESSION_KEY=$session_key")
"${app_env[@]}" "$bin" check --config "$work/app.toml" >"$work/check.log" 2>&1 ||
    fail "tollgate check refused the configuration"
"${app_env[@]}" "$bin" run --config "$work/app.toml" >"$work/app.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || fail "tollgate exited"
    sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/readyz" || fail "tollgate is not ready"

step "sign-in, refresh and logout over HTTP"
"${clean[@]}" node "$here/oidc_provider.mjs" drive "$app" "$provider"

# No token, key or session key in any log.
for log in "$work"/*.log; do
    if grep -q -e 'eyJ' -e 'PRIVATE KEY' -F -e "$session_key" "$log"; then
        fail "a token, key or session key appeared in $(basename "$log")"
    fi
done

echo "oidc-provider interop: tollgate signed in, refreshed with private_key_jwt and signed out at oidc-provider"
