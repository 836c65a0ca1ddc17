"""The YAML configuration: its shape, its validation, and loading with secrets resolved.

Every problem is reported at once, each as `<file>: <field path>: <what was expected>`, so an
operator fixes a config in one pass instead of one error per restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from yarl import URL

from .attributes.urls import check_url, remember_password
from .config_checks import USERINFO, cross_check, shown

ParamType = Literal["string", "integer", "number", "boolean"]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def is_dotted_quad(host: str) -> bool:
    """127.0.0.1, not 2130706433 or 0177.0.0.1: other spellings are refused when sending."""
    parts = host.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "webhook-consumer"
    topic: str = "user-threshold-events"
    dead_letter_topic: str = "webhook-dead-letters"
    retry_topic_prefix: str = "webhook-retry"  # one delay topic per distinct schedule delay
    client_id: str = "webhook-consumer"
    create_topics: bool = True
    topic_partitions: PositiveInt = 3
    replication_factor: PositiveInt = 1
    max_poll_records: PositiveInt = 500
    max_in_flight_per_partition: PositiveInt = 2000
    commit_interval_ms: PositiveInt = 500
    revoke_grace_seconds: PositiveFloat = 10.0
    shutdown_grace_seconds: PositiveFloat = 30.0


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


class CircuitBreakerConfig(_Model):
    failures: PositiveInt = 5  # consecutive retryable failures that open the circuit
    cooldown_seconds: PositiveFloat = 30.0  # open this long, then one probe (half-open)


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
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()

    @property
    def park_seconds(self) -> float:
        """How long congested work waits on the delay path; it does not use up the schedule."""
        return self.schedule_seconds[0] if self.schedule_seconds else 5.0


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
    format: Literal["json", "console"] = "json"


class ServiceConfig(_Model):
    kafka: KafkaConfig = KafkaConfig()
    attributes: AttributesConfig = AttributesConfig()
    allowed_networks: list[IPv4Network | IPv6Network] = []
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


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, validate and cross-check a config file; raise ConfigError with every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read the file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError(source, ["not usable YAML: nested too deeply"]) from None
    return parse_config(data, source, os.environ if environ is None else environ)


def parse_config(data: object, source: str, environ: Mapping[str, str]) -> ServiceConfig:
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
    problems.extend(cross_check(data, environ))
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
    if "got " in message:
        return f"{path}: {message}"
    return f"{path}: {message[0].lower()}{message[1:]}, got {shown(error['input'])}"


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
