"""A record's W3C trace context reaches its webhooks (same trace id, a new span id per attempt,
through the delay path too), and with tracing on the spans of our work reach a real OTLP/HTTP
receiver: consume, look-up, each attempt with the span id its request carried, the hand-off;
delivery id and channel as attributes, no secret and nothing about the user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumer.attributes import open_store
from consumer.config import parse_config
from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from ..otlp import OtlpReceiver
from .support import Setup, StartService, channel, committed_to_end, event

SAMPLED = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = "5cf92f3577b34da6a3ce929d0e0e4737"
PRODUCER_SPAN = "00f067aa0ba902b7"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    server = OtlpReceiver()
    await server.start()
    yield server
    await server.stop()


async def _produce(bootstrap: str, topic: str, records: list[tuple[dict, list]]) -> None:  # type: ignore[type-arg]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for document, headers in records:
            await producer.send_and_wait(
                topic, orjson.dumps(document), key=document["user_id"].encode(), headers=headers
            )
    finally:
        await producer.stop()


def _headers(trace_id: str, flags: str) -> list[tuple[str, bytes]]:
    return [
        ("traceparent", f"00-{trace_id}-{PRODUCER_SPAN}-{flags}".encode()),
        ("tracestate", STATE.encode()),
    ]


async def test_a_records_trace_reaches_its_webhooks_and_our_spans_reach_the_collector(
    bootstrap: str,
    receiver: Receiver,
    otlp: OtlpReceiver,
    tmp_path: Path,
    running_service: StartService,
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "traced")],
        {"c": ["traced"]},
        tmp=str(tmp_path),
        # One quick attempt, then the 1 s delay topic: the second attempt comes back from Kafka.
        retry={"quick_attempts": 1, "schedule_seconds": [1]},
    )
    document = {**setup.document(), "tracing": {"otlp_endpoint": otlp.endpoint}}
    config = parse_config(document, "test-config", setup.environ)
    receiver.secrets.update(setup.secrets_by_channel())
    store = open_store(config.attributes)
    await store.put_many([("u-secretive", {"hobby": "falconry-7f3a"})])
    await store.close()
    receiver.answer("traced", statuses=[503])  # the first request fails, the rest succeed
    sampled = event("c", "u-secretive")
    unsampled = event("c", "u-2")
    untraced = event("c", "u-3")
    service = running_service(config, setup.environ)
    await service.admin_url()
    await _produce(bootstrap, setup.topic, [(sampled, _headers(SAMPLED, "01"))])
    ids = {
        e["event_id"]: delivery_id("traced", [e["event_id"]])
        for e in (sampled, unsampled, untraced)
    }
    assert await receiver.wait_for(
        lambda r: ids[sampled["event_id"]] in {x.delivery_id for x in r.delivered()}, 30
    )
    await _produce(
        bootstrap,
        setup.topic,
        [(unsampled, _headers(UNSAMPLED, "00")), (untraced, [])],
    )
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 3, 30)
    assert await committed_to_end(setup)
    await service.shutdown()  # exports what is still queued

    def requests_of(event_id: str) -> list:  # type: ignore[type-arg]
        return [r for r in receiver.received if r.delivery_id == ids[event_id]]

    first, second = requests_of(sampled["event_id"])  # 503, then 200 from the delay topic
    assert (first.status, second.status) == (503, 200)
    spans_sent = []
    for request in (first, second):
        version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", SAMPLED, "01")
        assert request.headers["tracestate"] == STATE
        spans_sent.append(span_id)
    assert len(set(spans_sent)) == 2
    assert PRODUCER_SPAN not in spans_sent
    [quiet] = requests_of(unsampled["event_id"])
    assert quiet.headers["traceparent"].split("-")[1::2] == [UNSAMPLED, "00"]
    [plain] = requests_of(untraced["event_id"])
    assert "traceparent" not in plain.headers

    assert await otlp.wait_for(
        lambda: len([s for s in otlp.spans if s.trace_id == SAMPLED]) >= 5, 10
    )
    spans = [s for s in otlp.spans if s.trace_id == SAMPLED]
    assert not [s for s in otlp.spans if s.trace_id == UNSAMPLED]  # not sampled: not recorded
    by_name: dict[str, list] = {}  # type: ignore[type-arg]
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [consume] = by_name["consume"]
    assert consume.parent_span_id == PRODUCER_SPAN
    assert consume.attributes["messaging.destination.name"] == setup.topic
    [lookup] = by_name["look-up"]
    assert lookup.parent_span_id == consume.span_id
    attempts = sorted(by_name["attempt"], key=lambda s: s.start_ns)
    # Each attempt's span is the very span its request named: the receiver's spans hang below.
    assert [s.span_id for s in attempts] == spans_sent
    assert {s.parent_span_id for s in attempts} == {consume.span_id}
    assert [s.attributes["http.response.status_code"] for s in attempts] == [503, 200]
    assert [s.attributes["webhook.attempt"] for s in attempts] == [1, 2]
    [handoff] = by_name["hand-off"]
    assert handoff.parent_span_id == consume.span_id
    assert handoff.attributes["webhook.handoff"] == "delay"
    for span in (*attempts, handoff):
        assert span.attributes["webhook.delivery_id"] == ids[sampled["event_id"]]
        assert span.attributes["webhook.channel"] == "traced"
    assert {s.resource["service.name"] for s in spans} == {"webhook-consumer"}
    assert {s.trace_state for s in spans} == {STATE}
    secret = setup.environ[setup.channels[0]["secret_env"]]
    shown = repr([(s.attributes, s.resource, s.name) for s in otlp.spans])
    for private in (secret, "u-secretive", "falconry-7f3a", "hobby", "user"):
        assert private not in shown
