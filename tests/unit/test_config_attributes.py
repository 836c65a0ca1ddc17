"""The `attributes` section: check-config accepts only a backend and URL that `run` can use."""

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


def write(tmp_path: Path, attributes: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    document = {
        "attributes": attributes,
        "channels": [{"name": "a", "url": "https://hooks.example.com/gio"}],
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def problems(tmp_path: Path, attributes: dict[str, Any]) -> list[str]:
    path = write(tmp_path, attributes)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return [f"{path}: {problem}" for problem in caught.value.problems]


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"backend": "sqlite", "url": "sqlite:///./attributes.db"},
        {"backend": "sqlite", "url": "sqlite:///:memory:"},
        {"backend": "sqlite", "url": "sqlite:///{tmp}/new/folders/attributes.db"},
        {"backend": "redis", "url": "redis://cache.internal"},
        {"backend": "redis", "url": "redis://cache.internal:6380/2"},
        {"backend": "redis", "url": f"rediss://user:{SECRET}@cache.internal:6380/0"},
        {"backend": "redis", "url": "redis://[::1]:6379/"},
        {"backend": "redis", "url": "unix:///run/redis/redis.sock"},
        {"backend": "redis", "url": "unix:///run/redis/redis.sock?db=3"},
        {"backend": "redis", "url": "redis://127.0.0.1:1/0", "cache_ttl_seconds": 0},
        {"backend": "redis", "url": "redis://h", "key_prefix": "x:", "timeout_seconds": 0.5},
    ],
)
def test_usable_backends_and_urls_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attributes: dict[str, Any]
) -> None:
    monkeypatch.chdir(tmp_path)
    if "url" in attributes:
        attributes["url"] = attributes["url"].replace("{tmp}", str(tmp_path))
    config = load_config(write(tmp_path, attributes), environ={})
    for key, value in attributes.items():
        assert getattr(config.attributes, key) == value


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, {}), environ={}).attributes
    assert (config.backend, config.url) == ("sqlite", "sqlite:///./attributes.db")
    assert config.key_prefix == "webhook-consumer:attrs:"
    assert (config.timeout_seconds, config.cache_ttl_seconds) == (3.0, 30.0)
    assert config.cache_max_users == 100_000


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"backend": "mongo"},
            "attributes.backend: input should be 'sqlite' or 'redis', got 'mongo'",
        ),
        (
            {"backend": "sqlite", "url": "postgres:///x.db"},
            "attributes.url: expected a sqlite URL like 'sqlite:///./attributes.db' (relative), "
            "'sqlite:////abs/path.db' (absolute) or 'sqlite:///:memory:', got 'postgres:///x.db'",
        ),
        ({"backend": "sqlite", "url": "sqlite://x.db"}, "got 'sqlite://x.db'"),
        ({"backend": "sqlite", "url": "sqlite:///x.db?mode=ro"}, "got 'sqlite:///x.db?mode=ro'"),
        (
            {"backend": "sqlite", "url": "sqlite:///{tmp}/a-file/attributes.db"},
            "attributes.url: expected a database path whose folder exists or can be created, "
            "got 'sqlite:///{tmp}/a-file/attributes.db' ({tmp}/a-file is not a folder)",
        ),
        (
            {"backend": "redis"},
            "attributes.url: expected a redis://host[:port][/db], rediss://host[:port][/db] "
            "(TLS) or unix:///path/to/redis.sock[?db=N] URL, got 'sqlite:///./attributes.db'",
        ),
        ({"backend": "redis", "url": "http://cache:6379"}, "URL, got 'http://cache:6379'"),
        ({"backend": "redis", "url": "redis:///0"}, "got 'redis:///0' (no host)"),
        ({"backend": "redis", "url": "redis://"}, "got 'redis://' (no host)"),
        ({"backend": "redis", "url": "unix://"}, "got 'unix://' (no socket path)"),
        (
            {"backend": "redis", "url": "redis://cache:99999/0"},
            "got 'redis://cache:99999/0' (Port out of range 0-65535)",
        ),
        ({"backend": "redis", "url": "redis://cache:port/0"}, "got 'redis://cache:port/0' ("),
        (
            {"backend": "redis", "url": "redis://cache/db1"},
            "got 'redis://cache/db1' (the path must be a database number, like /0)",
        ),
        (
            {"backend": "redis", "url": "rediss://cache/0?ssl_cert_reqs=none"},
            "with no query parameter but db, got 'rediss://cache/0?ssl_cert_reqs=none' "
            "(unsupported: ssl_cert_reqs)",
        ),
        (
            {"backend": "redis", "url": "unix:///run/redis.sock?db=one"},
            "(db is not a number)",
        ),
        (
            {"backend": "redis", "url": "redis://h", "cache_ttl_seconds": -1},
            "attributes.cache_ttl_seconds: input should be greater than or equal to 0, got -1",
        ),
        (
            {"backend": "redis", "url": "redis://h", "cache_max_users": 0},
            "attributes.cache_max_users: input should be greater than 0, got 0",
        ),
        (
            {"backend": "redis", "url": "redis://h", "timeout_seconds": 0},
            "attributes.timeout_seconds: input should be greater than 0, got 0",
        ),
        (
            {"backend": "redis", "url": "rediss://h", "ca_bundle": "{tmp}/a-file"},
            "attributes.ca_bundle: expected a readable PEM file of CA certificates, "
            "'{tmp}/a-file' is not one",
        ),
    ],
)
def test_unusable_backends_and_urls_are_located_and_explained(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    attributes: dict[str, Any],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    for key in ("url", "ca_bundle"):
        if key in attributes:
            attributes[key] = attributes[key].replace("{tmp}", str(tmp_path))
    (line,) = problems(tmp_path, attributes)
    assert line.startswith(f"{tmp_path / 'config.yaml'}: attributes.")
    assert expected.replace("{tmp}", str(tmp_path)) in line


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@cache:99999/0",
        f"redis://user:{SECRET}@cache/not-a-db",
        f"http://user:{SECRET}@cache:6379/0",
        f"rediss://:{SECRET}@cache/0?ssl_cert_reqs=none",
    ],
)
def test_a_password_in_a_rejected_url_is_never_echoed(tmp_path: Path, url: str) -> None:
    (line,) = problems(tmp_path, {"backend": "redis", "url": url})
    assert SECRET not in line
    assert "//***@cache" in line


