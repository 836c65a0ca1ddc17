"""The image, built and run (`make image-test`: Debian's buildah, no registry, a base made from
Debian 12's packages in place of python:3.11-slim-bookworm; deploy/docker/offline-build).

Skipped unless WEBHOOK_CONSUMER_IMAGE names a built image: building takes minutes and needs
root, so `make test` does not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

IMAGE = os.environ.get("WEBHOOK_CONSUMER_IMAGE")
REPO = Path(__file__).resolve().parents[2]
BUILDAH = ["buildah", "--storage-driver", "vfs"]

pytestmark = pytest.mark.skipif(IMAGE is None, reason="set by `make image-test`")


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    assert IMAGE is not None
    name = subprocess.run(
        [*BUILDAH, "from", IMAGE], check=True, capture_output=True, text=True, timeout=300
    ).stdout.strip()
    yield name
    subprocess.run([*BUILDAH, "rm", name], check=False, capture_output=True, timeout=120)


def run(container: str, *command: str, env: dict[str, str] | None = None) -> str:
    """The command inside the image, as its own user, on this host's network."""
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    done = subprocess.run(
        [
            *BUILDAH,
            "run",
            "--isolation",
            "chroot",
            "--user",
            "10001:10001",
            *flags,
            container,
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_image_runs_the_demo_end_to_end(container: str) -> None:
    env = {k: os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    out = run(container, "webhook-consumer", "demo", env=env)
    assert "signatures verified" in out
    assert out.rstrip().endswith("demo passed")


def test_the_image_runs_as_its_user_and_carries_the_license(container: str) -> None:
    assert run(container, "id", "-u").strip() == "10001"
    shipped = run(container, "cat", "/usr/share/licenses/webhook-consumer/LICENSE")
    assert shipped == (REPO / "LICENSE").read_text(encoding="utf-8")


def test_the_image_holds_exactly_the_locked_versions(container: str) -> None:
    lock = (REPO / "deploy" / "docker" / "requirements.lock").read_text(encoding="utf-8")
    pinned = {
        m["name"].lower().replace("_", "-"): m["version"]
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;]+)", lock, re.M)
    }
    listing = run(
        container,
        "python",
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
    )
    installed = {k.lower().replace("_", "-"): v for k, v in json.loads(listing).items()}
    installed.pop("webhook-consumer")
    assert installed == pinned
