"""Checks across fields of the raw config mapping: cross-references, secrets, TLS files.

They run on the raw mapping rather than the validated model, so they are reported even when
some unrelated field failed validation: one run lists every problem.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def cross_check(data: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    yield from _ca_bundle_check("tls", _section(data, "tls"))
    yield from _attributes_checks(_section(data, "attributes"), environ)
    channels = {
        ch["name"]: (i, ch)
        for i, ch in _items(data.get("channels"))
        if isinstance(ch.get("name"), str)
    }
    yield from _duplicates(data.get("channels"), "channels", "name", "channel name")
    yield from _duplicates(data.get("campaigns"), "campaigns", "id", "campaign id")
    for i, ch in _items(data.get("channels")):
        yield from _secret_checks(f"channels[{i}]", ch, "secret_env", "secret_file", environ)
        auth = ch.get("basic_auth")
        if isinstance(auth, dict):
            prefix = f"channels[{i}].basic_auth"
            yield from _secret_checks(
                prefix, auth, "password_env", "password_file", environ, required=True
            )
        yield from _tls_checks(i, ch, _section(data, "tls"))
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


def _attributes_checks(section: dict[str, Any], environ: Mapping[str, str]) -> Iterator[str]:
    yield from _ca_bundle_check("attributes", section)
    yield from _secret_checks("attributes", section, "password_env", "password_file", environ)
    url = section.get("url")
    given = any(section.get(key) is not None for key in ("password_env", "password_file"))
    if given and isinstance(url, str) and _has_password(url):
        yield (
            "attributes.url: expected no password in the URL when password_env or "
            f"password_file gives it, got {USERINFO.sub('//***@', url)!r}"
        )


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
