"""The example configs the deployments ship: valid for today's `check-config`, and the keys
that arrive with the contract's 1.1 additions kept as marked comments until the model has them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .support import (
    DEPLOY,
    KUBERNETES,
    future_key_paths,
    model_knows,
    secret_variables,
    with_future_keys,
)

CONFIGS = {
    "compose": DEPLOY / "compose" / "config.yaml",
    "kubernetes base": KUBERNETES / "base" / "config.yaml",
    "kubernetes production": KUBERNETES / "overlays" / "production" / "config.yaml",
}
# The 1.1 keys of CONTRACT.md these configs use (a misspelt one would never be uncommented).
CONTRACT_1_1_KEYS = {
    ("admin",),
    ("rate_limiter",),
    ("kafka", "security_protocol"),
    ("kafka", "sasl_mechanism"),
    ("kafka", "sasl_username"),
    ("kafka", "sasl_password_env"),
}


def future_key_problems(text: str) -> list[str]:
    problems = []
    for path in sorted(future_key_paths(text)):
        dotted = ".".join(path)
        if path not in CONTRACT_1_1_KEYS:
            problems.append(f"{dotted}: marked #1.1 but not a 1.1 key of the contract")
        elif model_knows(path):
            problems.append(f"{dotted}: check-config knows it now, uncomment its #1.1 line")
    return problems


@pytest.mark.parametrize("name", CONFIGS)
def test_the_config_passes_check_config(name: str) -> None:
    path = CONFIGS[name]
    environ = {variable: f"value-of-{variable}" for variable in secret_variables(path.read_text())}
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "check-config", "--config", str(path)],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok (2 channels, 1 campaigns)")


@pytest.mark.parametrize("name", CONFIGS)
def test_the_1_1_keys_are_commented_until_check_config_knows_them(name: str) -> None:
    text = CONFIGS[name].read_text(encoding="utf-8")
    future = yaml.safe_load(with_future_keys(text))  # the marked lines read as valid YAML
    assert future_key_paths(text)
    assert future_key_problems(text) == []
    assert future["admin"] == {"enabled": True, "host": "0.0.0.0", "port": 9108}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#1.1 rate_limitter: {backend: redis}", "rate_limitter: marked #1.1 but not a 1.1 key"),
        ("#1.1 tls: {require_https: true}", "tls: marked #1.1 but not a 1.1 key"),
    ],
)
def test_the_future_key_check_flags_a_wrong_mark(line: str, expected: str) -> None:
    text = CONFIGS["compose"].read_text(encoding="utf-8") + line + "\n"
    assert [p for p in future_key_problems(text) if expected in p]


def test_the_future_key_check_asks_to_uncomment_a_key_the_model_knows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = CONTRACT_1_1_KEYS | {("logging",)}
    monkeypatch.setattr(sys.modules[__name__], "CONTRACT_1_1_KEYS", known)
    text = "channels: []\n#1.1 logging: {level: info}\n"
    assert future_key_problems(text) == [
        "logging: check-config knows it now, uncomment its #1.1 line"
    ]


def test_secret_variables_include_the_commented_kafka_password() -> None:
    text = Path(CONFIGS["kubernetes production"]).read_text(encoding="utf-8")
    assert secret_variables(text) == {
        "COUPON_WEBHOOK_SECRET",
        "PUSH_WEBHOOK_SECRET",
        "KAFKA_SASL_PASSWORD",
    }
