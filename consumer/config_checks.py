"""Checks across fields of the raw config mapping: cross-references, secrets, TLS files.

They run on the raw mapping rather than the validated model, so they are reported even when
some unrelated field failed validation: one run lists every problem.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from ipaddress import IPv6Address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .guard import DestinationPolicy, embedded_ipv4, literal_address

USERINFO = re.compile(r"//[^/?#]*@")  # credentials written into a URL


def shown(value: object, limit: int = 200) -> str:
    """A value for an error line: an alias-expanded list can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_PARAM_CHECKS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "string": ("a string", str),
    "integer": ("an integer", int),
    "number": ("a number", (int, float)),
    "boolean": ("true or false", bool),
}


def param_type_matches(expected: str, value: object) -> bool:
    _, types = _PARAM_CHECKS[expected]
    if isinstance(value, bool) and expected != "boolean":
        return False
    return isinstance(value, types)


def cross_check(
    data: dict[str, Any], environ: Mapping[str, str], webhook_secrets: bool = True
) -> Iterator[str]:
    """`webhook_secrets=False` skips whether the channels' secrets can be read: commands that
    never sign a request (`dlq`) run where those secrets are not given."""
    yield from _kafka_checks(_section(data, "kafka"), environ)
    yield from _ca_bundle_check("tls", _section(data, "tls"))
    yield from _redis_checks("attributes", _section(data, "attributes"), environ)
    yield from _rate_limiter_checks(_section(data, "rate_limiter"), environ)
    channels = {
        ch["name"]: (i, ch)
        for i, ch in _items(data.get("channels"))
        if isinstance(ch.get("name"), str)
    }
    yield from _duplicates(data.get("channels"), "channels", "name", "channel name")
    yield from _duplicates(data.get("campaigns"), "campaigns", "id", "campaign id")
    allowed = _networks(data.get("allowed_networks"))
    for i, ch in _items(data.get("channels")):
        yield from _tls_checks(i, ch, _section(data, "tls"))
        yield from _destination_checks(i, ch, allowed)
        yield from _ordering_check(i, ch)
        if not webhook_secrets:
            continue
        yield from _secret_checks(f"channels[{i}]", ch, "secret_env", "secret_file", environ)
        yield from _empty_secret_check(i, ch, environ)
        auth = ch.get("basic_auth")
        if isinstance(auth, dict):
            prefix = f"channels[{i}].basic_auth"
            yield from _secret_checks(
                prefix, auth, "password_env", "password_file", environ, required=True
            )
        standard = ch.get("standard_webhooks")
        if isinstance(standard, dict):
            yield from _standard_webhooks_checks(
                f"channels[{i}].standard_webhooks", standard, environ
            )
    for i, campaign in _items(data.get("campaigns")):
        params = campaign.get("template_params") or {}
        names = campaign.get("channels")
        for j, ch_name in enumerate(names if isinstance(names, list) else []):
            if not isinstance(ch_name, str):
                continue  # reported by the model validation of the campaign
            if ch_name not in channels:
                known = ", ".join(sorted(channels)) or "(none defined)"
                yield (
                    f"campaigns[{i}].channels[{j}]: unknown channel {ch_name!r}; "
                    f"expected one of: {known}"
                )
                continue
            declared = channels[ch_name][1].get("template_params")
            if isinstance(declared, dict) and isinstance(params, dict):
                yield from _param_checks(i, ch_name, declared, params)
        yield from _undeclared_params(i, names, params, channels)


def _param_checks(
    i: int, channel: str, declared: dict[str, Any], params: dict[str, Any]
) -> Iterator[str]:
    for key, expected in declared.items():
        if not isinstance(expected, str) or expected not in _PARAM_CHECKS:
            continue  # reported by the model validation of the channel
        wanted = _PARAM_CHECKS[expected][0]
        if key not in params:
            yield (
                f"campaigns[{i}].template_params.{key}: missing; "
                f"channel {channel!r} expects {wanted}"
            )
        elif not param_type_matches(expected, params[key]):
            yield (
                f"campaigns[{i}].template_params.{key}: expected {wanted} "
                f"(declared by channel {channel!r}), got {shown(params[key])}"
            )


