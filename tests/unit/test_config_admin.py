"""The `admin` section: the admin port's address, on by default."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.config import ConfigError, parse_config

CHANNELS = [{"name": "a", "url": "https://hooks.example.com/gio"}]


def load(admin: Any) -> Any:
    return parse_config({"admin": admin, "channels": CHANNELS}, "config.yaml", {}).admin


def test_on_by_default_on_every_interface_at_9108() -> None:
    admin = parse_config({"channels": CHANNELS}, "config.yaml", {}).admin
    assert (admin.enabled, admin.host, admin.port) == (True, "0.0.0.0", 9108)


@pytest.mark.parametrize(
    "section",
    [
        {"enabled": False},
        {"host": "127.0.0.1", "port": 0},  # any free port
        {"host": "::", "port": 65535},
    ],
)
def test_usable_sections(section: dict[str, Any]) -> None:
    admin = load(section)
    for key, value in section.items():
        assert getattr(admin, key) == value


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"port": 70000},
            ["config.yaml: admin.port: input should be less than or equal to 65535, got 70000"],
        ),
        (
            {"port": -1, "host": ""},
            [
                "config.yaml: admin.host: expected a non-empty string, got ''",
                "config.yaml: admin.port: input should be greater than or equal to 0, got -1",
            ],
        ),
        ({"path": "/metrics"}, ["config.yaml: admin.path: unknown field"]),
    ],
)
def test_every_problem_named_with_its_field(section: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load(section)
    assert str(caught.value).splitlines() == expected
