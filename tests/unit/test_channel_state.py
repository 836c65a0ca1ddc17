"""The channel-state view: records applied in the topic's order, a local change held until read
back, reset requests acted upon only once live, and the observer told of every change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from consumer.channels import RECEIVER, ChannelRecord, ChannelState, RecordKind
from consumer.channels.records import decode
from consumer.hooks.logs import TransitionLog
from consumer.observer import ChannelStateChanged, Details, Observer
from consumer.outcome import from_response


def state_record(channel: str, disabled: bool, by: str = "ops@host") -> ChannelRecord:
    return ChannelRecord(
        kind=RecordKind.STATE, channel=channel, by=by, disabled=disabled, reason="maintenance"
    )


def test_records_apply_in_order_and_the_observer_hears_each_change() -> None:
    heard: list[Details] = []
    state = ChannelState(Observer([heard.append]))
    first = state_record("a", True)
    state.apply(first.key(), first)
    assert state.disabled("a") is not None
    later = state_record("a", False)
    state.apply(later.key(), later)
    assert state.disabled("a") is None
    assert [(d.channel, d.disabled) for d in heard if isinstance(d, ChannelStateChanged)] == [
        ("a", True),
        ("a", False),
    ]


def test_a_410_disables_at_once_and_is_published_once() -> None:
    published: list[ChannelRecord] = []
    state = ChannelState(publish=published.append)
    gone = from_response(410, None, "decommissioned")
    state.gone("a", gone)
    state.gone("a", gone)  # every request in flight may answer 410 too
    disabled = state.disabled("a")
    assert disabled is not None
    assert disabled.by == RECEIVER
    assert disabled.status == 410
    assert "410 Gone: decommissioned" in disabled.reason
    assert len(published) == 1
    assert published[0].key() == "state/a"


def test_a_change_made_here_holds_until_its_own_record_is_read_back() -> None:
    state = ChannelState(publish=lambda record: None)
    older = state_record("a", False)  # written by an operator just before our 410
    state.gone("a", from_response(410, None, ""))
    [ours] = [state.state_of("a")]
    assert ours is not None
    state.apply(older.key(), older)  # still on its way when we disabled: it must not undo it
    assert state.disabled("a") is not None
    state.apply(ours.key(), ours)
    assert state.disabled("a") is not None
    enabled = state_record("a", False)  # a later enable, from anyone, rules again
    state.apply(enabled.key(), enabled)
    assert state.disabled("a") is None


def test_circuit_resets_are_acted_upon_only_once_live() -> None:
    resets: list[str] = []
    state = ChannelState(on_reset=resets.append)
    old = ChannelRecord(kind=RecordKind.CIRCUIT_RESET, channel="a", by="ops@host")
    state.apply(old.key(), old)  # history, read while catching up
    state.caught_up()
    new = ChannelRecord(kind=RecordKind.CIRCUIT_RESET, channel="b", by="ops@host")
    state.apply(new.key(), new)
    assert resets == ["b"]


def test_circuit_reports_are_kept_per_replica_and_removed_by_a_tombstone() -> None:
    state = ChannelState()
    one = ChannelRecord(kind=RecordKind.CIRCUIT, channel="a", by="host:1", circuit="open")
    two = ChannelRecord(kind=RecordKind.CIRCUIT, channel="a", by="host:2", circuit="closed")
    state.apply(one.key(), one)
    state.apply(two.key(), two)
    assert set(state.circuits) == {"circuit/a/host:1", "circuit/a/host:2"}
    state.apply("circuit/a/host:1", None)
    assert set(state.circuits) == {"circuit/a/host:2"}


def test_a_record_round_trips_and_junk_is_not_a_record() -> None:
    record = ChannelRecord(
        kind=RecordKind.STATE,
        channel="a",
        by=RECEIVER,
        disabled=True,
        reason="r",
        status=410,
        at=datetime(2026, 11, 11, tzinfo=UTC) + timedelta(seconds=1),
    )
    assert decode(record.encode()) == record
    assert decode(b"not json") is None
    assert decode(b'{"kind": "other"}') is None


def test_the_description_says_who_when_and_why() -> None:
    state = ChannelState()
    record = state_record("a", True)
    state.apply(record.key(), record)
    disabled = state.disabled("a")
    assert disabled is not None
    text = disabled.describe()
    assert "ops@host" in text
    assert "maintenance" in text
    assert str(record.at.year) in text


def test_every_change_is_one_log_line_with_who_and_why() -> None:
    published: list[ChannelRecord] = []
    state = ChannelState(Observer([TransitionLog(debug=False)]), published.append)
    with capture_logs() as logs:
        state.gone("a", from_response(410, None, "decommissioned"))
        state.apply(published[0].key(), published[0])  # read back: no second line
        enabled = state_record("a", False)
        state.apply(enabled.key(), enabled)
    assert [(x["event"], x["log_level"], x["by"], x["channel"]) for x in logs] == [
        ("channel.disabled", "warning", RECEIVER, "a"),
        ("channel.enabled", "info", "ops@host", "a"),
    ]
    assert logs[0]["status"] == 410
    assert "410 Gone: decommissioned" in logs[0]["reason"]
