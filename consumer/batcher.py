"""Packs users of one campaign arriving within `linger_ms` into one delivery of a channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .catalog import Route
from .delivery import Delivery, Source, Ticket, delivery_id
from .tracecontext import TraceContext


@dataclass(slots=True)
class _Pending:
    events: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    user_attr: list[dict[str, Any]] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    tickets: list[Ticket] = field(default_factory=list)
    trace: TraceContext | None = None  # the first traced record's: one request, one parent
    timer: asyncio.TimerHandle | None = None
    expires_at: float | None = None  # the earliest of its events'


class Batcher:
    """One per batched channel; `emit` receives each full or lingered batch."""

    def __init__(self, emit: Callable[[Delivery], None]) -> None:
        self._emit = emit
        self._pending: dict[tuple[str, str], tuple[Route, _Pending]] = {}

    def add(
        self,
        route: Route,
        campaign_id: str,
        event_id: str,
        event: dict[str, Any],
        attributes: dict[str, Any] | None,
        source: Source,
        ticket: Ticket,
        trace: TraceContext | None = None,
        expires_at: float | None = None,
    ) -> None:
        key = (route.channel.name, campaign_id)
        entry = self._pending.get(key)
        if entry is None:
            entry = (route, _Pending())
            self._pending[key] = entry
            if route.channel.batch_linger_seconds > 0:
                entry[1].timer = asyncio.get_running_loop().call_later(
                    route.channel.batch_linger_seconds, self._flush, key
                )
        pending = entry[1]
        pending.events.append(event)
        pending.event_ids.append(event_id)
        if attributes is not None:
            pending.user_attr.append(attributes)
        pending.sources.append(source)
        pending.tickets.append(ticket)
        if pending.trace is None:
            pending.trace = trace
        if expires_at is not None:  # the batch goes stale with its oldest event
            held = pending.expires_at
            pending.expires_at = expires_at if held is None else min(held, expires_at)
        if len(pending.events) >= route.channel.batch_max_users or pending.timer is None:
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        route, pending = entry
        if pending.timer is not None:
            pending.timer.cancel()
        self._emit(
            Delivery(
                id=delivery_id(route.channel.name, pending.event_ids),
                channel=route.channel,
                campaign_id=key[1],
                template_param=route.template_param,
                user_attr=pending.user_attr,
                events=pending.events,
                sources=pending.sources,
                tickets=pending.tickets,
                trace=pending.trace,
                expires_at=pending.expires_at,
            )
        )

    def flush_all(self) -> None:
        for key in list(self._pending):
            self._flush(key)
