"""Live reload: SIGHUP (or a changed file) applies new channels, campaigns, limits and secrets.

Nothing in flight is dropped or sent twice. Lingering batches go out as they were formed;
deliveries already queued or waiting on a timer are sent to their channel as it is configured
now; a removed channel's queued work becomes dead letters (reason unknown_channel, replayable
if the channel comes back) while its requests already out finish. An invalid file changes
nothing: its problems are logged and the running config stays. Sections that shape the
process itself (kafka, attributes, retry, ...) need a restart; a reload says which changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import structlog

from .catalog import Catalog, Channel
from .config import ConfigError, ServiceConfig, load_config
from .lanes import ChannelLane
from .limits import ChannelPacing
from .observer import NO_OBSERVER, ConfigReloaded, Observer
from .outcome import Kind, Outcome

log = structlog.get_logger(__name__)

# What a reload applies; any other section of the config takes a restart.
LIVE_SECTIONS = frozenset({"channels", "campaigns", "tls"})
_RETIRE_GRACE_SECONDS = 30.0  # a removed channel's requests in flight get this long


class UsesCatalog(Protocol):
    def use(self, catalog: Catalog) -> None: ...


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload applied, and which changed sections it could not."""

    channels_added: list[str]
    channels_removed: list[str]
    channels_changed: list[str]
    campaigns_changed: bool
    needs_restart: list[str]


class Reloader:
    def __init__(
        self,
        path: str | Path,
        config: ServiceConfig,
        catalog: Catalog,
        lanes: MutableMapping[str, ChannelLane],
        make_lane: Callable[[Channel], ChannelLane],
        users: list[UsesCatalog],
        environ: Mapping[str, str] | None = None,
        observer: Observer = NO_OBSERVER,
        limits_for: Callable[[Channel], ChannelPacing] | None = None,
    ) -> None:
        self._path = Path(path)
        self.config = config
        self.catalog = catalog
        self._lanes = lanes  # shared with the dispatcher and the redelivery: changed in place
        self._make_lane = make_lane
        self._users = users
        self._environ = environ
        self._observer = observer
        self._limits_for = limits_for  # the start-up factory of limiters and gates
        self._lock = asyncio.Lock()  # one reload at a time; signals arriving meanwhile wait
        self._tasks: set[asyncio.Task[Reloaded | None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        """From a signal handler: reload soon, in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> Reloaded | None:
        """Apply the file as it is now; None (and nothing changed) when it is not usable."""
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_config, self._path, self._environ)
                catalog = Catalog.from_config(config, self._environ)
            except ConfigError as exc:
                log.error("config.reload_rejected", source=exc.source, problems=exc.problems)
                self._observer.emit(ConfigReloaded(False, len(exc.problems)))
                return None
            except (OSError, ValueError) as exc:  # a secret file vanished between the checks
                log.error("config.reload_rejected", source=str(self._path), problems=[repr(exc)])
                self._observer.emit(ConfigReloaded(False, 1))
                return None
            report = self._apply(config, catalog)
            self._observer.emit(ConfigReloaded(True, 0, tuple(catalog.channels)))
            return report

    def _apply(self, config: ServiceConfig, catalog: Catalog) -> Reloaded:
        old_config, old = self.config, self.catalog
        before = {c.name: c for c in old_config.channels}
        after = {c.name: c for c in config.channels}
        removed = sorted(before.keys() - after.keys())
        added = sorted(after.keys() - before.keys())
        changed = sorted(
            name
            for name in before.keys() & after.keys()
            if before[name] != after[name]
            or _secrets(old.channels[name]) != _secrets(catalog.channels[name])
        )
        restart = sorted(
            section
            for section in type(config).model_fields
            if section not in LIVE_SECTIONS
            and getattr(config, section) != getattr(old_config, section)
        )
        # A lane keeps the ordering it started with: its chains cannot change shape live.
        restart += [
            f"channels.{name}.ordering"
            for name in changed
            if before[name].ordering != after[name].ordering
        ]
        gone = Outcome(
            Kind.UNKNOWN_CHANNEL,
            retryable=False,
            message="channel removed from the config by a reload; replay once it is back",
        )
        # All in one synchronous step, so no record is routed against half a change.
        for name in removed:
            self._retire(self._lanes.pop(name), gone)
        for name in changed:
            new, now = catalog.channels[name], old.channels[name]
            limits = None
            if self._limits_for is not None and (
                new.rate_limit != now.rate_limit or new.max_concurrency != now.max_concurrency
            ):
                limits = self._limits_for(new)
            self._lanes[name].reconfigure(new, limits)
        for name in added:
            lane = self._make_lane(catalog.channels[name])
            lane.start()
            self._lanes[name] = lane
        for user in self._users:
            user.use(catalog)
        self.config, self.catalog = config, catalog
        report = Reloaded(
            added, removed, changed, old_config.campaigns != config.campaigns, restart
        )
        log.info("config.reloaded", **asdict(report))
        if restart:
            log.warning("config.restart_needed", sections=restart)
        return report

    def _retire(self, lane: ChannelLane, reason: Outcome) -> None:
        task = asyncio.get_running_loop().create_task(lane.retire(reason, _RETIRE_GRACE_SECONDS))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def watch(self, interval: float) -> None:
        """Reload whenever the identity or content stamp of the file, or of a secret file its
        channels name, changes (a ConfigMap or Secret update swaps a symlink; an editor
        rewrites in place): a rotated secret is used without a restart or a signal."""
        seen = self._stamps()
        while True:
            await asyncio.sleep(interval)
            now = self._stamps()
            if now != seen and now[0] is not None:
                await self.reload()
                seen = self._stamps()  # the config now in force may name other files

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stamp(path) for path in [self._path, *secret_files(self.config)])

    async def close(self) -> None:
        for task in [*self._tasks, *self._retiring]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, *self._retiring, return_exceptions=True)


def _secrets(channel: Channel) -> tuple[object, ...]:
    """What a changed secret file or variable changes, though the YAML is the same."""
    keys = channel.standard_webhooks
    return (
        channel.secret,
        channel.authorization,
        None if keys is None else (keys.current, keys.previous, keys.previous_valid_until),
    )


def secret_files(config: ServiceConfig) -> list[Path]:
    """The files a reload reads the channels' secrets from."""
    found: list[Path | None] = []
    for channel in config.channels:
        found.append(channel.secret_file)
        if channel.basic_auth is not None:
            found.append(channel.basic_auth.password_file)
        if channel.standard_webhooks is not None:
            keys = channel.standard_webhooks
            found += [keys.secret_file, keys.previous_secret_file]
    return [path for path in found if path is not None]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None  # mid-swap: look again next time
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
