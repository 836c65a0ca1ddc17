"""`X-gio-signature`: the shared GrowingIO vectors, and what verify accepts and refuses."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from consumer.secrets import Secret
from consumer.signing import sign, verify

# A copy of shared/vectors/gio-signature.json, so the tests never depend on a sibling folder;
# test_vectors_copy_matches_shared catches drift wherever shared/ sits next to the repo.
VECTORS = Path(__file__).parents[1] / "vectors/gio-signature.json"
SHARED_VECTORS = Path(__file__).parents[3] / "shared/vectors/gio-signature.json"


def test_vectors_copy_matches_shared() -> None:
    if not SHARED_VECTORS.is_file():
        pytest.skip(f"no shared/ next to the repo ({SHARED_VECTORS})")
    assert json.loads(SHARED_VECTORS.read_text("utf-8")) == json.loads(VECTORS.read_text("utf-8"))


def _vectors() -> list[Any]:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [pytest.param(v, id=f"vector{i}") for i, v in enumerate(data["vectors"])]


@pytest.fixture(params=_vectors())
def vector(request: pytest.FixtureRequest) -> dict[str, str]:
    return request.param  # type: ignore[no-any-return]


def test_sign_matches_vector(vector: dict[str, str]) -> None:
    assert sign(vector["body"].encode(), vector["secret"]) == vector["signature"]


def test_secret_type_signs_like_its_value(vector: dict[str, str]) -> None:
    body = vector["body"].encode()
    assert sign(body, Secret(vector["secret"])) == vector["signature"]
    assert verify(body, vector["signature"], Secret(vector["secret"]))


def test_verify_accepts_vector(vector: dict[str, str]) -> None:
    assert verify(vector["body"].encode(), vector["signature"], vector["secret"])


def test_verify_accepts_uppercase_hex(vector: dict[str, str]) -> None:
    assert verify(vector["body"].encode(), vector["signature"].upper(), vector["secret"])


def test_verify_rejects_tampered_body(vector: dict[str, str]) -> None:
    body = vector["body"].encode()
    for tampered in (body + b" ", body[:-1], body.replace(b"TEST2", b"TEST3"), b""):
        if tampered != body:
            assert not verify(tampered, vector["signature"], vector["secret"])


def test_verify_rejects_wrong_secret(vector: dict[str, str]) -> None:
    body = vector["body"].encode()
    assert not verify(body, vector["signature"], vector["secret"] + "x")
    if vector["secret"]:
        assert not verify(body, vector["signature"], "")


@pytest.mark.parametrize("cut", [1, 2, 32, 64])
def test_verify_rejects_truncated_signature(vector: dict[str, str], cut: int) -> None:
    assert not verify(vector["body"].encode(), vector["signature"][:-cut], vector["secret"])


def test_verify_rejects_garbage_signature() -> None:
    body = b'{"name":"x"}'
    assert not verify(body, "", "k")
    assert not verify(body, "签名" * 32, "k")


def test_signature_is_lowercase_hex_sha256() -> None:
    signature = sign(b"{}", "k")
    assert len(signature) == 64
    assert signature == signature.lower()
    int(signature, 16)


def test_key_is_the_utf8_secret() -> None:
    # The contract's scheme, spelled out with the standard library.
    expected = hmac.new("密钥".encode(), b"{}", hashlib.sha256).hexdigest()
    assert sign(b"{}", "密钥") == expected
    assert sign(b"{}", Secret("密钥")) == expected
