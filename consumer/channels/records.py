"""The records of the channel-state topic (`<group_id>.channels`, compacted).

One record per key: a channel's state (`state/<channel>`: disabled or enabled, by whom, why,
when), the last request to reset its circuit (`circuit_reset/<channel>`), and each replica's
last circuit change with the error behind it (`circuit/<channel>/<replica>`, removed when the
replica stops).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.deadletter import Reason


class RecordKind(StrEnum):
    STATE = "state"  # disabled or enabled
    CIRCUIT_RESET = "circuit_reset"  # `channels reset-circuit`: every replica closes it
    CIRCUIT = "circuit"  # a replica's circuit changed (for `channels list`)


RECEIVER = "receiver"  # `by` of a channel disabled by its receiver's 410 answer


class ChannelRecord(BaseModel):
    """`schemas/channel-state.v1.json`: one record of the channel-state topic."""

    model_config = ConfigDict(frozen=True, title="ChannelRecord")

    schema_version: int = 1
    kind: RecordKind
    channel: str
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique per record.")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    by: str = Field(
        description="`receiver` (a 410 answer), the operator (user@host), or the replica."
    )
    disabled: bool | None = Field(None, description="kind state: disabled, or enabled again.")
    reason: str = Field("", description="kind state: why, as given or as the receiver answered.")
    status: int | None = Field(None, description="kind state: 410 when the receiver asked.")
    circuit: str | None = Field(None, description="kind circuit: closed, open or half_open.")
    failures: int | None = Field(None, description="kind circuit: failures in a row.")
    last_error: Reason | None = Field(
        None, description="kind circuit: the last failed attempt the replica saw."
    )

    def key(self) -> str:
        if self.kind is RecordKind.CIRCUIT:
            return f"{self.kind.value}/{self.channel}/{self.by}"
        return f"{self.kind.value}/{self.channel}"

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def decode(value: bytes) -> ChannelRecord | None:
    """None for a value that is not a record of ours (it is skipped, never fatal)."""
    try:
        return ChannelRecord.model_validate_json(value)
    except ValidationError:
        return None
