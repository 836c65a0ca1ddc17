"""`run` tunes the garbage collector before the service starts (figures in consumer/cli.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.cli import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_collections_are_rarer(restored_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 1000  # modules, classes, config: all start-up built
    assert gc.get_threshold() == GC_THRESHOLDS
    young, _, full = GC_THRESHOLDS  # rarer than CPython's defaults (700, 10, 10)
    assert young > 700
    assert full > 10
