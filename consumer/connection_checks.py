"""Checks of the raw config's connections: Kafka security (SASL, TLS client certificates) and
every Redis (attributes, rate_limiter): settings that only make sense together."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from .config_secrets import (
    USERINFO,
    ca_bundle_check,
    file_head,
    non_empty_file,
    pem_problem,
    secret_checks,
    secret_value,
    section,
)


def redis_checks(prefix: str, section: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    """The password and CA rules of every Redis connection (attributes, rate_limiter)."""
    yield from ca_bundle_check(prefix, section)
    yield from secret_checks(prefix, section, "password_env", "password_file", environ)
    url = section.get("url")
    given = any(section.get(key) is not None for key in ("password_env", "password_file"))
    if given and isinstance(url, str) and _has_password(url):
        yield (
            f"{prefix}.url: expected no password in the URL when password_env or "
            f"password_file gives it, got {USERINFO.sub('//***@', url)!r}"
        )


_REDIS_ONLY = ("url", "password_env", "password_file", "ca_bundle")


def rate_limiter_checks(section: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    backend = section.get("backend", "local")
    if backend == "redis":
        if section.get("url") is None:
            yield "rate_limiter.url: required with backend redis (like redis://host:6379/0)"
        yield from redis_checks("rate_limiter", section, environ)
    elif backend == "local":
        # A URL with the default backend would look shared and be per replica: refused.
        for key in _REDIS_ONLY:
            if section.get(key) is not None:
                yield f"rate_limiter.{key}: expected only with backend redis, got backend local"


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:  # reported by the URL check
        return False


_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


_SASL_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")


_TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def kafka_checks(kafka: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    """Security settings that only make sense together (single fields: the model checks)."""
    protocol = kafka.get("security_protocol", "PLAINTEXT")
    mechanism = kafka.get("sasl_mechanism")
    if not isinstance(protocol, str) or (mechanism is not None and not isinstance(mechanism, str)):
        return  # reported by the model validation
    yield from _sasl_checks(kafka, protocol, mechanism, environ)
    tls = section(kafka, "tls")
    if protocol not in _TLS_PROTOCOLS and any(value is not None for value in tls.values()):
        yield (
            "kafka.tls: expected only with security_protocol SSL or SASL_SSL, "
            f"got security_protocol {protocol}"
        )
    yield from ca_bundle_check("kafka.tls", tls)
    yield from _client_cert_checks(tls, environ)


def _sasl_checks(
    kafka: dict[str, Any], protocol: str, mechanism: str | None, environ: Mapping[str, str]
) -> Iterator[str]:
    password_keys = ("sasl_username", "sasl_password_env", "sasl_password_file")
    given = [k for k in (*password_keys, "sasl_oauth_token_file") if kafka.get(k) is not None]
    sasl = protocol in _SASL_PROTOCOLS
    if not sasl:
        for key in (["sasl_mechanism"] if mechanism is not None else []) + given:
            yield (
                f"kafka.{key}: expected only with security_protocol SASL_SSL or SASL_PLAINTEXT, "
                f"got security_protocol {protocol}"
            )
    elif mechanism is None:
        yield (
            f"kafka.sasl_mechanism: required with security_protocol {protocol}; expected "
            f"one of {', '.join(_PASSWORD_MECHANISMS)}, OAUTHBEARER"
        )
    needs_password = sasl and mechanism in _PASSWORD_MECHANISMS
    if needs_password:
        if not kafka.get("sasl_username"):
            yield f"kafka.sasl_username: required with sasl_mechanism {mechanism}"
        if "sasl_oauth_token_file" in given:
            yield "kafka.sasl_oauth_token_file: expected only with sasl_mechanism OAUTHBEARER"
    elif sasl and mechanism == "OAUTHBEARER":
        for key in (k for k in given if k in password_keys):
            yield f"kafka.{key}: expected only with sasl_mechanism PLAIN or SCRAM-SHA-*"
        if "sasl_oauth_token_file" not in given:
            yield "kafka.sasl_oauth_token_file: required with sasl_mechanism OAUTHBEARER"
    env_key, file_key = "sasl_password_env", "sasl_password_file"
    yield from secret_checks("kafka", kafka, env_key, file_key, environ, needs_password)
    source, password = secret_value(kafka, env_key, file_key, environ)
    if password == "":
        yield f"kafka.{source}: expected a non-empty password, the one given is empty"
    token = kafka.get("sasl_oauth_token_file")
    if isinstance(token, str) and not non_empty_file(token):
        yield (
            "kafka.sasl_oauth_token_file: expected a readable, non-empty file holding the "
            f"token, {token!r} is not one"
        )


def _client_cert_checks(tls: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    """The client certificate and key load together, with the password when the key has one."""
    env_key, file_key = "client_key_password_env", "client_key_password_file"
    yield from secret_checks("kafka.tls", tls, env_key, file_key, environ)
    cert, key = tls.get("client_cert"), tls.get("client_key")
    if not isinstance(cert, str):
        for name in ("client_key", env_key, file_key):
            if tls.get(name) is not None:
                yield f"kafka.tls.{name}: expected only together with client_cert"
        return
    if problem := pem_problem(cert, "-----BEGIN CERTIFICATE-----", "certificate"):
        yield f"kafka.tls.client_cert: expected a readable PEM certificate, {cert!r} {problem}"
        return
    key_file = key if isinstance(key, str) else cert
    if problem := pem_problem(key_file, "PRIVATE KEY-----", "private key"):
        yield (
            f"kafka.tls.client_key: expected a readable PEM private key, {key!r} {problem}"
            if isinstance(key, str)
            else f"kafka.tls.client_key: required, client_cert {cert!r} holds no private key"
        )
        return
    source, password = secret_value(tls, env_key, file_key, environ)
    has_password = tls.get(env_key) is not None or tls.get(file_key) is not None
    encrypted = "ENCRYPTED" in file_head(key_file)
    if encrypted and not has_password:
        yield f"kafka.tls.client_key: the key is encrypted; expected {env_key} or {file_key}"
        return
    if has_password and password is None:
        return  # an unreadable password is reported by secret_checks
    try:  # always a password callback: OpenSSL must never prompt on the terminal
        ssl.create_default_context().load_cert_chain(cert, key, password=lambda: password or "")
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            why = "it belongs to another certificate"
        elif encrypted:
            why = f"it cannot be decrypted with the password from {source}"
        else:
            why = "OpenSSL cannot load it"
        yield f"kafka.tls.client_key: expected the private key of client_cert, {why}"