def _undeclared_params(
    i: int, names: object, params: object, channels: Mapping[str, tuple[int, dict[str, Any]]]
) -> Iterator[str]:
    """A value no channel declares is never sent: most likely a typo of one that is."""
    if not isinstance(names, list) or not isinstance(params, dict):
        return
    declared: set[object] = set()
    for name in names:
        known = isinstance(name, str) and name in channels
        section = channels[name][1].get("template_params", {}) if known else None
        if not isinstance(section, dict):
            return  # an unknown or broken channel is reported elsewhere; no guessing here
        declared.update(section)
    listed = ", ".join(str(name) for name in names)
    for key in params:
        if key not in declared:
            yield (
                f"campaigns[{i}].template_params.{key}: "
                f"not declared by any of its channels ({listed})"
            )


def _secret_checks(
    prefix: str,
    section: dict[str, Any],
    env_key: str,
    file_key: str,
    environ: Mapping[str, str],
    required: bool = False,
) -> Iterator[str]:
    given = [key for key in (env_key, file_key) if section.get(key) is not None]
    if len(given) > 1:
        yield f"{prefix}: expected at most one of {env_key} or {file_key}, got both"
    elif required and not given:
        yield f"{prefix}: expected one of {env_key} or {file_key}"
    var = section.get(env_key)
    if isinstance(var, str) and var not in environ:
        yield (
            f"{prefix}.{env_key}: environment variable {var} is not set; "
            "expected it to hold the secret"
        )
    file = section.get(file_key)
    if isinstance(file, str) and not Path(file).is_file():
        yield (
            f"{prefix}.{file_key}: expected a readable file holding the secret, {file!r} is not one"
        )


def _empty_secret_check(
    i: int, channel: dict[str, Any], environ: Mapping[str, str]
) -> Iterator[str]:
    """A variable or file that holds nothing would sign with an empty key, silently; that is
    allowed only when the channel says `secret: ""` (GrowingIO's default) on purpose."""
    if channel.get("secret") == "":
        return
    key, value = _secret_value(channel, "secret_env", "secret_file", environ)
    if value != "":
        return
    where = (
        f"environment variable {channel[key]} is empty"
        if key == "secret_env"
        else f"file {channel[key]!r} is empty"
    )
    yield (
        f"channels[{i}].{key}: {where}; expected the X-gio-signature key (or say "
        'secret: "" to sign with an empty key on purpose)'
    )


def _networks(value: object) -> list[Any]:
    """allowed_networks as networks; entries that do not parse are reported by the model."""
    networks = []
    for entry in value if isinstance(value, list) else []:
        try:
            networks.append(ip_network(str(entry), strict=False))
        except ValueError:
            continue
    return networks


def _destination_checks(i: int, channel: dict[str, Any], allowed: list[Any]) -> Iterator[str]:
    """An IP-literal URL host is judged as the guard will judge it at send time, without DNS:
    a destination that would always be refused is a config error, not a dead letter each."""

    url = channel.get("url")
    address = literal_address(url) if isinstance(url, str) else None
    if address is None:
        return
    why = DestinationPolicy.of(allowed).refusal(address)
    if why is not None:
        inner = embedded_ipv4(address) if isinstance(address, IPv6Address) else None
        shown_as = inner or address  # ::ffff:10.0.0.1 is allowed wherever 10.0.0.1 is
        entry = f"{shown_as}/{shown_as.max_prefixlen}"
        yield (
            f"channels[{i}].url: {address} is {why.removesuffix(', not in allowed_networks')}, "
            f"which the destination guard refuses (every delivery would become a "
            f'blocked_destination dead letter); expected it allowed: add "{entry}" to '
            "allowed_networks"
        )


