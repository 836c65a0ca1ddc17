"""How many duplicates a failure may cost, from the configuration and one measured rate.

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

Each redone record is sent again to each channel of its event: the duplicates are at most
`channels` times the redone records. A partition whose commit already reached its end offset
has nothing to redo and counts for nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LISTENER_POLL_MS = 100  # Listener.run: getmany(timeout_ms=100) between commit checks


@dataclass(frozen=True, slots=True)
class DuplicateBound:
    channels: int  # per event
    partitions: int  # owned by what failed, with records not yet committed
    max_in_flight_per_partition: int
    max_poll_records: int
    commit_interval_ms: int
    records_per_second: float  # finished by what failed, measured just before the failure

    @property
    def unfinished_records(self) -> int:
        return self.partitions * (self.max_in_flight_per_partition + self.max_poll_records - 1)

    @property
    def uncommitted_records(self) -> int:
        window = (self.commit_interval_ms + LISTENER_POLL_MS) / 1000
        return math.ceil(self.records_per_second * window)

    @property
    def deliveries(self) -> int:
        return self.channels * (self.unfinished_records + self.uncommitted_records)

    def __str__(self) -> str:
        return (
            f"{self.deliveries} = {self.channels} channels x ("
            f"{self.partitions} partitions x ({self.max_in_flight_per_partition} + "
            f"{self.max_poll_records} - 1) + {self.records_per_second:.0f} records/s x "
            f"({self.commit_interval_ms} + {LISTENER_POLL_MS}) ms)"
        )
