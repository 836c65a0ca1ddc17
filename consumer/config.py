"""The YAML configuration: its shape, its validation, and loading with secrets resolved.

Every problem is reported at once, each as `<file>: <field path>: <what was expected>`, so an
operator fixes a config in one pass instead of one error per restart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yarl import URL

from .attributes.urls import check_url, remember_password
from .config_checks import USERINFO, cross_check, shown

ParamType = Literal["string", "integer", "number", "boolean"]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
_TOPIC_CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")  # also in the schema, for editors


def _topic_name(value: str) -> str:
    """What the broker accepts; anything else would fail only when `run` creates the topic."""
    if not _TOPIC_CHARACTERS.fullmatch(value) or value in (".", ".."):
        raise ValueError("expected a Kafka topic name: letters, digits, '.', '_' and '-' only")
    return value


def _network(value: object) -> IPv4Network | IPv6Network:
    expected = "expected an IPv4 or IPv6 network like 10.0.0.0/8"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {value!r}")  # a number would parse as an address
    try:
        return ip_network(value)
    except ValueError:
        pass
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{expected}, got {value!r}") from None
    raise ValueError(f"{expected}, got {value!r} (host bits set; the network is {loose})")


KafkaName = Annotated[str, Field(min_length=1)]
TopicName = Annotated[
    str,
    Field(min_length=1, max_length=249, json_schema_extra={"pattern": "^[A-Za-z0-9._-]+$"}),
    AfterValidator(_topic_name),
]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


def is_dotted_quad(host: str) -> bool:
    """127.0.0.1, not 2130706433 or 0177.0.0.1: other spellings are refused when sending."""
    parts = host.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaTlsConfig(_Model):
    """TLS to the brokers (security_protocol SSL or SASL_SSL); host names are always verified."""

    ca_bundle: Path | None = None  # PEM CAs that sign the brokers' certificates; default: system's
    client_cert: Path | None = None  # PEM certificate (chain) for mutual TLS
    client_key: Path | None = None  # its PEM private key; default: the key inside client_cert
    client_key_password_env: str | None = None  # when the private key is encrypted
    client_key_password_file: Path | None = None


DEFAULT_GROUP = "webhook-consumer"


class KafkaConfig(_Model):
    bootstrap_servers: KafkaName = "127.0.0.1:9092"
    group_id: KafkaName = DEFAULT_GROUP
    topic: TopicName = "user-threshold-events"
    # Both default to names derived from group_id (`<group_id>.dlq`, `<group_id>.retry`), so
    # two deployments sharing a cluster never read each other's delay records.
    dead_letter_topic: TopicName = f"{DEFAULT_GROUP}.dlq"
    retry_topic_prefix: TopicName = f"{DEFAULT_GROUP}.retry"  # delay topics: `<prefix>.<delay>`
    client_id: KafkaName = "webhook-consumer"
    create_topics: bool = True
    topic_partitions: PositiveInt = 3
    replication_factor: PositiveInt = 1
    max_poll_records: PositiveInt = 500
    max_in_flight_per_partition: PositiveInt = 2000
    # Records of a delay topic read ahead of a head that is not due yet, so one record with a
    # late due time does not hold back those behind it that are due sooner.
    delay_lookahead_records: PositiveInt = 256
    commit_interval_ms: PositiveInt = 500
    revoke_grace_seconds: PositiveFloat = 10.0
    shutdown_grace_seconds: PositiveFloat = 30.0
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None  # required with SASL_SSL and SASL_PLAINTEXT
    sasl_username: str | None = None  # PLAIN and SCRAM
    sasl_password_env: str | None = None  # PLAIN and SCRAM: exactly one of these two
    sasl_password_file: Path | None = None
    sasl_oauth_token_file: Path | None = None  # OAUTHBEARER: read again at every login
    tls: KafkaTlsConfig = KafkaTlsConfig()
    session_timeout_ms: PositiveInt = 45_000
    heartbeat_interval_ms: PositiveInt = 3_000
    # How long the group waits for members to rejoin; must cover the revoke grace, or a member
    # still finishing its revoked work is thrown out of the group. Default: grace + 30 s.
    rebalance_timeout_ms: PositiveInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _derive_topic_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        group = data.get("group_id", DEFAULT_GROUP)
        if not isinstance(group, str):
            return data  # reported by the field's own validation
        derived = {"dead_letter_topic": f"{group}.dlq", "retry_topic_prefix": f"{group}.retry"}
        return {**data, **{k: v for k, v in derived.items() if data.get(k) is None}}

    @model_validator(mode="after")
    def _rebalance_covers_grace(self) -> KafkaConfig:
        if self.rebalance_timeout_ms is not None and (
            self.rebalance_timeout_ms <= self.revoke_grace_seconds * 1000
        ):
            raise ValueError(
                f"expected rebalance_timeout_ms above revoke_grace_seconds "
                f"({self.revoke_grace_seconds * 1000:.0f} ms), got {self.rebalance_timeout_ms}"
            )
        return self

    @property
    def effective_rebalance_timeout_ms(self) -> int:
        if self.rebalance_timeout_ms is not None:
            return self.rebalance_timeout_ms
        return int(self.revoke_grace_seconds * 1000) + 30_000


class AttributesConfig(_Model):
    backend: Literal["sqlite", "redis"] = "sqlite"
    # sqlite:///<path>; redis://host[:port][/db], rediss://... (TLS) or unix:///<socket>
    url: Annotated[str, Field(validate_default=True)] = "sqlite:///./attributes.db"
    key_prefix: str = "webhook-consumer:attrs:"  # redis: one hash per user, <key_prefix><user_id>
    # redis: connecting, and each round trip; sqlite: waiting for another writer's lock
    timeout_seconds: PositiveFloat = 3.0
    # Lookups are remembered this long, found or not; 0 turns the cache off.
    cache_ttl_seconds: Annotated[float, Field(ge=0)] = 30.0
    cache_max_users: PositiveInt = 100_000  # the oldest entries go first
    # redis: the password (AUTH) comes from here rather than from the URL, like every secret.
    password_env: str | None = None
    password_file: Path | None = None
    # rediss://: PEM file of the CAs to trust instead of the system's; always verified.
    ca_bundle: Path | None = None

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str, info: ValidationInfo) -> str:
        # Static checks only, no connection: check-config must work where the store is not
        # reachable yet (a CI lint step, a build machine, before Redis is deployed).
        remember_password(value)  # whatever else goes wrong, it never reaches a log
        backend = info.data.get("backend")
        if isinstance(backend, str):  # else backend itself is reported
            check_url(backend, value)
        return value


class RateLimiterConfig(_Model):
    """Where channel limits live: `local` holds them per process; `redis` holds each channel's
    rate, concurrency cap and circuit across every replica of the consumer group."""

    backend: Literal["local", "redis"] = "local"
    # redis only (and then required), the forms of attributes.url: redis://, rediss:// (TLS)
    # or unix://; like password_env, password_file and ca_bundle, refused with backend local.
    url: str | None = None
    key_prefix: str = "webhook-consumer:limits:"  # then the group id and channel name
    # Each round trip gives up after this, and the limits fall back to a per-replica share:
    # a delivery never waits long on a Redis that does not answer.
    timeout_seconds: Annotated[float, Field(gt=0, le=1)] = 0.5
    password_env: str | None = None
    password_file: Path | None = None
    ca_bundle: Path | None = None  # rediss://: PEM CAs to trust instead of the system's

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str | None) -> str | None:
        if value is not None:
            remember_password(value)  # whatever else goes wrong, it never reaches a log
            check_url("redis", value)
        return value


class CircuitBreakerConfig(_Model):
    failures: PositiveInt = 5  # consecutive failures (5xx, timeouts, connection errors) to open
    cooldown_seconds: PositiveFloat = 30.0  # open this long, then one probe (half-open)
    # Each failed probe doubles the cool-down up to this, so a long outage costs few probes.
    max_cooldown_seconds: PositiveFloat = 300.0


class RetryConfig(_Model):
    quick_attempts: PositiveInt = 3
    # After the quick attempts, one attempt after each of these delays (Svix's schedule).
    schedule_seconds: list[PositiveFloat] = [5, 300, 1800, 7200, 18000, 36000, 36000]
    backoff_initial_ms: PositiveFloat = 200.0
    backoff_max_ms: PositiveFloat = 5000.0
    retry_after_max_seconds: PositiveFloat = 30.0  # longest in-process wait a receiver may ask
    # A channel whose queue would take longer than this to send parks new work on the delay
    # path instead of holding it (and its input offsets) in memory.
    max_backlog_seconds: PositiveFloat = 5.0
    # Parking is paced by the lane's throughput; after this many park writes a delivery is
    # queued whatever the backlog, so no delivery is rewritten without end.
    max_parks: PositiveInt = 8
    # The safety net: a delivery older than this is dead-lettered (reason max_age) at its next
    # turn, however it waited. Default: the schedule's total plus max(10 minutes, a quarter).
    max_age_seconds: PositiveFloat | None = None
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()

    @property
    def max_age(self) -> float:
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        total = sum(self.schedule_seconds)
        return total + max(600.0, total / 4)


class RateLimitConfig(_Model):
    per_second: PositiveFloat
    burst: PositiveInt | None = None  # default: one second's worth

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, round(self.per_second))


class BatchConfig(_Model):
    max_users: PositiveInt = 1
    linger_ms: Annotated[int, Field(ge=0)] = 0


class BasicAuthConfig(_Model):
    username: str
    password_env: str | None = None
    password_file: Path | None = None


class TlsConfig(_Model):
    # PEM file of the CAs to trust instead of the system's; verification is never switched off.
    ca_bundle: Path | None = None
    require_https: bool = False  # refuse http:// channel URLs at start


class ChannelTlsConfig(_Model):
    ca_bundle: Path | None = None  # default: the top-level tls.ca_bundle, else the system CAs
    require_https: bool | None = None  # default: the top-level tls.require_https


class StandardWebhooksConfig(_Model):
    """Also sign as Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)."""

    secret_env: str | None = None  # holds "whsec_<base64 of 24..64 random bytes>"
    secret_file: Path | None = None
    # A rotation: the old secret keeps signing too, until previous_valid_until.
    previous_secret_env: str | None = None
    previous_secret_file: Path | None = None
    previous_valid_until: AwareDatetime | None = None


class ChannelConfig(_Model):
    name: Annotated[str, Field(min_length=1)]
    url: str
    query: dict[str, str] = {}
    secret_env: str | None = None
    secret_file: Path | None = None
    basic_auth: BasicAuthConfig | None = None
    template_params: dict[str, ParamType] = {}
    user_attributes: list[str] = []
    rate_limit: RateLimitConfig | None = None
    max_concurrency: PositiveInt = 16
    timeout_seconds: PositiveFloat = 10.0
    batch: BatchConfig = BatchConfig()
    tls: ChannelTlsConfig = ChannelTlsConfig()
    standard_webhooks: StandardWebhooksConfig | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        shown = USERINFO.sub("//***@", value)  # never echo a password written into a URL
        try:
            url = URL(value)
        except ValueError as exc:
            raise ValueError(f"expected an http(s) URL, got {shown!r} ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an absolute http:// or https:// URL, got {shown!r}")
        if url.raw_user is not None or url.raw_password is not None:
            raise ValueError(
                "expected no credentials in the URL (use basic_auth with password_env or "
                f"password_file), got {shown!r}"
            )
        host = url.raw_host or ""
        if host.replace(".", "").isdigit() and not is_dotted_quad(host):
            raise ValueError(
                f"expected a host name or a dotted-quad IPv4 address, got {url.raw_host!r}"
            )
        return value


class CampaignConfig(_Model):
    id: Annotated[str, Field(min_length=1)]
    channels: Annotated[list[str], Field(min_length=1)]
    template_params: dict[str, Any] = {}


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: JSON unless stderr is a terminal


class ServiceConfig(_Model):
    kafka: KafkaConfig = KafkaConfig()
    attributes: AttributesConfig = AttributesConfig()
    rate_limiter: RateLimiterConfig = RateLimiterConfig()
    allowed_networks: list[Network] = []
    tls: TlsConfig = TlsConfig()
    retry: RetryConfig = RetryConfig()
    logging: LoggingConfig = LoggingConfig()
    channels: Annotated[list[ChannelConfig], Field(min_length=1)]
    campaigns: list[CampaignConfig] = []


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every reason found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def load_config(
    path: str | Path, environ: Mapping[str, str] | None = None, webhook_secrets: bool = True
) -> ServiceConfig:
    """Read, validate and cross-check a config file; raise ConfigError with every problem.

    `webhook_secrets=False` does not require the channels' secrets (for `dlq` commands)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read the file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc, text)]) from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError(source, ["not usable YAML: nested too deeply"]) from None
    environ = os.environ if environ is None else environ
    return parse_config(data, source, environ, webhook_secrets)


