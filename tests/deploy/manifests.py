"""Checks of rendered Kubernetes objects; each returns the problems it finds ([] when none).

Kept apart from the tests so the tests can show that every check fails on a broken copy.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate.utils as kubernetes_schemas
import yaml

from consumer.config import ServiceConfig

from .support import SCHEMAS, config_of, config_text, secret_files, secret_variables

# The oldest Kubernetes these manifests claim to work with, and the newest one whose schemas
# the installed kubernetes-validate bundles (1.37 with kubernetes-validate 1.37.0).
KUBERNETES_VERSIONS = ("1.29", kubernetes_schemas.major_minor(kubernetes_schemas.latest_version()))
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator.json",
}
ADMIN_PORT = 9108
# What the kubelet's SIGKILL must leave after the drain: final commit, flush, leaving the group.
GRACE_MARGIN_SECONDS = 15


@cache
def _custom_schema(file: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / file).read_text(encoding="utf-8"))
    return schema


def _where(path: Any) -> str:
    return "/".join(str(p) for p in path) or "(top)"


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """Built-in kinds against Kubernetes' own schemas (strict: no unknown fields), the custom
    kinds against the schemas in tests/deploy/schemas."""
    return list(_schema_problems(json.dumps(obj, sort_keys=True)))


@cache  # kubernetes-validate reads its schema files on every call: once per distinct object
def _schema_problems(document: str) -> tuple[str, ...]:
    obj = json.loads(document)
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    custom = CUSTOM_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
    if custom is not None:
        root = _custom_schema(custom)
        schema = {**root, "$ref": f"#/$defs/{obj['kind']}"}
        validator = jsonschema.Draft202012Validator(schema)
        return tuple(
            f"{name}: {_where(e.absolute_path)}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        )
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_schemas.validate(obj, version, strict=True)
        except kubernetes_schemas.ValidationError as exc:
            problems.append(f"{name} (Kubernetes {version}): {_where(exc.path)}: {exc.message}")
        except kubernetes_schemas.SchemaNotFoundError as exc:
            problems.append(f"{name}: {exc.message}")
    return tuple(problems)


def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "webhook-consumer")
    return found


def env_sources(statefulset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(statefulset).get("env", [])}


def workers(statefulset: dict[str, Any]) -> int:
    """Group members per pod: `run --workers N`, 1 without it."""
    args = [str(a) for a in container(statefulset).get("args", [])]
    for i, arg in enumerate(args):
        if arg == "--workers":
            return int(args[i + 1])
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    return 1


def pod_config(objects: Any, statefulset: dict[str, Any]) -> ServiceConfig:
    """The rendered config, loaded with exactly the variables the pod gets: a secret_env the
    pod does not set fails here as it would at start."""
    text = config_text(objects)
    environ = {name: "set-by-the-pod" for name in env_sources(statefulset)}
    return config_of(text, environ, "ConfigMap webhook-consumer-config: config.yaml")


def _probe(cont: dict[str, Any], kind: str) -> tuple[str | None, Any]:
    get = cont.get(kind, {}).get("httpGet", {})
    return get.get("path"), get.get("port")


def statefulset_problems(statefulset: dict[str, Any], config: ServiceConfig) -> list[str]:
    problems = []
    spec, pod = statefulset["spec"], statefulset["spec"]["template"]["spec"]
    cont = container(statefulset)
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append("podManagementPolicy: expected Parallel (members start and stop at once)")
    instance = env_sources(statefulset).get("WEBHOOK_CONSUMER_INSTANCE_ID", {})
    if instance.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        problems.append("env WEBHOOK_CONSUMER_INSTANCE_ID: expected the pod name (metadata.name)")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = config.kafka.shutdown_grace_seconds + GRACE_MARGIN_SECONDS
    if grace < needed:
        problems.append(
            f"terminationGracePeriodSeconds: {grace} < kafka.shutdown_grace_seconds "
            f"{config.kafka.shutdown_grace_seconds:g} + {GRACE_MARGIN_SECONDS} s margin"
        )
    ports = {p["name"]: p["containerPort"] for p in cont.get("ports", [])}
    if ports.get("admin") != ADMIN_PORT:
        problems.append(f"ports: expected admin = {ADMIN_PORT}, got {ports}")
    for kind, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        if _probe(cont, kind) != (path, "admin"):
            problems.append(f"{kind}: expected GET {path} on port admin, got {_probe(cont, kind)}")
    pod_security, security = pod.get("securityContext", {}), cont.get("securityContext", {})
    if not pod_security.get("runAsNonRoot") or pod_security.get("runAsUser") in (None, 0):
        problems.append("securityContext: expected runAsNonRoot and a non-zero runAsUser")
    if not security.get("readOnlyRootFilesystem"):
        problems.append("container securityContext: expected readOnlyRootFilesystem: true")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("container securityContext: expected allowPrivilegeEscalation: false")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("container securityContext: expected capabilities.drop: [ALL]")
    resources = cont.get("resources", {})
    for part, names in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        missing = [n for n in names if n not in resources.get(part, {})]
        if missing:
            problems.append(f"resources.{part}: missing {missing}")
    image = str(cont.get("image", ""))
    if not re.search(r":[\w][\w.-]*$", image) or image.endswith(":latest"):
        problems.append(f"image: expected a pinned tag, got {image!r}")
    problems.extend(_config_mount_problems(statefulset))
    return problems


def secret_volumes(statefulset: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Mounted file path -> (Secret name, key), for every Secret volume the container mounts.
    A volume without items is mounted whole: any key of its Secret, so `key` is then "*"."""
    cont, pod = container(statefulset), statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("secret") for v in pod.get("volumes", []) if "secret" in v}
    files: dict[str, tuple[str, str]] = {}
    for mount in cont.get("volumeMounts", []):
        secret = volumes.get(mount["name"])
        if secret is None:
            continue
        folder = mount["mountPath"].rstrip("/")
        if "subPath" in mount:  # a subPath mount is never updated: no rotation
            files[folder] = (secret["secretName"], "subPath")
            continue
        for item in secret.get("items") or [{"key": "*", "path": "*"}]:
            files[f"{folder}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def file_mount_problems(objects: Any, statefulset: dict[str, Any]) -> list[str]:
    """Every file the config reads a secret or CA from is a key of a Secret mounted whole (no
    subPath, which the kubelet never updates): present at start, updated on rotation."""
    mounted = secret_volumes(statefulset)
    problems = []
    for path in sorted(secret_files(config_text(objects))):
        folder = path.rsplit("/", 1)[0]
        source = mounted.get(path) or mounted.get(f"{folder}/*")
        if source is None:
            problems.append(f"{path}: the config reads it, no Secret is mounted there")
        elif source[1] == "subPath":
            problems.append(f"{path}: mounted with subPath, never updated when the Secret is")
    return problems


def secret_keys_read(objects: Any, statefulset: dict[str, Any]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the pod reads: variables, mounted items, and the files the config
    names inside a Secret mounted whole."""
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in env_sources(statefulset).values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    mounted = secret_volumes(statefulset)
    refs |= {source for source in mounted.values() if source[1] not in ("*", "subPath")}
    for path in secret_files(config_text(objects)):
        folder, name = path.rsplit("/", 1)
        whole = mounted.get(f"{folder}/*")
        if whole is not None and path not in mounted:
            refs.add((whole[0], name))
    return refs


def _config_mount_problems(statefulset: dict[str, Any]) -> list[str]:
    cont, pod = container(statefulset), statefulset["spec"]["template"]["spec"]
    args = [str(a) for a in cont.get("args", [])]
    if "--config" not in args:
        return ["args: expected --config <file>"]
    path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in cont.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(folder):
            source = volumes.get(mount["name"], {}).get("configMap", {})
            key = path[len(folder) :]
            if not source.get("name", "").startswith("webhook-consumer-config"):
                return [f"--config {path}: its volume is not the webhook-consumer-config map"]
            if key != "config.yaml":
                return [f"--config {path}: the ConfigMap has config.yaml, not {key}"]
            return []
    return [f"--config {path}: no volume is mounted there"]


def secret_problems(objects: Any, statefulset: dict[str, Any], example: list[Any]) -> list[str]:
    """Secret values are never rendered; every secret the pod or KEDA reads is documented in
    secret.example.yaml; every secret variable of the config comes from a secretKeyRef."""
    problems = [
        f"a Secret is part of the manifests: {o['metadata']['name']}"
        for o in objects
        if o["kind"] == "Secret"
    ]
    documented = {
        (doc["metadata"]["name"], key) for doc in example for key in doc.get("stringData", {})
    }
    refs = secret_keys_read(objects, statefulset)
    for o in objects:
        if o["kind"] == "TriggerAuthentication":
            refs |= {(r["name"], r["key"]) for r in o["spec"].get("secretTargetRef", [])}
    for name, key in sorted(refs - documented):
        problems.append(f"secret {name}/{key} is read but not in secret.example.yaml")
    sources = env_sources(statefulset)
    for variable in sorted(secret_variables(config_text(objects))):
        source = sources.get(variable, {})
        if "secretKeyRef" not in source.get("valueFrom", {}):
            problems.append(f"env {variable}: a secret of the config, expected a secretKeyRef")
    return problems


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def wiring_problems(objects: Any) -> list[str]:
    """The objects refer to each other: selectors, service name, ConfigMap, ports."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    (statefulset,) = by_kind["StatefulSet"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    problems = []
    if not _matches(statefulset["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("StatefulSet: its selector does not match its pod labels")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    governing = services.get(statefulset["spec"]["serviceName"])
    if governing is None or governing["spec"].get("clusterIP") != "None":
        problems.append("StatefulSet: serviceName must name a headless Service")
    for service in services.values():
        if not _matches(service["spec"].get("selector", {}), pod_labels):
            problems.append(f"Service {service['metadata']['name']}: selects no pod")
        port_names = {p["name"] for p in container(statefulset).get("ports", [])}
        for port in service["spec"].get("ports", []):
            if port.get("targetPort") not in port_names:
                problems.append(f"Service: targetPort {port.get('targetPort')} is no pod port")
    for budget in by_kind.get("PodDisruptionBudget", []):
        if not _matches(budget["spec"]["selector"]["matchLabels"], pod_labels):
            problems.append(f"PodDisruptionBudget {budget['metadata']['name']}: selects no pod")
        if budget["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problems.append(
                "PodDisruptionBudget: expected unhealthyPodEvictionPolicy: AlwaysAllow (a pod "
                "that never turns ready must not block node drains)"
            )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for monitor in by_kind.get(kind, []):
            if "release" not in monitor["metadata"].get("labels", {}):
                problems.append(
                    f"{kind}: expected a release label (kube-prometheus-stack selects by it)"
                )
    for monitor in by_kind.get("ServiceMonitor", []):
        chosen = [
            s
            for s in services.values()
            if _matches(monitor["spec"]["selector"].get("matchLabels", {}), s["metadata"]["labels"])
        ]
        if not chosen:
            problems.append(f"ServiceMonitor {monitor['metadata']['name']}: selects no Service")
        ports = {p["name"] for s in chosen for p in s["spec"].get("ports", [])}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in ports:
                problems.append(f"ServiceMonitor: port {endpoint.get('port')} is on no Service")
    maps = {m["metadata"]["name"] for m in by_kind.get("ConfigMap", [])}
    for volume in statefulset["spec"]["template"]["spec"].get("volumes", []):
        if "configMap" in volume and volume["configMap"]["name"] not in maps:
            problems.append(f"volume {volume['name']}: no ConfigMap {volume['configMap']['name']}")
    return problems


def kafka_section(objects: Any) -> dict[str, Any]:
    """The kafka section of the rendered config (security_protocol and the like)."""
    document = yaml.safe_load(config_text(objects))
    kafka: dict[str, Any] = document.get("kafka", {})
    return kafka


def scaledobject_problems(objects: Any, config: ServiceConfig) -> list[str]:
    """KEDA scales the StatefulSet on the input topic's lag only, within the partition count."""
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    if len(scaled) != 1:
        return [f"expected one ScaledObject, found {len(scaled)}"]
    spec = scaled[0]["spec"]
    problems = []
    target = spec["scaleTargetRef"]
    wanted = ("apps/v1", "StatefulSet", statefulset["metadata"]["name"])
    if (target.get("apiVersion"), target.get("kind"), target.get("name")) != wanted:
        problems.append(f"scaleTargetRef: expected {wanted}, got {target}")
    kafka = config.kafka
    for i, trigger in enumerate(spec["triggers"]):
        where, metadata = f"triggers[{i}]", trigger.get("metadata", {})
        if trigger.get("type") != "kafka":
            problems.append(
                f"{where}: only the input lag may scale, got type {trigger.get('type')}"
            )
            continue
        if metadata.get("topic") != kafka.topic:
            problems.append(
                f"{where}.metadata.topic: expected the input topic {kafka.topic!r}, got "
                f"{metadata.get('topic')!r} (without it KEDA counts the delay topics too)"
            )
        if metadata.get("consumerGroup") != kafka.group_id:
            problems.append(f"{where}.metadata.consumerGroup: expected {kafka.group_id!r}")
        if metadata.get("bootstrapServers") != kafka.bootstrap_servers:
            problems.append(
                f"{where}.metadata.bootstrapServers: expected {kafka.bootstrap_servers!r}"
            )
        if metadata.get("lagThreshold") != str(kafka.max_in_flight_per_partition):
            problems.append(
                f"{where}.metadata.lagThreshold: expected kafka.max_in_flight_per_partition "
                f"({kafka.max_in_flight_per_partition}), got {metadata.get('lagThreshold')!r}"
            )
        if metadata.get("allowIdleConsumers") == "true":
            problems.append(f"{where}.metadata.allowIdleConsumers: members beyond partitions idle")
        ref = trigger.get("authenticationRef", {}).get("name")
        auths = {o["metadata"]["name"] for o in objects if o["kind"] == "TriggerAuthentication"}
        if ref is not None and ref not in auths:
            problems.append(f"{where}.authenticationRef: no TriggerAuthentication {ref}")
    protocol = str(kafka_section(objects).get("security_protocol", "PLAINTEXT"))
    for i, trigger in enumerate(spec["triggers"]):
        metadata = trigger.get("metadata", {})
        if protocol.startswith("SASL") and not (
            "sasl" in metadata and "authenticationRef" in trigger
        ):
            problems.append(
                f"triggers[{i}]: Kafka wants {protocol}: set sasl and authenticationRef"
            )
        if protocol.endswith("SSL") and metadata.get("tls") != "enable":
            problems.append(f"triggers[{i}]: Kafka wants {protocol}: set tls: enable")
    if spec.get("minReplicaCount", 0) < 1:
        problems.append("minReplicaCount: at least 1, or due retries on delay topics wait")
    members = spec.get("maxReplicaCount", 100) * workers(statefulset)
    if members > kafka.topic_partitions:
        problems.append(
            f"maxReplicaCount: {spec.get('maxReplicaCount', 100)} pods x {workers(statefulset)} "
            f"workers > {kafka.topic_partitions} input partitions (kafka.topic_partitions)"
        )
    return problems
