"""How far a commit may go when records finish out of order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer import offsetmap
from consumer.offsets import Commit, OffsetTracker, PartitionState

KEY = ("user-threshold-events", 0)


def offsets_of(commits: dict[tuple[str, int], Commit]) -> dict[tuple[str, int], int]:
    return {key: commit.offset for key, commit in commits.items()}


@given(
    base=st.integers(min_value=0, max_value=2**62),
    count=st.integers(min_value=1, max_value=60),
    data=st.data(),
)
def test_commit_never_passes_an_unfinished_offset(
    base: int, count: int, data: st.DataObject
) -> None:
    tracker = OffsetTracker()
    tracker.assign(KEY)
    state = tracker.state(KEY)
    offsets = list(range(base, base + count))
    for offset in offsets:
        state.started(offset)
    unfinished = set(offsets)
    for offset in data.draw(st.permutations(offsets), label="completion order"):
        state.finished(offset)
        unfinished.discard(offset)
        if data.draw(st.booleans(), label="commit now"):
            to_commit = tracker.to_commit()
            if KEY in to_commit:
                # Property 1: exactly the lowest unfinished offset, never beyond it.
                commit = to_commit[KEY]
                assert commit.offset == min(unfinished, default=base + count)
                # Property 3: its metadata names exactly the finished offsets above it.
                above = {o for o in offsets if o > commit.offset and o not in unfinished}
                assert offsetmap.decode(commit.metadata, commit.offset) == above
                tracker.committed(to_commit)
    # Property 2: once everything is finished, everything is committable.
    assert state.committable() == base + count
    assert state.unfinished == 0
    final = tracker.to_commit()
    assert [c.offset for c in final.values()] in ([base + count], [])
    assert final or state.committed == base + count


@given(
    finished_first=st.sets(st.integers(min_value=0, max_value=19)),
    more=st.integers(min_value=1, max_value=10),
)
def test_new_batches_arriving_do_not_skip_unfinished(finished_first: set[int], more: int) -> None:
    state = PartitionState()
    for offset in range(20):
        state.started(offset)
    for offset in finished_first:
        state.finished(offset)
    for offset in range(20, 20 + more):
        state.started(offset)
    lowest = min(set(range(20)) - finished_first, default=20)
    assert state.committable() == lowest


def test_empty_partition_has_nothing_to_commit() -> None:
    state = PartitionState()
    assert state.committable() is None
    assert state.to_commit() is None
    tracker = OffsetTracker()
    tracker.assign(KEY)
    assert tracker.to_commit() == {}


def test_out_of_order_completion() -> None:
    state = PartitionState()
    for offset in (100, 101, 102):
        state.started(offset)
    state.finished(102)
    assert state.committable() == 100
    state.finished(100)
    assert state.committable() == 101
    state.finished(101)
    assert state.committable() == 103


def test_gaps_in_offsets_are_skipped() -> None:
    # Compacted topics and transaction markers leave holes; they must not block commits.
    state = PartitionState()
    for offset in (5, 9):
        state.started(offset)
    state.finished(5)
    assert state.committable() == 9
    state.finished(9)
    assert state.committable() == 10


def test_to_commit_is_none_when_unchanged_since_commit() -> None:
    tracker = OffsetTracker()
    state = tracker.state(KEY)
    state.started(10)
    state.finished(10)
    first = tracker.to_commit()
    assert offsets_of(first) == {KEY: 11}
    tracker.committed(first)
    assert tracker.to_commit() == {}
    assert state.to_commit() is None
    state.started(11)
    assert tracker.to_commit() == {}  # 11 is unfinished: still "commit 11", already done
    state.started(12)
    state.finished(12)  # 11 holds the commit, but 12's being done must be said
    [commit] = tracker.to_commit().values()
    assert (commit.offset, offsetmap.decode(commit.metadata, 11)) == (11, {12})
    state.finished(11)
    assert offsets_of(tracker.to_commit()) == {KEY: 13}


def test_to_commit_only_for_requested_partitions() -> None:
    tracker = OffsetTracker()
    other = ("user-threshold-events", 1)
    for key in (KEY, other):
        tracker.state(key).started(0)
        tracker.state(key).finished(0)
    assert offsets_of(tracker.to_commit([other, ("unknown", 9)])) == {other: 1}


def test_revoke_forgets_the_partition() -> None:
    tracker = OffsetTracker()
    state = tracker.state(KEY)
    state.started(3)
    state.started(4)
    state.finished(4)
    assert tracker.unfinished(KEY) == 1
    tracker.revoke(KEY)
    assert tracker.unfinished(KEY) == 0
    assert tracker.total_unfinished() == 0
    assert tracker.to_commit() == {}
    # A late commit result for a revoked partition is ignored.
    tracker.committed({KEY: Commit(99, "", False, 1)})
    assert tracker.to_commit() == {}


def test_completions_after_revoke_do_not_touch_the_new_assignment() -> None:
    tracker = OffsetTracker()
    old = tracker.state(KEY)
    old.started(5)
    tracker.revoke(KEY)
    tracker.assign(KEY)
    new = tracker.state(KEY)
    assert new is not old
    new.started(5)
    new.started(6)
    old.finished(5)  # a delivery of the previous assignment finishing late
    assert tracker.unfinished(KEY) == 2
    assert offsets_of(tracker.to_commit()) == {KEY: 5}


def test_assign_keeps_an_existing_state() -> None:
    tracker = OffsetTracker()
    state = tracker.state(KEY)
    state.started(1)
    tracker.assign(KEY)
    assert tracker.state(KEY) is state
    assert tracker.unfinished(KEY) == 1


def test_a_new_owner_skips_what_the_last_one_finished() -> None:
    last = PartitionState()
    for offset in range(100, 110):
        last.started(offset)
    for offset in (101, 102, 105, 109):
        last.finished(offset)
    commit = last.to_commit()
    assert commit is not None
    assert commit.offset == 100
    after_restart = PartitionState()
    after_restart.resume_from(commit.offset, commit.metadata)
    read_again = [o for o in range(100, 110) if not after_restart.take_skipped(o)]
    assert read_again == [100, 103, 104, 106, 107, 108]
    assert after_restart.skip == set()
    for offset in read_again:
        after_restart.started(offset)
        after_restart.finished(offset)
    assert after_restart.committable() == 110


def test_a_commit_before_reading_what_the_last_owner_finished_still_names_it() -> None:
    last = PartitionState()
    for offset in range(100, 110):
        last.started(offset)
    for offset in (101, 102, 105, 109):
        last.finished(offset)
    commit = last.to_commit()
    assert commit is not None
    after_restart = PartitionState()
    after_restart.resume_from(commit.offset, commit.metadata)
    for offset in (100, 101):  # read so far: 101 skipped, 100 redone
        if not after_restart.take_skipped(offset):
            after_restart.started(offset)
    # Crashes after this commit: the next owner must still skip 102, 105 and 109.
    again = after_restart.to_commit()
    assert again is not None
    assert again.offset == 100
    assert offsetmap.decode(again.metadata, again.offset) == {101, 102, 105, 109}


def test_metadata_of_another_tool_is_ignored() -> None:
    state = PartitionState()
    state.resume_from(42, "written by kafka-consumer-groups")
    assert state.skip == set()
