"""The status page's HTML: every value escaped, no scripts or outside assets, refreshing."""

from __future__ import annotations

import re
from dataclasses import replace

from consumer.health import Verdict
from consumer.hooks.status import AttributesStatus, ChannelStatus, PartitionStatus, StatusSnapshot
from consumer.status_page import REFRESH_SECONDS, ServiceInfo, render

HOSTILE = '<script>alert("x")</script>&"'
INFO = ServiceInfo("0.1.0", "webhook-consumer", "user-threshold-events")


def channel(name: str, **fields: object) -> ChannelStatus:
    values: dict[str, object] = {
        "name": name,
        "circuit": "closed",
        "delivered": 1200,
        "attempts": 1210,
        "success_rate": 0.9917,
        "p50": 0.0123,
        "p99": 1.5,
        "retried": 3,
        "waited": 0,
        "queued": 4,
        "in_flight": 2,
        "dead_letters": (("http_status", 7),),
        "last_success": 990.0,
        **fields,
    }
    return ChannelStatus(**values)  # type: ignore[arg-type]


def snapshot(*channels: ChannelStatus) -> StatusSnapshot:
    return StatusSnapshot(
        uptime=3725.0,
        channels=channels,
        partitions=(PartitionStatus(0, 12), PartitionStatus(3, None)),
        consumed_input=5000,
        consumed_delay=10,
        commits=120,
        commit_failures=0,
        unrouted_dead_letters=(("invalid_event", 2),),
    )


def test_rows_show_the_figures_people_read() -> None:
    page = render(snapshot(channel("coupon-system")), INFO, Verdict(True, "ready"), now=1000.0)
    row = re.search(r'<tr class="channel" data-channel="coupon-system">.*?</tr>', page)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    text = [re.sub(r"<[^>]+>", "", cell) for cell in cells]
    assert text == [
        "coupon-system",
        "closed",
        "1,200",
        "1,210",
        "99.2%",
        "12 ms",
        "1.50 s",
        "3",
        "0",
        "4",
        "2",
        "http_status 7",
        "10s ago",
    ]
    assert 'id="readiness">ready<' in page
    assert "1h 2m" in page  # uptime
    assert '<tr class="partition" data-partition="3">' in page


def test_every_value_is_escaped() -> None:
    info = ServiceInfo("0.1.0", HOSTILE, HOSTILE)
    hostile = channel(HOSTILE, circuit=HOSTILE, dead_letters=((HOSTILE, 1),))
    page = render(snapshot(hostile), info, Verdict(False, HOSTILE), now=1000.0)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;" in page


def test_a_page_with_no_scripts_and_nothing_from_elsewhere_that_refreshes_itself() -> None:
    page = render(snapshot(channel("a")), INFO, Verdict(False, "waiting for the group"))
    assert f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' in page
    assert "<script" not in page
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["/metrics", "/healthz", "/readyz"]
    assert "url(" not in page
    assert 'id="readiness">not ready<' in page
    assert "waiting for the group" in page


def test_a_quiet_channel_shows_dashes_not_zeros() -> None:
    quiet = channel(
        "quiet", attempts=0, delivered=0, success_rate=None, p50=None, p99=None, last_success=None
    )
    page = render(snapshot(quiet), INFO, Verdict(True, "ready"))
    row = re.search(r'data-channel="quiet">.*?</tr>', page)
    assert row is not None
    assert '<td class="n success">–</td>' in row.group(0)
    assert '<td class="n p50">–</td>' in row.group(0)
    assert '<td class="last-success">never</td>' in row.group(0)


def test_a_disabled_channel_says_so_with_who_when_and_why() -> None:
    disabled = channel("gone", disabled=f"by receiver at 2026-11-11 00:00:05 UTC: {HOSTILE}")
    page = render(snapshot(disabled), INFO, Verdict(True, "ready"), now=1000.0)
    row = re.search(r'<tr class="channel" data-channel="gone">.*?</tr>', page, re.S)
    assert row is not None
    assert '<span class="badge circuit-disabled">disabled</span>' in row.group(0)
    assert "disabled by receiver at 2026-11-11 00:00:05 UTC: &lt;script&gt;" in row.group(0)
    assert "<script" not in page


def test_expired_deliveries_and_events_ahead_of_the_clock() -> None:
    snap = replace(snapshot(channel("a")), expired=31, events_in_future=2)
    page = render(snap, INFO, Verdict(True, "ready"), now=1000.0)
    assert 'id="expired">31<' in page
    assert 'id="in-future">2<' in page
    assert 'id="attributes"' not in page  # no attributes topic configured


def test_the_attributes_follower_while_it_catches_up() -> None:
    follower = AttributesStatus(
        topic=HOSTILE, caught_up=False, lag=123_456, written=5_000, superseded=3, skipped=()
    )
    snap = replace(snapshot(channel("a")), attributes=follower)
    page = render(snap, INFO, Verdict(False, "waiting"), now=1000.0)
    assert 'id="attributes-state">catching up<' in page
    assert 'id="attributes-lag">123,456<' in page
    assert 'id="attributes-written">5,000<' in page
    assert 'id="attributes-superseded">3<' in page
    assert "<script" not in page  # the topic name is escaped like every value
    caught_up = replace(follower, caught_up=True, lag=None, skipped=(("not_json", 4),))
    page = render(replace(snap, attributes=caught_up), INFO, Verdict(True, "ready"))
    assert 'id="attributes-state">caught up<' in page
    assert 'id="attributes-lag">–<' in page
    assert "not_json <b>4</b>" in page
