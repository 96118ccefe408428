#!/usr/bin/env bash
# Interop: the real Python azure-identity (ManagedIdentityCredential, ClientSecretCredential,
# WorkloadIdentityCredential) against `tollgate dev`.
#
# 1. installs azure-identity into a venv under target/ (once; later runs reuse it);
# 2. builds tollgate and starts `tollgate dev` on a free port with a throwaway key;
# 3. starts `tollgate run` protecting a small upstream, trusting the [[issuers]] block that
#    `tollgate dev` printed, on a route that needs the role `tollgate dev --role` grants;
# 4. with only the App Service variables it printed, then with only the IMDS override, gets
#    tokens with ManagedIdentityCredential (system- and user-assigned) and
#    DefaultAzureCredential, checks their claims, and sends each through tollgate: 200, while
#    no token and a forged signature get 401;
# 5. starts an egress-only tollgate with the printed [credentials.mi] block and calls the
#    protected upstream through it.
#
# 4b. with NODE_MODULES (a node_modules with @azure/identity, as .ci/run provides), the same
#    token checks with Node's @azure/identity in both styles;
# 4c. with only the Entra-style variables it printed (the https token endpoint, its dev CA, the
#    web app's id and secret) and a workload-identity token file from `tollgate dev token`,
#    gets app-only tokens with ClientSecretCredential and WorkloadIdentityCredential (Python,
#    and Node with NODE_MODULES) and sends each through tollgate;
#
# Exits non-zero on any failure and stops every process it started.
# Environment: AZURE_IDENTITY_SPEC (pip requirement, default azure-identity==1.27.0),
# TOLLGATE_BIN (skip the build and use this binary), PYTHON (default python3), NODE_MODULES.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=ci/lib.sh
source ci/lib.sh
here=tests/interop
venv=target/interop/venv
spec=${AZURE_IDENTITY_SPEC:-azure-identity==1.27.0}
role=Interop.Read
pids=()
work=$(mktemp -d)

trap 'ci_cleanup "interop"' EXIT
trap 'exit 130' INT TERM

fail() {
    echo "interop: $*" >&2
    exit 1
}

step() {
    echo "== $*"
}

step "azure-identity in $venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"
py="$venv/bin/python"
"$py" -c 'import azure.identity, msal; print("   azure-identity", azure.identity.__version__, "msal", msal.__version__)'
check=("$py" "$here/azure_identity.py")

if [ -n "${TOLLGATE_BIN:-}" ]; then
    bin=$TOLLGATE_BIN
else
    step "cargo build --bin tollgate"
    cargo build --quiet --bin tollgate
    bin=target/debug/tollgate
fi

# A clean environment for every child: nothing Azure-related leaks in from the caller.
clean=(env -i "PATH=$PATH" "HOME=$work" "RUST_LOG=info")

step "tollgate dev"
"${clean[@]}" "$bin" dev --port 0 --role "$role" --key "$work/dev-issuer.pem" >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    grep -q '^export AZURE_POD_IDENTITY_AUTHORITY_HOST=' "$work/dev.log" && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "tollgate dev exited"
    sleep 0.2
done
value() { sed -n "s/^export $1=//p" "$work/dev.log"; }
identity_endpoint=$(value IDENTITY_ENDPOINT)
identity_header=$(value IDENTITY_HEADER)
imds_host=$(value AZURE_POD_IDENTITY_AUTHORITY_HOST)
[ -n "$identity_endpoint" ] && [ -n "$identity_header" ] && [ -n "$imds_host" ] ||
    fail "tollgate dev did not print its environment"
echo "   $imds_host"
block() { sed -n "/^$1\$/,/^\$/p" "$work/dev.log"; }

read -r api_port admin_port up_port egress_port egress_admin_port <<<"$("${check[@]}" free-ports 5)"

step "upstream and tollgate trusting the printed [[issuers]] block"
mkdir "$work/www"
printf 'interop-ok' >"$work/www/orders"
"${clean[@]}" "$py" -m http.server --bind 127.0.0.1 --directory "$work/www" "$up_port" \
    >"$work/upstream.log" 2>&1 &
pids+=($!)
cat >"$work/api.toml" <<EOF
[server]
listen = "127.0.0.1:$api_port"
upstream = "http://127.0.0.1:$up_port"

[admin]
listen = "127.0.0.1:$admin_port"

[log]
format = "text"

$(block '\[\[issuers\]\]')

[[routes]]
prefix = "/"
roles_any = ["$role"]
EOF
"${clean[@]}" "$bin" check --config "$work/api.toml" >"$work/check.log" 2>&1 ||
    fail "tollgate check refused the configuration built from the printed block"
"${clean[@]}" "$bin" run --config "$work/api.toml" >"$work/api.log" 2>&1 &
pids+=($!)
"${check[@]}" wait "http://127.0.0.1:$admin_port/readyz"
proxy="http://127.0.0.1:$api_port/orders"

count() { grep -c "\(protocol\|endpoint\)=\"$1\" status=200" "$work/dev.log" || true; }
# at_least PROTOCOL N: until dev.log counts N tokens served over PROTOCOL (5 s). tollgate's log
# writer flushes every 100 ms, so the last line may land just after the client has its token.
at_least() {
    for _ in $(seq 50); do [ "$(count "$1")" -ge "$2" ] && return 0; sleep 0.1; done
    return 1
}

