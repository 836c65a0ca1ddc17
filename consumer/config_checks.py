"""Checks across fields of the raw config mapping: cross-references, secrets, destinations.

They run on the raw mapping rather than the validated model, so they are reported even when
some unrelated field failed validation: one run lists every problem. The connections' checks
(Kafka, Redis) are in connection_checks.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from ipaddress import IPv6Address, ip_network
from typing import Any

from .config_secrets import USERINFO, ca_bundle_check, secret_checks, secret_value, section
from .connection_checks import kafka_checks, rate_limiter_checks, redis_checks
from .guard import DestinationPolicy, embedded_ipv4, literal_address


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
    yield from kafka_checks(section(data, "kafka"), environ)
    yield from ca_bundle_check("tls", section(data, "tls"))
    yield from redis_checks("attributes", section(data, "attributes"), environ)
    yield from rate_limiter_checks(section(data, "rate_limiter"), environ)
    channels = {
        ch["name"]: (i, ch)
        for i, ch in _items(data.get("channels"))
        if isinstance(ch.get("name"), str)
    }
    yield from _duplicates(data.get("channels"), "channels", "name", "channel name")
    yield from _duplicates(data.get("campaigns"), "campaigns", "id", "campaign id")
    allowed = _networks(data.get("allowed_networks"))
    for i, ch in _items(data.get("channels")):
        yield from _tls_checks(i, ch, section(data, "tls"))
        yield from _destination_checks(i, ch, allowed)
        yield from _ordering_check(i, ch)
        if not webhook_secrets:
            continue
        yield from secret_checks(f"channels[{i}]", ch, "secret_env", "secret_file", environ)
        yield from _empty_secret_check(i, ch, environ)
        auth = ch.get("basic_auth")
        if isinstance(auth, dict):
            prefix = f"channels[{i}].basic_auth"
            yield from secret_checks(
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


def _empty_secret_check(
    i: int, channel: dict[str, Any], environ: Mapping[str, str]
) -> Iterator[str]:
    """A variable or file that holds nothing would sign with an empty key, silently; that is
    allowed only when the channel says `secret: ""` (GrowingIO's default) on purpose."""
    if channel.get("secret") == "":
        return
    key, value = secret_value(channel, "secret_env", "secret_file", environ)
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
    batch = section(channel, "batch")
    users = batch.get("max_users", 1)
    if channel.get("ordering") == "per_user" and isinstance(users, int) and users > 1:
        yield (
            f"channels[{i}].ordering: per_user needs batch.max_users 1 (one user per request), "
            f"got batch.max_users {users}"
        )


def _tls_checks(i: int, channel: dict[str, Any], tls: dict[str, Any]) -> Iterator[str]:
    own = section(channel, "tls")
    yield from ca_bundle_check(f"channels[{i}].tls", own)
    required = own.get("require_https")
    if required is None:
        required = tls.get("require_https")
    url = channel.get("url")
    if required is True and isinstance(url, str) and url.lower().startswith("http://"):
        yield (
            f"channels[{i}].url: expected an https:// URL (tls.require_https is set), "
            f"got {USERINFO.sub('//***@', url)!r}"
        )


def _standard_webhooks_checks(
    prefix: str, section: dict[str, Any], environ: Mapping[str, str]
) -> Iterator[str]:
    from .standard_webhooks import decode_secret

    pairs = (("secret_env", "secret_file"), ("previous_secret_env", "previous_secret_file"))
    for (env_key, file_key), required in zip(pairs, (True, False), strict=True):
        yield from secret_checks(prefix, section, env_key, file_key, environ, required)
        given, value = secret_value(section, env_key, file_key, environ)
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
