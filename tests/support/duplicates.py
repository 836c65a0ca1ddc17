"""How many duplicate deliveries a failure may cost: the one bound every test that kills or
stops a consumer asserts against.

A replica that dies without warning (or loses the broker) leaves behind, per partition it
owned, the records between its last commit and what it had read. Its successor redoes those,
except the ones the last commit's metadata names as finished (`consumer/offsetmap.py`). So the
redone records are at most:

- unfinished at the failure: per partition, the listener reads until
  `max_in_flight_per_partition` records are unfinished and then pauses, but it pauses only after
  dispatching a whole poll, so up to `max_in_flight_per_partition + max_poll_records - 1`;
- finished since the last commit: a commit starts every `commit_interval_ms`, after at most one
  more poll of the listener (`timeout_ms=100` in `Listener.run`), so at most what the replica
  finishes in `commit_interval_ms + 100` ms at its rate (measured from its commits, see
  `commits.CommitWatch`). This leaves out the time a loop spends dispatching one poll, short
  next to that on a machine that is not starved of CPU.

and never more than the records its partitions held above their commit points when it died
(`above_commits`, when the test measured it: a kill long after the last commit is bounded by
that alone). Each redone record is sent again to each channel of its event: the duplicates
are at most `channels` times the redone records. A partition whose commit already reached its
end offset has nothing to redo and counts for nothing; a drained stop (SIGTERM, a revoke
within its grace) finishes and commits what it read, so it redoes nothing and its bound is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consumer.config import KafkaConfig

LISTENER_POLL_MS = 100  # Listener.run: getmany(timeout_ms=100) between commit checks


@dataclass(frozen=True, slots=True)
class DuplicateBound:
    channels: int  # per event
    partitions: int  # owned by what failed, with records not yet committed
    max_in_flight_per_partition: int
    max_poll_records: int
    commit_interval_ms: int
    # Finished by what failed, measured just before the failure; None: not measured, the
    # records above the commits are the bound.
    records_per_second: float | None
    above_commits: int | None = None  # records above those partitions' commits, if measured

    def __post_init__(self) -> None:
        assert self.records_per_second is not None or self.above_commits is not None

    @classmethod
    def after_kill(
        cls,
        kafka: KafkaConfig,
        channels: int,
        partitions: int,
        records_per_second: float | None,
        above_commits: int | None = None,
    ) -> DuplicateBound:
        """The bound for a replica running with `kafka` killed while owning `partitions`."""
        return cls(
            channels=channels,
            partitions=partitions,
            max_in_flight_per_partition=kafka.max_in_flight_per_partition,
            max_poll_records=kafka.max_poll_records,
            commit_interval_ms=kafka.commit_interval_ms,
            records_per_second=records_per_second,
            above_commits=above_commits,
        )

    @property
    def unfinished_records(self) -> int:
        return self.partitions * (self.max_in_flight_per_partition + self.max_poll_records - 1)

    @property
    def uncommitted_records(self) -> int | None:
        if self.records_per_second is None:
            return None
        window = (self.commit_interval_ms + LISTENER_POLL_MS) / 1000
        return math.ceil(self.records_per_second * window)

    @property
    def redone_records(self) -> int:
        bounds = [self.above_commits]
        if self.uncommitted_records is not None:
            bounds.append(self.unfinished_records + self.uncommitted_records)
        return min(b for b in bounds if b is not None)

    @property
    def deliveries(self) -> int:
        return self.channels * self.redone_records

    def __str__(self) -> str:
        terms = []
        if self.records_per_second is not None:
            terms.append(
                f"{self.partitions} partitions x ({self.max_in_flight_per_partition} + "
                f"{self.max_poll_records} - 1) + {self.records_per_second:.0f} records/s x "
                f"({self.commit_interval_ms} + {LISTENER_POLL_MS}) ms"
            )
        if self.above_commits is not None:
            terms.append(f"{self.above_commits} records above the commits")
        redone = terms[0] if len(terms) == 1 else f"min({', '.join(terms)})"
        return f"{self.deliveries} = {self.channels} channels x {redone}"
