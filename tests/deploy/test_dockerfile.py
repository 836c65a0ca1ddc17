"""The image recipe, read without a Docker engine: its structure, its health check (run against
a real HTTP server), what the build context lets in, and its agreement with the manifests."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import tomllib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .dockerfile import copied_sources, dockerfile_problems, healthcheck_command, ignored, stages
from .manifests import container
from .support import DEPLOY, REPO, load_yaml, one, rendered

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_the_dockerfile_is_multi_stage_non_root_and_checks_health() -> None:
    assert dockerfile_problems(text()) == []
    assert [s.name for s in stages(text())] == ["build", "runtime"]


BREAKAGES = {
    "one stage": (
        lambda t: t.split("FROM ${BASE_IMAGE} AS runtime")[0],
        "expected a build stage and a runtime stage",
    ),
    "running as root": (lambda t: t.replace("USER 10001:10001", "USER root"), "non-root USER"),
    "no user at all": (lambda t: t.replace("USER 10001:10001\n", ""), "non-root USER"),
    "no health check": (
        lambda t: t.split("HEALTHCHECK")[0] + 'ENTRYPOINT ["webhook-consumer"]\nCMD ["run"]\n',
        "HEALTHCHECK: expected CMD in exec form",
    ),
    "a health check with curl": (
        lambda t: t.replace(
            'CMD ["python", "-c",',
            'CMD ["curl", "-f", "http://127.0.0.1:9108/healthz"]\n# was: ["python", "-c",',
        ),
        "HEALTHCHECK: expected a request to /healthz with Python's urllib",
    ),
    "a compiler in the runtime image": (
        lambda t: t.replace(
            "WORKDIR /var/lib/webhook-consumer",
            "RUN apt-get install -y gcc\nWORKDIR /var/lib/webhook-consumer",
        ),
        "final stage installs or runs build tools",
    ),
    "the source tree in the runtime image": (
        lambda t: t.replace(
            "WORKDIR /var/lib/webhook-consumer", "COPY . /src\nWORKDIR /var/lib/webhook-consumer"
        ),
        "final stage copies from the build context",
    ),
    "an old Python": (
        lambda t: t.replace("BASE_IMAGE=python:3.11", "BASE_IMAGE=python:3.10"),
        "expected a slim Python 3.11 or newer",
    ),
    "a base image by tag only": (
        lambda t: t.replace("bookworm@sha256:", "bookworm#sha256:").replace(
            "bookworm#sha256:" + t.split("bookworm@sha256:")[1].split()[0], "bookworm"
        ),
        "expected it pinned by digest",
    ),
    "dependencies resolved at build time": (
        lambda t: t.replace("--require-hashes --wheel-dir /wheels -r requirements.lock", ""),
        "--require-hashes from the lock",
    ),
    "no license in the image": (
        lambda t: t.replace("COPY LICENSE /usr/share/licenses/webhook-consumer/LICENSE\n", ""),
        "expected the LICENSE copied into the image",
    ),
    "a shell-form entrypoint": (
        lambda t: t.replace('ENTRYPOINT ["webhook-consumer"]', "ENTRYPOINT webhook-consumer"),
        "ENTRYPOINT",
    ),
    "no admin port": (lambda t: t.replace("EXPOSE 9108", "EXPOSE 8080"), "EXPOSE"),
    "SIGKILL to stop": (lambda t: t.replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGKILL"), "SIGTERM"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_dockerfile_check_fails_on_a_broken_copy(breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    problems = dockerfile_problems(mutate(text()))
    assert [p for p in problems if expected in p], problems


@pytest.fixture
async def admin_port() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """A stand-in admin port whose /healthz answers what `state['status']` says."""
    state = {"status": 200}

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1], state
    await runner.cleanup()


async def run_healthcheck(port: int) -> int:
    command = healthcheck_command(text())
    assert command is not None
    assert command[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        env={**os.environ, "WEBHOOK_CONSUMER_ADMIN_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_health_check_passes_only_while_healthz_answers_200(
    admin_port: tuple[int, dict[str, int]],
) -> None:
    port, state = admin_port
    assert await run_healthcheck(port) == 0
    state["status"] = 503
    assert await run_healthcheck(port) != 0


async def test_the_health_check_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert await run_healthcheck(port) != 0


def test_the_build_context_holds_what_copy_needs_and_nothing_private() -> None:
    rules = DOCKERIGNORE.read_text(encoding="utf-8")
    needed = []
    for source in copied_sources(text()):
        path = REPO / source
        needed += (
            [str(p.relative_to(REPO)) for p in path.rglob("*.py")] if path.is_dir() else [source]
        )
    assert "consumer/cli.py" in needed
    assert [p for p in needed if ignored(p, rules)] == []
    private = [
        ".venv/bin/python",
        ".git/config",
        ".cache/kafka/lib/kafka.jar",
        "attributes.db",
        "deploy/compose/.env",
        "tests/unit/test_config.py",
        "consumer/__pycache__/cli.pyc",
    ]
    assert [p for p in private if not ignored(p, rules)] == []


def test_the_lock_pins_every_dependency_of_the_package_with_hashes() -> None:
    lock = (DEPLOY / "docker" / "requirements.lock").read_text(encoding="utf-8")
    pinned = {
        canonicalize_name(m["name"]): Version(m["version"])
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)", lock, re.M)
    }
    blocks = re.split(r"\n(?=[A-Za-z])", lock.split("\n\n", 1)[-1])
    assert all("--hash=sha256:" in b for b in blocks if "==" in b)  # `make lock` wrote hashes
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        assert name in pinned, f"{name}: in pyproject.toml, not in the lock: run make lock"
        assert pinned[name] in wanted.specifier, f"{name} {pinned[name]}: not {wanted.specifier}"


def test_an_ignore_file_without_the_catch_all_lets_private_files_in() -> None:
    rules = DOCKERIGNORE.read_text(encoding="utf-8").replace("\n*\n", "\n")
    assert not ignored(".venv/bin/python", rules)


def test_the_image_and_the_manifests_agree() -> None:
    final = stages(text())[-1]
    uid = int((final.last("USER") or "").split(":")[0])
    config_env = [e for e in final.all("ENV") if "WEBHOOK_CONSUMER_CONFIG=" in e]
    config_path = config_env[0].split("WEBHOOK_CONSUMER_CONFIG=")[1].split()[0]
    statefulset = one(rendered("production"), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert container(statefulset)["args"][-1] == config_path
    assert {p["containerPort"] for p in container(statefulset)["ports"]} == {
        int(p) for p in final.all("EXPOSE")
    }
    compose = load_yaml(DEPLOY / "compose" / "compose.yaml")
    assert compose["services"]["consumer-1"]["command"][-1] == config_path
