"""Standard Webhooks (standardwebhooks.com, spec 1.0, symmetric `v1`): sign, and verify.

Opt-in per channel, next to `X-gio-signature`. The signed content is
`{webhook-id}.{webhook-timestamp}.{body}`; the signature is `v1,` + base64(HMAC-SHA256), keyed by
the bytes the secret encodes (base64 after the `whsec_` prefix). During a rotation the request
carries one signature per live secret, space-separated, and a receiver accepts any that matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .secrets import Secret

PREFIX: Final = "whsec_"
MIN_KEY_BYTES: Final = 24  # the spec's floor (192 bits)
MAX_KEY_BYTES: Final = 64  # and its ceiling (512 bits)
TOLERANCE_SECONDS: Final = 300  # how far a receiver lets webhook-timestamp drift (spec: 5 min)


def decode_secret(secret: Secret | str) -> bytes:
    """The HMAC key a `whsec_<base64>` secret encodes; the prefix is optional.

    Raises ValueError with a message that never contains the secret.
    """
    text = secret.reveal() if isinstance(secret, Secret) else secret
    try:
        key = base64.b64decode(text.strip().removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected whsec_ followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"expected a key of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, it encodes {len(key)}"
        )
    return key


def signature(msg_id: str, timestamp: int, body: bytes, key: bytes) -> str:
    """One `v1,<base64>` signature of `{msg_id}.{timestamp}.{body}`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """A channel's Standard Webhooks secrets: the current one, and during a rotation the
    previous one until `previous_valid_until`, so receivers can switch at their own pace."""

    current: Secret
    previous: Secret | None = None
    previous_valid_until: datetime | None = None  # timezone-aware

    def live(self, timestamp: int) -> list[Secret]:
        keys = [self.current]
        until = self.previous_valid_until
        if self.previous is not None and until is not None and timestamp < until.timestamp():
            keys.append(self.previous)
        return keys

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        signatures = (
            signature(msg_id, timestamp, body, decode_secret(k)) for k in self.live(timestamp)
        )
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Secret | str | Iterable[Secret | str],
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """For receivers: True when some `v1` signature matches one of `secrets` and the timestamp
    is within `tolerance` seconds of `now` (a replayed old request fails). Constant time."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id", "")
    stamp = lower.get("webhook-timestamp", "")
    offered = lower.get("webhook-signature", "").split()
    if not msg_id or not (stamp.isascii() and stamp.isdigit()) or not offered:
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    keys = [secrets] if isinstance(secrets, Secret | str) else list(secrets)
    expected = [signature(msg_id, timestamp, body, decode_secret(k)).encode() for k in keys]
    matched = False
    for entry in offered:
        candidate = entry.encode("ascii", "replace")
        for want in expected:
            # No early exit: how long this takes says nothing about which entry was close.
            matched |= hmac.compare_digest(want, candidate)
    return matched
