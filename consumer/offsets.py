"""Which offsets of each partition are still unfinished, and so how far a commit may go.

Work finishes out of order; a commit says "everything before N is done", so the committable
offset of a partition is its lowest unfinished offset, or one past the last offset seen.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionState:
    # Min-heap of unfinished offsets with lazy deletion: finishing is O(1) amortised and the
    # lowest unfinished offset is found without scanning thousands of in-flight records.
    _heap: list[int] = field(default_factory=list)
    _finished: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None  # what was last committed

    def started(self, offset: int) -> None:
        heapq.heappush(self._heap, offset)
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def finished(self, offset: int) -> None:
        self._finished.add(offset)

    @property
    def unfinished(self) -> int:
        return len(self._heap) - len(self._finished)

    def committable(self) -> int | None:
        heap, done = self._heap, self._finished
        while heap and heap[0] in done:
            done.discard(heapq.heappop(heap))
        return heap[0] if heap else self.next_offset

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when nothing moved since the last commit."""
        offset = self.committable()
        return None if offset is None or offset == self.committed else offset


class OffsetTracker:
    """Per-partition states keyed by (topic, partition); knows nothing of Kafka clients."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionState] = {}

    def assign(self, key: tuple[str, int]) -> None:
        self._partitions.setdefault(key, PartitionState())

    def revoke(self, key: tuple[str, int]) -> None:
        # Deliveries still running for it finish into the void; the next owner redoes them.
        self._partitions.pop(key, None)

    def state(self, key: tuple[str, int]) -> PartitionState:
        """Completions go to the state object itself, so work finishing after a revoke (and a
        later re-assignment) can never mark offsets of the new assignment."""
        return self._partitions.setdefault(key, PartitionState())

    def unfinished(self, key: tuple[str, int]) -> int:
        state = self._partitions.get(key)
        return 0 if state is None else state.unfinished

    def total_unfinished(self) -> int:
        return sum(state.unfinished for state in self._partitions.values())

    def to_commit(self, keys: list[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        chosen = (
            self._partitions
            if keys is None
            else {k: self._partitions[k] for k in keys if k in self._partitions}
        )
        out = {}
        for key, state in chosen.items():
            offset = state.to_commit()
            if offset is not None:
                out[key] = offset
        return out

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        for key, offset in offsets.items():
            state = self._partitions.get(key)
            if state is not None:
                state.committed = offset
