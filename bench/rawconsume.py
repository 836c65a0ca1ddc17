"""S0b: the Kafka ceiling. Raw aiokafka consumption of a topic from its beginning, no group,
nothing done per record. Prints one JSON line: records, seconds and CPU seconds from the
first record to the last.

    python -m bench.rawconsume BOOTSTRAP TOPIC RECORDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer

from consumer.kafkatools import stop_consumer, topic_partitions


async def consume(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    partitions = await topic_partitions(topic, bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        first = first_cpu = 0.0
        while seen < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if batches and not seen:
                first, first_cpu = time.monotonic(), time.process_time()
            seen += sum(len(batch) for batch in batches.values())
        return {
            "records": seen,
            "seconds": time.monotonic() - first,
            "cpu_seconds": time.process_time() - first_cpu,
        }
    finally:
        await stop_consumer(consumer)


def main() -> None:
    bootstrap, topic, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(consume(bootstrap, topic, records))))


if __name__ == "__main__":
    main()
