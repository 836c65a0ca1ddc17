"""User attribute storage for enriching webhooks."""

from consumer.attributes.importer import ImportReport, import_jsonl
from consumer.attributes.sqlite import SqliteAttributeStore
from consumer.attributes.store import AttributeStore, MemoryAttributeStore, open_store

__all__ = [
    "AttributeStore",
    "ImportReport",
    "MemoryAttributeStore",
    "SqliteAttributeStore",
    "import_jsonl",
    "open_store",
]
