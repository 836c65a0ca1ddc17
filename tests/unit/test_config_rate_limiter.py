"""The `rate_limiter` section: check-config accepts only what `run` can use, with the same
URL, password and CA rules as `attributes`, and never connects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from consumer.cli import main
from consumer.config import ConfigError, load_config

SECRET = "hunter2-in-the-url"


def write(tmp_path: Path, section: dict[str, Any] | None) -> Path:
    path = tmp_path / "config.yaml"
    document: dict[str, Any] = {"channels": [{"name": "a", "url": "https://hooks.example.com/g"}]}
    if section is not None:
        document["rate_limiter"] = section
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def problems(
    tmp_path: Path, section: dict[str, Any], environ: dict[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, section), environ=environ or {})
    return caught.value.problems


def test_the_default_is_local(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, None), environ={}).rate_limiter
    assert (config.backend, config.url, config.timeout_seconds) == ("local", None, 0.5)
    assert config.key_prefix == "webhook-consumer:limits:"


@pytest.mark.parametrize(
    "section",
    [
        {"backend": "local"},
        {"backend": "redis", "url": "redis://limits.internal:6379/0"},
        {"backend": "redis", "url": f"rediss://:{SECRET}@limits.internal:6380/1"},
        {"backend": "redis", "url": "unix:///run/redis/redis.sock?db=2"},
        {"backend": "redis", "url": "redis://h", "key_prefix": "x:", "timeout_seconds": 0.2},
        {"backend": "redis", "url": "redis://h", "password_env": "LIMITS_REDIS_PASSWORD"},
    ],
)
def test_usable_sections_load(tmp_path: Path, section: dict[str, Any]) -> None:
    config = load_config(write(tmp_path, section), environ={"LIMITS_REDIS_PASSWORD": "pw"})
    for key, value in section.items():
        assert getattr(config.rate_limiter, key) == value


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"backend": "shared"},
            "rate_limiter.backend: input should be 'local' or 'redis', got 'shared'",
        ),
        (
            {"backend": "redis"},
            "rate_limiter.url: required with backend redis (like redis://host:6379/0)",
        ),
        (
            {"url": "redis://limits:6379/0"},
            "rate_limiter.url: expected only with backend redis, got backend local",
        ),
        (
            {"backend": "local", "password_env": "X"},
            "rate_limiter.password_env: expected only with backend redis, got backend local",
        ),
        (
            {"backend": "redis", "url": "http://limits:6379"},
            "rate_limiter.url: expected a redis://host[:port][/db], rediss://host[:port][/db] "
            "(TLS) or unix:///path/to/redis.sock[?db=N] URL, got 'http://limits:6379'",
        ),
        (
            {"backend": "redis", "url": "rediss://h/0?ssl_cert_reqs=none"},
            "(unsupported: ssl_cert_reqs)",
        ),
        (
            {"backend": "redis", "url": "redis://h", "timeout_seconds": 2},
            "rate_limiter.timeout_seconds: input should be less than or equal to 1, got 2",
        ),
        (
            {"backend": "redis", "url": "redis://h", "password_env": "UNSET_VARIABLE"},
            "rate_limiter.password_env: environment variable UNSET_VARIABLE is not set",
        ),
        (
            {"backend": "redis", "url": "redis://h", "password_env": "P", "password_file": "/f"},
            "rate_limiter: expected at most one of password_env or password_file, got both",
        ),
        (
            {"backend": "redis", "url": f"redis://:{SECRET}@h/0", "password_env": "P"},
            "rate_limiter.url: expected no password in the URL when password_env or "
            "password_file gives it, got 'redis://***@h/0'",
        ),
        (
            {"backend": "redis", "url": "rediss://h", "ca_bundle": "/no/such/ca.pem"},
            "rate_limiter.ca_bundle: expected a readable PEM file of CA certificates, "
            "'/no/such/ca.pem' is not one",
        ),
    ],
)
def test_unusable_sections_are_located_and_explained(
    tmp_path: Path, section: dict[str, Any], expected: str
) -> None:
    found = problems(tmp_path, section, environ={"P": "pw"})
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith("rate_limiter") for problem in found)
    assert not any(SECRET in problem for problem in found)


@pytest.fixture
def no_logging_leftovers() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # check-config configures logging onto the captured stderr


@pytest.mark.usefixtures("no_logging_leftovers")
def test_check_config_never_connects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens on port 1: a check that connected would fail.
    path = write(tmp_path, {"backend": "redis", "url": "redis://127.0.0.1:1/0"})
    assert main(["check-config", "--config", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


@pytest.mark.usefixtures("no_logging_leftovers")
def test_check_config_lists_every_problem_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"backend": "redis", "timeout_seconds": 0})
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: rate_limiter.url: required with backend redis" in err
    assert f"{path}: rate_limiter.timeout_seconds: input should be greater than 0" in err
