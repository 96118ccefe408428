# Shared by bench/load.sh and bench/idle-memory.sh: logging, installing Debian packages, and
# the processes a run starts, each registered in PID and stopped on exit. Source it after
# setting BENCH_NAME (the name log lines carry); it runs nothing by itself.

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

# apt_install PKG...: installs the packages with --no-install-recommends (updating the package
# lists once if the first attempt fails); nothing when none are given.
apt_install() {
    (($#)) || return 0
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "$@" >&2; then
        as_root apt-get update >&2
        as_root apt-get install -y --no-install-recommends "$@" >&2
    fi
}

TMP=""
KEEP_TMP=${KEEP_TMP:-0}
declare -A PID=()

# The EXIT/INT/TERM trap: stops every registered process, removes $TMP unless KEEP_TMP=1.
cleanup() {
    local status=$? name
    trap - EXIT INT TERM
    ((status == 0)) || log "failed (status $status, line ${BASH_LINENO[0]:-?})"
    for name in "${!PID[@]}"; do stop_bg "$name"; done
    if [[ -n $TMP && -d $TMP ]]; then
        if ((KEEP_TMP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$status"
}

# stop_bg NAME: TERM, up to 5 s, then KILL.
stop_bg() {
    local name=$1 pid=${PID[$1]:-} i
    [[ -n $pid ]] || return 0
    unset "PID[$name]"
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
