"""Secret values that cannot leak through repr, str, logs or exceptions.

Every non-empty secret the process loads is also remembered, so `redact` can scrub text that
came from outside our control: a receiver that echoes our Authorization header back in its
error body would otherwise carry it into logs and dead letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

REDACTED: Final = "**********"

# Shorter values would mangle ordinary text, and are no secret worth the name anyway.
_MIN_REDACTED_LENGTH: Final = 4
_known: set[str] = set()
_longest_first: tuple[str, ...] = ()  # replaced in this order: a secret may contain another


def remember(value: str) -> None:
    """Make `redact` scrub `value` (for text derived from secrets, like a Basic-auth token)."""
    global _longest_first
    if len(value) >= _MIN_REDACTED_LENGTH and value not in _known:
        _known.add(value)
        _longest_first = tuple(sorted(_known, key=len, reverse=True))


def redact(text: str, values: Sequence[str] | None = None) -> str:
    """`text` with every secret this process knows (or just `values`, longest first) redacted."""
    for value in _longest_first if values is None else values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redactions(secrets: Iterable[Secret | str | None]) -> tuple[str, ...]:
    """The values `redact` should look for on behalf of these secrets, longest first."""
    values = {s.reveal() if isinstance(s, Secret) else s for s in secrets if s is not None}
    return tuple(sorted((v for v in values if len(v) >= _MIN_REDACTED_LENGTH), key=len)[::-1])


def redact_value(value: Any) -> Any:
    """`redact` through the strings of a JSON-like value (log event fields)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [redact_value(v) for v in value]
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """structlog processor: the last line of defence; place it just before the renderer."""
    return {key: redact_value(value) for key, value in event_dict.items()}


class Secret:
    """A string that only `reveal()` gives back; everything else sees a redaction."""

    __slots__ = ("_bytes", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._bytes = value.encode("utf-8")  # once: a channel's key signs every request
        remember(value)

    def reveal(self) -> str:
        return self._value

    def reveal_bytes(self) -> bytes:
        return self._bytes

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")


EMPTY_SECRET: Final = Secret("")


def read_secret(var: str | None, file: Path | None, env: Mapping[str, str]) -> Secret:
    """The secret named by `var` in `env`, or held by `file`; empty when neither is given."""
    if var is not None:
        return Secret(env[var])
    if file is not None:
        # A trailing newline is an artefact of how files are written, never part of a key.
        return Secret(file.read_text(encoding="utf-8").rstrip("\r\n"))
    return EMPTY_SECRET
