"""S6b: a Quix Streams application doing the same deliveries. Runs in its own virtual env
(.cache/bench/quix-venv), so nothing here imports the project.

    python quix_app.py BOOTSTRAP TOPIC GROUP DB BASE_URL CHANNELS SECRETS TEMPLATE CONCURRENCY

A BatchingSink: Quix hands it each partition's records at every checkpoint; it looks their users
up in one query, then POSTs one signed request per record and channel, at most CONCURRENCY at a
time, and raises on any non-2xx so the checkpoint (the commit) fails. No retries.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import hmac
import json
import sqlite3
import sys
import time
import uuid

import aiohttp
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

NAMESPACE = uuid.UUID("6c1f3f2e-3f0e-5d8a-9a57-1d0f5b2c7e41")  # the service's delivery ids
USER_ATTRIBUTES = ["hobby", "birthday"]


class GioSink(BatchingSink):
    def __init__(self, db, base, channels, secrets, template, concurrency):
        super().__init__()
        self._db, self._base, self._channels = db, base, channels
        self._secrets = {ch: s.encode() for ch, s in zip(channels, secrets, strict=True)}
        self._template, self._concurrency = template, concurrency

    def setup(self):
        self._users = sqlite3.connect(self._db)
        self._loop = asyncio.new_event_loop()
        self._session = self._loop.run_until_complete(self._open())
        atexit.register(lambda: self._loop.run_until_complete(self._session.close()))

    async def _open(self):
        return aiohttp.ClientSession()

    def write(self, batch: SinkBatch):
        events = [item.value for item in batch]
        ids = list({e["user_id"] for e in events})
        found = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT user_id, attributes FROM user_attributes WHERE user_id IN ({marks})"
            for user, raw in self._users.execute(query, chunk):
                found[user] = json.loads(raw)
        self._loop.run_until_complete(self._post_all(events, found))

    async def _post_all(self, events, found):
        permits = asyncio.Semaphore(self._concurrency)

        async def post(event, channel):
            attrs = found.get(event["user_id"])
            body = json.dumps(
                {
                    "name": channel,
                    "templateParam": self._template,
                    "userAttr": [{k: attrs[k] for k in USER_ATTRIBUTES if k in attrs}]
                    if attrs
                    else [],
                    "timestamp": str(int(time.time() * 1000)),
                },
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            name = json.dumps([channel, event["event_id"]], separators=(",", ":"))
            headers = {
                "Content-Type": "application/json",
                "X-gio-signature": hmac.new(
                    self._secrets[channel], body, hashlib.sha256
                ).hexdigest(),
                "X-gio-delivery-id": str(uuid.uuid5(NAMESPACE, name)),
                "X-gio-attempt": "1",
            }
            url = self._base + "/hooks/" + channel
            async with permits, self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status // 100 != 2:
                    raise RuntimeError(f"{channel}: HTTP {response.status}")

        await asyncio.gather(*(post(e, ch) for e in events for ch in self._channels))


def main() -> None:
    bootstrap, topic, group, db, base, channels, secrets, template, concurrency = sys.argv[1:10]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=0.5,  # the service commits every 500 ms too; the sink writes at each
        loglevel="WARNING",
    )
    sink = GioSink(
        db, base, channels.split(","), secrets.split(","), json.loads(template), int(concurrency)
    )
    app.dataframe(app.topic(topic, value_deserializer="json")).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
