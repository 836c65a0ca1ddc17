"""The status page at / of the admin port: one server-rendered HTML document, no scripts and no
external assets, reloading itself every few seconds. Every value is HTML-escaped (channel
names come from the config)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from html import escape

from .health import Verdict
from .hooks.status import AttributesStatus, ChannelStatus, PartitionStatus, StatusSnapshot

REFRESH_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    version: str
    group: str
    topic: str


def render(
    snapshot: StatusSnapshot, info: ServiceInfo, ready: Verdict, now: float | None = None
) -> str:
    now = time.time() if now is None else now
    state = "ready" if ready.ok else "not-ready"
    rows = "".join(_channel_row(c, now) for c in snapshot.channels)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>webhook-consumer · {_e(info.group)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>webhook-consumer <span class="muted">{_e(info.version)}</span></h1>
<p class="facts">
<span class="badge {state}" id="readiness">{"ready" if ready.ok else "not ready"}</span>
{"" if ready.ok else f'<span class="reason">{_e(ready.reason)}</span>'}
<span>group <b>{_e(info.group)}</b></span>
<span>topic <b>{_e(info.topic)}</b></span>
<span>up <b id="uptime">{_duration(snapshot.uptime)}</b></span>
</p>
</header>
<main>
<section>
<h2>Channels <span class="muted">last minute, except where said</span></h2>
<table id="channels">
<thead><tr>
<th>channel</th><th>circuit</th><th class="n">delivered</th><th class="n">attempts</th>
<th class="n">success</th><th class="n">p50</th><th class="n">p99</th>
<th class="n">retried</th><th class="n">parked</th><th class="n">queued</th>
<th class="n">in flight</th><th>dead letters <span class="muted">since start</span></th>
<th>last success</th>
</tr></thead>
<tbody>{rows}</tbody>
</table>
</section>
<section class="pair">
<div>
<h2>Input partitions <span class="muted">owned by this member</span></h2>
{_partitions(snapshot.partitions)}
</div>
<div>
<h2>Kafka <span class="muted">last minute</span></h2>
<table id="kafka">
<tr><th>records consumed, input</th><td class="n">{snapshot.consumed_input:,}</td></tr>
<tr><th>records consumed, delay topics</th><td class="n">{snapshot.consumed_delay:,}</td></tr>
<tr><th>commits</th><td class="n">{snapshot.commits:,}</td></tr>
<tr><th>failed commits <span class="muted">since start</span></th>
<td class="n">{snapshot.commit_failures:,}</td></tr>
<tr><th>dead letters of records no channel took
<span class="muted">since start</span></th>
<td>{_reasons(snapshot.unrouted_dead_letters)}</td></tr>
<tr><th>deliveries expired (stale, not sent) <span class="muted">since start</span></th>
<td class="n" id="expired">{snapshot.expired:,}</td></tr>
<tr><th>events dated ahead of this clock <span class="muted">since start</span></th>
<td class="n" id="in-future">{snapshot.events_in_future:,}</td></tr>
</table>
</div>
</section>
{_attributes(snapshot.attributes)}
</main>
<footer class="muted">Reloads every {REFRESH_SECONDS} s · <a href="/metrics">/metrics</a> ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></footer>
</body>
</html>
"""


