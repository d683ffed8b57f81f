"""Shared fixtures for the deployment checks (`make deploy-check`, part of `make test`).

The tools come from `scripts/devenv.py deploy-tools` (the Makefile passes its
JSON in BALADIYA_DEPLOY_TOOLS); the rendered manifests are built once per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = {
    "base": "k8s/base",
    "all-in-one": "k8s/overlays/all-in-one",
    "production": "k8s/overlays/production",
}


@pytest.fixture(scope="session")
def tools() -> dict:
    given = os.environ.get("BALADIYA_DEPLOY_TOOLS")
    if given:
        return json.loads(given)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "devenv.py"), "deploy-tools"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def render(tools: dict, path: str) -> str:
    done = subprocess.run([*tools["kustomize"], str(ROOT / path)], capture_output=True, text=True)
    assert done.returncode == 0, f"kustomize {path}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def rendered(tools, tmp_path_factory) -> dict[str, Path]:
    """Each overlay rendered to a file: {overlay: path}."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for name, path in OVERLAYS.items():
        files[name] = out / f"{name}.yaml"
        files[name].write_text(render(tools, path))
    return files


@pytest.fixture(scope="session")
def manifests(rendered) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(path.read_text()) if d] for name, path in rendered.items()}


@pytest.fixture(scope="session")
def baladiya() -> Path:
    binary = Path(os.environ.get("BALADIYA_BIN", ROOT / "target" / "debug" / "baladiya"))
    assert binary.exists(), f"{binary} is missing: run `cargo build --bin baladiya` first"
    return binary


@pytest.fixture(scope="session")
def services(baladiya) -> list[str]:
    """The services the binary can run, from `baladiya list-services` (the
    adapters listed after them run beside a service, not alone: see RUNS)."""
    out = subprocess.run([baladiya, "list-services"], check=True, capture_output=True, text=True).stdout
    services = []
    for line in out.splitlines():
        if line.startswith("adapters"):
            break
        services.append(line.split()[0])
    return services


# What each service's unit runs: the Open311 facade rides with intake, which it
# calls in-process (so it works behind mTLS and needs no database or stream).
RUNS = {"intake": "intake,open311"}


def runs(service: str) -> str:
    return RUNS.get(service, service)
