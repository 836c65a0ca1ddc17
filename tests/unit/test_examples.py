"""The example config passes `check-config`, given the secrets it names."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "config.yaml"
# The variables a config names: `secret_env: X`, `password_env: X`, ... (commented lines too)
_VARIABLE = re.compile(r"\b\w*_env:\s*([A-Z][A-Z0-9_]*)")


def dummy_secrets(text: str) -> dict[str, str]:
    """A stand-in value per variable; Standard Webhooks secrets must decode to 24..64 bytes."""
    whsec = "whsec_" + base64.b64encode(b"k" * 32).decode()
    return {
        name: whsec if "WHSEC" in name else f"dummy-{name.lower()}"
        for name in _VARIABLE.findall(text)
    }


def check_config(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_PASSWORD"))}
    return subprocess.run(
        [sys.executable, "-m", "consumer", "check-config", "--config", str(EXAMPLE)],
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLE.parents[1],
    )


def test_the_example_passes_check_config() -> None:
    environ = dummy_secrets(EXAMPLE.read_text(encoding="utf-8"))
    assert {"COUPON_WEBHOOK_SECRET", "PUSH_WHSEC"} <= set(environ)
    done = check_config(environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok (2 channels, 1 campaigns)")


def test_without_its_secrets_the_example_is_rejected_naming_each() -> None:
    done = check_config({})
    assert done.returncode == 2
    for name in ("COUPON_WEBHOOK_SECRET", "COUPON_BASIC_PASSWORD", "PUSH_WHSEC"):
        assert f"environment variable {name} is not set" in done.stderr


def test_the_example_uses_the_main_features() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in ("basic_auth:", "rate_limit:", "batch:", "standard_webhooks:", "allowed_networks:"):
        assert re.search(rf"^\s*(- )?{key}", text, re.MULTILINE), key