def _ordering_check(i: int, channel: dict[str, Any]) -> Iterator[str]:
    """A batch carries several users and succeeds or fails as one: one user's order across
    batches would tie every user of a batch to every other, so the two are not combined."""
    batch = _section(channel, "batch")
    users = batch.get("max_users", 1)
    if channel.get("ordering") == "per_user" and isinstance(users, int) and users > 1:
        yield (
            f"channels[{i}].ordering: per_user needs batch.max_users 1 (one user per request), "
            f"got batch.max_users {users}"
        )


def _tls_checks(i: int, channel: dict[str, Any], tls: dict[str, Any]) -> Iterator[str]:
    own = _section(channel, "tls")
    yield from _ca_bundle_check(f"channels[{i}].tls", own)
    required = own.get("require_https")
    if required is None:
        required = tls.get("require_https")
    url = channel.get("url")
    if required is True and isinstance(url, str) and url.lower().startswith("http://"):
        yield (
            f"channels[{i}].url: expected an https:// URL (tls.require_https is set), "
            f"got {USERINFO.sub('//***@', url)!r}"
        )


def _redis_checks(
    prefix: str, section: dict[str, Any], environ: Mapping[str, str]
) -> Iterator[str]:
    """The password and CA rules of every Redis connection (attributes, rate_limiter)."""
    yield from _ca_bundle_check(prefix, section)
    yield from _secret_checks(prefix, section, "password_env", "password_file", environ)
    url = section.get("url")
    given = any(section.get(key) is not None for key in ("password_env", "password_file"))
    if given and isinstance(url, str) and _has_password(url):
        yield (
            f"{prefix}.url: expected no password in the URL when password_env or "
            f"password_file gives it, got {USERINFO.sub('//***@', url)!r}"
        )


_REDIS_ONLY = ("url", "password_env", "password_file", "ca_bundle")


