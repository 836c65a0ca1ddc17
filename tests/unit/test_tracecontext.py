"""W3C Trace Context read from a record's headers: valid ones continue, anything else is ignored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.tracecontext import MAX_TRACESTATE, TraceContext, from_headers, new_span_id, parse

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_continues_under_a_new_span_of_ours() -> None:
    trace = from_headers([("traceparent", PARENT.encode()), ("tracestate", b"congo=t61rcWkgMzE")])
    assert trace is not None
    assert (trace.trace_id, trace.parent_id, trace.flags) == (TRACE, SPAN, "01")
    assert trace.span_id != SPAN
    assert len(trace.span_id) == 16
    assert trace.state == "congo=t61rcWkgMzE"
    assert trace.sampled


def test_the_request_header_keeps_the_trace_and_flags_with_the_given_span() -> None:
    trace = TraceContext(TRACE, "1111111111111111", "00")
    assert trace.child("2222222222222222") == f"00-{TRACE}-2222222222222222-00"
    assert trace.traceparent == f"00-{TRACE}-1111111111111111-00"
    assert not trace.sampled


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-" + TRACE + "-" + SPAN,  # no flags
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # the forbidden version
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper case
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse(value) is None
    assert from_headers([("traceparent", value.encode())]) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    trace = parse(f"01-{TRACE}-{SPAN}-01-whatever-comes-next")
    assert trace is not None
    assert trace.trace_id == TRACE


def test_no_header_or_bytes_that_are_not_ascii_mean_no_trace() -> None:
    assert from_headers(None) is None
    assert from_headers([("other", b"x")]) is None
    assert from_headers([("traceparent", "00-é".encode())]) is None


@pytest.mark.parametrize(
    "state",
    [
        "a=b\r\nX-Injected: 1",  # would split our request's headers
        "a=\x00b",
        "x" * (MAX_TRACESTATE + 1),
        "",
    ],
)
def test_a_tracestate_that_could_not_go_into_a_header_is_dropped(state: str) -> None:
    trace = parse(PARENT, state)
    assert trace is not None
    assert trace.state is None


def test_the_first_of_repeated_headers_wins() -> None:
    other = f"00-{'1' * 32}-{SPAN}-01"
    trace = from_headers([("traceparent", PARENT.encode()), ("traceparent", other.encode())])
    assert trace is not None
    assert trace.trace_id == TRACE


@given(st.binary(max_size=80))
def test_any_header_bytes_give_a_trace_or_none_never_an_error(value: bytes) -> None:
    trace = from_headers([("traceparent", value), ("tracestate", value)])
    assert trace is None or len(trace.trace_id) == 32


def test_span_ids_are_fresh_and_never_zero() -> None:
    spans = {new_span_id() for _ in range(1000)}
    assert len(spans) == 1000
    assert "0" * 16 not in spans


def test_a_tracestate_that_is_not_ascii_costs_only_itself() -> None:
    trace = from_headers([("traceparent", PARENT.encode()), ("tracestate", "a=é".encode())])
    assert trace is not None
    assert trace.trace_id == TRACE
    assert trace.state is None
