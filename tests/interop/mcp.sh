#!/usr/bin/env bash
# Interop: the Python MCP SDK (`mcp`, pinned in ci/lib.sh), a real OAuth client nobody here
# wrote, against tollgate's protected resource metadata (RFC 9728), with `tollgate dev` as the
# authorization server and the SDK's own MCP server as the upstream.
#
# 1. installs the CI venv (ci/lib.sh's ci_venv with CI_PY_PINS, mcp among them);
# 2. starts `tollgate dev` on a free port whose URL is its `iss`, so the issuer URL the
#    metadata names is where its discovery document is served;
# 3. starts an MCP server (the SDK's MCPServer, streamable HTTP at /mcp) and tollgate in
#    front of it, with [[resources]] for /mcp trusting the [[issuers]] block `tollgate dev`
#    printed;
# 4. discovery with the SDK's own functions, one by one: tollgate's 401 names the metadata
#    (resource_metadata), the metadata names the issuer, and the SDK finds the issuer's
#    authorization server metadata (RFC 8414's path first, which `tollgate dev` does not serve,
#    then OpenID Connect discovery, which it does);
# 5. the SDK's OAuthClientProvider end to end: an MCP session through tollgate, the OAuth flow
#    run by the SDK (authorization code with PKCE and `resource`, `tollgate dev`'s sign-in page
#    posted as a browser would), then a tool call that returns the identity tollgate set;
# 6. a token for another audience on the resource: 401 bad_audience, pointing to the metadata.
#
# Exits non-zero on any failure and stops every process it started.
# Environment: TOLLGATE_BIN (skip the build and use this binary), TOLLGATE_CI_CACHE (ci/lib.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=ci/lib.sh
source ci/lib.sh
here=tests/interop
role=Tools.Call
pids=()
work=$(mktemp -d)

trap 'ci_cleanup "mcp interop"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "interop: $*" >&2
    exit 1
}

step() {
    echo "== $*"
}

step "the CI venv (ci_venv: ${CI_PY_PINS[*]})"
venv=$(ci_venv "${CI_PY_PINS[@]}")
py="$venv/bin/python"
mcp_version=$("$py" -c 'import importlib.metadata as m; print(m.version("mcp"))')
echo "   mcp $mcp_version"
check=("$py" "$here/mcp_client.py")

if [ -n "${TOLLGATE_BIN:-}" ]; then
    bin=$TOLLGATE_BIN
else
    step "cargo build --bin tollgate"
    cargo build --quiet --bin tollgate
    bin=target/debug/tollgate
fi

# A clean environment for every child: nothing leaks in from the caller.
clean=(env -i "PATH=$PATH" "HOME=$work" "RUST_LOG=info")
read -r dev_port api_port admin_port mcp_port <<<"$("${check[@]}" free-ports 4)"
issuer="http://127.0.0.1:$dev_port/"
resource="http://127.0.0.1:$api_port/mcp"

step "tollgate dev at $issuer"
"${clean[@]}" "$bin" dev --port "$dev_port" --iss "$issuer" --no-https --key "$work/dev-issuer.pem" \
    >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -q '^export TOLLGATE_DEV_CLIENT_SECRET=' "$work/dev.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "tollgate dev exited"
    sleep 0.2
done
secret=$(sed -n 's/^export TOLLGATE_DEV_CLIENT_SECRET=//p' "$work/dev.log")
client_id=$(sed -n '/^\[login\]$/,/^$/s/^client_id = "\(.*\)"$/\1/p' "$work/dev.log")
[ -n "$secret" ] && [ -n "$client_id" ] || fail "tollgate dev did not print its web app's client"
block() { sed -n "/^$1\$/,/^\$/p" "$work/dev.log"; }

step "an MCP server (the SDK's MCPServer) behind tollgate, /mcp a protected resource"
"${clean[@]}" "${check[@]}" server "$mcp_port" >"$work/mcp-server.log" 2>&1 &
pids+=($!)
cat >"$work/api.toml" <<TOML
[server]
listen = "127.0.0.1:$api_port"
upstream = "http://127.0.0.1:$mcp_port"

[admin]
listen = "127.0.0.1:$admin_port"

[log]
format = "text"

$(block '\[\[issuers\]\]')

[identity.claims]
"X-User-Roles" = "roles"

[[routes]]
prefix = "/mcp"
scopes_any = ["$role"]

[[resources]]
resource = "$resource"
prefix = "/mcp"
issuer = "dev"
scopes_supported = ["api://tollgate-dev/$role"]
TOML
"${clean[@]}" "$bin" check --config "$work/api.toml" >"$work/check.log" 2>&1 ||
    fail "tollgate check refused the configuration"
"${clean[@]}" "$bin" run --config "$work/api.toml" >"$work/api.log" 2>&1 &
pids+=($!)
"${check[@]}" wait "http://127.0.0.1:$admin_port/readyz"
"${check[@]}" wait "http://127.0.0.1:$mcp_port/mcp"

step "discovery with the SDK's functions: 401 → protected resource metadata → authorization server"
"${clean[@]}" "${check[@]}" discover "$resource" "$issuer"

step "the SDK's OAuth client end to end: discovery, sign-in, token, MCP session, tool call"
"${clean[@]}" "${check[@]}" connect "$resource" "$client_id" "$secret"

step "a token for another audience: 401 bad_audience"
"${clean[@]}" "$bin" dev token --key "$work/dev-issuer.pem" --iss "$issuer" --aud api://other \
    --scope "$role" >"$work/other-audience"
"${clean[@]}" "${check[@]}" refused "$resource" "$work/other-audience"

# No token in any log.
for log in "$work"/*.log; do
    if grep -q 'eyJ' "$log"; then
        fail "a token appeared in $(basename "$log")"
    fi
done

echo "interop: mcp $mcp_version found tollgate's resource metadata from its 401, the issuer's metadata from it, and called a tool through tollgate"
