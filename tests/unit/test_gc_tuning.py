"""`run` tunes the garbage collector before the service starts (figures in consumer/running.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.running import tune_gc

ALLOCATIONS = 200_000  # container objects, as a burst of deliveries would allocate


@pytest.fixture
def restored_gc() -> Iterator[tuple[int, int, int]]:
    """The collector's settings before the test (the interpreter's own), restored after."""
    before = gc.get_threshold()
    yield before
    gc.unfreeze()
    gc.set_threshold(*before)


def young_collections_while_allocating() -> int:
    """How many generation-0 collections allocating ALLOCATIONS small lists sets off."""
    collections = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal collections
        collections += phase == "start" and info["generation"] == 0

    gc.callbacks.append(count)
    try:
        kept = [[] for _ in range(ALLOCATIONS)]  # kept alive: each one counts toward gen 0
    finally:
        gc.callbacks.remove(count)
    del kept
    return collections


def test_start_up_objects_are_frozen_and_collections_are_rarer(
    restored_gc: tuple[int, int, int],
) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    before = young_collections_while_allocating()
    tune_gc()
    assert gc.get_freeze_count() > 1000  # modules, classes, config: all start-up built
    young, _, full = gc.get_threshold()
    default_young, _, default_full = restored_gc
    assert young > default_young
    assert full >= default_full
    after = young_collections_while_allocating()
    # Measured, not read back: the same allocations set off far fewer young collections.
    assert before >= 10, f"{before} young collections before tuning: the probe measures nothing"
    assert after * 10 <= before, f"{after} young collections tuned, {before} before"
