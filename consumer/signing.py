"""`X-gio-signature`: lowercase hex HMAC-SHA256 of the exact body bytes, keyed by the secret."""

from __future__ import annotations

import hmac

from .secrets import Secret


def sign(body: bytes, secret: Secret | str) -> str:
    key = secret.reveal_bytes() if isinstance(secret, Secret) else secret.encode("utf-8")
    return hmac.digest(key, body, "sha256").hex()  # one-shot: no HMAC object per request


def verify(body: bytes, signature: str, secret: Secret | str) -> bool:
    """For receivers: check a signature over the raw request body in constant time."""
    expected = sign(body, secret)
    return hmac.compare_digest(
        expected.encode("ascii"), signature.strip().lower().encode("ascii", "replace")
    )
