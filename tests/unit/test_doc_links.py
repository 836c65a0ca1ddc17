"""Every relative link of README.md and docs/*.md points to a file of this repository, and to a
heading that exists there: users get the repository, nothing beside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# Headings other branches are writing; the link is right once they land.
PENDING_ANCHORS: set[tuple[str, str]] = set()  # (file, anchor) written but not there yet

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def links(text: str) -> list[str]:
    """Link targets outside code: fenced blocks and inline code are not links."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text)


def anchors(text: str) -> set[str]:
    """The fragments GitHub gives the headings of a Markdown text."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def problems(page: Path, root: Path = ROOT) -> list[str]:
    out = []
    text = page.read_text(encoding="utf-8")
    for target in links(text):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.is_relative_to(root.resolve()):
            out.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            out.append(f"{target}: no such file")
            continue
        if fragment and resolved.suffix == ".md":
            relative = resolved.relative_to(root.resolve()).as_posix()
            known = anchors(resolved.read_text(encoding="utf-8"))
            if fragment not in known and (relative, fragment) not in PENDING_ANCHORS:
                out.append(f"{target}: no heading #{fragment} in {relative}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_point_inside_the_repository(page: Path) -> None:
    assert problems(page) == []


def test_the_readme_links_the_documentation() -> None:
    targets = links((ROOT / "README.md").read_text(encoding="utf-8"))
    for page in ("events", "webhooks", "delivery", "dead-letters", "commands", "configuration"):
        assert f"docs/{page}.md" in targets
    assert "docs/runbook.md" in targets
    assert not [t for t in targets if t.startswith("../")]


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A `title`, here\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md#a-title-here) [web](https://example.com) [self](#top)\n"
        "# Top\n"
        "[gone](docs/missing.md) [out](../CONTRACT.md) [bad](docs/there.md#nope)\n"
        "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n",
        encoding="utf-8",
    )
    assert problems(page, tmp_path) == [
        "docs/missing.md: no such file",
        "../CONTRACT.md: outside the repository",
        "docs/there.md#nope: no heading #nope in docs/there.md",
    ]


def test_duplicate_headings_get_numbered_anchors() -> None:
    assert anchors("# Logs\n## Logs\n### Logs\n") == {"logs", "logs-1", "logs-2"}
