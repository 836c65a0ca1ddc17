"""Each replica's circuit changes, with the error behind them, on the channel-state topic:
what `channels list` shows as a channel's circuit and last error (a hook of the observer)."""

from __future__ import annotations

import os
import socket

from consumer.deadletter import Reason
from consumer.observer import Attempted, CircuitChanged, Details
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

    def __call__(self, details: Details) -> None:
        match details:
            case Attempted(delivery, outcome, _, _) if not outcome.ok:
                self._last_error[delivery.channel.name] = outcome
            case CircuitChanged(channel, state, failures, _):
                error = self._last_error.get(channel)
                last = None
                if error is not None:
                    last = Reason(kind=error.kind.value, status=error.status, message=error.message)
                self._reported.add(channel)
                self._state.write(
                    ChannelRecord(
                        kind=RecordKind.CIRCUIT,
                        channel=channel,
                        by=self._replica,
                        circuit=state,
                        failures=failures,
                        last_error=last,
                    )
                )

    def keys(self) -> list[str]:
        """The keys this replica wrote, to remove when it stops."""
        return [f"{RecordKind.CIRCUIT.value}/{c}/{self._replica}" for c in sorted(self._reported)]
