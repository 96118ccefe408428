#!/usr/bin/env bash
# Validates everything under deploy/ offline; exit 1 on any failure.
#   yamllint on every YAML file;
#   Kubernetes objects against the Kubernetes 1.30 and 1.37 OpenAPI schemas, strict
#     (PyPI kubernetes-validate, schemas bundled in the package);
#   the ServiceMonitor against prometheus-operator's schema (npm @kubernetes-models/prometheus-operator);
#   the Container Apps YAML against the azure-mgmt-appcontainers models;
#   `tollgate check` on every embedded tollgate TOML, with the env the manifest gives it;
#   the sidecar invariants and the Grafana dashboard's metric coverage (ci/validate_manifests.py).
# Tools are installed once into $TOLLGATE_CI_CACHE (default ~/.cache/tollgate-ci).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

venv=$(ci_venv "${CI_PY_PINS[@]}")
node_modules=$(ci_npm "${CI_NPM_PINS[@]}")
tollgate=$(tollgate_bin)

log "yamllint deploy/"
"$venv/bin/yamllint" --strict -c ci/yamllint.yaml deploy/

log "schemas, embedded configs, sidecar invariants"
"$venv/bin/python" ci/validate_manifests.py --tollgate "$tollgate" --node-modules "$node_modules" \
    --k8s "${K8S_VERSIONS:-1.30.0,1.37.0}"
