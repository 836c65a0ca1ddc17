"""The status page of a running service, as headless Chromium renders it.

Needs Debian's `chromium` (`.ci/run` installs it). Set STATUS_PAGE_SCREENSHOT=docs/status-page.png
to refresh the README's picture from this run.
"""

from __future__ import annotations

import asyncio
import os
from html.parser import HTMLParser
from pathlib import Path

import aiohttp

from consumer.receiver import Receiver
from tests.support.polling import until
from tests.support.tools import tool

from .support import Setup, StartService, channel, create_topic, encoded, event, produce

CHANNELS = ["coupon-system", "push-service", "loyalty-points", "crm-sync"]
EVENTS = 400
# What the receiver sees delivered per channel in the end (push-service is down throughout,
# crm-sync refuses its first six requests for good).
DELIVERED = {"coupon-system": EVENTS, "loyalty-points": EVENTS, "crm-sync": EVENTS - 6}


def delivered_by(receiver: Receiver) -> dict[str, int]:
    counts = {name: 0 for name in DELIVERED}
    for r in receiver.delivered():
        if r.channel in counts:
            counts[r.channel] += 1
    return counts


class Rows(HTMLParser):
    """The table rows of the page that carry a data-channel or data-partition attribute: their
    cells' text by class, and the text of #readiness."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: dict[str, dict[str, str]] = {}
        self.partitions: dict[str, dict[str, str]] = {}
        self.readiness = ""
        self._row: dict[str, str] | None = None
        self._cell: list[str] = []  # the classes of the open cell
        self._in_readiness = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-channel") is not None:
            self._row = self.channels.setdefault(a["data-channel"] or "", {})
        elif tag == "tr" and a.get("data-partition") is not None:
            self._row = self.partitions.setdefault(a["data-partition"] or "", {})
        elif tag == "td" and self._row is not None:
            self._cell = [c for c in (a.get("class") or "").split() if c != "n"]
            self._row.update(dict.fromkeys(self._cell, ""))
        elif a.get("id") == "readiness":
            self._in_readiness = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = []
        elif tag == "span":
            self._in_readiness = False

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            for name in self._cell:
                self._row[name] += data
        if self._in_readiness:
            self.readiness += data


def chromium(*args: str, profile: Path) -> list[str]:
    return [
        tool("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]


async def run(command: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def screenshot_path(tmp_path: Path) -> Path:
    wanted = os.environ.get("STATUS_PAGE_SCREENSHOT")
    return Path(wanted).resolve() if wanted else tmp_path / "status.png"


def png_header_and_size(path: Path) -> tuple[bytes, int]:
    return path.read_bytes()[:8], path.stat().st_size


def number(text: str) -> int:
    return int(text.replace(",", ""))


async def test_the_status_page_shows_every_channel_with_plausible_numbers(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    tmp_path: Path,
    running_service: StartService,
) -> None:
    receiver.answer("push-service", default=503)  # down: its circuit opens
    receiver.answer("crm-sync", statuses=[400] * 6)  # six refused, then fine
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, name) for name in CHANNELS],
        {"spring-sale": CHANNELS},
        retry={"quick_attempts": 2, "schedule_seconds": [30]},
        tmp=tmp,
    )
    await create_topic(bootstrap, setup.topic, 3)
    service = running_service(setup.config(), setup.environ)
    try:
        admin = await service.admin_url()
        records = encoded(event("spring-sale", f"u-{i % 50}") for i in range(EVENTS))
        await produce(bootstrap, setup.topic, [*records, (b"k", b"{not json"), (b"k", b"[]")])
        assert await receiver.wait_for(lambda r: delivered_by(r) == DELIVERED, 90), delivered_by(
            receiver
        )
        async with aiohttp.ClientSession() as http:
            page = Rows()

            async def caught_up() -> bool:  # with what the receiver saw
                nonlocal page
                async with http.get(f"{admin}/") as response:
                    page = Rows()
                    page.feed(await response.text())
                shown = {name: page.channels[name].get("delivered") for name in DELIVERED}
                done = shown == {name: f"{count:,}" for name, count in DELIVERED.items()}
                return done and "open" in page.channels["push-service"].get("circuit", "")

            assert await until(caught_up, 60, every=0.2), page.channels

        dom = await run(chromium("--dump-dom", f"{admin}/", profile=tmp_path / "profile"))
        picture = screenshot_path(tmp_path)
        await run(
            chromium(
                f"--screenshot={picture}",
                "--window-size=1280,900",
                "--hide-scrollbars",
                f"{admin}/",
                profile=tmp_path / "profile",
            )
        )
    finally:
        await service.shutdown()

    rendered = Rows()
    rendered.feed(dom)
    assert rendered.readiness == "ready"
    assert list(rendered.channels) == CHANNELS
    for name in ("coupon-system", "loyalty-points"):  # healthy: every event, first time
        steady = rendered.channels[name]
        assert number(steady["delivered"]) == EVENTS, (name, steady)
        assert number(steady["attempts"]) == EVENTS, (name, steady)
        assert steady["success"] == "100.0%"
        assert steady["p50"].endswith(" ms")
        assert steady["p99"].endswith((" ms", " s"))
        assert steady["circuit"] == "closed"
    down = rendered.channels["push-service"]
    assert down["circuit"] == "open"
    assert down["delivered"] == "0"
    assert down["success"] == "0.0%"
    assert number(down["parked"]) > 0  # waiting on the delay path for the probe
    assert down["last-success"] == "never"
    refused = rendered.channels["crm-sync"]
    assert number(refused["delivered"]) == EVENTS - 6
    assert "http_status 6" in " ".join(refused["dead-letters"].split())
    assert set(rendered.partitions) == {"0", "1", "2"}
    header, size = png_header_and_size(picture)
    assert header == b"\x89PNG\r\n\x1a\n"
    assert size > 20_000  # a page, not a blank
