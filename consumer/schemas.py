"""JSON Schema files of every record in the contract, generated from the pydantic models, and
the configuration reference in Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .channels.records import ChannelRecord
from .config import ServiceConfig
from .configdoc import render_configuration
from .deadletter import DeadLetter
from .events import ThresholdEvent
from .payload import WebhookPayload

SCHEMAS: dict[str, type[BaseModel]] = {
    "threshold-event.v1.json": ThresholdEvent,
    "webhook-payload.v1.json": WebhookPayload,
    "dead-letter.v1.json": DeadLetter,
    "config.v1.json": ServiceConfig,
    "channel-state.v1.json": ChannelRecord,
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(by_alias=True),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = folder / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


# Files of the docs folder generated from the models, and what renders each.
DOCS = {"configuration.md": render_configuration}


def write_docs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render_doc in DOCS.items():
        path = folder / name
        path.write_text(render_doc(), encoding="utf-8")
        written.append(path)
    return written
