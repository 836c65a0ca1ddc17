"""Dead-letter records: what they keep, what they never contain, and durable writing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from consumer.deadletter import DeadLetter, DeadLetterWriter, for_delivery, for_record
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import ACKNOWLEDGED, Acknowledged, Handoff
from consumer.outcome import Kind, Outcome, from_response

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

SOURCE = Source("user-threshold-events", 4, 1234)
INVALID = Outcome(Kind.INVALID_EVENT, retryable=False, message="not valid UTF-8 JSON")


def test_unparseable_text_is_kept_as_text() -> None:
    letter = for_record(SOURCE, b"{oops", None, INVALID)
    assert letter.events == ["{oops"]
    assert (letter.reason.kind, letter.delivery_id, letter.attempts) == ("invalid_event", None, 0)
    assert (letter.source.topic, letter.source.partition, letter.source.offset) == (
        "user-threshold-events",
        4,
        1234,
    )


def test_non_utf8_value_is_kept_as_base64() -> None:
    letter = for_record(SOURCE, b"\xff\x00", None, INVALID)
    assert letter.events == [{"base64": "/wA="}]


def test_parsed_document_is_kept_as_json() -> None:
    letter = for_record(SOURCE, b"[1]", [1], INVALID)
    assert json.loads(letter.encode())["events"] == [[1]]


def test_letter_for_a_failed_delivery(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog(
        [channel_cfg("crm", basic_auth={"username": "gio", "password_env": "HOOK_PASSWORD"})],
        environ={"HOOK_SECRET": "very-secret-key", "HOOK_PASSWORD": "very-secret-password"},
    )
    delivery = Delivery(
        id=delivery_id("crm", ["e1"]),
        channel=catalog.channels["crm"],
        campaign_id="double11",
        template_param={"discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[{"event_id": "e1", "user_id": "u1"}],
        sources=[SOURCE],
        attempts=3,
        first_attempt_at=1_700_000_000.0,
        last_attempt_at=1_700_000_001.5,
    )
    encoded = for_delivery(delivery, from_response(503, None, "down")).encode()
    document = json.loads(encoded)
    assert document["delivery_id"] == delivery.id
    assert (document["channel"], document["campaign_id"]) == ("crm", "double11")
    assert document["events"] == [{"event_id": "e1", "user_id": "u1"}]
    assert document["reason"] == {"kind": "http_status", "status": 503, "message": "down"}
    assert document["attempts"] == 3
    assert document["first_attempt_at"].startswith("2023-11-14T22:13:20")
    assert document["source"] == {"topic": "user-threshold-events", "partition": 4, "offset": 1234}
    assert b"very-secret" not in encoded
    assert DeadLetter.model_validate_json(encoded).delivery_id == delivery.id


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.letters: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> Acknowledged:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.letters.append(letter)
        return ACKNOWLEDGED


async def test_writer_retries_until_durable_then_hands_off(wait_until: WaitUntil) -> None:
    sink = FlakySink(failures=2)
    handoff = Handoff("test", initial_backoff=0.001)
    writer = DeadLetterWriter(sink, handoff)
    letters_at_hand_off: list[int] = []
    writer.submit(
        for_record(SOURCE, b"x", None, INVALID),
        lambda: letters_at_hand_off.append(len(sink.letters)),
    )
    assert letters_at_hand_off == []
    await wait_until(lambda: letters_at_hand_off != [], what="letter written")
    assert letters_at_hand_off == [1]  # handed off only once the letter was durable
    assert sink.failures == 0
    await wait_until(lambda: handoff.pending == 0, what="write task done")
    await writer.close()