@pytest.fixture
def no_logging_leftovers() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # check-config configures logging onto the captured stderr


@pytest.mark.usefixtures("no_logging_leftovers")
def test_check_config_never_connects_to_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1: a check that connected would fail.
    path = write(tmp_path, {"backend": "redis", "url": f"redis://:{SECRET}@127.0.0.1:1/0"})
    assert main(["check-config", "--config", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


@pytest.mark.usefixtures("no_logging_leftovers")
def test_check_config_rejects_an_unusable_url_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"backend": "redis", "url": f"redis://:{SECRET}@:6379/0"})
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: attributes.url: expected a redis://" in err
    assert "got 'redis://***@:6379/0' (no host)" in err
    assert SECRET not in err


def test_the_redis_password_from_the_environment_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-a-file\n", encoding="utf-8")
    attributes = {"backend": "redis", "url": "redis://app@cache/0", "password_env": "REDIS_PW"}
    path = write(tmp_path, attributes)
    assert load_config(path, environ={"REDIS_PW": "x"}).attributes.password_env == "REDIS_PW"
    secret_file = str(tmp_path / "password")
    path = write(tmp_path, {**attributes, "password_env": None, "password_file": secret_file})
    assert load_config(path, environ={}).attributes.password_file == Path(secret_file)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            {"password_env": "REDIS_PW"},
            "attributes.password_env: environment variable REDIS_PW is not set; "
            "expected it to hold the secret",
        ),
        (
            {"password_file": "/nonexistent/password"},
            "attributes.password_file: expected a readable file holding the secret, "
            "'/nonexistent/password' is not one",
        ),
        (
            {"url": f"redis://:{SECRET}@cache/0", "password_env": "HOME"},
            "attributes.url: expected no password in the URL when password_env or "
            "password_file gives it, got 'redis://***@cache/0'",
        ),
    ],
)
def test_an_unusable_redis_password_is_reported(
    tmp_path: Path, attributes: dict[str, Any], expected: str
) -> None:
    lines = problems(tmp_path, {"backend": "redis", "url": "redis://cache/0", **attributes})
    assert any(line.endswith(f": {expected}") for line in lines), lines
    assert all(SECRET not in line for line in lines)


def test_an_attributes_topic_and_its_value_bound(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, {"topic": "user-attributes", "max_value_bytes": 4096}), environ={}
    )
    assert (config.attributes.topic, config.attributes.max_value_bytes) == (
        "user-attributes",
        4096,
    )
    assert load_config(write(tmp_path, {}), environ={}).attributes.topic is None
    found = problems(tmp_path, {"topic": "user attributes!", "max_value_bytes": 0})
    assert [p.split(": ", 1)[1] for p in found] == [
        "attributes.topic: expected a Kafka topic name: letters, digits, '.', '_' and '-' only, "
        "got 'user attributes!'",
        "attributes.max_value_bytes: input should be greater than 0, got 0",
    ]


def test_freshness_limits_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    document = {
        "channels": [
            {"name": "a", "url": "https://hooks.example.com/gio", "expire_after_seconds": 0}
        ],
        "campaigns": [{"id": "c", "channels": ["a"], "expire_after_seconds": -5}],
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems == [
        "channels[0].expire_after_seconds: input should be greater than 0, got 0",
        "campaigns[0].expire_after_seconds: input should be greater than 0, got -5",
    ]
    document["channels"][0]["expire_after_seconds"] = 600  # type: ignore[index]
    document["campaigns"][0]["expire_after_seconds"] = 1.5  # type: ignore[index]
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    config = load_config(path, environ={})
    assert config.campaigns[0].expire_after_seconds == 1.5
    assert config.channels[0].expire_after_seconds == 600
