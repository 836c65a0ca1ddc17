"""Each replica's circuit changes, with the error behind them, on the channel-state topic:
what `channels list` shows as a channel's circuit and last error (a hook of the observer)."""

from __future__ import annotations

import os
import socket

from consumer.deadletter import Reason
from consumer.observer import Attempted, CircuitChanged, Details, Handler
from consumer.outcome import Outcome

from .records import ChannelRecord, RecordKind
from .state import ChannelState


def replica_name() -> str:
    """Host and process: unique among running replicas, and readable in `channels list`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class CircuitReports:
    """Subscribe it to the observer; at a clean stop, tombstones of `keys()` remove them."""

    def __init__(self, state: ChannelState, replica: str | None = None) -> None:
        self._state = state
        self._replica = replica or replica_name()
        self._last_error: dict[str, Outcome] = {}
        self._reported: set[str] = set()
        self.subscriptions: dict[type, Handler] = dict.fromkeys((Attempted, CircuitChanged), self)

    def __call__(self, details: Details) -> None:
        if isinstance(details, Attempted):
            if not details.outcome.ok:
                self._last_error[details.delivery.channel.name] = details.outcome
        elif isinstance(details, CircuitChanged):
            self._report(details)

    def _report(self, changed: CircuitChanged) -> None:
        error = self._last_error.get(changed.channel)
        last = None
        if error is not None:
            last = Reason(kind=error.kind.value, status=error.status, message=error.message)
        self._reported.add(changed.channel)
        self._state.write(
            ChannelRecord(
                kind=RecordKind.CIRCUIT,
                channel=changed.channel,
                by=self._replica,
                circuit=changed.state,
                failures=changed.failures,
                last_error=last,
            )
        )

    def keys(self) -> list[str]:
        """The keys this replica wrote, to remove when it stops."""
        return [f"{RecordKind.CIRCUIT.value}/{c}/{self._replica}" for c in sorted(self._reported)]
