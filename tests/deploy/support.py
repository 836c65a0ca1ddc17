"""What the deploy tests share: paths, rendering the kustomize overlays, configs, the catalogue.

Nothing here needs a network, a Docker engine or a cluster: kustomize renders locally, and the
schemas come from PyPI packages (kubernetes-validate, check-jsonschema) or this folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from consumer.config import ServiceConfig, parse_config

from ..pki import Authority

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "production")
CATALOGUE = DEPLOY / "metrics.yaml"
SCHEMAS = Path(__file__).parent / "schemas"


def kustomize_command() -> list[str]:
    """The command that renders a kustomization folder given after it: $KUSTOMIZE, else what
    `make kustomize` built under .cache, else kustomize on PATH, else `kubectl kustomize`."""
    built = sorted(REPO.glob(".cache/kustomize-*/kustomize"), key=lambda p: p.stat().st_mtime)
    binary = os.environ.get("KUSTOMIZE") or (str(built[-1]) if built else shutil.which("kustomize"))
    if binary:
        return [binary, "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise RuntimeError("no kustomize: run `make kustomize` (needs Go) or set $KUSTOMIZE")


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build folder` produces."""
    done = subprocess.run(
        [*kustomize_command(), str(folder)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise AssertionError(f"kustomize build {folder} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(KUBERNETES / "overlays" / overlay))


def one(objects: Any, kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def config_text(objects: Any) -> str:
    """config.yaml of the rendered ConfigMap."""
    return str(one(objects, "ConfigMap")["data"]["config.yaml"])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def config_of(text: str, environ: dict[str, str], source: str) -> ServiceConfig:
    """The config as `check-config` would load it, with these variables set and a stand-in
    for every file it reads (a pod gets those from its mounts: manifests.py checks them)."""
    with tempfile.TemporaryDirectory() as folder:
        return parse_config(yaml.safe_load(with_stand_ins(text, Path(folder))), source, environ)


def secret_files(text: str) -> set[str]:
    """Every file a config reads a secret or CA from (`*_file` and `ca_bundle` fields)."""
    return {value for key, value in _fields(text) if key.endswith("_file") or key == "ca_bundle"}


def with_stand_ins(text: str, folder: Path) -> str:
    """The config with each secret file replaced by one in `folder` that holds a value of the
    right kind (a CA certificate for a ca_bundle)."""
    bundles = {value for key, value in _fields(text) if key == "ca_bundle"}
    for i, path in enumerate(sorted(secret_files(text), key=len, reverse=True)):
        stand_in = folder / f"{i}-{Path(path).name}"
        stand_in.write_bytes(_ca_pem() if path in bundles else b"stand-in-secret")
        text = text.replace(path, str(stand_in))
    return text


@cache
def _ca_pem() -> bytes:
    return Authority("stand-in CA").cert_pem


def _fields(text: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str):
                    found.append((key, item))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(yaml.safe_load(text))
    return found


def secret_variables(text: str) -> set[str]:
    """Every environment variable a config reads a secret from (`*_env` fields)."""
    return {value for key, value in _fields(text) if key.endswith("_env")}


@cache
def catalogue() -> dict[str, Any]:
    data = load_yaml(CATALOGUE)
    assert isinstance(data, dict)
    return data
