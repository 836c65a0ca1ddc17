"""check-config knows what the send path will refuse: IP-literal destinations the guard blocks,
empty secrets nobody meant, and typos of known field names."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import ConfigError, parse_config

REFUSED = (
    "which the destination guard refuses (every delivery would become a blocked_destination "
    "dead letter); expected it allowed: add"
)


def problems(data: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "f.yaml", environ or {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/hook", f'127.0.0.1 is loopback, {REFUSED} "127.0.0.1/32"'),
        ("http://[::1]/hook", f'::1 is loopback, {REFUSED} "::1/128"'),
        ("http://10.1.2.3/hook", f'10.1.2.3 is private, {REFUSED} "10.1.2.3/32"'),
        (
            "http://169.254.169.254/latest/meta-data",
            f'169.254.169.254 is link-local, {REFUSED} "169.254.169.254/32"',
        ),
        (
            "http://[::ffff:10.0.0.1]/hook",
            f'::ffff:a00:1 is private, as 10.0.0.1, {REFUSED} "10.0.0.1/32"',
        ),
    ],
)
def test_a_literal_address_the_guard_refuses_is_a_config_error(url: str, expected: str) -> None:
    assert problems({"channels": [{"name": "a", "url": url}]}) == [
        f"channels[0].url: {expected} to allowed_networks"
    ]


def test_what_the_refusal_suggests_does_allow_it() -> None:
    urls = [
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://[::ffff:10.0.0.1]/",
    ]
    allowed = ["127.0.0.1/32", "::1/128", "10.1.2.3/32", "10.0.0.1/32"]
    channels = [{"name": f"c{i}", "url": url} for i, url in enumerate(urls)]
    parse_config({"allowed_networks": allowed, "channels": channels}, "f.yaml", {})


def test_public_addresses_and_host_names_need_no_dns_and_pass() -> None:
    channels = [
        {"name": "a", "url": "https://93.184.216.34/hook"},
        {"name": "b", "url": "http://localhost:8080/"},  # a name: judged after DNS, at send time
    ]
    parse_config({"channels": channels}, "f.yaml", {})


def test_an_empty_secret_variable_is_refused_unless_meant(tmp_path: Path) -> None:
    empty_file = tmp_path / "secret"
    empty_file.write_text("\n", encoding="utf-8")  # a trailing newline is dropped: nothing left
    channels = [
        {"name": "a", "url": "https://a.example/", "secret_env": "EMPTY"},
        {"name": "b", "url": "https://b.example/", "secret_file": str(empty_file)},
        {"name": "c", "url": "https://c.example/", "secret_env": "EMPTY", "secret": ""},
        {"name": "d", "url": "https://d.example/"},  # none configured: the contract's ""
        {"name": "e", "url": "https://e.example/", "secret": ""},
    ]
    expected = (
        '; expected the X-gio-signature key (or say secret: "" to sign with an empty key on '
        "purpose)"
    )
    assert problems({"channels": channels}, {"EMPTY": ""}) == [
        f"channels[0].secret_env: environment variable EMPTY is empty{expected}",
        f"channels[1].secret_file: file {str(empty_file)!r} is empty{expected}",
    ]


def test_a_secret_written_into_the_yaml_is_refused_and_not_echoed() -> None:
    found = problems({"channels": [{"name": "a", "url": "https://a.example/", "secret": "s3cr3t"}]})
    assert found == [
        'channels[0].secret: expected "" (an empty key on purpose); a secret goes in secret_env '
        "or secret_file, got a non-empty value (not shown)"
    ]


def test_unknown_fields_suggest_the_closest_known_name() -> None:
    data = {
        "kafka": {"bootstrap_server": "127.0.0.1:9092"},
        "retry": {"circuit_breaker": {"failure": 3}},
        "allowed_network": [],
        "channels": [
            {
                "name": "a",
                "url": "https://a.example/",
                "secret_evn": "X",
                "rate_limit": {"per_second": 5, "brust": 5},
            }
        ],
        "campaigns": [{"id": "c", "channels": ["a"], "template_param": {}}],
        "zzz": 1,  # nothing close: no suggestion
    }
    assert sorted(problems(data)) == [
        "allowed_network: unknown field; did you mean allowed_networks?",
        "campaigns[0].template_param: unknown field; did you mean template_params?",
        "channels[0].rate_limit.brust: unknown field; did you mean burst?",
        "channels[0].secret_evn: unknown field; did you mean secret_env?",
        "kafka.bootstrap_server: unknown field; did you mean bootstrap_servers?",
        "retry.circuit_breaker.failure: unknown field; did you mean failures?",
        "zzz: unknown field",
    ]
