"""The documentation stands on its own: it refers to nothing outside the repository (the team's
working notes, a contract document, a version of one) that a user cannot open."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OUTSIDE = re.compile(
    r"\.\./shared|\bshared/(?!CGNAT)|CONTRACT\.md|DESIGN\.md|STYLE\.md|"
    r"\bcontract (?:version )?\d|\b(?:of|in|since) 1\.[0-9]\b(?! ?s\b)"
)


def test_no_doc_refers_outside_the_repository() -> None:
    found = [
        f"{doc.name}:{number}: {line.strip()}"
        for doc in DOCS
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_pattern_catches_what_it_is_for() -> None:
    for line in (
        "`run` in this stack needs the Redis attribute store of 1.1",
        "see ../shared/CONTRACT.md",
        "as contract 1.2 says",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("Apache Kafka 4.1.1, Python 3.11, within 1.5 s")
