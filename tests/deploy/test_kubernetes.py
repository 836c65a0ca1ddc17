"""The kustomize overlays, rendered and checked offline: schemas, the StatefulSet's contract with
the service, secrets, the objects' references to each other, and KEDA on the input lag only."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.config import ConfigError

from .manifests import (
    KUBERNETES_VERSIONS,
    container,
    file_mount_problems,
    pod_config,
    scaledobject_problems,
    schema_problems,
    secret_problems,
    statefulset_problems,
    wiring_problems,
)
from .support import KUBERNETES, OVERLAYS, one, render, rendered

SECRET_EXAMPLE = KUBERNETES / "secret.example.yaml"
Objects = list[dict[str, Any]]


def objects_of(overlay: str) -> Objects:
    return copy.deepcopy(list(rendered(overlay)))


def all_problems(objects: Objects) -> list[str]:
    """Every check of this file on one overlay's objects."""
    statefulset = one(objects, "StatefulSet")
    example = list(yaml.safe_load_all(SECRET_EXAMPLE.read_text(encoding="utf-8")))
    problems = [p for o in objects for p in schema_problems(o)]
    try:
        config = pod_config(objects, statefulset)
    except ConfigError as exc:  # what the pod would print before exiting 2
        return problems + exc.problems
    problems += statefulset_problems(statefulset, config)
    problems += file_mount_problems(objects, statefulset)
    problems += secret_problems(objects, statefulset, example)
    problems += wiring_problems(objects)
    if any(o["kind"] == "ScaledObject" for o in objects):
        problems += scaledobject_problems(objects, config)
    return problems


def test_the_schemas_cover_old_and_new_kubernetes() -> None:
    assert KUBERNETES_VERSIONS[0] == "1.29"
    assert tuple(int(p) for p in KUBERNETES_VERSIONS[1].split(".")) >= (1, 33)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_service_and_passes_every_check(overlay: str) -> None:
    objects = objects_of(overlay)
    kinds = sorted(o["kind"] for o in objects)
    for kind in ("ConfigMap", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"):
        assert kind in kinds
    assert all_problems(objects) == []


def test_production_adds_keda_and_monitoring() -> None:
    kinds = {o["kind"] for o in objects_of("production")}
    assert {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert {o["metadata"]["namespace"] for o in objects_of("production")} == {"webhook-consumer"}


def test_dev_runs_two_members_without_autoscaling() -> None:
    objects = objects_of("dev")
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 2
    assert not [o for o in objects if o["kind"] in ("ScaledObject", "PrometheusRule")]


def test_the_replica_count_is_left_to_keda_in_production() -> None:
    assert "replicas" not in one(objects_of("production"), "StatefulSet")["spec"]


def test_a_broken_kustomization_fails_to_render(tmp_path: Path) -> None:
    copied = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copied)
    (copied / "overlays" / "production" / "scaledobject.yaml").unlink()
    with pytest.raises(AssertionError, match="kustomize build"):
        render(copied / "overlays" / "production")


def _sts(objects: Objects) -> dict[str, Any]:
    return one(objects, "StatefulSet")


def _trigger(objects: Objects) -> dict[str, Any]:
    trigger: dict[str, Any] = one(objects, "ScaledObject")["spec"]["triggers"][0]
    return trigger


def _env(objects: Objects) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = container(_sts(objects))["env"]
    return env


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in items if item["name"] == name)
    return found


def _drop_env(name: str) -> Callable[[Objects], None]:
    def mutate(objects: Objects) -> None:
        container(_sts(objects))["env"] = [e for e in _env(objects) if e["name"] != name]

    return mutate


def _set(path: str, value: Any, kind: str = "StatefulSet") -> Callable[[Objects], None]:
    def mutate(objects: Objects) -> None:
        *parents, last = path.split(".")
        node: Any = one(objects, kind)
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value

    return mutate


