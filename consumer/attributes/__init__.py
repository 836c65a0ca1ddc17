"""User attribute storage for enriching webhooks.

The Redis backend is `consumer.attributes.redis.RedisAttributeStore`, not imported here so that
a SQLite deployment never loads the Redis client.
"""

from consumer.attributes.cache import CachedAttributeStore
from consumer.attributes.importer import ImportReport, import_jsonl
from consumer.attributes.sqlite import SqliteAttributeStore
from consumer.attributes.store import (
    AttributeStore,
    AttributesUnavailable,
    MemoryAttributeStore,
    open_store,
)

__all__ = [
    "AttributeStore",
    "AttributesUnavailable",
    "CachedAttributeStore",
    "ImportReport",
    "MemoryAttributeStore",
    "SqliteAttributeStore",
    "import_jsonl",
    "open_store",
]
