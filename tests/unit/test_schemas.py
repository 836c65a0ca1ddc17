"""The committed JSON Schema files are exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.schemas import SCHEMAS, render, write_schemas

FOLDER = Path(__file__).parents[2] / "schemas"


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_committed_schema_matches_model(name: str) -> None:
    committed = (FOLDER / name).read_text(encoding="utf-8")
    assert render(SCHEMAS[name]) == committed, (
        f"schemas/{name} is out of date: run `webhook-consumer schemas` and commit the result"
    )


def test_no_stale_schema_files() -> None:
    assert sorted(p.name for p in FOLDER.glob("*.json")) == sorted(SCHEMAS)


def test_schemas_are_draft_2020_12_json() -> None:
    for name, model in SCHEMAS.items():
        schema = json.loads(render(model))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name


def test_threshold_event_schema_requires_the_contract_fields() -> None:
    schema = json.loads(render(SCHEMAS["threshold-event.v1.json"]))
    assert set(schema["required"]) == {"event_id", "user_id", "campaign_id", "occurred_at"}


def test_payload_schema_uses_the_wire_names() -> None:
    schema = json.loads(render(SCHEMAS["webhook-payload.v1.json"]))
    assert set(schema["properties"]) == {"name", "templateParam", "userAttr", "timestamp"}


def test_write_schemas_writes_every_file(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(SCHEMAS)
    for path in written:
        assert path.read_text(encoding="utf-8") == (FOLDER / path.name).read_text(encoding="utf-8")
