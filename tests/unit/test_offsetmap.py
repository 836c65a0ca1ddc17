"""Finished offsets above a commit point, encoded into and decoded from commit metadata."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import offsetmap

BASE = 1_000_000


@given(
    base=st.integers(min_value=0, max_value=2**62),
    gaps=st.lists(st.integers(min_value=1, max_value=300), max_size=400),
)
def test_what_fits_comes_back_exactly(base: int, gaps: list[int]) -> None:
    finished, offset = set(), base
    for gap in gaps:
        offset += gap
        finished.add(offset)
    text, truncated = offsetmap.encode(base, finished, 4096)
    if not truncated:
        assert offsetmap.decode(text, base) == finished
    assert len(text.encode()) <= 4096


@settings(deadline=None, max_examples=30)  # CPU-bound: no per-example deadline, few examples
@given(density=st.floats(min_value=0.05, max_value=1.0), seed=st.integers())
def test_too_many_to_fit_keeps_the_lowest_ones(density: float, seed: int) -> None:
    rng = random.Random(seed)
    finished = {BASE + 1 + i for i in range(8_000) if rng.random() < density}
    text, truncated = offsetmap.encode(BASE, finished, 512)
    kept = offsetmap.decode(text, BASE)
    assert len(text.encode()) <= 512
    assert kept <= finished
    if truncated:
        assert kept, "at least a prefix fits"
        highest = max(kept)
        assert {o for o in finished if o <= highest} == kept  # a prefix, no holes
    else:
        assert kept == finished


def test_offsets_at_or_below_the_base_are_not_written() -> None:
    text, _ = offsetmap.encode(BASE, {BASE - 5, BASE, BASE + 2}, 4096)
    assert offsetmap.decode(text, BASE) == {BASE + 2}
    assert offsetmap.encode(BASE, {BASE - 1}, 4096) == ("", False)


def test_long_runs_are_small() -> None:
    text, truncated = offsetmap.encode(BASE, set(range(BASE + 2, BASE + 500_002)), 4096)
    assert not truncated
    assert len(text) < 60


@pytest.mark.parametrize(
    "metadata",
    ["", None, "something else", "wc1r:999:AAAA", "wc1x:1000000:eJwDAAAAAAE=", "wc1r:1000000:!!"],
)
def test_foreign_stale_or_broken_metadata_means_nothing(metadata: str | None) -> None:
    assert offsetmap.decode(metadata, BASE) == set()


def test_a_large_map_is_cut_to_the_broker_limit_keeping_its_lowest_offsets() -> None:
    """A head stuck for long with 100,000 scattered finished offsets behind it."""
    rng = random.Random(7)
    finished = {BASE + 1 + i for i in range(200_000) if rng.random() < 0.5}
    text, truncated = offsetmap.encode(BASE, finished, 4096)
    kept = offsetmap.decode(text, BASE)
    assert truncated
    assert len(text) <= 4096
    assert len(kept) > 1000
    highest = max(kept)
    assert kept == {o for o in finished if o <= highest}
