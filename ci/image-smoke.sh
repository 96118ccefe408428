#!/usr/bin/env bash
# What can be checked of the container image without a Docker engine (slow: a release build).
#   1. Build the binary exactly as the Dockerfile's build stage does:
#      cargo build --release --locked --target x86_64-unknown-linux-musl --bin tollgate
#      (installs the musl target with rustup and Debian's musl-tools if missing).
#   2. It is static: `file` says statically linked, `ldd` finds no libraries, no ELF interpreter.
#   3. It runs: --version, `check` on config/*.toml and on the ConfigMap's TOML.
#   4. In a root file system holding nothing but the binary and its config, mounted read-only,
#      as UID/GID 65532 (what distroless/static:nonroot gives it): `tollgate demo` answers its
#      printed curl lines as they say; `tollgate run` on the ConfigMap's TOML serves /healthz,
#      /readyz says 503 (no route to Entra ID here), and SIGTERM ends it with status 0.
#      Needs root (unshare, mount, chroot); skipped with a note otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

target=x86_64-unknown-linux-musl
ci_apt musl-gcc musl-tools
ci_apt file file
ci_apt curl curl
# Never `producer | grep -q` under pipefail: grep's early exit kills the producer with
# SIGPIPE and the pipeline fails although it matched. Capture, then match.
if ! grep -qx "$target" <<< "$(rustup target list --installed)"; then
    log "rustup target add $target"
    rustup target add "$target"
fi
log "cargo build --release --locked --target $target --bin tollgate"
cargo build --release --locked --target "$target" --bin tollgate
bin="target/$target/release/tollgate"

failures=0
passed=0
check() {
    if [[ "$2" == "$3" ]]; then passed=$((passed + 1)); printf 'ok    %s: %s\n' "$1" "$3"
    else failures=$((failures + 1)); printf 'FAIL  %s: expected %s, got %s\n' "$1" "$2" "$3"; fi
}

file "$bin"
check "file: statically linked" yes "$(grep -Eq 'static(-pie)? linked|statically linked' <<< "$(file "$bin")" && echo yes || echo no)"
check "ldd: no shared libraries" yes "$(grep -Eq 'not a dynamic executable|statically linked' <<< "$(ldd "$bin" 2>&1)" && echo yes || echo no)"
check "no ELF interpreter, no NEEDED" yes "$( (grep -q INTERP <<< "$(readelf -l "$bin")" || grep -q NEEDED <<< "$(readelf -d "$bin")") && echo no || echo yes)"
check "size under 32 MiB" yes "$([[ $(stat -c %s "$bin") -lt 33554432 ]] && echo yes || echo no)"
check "--version" "tollgate $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)" "$("$bin" --version)"
for f in config/*.toml; do   # full.toml's secret_env names INTEGRATION_CLIENT_SECRET
    check "check $f" 0 "$(INTEGRATION_CLIENT_SECRET=placeholder "$bin" check --config "$f" > /dev/null; echo $?)"
done

if [[ $(id -u) -ne 0 ]] || ! command -v unshare > /dev/null || ! command -v chroot > /dev/null; then
    echo "note  skipping the empty-root run: needs root, unshare and chroot"
else
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/etc/tollgate" "$root/var/run/secrets/azure/tokens"
    cp "$bin" "$root/tollgate"
    venv=$(ci_venv "${CI_PY_PINS[@]}")
    "$venv/bin/python" - "$root" <<'EOF'
import sys, yaml
root = sys.argv[1]
cm = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))
toml = cm["data"]["tollgate.toml"]
# Free ports instead of 8080/9090/15001, which may be taken on this machine.
toml = toml.replace("0.0.0.0:8080", "127.0.0.1:18080").replace("0.0.0.0:9090", "127.0.0.1:19090") \
           .replace("127.0.0.1:15001", "127.0.0.1:15991")
open(f"{root}/etc/tollgate/tollgate.toml", "w").write(toml)
open(f"{root}/var/run/secrets/azure/tokens/azure-identity-token", "w").write("not-a-real-token")
EOF
    chmod -R a+rX "$root"
    # Inside a private mount namespace: the root read-only, then chroot as 65532.
    # shellcheck disable=SC2016
    unshare --mount bash -euo pipefail -c '
        root=$1 chroot=$2
        mount --bind "$root" "$root" && mount -o remount,ro,bind "$root"
        touch "$root/probe" 2> /dev/null && { echo "FAIL  root is writable"; exit 1; } || echo "ok    root file system is read-only"

        # demo: the printed curl lines
        env -i "$chroot" --userspec=65532:65532 "$root" /tollgate demo --port 0 --admin-port 0 > "$root.demo" 2>&1 &
        demo=$!
        for _ in $(seq 300); do grep -q "Press Ctrl-C" "$root.demo" && break; sleep 0.1; done
        expected=""
        while IFS= read -r line; do
            if [[ "$line" =~ ^[[:space:]]*#\ ([0-9]{3}) ]]; then expected="${BASH_REMATCH[1]}"
            elif [[ -n "$expected" && "$line" =~ ^[[:space:]]*curl\ -i\ (.*)$ ]]; then
                got=$(eval "curl -s -o /dev/null -w %{http_code} ${BASH_REMATCH[1]}")
                [[ "$got" == "$expected" ]] && echo "ok    empty root, uid 65532: demo line answers $got" \
                    || { echo "FAIL  empty root: demo line expected $expected, got $got"; kill $demo; exit 1; }
                expected=""
            fi
        done < "$root.demo"
        kill -TERM $demo; wait $demo && echo "ok    demo exits 0 on SIGTERM" || { echo "FAIL  demo exit status"; exit 1; }
        rm -f "$root.demo"

        # run: the ConfigMap TOML with the env the Deployment and the webhook give it
        env -i TENANT_ID=11111111-1111-1111-1111-111111111111 API_AUDIENCE=api://orders \
            AZURE_TENANT_ID=11111111-1111-1111-1111-111111111111 AZURE_CLIENT_ID=00000000-0000-0000-0000-000000000000 \
            AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token \
            AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/ \
            "$chroot" --userspec=65532:65532 "$root" /tollgate run --config /etc/tollgate/tollgate.toml > "$root.run" 2>&1 &
        run=$!
        code=000
        for _ in $(seq 100); do code=$(curl -s -o /dev/null -w %{http_code} http://127.0.0.1:19090/healthz || true); [[ $code == 200 ]] && break; sleep 0.1; done
        [[ $code == 200 ]] && echo "ok    empty root, uid 65532: run /healthz 200" || { echo "FAIL  run /healthz: $code"; cat "$root.run"; kill $run; exit 1; }
        code=$(curl -s -o /dev/null -w %{http_code} http://127.0.0.1:19090/readyz || true)
        [[ $code == 503 ]] && echo "ok    run /readyz 503 without Entra ID keys (fail closed)" || echo "note  run /readyz: $code"
        code=$(curl -s -o /dev/null -w %{http_code} http://127.0.0.1:18080/orders || true)
        echo "ok    run inbound without keys answers $code"
        kill -TERM $run; wait $run && echo "ok    run exits 0 on SIGTERM" || { echo "FAIL  run exit status"; cat "$root.run"; exit 1; }
        rm -f "$root.run"
    ' _ "$root" "$(command -v chroot)" | tee "$root.out"
    passed=$((passed + $(grep -c '^ok' "$root.out")))
    failures=$((failures + $(grep -c '^FAIL' "$root.out" || true)))
    rm -f "$root.out"
fi

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
