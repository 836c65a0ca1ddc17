"""`tracing.otlp_endpoint`: a usable URL, and a clear refusal (exit 2) when the optional SDK is
not installed; without tracing configured, nothing of OpenTelemetry is needed at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from consumer.config import ConfigError
from consumer.hooks.tracing import traces_url

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory

# Run in a fresh interpreter where every OpenTelemetry import fails, as without the extra.
WITHOUT_SDK = """
import sys
sys.modules["opentelemetry"] = None
import consumer.service  # the service's modules import nothing of it up front
from consumer.cli import main
sys.exit(main(["check-config", "--config", sys.argv[1]]))
"""


def test_an_endpoint_is_taken_and_the_traces_path_added_when_missing(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    config, _ = build_catalog(
        [channel_cfg()], tracing={"otlp_endpoint": "http://otel-collector:4318"}
    )
    assert config.tracing.otlp_endpoint == "http://otel-collector:4318"
    assert traces_url("http://otel-collector:4318") == "http://otel-collector:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/custom/traces") == "https://c/custom/traces"


@pytest.mark.parametrize("url", ["otel-collector:4318", "grpc://c:4317", "http://"])
def test_an_endpoint_that_is_no_http_url_is_refused(
    url: str, channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    with pytest.raises(ConfigError) as raised:
        build_catalog([channel_cfg()], tracing={"otlp_endpoint": url})
    [problem] = raised.value.problems
    assert problem.startswith("tracing.otlp_endpoint: expected an http:// or https:// URL")


def _config_file(tmp_path: Path, tracing: dict[str, str] | None) -> Path:
    document = {
        "allowed_networks": ["127.0.0.0/8"],
        "channels": [{"name": "c", "url": "http://127.0.0.1:9/hooks"}],
        **({"tracing": tracing} if tracing else {}),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _check_without_sdk(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_sdk_a_config_asking_for_spans_is_refused_with_exit_2(
    tmp_path: Path,
) -> None:
    done = _check_without_sdk(_config_file(tmp_path, {"otlp_endpoint": "http://c:4318"}))
    assert done.returncode == 2, done.stderr
    assert "tracing.otlp_endpoint: the OpenTelemetry SDK is not installed" in done.stderr
    assert "webhook-consumer[tracing]" in done.stderr


def test_without_the_sdk_a_config_without_tracing_is_fine(tmp_path: Path) -> None:
    done = _check_without_sdk(_config_file(tmp_path, None))
    assert done.returncode == 0, done.stderr
    assert ": ok (1 channels" in done.stdout


def test_credentials_in_the_endpoint_are_refused_and_never_shown(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    with pytest.raises(ConfigError) as raised:
        build_catalog([channel_cfg()], tracing={"otlp_endpoint": "https://u:hunter2@c:4318"})
    [problem] = raised.value.problems
    assert "expected no credentials in the URL" in problem
    assert "hunter2" not in problem
