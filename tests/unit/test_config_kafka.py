"""Kafka security settings: protocol, SASL credentials and TLS files are checked together.

Every problem is reported in one run, located by its field path; no message repeats a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.config import ConfigError, KafkaConfig, ServiceConfig, parse_config

from ..pki import Authority, write

PASSWORD = "kafka-Pa55word-xyz"
KEY_PASSWORD = "key-Pa55word-abc"
WRONG_KEY_PASSWORD = "not-the-key-Pa55word"
ENV = {"KAFKA_PASSWORD": PASSWORD, "KEY_PASSWORD": KEY_PASSWORD, "EMPTY": ""}


@dataclass(frozen=True)
class Files:
    ca: str
    cert: str
    key: str
    cert_with_key: str
    encrypted_key: str
    other_key: str
    junk: str
    empty: str
    token: str
    missing: str


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("kafka-tls")
    ca = Authority("test-ca")
    client, other = ca.issue_client("webhook-consumer"), ca.issue_client("someone-else")
    return Files(
        ca=str(write(folder / "ca.pem", ca.cert_pem)),
        cert=str(write(folder / "client.pem", client.cert_pem)),
        key=str(write(folder / "client.key", client.key_pem)),
        cert_with_key=str(write(folder / "both.pem", client.cert_pem, client.key_pem)),
        encrypted_key=str(write(folder / "encrypted.key", client.key_pem_encrypted(KEY_PASSWORD))),
        other_key=str(write(folder / "other.key", other.key_pem)),
        junk=str(write(folder / "junk.pem", b"not PEM at all\n")),
        empty=str(write(folder / "empty", b"")),
        token=str(write(folder / "token", b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.\n")),
        missing=str(folder / "missing.pem"),
    )


def load(kafka: dict[str, Any], environ: dict[str, str] = ENV) -> ServiceConfig:
    data = {"kafka": kafka, "channels": [{"name": "a", "url": "http://hooks.example.com/"}]}
    return parse_config(data, "test.yaml", environ)


def problems(kafka: dict[str, Any], environ: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(kafka, environ)
    text = "\n".join(caught.value.problems)
    for secret in (PASSWORD, KEY_PASSWORD, WRONG_KEY_PASSWORD):
        assert secret not in text
    return caught.value.problems


SCRAM = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "webhook-consumer",
    "sasl_password_env": "KAFKA_PASSWORD",
}


def test_plaintext_is_the_default_and_sasl_ssl_with_scram_loads(files: Files) -> None:
    assert load({}).kafka.security_protocol == "PLAINTEXT"
    kafka = load({**SCRAM, "tls": {"ca_bundle": files.ca}}).kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert kafka.tls.ca_bundle == Path(files.ca)


def test_mutual_tls_loads_with_a_key_file_a_combined_file_or_an_encrypted_key(
    files: Files,
) -> None:
    ssl = {"security_protocol": "SSL"}
    assert load(
        {**ssl, "tls": {"ca_bundle": files.ca, "client_cert": files.cert, "client_key": files.key}}
    )
    assert load({**ssl, "tls": {"client_cert": files.cert_with_key}})
    encrypted = {
        "client_cert": files.cert,
        "client_key": files.encrypted_key,
        "client_key_password_env": "KEY_PASSWORD",
    }
    assert load({**ssl, "tls": encrypted}).kafka.tls.client_key_password_env == "KEY_PASSWORD"


def test_oauthbearer_needs_only_a_token_file(files: Files) -> None:
    kafka = load(
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_file": files.token,
        }
    ).kafka
    assert kafka.sasl_oauth_token_file == Path(files.token)


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        (
            {"security_protocol": "TLS"},
            ["kafka.security_protocol: input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or"],
        ),
        (
            {"sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"},
            [
                "kafka.sasl_mechanism: expected only with security_protocol SASL_SSL or "
                "SASL_PLAINTEXT, got security_protocol PLAINTEXT",
                "kafka.sasl_username: expected only with security_protocol SASL_SSL or "
                "SASL_PLAINTEXT, got security_protocol PLAINTEXT",
            ],
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT"},
            [
                "kafka.sasl_mechanism: required with security_protocol SASL_PLAINTEXT; expected "
                "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"
            ],
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
            ["kafka.sasl_mechanism: input should be 'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512' or"],
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            [
                "kafka.sasl_username: required with sasl_mechanism PLAIN",
                "kafka: expected one of sasl_password_env or sasl_password_file",
            ],
        ),
        (
            {**SCRAM, "sasl_password_file": "/nonexistent/password"},
            [
                "kafka: expected at most one of sasl_password_env or sasl_password_file, got both",
                "kafka.sasl_password_file: expected a readable file holding the secret, "
                "'/nonexistent/password' is not one",
            ],
        ),
        (
            {**SCRAM, "sasl_password_env": "UNSET_VARIABLE"},
            [
                "kafka.sasl_password_env: environment variable UNSET_VARIABLE is not set; "
                "expected it to hold the secret"
            ],
        ),
        (
            {**SCRAM, "sasl_password_env": "EMPTY"},
            ["kafka.sasl_password_env: expected a non-empty password, the one given is empty"],
        ),
        (
            {**SCRAM, "sasl_mechanism": "OAUTHBEARER"},
            [
                "kafka.sasl_username: expected only with sasl_mechanism PLAIN or SCRAM-SHA-*",
                "kafka.sasl_password_env: expected only with sasl_mechanism PLAIN or SCRAM-SHA-*",
                "kafka.sasl_oauth_token_file: required with sasl_mechanism OAUTHBEARER",
            ],
        ),
    ],
)
def test_sasl_problems(kafka: dict[str, Any], expected: list[str]) -> None:
    found = problems(kafka)
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_token_files_must_hold_a_token(files: Files) -> None:
    oauth = {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}
    for token in (files.empty, files.missing):
        assert problems({**oauth, "sasl_oauth_token_file": token}) == [
            "kafka.sasl_oauth_token_file: expected a readable, non-empty file holding the token, "
            f"{token!r} is not one"
        ]
    assert problems({**SCRAM, "sasl_oauth_token_file": files.token}) == [
        "kafka.sasl_oauth_token_file: expected only with sasl_mechanism OAUTHBEARER"
    ]


def test_tls_files_without_a_tls_protocol_are_rejected(files: Files) -> None:
    assert problems(
        {"security_protocol": "SASL_PLAINTEXT", **_sasl(), "tls": {"ca_bundle": files.ca}}
    ) == [
        "kafka.tls: expected only with security_protocol SSL or SASL_SSL, "
        "got security_protocol SASL_PLAINTEXT"
    ]


def _sasl() -> dict[str, Any]:
    return {k: v for k, v in SCRAM.items() if k != "security_protocol"}


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (
            {"ca_bundle": "junk"},
            "kafka.tls.ca_bundle: expected a readable PEM file of CA certificates, ",
        ),
        (
            {"client_cert": "missing"},
            "kafka.tls.client_cert: expected a readable PEM certificate, ",
        ),
        ({"client_cert": "junk"}, "kafka.tls.client_cert: expected a readable PEM certificate, "),
        ({"client_key": "key"}, "kafka.tls.client_key: expected only together with client_cert"),
        ({"client_cert": "cert"}, "kafka.tls.client_key: required, client_cert "),
        (
            {"client_cert": "cert", "client_key": "junk"},
            "kafka.tls.client_key: expected a readable PEM private key, ",
        ),
        (
            {"client_cert": "cert", "client_key": "other_key"},
            "kafka.tls.client_key: expected the private key of client_cert, it belongs to "
            "another certificate",
        ),
        (
            {"client_cert": "cert", "client_key": "encrypted_key"},
            "kafka.tls.client_key: the key is encrypted; expected client_key_password_env or "
            "client_key_password_file",
        ),
        (
            {
                "client_cert": "cert",
                "client_key": "encrypted_key",
                "client_key_password_env": "WRONG",
            },
            "kafka.tls.client_key: expected the private key of client_cert, it cannot be decrypted "
            "with the password from client_key_password_env",
        ),
        (
            {"client_cert": "cert", "client_key": "key", "client_key_password_env": "UNSET"},
            "kafka.tls.client_key_password_env: environment variable UNSET is not set",
        ),
    ],
)
def test_tls_file_problems(files: Files, tls: dict[str, str], expected: str) -> None:
    named = {k: v if k.endswith("_env") else getattr(files, v) for k, v in tls.items()}
    environ = {**ENV, "WRONG": WRONG_KEY_PASSWORD}
    [found] = problems({"security_protocol": "SSL", "tls": named}, environ)
    assert found.startswith(expected), found


def test_every_problem_is_reported_in_one_run(files: Files) -> None:
    found = problems(
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_password_env": "UNSET_VARIABLE",
            "tls": {"ca_bundle": files.junk, "client_key": files.key},
            "bogus": 1,
        }
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "kafka.bogus",
        "kafka.sasl_password_env",
        "kafka.sasl_username",
        "kafka.tls.ca_bundle",
        "kafka.tls.client_key",
    ]


@pytest.mark.parametrize(
    ("replication", "configured", "effective"),
    [(1, None, 1), (2, None, 1), (3, None, 2), (5, None, 2), (3, 3, 3), (2, 2, 2)],
)
def test_min_insync_replicas_defaults_to_two_from_three_replicas(
    replication: int, configured: int | None, effective: int
) -> None:
    kafka = KafkaConfig(replication_factor=replication, min_insync_replicas=configured)
    assert kafka.effective_min_insync_replicas == effective


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"expected min_insync_replicas at most "):
        KafkaConfig(replication_factor=2, min_insync_replicas=3)


def test_startup_timeout_defaults_to_five_minutes_and_refuses_negatives() -> None:
    assert KafkaConfig().startup_timeout_seconds == 300
    with pytest.raises(ValidationError):
        KafkaConfig(startup_timeout_seconds=-1)
