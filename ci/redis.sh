#!/usr/bin/env bash
# The session store against a real redis-server (Debian's redis-server package): the tests of
# src/inbound/session/store/ and tests/signin/redis.rs marked #[ignore = "needs redis-server (ci/redis.sh)"], which a plain
# `cargo test` skips. Each test starts its own server on a free loopback port, with nothing
# persisted, and kills it when done.
#   bash ci/redis.sh                                 # installs redis-server if missing
#   REDIS_SERVER=/opt/redis/bin/redis-server bash ci/redis.sh   # another binary, no install
# Exit 1 if a test fails or none ran.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

if [[ -z "${REDIS_SERVER:-}" ]]; then
    ci_apt redis-server redis-server
    REDIS_SERVER=$(command -v redis-server)
fi
export REDIS_SERVER
log "$("$REDIS_SERVER" --version)"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --locked --lib inbound::session::store -- --ignored 2>&1 | tee "$out"
# A filter that matched nothing would pass too: make sure the server tests ran.
grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$out" || { log "no redis-server test ran"; exit 1; }
# End to end: two tollgates sharing sessions in Redis, logout revoking, Redis down.
cargo test --locked --test signin redis -- --ignored 2>&1 | tee "$out"
grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$out" || { log "no sign-in Redis test ran"; exit 1; }
# And as processes: two `tollgate run` replicas, one Redis, curl as the browser.
TOLLGATE_BIN=$(tollgate_bin) tests/redis/replicas.sh
