#!/usr/bin/env python3
"""Offline checks of everything under deploy/ (run by ci/validate-manifests.sh).

1. Every YAML file parses (yamllint runs separately, in the shell script).
2. Kubernetes objects validate against the bundled Kubernetes OpenAPI schemas
   (kubernetes-validate, strict: unknown fields are errors) for each version in --k8s.
   Kustomizations and kustomize Components: every file they list exists, the base sets a
   namespace, and every object file under deploy/kubernetes is used by one of them.
3. The ServiceMonitor validates against prometheus-operator's generated schema
   (npm @kubernetes-models/prometheus-operator, via ci/servicemonitor-validate.mjs).
4. The Container Apps YAML is walked against the azure-mgmt-appcontainers models: unknown
   keys, wrong types and missing required keys are errors.
5. Every tollgate TOML embedded in a manifest passes `tollgate check`, run with exactly the
   env the manifest gives the tollgate container (nothing from this machine), plus, in a pod
   labelled for Azure Workload Identity, the variables its webhook injects.
6. The sidecar invariants tollgate's docs promise: the Service targets tollgate's inbound
   port, probes hit /healthz and /readyz on the admin port, the restrictive securityContext,
   workload identity wiring, grace period above shutdown_grace, config mounted as a
   directory (ConfigMap updates reach it), scrape annotations on the admin port.
7. `kubectl kustomize` (--kubectl) renders deploy/kubernetes as shipped (only built-in kinds,
   so it applies without the Prometheus Operator), with the ServiceMonitor component, and with
   the classic Deployment; in each rendering: every object in the kustomization's namespace,
   which it creates; the NetworkPolicy selects the pods and admits tollgate's inbound port
   and, from named pods only, its admin port, and nothing else; one PodDisruptionBudget
   selects the pods and lets a drain proceed; every container with a read-only root but
   tollgate has a /tmp emptyDir; the `restricted` Pod Security Standard holds where the
   namespace enforces it.
8. The Grafana dashboard is valid JSON and queries every core metric of docs/operations.md.

Exit status 1 on any failure, with every failure listed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import typing

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The core metrics of docs/operations.md: these names must exist on /metrics and be on the dashboard.
CONTRACT_METRICS = [
    "tollgate_requests_total",
    "tollgate_auth_failures_total",
    "tollgate_request_duration_seconds",
    "tollgate_upstream_duration_seconds",
    "tollgate_jwks_refresh_total",
    "tollgate_jwks_keys",
    "tollgate_egress_token_requests_total",
    "tollgate_egress_token_expiry_timestamp_seconds",
    "tollgate_config_reloads_total",
]

failures: list[str] = []
passes: list[str] = []


def fail(where: str, msg: str) -> None:
    failures.append(f"{where}: {msg}")


def ok(msg: str) -> None:
    passes.append(msg)
    print(f"ok    {msg}")


def rel(p: pathlib.Path) -> str:
    return str(p.relative_to(ROOT))


# ---------------------------------------------------------------------------------------
# Small helpers over tollgate's config

def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration.strip())
    if not m:
        raise ValueError(f"not a duration: {duration!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def config_facts(toml_text: str) -> dict:
    """What the invariants need from a tollgate config (defaults as in src/config/mod.rs)."""
    t = tomllib.loads(toml_text)
    server = t.get("server")
    return {
        "inbound_port": port_of(server.get("listen", "0.0.0.0:8080")) if server is not None else None,
        "upstream_port": port_of(server["upstream"].split("//", 1)[1].split("/")[0])
        if server is not None and "upstream" in server else None,
        "admin_listen": t.get("admin", {}).get("listen", "127.0.0.1:9090"),
        "shutdown_grace": seconds(server.get("shutdown_grace", "10s")) if server is not None else 10.0,
        "credential_kinds": {c.get("kind") for c in t.get("credentials", {}).values()},
    }


def tollgate_check(binary: pathlib.Path, where: str, toml_text: str, env: dict[str, str]) -> bool:
    """`tollgate check` on the TOML, with only the given env (plus PATH)."""
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "tollgate.toml"
        path.write_text(toml_text)
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        r = subprocess.run([str(binary), "check", "--config", str(path)],
                           env=run_env, capture_output=True, text=True)
    if r.returncode != 0:
        fail(where, "tollgate check failed:\n" + (r.stdout + r.stderr).replace(str(path), "<embedded>"))
        return False
    # `check` prints a "warnings:" heading, then one indented "warning: ..." line each.
    warnings = [l.strip() for l in r.stdout.splitlines() if l.strip().lower().startswith("warning:")]
    for w in warnings:
        print(f"note  {where}: tollgate check: {w.replace(str(path), '<embedded>')}")
    ok(f"{where}: tollgate check (env: {', '.join(sorted(env)) or 'none'})")
    return True


# ---------------------------------------------------------------------------------------
# Kubernetes

# What the Azure Workload Identity mutating admission webhook adds to every container (init
# containers included) of a pod labelled azure.workload.identity/use: "true", except the
# containers named in the pod annotation azure.workload.identity/skip-containers (";"
# separated), and only where the container does not set the variable itself:
#   https://azure.github.io/azure-workload-identity/docs/installation/mutating-admission-webhook.html
# AZURE_CLIENT_ID comes from the ServiceAccount's azure.workload.identity/client-id annotation,
# AZURE_TENANT_ID from its azure.workload.identity/tenant-id annotation or else the webhook's
# own setting (the cluster's tenant; a stand-in here), AZURE_AUTHORITY_HOST from the webhook's
# cloud (the public cloud's here). The token file is the path those docs give; it does not
# exist on this machine (`tollgate check` does not open it today).
WI_LABEL = "azure.workload.identity/use"
WI_TOKEN_FILE = "/var/run/secrets/azure/tokens/azure-identity-token"
WI_DEFAULT_TENANT = "22222222-2222-2222-2222-222222222222"
WI_AUTHORITY_HOST = "https://login.microsoftonline.com/"


def webhook_env(doc: dict, container: dict, account: dict | None) -> dict[str, str]:
    """The env the workload identity webhook would inject into this container of this pod."""
    if pod_labels(doc).get(WI_LABEL) != "true":
        return {}
    skip = {s.strip() for s in pod_annotations(doc).get("azure.workload.identity/skip-containers", "").split(";")}
    if container.get("name") in skip:
        return {}
    ann = (account or {}).get("metadata", {}).get("annotations", {}) or {}
    return {
        "AZURE_CLIENT_ID": ann.get("azure.workload.identity/client-id", ""),
        "AZURE_TENANT_ID": ann.get("azure.workload.identity/tenant-id", WI_DEFAULT_TENANT),
        "AZURE_FEDERATED_TOKEN_FILE": WI_TOKEN_FILE,
        "AZURE_AUTHORITY_HOST": WI_AUTHORITY_HOST,
    }

def schema_check(doc: dict, version: str) -> str | None:
    """Strict validation of one object against the Kubernetes `version` schema: None when it
    passes, "no schema" when the kind is not a built-in one, else the error."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except ValidationError as e:
        return f"Kubernetes {version} schema (strict): {'.'.join(map(str, e.path))}: {e.message}"
    except SchemaNotFoundError:
        return "no schema"
    return None