step "App Service style: IDENTITY_ENDPOINT and IDENTITY_HEADER only"
before=$(count app_service)
"${clean[@]}" "IDENTITY_ENDPOINT=$identity_endpoint" "IDENTITY_HEADER=$identity_header" \
    "${check[@]}" token --mode app_service --proxy "$proxy" --role "$role"
at_least app_service $((before + 3)) ||
    fail "the App Service tokens did not come from the App Service protocol"

step "IMDS style: AZURE_POD_IDENTITY_AUTHORITY_HOST only"
before=$(count imds)
"${clean[@]}" "AZURE_POD_IDENTITY_AUTHORITY_HOST=$imds_host" \
    "${check[@]}" token --mode imds --proxy "$proxy" --role "$role"
at_least imds $((before + 3)) ||
    fail "the IMDS tokens did not come from the IMDS protocol"

# The same with Node's @azure/identity (msal-node underneath), from the CI npm cache.
# msal-node keeps managed-identity tokens in a cache shared by every credential of the process,
# so DefaultAzureCredential reuses the system identity's token: two requests per style.
if [ -n "${NODE_MODULES:-}" ]; then
    node_check=(node "$here/azure_identity_node.mjs")
    step "Node @azure/identity, App Service style"
    before=$(count app_service)
    "${clean[@]}" "NODE_MODULES=$NODE_MODULES" "IDENTITY_ENDPOINT=$identity_endpoint" \
        "IDENTITY_HEADER=$identity_header" "${node_check[@]}" app_service "$proxy" "$role"
    at_least app_service $((before + 2)) ||
        fail "the Node App Service tokens did not come from the App Service protocol"
    step "Node @azure/identity, IMDS style"
    before=$(count imds)
    "${clean[@]}" "NODE_MODULES=$NODE_MODULES" "AZURE_POD_IDENTITY_AUTHORITY_HOST=$imds_host" \
        "${node_check[@]}" imds "$proxy" "$role"
    at_least imds $((before + 2)) ||
        fail "the Node IMDS tokens did not come from the IMDS protocol"
else
    echo "   (NODE_MODULES not set: the Node @azure/identity checks are skipped)"
fi

step "Entra style: the https token endpoint, the dev CA, the web app's secret; a federated token file"
entra_env=()
for name in SSL_CERT_FILE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS AZURE_AUTHORITY_HOST AZURE_TENANT_ID \
    AZURE_CLIENT_ID AZURE_CLIENT_SECRET; do
    [ -n "$(value "$name")" ] || fail "tollgate dev did not print $name"
    entra_env+=("$name=$(value "$name")")
done
# As the workload-identity webhook would mount it: the dev issuer's token for the exchange audience.
"${clean[@]}" "$bin" dev token --key "$work/dev-issuer.pem" --audience api://AzureADTokenExchange \
    >"$work/federated-token"
entra_env+=("AZURE_FEDERATED_TOKEN_FILE=$work/federated-token")
before=$(count token)
"${clean[@]}" "${entra_env[@]}" "${check[@]}" entra --proxy "$proxy" --role "$role"
at_least token $((before + 2)) || fail "the Entra-style tokens did not come from the token endpoint"
if [ -n "${NODE_MODULES:-}" ]; then
    step "Node @azure/identity, Entra style"
    before=$(count token)
    "${clean[@]}" "NODE_MODULES=$NODE_MODULES" "${entra_env[@]}" "${node_check[@]}" entra "$proxy" "$role"
    at_least token $((before + 2)) || fail "the Node Entra-style tokens did not come from the token endpoint"
fi

step "tollgate egress with the printed [credentials.mi] block"
cat >"$work/egress.toml" <<EOF
[admin]
listen = "127.0.0.1:$egress_admin_port"

[log]
format = "text"

[egress]
listen = "127.0.0.1:$egress_port"

[[egress.targets]]
name = "api"
url = "http://127.0.0.1:$api_port"
scope = "api://tollgate-dev/.default"
credential = "mi"

$(block '\[credentials\.mi\]')
EOF
"${clean[@]}" "$bin" run --config "$work/egress.toml" >"$work/egress.log" 2>&1 &
pids+=($!)
"${check[@]}" wait "http://127.0.0.1:$egress_admin_port/readyz"
"${check[@]}" get "http://127.0.0.1:$egress_port/api/orders" interop-ok

# Secrets stay out of every log; the only place IDENTITY_HEADER and the client secret may
# appear is their export lines.
client_secret=$(value AZURE_CLIENT_SECRET)
for log in "$work"/*.log; do
    if grep -v '^export IDENTITY_HEADER=' "$log" | grep -F -- "$identity_header" > /dev/null; then
        fail "IDENTITY_HEADER appeared in $(basename "$log")"
    fi
    if grep -v '^export \(AZURE_CLIENT_SECRET\|TOLLGATE_DEV_CLIENT_SECRET\)=' "$log" |
        grep -F -- "$client_secret" > /dev/null; then
        fail "the client secret appeared in $(basename "$log")"
    fi
    if grep -q 'eyJ' "$log"; then
        fail "a token appeared in $(basename "$log")"
    fi
done

echo "interop: azure-identity (Python${NODE_MODULES:+ and Node}) and tollgate agree on tollgate dev (App Service, IMDS and Entra style)"
