"""Fixtures: the rendered overlays, compose.yaml, what the programs read."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import (
    K8S,
    LAUNCHER_READS,
    NAMESPACE_KUSTOMIZATION,
    OVERLAYS,
    PROGRAMS,
    ROOT,
    SRC,
    Manifest,
    program_modules,
    reads,
    source,
)


def _kubectl() -> str:
    """kubectl from $KUBECTL, beside this Python (k8s/.venv), or on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = os.environ.get("KUBECTL") or (str(beside) if beside.exists() else None)
    found = found or shutil.which("kubectl")
    if not found:
        pytest.fail("no kubectl to render the manifests with: run `make k8s-check`")
    return found


def render(path: Path) -> list[Manifest]:
    """A kustomization's objects, as `kubectl kustomize` renders them."""
    output = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert output.returncode == 0, f"kubectl kustomize {path}: {output.stderr}"
    return [doc for doc in yaml.safe_load_all(output.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """Every overlay (the base too), rendered by kustomize."""
    return {name: render(path) for name, path in OVERLAYS.items()}


@pytest.fixture(scope="session")
def namespace() -> list[Manifest]:
    """The namespace's kustomization, rendered."""
    return render(NAMESPACE_KUSTOMIZATION)


@pytest.fixture(scope="session")
def secret_template() -> dict[str, dict[str, str]]:
    """The keys and values of k8s/base/secrets.example.yaml, by Secret name."""
    docs = yaml.safe_load_all((K8S / "base" / "secrets.example.yaml").read_text())
    return {doc["metadata"]["name"]: doc["stringData"] for doc in docs if doc}


@pytest.fixture(scope="session")
def compose() -> dict[str, Manifest]:
    """compose.yaml's services, anchors and merge keys resolved."""
    services: dict[str, Manifest] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return services


@pytest.fixture(scope="session")
def program_reads() -> dict[str, dict[str, ast.expr | None]]:
    """By compose service: the variables its program reads, and their defaults."""
    result: dict[str, dict[str, ast.expr | None]] = {}
    for service in PROGRAMS:
        result[service] = dict(LAUNCHER_READS.get(service, {}))
        for module in program_modules(service):
            result[service].update(reads(source(module)))
    return result


def _config_class(program: str) -> Any:
    sys.path.insert(0, str(SRC))
    try:
        module = importlib.import_module(f"live_notifications.{program}.config")
    finally:
        sys.path.remove(str(SRC))
    return module.Config


@pytest.fixture(scope="session")
def broadcaster_config() -> Any:
    """src/live_notifications/broadcaster/config.py's Config class (its defaults)."""
    return _config_class("broadcaster")


@pytest.fixture(scope="session")
def relay_config() -> Any:
    """src/live_notifications/relay/config.py's Config class (its defaults)."""
    return _config_class("relay")
