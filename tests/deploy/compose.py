"""Checks of the compose stack beyond its schema ([] when fine): the parts it must have, and
the agreement between compose.yaml and the config its consumers mount."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from consumer.receiver_server import SECRET_PREFIX, env_key

KAFKA_IMAGE = "apache/kafka:4.1.1"


def seconds(duration: str) -> float:
    """A compose duration like 45s, 1m30s or 1h."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(duration))
    return sum(float(n) * units[u] for n, u in parts)


def consumers(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in stack["services"].items()
        if service.get("command", [None])[0] == "run"
    }


def mounted_config(stack: dict[str, Any], service: dict[str, Any], folder: Path) -> Path | None:
    command = service["command"]
    target = command[command.index("--config") + 1] if "--config" in command else None
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("target") == target:
            return (folder / volume["source"]).resolve()
    return None


def compose_problems(stack: dict[str, Any], folder: Path) -> list[str]:
    services = stack["services"]
    problems = []
    kafka = services.get("kafka", {})
    if kafka.get("image") != KAFKA_IMAGE:
        problems.append(f"kafka: expected image {KAFKA_IMAGE}, got {kafka.get('image')}")
    roles = set(str(kafka.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")).split(","))
    if roles != {"broker", "controller"}:
        problems.append("kafka: expected one KRaft node, KAFKA_PROCESS_ROLES broker,controller")
    for name in ("kafka", "redis", "receiver"):
        if "healthcheck" not in services.get(name, {}):
            problems.append(f"{name}: a health check lets the consumers wait for it")
    members = consumers(stack)
    if len(members) != 2:
        return [*problems, f"expected two consumer services, found {sorted(members)}"]
    configs = {mounted_config(stack, s, folder) for s in members.values()}
    if len(configs) != 1 or None in configs:
        return [*problems, "the consumers must mount one config file at their --config path"]
    (config_path,) = configs
    assert config_path is not None
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    ids = [s.get("environment", {}).get("WEBHOOK_CONSUMER_INSTANCE_ID") for s in members.values()]
    if None in ids or len(set(ids)) != len(ids):
        problems.append(f"each consumer needs its own WEBHOOK_CONSUMER_INSTANCE_ID, got {ids}")
    grace = config.get("kafka", {}).get("shutdown_grace_seconds", 30)
    for name, service in members.items():
        stop = seconds(service.get("stop_grace_period", "10s"))
        if stop <= grace:
            problems.append(
                f"{name}: stop_grace_period {stop:g}s <= shutdown_grace_seconds {grace}"
            )
        waits = service.get("depends_on", {})
        if waits.get("kafka", {}).get("condition") != "service_healthy":
            problems.append(f"{name}: expected to wait for a healthy kafka")
    problems += _receiver_problems(services, members, config)
    subnets = [
        ipaddress.ip_network(c["subnet"])
        for c in stack.get("networks", {}).get("default", {}).get("ipam", {}).get("config", [])
    ]
    allowed = [ipaddress.ip_network(n) for n in config.get("allowed_networks", [])]
    for subnet in subnets:
        if not any(subnet.subnet_of(a) for a in allowed if a.version == subnet.version):
            problems.append(f"allowed_networks: the compose network {subnet} is not allowed")
    if not subnets:
        problems.append("networks.default: fix the subnet, so allowed_networks can name it")
    return problems


def _receiver_problems(
    services: dict[str, Any], members: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    receivers = {n: s for n, s in services.items() if s.get("command", [None])[0] == "receiver"}
    if len(receivers) != 1:
        return [f"expected one receiver service, found {sorted(receivers)}"]
    ((name, receiver),) = receivers.items()
    command = receiver["command"]
    port = int(command[command.index("--port") + 1]) if "--port" in command else 8080
    problems = []
    for channel in config.get("channels", []):
        url = urlsplit(channel["url"])
        if (url.hostname, url.port) != (name, port):
            problems.append(f"channel {channel['name']}: expected {name}:{port}, got {url.netloc}")
        variable = SECRET_PREFIX + env_key(channel["name"])
        given = receiver.get("environment", {}).get(variable)
        for member, service in members.items():
            sent = service.get("environment", {}).get(channel.get("secret_env"))
            if given is None or given != sent:
                problems.append(
                    f"channel {channel['name']}: {name} {variable} ({given!r}) and {member} "
                    f"{channel.get('secret_env')} ({sent!r}) must be the same value"
                )
    return problems