def _channel_row(c: ChannelStatus, now: float) -> str:
    success = "–" if c.success_rate is None else f"{c.success_rate:.1%}"
    low = c.success_rate is not None and c.success_rate < 0.99
    last = "never" if c.last_success is None else f"{_duration(now - c.last_success)} ago"
    if c.disabled is None:
        name, state = _e(c.name), c.circuit
    else:
        name = f'{_e(c.name)}<div class="disabled reason">disabled {_e(c.disabled)}</div>'
        state = "disabled"
    return (
        f'<tr class="channel" data-channel="{_e(c.name)}">'
        f'<td class="name">{name}</td>'
        f'<td class="circuit"><span class="badge circuit-{_e(state)}">'
        f"{_e(state.replace('_', '-'))}</span></td>"
        f'<td class="n delivered">{c.delivered:,}</td>'
        f'<td class="n attempts">{c.attempts:,}</td>'
        f'<td class="n success{" low" if low else ""}">{success}</td>'
        f'<td class="n p50">{_seconds(c.p50)}</td>'
        f'<td class="n p99">{_seconds(c.p99)}</td>'
        f'<td class="n retried">{c.retried:,}</td>'
        f'<td class="n parked">{c.waited:,}</td>'
        f'<td class="n queued">{c.queued:,}</td>'
        f'<td class="n in-flight">{c.in_flight:,}</td>'
        f'<td class="dead-letters">{_reasons(c.dead_letters)}</td>'
        f'<td class="last-success">{last}</td>'
        "</tr>"
    )


def _partitions(partitions: tuple[PartitionStatus, ...]) -> str:
    if not partitions:
        return (
            '<p class="muted" id="partitions">none: not joined yet, or more members than '
            "partitions</p>"
        )
    rows = "".join(
        f'<tr class="partition" data-partition="{p.partition}"><td class="n">{p.partition}</td>'
        f'<td class="n lag">{"–" if p.lag is None else f"{p.lag:,}"}</td></tr>'
        for p in partitions
    )
    return (
        '<table id="partitions"><thead><tr><th class="n">partition</th>'
        f'<th class="n">lag (records)</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _attributes(status: AttributesStatus | None) -> str:
    if status is None:
        return ""
    state = "caught up" if status.caught_up else "catching up"
    lag = "–" if status.lag is None else f"{status.lag:,}"
    return f"""<section>
<h2>User attributes <span class="muted">followed from topic <b>{_e(status.topic)}</b></span></h2>
<table id="attributes">
<tr><th>state</th><td><span class="badge {"ready" if status.caught_up else "not-ready"}"
id="attributes-state">{state}</span></td></tr>
<tr><th>lag (records)</th><td class="n" id="attributes-lag">{lag}</td></tr>
<tr><th>users written <span class="muted">last minute</span></th>
<td class="n" id="attributes-written">{status.written:,}</td></tr>
<tr><th>older than the stored value <span class="muted">last minute</span></th>
<td class="n" id="attributes-superseded">{status.superseded:,}</td></tr>
<tr><th>records skipped <span class="muted">since start</span></th>
<td id="attributes-skipped">{_reasons(status.skipped)}</td></tr>
</table>
</section>"""


def _reasons(counts: tuple[tuple[str, int], ...]) -> str:
    if not counts:
        return '<span class="muted">none</span>'
    return " ".join(
        f'<span class="reason-count">{_e(reason)} <b>{count:,}</b></span>'
        for reason, count in counts
    )


def _seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


_STYLE = """
:root { color-scheme: light; --ink: #1d232b; --muted: #6b7480; --line: #e3e7ec;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #b42318; --bad-bg: #fee4e2;
  --warn: #9a6700; --warn-bg: #fff4cf; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "Noto Sans", sans-serif; color: var(--ink); background: #f6f8fa; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 15px; margin: 22px 0 8px; }
.muted { color: var(--muted); font-weight: normal; }
.facts { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; margin: 0; }
.reason { color: var(--bad); }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line);
  border-radius: 6px; width: 100%; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left;
  white-space: nowrap; }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; background: #fbfcfd; }
#kafka th, #attributes th { font-weight: normal; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-weight: 600; }
td.success.low { color: var(--bad); font-weight: 600; }
td.dead-letters { white-space: normal; }
.reason-count { display: inline-block; margin-right: 8px; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px;
  font-weight: 600; }
.ready, .circuit-closed { color: var(--ok); background: var(--ok-bg); }
.not-ready, .circuit-open, .circuit-disabled { color: var(--bad); background: var(--bad-bg); }
.circuit-half_open { color: var(--warn); background: var(--warn-bg); }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px; }
footer { margin-top: 24px; font-size: 12px; }
a { color: #0969da; }
"""
