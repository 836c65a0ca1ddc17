"""Structural checks of the Dockerfile and .dockerignore ([] when fine), without building."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from dockerfile_parse import DockerfileParser

# In the final stage these mean a compiler or a build step shipped in the image.
BUILD_TOOLS = re.compile(
    r"apt-get install|apk add|\bgcc\b|\bg\+\+|build-essential|\bmake\b|pip wheel|-m build\b"
)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [str(i["value"]) for i in self.instructions if i["instruction"] == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None


def stages(text: str) -> list[Stage]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    images = iter(parser.parent_images)  # FROM images with ARG defaults substituted
    found: list[Stage] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            words = str(instruction["value"]).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(next(images), name))
        elif found and instruction["instruction"] != "COMMENT":
            found[-1].instructions.append(instruction)
    return found


def exec_form(value: str | None) -> list[str] | None:
    try:
        parsed = json.loads(value or "")
    except json.JSONDecodeError:
        return None
    return [str(v) for v in parsed] if isinstance(parsed, list) else None


def healthcheck_command(text: str) -> list[str] | None:
    """The HEALTHCHECK's CMD in exec form, or None."""
    value = stages(text)[-1].last("HEALTHCHECK") or ""
    return exec_form(value.split("CMD", 1)[1].strip()) if "CMD" in value else None


def python_version(image: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"python:(\d+)\.(\d+)[\w.-]*(?:@sha256:[0-9a-f]{64})?", image)
    return tuple(int(g) for g in match.groups()) if match else None


def dockerfile_problems(text: str) -> list[str]:
    found = stages(text)
    if len(found) < 2:
        return [f"expected a build stage and a runtime stage, found {len(found)} stage(s)"]
    *builders, final = found
    problems = []
    if not any("pip wheel" in run or "-m build" in run for s in builders for run in s.all("RUN")):
        problems.append("no earlier stage builds a wheel")
    version = python_version(final.image)
    if version is None or version < (3, 11) or "slim" not in final.image:
        problems.append(f"final image {final.image}: expected a slim Python 3.11 or newer")
    for run in final.all("RUN"):
        if BUILD_TOOLS.search(run):
            problems.append(f"final stage installs or runs build tools: {run[:80]}")
    if not re.search(r"@sha256:[0-9a-f]{64}$", final.image):
        problems.append(f"final image {final.image}: expected it pinned by digest (@sha256:...)")
    for copy in final.all("COPY"):
        if "--from=" not in copy and copy.split()[0] != "LICENSE":
            problems.append(f"final stage copies from the build context: COPY {copy}")
    if not any(copy.split()[0] == "LICENSE" for copy in final.all("COPY")):
        problems.append("final stage: expected the LICENSE copied into the image")
    locked = [
        run
        for s in builders
        for run in s.all("RUN")
        if "--require-hashes" in run and "requirements.lock" in run
    ]
    if not locked:
        problems.append(
            "no build stage installs the dependencies with --require-hashes from the lock"
        )
    user = final.last("USER")
    if user is None or user.split(":")[0] in ("root", "0"):
        problems.append(f"final stage must switch to a non-root USER, got {user!r}")
    command = healthcheck_command(text)
    if command is None:
        problems.append("HEALTHCHECK: expected CMD in exec form")
    elif not ("/healthz" in " ".join(command) and "urllib" in " ".join(command)):
        problems.append("HEALTHCHECK: expected a request to /healthz with Python's urllib")
    elif {"curl", "wget"} & set(re.findall(r"\w+", " ".join(command))):
        problems.append("HEALTHCHECK: the slim image has no curl or wget")
    if "9108" not in " ".join(final.all("EXPOSE")).split():
        problems.append("EXPOSE: expected the admin port 9108")
    if final.last("STOPSIGNAL") != "SIGTERM":
        problems.append(f"STOPSIGNAL: expected SIGTERM, got {final.last('STOPSIGNAL')!r}")
    if exec_form(final.last("ENTRYPOINT")) != ["webhook-consumer"]:
        problems.append('ENTRYPOINT: expected ["webhook-consumer"] (exec form: signals reach it)')
    if exec_form(final.last("CMD")) != ["run"]:
        problems.append('CMD: expected ["run"]')
    return problems


def copied_sources(text: str) -> list[str]:
    """What COPY takes from the build context (not from another stage)."""
    sources = []
    for stage in stages(text):
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if "--from=" not in copy:
                sources.extend(words[:-1])
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, dockerignore: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for line in dockerignore.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not negated
    return verdict
