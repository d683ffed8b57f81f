"""The Kubernetes manifests: they render, validate against the Kubernetes API
schemas, pass checkov, and every Deployment carries what production needs."""

from __future__ import annotations

import copy
import subprocess

import pytest

from conftest import OVERLAYS, ROOT, runs

# The Kubernetes versions docs/operations.md promises: the oldest supported and
# the newest the validator knows.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
HEALTH_PORT = 50052
GRPC_PORT = 50051


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels selector picks pods with `labels` (empty picks all)."""
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def workload_problems(workload: dict, pod_spec: dict) -> list[str]:
    """What the restricted Pod Security profile and our resource rules find wrong."""
    name = f"{workload['kind']} {workload['metadata']['name']}"
    problems = []
    pod_sc = pod_spec.get("securityContext", {})
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    if pod_spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token")
    for c in pod_spec["containers"]:
        where = f"{name} container {c['name']}"
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{where}: may run as root")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allows privilege escalation")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root file system is writable")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: does not drop all capabilities")
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in c.get("resources", {}).get(bound, {}):
                    problems.append(f"{where}: no {resource} {bound}")
    return problems


def deployment_problems(d: dict, docs: list[dict], overlay: str) -> list[str]:
    """Everything one Deployment must have, given the rest of its overlay."""
    name = f"Deployment {d['metadata']['name']}"
    spec = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    problems = workload_problems(d, spec)
    container = spec["containers"][0]
    tls = "BALADIYA__SERVER__TLS_CERT_FILE" in env_of(container)
    # Probes ask the gRPC health service on a port that serves it in plaintext.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = container.get(probe)
        if not p or "grpc" not in p:
            problems.append(f"{name}: no gRPC {probe}")
            continue
        port = p["grpc"].get("port")
        want = HEALTH_PORT if tls else GRPC_PORT
        if not isinstance(port, int):
            problems.append(f"{name}: {probe} port {port!r} is not a number")
        elif port != want:
            problems.append(f"{name}: {probe} on {port}, but health is served in plaintext on {want}")
    if container.get("readinessProbe", {}).get("grpc", {}).get("service") != "readiness":
        problems.append(f"{name}: readiness does not ask for the `readiness` health service")
    if not spec.get("topologySpreadConstraints"):
        problems.append(f"{name}: no topology spread")
    if not any(selects(p["spec"]["selector"], labels) for p in of_kind(docs, "PodDisruptionBudget")):
        problems.append(f"{name}: no PodDisruptionBudget")
    hpas = [h for h in of_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": d["metadata"]["name"]}]
    if not hpas:
        problems.append(f"{name}: no HorizontalPodAutoscaler")
    policies = [p for p in of_kind(docs, "NetworkPolicy") if p["spec"]["podSelector"]]
    if not any(selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"]["policyTypes"] for p in policies):
        problems.append(f"{name}: no NetworkPolicy allows its ingress")
    if not any(not p["spec"]["podSelector"] and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               for p in of_kind(docs, "NetworkPolicy")):
        problems.append(f"{name}: the namespace has no default-deny NetworkPolicy")
    if overlay == "production":
        if d["spec"].get("replicas", 1) < 3:
            problems.append(f"{name}: fewer than 3 replicas")
        if any(h["spec"]["minReplicas"] < 3 for h in hpas):
            problems.append(f"{name}: its autoscaler may go below 3 replicas")
        required = spec.get("affinity", {}).get("podAntiAffinity", {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution", [])
        if not any(t["topologyKey"] == "kubernetes.io/hostname" for t in required):
            problems.append(f"{name}: no required anti-affinity across nodes")
        if env_of(container).get("BALADIYA__EVENTS__STREAM_REPLICAS") != "3":
            problems.append(f"{name}: streams are not created with 3 replicas")
        if not tls:
            problems.append(f"{name}: gRPC without mTLS")
    return problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes(tools, rendered, overlay, version):
    done = subprocess.run(
        [f"{tools['bin']}/kubernetes-validate", "--strict", "--quiet", "-k", version, str(rendered[overlay])],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_ready_for_production(manifests, overlay):
    docs = manifests[overlay]
    deployments = of_kind(docs, "Deployment")
    assert deployments, f"{overlay} renders no Deployment"
    problems = [p for d in deployments for p in deployment_problems(d, docs, overlay)]
    problems += [p for j in of_kind(docs, "Job") for p in workload_problems(j, j["spec"]["template"]["spec"])]
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_is_missing(manifests):
    """The rules above are not vacuous: each broken copy is caught."""
    docs = manifests["production"]
    good = of_kind(docs, "Deployment")[0]
    assert deployment_problems(good, docs, "production") == []
    breakages = {
        "no gRPC readinessProbe": lambda c, s, d: c.pop("readinessProbe"),
        "not RuntimeDefault": lambda c, s, d: s["securityContext"].pop("seccompProfile"),
        "root file system is writable": lambda c, s, d: c["securityContext"].update(readOnlyRootFilesystem=False),
        "no memory limits": lambda c, s, d: c["resources"]["limits"].pop("memory"),
        "health is served in plaintext on 50052": lambda c, s, d: c["livenessProbe"]["grpc"].update(port=GRPC_PORT),
        "fewer than 3 replicas": lambda c, s, d: d["spec"].update(replicas=1),
        "no required anti-affinity": lambda c, s, d: s.pop("affinity"),
    }
    for expected, breaks in breakages.items():
        broken = copy.deepcopy(good)
        spec = broken["spec"]["template"]["spec"]
        breaks(spec["containers"][0], spec, broken)
        found = deployment_problems(broken, docs, "production")
        assert any(expected in p for p in found), f"{expected!r} not reported: {found}"
    orphan = copy.deepcopy(good)
    orphan["metadata"]["name"] = "baladiya-orphan"
    orphan["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "orphan"}
    found = deployment_problems(orphan, docs, "production")
    for expected in ("no PodDisruptionBudget", "no HorizontalPodAutoscaler", "no NetworkPolicy"):
        assert any(expected in p for p in found), f"{expected!r} not reported: {found}"


def unit(docs: list[dict], kind: str, component: str) -> dict:
    found = [d for d in of_kind(docs, kind)
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"{len(found)} {kind}s for {component}"
    return found[0]


def secrets_of(pod_spec: dict) -> list[str]:
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "secrets")
    return [s["secret"]["name"] for s in volume["projected"]["sources"]]


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_each_service_runs_alone_with_its_own_user_and_secret(manifests, services, overlay):
    docs = manifests[overlay]
    components = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                  for d in of_kind(docs, "Deployment")}
    assert components == set(services), "one Deployment per service of `baladiya list-services`"
    for service in services:
        pod = unit(docs, "Deployment", service)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ["run", "--services", runs(service)]
        assert env_of(container)["BALADIYA__NATS__USER"] == service
        assert secrets_of(pod) == ["baladiya-shared", f"baladiya-{service}"]
        job = unit(docs, "Job", service)["spec"]["template"]["spec"]
        assert job["containers"][0]["args"] == ["seed", "--services", service]
        assert secrets_of(job) == ["baladiya-shared", f"baladiya-{service}"]
    webhooks = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"].startswith("baladiya-webhooks")]
    assert [p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in webhooks] == ["sla-watcher"]


def test_all_in_one_runs_every_service_in_one_deployment(manifests):
    docs = manifests["all-in-one"]
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["run", "--services", "all"]
    assert env_of(pod["containers"][0])["BALADIYA__NATS__USER"] == "platform"
    assert secrets_of(pod) == ["baladiya-shared", "baladiya-all"]


def test_nats_users_exist_for_every_deployment(manifests):
    accounts = (ROOT / "deploy/nats/accounts.conf").read_text()
    users = {line.split(":", 1)[1].strip() for line in accounts.splitlines() if line.strip().startswith("user:")}
    for overlay, docs in manifests.items():
        for d in of_kind(docs, "Deployment") + of_kind(docs, "Job"):
            user = env_of(d["spec"]["template"]["spec"]["containers"][0])["BALADIYA__NATS__USER"]
            assert user in users, f"{overlay}: {d['metadata']['name']} runs as NATS user {user}, not in accounts.conf"


def test_checkov_finds_nothing(tools, rendered):
    done = subprocess.run(
        [f"{tools['bin']}/checkov", "--config-file", str(ROOT / "deploy/check/checkov.yaml"),
         *[a for path in rendered.values() for a in ("-f", str(path))], "-f", str(ROOT / "deploy/Dockerfile")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Passed checks" in done.stdout, done.stdout


def test_dockerfile_passes_hadolint(tools):
    done = subprocess.run([f"{tools['bin']}/hadolint", str(ROOT / "deploy/Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
