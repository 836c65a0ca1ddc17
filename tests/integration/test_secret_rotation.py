"""A channel secret rotated the way Kubernetes updates a mounted Secret (a new folder, then an
atomic swap of the `..data` symlink) is used by the running process with `reload.watch`: no
restart, no signal."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from consumer.receiver import Receiver
from tests.support.processes import Launch, run_args

from .support import Setup, channel, create_topic, encoded, event, produce

EVENTS = 5


def mount_secret(folder: Path, version: str, value: str) -> None:
    """What the kubelet does: write the new version aside, then swap `..data` atomically;
    the key's own path is a symlink through `..data` and never changes."""
    (folder / version).mkdir()
    (folder / version / "hook-secret").write_text(value, encoding="utf-8")
    (folder / "..data_tmp").symlink_to(version)
    os.replace(folder / "..data_tmp", folder / "..data")
    if not (folder / "hook-secret").is_symlink():
        (folder / "hook-secret").symlink_to("..data/hook-secret")


async def test_a_rotated_secret_file_is_used_without_a_restart(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    mounted = tmp_path / "secrets"
    mounted.mkdir()
    mount_secret(mounted, "..v1", "old-key")
    hook = channel(receiver, "hook")
    del hook["secret_env"]
    hook["secret_file"] = str(mounted / "hook-secret")
    setup = Setup(bootstrap, receiver, [hook], {"c": ["hook"]}, tmp=str(tmp_path), log_level="info")
    document = {**setup.document(), "reload": {"watch": True, "interval_seconds": 0.2}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    receiver.secrets["hook"] = "old-key"
    await create_topic(bootstrap, setup.topic, 1)
    # No environment of the test's own: Setup.environ is for secret_env channels, this one
    # has a file.
    process = await launch(run_args(config), {}, tmp_path / "service.log").start()
    log = process.log
    try:
        await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(EVENTS)))
        assert await receiver.wait_for(lambda r: len(r.delivered()) == EVENTS, within=60)

        mount_secret(mounted, "..v2", "new-key")
        receiver.secrets["hook"] = "new-key"  # from now on only the new key verifies

        assert await log.wait_for("config.reloaded", within=30), log.tail()
        await produce(bootstrap, setup.topic, encoded(event("c", f"v-{i}") for i in range(EVENTS)))
        assert await receiver.wait_for(lambda r: len(r.delivered()) == 2 * EVENTS, within=60)
        assert process.running  # the same process, never restarted
    finally:
        code = await process.stop()
    assert code == 0
    # Every request verified with the key in force when it was sent: none with a stale key.
    assert all(r.verified for r in receiver.received), log.tail()
    assert len(receiver.received) == 2 * EVENTS  # each once: none refused, none sent twice
    assert "old-key" not in log.text()
    assert "new-key" not in log.text()
