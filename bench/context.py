"""What every scenario shares: the broker, the receiver, the pre-loaded topics, the sizes."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .receiver import GoReceiver
from .workload import CHANNELS, path


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int = 200_000  # the main topic: S0b, S1, S2
    mid_events: int = 50_000  # S4 and the peers (S6), to fit `make bench` in 15 minutes
    small_events: int = 5_000  # S5: the naive consumer is too slow for more
    partitions: int = 6
    firehose_requests: int = 200_000  # S0a
    paced_seconds: float = 60.0  # S3, per rate
    paced_rates: tuple[int, ...] = (500, 2000)
    idle_seconds: float = 10.0  # S3: the service's CPU with nothing to do
    timeout: float = 900.0  # per consumer run
    attribute_users: int = 1_000_000  # S7a, S7b: the attributes topic a replica catches up on
    attribute_updates: int = 200_000  # S7c: a burst of updates beside S1
    visibility_rate: int = 1_000  # S7d, S7e: updates per second
    visibility_seconds: float = 30.0


QUICK = Sizes(
    events=5_000,
    mid_events=3_000,
    small_events=1_000,
    firehose_requests=15_000,
    paced_seconds=10.0,
    paced_rates=(200, 500),
    idle_seconds=3.0,
    timeout=180.0,
    attribute_users=50_000,
    attribute_updates=20_000,
    visibility_seconds=10.0,
)

HANG, FAIL = "hang", "fail"  # S4's unhealthy channels: never answers, answers 503
CONCURRENCY = 16  # the service's default max_concurrency per channel


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    records: int


@dataclass
class Bench:
    bootstrap: str
    prefix: str  # every topic and group of this run starts with it
    folder: Path  # configs, logs, the attribute database
    receiver: GoReceiver
    sizes: Sizes

    def topic(self, size: str) -> Topic:
        """The pre-loaded topic "main", "mid" or "small" of this run."""
        records = {"main": self.sizes.events, "mid": self.sizes.mid_events}.get(
            size, self.sizes.small_events
        )
        return Topic(f"{self.prefix}-{size}", records)

    @property
    def db(self) -> Path:
        return self.folder / "attributes.db"

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    @property
    def python(self) -> str:
        return sys.executable

    def service(self, config: Path, workers: int = 1) -> list[str]:
        """`webhook-consumer run`, as production starts it."""
        script = Path(sys.executable).with_name("webhook-consumer")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "consumer"]
        return [*command, "run", "--config", str(config), "--workers", str(workers)]

    def sizes_dict(self) -> dict[str, Any]:
        return asdict(self.sizes)


def healthy_paths() -> list[str]:
    return [path(ch) for ch in CHANNELS]


def receiver_for_bench() -> GoReceiver:
    from .workload import secret

    names = [*CHANNELS, HANG, FAIL]
    return GoReceiver(
        {path(ch): secret(ch) for ch in names}, hang=[path(HANG)], status={path(FAIL): 503}
    )
