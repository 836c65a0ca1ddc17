"""Security-related config: https requirements, CA bundles, URL hygiene, Standard Webhooks keys.

Every rejection names the field; none repeats a secret.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.catalog import Catalog
from consumer.config import ConfigError, parse_config

WHSEC = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_WHSEC = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
ENV = {"HOOK_SECRET": "gio-secret-1", "SW": WHSEC, "SW_OLD": OLD_WHSEC}


def config(*channels: dict[str, Any], environ: dict[str, str] = ENV, **top: Any) -> Any:
    data = {"channels": list(channels), **top}
    return parse_config(data, "test.yaml", environ)


def problems(*channels: dict[str, Any], environ: dict[str, str] = ENV, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(*channels, environ=environ, **top)
    return caught.value.problems


def ch(url: str = "http://hooks.example.com/gio", **fields: Any) -> dict[str, Any]:
    return {"name": "crm", "url": url, "secret_env": "HOOK_SECRET", **fields}


def test_plain_http_is_allowed_by_default() -> None:
    assert config(ch()).channels[0].url.startswith("http://")


def test_require_https_globally_rejects_http_channels_with_their_path() -> None:
    found = problems(ch(), {**ch("http://b.example.com/", name="b")}, tls={"require_https": True})
    assert [p.split(":")[0] for p in found] == ["channels[0].url", "channels[1].url"]
    assert "expected an https:// URL" in found[0]
    assert config(ch("https://hooks.example.com/"), tls={"require_https": True})


def test_a_channel_can_require_https_or_opt_out_of_the_global_rule() -> None:
    assert problems(ch(tls={"require_https": True}))[0].startswith("channels[0].url: expected")
    assert config(ch(tls={"require_https": False}), tls={"require_https": True})


def test_ca_bundle_must_be_a_pem_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    found = problems(
        ch(tls={"ca_bundle": str(tmp_path / "missing.pem")}), tls={"ca_bundle": str(junk)}
    )
    assert [p.split(":")[0] for p in found] == ["tls.ca_bundle", "channels[0].tls.ca_bundle"]
    assert "expected a readable PEM file of CA certificates" in found[0]


def test_credentials_in_the_url_are_rejected_without_being_repeated() -> None:
    [problem] = problems(ch("https://gio:hunter22@hooks.example.com/"))
    assert problem.startswith("channels[0].url: expected no credentials in the URL")
    assert "hunter22" not in problem


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "127.1", "10.1"])
def test_ambiguous_numeric_hosts_are_rejected(host: str) -> None:
    [problem] = problems(ch(f"http://{host}/hooks"))
    assert "expected a host name or a dotted-quad IPv4 address" in problem


def test_standard_webhooks_loads_with_a_rotation() -> None:
    until = "2030-01-01T00:00:00Z"
    standard = {
        "secret_env": "SW",
        "previous_secret_env": "SW_OLD",
        "previous_valid_until": until,
    }
    cfg = config(ch(standard_webhooks=standard))
    keys = Catalog.from_config(cfg, ENV).channels["crm"].standard_webhooks
    assert keys is not None
    assert keys.current.reveal() == WHSEC
    assert keys.previous is not None
    assert keys.previous.reveal() == OLD_WHSEC
    assert keys.previous_valid_until == datetime(2030, 1, 1, tzinfo=UTC)


def test_standard_webhooks_secret_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "whsec"
    file.write_text(WHSEC + "\n")
    cfg = config(ch(standard_webhooks={"secret_file": str(file)}))
    keys = Catalog.from_config(cfg, ENV).channels["crm"].standard_webhooks
    assert keys is not None
    assert keys.current.reveal() == WHSEC


@pytest.mark.parametrize(
    ("standard", "environ", "where", "expected"),
    [
        ({}, {}, "", "expected one of secret_env or secret_file"),
        ({"secret_env": "NOPE"}, {}, ".secret_env", "environment variable NOPE is not set"),
        ({"secret_env": "SW"}, {"SW": "whsec_!!!not-base64"}, ".secret_env", "base64"),
        ({"secret_env": "SW"}, {"SW": "whsec_" + "QUFB" * 4}, ".secret_env", "24 to 64 bytes"),
        (
            {"secret_env": "SW", "previous_secret_env": "SW_OLD"},
            {},
            "",
            "expected previous_valid_until together with",
        ),
        (
            {"secret_env": "SW", "previous_valid_until": "2030-01-01T00:00:00Z"},
            {},
            "",
            "expected previous_valid_until together with",
        ),
        (
            {
                "secret_env": "SW",
                "previous_secret_env": "SW_OLD",
                "previous_valid_until": "2030-01-01T00:00:00",
            },
            {},
            ".previous_valid_until",
            "timezone",
        ),
    ],
)
def test_standard_webhooks_problems(
    standard: dict[str, Any], environ: dict[str, str], where: str, expected: str
) -> None:
    env = {**ENV, **environ}
    found = problems(ch(standard_webhooks=standard), environ=env)
    assert any(
        p.startswith(f"channels[0].standard_webhooks{where}:") and expected in p for p in found
    ), found
    for value in environ.values():
        assert all(value.removeprefix("whsec_") not in p for p in found)
