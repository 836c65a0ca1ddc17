"""S5: the consumer a team writes in an afternoon. Poll, then for each record: look the user
up, build and sign the body, POST it to each channel one at a time, commit. No concurrency,
no batching, no retries.

    python -m bench.naive BOOTSTRAP TOPIC GROUP DB BASE_URL
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import sqlite3
import sys
import time
import uuid

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from .workload import CHANNELS, TEMPLATE, USER_ATTRIBUTES, path, secret


async def run(bootstrap: str, topic: str, group: str, db: str, base: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    users = sqlite3.connect(db)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    async with aiohttp.ClientSession() as session:
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        await handle(session, users, base, json.loads(record.value))
                        await consumer.commit(
                            {TopicPartition(tp.topic, tp.partition): record.offset + 1}
                        )
        finally:
            await consumer.stop()


async def handle(
    session: aiohttp.ClientSession, users: sqlite3.Connection, base: str, event: dict
) -> None:
    row = users.execute(
        "SELECT attributes FROM user_attributes WHERE user_id = ?", (event["user_id"],)
    ).fetchone()
    found = json.loads(row[0]) if row else None
    for channel in CHANNELS:
        user_attr = [{k: found[k] for k in USER_ATTRIBUTES if k in found}] if found else []
        body = json.dumps(
            {
                "name": channel,
                "templateParam": TEMPLATE,
                "userAttr": user_attr,
                "timestamp": str(int(time.time() * 1000)),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(secret(channel).encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-gio-signature": signature,
            "X-gio-delivery-id": str(uuid.uuid5(uuid.NAMESPACE_URL, channel + event["event_id"])),
        }
        async with session.post(base + path(channel), data=body, headers=headers) as response:
            response.raise_for_status()


def main() -> None:
    asyncio.run(run(*sys.argv[1:6]))


if __name__ == "__main__":
    main()