def _rate_limiter_checks(section: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    backend = section.get("backend", "local")
    if backend == "redis":
        if section.get("url") is None:
            yield "rate_limiter.url: required with backend redis (like redis://host:6379/0)"
        yield from _redis_checks("rate_limiter", section, environ)
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


def _ca_bundle_check(prefix: str, tls: dict[str, Any]) -> Iterator[str]:
    bundle = tls.get("ca_bundle")
    if not isinstance(bundle, str):
        return
    try:
        ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield (
            f"{prefix}.ca_bundle: expected a readable PEM file of CA certificates, "
            f"{bundle!r} is not one ({why})"
        )


_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")
_TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def _kafka_checks(kafka: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    """Security settings that only make sense together (single fields: the model checks)."""
    protocol = kafka.get("security_protocol", "PLAINTEXT")
    mechanism = kafka.get("sasl_mechanism")
    if not isinstance(protocol, str) or (mechanism is not None and not isinstance(mechanism, str)):
        return  # reported by the model validation
    yield from _sasl_checks(kafka, protocol, mechanism, environ)
    tls = _section(kafka, "tls")
    if protocol not in _TLS_PROTOCOLS and any(value is not None for value in tls.values()):
        yield (
            "kafka.tls: expected only with security_protocol SSL or SASL_SSL, "
            f"got security_protocol {protocol}"
        )
    yield from _ca_bundle_check("kafka.tls", tls)
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
    yield from _secret_checks("kafka", kafka, env_key, file_key, environ, needs_password)
    source, password = _secret_value(kafka, env_key, file_key, environ)
    if password == "":
        yield f"kafka.{source}: expected a non-empty password, the one given is empty"
    token = kafka.get("sasl_oauth_token_file")
    if isinstance(token, str) and not _non_empty_file(token):
        yield (
            "kafka.sasl_oauth_token_file: expected a readable, non-empty file holding the "
            f"token, {token!r} is not one"
        )


def _client_cert_checks(tls: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    """The client certificate and key load together, with the password when the key has one."""
    env_key, file_key = "client_key_password_env", "client_key_password_file"
    yield from _secret_checks("kafka.tls", tls, env_key, file_key, environ)
    cert, key = tls.get("client_cert"), tls.get("client_key")
    if not isinstance(cert, str):
        for name in ("client_key", env_key, file_key):
            if tls.get(name) is not None:
                yield f"kafka.tls.{name}: expected only together with client_cert"
        return
    if problem := _pem_problem(cert, "-----BEGIN CERTIFICATE-----", "certificate"):
        yield f"kafka.tls.client_cert: expected a readable PEM certificate, {cert!r} {problem}"
        return
    key_file = key if isinstance(key, str) else cert
    if problem := _pem_problem(key_file, "PRIVATE KEY-----", "private key"):
        yield (
            f"kafka.tls.client_key: expected a readable PEM private key, {key!r} {problem}"
            if isinstance(key, str)
            else f"kafka.tls.client_key: required, client_cert {cert!r} holds no private key"
        )
        return
    source, password = _secret_value(tls, env_key, file_key, environ)
    has_password = tls.get(env_key) is not None or tls.get(file_key) is not None
    encrypted = "ENCRYPTED" in _head(key_file)
    if encrypted and not has_password:
        yield f"kafka.tls.client_key: the key is encrypted; expected {env_key} or {file_key}"
        return
    if has_password and password is None:
        return  # an unreadable password is reported by _secret_checks
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


def _pem_problem(path: str, marker: str, what: str) -> str | None:
    """Why `path` is not a readable PEM file holding `marker`; None when it is."""
    try:
        text = _head(path)
    except (OSError, ValueError) as exc:
        return f"is not one ({exc.strerror if isinstance(exc, OSError) else exc})"
    return None if marker in text else f"is not one (no PEM {what} in it)"


def _non_empty_file(path: str) -> bool:
    try:
        return bool(_head(path).strip())
    except (OSError, ValueError):
        return False


def _head(path: str, limit: int = 1 << 20) -> str:
    """The start of a file, as text: enough for any PEM file, and /dev/zero cannot hang us."""
    with open(path, "rb") as file:
        return file.read(limit).decode("ascii", errors="replace")


def _standard_webhooks_checks(
    prefix: str, section: dict[str, Any], environ: Mapping[str, str]
) -> Iterator[str]:
    from .standard_webhooks import decode_secret

    pairs = (("secret_env", "secret_file"), ("previous_secret_env", "previous_secret_file"))
    for (env_key, file_key), required in zip(pairs, (True, False), strict=True):
        yield from _secret_checks(prefix, section, env_key, file_key, environ, required)
        given, value = _secret_value(section, env_key, file_key, environ)
        if value is None:
            continue
        try:
            decode_secret(value)
        except ValueError as exc:  # the message never holds the secret
            yield f"{prefix}.{given}: {exc}"
    previous = any(section.get(key) is not None for key in pairs[1])
    if previous != (section.get("previous_valid_until") is not None):
        yield (
            f"{prefix}: expected previous_valid_until together with previous_secret_env or "
            "previous_secret_file (a rotation needs both)"
        )


def _secret_value(
    section: dict[str, Any], env_key: str, file_key: str, environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """Which key names the secret, and its value when it can be read (else reported above)."""
    var, file = section.get(env_key), section.get(file_key)
    if isinstance(var, str) and var in environ:
        return env_key, environ[var]
    if isinstance(file, str) and Path(file).is_file():
        try:
            return file_key, Path(file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            return file_key, None
    return env_key, None


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _duplicates(items: object, section: str, key: str, what: str) -> Iterator[str]:
    seen: set[str] = set()
    for i, item in _items(items):
        value = item.get(key)
        if not isinstance(value, str):
            continue
        if value in seen:
            yield f"{section}[{i}].{key}: duplicate {what} {value!r}; expected unique {what}s"
        seen.add(value)


def _items(value: object) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield i, item