def k8s_schema(docs: list[tuple[pathlib.Path, dict]], versions: list[str]) -> None:
    for path, doc in docs:
        kind = doc.get("kind")
        name = doc.get("metadata", {}).get("name", "?")
        where = f"{rel(path)} {kind}/{name}"
        if kind in ("Kustomization", "Component"):
            continue  # kustomize, not a Kubernetes API object: checked by kustomizations()
        if kind == "ServiceMonitor":
            continue  # CRD: checked by service_monitors()
        for v in versions:
            error = schema_check(doc, v)
            if error == "no schema":
                fail(where, f"no Kubernetes {v} schema for {doc.get('apiVersion')} {kind}")
            elif error:
                fail(where, error)
            else:
                ok(f"{where}: Kubernetes {v} schema (strict)")


def service_monitors(docs: list[tuple[pathlib.Path, dict]], node_dir: pathlib.Path | None) -> None:
    monitors = [(p, d) for p, d in docs if d.get("kind") == "ServiceMonitor"]
    if not monitors:
        return
    if node_dir is None:
        for p, d in monitors:
            fail(f"{rel(p)} ServiceMonitor", "no prometheus-operator schema available (--node-modules)")
        return
    # ES modules resolve packages from the script's own directory, not NODE_PATH: run a copy
    # placed beside the node_modules that holds the schema package.
    script = node_dir.parent / "servicemonitor-validate.mjs"
    script.write_text((ROOT / "ci" / "servicemonitor-validate.mjs").read_text())
    for p, d in monitors:
        where = f"{rel(p)} ServiceMonitor/{d['metadata']['name']}"
        r = subprocess.run(["node", str(script)], input=json.dumps(d), capture_output=True, text=True)
        if r.returncode != 0:
            fail(where, "prometheus-operator schema: " + (r.stdout + r.stderr).strip())
        else:
            ok(f"{where}: prometheus-operator monitoring.coreos.com/v1 schema")


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    if doc.get("kind") == "Pod":
        return doc.get("metadata", {}).get("labels", {})
    return doc["spec"]["template"].get("metadata", {}).get("labels", {})


def pod_annotations(doc: dict) -> dict:
    if doc.get("kind") == "Pod":
        return doc.get("metadata", {}).get("annotations", {})
    return doc["spec"]["template"].get("metadata", {}).get("annotations", {})


def find_tollgate(spec: dict) -> tuple[dict, str] | None:
    for where in ("initContainers", "containers"):
        for c in spec.get(where, []) or []:
            if c.get("name") == "tollgate" or "tollgate" in c.get("image", ""):
                return c, where
    return None


def resolve_port(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []) or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


