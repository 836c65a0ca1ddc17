"""Where the harness keeps what it builds (.cache/bench) and what it measured (bench/results)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "bench"
RESULTS = HERE / "results"
