"""The topics the service creates demand what "durable before the commit" rests on."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.config import KafkaConfig
from consumer.topics import ensure_topics

TOPIC_CONFIG = 1  # DescribeConfigs' config_source: set on the topic, not the broker's default


async def topic_settings(bootstrap: str, topic: str) -> dict[str, tuple[str, int]]:
    """name -> (value, config_source) of one topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    (resource,) = answer.resources
    return {entry[0]: (entry[1], entry[3]) for entry in resource[4]}


async def test_every_created_topic_sets_min_insync_replicas(bootstrap: str) -> None:
    group = f"durable-{uuid.uuid4().hex[:10]}"
    kafka = KafkaConfig(bootstrap_servers=bootstrap, group_id=group, topic=f"{group}-in")
    delay = f"{group}.retry.5s"
    await ensure_topics(kafka, [delay])
    for topic in (kafka.topic, kafka.dead_letter_topic, delay):
        settings = await topic_settings(bootstrap, topic)
        # One broker here: replication factor 1, so 1, set on the topic itself rather than
        # left to the broker's default (which a 3-broker cluster may also have at 1).
        assert settings["min.insync.replicas"] == ("1", TOPIC_CONFIG), topic
    assert (await topic_settings(bootstrap, delay))["message.timestamp.type"][0] == "LogAppendTime"