def parse_config(
    data: object, source: str, environ: Mapping[str, str], webhook_secrets: bool = True
) -> ServiceConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a mapping at the top level, got {_kind(data)}"])
    problems: list[str] = []
    config: ServiceConfig | None = None
    try:
        config = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
    # Cross-references are checked on the raw data too, so they are reported even when some
    # unrelated field failed validation.
    problems.extend(cross_check(data, environ, webhook_secrets))
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def _describe(error: Any) -> str:
    path = _path(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{path}: required field is missing"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown field"
    if error["type"] == "string_too_short" and error.get("ctx", {}).get("min_length") == 1:
        return f"{path}: expected a non-empty string, got {shown(error['input'])}"
    if "got " in message:
        return f"{path}: {message}"
    return f"{path}: {message[0].lower()}{message[1:]}, got {shown(error['input'])}"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """One line, located in the file: PyYAML's own text names "<unicode string>" and spans
    several lines."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or exc.context or "unreadable"
        begun = exc.context_mark
        if exc.problem and exc.context and begun is not None and begun.line != mark.line:
            what += f" ({exc.context} at line {begun.line + 1}, column {begun.column + 1})"
        return f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what}"
    if isinstance(exc, yaml.reader.ReaderError):  # located by character index only
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"line {line}, column {column}: not valid YAML: {exc.reason} (U+{character:04X})"
    return "not valid YAML: " + " ".join(str(exc).split())


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _kind(value: object) -> str:
    return "nothing (empty file)" if value is None else type(value).__name__
