"""docs/configuration.md is exactly what the config models render, and it covers every field."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from consumer.cli import main
from consumer.config import ServiceConfig
from consumer.configdoc import render_configuration
from consumer.schemas import DOCS, write_docs

DOCS_FOLDER = Path(__file__).parents[2] / "docs"


def test_committed_reference_matches_the_models() -> None:
    committed = (DOCS_FOLDER / "configuration.md").read_text(encoding="utf-8")
    assert render_configuration() == committed, (
        "docs/configuration.md is out of date: run `make schemas` and commit the result"
    )


def _models(model: type[BaseModel], path: str = "") -> dict[str, type[BaseModel]]:
    """Every section of the config, by its path in the file (`channels[].batch`)."""
    found = {path: model}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                child = f"{path}.{name}" if path else name
                is_list = getattr(annotation, "__origin__", None) is list
                found.update(_models(candidate, child + ("[]" if is_list else "")))
    return found


def _table_rows(text: str, section: str) -> dict[str, list[str]]:
    """The rows of a section's table, by field name: [type, default, description]."""
    title = section or "Top level"
    body = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        match = re.match(r"^\| `(\w+)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = re.split(r" (?<!\\)\| ", match[2])
    return rows


def test_every_section_and_field_is_listed_with_a_type_and_a_description() -> None:
    text = render_configuration()
    sections = _models(ServiceConfig)
    assert {"", "kafka", "kafka.tls", "channels[]", "channels[].rate_limit"} <= set(sections)
    for path, model in sections.items():
        rows = _table_rows(text, path)
        assert sorted(rows) == sorted(model.model_fields), path
        for name, (kind, default, description) in rows.items():
            assert kind, f"{path}.{name}: no type"
            assert description, f"{path}.{name}: no description"
            field = model.model_fields[name]
            if field.is_required():
                assert default == "required", f"{path}.{name}"


def test_defaults_are_the_models_defaults() -> None:
    text = render_configuration()
    assert _table_rows(text, "retry")["schedule_seconds"][1] == (
        "`[5, 300, 1800, 7200, 18000, 36000, 36000]`"
    )
    assert _table_rows(text, "kafka")["topic"][1] == '`"user-threshold-events"`'
    assert _table_rows(text, "channels[]")["max_concurrency"][1] == "`16`"
    assert _table_rows(text, "channels[]")["rate_limit"][1] == "`null`"
    assert _table_rows(text, "")["kafka"][1] == "its fields' defaults"


def test_types_show_constraints_and_link_nested_sections() -> None:
    text = render_configuration()
    kafka = _table_rows(text, "kafka")
    assert kafka["topic_partitions"][0] == "integer > 0"
    assert kafka["tls"][0] == "[kafka.tls](#kafkatls)"
    assert kafka["security_protocol"][0].startswith("one of `PLAINTEXT`, `SSL`")
    assert _table_rows(text, "attributes")["cache_ttl_seconds"][0] == "number ≥ 0"
    assert _table_rows(text, "")["channels"][0] == "list of [channels[]](#channels), at least 1"
    assert "\n## channels[].standard_webhooks\n" in text


def test_schemas_command_writes_the_reference(tmp_path: Path) -> None:
    assert list(DOCS) == ["configuration.md"]
    code = main(["schemas", "--out", str(tmp_path / "schemas"), "--docs", str(tmp_path / "docs")])
    assert code == 0
    written = (tmp_path / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert written == render_configuration()
    assert [p.name for p in write_docs(tmp_path / "again")] == ["configuration.md"]
