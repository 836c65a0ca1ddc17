"""Readiness as a hook: ready once the config is loaded, the producer started, the attributes
topic (if any) read to the end it had at start, and the consumer group joined (the first
assignment arrived, even an empty one), until the drain begins. While Kafka is unreachable at
start the verdict says so."""

from __future__ import annotations

from ..health import Verdict
from ..observer import AttributesProgress, Details, Handler, Lifecycle, PartitionsOwned, Stage


class Readiness:
    def __init__(self, follows_attributes: bool = False) -> None:
        self._config_loaded = False
        self._producer_started = False
        self._kafka_unreachable = False
        self._joined = False
        self._draining = False
        self._attributes_read = not follows_attributes
        self._attributes_lag: int | None = None
        self.subscriptions: dict[type, Handler] = dict.fromkeys(
            (PartitionsOwned, AttributesProgress, Lifecycle), self
        )

    def __call__(self, details: Details) -> None:
        if isinstance(details, PartitionsOwned):
            self._joined = self._joined or details.assigned
        elif isinstance(details, AttributesProgress):
            self._attributes_read = self._attributes_read or details.caught_up
            self._attributes_lag = details.lag
        elif isinstance(details, Lifecycle):
            self._lifecycle(details.stage)

    def _lifecycle(self, stage: Stage) -> None:
        match stage:
            case Stage.CONFIG_LOADED:
                self._config_loaded = True
            case Stage.WAITING_FOR_KAFKA:
                self._kafka_unreachable = True
            case Stage.PRODUCER_STARTED:
                self._producer_started = True
            case Stage.DRAINING | Stage.STOPPED:
                self._draining = True

    def verdict(self) -> Verdict:
        if self._draining:
            return Verdict(False, "draining: stopping after a signal")
        lag = self._attributes_lag
        behind = "" if lag is None else f" ({lag:,} records behind)"
        missing = [
            what
            for what, done in (
                ("the config", self._config_loaded),
                ("the Kafka producer", self._producer_started),
                ("the attributes topic read to its end" + behind, self._attributes_read),
                ("joining the consumer group", self._joined),
            )
            if not done
        ]
        if self._kafka_unreachable and not self._producer_started:
            return Verdict(False, "waiting for Kafka: unreachable at start (see kafka.unreachable)")
        if missing:
            return Verdict(False, "waiting for " + ", ".join(missing))
        return Verdict(True, "ready")
