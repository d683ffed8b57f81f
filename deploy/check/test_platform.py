"""Everything else deploy/ ships: NATS configurations, the compose file, the
Prometheus rules, the PostgreSQL cluster, the image build context, and the
Kubernetes configuration file with the Secrets docs/operations.md lists."""

from __future__ import annotations

import os
import re
import secrets
import subprocess

import promql_parser
import pytest
import yaml

from conftest import ROOT, runs

NATS_PASSWORDS = {
    var: f"test-{var.lower()}"
    for var in re.findall(r"\$(BALADIYA_NATS_[A-Z_]+_PASSWORD)", (ROOT / "deploy/nats/accounts.conf").read_text())
}


@pytest.mark.parametrize("conf", ["nats.conf", "cluster.conf"])
def test_nats_server_accepts_the_configuration(tools, conf):
    env = dict(os.environ, SERVER_NAME="nats-0", **NATS_PASSWORDS)
    done = subprocess.run([tools["nats_server"], "-t", "-c", str(ROOT / "deploy/nats" / conf)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Without the passwords it is refused: the check is not vacuous.
    env.pop(next(iter(NATS_PASSWORDS)))
    refused = subprocess.run([tools["nats_server"], "-t", "-c", str(ROOT / "deploy/nats" / conf)],
                             capture_output=True, text=True, env=env)
    assert refused.returncode != 0


def test_cluster_conf_matches_the_helm_values():
    values = yaml.safe_load((ROOT / "deploy/nats/helm-values.yaml").read_text())
    conf = (ROOT / "deploy/nats/cluster.conf").read_text()
    replicas = values["config"]["cluster"]["replicas"]
    assert replicas == 3 and values["config"]["cluster"]["enabled"]
    routes = re.findall(r'"nats://nats-(\d)\.nats-headless:6222"', conf)
    assert routes == [str(i) for i in range(replicas)]
    js = values["config"]["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and not js["memoryStore"]["enabled"]
    assert js["merge"]["sync_interval"] == "always" and '"sync_interval": "always"' in conf
    assert f'"store_dir": "{js["fileStore"]["dir"]}"' in conf
    assert f'"max_file_store": {js["fileStore"]["pvc"]["size"]}' in conf
    assert values["config"]["merge"]["00$include"] == "accounts.conf" and "include accounts.conf;" in conf
    # Every password accounts.conf reads is given to the NATS container.
    assert set(values["container"]["env"]) >= set(NATS_PASSWORDS)
    assert "sync_interval: always" in (ROOT / "deploy/nats/nats.conf").read_text()


def test_compose_file_follows_the_compose_specification():
    # compose-spec parses and validates against the current Compose
    # specification (unknown keys, port syntax, depends_on conditions...).
    from compose_spec import PyCompose

    text = (ROOT / "deploy/compose.yaml").read_text()
    parsed = PyCompose.from_yaml(text)
    assert sorted(parsed.service_names()) == ["baladiya", "nats", "otel-collector", "postgres"]
    compose = yaml.safe_load(text)
    app = compose["services"]["baladiya"]
    assert (ROOT / "deploy" / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "deploy" / source).is_file(), f"compose mounts missing {source}"
    assert app["read_only"] and app["user"] == "65532:65532"
    with pytest.raises(ValueError):
        PyCompose.from_yaml("services: {x: {image: y, depends_on: {z: {condition: service_happy}}}}")


def rules() -> list[dict]:
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def selector_names(node) -> set[str]:
    """Metric names of every vector selector in a parsed PromQL expression."""
    names = set()
    if isinstance(node, promql_parser.VectorSelector):
        names.add(node.name)
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names |= selector_names(child)
    for child in getattr(node, "args", None) or []:
        names |= selector_names(child)
    return names


def test_alert_rules_parse_and_are_documented():
    operations = (ROOT / "docs/operations.md").read_text()
    seen = set()
    for rule in rules():
        name = rule["alert"]
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        metrics = selector_names(promql_parser.parse(rule["expr"]))
        # Only the platform's own metrics (tests/src/deploy_it.rs checks a
        # running platform exports each).
        assert metrics and all(m.startswith("baladiya_") for m in metrics), f"{name}: {metrics}"
        assert f"`{name}`" in operations, f"docs/operations.md does not explain {name}"
    assert {"BaladiyaOutboxBacklog", "BaladiyaConsumerLag", "BaladiyaParkedEvents", "BaladiyaSlaWatcherLag"} <= seen
    with pytest.raises(Exception):
        promql_parser.parse("max by (schema) (baladiya_outbox_backlog_events > ")


def test_postgres_cluster_matches_the_roles_sql(tools, services):
    docs = [d for d in yaml.safe_load_all(subprocess.run(
        [*tools["kustomize"], str(ROOT / "deploy/postgres")], check=True, capture_output=True, text=True).stdout) if d]
    (cluster,) = [d for d in docs if d["kind"] == "Cluster"]
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert spec["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    (archiver,) = [p for p in spec["plugins"] if p.get("isWALArchiver")]
    assert archiver["parameters"]["barmanObjectName"]
    (backup,) = [d for d in docs if d["kind"] == "ScheduledBackup"]
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"] and backup["spec"]["method"] == "plugin"
    sql = (ROOT / "deploy/postgres/schemas.sql").read_text()
    created = re.findall(r"CREATE ROLE (\w+) NOLOGIN", sql)
    managed = [r["name"] for r in spec["managed"]["roles"]]
    assert managed == created
    assert created == [f"baladiya_{s.replace('-', '_')}" for s in services]
    for role, service in zip(spec["managed"]["roles"], services):
        assert role["login"] and role["passwordSecret"]["name"] == f"baladiya-db-{service}"
    refs = spec["bootstrap"]["initdb"]["postInitApplicationSQLRefs"]["configMapRefs"]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert refs == [{"name": configmap["metadata"]["name"], "key": "schemas.sql"}]
    assert configmap["data"]["schemas.sql"] == sql


def test_image_build_context_holds_what_the_build_reads():
    ignore = (ROOT / "deploy/Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    members = ["crates", "tests"]
    for path in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "proto", *members, "deploy/seed", "deploy/config"]:
        assert path in kept, f"the image build context leaves out {path}"
        assert (ROOT / path).exists()
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    for copied in re.findall(r"^COPY (deploy/\S+)", dockerfile, re.M):
        assert any(copied.startswith(k) for k in kept), f"{copied} is outside the build context"
    assert "USER 65532:65532" in dockerfile and "HEALTHCHECK" not in dockerfile.replace("No HEALTHCHECK", "")


def documented_secrets() -> dict[str, list[str]]:
    """docs/operations.md's Secrets table: {secret name: [keys]}."""
    table = {}
    for secret, key in re.findall(r"^\| `(baladiya-[a-z<>-]+)` \| `(BALADIYA__[A-Z0-9_]+)` \|",
                                  (ROOT / "docs/operations.md").read_text(), re.M):
        table.setdefault(secret, []).append(key)
    return table


def secret_value(key: str) -> str:
    if key.endswith("DATABASE__URL"):
        return "postgres://baladiya_x:pw@baladiya-db-rw.baladiya-db.svc:5432/baladiya"
    if key.endswith("_ID"):
        return "k2026"
    if key.endswith("PASSWORD"):
        return "a-nats-password"
    return secrets.token_hex(32)


def check_config(baladiya, tmp_path, service: str, keys: list[str], nats_user: str):
    directory = tmp_path / f"{service}-{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    for key in keys:
        (directory / key).write_text(secret_value(key) + "\n")
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    env = {"PATH": os.environ["PATH"], "BALADIYA__NATS__USER": nats_user, "BALADIYA__AUTH__JWKS_FILE": str(jwks)}
    return subprocess.run(
        [baladiya, "--config", ROOT / "k8s/base/shared/baladiya.toml", "--secrets-dir", directory,
         "config", "check", "--services", service],
        capture_output=True, text=True, env=env,
    )


def test_kubernetes_config_with_the_documented_secrets_is_valid(baladiya, services, tmp_path):
    table = documented_secrets()
    assert "baladiya-shared" in table and "baladiya-<service>" in table, table
    for service in services:
        keys = table["baladiya-shared"] + table["baladiya-<service>"] + table.get(f"baladiya-{service}", [])
        done = check_config(baladiya, tmp_path, runs(service), keys, service)
        assert done.returncode == 0, f"{service}: {done.stderr}"
    every = sorted({k for keys in table.values() for k in keys})
    done = check_config(baladiya, tmp_path, "all", every, "platform")
    assert done.returncode == 0, f"all: {done.stderr}"
    # Without its keys, a service is refused: the check is not vacuous.
    done = check_config(baladiya, tmp_path, "intake", table["baladiya-shared"] + table["baladiya-<service>"], "intake")
    assert done.returncode != 0 and "intake.pii_key" in done.stderr
