"""The webhook body, byte for byte as the GrowingIO contract fixes it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field


class WebhookPayload(BaseModel):
    """`schemas/webhook-payload.v1.json`; documents the body, never used to encode it."""

    model_config = ConfigDict(populate_by_name=True, title="WebhookPayload")

    name: str
    template_param: dict[str, Any] = Field(alias="templateParam")
    user_attr: list[dict[str, Any]] = Field(alias="userAttr")
    timestamp: str = Field(pattern=r"^[0-9]+$", description="send time, ms since the epoch")


def select_attributes(
    wanted: Sequence[str], users: Iterable[Mapping[str, Any] | None]
) -> list[dict[str, Any]]:
    """One object per user whose attributes were found, with only the wanted keys it has."""
    return [
        {key: attrs[key] for key in wanted if key in attrs} for attrs in users if attrs is not None
    ]


def encode_body(
    name: str,
    template_param: Mapping[str, Any],
    user_attr: Sequence[Mapping[str, Any]],
    timestamp_ms: int | None = None,
) -> bytes:
    """Compact JSON, raw UTF-8, keys in contract order; dicts keep their insertion order."""
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    return orjson.dumps(
        {
            "name": name,
            "templateParam": template_param,
            "userAttr": user_attr,
            "timestamp": str(timestamp_ms),
        }
    )
