"""docs/configuration.md: every section and field of the config file, rendered from its schema.

Rendered from the JSON Schema of `ServiceConfig` (the one `schemas/config.v1.json` holds), so the
reference, the schema editors read and the validation `check-config` does cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .config import ServiceConfig

Schema = dict[str, Any]

_HEADER = """\
# Configuration reference

<!-- Generated from consumer/config.py by `make schemas`; edit the models, not this file. -->

The service reads one YAML file, given with `--config PATH` or the `WEBHOOK_CONSUMER_CONFIG`
environment variable. This page lists every section and field with its type, its default and
what it does. A field not listed here is rejected, and `webhook-consumer check-config` reports
every problem of a file at once (exit status 2). The same rules as a JSON Schema, for editors:
[`schemas/config.v1.json`](../schemas/config.v1.json). A commented example that uses the main
features: [`examples/config.yaml`](../examples/config.yaml).

Secrets are never written in the file: every `*_env` field names an environment variable and
every `*_file` field a file that holds the value (a trailing newline is dropped). Durations are
in seconds unless the field's name ends in `_ms`.
"""

_FORMATS = {
    "path": "path",
    "date-time": "date-time with a time zone",
    "ipv4network": "IPv4 network",
    "ipv6network": "IPv6 network",
}


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # "kafka.tls", "channels[]"; "" for the top level
    schema: Schema

    @property
    def title(self) -> str:
        return self.path or "Top level"


def render_configuration() -> str:
    schema = ServiceConfig.model_json_schema(by_alias=True)
    defs: dict[str, Schema] = schema.get("$defs", {})
    sections = list(_sections("", schema, defs))
    contents = ", ".join(f"[{s.title}](#{_anchor(s.title)})" for s in sections)
    parts = [_HEADER, f"Sections: {contents}.\n"]
    parts += [_section(section, defs) for section in sections]
    return "\n".join(parts)


def _sections(path: str, schema: Schema, defs: dict[str, Schema]) -> Iterator[Section]:
    """Depth first, in field order: each section is followed by the sections inside it."""
    yield Section(path, schema)
    for name, prop in schema.get("properties", {}).items():
        ref, suffix = _nested(prop)
        if ref is not None:
            child = f"{path}.{name}" if path else name
            yield from _sections(child + suffix, defs[ref], defs)


def _nested(prop: Schema) -> tuple[str | None, str]:
    """The definition a field holds (directly, optionally, or as list items), and the path
    suffix for list items."""
    for option in [prop, *prop.get("anyOf", [])]:
        if "$ref" in option:
            return _ref_name(option["$ref"]), ""
        items = option.get("items")
        if isinstance(items, dict) and "$ref" in items:
            return _ref_name(items["$ref"]), "[]"
    return None, ""


def _section(section: Section, defs: dict[str, Schema]) -> str:
    schema = section.schema
    lines = [f"## {section.title}", ""]
    if schema.get("description"):
        lines += [_flow(schema["description"]), ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        child = f"{section.path}.{name}" if section.path else name
        cells = [
            f"`{name}`",
            _type(prop, child, defs),
            _default(prop, name in required),
            _flow(prop.get("description", "")),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _type(prop: Schema, path: str, defs: dict[str, Schema]) -> str:
    if "$ref" in prop:
        return f"[{path}](#{_anchor(path)})"
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        return " or ".join(_type(o, path, defs) for o in options)
    if "enum" in prop:
        return "one of " + ", ".join(f"`{value}`" for value in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items", {})
        options = items.get("anyOf", [items])
        text = "list of " + " or ".join(_plural(_type(o, path + "[]", defs)) for o in options)
        return text + (f", at least {prop['minItems']}" if "minItems" in prop else "")
    if kind == "object":
        values = prop.get("additionalProperties", True)
        held = "any values" if values is True else _plural(_type(values, path, defs))
        return f"mapping of names to {held}"
    if kind in ("integer", "number"):
        return f"{kind}{_bounds(prop)}"
    if kind == "string":
        return _string(prop)
    if kind == "boolean":
        return "boolean"
    return "any"


def _string(prop: Schema) -> str:
    text = _FORMATS.get(prop.get("format", ""), "string")
    if prop.get("minLength") == 1:
        text = f"non-empty {text}"
    if "pattern" in prop:
        text += f" matching `{prop['pattern']}`"
    if "maxLength" in prop:
        text += f", at most {prop['maxLength']} characters"
    return text


def _bounds(prop: Schema) -> str:
    """` > 0`, ` ≥ 0, ≤ 65535`: every bound the model enforces, lower then upper."""
    bounds = []
    for key, sign in (
        ("exclusiveMinimum", ">"),
        ("minimum", "≥"),
        ("exclusiveMaximum", "<"),
        ("maximum", "≤"),
    ):
        if key in prop:
            bounds.append(f"{sign} {prop[key]}")
    return (" " + ", ".join(bounds)) if bounds else ""


def _plural(text: str) -> str:
    """`list of integers > 0`, `mapping of names to strings`: nouns of the simple types."""
    for noun in ("string", "integer", "number", "boolean", "path", "network"):
        if text == noun or text.startswith(noun + " "):
            return noun + "s" + text[len(noun) :]
        if text.endswith(" " + noun):
            return text + "s"
    return text


def _default(prop: Schema, required: bool) -> str:
    if required:
        return "required"
    if "default" not in prop:
        return ""
    if "$ref" in prop:
        return "its fields' defaults"
    return f"`{json.dumps(prop['default'], ensure_ascii=False)}`"


def _flow(text: str) -> str:
    """A docstring on one table-friendly line."""
    return " ".join(text.split())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(title: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
