"""Spans of our work on traced records, as a hook: exported over OTLP/HTTP by the OpenTelemetry
SDK (the optional extra `webhook-consumer[tracing]`, imported only when the hook is built).

Spans are made after the fact from the observer's details, with the ids the work already
carries: a record's consume span has the id its deliveries hang under, and an attempt's span
has the span id its webhook request sent in `traceparent`, so the receiver's spans are its
children. The lanes make no span calls. Attributes name the delivery and the channel, never a
secret, a URL's query, a user id or a user attribute. Unsampled traces (flags 00) are passed on
to the receivers but not recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from yarl import URL

from ..observer import Attempted, Details, HandedOff, RecordsTraced
from ..tracecontext import TraceContext, new_span_id, parse
from ..version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

TRACES_PATH = "/v1/traces"

Attributes = Mapping[str, str | int]


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: `/v1/traces` added to an endpoint given without a path."""
    url = URL(endpoint)
    return str(url.with_path(TRACES_PATH)) if url.path in ("", "/") else endpoint


class TracingHook:
    """Subscribe it with `spans=True`; `close()` exports what is still queued."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace.status import Status, StatusCode

        self._api = trace
        self._readable = ReadableSpan
        self._status, self._failed = Status, StatusCode.ERROR
        self._ok = Status(StatusCode.UNSET)

        self.processor: SpanProcessor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=traces_url(endpoint))
        )
        self._resource = Resource.create(
            {"service.name": service_name, "service.version": __version__}
        )
        self._scope = InstrumentationScope("webhook-consumer", __version__)
        self.subscriptions: dict[type, Callable[[Any], None]] = {
            Attempted: self._attempted,
            RecordsTraced: self._records,
            HandedOff: self._handed_off,
        }

    def __call__(self, details: Details) -> None:
        handler = self.subscriptions.get(type(details))
        if handler is not None:
            handler(details)

    def _records(self, details: RecordsTraced) -> None:
        for trace, source in details.records:
            if not trace.sampled:
                continue
            self._span(
                "consume",
                trace,
                trace.span_id,
                trace.parent_id,
                details.started_ns,
                details.ended_ns,
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": source.topic,
                    "messaging.destination.partition.id": str(source.partition),
                    "messaging.kafka.offset": source.offset,
                },
                remote_parent=True,
            )
            if details.lookup_ns is not None:
                started, ended = details.lookup_ns
                self._span("look-up", trace, new_span_id(), trace.span_id, started, ended, {})

    def _attempted(self, details: Attempted) -> None:
        delivery = details.delivery
        trace = delivery.trace
        if trace is None or delivery.span_id is None or not trace.sampled:
            return
        ended = time.time_ns()
        outcome = details.outcome
        attributes: dict[str, str | int] = {
            "webhook.delivery_id": delivery.id,
            "webhook.channel": delivery.channel.name,
            "webhook.attempt": delivery.attempts,
            "webhook.outcome": outcome.kind.value,
            "http.request.method": "POST",
        }
        host = delivery.channel.url.host  # the host only: a query may hold a token
        if host:
            attributes["server.address"] = host
        if outcome.status is not None:
            attributes["http.response.status_code"] = outcome.status
        self._span(
            "attempt",
            trace,
            delivery.span_id,
            trace.span_id,
            ended - int(details.seconds * 1e9),
            ended,
            attributes,
            client=True,
            error=None if outcome.ok else outcome.kind.value,
        )

    def _handed_off(self, details: HandedOff) -> None:
        trace = parse(details.traceparent, details.tracestate)
        if trace is None or not trace.sampled:
            return
        attributes: dict[str, str | int] = {"webhook.handoff": details.what}
        if details.delivery_id is not None:
            attributes["webhook.delivery_id"] = details.delivery_id
        if details.channel is not None:
            attributes["webhook.channel"] = details.channel
        self._span(
            "hand-off",
            trace,
            new_span_id(),
            trace.span_id,
            details.started_ns,
            details.ended_ns,
            attributes,
        )

    def _span(
        self,
        name: str,
        trace: TraceContext,
        span_id: str,
        parent_id: str | None,
        started_ns: int,
        ended_ns: int,
        attributes: Attributes,
        *,
        remote_parent: bool = False,
        client: bool = False,
        error: str | None = None,
    ) -> None:
        api = self._api
        trace_id = int(trace.trace_id, 16)
        flags = api.TraceFlags(int(trace.flags, 16))
        state = api.TraceState.from_header([trace.state]) if trace.state else None
        parent = None
        if parent_id is not None:
            parent = api.SpanContext(trace_id, int(parent_id, 16), remote_parent, flags, state)
        self.processor.on_end(
            self._readable(
                name,
                context=api.SpanContext(trace_id, int(span_id, 16), False, flags, state),
                parent=parent,
                resource=self._resource,
                attributes=attributes,
                kind=api.SpanKind.CLIENT if client else api.SpanKind.INTERNAL,
                status=self._status(self._failed, error) if error else self._ok,
                start_time=started_ns,
                end_time=ended_ns,
                instrumentation_scope=self._scope,
            )
        )

    async def close(self) -> None:
        """Export what is queued (the SDK's thread does; bounded by its export timeout)."""
        await asyncio.to_thread(self.processor.shutdown)
