"""`check-config` on generated documents: exit 0, or exit 2 with a message; never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.cli import main

from .test_config import CONTRACT_EXAMPLE, ENV

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "http://127.0.0.1/x",
            "https://[::1]:99/",
            "ftp://x",
            "2130706433",
            "10.0.0.0/8",
            "::/0",
            "whsec_AAAA",
            "2030-01-01T00:00:00Z",
            "string",
            "integer",
            "-1",
            "1e999",
            "/etc/passwd",
            "/nonexistent",
            "COUPON_WEBHOOK_SECRET",
            "",
        ]
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ENV}
    os.environ.update(ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def check_config(folder: Path, text: str | bytes) -> tuple[int, str]:
    path = folder / "fuzz.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check-config", "--config", str(path)])
    finally:
        structlog.reset_defaults()  # check-config configured logging onto the captured stream
    return status, out.getvalue() + err.getvalue()


def assert_answered(status: int, output: str) -> None:
    assert "Traceback" not in output
    if status == 0:
        assert ": ok (" in output
    else:
        assert status == 2, output
        assert "configuration rejected" in output
        assert output.count("fuzz.yaml: ") >= 1  # at least one located problem


@FUZZ
@given(document=values)
def test_any_yaml_value(folder: Path, document: Any) -> None:
    assert_answered(*check_config(folder, yaml.safe_dump(document, allow_unicode=True)))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


BASE = yaml.safe_load(CONTRACT_EXAMPLE)
BASE["tls"] = {"require_https": False}
BASE["channels"][0]["standard_webhooks"] = {"secret_env": "COUPON_WEBHOOK_SECRET"}
PATHS = [p for p in _paths(BASE) if p]


@FUZZ
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(PATHS), values, st.booleans()), min_size=1, max_size=4
    )
)
def test_the_contract_example_with_parts_replaced_or_removed(
    folder: Path, changes: list[tuple[tuple[Any, ...], Any, bool]]
) -> None:
    document = yaml.safe_load(yaml.safe_dump(BASE, allow_unicode=True))
    for path, value, remove in changes:
        parent = document
        try:
            for part in path[:-1]:
                parent = parent[part]
            if remove:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this part
    assert_answered(*check_config(folder, yaml.safe_dump(document, allow_unicode=True)))


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(bytes))
def test_arbitrary_text_and_bytes(folder: Path, text: str | bytes) -> None:
    assert_answered(*check_config(folder, text))


@pytest.mark.parametrize(
    "text",
    [
        "channels: " + "[" * 5000 + "]" * 5000,
        "!!python/object/apply:os.system ['echo pwned']",
        "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        "channels: [*d]",
        "channels: [{name: a, url: 'http://x/', template_params: {k: "
        + "[" * 200
        + "]" * 200
        + "}}]",
        "\ufeffchannels: []",
        "",
    ],
    ids=["deep", "python-tag", "aliases", "deep-param", "bom", "empty"],
)
def test_known_nasty_documents(folder: Path, text: str) -> None:
    status, output = check_config(folder, text)
    assert_answered(status, output)
    assert len(output) < 20_000  # an expanded alias is summarised, not printed whole
