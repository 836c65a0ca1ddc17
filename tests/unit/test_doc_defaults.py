"""Every default the prose quotes for a config field is the model's default.

The reference (docs/configuration.md) is generated, but README.md and docs/*.md also say things
like "`retry.max_backlog_seconds` (30 s)" or "`cache_ttl_seconds` (default 30)": those are
read here and compared with the models, units converted (`45 s` for a `_ms` field).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from consumer.config import ServiceConfig
from consumer.confighints import _alternatives, _is_model

REPO = Path(__file__).resolve().parents[2]
PROSE = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
GENERATED = {REPO / "docs" / "configuration.md", REPO / "docs" / "metrics.md"}

# `name` then "(default X", ", default X", "(X)" or ", X by default": X a number with a unit,
# or a `code` value.
_VALUE = r"`[^`]+`|[0-9][0-9 ]*(?:\.[0-9]+)?(?:\s*(?:ms|s|min|h)\b)?"
QUOTED = re.compile(
    r"`(?P<name>[a-z_][a-z0-9_.]*)`(?:"
    rf"(?:\s*\(|,\s+)default:?\s+(?P<explicit>{_VALUE})"
    rf"|\s*\((?P<bare>{_VALUE})\)"
    rf"|,\s+(?P<suffixed>{_VALUE})\s+by default"
    r")"
)
SECONDS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, default) of every field with a default, nested models walked."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if not info.is_required():
            yield path, info.get_default(call_default_factory=True)
        for option in _alternatives(info.annotation):
            if _is_model(option):
                yield from fields(option, f"{path}.")
            elif getattr(option, "__origin__", None) is list:
                (item,) = option.__args__
                if _is_model(item):
                    yield from fields(item, f"{path}[].")


DEFAULTS: dict[str, list[Any]] = {}
for _path, _default in fields(ServiceConfig):
    for _i in range(_path.count(".") + 1):  # `retry.max_parks`, `max_parks`: both name it
        DEFAULTS.setdefault(_path.split(".", _i)[-1].replace("[]", ""), []).append(_default)


def quotes() -> Iterator[tuple[str, str, str, str]]:
    for doc in PROSE:
        if doc in GENERATED:
            continue
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for match in QUOTED.finditer(line):
                name = match["name"]
                value = match["explicit"] or match["bare"] or match["suffixed"]
                if name in DEFAULTS:
                    yield f"{doc.name}:{number}", name, value.strip(), line


def matches(name: str, value: str, default: Any) -> bool:
    if value.startswith("`"):
        # A name derived from the group (`<group_id>.channels`) is read with the default group.
        group = ServiceConfig.model_fields["kafka"].get_default(call_default_factory=True)
        return value.strip("`").replace("<group_id>", group.group_id) == str(default)
    if not isinstance(default, int | float) or isinstance(default, bool):
        return False
    number = re.match(r"[0-9][0-9 ]*(?:\.[0-9]+)?", value)
    assert number is not None
    quoted = float(number.group(0).replace(" ", ""))
    unit = value[number.end() :].strip()
    if unit:
        quoted *= SECONDS[unit]
        quoted /= 0.001 if name.endswith("_ms") else 1  # the field's own unit
    return abs(quoted - default) < 1e-9


FOUND = list(quotes())


def test_the_prose_quotes_defaults() -> None:
    # Not vacuous: these are among the quotes read (a change of wording that hides them from
    # the pattern would otherwise pass silently).
    named = {name for _, name, _, _ in FOUND}
    assert {"retry.max_backlog_seconds", "cache_ttl_seconds", "kafka.session_timeout_ms"} <= named


@pytest.mark.parametrize(("where", "name", "value", "line"), FOUND, ids=[f[0] for f in FOUND])
def test_a_quoted_default_is_the_models(where: str, name: str, value: str, line: str) -> None:
    candidates = DEFAULTS[name]
    assert any(matches(name, value, d) for d in candidates), (
        f"{where}: `{name}` quoted as {value}, the model says {candidates}: {line.strip()}"
    )


def test_a_wrong_default_in_prose_is_caught() -> None:
    line = "longer than `retry.max_backlog_seconds` (5 s) to send"
    ((name, value),) = [(m["name"], m["bare"]) for m in QUOTED.finditer(line)]
    assert not any(matches(name, value, d) for d in DEFAULTS[name])
    assert matches("session_timeout_ms", "45 s", 45_000)
