"""The webhook body, byte for byte, and which user attributes go into it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from consumer.payload import encode_body, select_attributes
from consumer.signing import sign

VECTORS = Path(__file__).parents[1] / "vectors/gio-signature.json"

TEMPLATE = {"campaignType": "双十一", "campaignDate": "2020-04-29", "discount": "20%", "quota": 3}


def test_contract_example_bytes() -> None:
    body = encode_body(
        "coupon-system", TEMPLATE, [{"hobby": "game1", "birthday": "1992-02-01"}], 1762819205123
    )
    assert (
        body
        == (
            '{"name":"coupon-system","templateParam":{"campaignType":"双十一",'
            '"campaignDate":"2020-04-29","discount":"20%","quota":3},'
            '"userAttr":[{"hobby":"game1","birthday":"1992-02-01"}],"timestamp":"1762819205123"}'
        ).encode()
    )


def test_non_ascii_is_raw_utf8_not_escaped() -> None:
    body = encode_body("名称", {"t": "双十一 🚀"}, [{"city": "Zürich"}], 1)
    assert b"\\u" not in body
    assert "名称".encode() in body
    assert "双十一 🚀".encode() in body
    assert "Zürich".encode() in body


def test_compact_with_no_whitespace() -> None:
    body = encode_body("n", {"a": "x", "b": 2}, [{"k": "v"}], 5)
    assert b" " not in body
    assert b"\n" not in body


def test_template_keys_keep_their_given_order() -> None:
    body = encode_body("n", {"zeta": 1, "alpha": 2, "mid": 3}, [], 0)
    assert body.index(b'"zeta"') < body.index(b'"alpha"') < body.index(b'"mid"')


def test_empty_user_attr_is_an_empty_array() -> None:
    assert b'"userAttr":[]' in encode_body("n", {}, [], 0)


def test_timestamp_defaults_to_now_as_decimal_ms_string() -> None:
    before = time.time_ns() // 1_000_000
    document = json.loads(encode_body("n", {}, []))
    after = time.time_ns() // 1_000_000
    assert isinstance(document["timestamp"], str)
    assert document["timestamp"].isdecimal()
    assert before <= int(document["timestamp"]) <= after


def test_top_level_key_order() -> None:
    document = json.loads(encode_body("n", {"a": 1}, [{"b": 2}], 7))
    assert list(document) == ["name", "templateParam", "userAttr", "timestamp"]


def test_select_attributes_keeps_wanted_keys_in_channel_order() -> None:
    users = [{"birthday": "1992-02-01", "phone": "13800000000", "hobby": "game1"}]
    selected = select_attributes(["hobby", "birthday"], users)
    assert selected == [{"hobby": "game1", "birthday": "1992-02-01"}]
    assert list(selected[0]) == ["hobby", "birthday"]


def test_select_attributes_drops_users_not_found() -> None:
    users = [None, {"hobby": "a"}, None, {"hobby": "b"}]
    assert select_attributes(["hobby"], users) == [{"hobby": "a"}, {"hobby": "b"}]
    assert select_attributes(["hobby"], [None]) == []


def test_select_attributes_user_missing_keys_gets_only_present_ones() -> None:
    users = [{"birthday": "1990-02-01"}, {}]
    assert select_attributes(["hobby", "birthday"], users) == [{"birthday": "1990-02-01"}, {}]


def test_reproduces_the_seed_example_vector() -> None:
    vector = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"][2]
    users = [
        {"birthday": "1992-02-01", "hobby": "game1", "vip": True},
        None,
        {"hobby": "game2", "birthday": "1990-02-01"},
    ]
    template = {
        "campaignType": "双十一",
        "campaignDate": "2020-04-29",
        "discount": "20%",
        "content": "快来下单吧!",
    }
    body = encode_body(
        "webhook名称", template, select_attributes(["hobby", "birthday"], users), 1588089600000
    )
    assert body == vector["body"].encode()
    assert sign(body, vector["secret"]) == vector["signature"]
