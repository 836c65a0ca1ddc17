"""User attribute storage for enriching webhooks.

The Redis backend is `consumer.attributes.redis.RedisAttributeStore`, not imported here so that
a SQLite deployment never loads the Redis client.
"""

from consumer.attributes.backends import open_store
from consumer.attributes.cache import CachedAttributeStore
from consumer.attributes.importer import ImportReport, import_jsonl
from consumer.attributes.memory import MemoryAttributeStore
from consumer.attributes.sqlite import SqliteAttributeStore
from consumer.attributes.store import AttributeStore, AttributesUnavailable

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
