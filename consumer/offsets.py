"""Which offsets of each partition are still unfinished, and so how far a commit may go.

Work finishes out of order; a commit says "everything before N is done", so the committable
offset of a partition is its lowest unfinished offset, or one past the last offset seen. The
offsets finished above it travel in the commit's metadata (`offsetmap`), so a restart skips
them instead of doing them twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from . import offsetmap


@dataclass(frozen=True, slots=True)
class Commit:
    offset: int
    metadata: str  # the finished offsets above it; "" when there are none
    truncated: bool  # the metadata had to leave some out to fit
    version: int  # which state of the partition it describes


@dataclass(slots=True)
class PartitionState:
    """One owned partition: what was read and is not finished. It is the `Owner` of the
    tickets of its records, so work finishing after a revoke can never mark offsets of a
    later assignment of the same partition."""

    # Min-heap of unfinished offsets with lazy deletion: finishing is O(1) amortised and the
    # lowest unfinished offset is found without scanning thousands of in-flight records.
    _heap: list[int] = field(default_factory=list)
    _finished: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None  # what was last committed
    waiting: int = 0  # read ahead, not handed to a handler yet (delay records not yet due)
    waiting_bytes: int = 0  # their values' size: a record may carry a bundle of deliveries
    revoked: bool = False
    on_progress: Callable[[], None] | None = None
    skip: set[int] = field(default_factory=set)  # finished by an earlier owner, per metadata
    _version: int = 0  # bumped by every finish: what the commit metadata describes
    _committed_version: int = 0

    def started(self, offset: int) -> None:
        heapq.heappush(self._heap, offset)
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self._finished.add(offset)
        self._version += 1
        if self.on_progress is not None:
            self.on_progress()

    def resume_from(self, committed: int, metadata: str | None) -> None:
        """What the last owner committed: its metadata names offsets already finished."""
        self.committed = committed
        self.skip = offsetmap.decode(metadata, committed)

    def take_skipped(self, offset: int) -> bool:
        """Whether a record just read was finished by an earlier owner: then it counts as
        read and finished here, and is not done again."""
        if offset not in self.skip:
            return False
        self.skip.discard(offset)
        self.started(offset)
        self.finished(offset)
        return True

    @property
    def unfinished(self) -> int:
        return len(self._heap) - len(self._finished)

    @property
    def in_flight(self) -> int:
        """Unfinished and handed to a handler: what a drain or a revoke waits for."""
        return self.unfinished - self.waiting

    def committable(self) -> int | None:
        heap, done = self._heap, self._finished
        while heap and heap[0] in done:
            done.discard(heapq.heappop(heap))
        return heap[0] if heap else self.next_offset

    def to_commit(self, metadata_limit: int = 4096) -> Commit | None:
        """What to commit now, or None when nothing changed since the last commit."""
        offset = self.committable()
        if offset is None or (
            offset == self.committed and self._version == self._committed_version
        ):
            return None
        # What an earlier owner finished and this one has not read yet stays named: a crash
        # before reading it must not make the next owner redo it.
        finished = self._finished | self.skip if self.skip else self._finished
        metadata, truncated = offsetmap.encode(offset, finished, metadata_limit)
        return Commit(offset, metadata, truncated, self._version)

    def was_committed(self, commit: Commit) -> None:
        self.committed = commit.offset
        self._committed_version = max(self._committed_version, commit.version)


class OffsetTracker:
    """Per-partition states keyed by (topic, partition); knows nothing of Kafka clients."""

    def __init__(self, on_progress: Callable[[], None] | None = None) -> None:
        self._partitions: dict[tuple[str, int], PartitionState] = {}
        self._on_progress = on_progress  # told whenever any record finished

    def assign(self, key: tuple[str, int]) -> PartitionState:
        return self.state(key)

    def revoke(self, key: tuple[str, int]) -> None:
        # Work still queued for it is dropped by the lanes (its tickets say so); requests
        # already out finish into the void. The next owner redoes what was unfinished.
        state = self._partitions.pop(key, None)
        if state is not None:
            state.revoked = True

    def state(self, key: tuple[str, int]) -> PartitionState:
        state = self._partitions.get(key)
        if state is None:
            state = self._partitions[key] = PartitionState(on_progress=self._on_progress)
        return state

    def committed_offset(self, key: tuple[str, int]) -> int | None:
        """What this process last committed for the partition; None if nothing yet."""
        state = self._partitions.get(key)
        return None if state is None else state.committed

    def unfinished(self, key: tuple[str, int]) -> int:
        state = self._partitions.get(key)
        return 0 if state is None else state.unfinished

    def in_flight(self, keys: list[tuple[str, int]] | None = None) -> int:
        if keys is None:
            return sum(state.in_flight for state in self._partitions.values())
        return sum(self._partitions[k].in_flight for k in keys if k in self._partitions)

    def total_unfinished(self) -> int:
        return sum(state.unfinished for state in self._partitions.values())

    def to_commit(
        self, keys: list[tuple[str, int]] | None = None, metadata_limit: int = 4096
    ) -> dict[tuple[str, int], Commit]:
        chosen = (
            self._partitions
            if keys is None
            else {k: self._partitions[k] for k in keys if k in self._partitions}
        )
        out = {}
        for key, state in chosen.items():
            commit = state.to_commit(metadata_limit)
            if commit is not None:
                out[key] = commit
        return out

    def committed(self, commits: dict[tuple[str, int], Commit]) -> None:
        for key, commit in commits.items():
            state = self._partitions.get(key)
            if state is not None:
                state.was_committed(commit)
