"""What the deploy tests share: paths, rendering the kustomize overlays, configs, the catalogue.

Nothing here needs a network, a Docker engine or a cluster: kustomize renders locally, and the
schemas come from PyPI packages (kubernetes-validate, check-jsonschema) or this folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from consumer.config import ServiceConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "production")
CATALOGUE = DEPLOY / "metrics.yaml"
SCHEMAS = Path(__file__).parent / "schemas"
# Lines of a config that hold a key arriving with the contract's 1.1 additions.
FUTURE_MARK = "#1.1 "


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
    """The config as `check-config` would load it, with these variables set."""
    return parse_config(yaml.safe_load(text), source, environ)


def secret_variables(text: str) -> set[str]:
    """Every environment variable a config reads a secret from (`*_env` fields)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_env") and isinstance(item, str):
                    names.add(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(yaml.safe_load(with_future_keys(text)))
    return names


def with_future_keys(text: str) -> str:
    """The config as it reads once the 1.1 keys exist: their marked lines uncommented."""
    return "\n".join(
        line[len(FUTURE_MARK) :] if line.startswith(FUTURE_MARK) else line
        for line in text.splitlines()
    )


def key_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not isinstance(value, dict):
        return set()
    paths: set[tuple[str, ...]] = set()
    for key, item in value.items():
        paths.add((*prefix, str(key)))
        paths |= key_paths(item, (*prefix, str(key)))
    return paths


def future_key_paths(text: str) -> set[tuple[str, ...]]:
    """Key paths that only the marked (commented) lines add, outermost only."""
    present = key_paths(yaml.safe_load(text))
    added = key_paths(yaml.safe_load(with_future_keys(text))) - present
    return {p for p in added if p[:-1] in present or len(p) == 1}


def model_knows(path: tuple[str, ...], model: type[BaseModel] = ServiceConfig) -> bool:
    """Whether the config model has a field at this key path."""
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    candidates = (field.annotation, *get_args(field.annotation))
    nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return bool(nested) and model_knows(path[1:], nested[0])


@cache
def catalogue() -> dict[str, Any]:
    data = load_yaml(CATALOGUE)
    assert isinstance(data, dict)
    return data