BREAKAGES: dict[str, tuple[Callable[[Objects], None], str]] = {
    "an unknown field": (
        _set("spec.template.spec.containers.0.imagePullPolicyy", "Always"),
        "'imagePullPolicyy' was unexpected",
    ),
    "a Deployment-style pod order": (
        _set("spec.podManagementPolicy", "OrderedReady"),
        "podManagementPolicy: expected Parallel",
    ),
    "no instance id from the pod name": (
        _drop_env("WEBHOOK_CONSUMER_INSTANCE_ID"),
        "WEBHOOK_CONSUMER_INSTANCE_ID",
    ),
    "a grace period shorter than the drain": (
        _set("spec.template.spec.terminationGracePeriodSeconds", 30),
        "terminationGracePeriodSeconds: 30 < kafka.shutdown_grace_seconds 30 + 15 s margin",
    ),
    "readiness on /healthz": (
        _set("spec.template.spec.containers.0.readinessProbe.httpGet.path", "/healthz"),
        "readinessProbe: expected GET /readyz",
    ),
    "a writable root file system": (
        _set("spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem", False),
        "readOnlyRootFilesystem",
    ),
    "root": (
        _set("spec.template.spec.securityContext.runAsUser", 0),
        "non-zero runAsUser",
    ),
    "no memory limit": (
        _set("spec.template.spec.containers.0.resources.limits", {}),
        "resources.limits: missing ['memory']",
    ),
    "an unpinned image": (
        _set("spec.template.spec.containers.0.image", "webhook-consumer:latest"),
        "image: expected a pinned tag",
    ),
    "a secret file no Secret is mounted for": (
        lambda objects: container(_sts(objects))["volumeMounts"].remove(
            _named(container(_sts(objects))["volumeMounts"], "redis-secrets")
        ),
        "/var/run/secrets/webhook-consumer/redis/password: the config reads it, no Secret",
    ),
    "a secret file mounted with subPath": (
        lambda objects: _named(container(_sts(objects))["volumeMounts"], "redis-secrets").update(
            {"mountPath": "/var/run/secrets/webhook-consumer/redis/password", "subPath": "password"}
        ),
        "mounted with subPath, never updated",
    ),
    "a mounted Secret key nobody documented": (
        lambda objects: _named(
            _sts(objects)["spec"]["template"]["spec"]["volumes"], "kafka-secrets"
        )["secret"]["items"][1].update({"key": "ca.pem"}),
        "secret webhook-consumer-kafka/ca.pem is read but not in secret.example.yaml",
    ),
    "a budget that keeps unhealthy pods": (
        lambda objects: one(objects, "PodDisruptionBudget")["spec"].pop(
            "unhealthyPodEvictionPolicy"
        ),
        "unhealthyPodEvictionPolicy: AlwaysAllow",
    ),
    "a monitor kube-prometheus-stack does not select": (
        lambda objects: one(objects, "ServiceMonitor")["metadata"]["labels"].pop("release"),
        "ServiceMonitor: expected a release label",
    ),
    "a lag threshold beside the in-flight bound": (
        lambda objects: _trigger(objects)["metadata"].update({"lagThreshold": "500"}),
        "lagThreshold: expected kafka.max_in_flight_per_partition (2000), got '500'",
    ),
    "a committed Secret": (
        lambda objects: objects.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak"}, "data": {}}
        ),
        "a Secret is part of the manifests: leak",
    ),
    "a secret key nobody documented": (
        _set("spec.secretTargetRef.0.key", "user", kind="TriggerAuthentication"),
        "secret webhook-consumer-kafka/user is read but not in secret.example.yaml",
    ),
    "a config file outside the mounted map": (
        _set("spec.template.spec.containers.0.args", ["run", "--config", "/etc/other.yaml"]),
        "--config /etc/other.yaml: no volume is mounted there",
    ),
    "a budget that selects no pod": (
        _set("spec.selector.matchLabels", {"app": "other"}, kind="PodDisruptionBudget"),
        "PodDisruptionBudget webhook-consumer: selects no pod",
    ),
    "a scrape of a port no Service has": (
        _set("spec.endpoints.0.port", "metrics", kind="ServiceMonitor"),
        "ServiceMonitor: port metrics is on no Service",
    ),
    "an alert with a prose duration": (
        lambda objects: one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"][0].update(
            {"for": "10 minutes"}
        ),
        "'10 minutes' does not match",
    ),
    "no topic: every topic of the group would count": (
        lambda objects: _trigger(objects)["metadata"].pop("topic"),
        "expected the input topic 'user-threshold-events', got None",
    ),
    "the lag of a delay topic": (
        lambda objects: _trigger(objects)["metadata"].update(
            {"topic": "webhook-consumer.retry.300s"}
        ),
        "expected the input topic",
    ),
    "another consumer group": (
        lambda objects: _trigger(objects)["metadata"].update({"consumerGroup": "other"}),
        "consumerGroup: expected 'webhook-consumer'",
    ),
    "more members than partitions": (
        _set("spec.maxReplicaCount", 13, kind="ScaledObject"),
        "maxReplicaCount: 13 pods x 1 workers > 12 input partitions",
    ),
    "workers multiply members": (
        _set(
            "spec.template.spec.containers.0.args",
            ["run", "--config", "/etc/webhook-consumer/config.yaml", "--workers", "2"],
        ),
        "maxReplicaCount: 12 pods x 2 workers > 12 input partitions",
    ),
    "scaling to zero": (
        _set("spec.minReplicaCount", 0, kind="ScaledObject"),
        "minReplicaCount: at least 1",
    ),
    "a boolean where KEDA wants a string": (
        lambda objects: _trigger(objects)["metadata"].update({"allowIdleConsumers": False}),
        "False is not of type 'string'",
    ),
    "a field KEDA does not document": (
        lambda objects: _trigger(objects)["metadata"].update({"lagTreshold": "5"}),
        "'lagTreshold' was unexpected",
    ),
    "a CPU trigger besides the lag": (
        lambda objects: one(objects, "ScaledObject")["spec"]["triggers"].append(
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}
        ),
        "only the input lag may scale, got type cpu",
    ),
    "SASL without credentials for KEDA": (
        lambda objects: _trigger(objects).pop("authenticationRef"),
        "Kafka wants SASL_SSL: set sasl and authenticationRef",
    ),
    "credentials that do not exist": (
        lambda objects: _trigger(objects)["authenticationRef"].update({"name": "missing"}),
        "no TriggerAuthentication missing",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_every_check_fails_on_a_broken_copy(breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    objects = objects_of("production")
    mutate(objects)
    problems = all_problems(objects)
    assert [p for p in problems if expected in p], problems