def effective(container: dict, spec: dict, key: str):
    """A securityContext field: the container's, else the pod's (where the pod has it)."""
    c = container.get("securityContext", {}) or {}
    if key in c:
        return c[key]
    return (spec.get("securityContext", {}) or {}).get(key)


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def k8s_sidecars(docs: list[tuple[pathlib.Path, dict]], binary: pathlib.Path) -> None:
    configmaps = {d["metadata"]["name"]: (p, d) for p, d in docs if d.get("kind") == "ConfigMap"}
    services = [(p, d) for p, d in docs if d.get("kind") == "Service"]
    accounts = {d["metadata"]["name"]: d for p, d in docs if d.get("kind") == "ServiceAccount"}
    monitors = [(p, d) for p, d in docs if d.get("kind") == "ServiceMonitor"]
    checked_configs: set[str] = set()

    for path, doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{rel(path)} {doc['kind']}/{doc['metadata']['name']}"
        found = find_tollgate(spec)
        if found is None:
            continue
        tg, placement = found
        if placement == "initContainers" and tg.get("restartPolicy") != "Always":
            fail(where, "tollgate in initContainers without restartPolicy: Always is not a sidecar")
        form = "native sidecar" if placement == "initContainers" else "classic sidecar"

        # The config: a ConfigMap volume mounted (as a directory) where --config points.
        config_path, config_file, mount, cm_name = config_mount(spec, tg)
        if mount is None:
            fail(where, f"no volume mounted at {config_path.rsplit('/', 1)[0]} for --config {config_path}")
            continue
        if "subPath" in mount:
            fail(where, "the config volume is mounted with subPath: ConfigMap updates would never reach it")
        if cm_name not in configmaps:
            fail(where, f"the config volume is not a ConfigMap of deploy/ ({cm_name})")
            continue
        cm_path, cm = configmaps[cm_name]
        toml_text = cm.get("data", {}).get(config_file)
        if toml_text is None:
            fail(where, f"ConfigMap {cm_name} has no key {config_file}")
            continue
        own = {e["name"]: str(e["value"]) for e in tg.get("env", []) or [] if "value" in e}
        env = {**webhook_env(doc, tg, accounts.get(spec.get("serviceAccountName", "default"))), **own}
        if tollgate_check(binary, f"{rel(cm_path)} ConfigMap/{cm_name} as used by {where}", toml_text, env):
            checked_configs.add(cm_name)
        facts = config_facts(toml_text)

        # Probes on the admin port.
        admin_port = port_of(facts["admin_listen"])
        if facts["admin_listen"].startswith("127.") or facts["admin_listen"].startswith("[::1]"):
            fail(where, f"[admin] listen = {facts['admin_listen']}: kubelet probes cannot reach loopback")
        for probe, wanted in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = (tg.get(probe) or {}).get("httpGet")
            if not http:
                fail(where, f"tollgate has no {probe} httpGet")
                continue
            if http.get("path") != wanted or resolve_port(tg, http.get("port")) != admin_port:
                fail(where, f"{probe} must GET {wanted} on the admin port {admin_port}, not "
                            f"{http.get('path')} on {http.get('port')}")
        if not (tg.get("resources", {}).get("requests") and tg.get("resources", {}).get("limits")):
            fail(where, "tollgate needs resources.requests and resources.limits")

        # Restrictive securityContext.
        sc = tg.get("securityContext", {}) or {}
        if effective(tg, spec, "runAsNonRoot") is not True:
            fail(where, "tollgate: runAsNonRoot must be true")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(where, "tollgate: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(where, "tollgate: allowPrivilegeEscalation must be false")
        if "ALL" not in (sc.get("capabilities", {}) or {}).get("drop", []):
            fail(where, "tollgate: capabilities must drop ALL")
        if (effective(tg, spec, "seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(where, "tollgate: seccompProfile must be RuntimeDefault")

        # Grace period above shutdown_grace (plus tollgate's own preStop sleep, if any).
        pre_stop = ((tg.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= facts["shutdown_grace"] + pre_stop:
            fail(where, f"terminationGracePeriodSeconds {grace} must exceed shutdown_grace "
                        f"{facts['shutdown_grace']:g} s + preStop {pre_stop} s")

        # Workload identity wiring.
        labels = pod_labels(doc)
        if "workload_identity" in facts["credential_kinds"]:
            if labels.get("azure.workload.identity/use") != "true":
                fail(where, 'workload_identity credential but no pod label azure.workload.identity/use: "true"')
            sa = accounts.get(spec.get("serviceAccountName", "default"))
            if sa is None or not sa.get("metadata", {}).get("annotations", {}).get("azure.workload.identity/client-id"):
                fail(where, "the pod's ServiceAccount needs the azure.workload.identity/client-id annotation")

        # Scrape annotations point at the admin port.
        ann = pod_annotations(doc)
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(admin_port):
            fail(where, f"prometheus.io/scrape and prometheus.io/port: \"{admin_port}\" annotations expected")

        # Services: the pod's traffic goes to tollgate, never straight to the app.
        inbound = facts["inbound_port"]
        mine = [(p, s) for p, s in services if selects(s["spec"].get("selector", {}), labels)]
        if not mine:
            fail(where, "no Service selects this pod")
        fronting = False
        for sp, s in mine:
            for port in s["spec"].get("ports", []):
                target = resolve_port(tg, port.get("targetPort", port["port"]))
                if target == inbound:
                    fronting = True
                elif target == facts["upstream_port"]:
                    fail(f"{rel(sp)} Service/{s['metadata']['name']}",
                         f"targets the app's port {target}: requests would bypass tollgate")
                elif target != admin_port:
                    fail(f"{rel(sp)} Service/{s['metadata']['name']}", f"targets port {target}, not tollgate's")
        if not fronting:
            fail(where, f"no Service targets tollgate's inbound port {inbound}")

        # A ServiceMonitor scrapes the admin port through one of those Services.
        scraped = False
        for mp, m in monitors:
            for sp, s in mine:
                if selects(m["spec"].get("selector", {}).get("matchLabels", {}), s["metadata"].get("labels", {})):
                    names = {p.get("name"): p for p in s["spec"]["ports"]}
                    for ep in m["spec"].get("endpoints", []):
                        port = names.get(ep.get("port"))
                        if port and resolve_port(tg, port.get("targetPort", port["port"])) == admin_port \
                                and ep.get("path", "/metrics") == "/metrics":
                            scraped = True
        if not scraped:
            fail(where, "no ServiceMonitor scrapes /metrics on tollgate's admin port")

        if not failures or not any(f.startswith(where) for f in failures):
            ok(f"{where}: {form} invariants (Service -> :{inbound}, probes on :{admin_port}, "
               f"securityContext, grace {grace} s > {facts['shutdown_grace']:g} s + {pre_stop} s, identity, scraping)")

    for name, (p, cm) in configmaps.items():
        if name not in checked_configs and any(k.endswith(".toml") for k in cm.get("data", {})):
            for key, text in cm["data"].items():
                if key.endswith(".toml"):
                    tollgate_check(binary, f"{rel(p)} ConfigMap/{name} {key} (not used by a workload)", text, {})


# ---------------------------------------------------------------------------------------
# Kustomize: the files, then what `kubectl apply -k` would apply

KUSTOMIZE_API = {"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}
K8S_DIR = ROOT / "deploy" / "kubernetes"
# A file the base kustomization lists, and the documented alternative a reader swaps in for it.
ALTERNATIVES = {"deployment-native-sidecar.yaml": "deployment-classic.yaml"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "IngressClass"}
# Pod Security Standards, restricted: the volume types it admits.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def kustomizations(docs: list[tuple[pathlib.Path, dict]]) -> None:
    """Every file a kustomization or component lists exists; every object file is listed."""
    used: set[pathlib.Path] = set()
    for path, doc in docs:
        kind = doc.get("kind")
        if kind not in KUSTOMIZE_API:
            continue
        where = f"{rel(path)} {kind}"
        bad = len(failures)
        if doc.get("apiVersion") != KUSTOMIZE_API[kind]:
            fail(where, f"apiVersion {doc.get('apiVersion')}: a kustomize {kind} is {KUSTOMIZE_API[kind]}")
        for res in doc.get("resources", []) or []:
            target = (path.parent / res).resolve()
            if not target.exists():
                fail(where, f"resource {res} does not exist")
            elif target.is_file():
                used.add(target)
        for comp in doc.get("components", []) or []:
            if not (path.parent / comp / "kustomization.yaml").exists():
                fail(where, f"component {comp} has no kustomization.yaml")
        if kind == "Kustomization" and not doc.get("namespace"):
            fail(where, "no namespace: every object would land in the namespace of kubectl's context")
        if len(failures) == bad:
            ok(f"{where}: every listed file exists" + (f", namespace {doc['namespace']}" if doc.get("namespace") else ""))
    for listed, alternative in ALTERNATIVES.items():
        if (K8S_DIR / listed).resolve() in used:
            used.add((K8S_DIR / alternative).resolve())
    objects = sorted({p for p, d in docs if p.is_relative_to(K8S_DIR) and d.get("kind") not in KUSTOMIZE_API})
    unused = [p for p in objects if p.resolve() not in used]
    for p in unused:
        fail(rel(p), "no kustomization or component lists it: `kubectl apply -k` never applies it")
    if objects and not unused:
        ok(f"{rel(K8S_DIR)}: every object file is applied by the kustomization, a component of it, "
           f"or is the documented alternative ({', '.join(ALTERNATIVES.values())})")


def kustomize_build(kubectl: str, directory: pathlib.Path, name: str) -> list[dict] | None:
    r = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(name, "kubectl kustomize failed:\n" + (r.stdout + r.stderr).strip())
        return None
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def kustomize_renders(kubectl: str | None, versions: list[str]) -> None:
    """Render the base, the base with each component, the base with each alternative file."""
    base_file = K8S_DIR / "kustomization.yaml"
    if not base_file.exists():
        return
    if kubectl is None:
        fail(rel(K8S_DIR), "not rendered: no kubectl (--kubectl)")
        return
    base = yaml.safe_load(base_file.read_text())
    namespace = base.get("namespace")
    base_name = rel(K8S_DIR)
    variants: list[tuple[str, dict | None, bool]] = [(base_name, None, True)]
    for comp in sorted((K8S_DIR / "components").glob("*/kustomization.yaml")):
        c = str(comp.parent.relative_to(K8S_DIR))
        variants.append((f"{base_name} + component {c}", {**base, "components": [c]}, False))
    for listed, alternative in ALTERNATIVES.items():
        if listed in base.get("resources", []):
            swapped = [alternative if r == listed else r for r in base["resources"]]
            variants.append((f"{base_name} with {alternative}", {**base, "resources": swapped}, True))

    base_objects: list[dict] | None = None
    for name, kustomization, builtin_only in variants:
        with tempfile.TemporaryDirectory() as d:
            directory = K8S_DIR
            if kustomization is not None:
                directory = pathlib.Path(d) / "kubernetes"
                shutil.copytree(K8S_DIR, directory)
                (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
            objects = kustomize_build(kubectl, directory, name)
        if objects is None:
            continue
        if kustomization is None:
            base_objects = objects
        bad = len(failures)
        rendered_schema(name, objects, versions, builtin_only)
        rendered_namespace(name, objects, namespace)
        rendered_policies(name, objects)
        if len(failures) == bad:
            kinds = ", ".join(sorted({o["kind"] for o in objects}))
            ok(f"kubectl kustomize {name}: {len(objects)} objects ({kinds}), all in namespace {namespace}; "
               f"NetworkPolicy, PodDisruptionBudget, /tmp and Pod Security invariants")
    if base_objects is not None and any(o["kind"] == "ServiceMonitor" for o in base_objects):
        fail(base_name, "the base includes a ServiceMonitor: `kubectl apply -k` fails without the Prometheus Operator")


def rendered_schema(name: str, objects: list[dict], versions: list[str], builtin_only: bool) -> None:
    """Strict schema validation of the rendered objects; outside the base, CRDs (checked by
    service_monitors()) are allowed."""
    for o in objects:
        where = f"kubectl kustomize {name}: {o['kind']}/{o['metadata']['name']}"
        for v in versions:
            error = schema_check(o, v)
            if error == "no schema":
                if builtin_only or o["kind"] != "ServiceMonitor":
                    fail(where, f"{o.get('apiVersion')} {o['kind']} is not a built-in Kubernetes {v} kind: "
                                "applying it fails on a cluster without its CRD")
                break
            if error:
                fail(where, error)


def rendered_namespace(name: str, objects: list[dict], namespace: str | None) -> None:
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    if [n["metadata"]["name"] for n in namespaces] != [namespace]:
        fail(f"kubectl kustomize {name}", f"expected one Namespace {namespace}, got "
                                          f"{[n['metadata']['name'] for n in namespaces]}")
    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != namespace:
            fail(f"kubectl kustomize {name}: {o['kind']}/{o['metadata']['name']}",
                 f"namespace {o['metadata'].get('namespace')}, not {namespace}")


def label_selects(selector: dict | None, labels: dict) -> bool | None:
    """A LabelSelector against labels; an empty selector selects everything. None: has
    matchExpressions, not evaluated here."""
    selector = selector or {}
    if selector.get("matchExpressions"):
        return None
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def tollgate_facts(spec: dict, tg: dict, configmaps: dict[str, dict]) -> dict | None:
    _, config_file, mount, cm_name = config_mount(spec, tg)
    if mount is None:
        return None
    cm = configmaps.get(cm_name, {})
    text = cm.get("data", {}).get(config_file)
    return config_facts(text) if text else None


def config_mount(spec: dict, tg: dict) -> tuple[str, str, dict | None, str | None]:
    """Where tollgate's --config points and the volume mounted at its directory: (config path,
    file name, the mount or None, the ConfigMap name of the mounted volume or None)."""
    args = tg.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else "/etc/tollgate/tollgate.toml"
    config_dir, config_file = config_path.rsplit("/", 1)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mount = next((m for m in tg.get("volumeMounts", []) if m["mountPath"].rstrip("/") == config_dir), None)
    cm_name = volumes.get(mount["name"], {}).get("configMap", {}).get("name") if mount else None
    return config_path, config_file, mount, cm_name


def rendered_policies(name: str, objects: list[dict]) -> None:
    """NetworkPolicy, PodDisruptionBudget, /tmp and Pod Security invariants of each workload
    that runs tollgate, among the objects of one rendering."""
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    namespaces = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Namespace"}
    for doc in objects:
        spec = pod_spec(doc)
        found = find_tollgate(spec) if spec is not None else None
        if found is None:
            continue
        tg = found[0]
        where = f"kubectl kustomize {name}: {doc['kind']}/{doc['metadata']['name']}"
        ns = doc["metadata"].get("namespace")
        labels = pod_labels(doc)
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        same_ns = [o for o in objects if o["metadata"].get("namespace") == ns]
        facts = tollgate_facts(spec, tg, configmaps)
        if facts is None:
            fail(where, "tollgate's config is not a ConfigMap of this rendering")
            continue
        inbound, admin = facts["inbound_port"], port_of(facts["admin_listen"])

        # NetworkPolicy: isolates the pods for ingress; admits the inbound port, the admin port
        # from named pods only, and no other port.
        named_ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", []) or [] if "name" in p}
        policies = []
        for np in (o for o in same_ns if o["kind"] == "NetworkPolicy"):
            sel = label_selects(np["spec"].get("podSelector"), labels)
            if sel is None:
                fail(where, f"NetworkPolicy/{np['metadata']['name']}: podSelector.matchExpressions not evaluated here")
            elif sel and "Ingress" in np["spec"].get("policyTypes", ["Ingress"]):
                policies.append(np)
        if not policies:
            fail(where, "no NetworkPolicy isolates these pods for ingress: every port of the pod IP, "
                        "the admin port's /metrics included, is open to the whole cluster")
        inbound_ok, admin_rules = False, []
        for np in policies:
            for i, rule in enumerate(np["spec"].get("ingress") or []):
                rule_where = f"NetworkPolicy/{np['metadata']['name']} ingress[{i}]"
                if not rule.get("ports"):
                    fail(where, f"{rule_where} admits every port, the app's and the admin port included")
                    continue
                for p in rule["ports"]:
                    port = p.get("port")
                    if port is None:
                        fail(where, f"{rule_where} admits every {p.get('protocol', 'TCP')} port")
                        continue
                    if isinstance(port, str):
                        if port not in named_ports:
                            fail(where, f"{rule_where}: no container port is named {port}")
                            continue
                        port = named_ports[port]
                    for n in range(port, p.get("endPort", port) + 1):
                        if n == inbound:
                            inbound_ok = True
                        elif n == admin:
                            admin_rules.append((rule_where, rule.get("from") or []))
                        else:
                            fail(where, f"{rule_where} admits port {n}: neither tollgate's inbound ({inbound}) "
                                        f"nor its admin ({admin}) port")
        if policies and not inbound_ok:
            fail(where, f"no NetworkPolicy rule admits tollgate's inbound port {inbound}")
        if policies and not admin_rules:
            fail(where, f"no NetworkPolicy rule admits the scraper to the admin port {admin}")
        if admin not in {p.get("containerPort") for p in tg.get("ports", []) or []}:
            fail(where, f"tollgate declares no containerPort {admin} (its admin listener)")
        for rule_where, peers in admin_rules:
            if not peers:
                fail(where, f"{rule_where} admits the admin port {admin} from anywhere: /metrics open to the cluster")
            for peer in peers:
                ps = peer.get("podSelector") or {}
                if "ipBlock" in peer or not (ps.get("matchLabels") or ps.get("matchExpressions")):
                    fail(where, f"{rule_where} admits the admin port from {json.dumps(peer)}: "
                                "only pods named by labels (the scraper) should reach /metrics")

        # PodDisruptionBudget: exactly one selects the pods, and it lets a drain proceed.
        pdbs = [o for o in same_ns if o["kind"] == "PodDisruptionBudget"
                and label_selects(o["spec"].get("selector"), labels)]
        replicas = doc["spec"].get("replicas", 1)
        if len(pdbs) != 1:
            fail(where, f"{len(pdbs)} PodDisruptionBudgets select these pods: one is wanted "
                        "(none: a drain may take every replica at once; more: evictions are refused)")
        for pdb in pdbs:
            mu, ma = pdb["spec"].get("maxUnavailable"), pdb["spec"].get("minAvailable")

            def count(v, round_up: bool) -> int:
                if isinstance(v, str) and v.endswith("%"):
                    x = int(v[:-1]) * replicas / 100
                    return int(-(-x // 1)) if round_up else int(x)
                return int(v)
            allowed = count(mu, True) if mu is not None else replicas - count(ma, True) if ma is not None else 0
            if allowed < 1:
                fail(where, f"PodDisruptionBudget/{pdb['metadata']['name']} allows no voluntary disruption "
                            f"of {replicas} replicas: every node drain would block on these pods")

        # A read-only root needs a writable /tmp (an emptyDir) for most programs. Not for
        # tollgate, which writes no file (ci/image-smoke.sh runs it in a read-only root).
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers:
            if c is tg or (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                continue
            mount = next((m for m in c.get("volumeMounts", []) or [] if m["mountPath"].rstrip("/") == "/tmp"), None)
            if mount is None:
                fail(where, f"container {c['name']}: readOnlyRootFilesystem and no /tmp mount")
            elif "emptyDir" not in volumes.get(mount["name"], {}):
                fail(where, f"container {c['name']}: /tmp is not an emptyDir volume")

        # Pod Security admission, where the namespace enforces `restricted`.
        ns_labels = namespaces.get(ns, {}).get("metadata", {}).get("labels", {}) or {}
        if ns_labels.get("pod-security.kubernetes.io/enforce") == "restricted":
            problems = [f"{k}: true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
            for v in spec.get("volumes", []):
                kinds = set(v) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    problems.append(f"volume {v['name']} is {', '.join(kinds)}")
            for c in containers:
                sc, n = c.get("securityContext") or {}, c["name"]
                caps = sc.get("capabilities") or {}
                if sc.get("privileged"):
                    problems.append(f"{n}: privileged")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{n}: allowPrivilegeEscalation is not false")
                if "ALL" not in (caps.get("drop") or []) or set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                    problems.append(f"{n}: capabilities must drop ALL and add at most NET_BIND_SERVICE")
                if effective(c, spec, "runAsNonRoot") is not True or effective(c, spec, "runAsUser") == 0:
                    problems.append(f"{n}: runAsNonRoot is not true")
                if (effective(c, spec, "seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                    problems.append(f"{n}: seccompProfile is not RuntimeDefault or Localhost")
                if any(p.get("hostPort") for p in c.get("ports", []) or []):
                    problems.append(f"{n}: hostPort")
            if problems:
                fail(where, f"namespace {ns} enforces the restricted Pod Security Standard, which would reject "
                            f"these pods: {'; '.join(problems)}")


# ---------------------------------------------------------------------------------------
# Azure Container Apps

def aca_walk(cls, data, where: str, errors: list[str]) -> None:
    """Check `data` (YAML) against an azure-mgmt-appcontainers model class, recursively."""
    from azure.mgmt.appcontainers import models as m

    cls({})  # the model base fills in _attr_to_rest_field on first use
    fields = {rf._rest_name: attr for attr, rf in cls._attr_to_rest_field.items()}
    # Annotations name "_models.X", an import made only under TYPE_CHECKING.
    hints = typing.get_type_hints(cls, {**vars(sys.modules[cls.__module__]), "_models": m})
    doc = cls.__doc__ or ""
    for attr, rf in cls._attr_to_rest_field.items():
        if re.search(rf":ivar {attr}:[^:]*?Required\.", doc, re.S) and rf._rest_name not in data:
            # Read-only ids (id, type, name) are filled in by ARM; only creatable ones count.
            if "create" in (rf._visibility or ["create"]):
                errors.append(f"{where}: missing required key {rf._rest_name}")
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping, got {type(data).__name__}")
        return
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(fields))})")
            continue
        aca_value(hints[fields[key]], value, f"{where}.{key}", errors)


def aca_value(hint, value, where: str, errors: list[str]) -> None:
    from azure.mgmt.appcontainers._utils.model_base import Model

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        if value is None:
            return
        # Extensible enums are Union[str, Enum]: any string goes.
        if any(a is str for a in options):
            if not isinstance(value, str):
                errors.append(f"{where}: expected a string")
            return
        if len(options) == 1:
            return aca_value(options[0], value, where, errors)
        errors.append(f"{where}: cannot check union {hint}")
        return
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list")
            return
        for i, v in enumerate(value):
            aca_value(args[0], v, f"{where}[{i}]", errors)
        return
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping")
            return
        for k, v in value.items():
            aca_value(args[1], v, f"{where}[{k}]", errors)
        return
    if isinstance(hint, type) and issubclass(hint, Model):
        return aca_walk(hint, value, where, errors)
    if hint is typing.Any:
        return
    if hint is float:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok_type = isinstance(value, hint)
    else:
        ok_type = True
    if not ok_type:
        errors.append(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}")


def container_apps(path: pathlib.Path, doc: dict, binary: pathlib.Path) -> None:
    from azure.mgmt.appcontainers import models as m

    where = f"{rel(path)} containerApp/{doc.get('name', '?')}"
    errors: list[str] = []
    aca_walk(m.ContainerApp, doc, "$", errors)
    for e in errors:
        fail(where, f"Container Apps model: {e}")
    if not errors:
        ok(f"{where}: azure-mgmt-appcontainers ContainerApp model (unknown keys, types, required)")

    props = doc.get("properties", {})
    conf, tmpl = props.get("configuration", {}), props.get("template", {})
    secrets = {s["name"]: s for s in conf.get("secrets", [])}
    volumes = {v["name"]: v for v in tmpl.get("volumes", [])}
    tg = next((c for c in tmpl.get("containers", []) if c.get("name") == "tollgate"
               or "tollgate" in c.get("image", "")), None)
    if tg is None:
        fail(where, "no tollgate container")
        return
    args = tg.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else "/etc/tollgate/tollgate.toml"
    config_dir, config_file = config_path.rsplit("/", 1)
    mount = next((vm for vm in tg.get("volumeMounts", []) if vm["mountPath"].rstrip("/") == config_dir), None)
    if mount is None:
        fail(where, f"no volume mounted at {config_dir}")
        return
    vol = volumes.get(mount["volumeName"], {})
    item = next((s for s in vol.get("secrets", []) if s.get("path") == config_file), None)
    if vol.get("storageType") != "Secret" or item is None or item["secretRef"] not in secrets:
        fail(where, f"{config_file} is not a secret of this app mounted at {config_dir}")
        return
    toml_text = secrets[item["secretRef"]]["value"]
    env = {e["name"]: str(e["value"]) for e in tg.get("env", []) if "value" in e}
    tollgate_check(binary, f"{where} secret {item['secretRef']}", toml_text, env)
    facts = config_facts(toml_text)

    admin_port = port_of(facts["admin_listen"])
    if conf.get("ingress", {}).get("targetPort") != facts["inbound_port"]:
        fail(where, f"ingress.targetPort must be tollgate's inbound port {facts['inbound_port']}")
    # The ingress publishes targetPort and additionalPortMappings only; the admin port may be
    # among the latter only for the environment (external: false).
    for m in conf.get("ingress", {}).get("additionalPortMappings", []) or []:
        if m.get("targetPort") == admin_port and m.get("external") is not False:
            fail(where, f"additionalPortMappings publishes the admin port {admin_port} outside the environment")
        if m.get("targetPort") == facts["upstream_port"]:
            fail(where, f"additionalPortMappings publishes the app's port {m['targetPort']}: it bypasses tollgate")
    probes = {p.get("type"): p for p in tg.get("probes", [])}
    for kind, wanted in (("Liveness", "/healthz"), ("Readiness", "/readyz")):
        http = probes.get(kind, {}).get("httpGet", {})
        if http.get("path") != wanted or http.get("port") != admin_port:
            fail(where, f"{kind} probe must GET {wanted} on the admin port {admin_port}")
    if not doc.get("identity", {}).get("type", "None").lower().startswith(("system", "user")):
        fail(where, "no managed identity on the app")
    if "managed_identity" in facts["credential_kinds"] and "UserAssigned" in doc.get("identity", {}).get("type", "") \
            and "${AZURE_CLIENT_ID}" not in toml_text and "client_id" not in toml_text:
        fail(where, "a user-assigned identity needs client_id in the managed_identity credential")
    grace = tmpl.get("terminationGracePeriodSeconds", 30)
    if grace <= facts["shutdown_grace"]:
        fail(where, f"terminationGracePeriodSeconds {grace} must exceed shutdown_grace")
    if not [f for f in failures if f.startswith(where)]:
        ok(f"{where}: sidecar invariants (ingress -> :{facts['inbound_port']}, probes on :{admin_port}, identity)")


# ---------------------------------------------------------------------------------------
# Grafana

def grafana(path: pathlib.Path) -> None:
    where = rel(path)
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        fail(where, f"invalid JSON: {e}")
        return
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(dash.get("panels", []))
    text = "\n".join(exprs)
    missing = [m for m in CONTRACT_METRICS if not re.search(rf"\b{m}(_bucket|_sum|_count)?\b", text)]
    if missing:
        fail(where, f"no panel queries {', '.join(missing)}")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        fail(where, "duplicate panel ids")
    if not missing:
        ok(f"{where}: valid JSON, {len(exprs)} queries over every core metric")


# ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True, type=pathlib.Path)
    ap.add_argument("--node-modules", type=pathlib.Path)
    ap.add_argument("--kubectl", help="kubectl, for `kubectl kustomize` (kustomize is built in)")
    ap.add_argument("--k8s", default="1.30.0,1.37.0",
                    help="Kubernetes versions to validate against (comma separated)")
    a = ap.parse_args()

    k8s_docs: list[tuple[pathlib.Path, dict]] = []
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        if path.parent == ROOT / "deploy" / "prometheus":
            # Prometheus rule files and their unit tests: ci/promtool.sh runs promtool on them.
            ok(f"{rel(path)}: Prometheus rules, checked by ci/promtool.sh")
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(rel(path), f"YAML: {e}")
            continue
        for d in docs:
            if d.get("type") == "Microsoft.App/containerApps":
                container_apps(path, d, a.tollgate)
            elif "apiVersion" in d and "kind" in d:
                k8s_docs.append((path, d))
            else:
                fail(rel(path), "neither a Kubernetes object nor a Container Apps app: not validated")

    k8s_schema(k8s_docs, a.k8s.split(","))
    kustomizations(k8s_docs)
    service_monitors(k8s_docs, a.node_modules)
    k8s_sidecars(k8s_docs, a.tollgate)
    kustomize_renders(a.kubectl, a.k8s.split(","))
    for path in sorted((ROOT / "deploy").rglob("*.json")):
        grafana(path)

    if failures:
        print(f"\n{len(failures)} failure(s):", file=sys.stderr)
        for f in failures:
            print(f"FAIL  {f}", file=sys.stderr)
    print(f"{len(passes)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
