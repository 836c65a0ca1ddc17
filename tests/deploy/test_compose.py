"""The compose stack: valid against the compose-spec schema (vendored by check-jsonschema, so
offline), and consistent with the config its consumers mount."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .compose import compose_problems, seconds
from .support import DEPLOY, load_yaml

FOLDER = DEPLOY / "compose"
COMPOSE = FOLDER / "compose.yaml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_stack_matches_the_compose_spec() -> None:
    done = validate(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("condition: service_healthy}", "condition: service_ready}", "service_ready"),
        ("\nservices:\n", "\nservces:\n", "'servces' does not match"),
    ],
)
def test_the_schema_check_fails_on_a_broken_copy(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text
    broken.write_text(text.replace(old, new), encoding="utf-8")
    done = validate(broken)
    assert done.returncode != 0
    assert expected in done.stdout


def stack() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def test_the_stack_has_kafka_redis_two_members_and_the_receiver() -> None:
    assert compose_problems(stack(), FOLDER) == []


def test_durations_read_like_compose_reads_them() -> None:
    assert [seconds(d) for d in ("45s", "1m30s", "1h", "500ms")] == [45, 90, 3600, 0.5]


def _service(name: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda s: s["services"][name].update(fields)


BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "another Kafka": (_service("kafka", image="apache/kafka:3.7.0"), "expected image"),
    "one member": (lambda s: s["services"].pop("consumer-2"), "expected two consumer services"),
    "one instance id for both": (
        lambda s: s["services"]["consumer-2"]["environment"].update(
            {"WEBHOOK_CONSUMER_INSTANCE_ID": "consumer-1"}
        ),
        "its own WEBHOOK_CONSUMER_INSTANCE_ID",
    ),
    "a stop grace shorter than the drain": (
        _service("consumer-1", stop_grace_period="10s"),
        "stop_grace_period 10s <= shutdown_grace_seconds 30",
    ),
    "receiver and consumers with different keys": (
        lambda s: s["services"]["receiver"]["environment"].update(
            {"RECEIVER_SECRET_COUPON_SYSTEM": "other"}
        ),
        "RECEIVER_SECRET_COUPON_SYSTEM ('other')",
    ),
    "a receiver on another port": (
        _service("receiver", command=["receiver", "--host", "0.0.0.0", "--port", "9000"]),
        "expected receiver:9000",
    ),
    "a network the config does not allow": (
        lambda s: s["networks"]["default"]["ipam"]["config"][0].update({"subnet": "10.1.0.0/24"}),
        "the compose network 10.1.0.0/24 is not allowed",
    ),
    "not waiting for Kafka": (
        lambda s: s["services"]["consumer-1"]["depends_on"].pop("kafka"),
        "wait for a healthy kafka",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_stack_check_fails_on_a_broken_copy(breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    broken = copy.deepcopy(stack())
    mutate(broken)
    problems = compose_problems(broken, FOLDER)
    assert [p for p in problems if expected in p], problems


def test_the_anchored_consumer_settings_reach_both_members() -> None:
    # YAML merge keys (<<) carry the shared part; a loader without them would lose it.
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name in ("consumer-1", "consumer-2"):
        assert raw["services"][name]["read_only"] is True
        assert raw["services"][name]["environment"]["COUPON_WEBHOOK_SECRET"].startswith("${")
