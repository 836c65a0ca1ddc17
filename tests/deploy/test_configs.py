"""The example configs the deployments ship: valid for `check-config`, and configured for a
fleet (limits and attributes in Redis, the admin port served)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .support import DEPLOY, KUBERNETES, secret_files, secret_variables, with_stand_ins

CONFIGS = {
    "compose": DEPLOY / "compose" / "config.yaml",
    "kubernetes base": KUBERNETES / "base" / "config.yaml",
    "kubernetes production": KUBERNETES / "overlays" / "production" / "config.yaml",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_config_passes_check_config(name: str, tmp_path: Path) -> None:
    text = CONFIGS[name].read_text(encoding="utf-8")
    environ = {variable: f"value-of-{variable}" for variable in secret_variables(text)}
    path = tmp_path / "config.yaml"  # its secret files replaced by stand-ins that exist here
    path.write_text(with_stand_ins(text, tmp_path), encoding="utf-8")
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
def test_the_deployments_share_limits_and_attributes_and_serve_the_admin_port(name: str) -> None:
    config = yaml.safe_load(CONFIGS[name].read_text(encoding="utf-8"))
    assert config["admin"] == {"enabled": True, "host": "0.0.0.0", "port": 9108}
    assert config["rate_limiter"]["backend"] == "redis"  # limits hold across the replicas
    assert config["attributes"]["backend"] == "redis"  # one store for every replica


def test_production_reads_every_secret_from_a_mounted_file() -> None:
    text = Path(CONFIGS["kubernetes production"]).read_text(encoding="utf-8")
    assert secret_variables(text) == set()  # files, so reload.watch sees a rotated Secret
    assert secret_files(text) == {
        f"/var/run/secrets/webhook-consumer/{name}"
        for name in (
            "channels/coupon-webhook-secret",
            "channels/push-webhook-secret",
            "kafka/password",
            "kafka/ca.crt",
            "redis/password",
            "redis/ca.crt",
        )
    }
    config = yaml.safe_load(text)
    assert config["reload"]["watch"] is True
    assert config["attributes"]["url"].startswith("rediss://")
    assert config["rate_limiter"]["url"].startswith("rediss://")
