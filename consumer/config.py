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
from .config_checks import cross_check, shown
from .config_secrets import USERINFO
from .confighints import closest_field
from .guard import is_dotted_quad

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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaTlsConfig(_Model):
    """TLS to the brokers (security_protocol SSL or SASL_SSL); host names are always verified."""

    ca_bundle: Path | None = Field(
        None,
        description="PEM file of the CAs that sign the brokers' certificates; "
        "default: the system's CAs.",
    )
    client_cert: Path | None = Field(
        None, description="PEM certificate (chain) presented to the brokers, for mutual TLS."
    )
    client_key: Path | None = Field(
        None, description="PEM private key of client_cert; default: the key inside client_cert."
    )
    client_key_password_env: str | None = Field(
        None, description="Environment variable holding the password of an encrypted client_key."
    )
    client_key_password_file: Path | None = Field(
        None, description="File holding the password of an encrypted client_key (instead of _env)."
    )


DEFAULT_GROUP = "webhook-consumer"


class KafkaConfig(_Model):
    """The cluster, the consumer group, the topics, and how the group reads and commits."""

    bootstrap_servers: KafkaName = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of brokers to start from."
    )
    group_id: KafkaName = Field(
        DEFAULT_GROUP,
        description="Consumer group of the input and delay topics; also names the derived topics.",
    )
    topic: TopicName = Field(
        "user-threshold-events", description="Input topic of threshold events."
    )
    # Both default to names derived from group_id (`<group_id>.dlq`, `<group_id>.retry`), so
    # two deployments sharing a cluster never read each other's delay records.
    dead_letter_topic: TopicName = Field(
        f"{DEFAULT_GROUP}.dlq",
        description="Dead-letter topic. Default: `<group_id>.dlq`.",
    )
    retry_topic_prefix: TopicName = Field(
        f"{DEFAULT_GROUP}.retry",
        description="Delay topics are `<prefix>.<delay>` (`.5s`, `.300s`, ...). "
        "Default: `<group_id>.retry`.",
    )
    channels_topic: TopicName = Field(
        f"{DEFAULT_GROUP}.channels",
        description="Compacted topic of the channels' state (disabled by a 410 or by "
        "`webhook-consumer channels`), followed by every replica; created when missing. "
        "Default: `<group_id>.channels`.",
    )
    order_topic: TopicName = Field(
        f"{DEFAULT_GROUP}.order",
        description="Compacted topic naming the deliveries of `ordering: per_user` channels "
        "that wait outside a process; used only when a channel asks for that ordering. "
        "Default: `<group_id>.order`.",
    )
    client_id: KafkaName = Field(
        "webhook-consumer", description="Client id every Kafka client of the process sends."
    )
    create_topics: bool = Field(
        True,
        description="Create missing input, dead-letter and delay topics at start "
        "(rather than rely on broker auto-creation).",
    )
    topic_partitions: PositiveInt = Field(
        3, description="Partitions of each topic the service creates."
    )
    replication_factor: PositiveInt = Field(
        1, description="Replication factor of each topic the service creates."
    )
    # A hand-off counts as durable once acks=all is answered: that means something only when
    # the topic demands more than one in-sync replica.
    min_insync_replicas: PositiveInt | None = Field(
        None,
        description="min.insync.replicas of each topic the service creates. Default: 2 when "
        "replication_factor is 3 or more, else 1.",
    )
    max_poll_records: PositiveInt = Field(500, description="Most records taken from one fetch.")
    max_in_flight_per_partition: PositiveInt = Field(
        2000,
        description="Unfinished records a partition may hold before it is paused; "
        "it resumes at half.",
    )
    # Records of a delay topic read ahead of a head that is not due yet, so one record with a
    # late due time does not hold back those behind it that are due sooner.
    delay_lookahead_records: PositiveInt = Field(
        1000,
        description="Delay records held in memory per partition while they wait for their due "
        "time; a partition holding this many (or 4 MiB of them) is paused.",
    )
    commit_interval_ms: PositiveInt = Field(
        500, description="How often finished offsets are committed."
    )
    # Finished offsets above each commit point travel in its metadata, up to the broker's
    # offset.metadata.max.bytes (4096 by default): a restart skips them instead of redoing them.
    offset_metadata_max_bytes: PositiveInt = Field(
        4096,
        description="Size limit of the commit metadata listing offsets finished above the "
        "commit point; keep it within the broker's offset.metadata.max.bytes.",
    )
    revoke_grace_seconds: PositiveFloat = Field(
        10.0,
        description="How long a revoked partition's in-flight work may take to finish before "
        "the commit; the rest is redone by the next owner.",
    )
    shutdown_grace_seconds: PositiveFloat = Field(
        30.0,
        description="How long SIGTERM/SIGINT waits for in-flight work before the last commit.",
    )
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="How every Kafka client of the process connects."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="Required with SASL_SSL and SASL_PLAINTEXT."
    )
    sasl_username: str | None = Field(None, description="User name for PLAIN and SCRAM.")
    sasl_password_env: str | None = Field(
        None,
        description="Environment variable holding the PLAIN or SCRAM password "
        "(exactly one of _env and _file).",
    )
    sasl_password_file: Path | None = Field(
        None, description="File holding the PLAIN or SCRAM password."
    )
    sasl_oauth_token_file: Path | None = Field(
        None, description="OAUTHBEARER: file holding the token, read again at every login."
    )
    tls: KafkaTlsConfig = Field(
        KafkaTlsConfig(), description="TLS to the brokers (SSL and SASL_SSL only)."
    )
    # Static membership (KIP-345): a member that comes back under the same id within the
    # session timeout gets its partitions back without a rebalance.
    group_instance_id: Annotated[str, Field(min_length=1)] | None = Field(
        None,
        description="Static group membership (KIP-345). Default: the environment variable "
        "WEBHOOK_CONSUMER_INSTANCE_ID, else none.",
    )
    session_timeout_ms: PositiveInt = Field(
        45_000, description="The group drops a member that was silent this long."
    )
    heartbeat_interval_ms: PositiveInt = Field(
        3_000, description="How often the member tells the group it is alive."
    )
    # Must cover the revoke grace, or a member still finishing its revoked work is thrown out
    # of the group.
    rebalance_timeout_ms: PositiveInt | None = Field(
        None,
        description="How long the group waits for members to rejoin; must exceed "
        "revoke_grace_seconds. Default: revoke grace + 30 s.",
    )
    startup_timeout_seconds: Annotated[float, Field(ge=0, le=86_400)] = Field(
        300.0,
        description="How long `run` waits at start for brokers that are unreachable or refuse "
        "connections before it exits 1 (0: fail at once). Authentication and TLS errors fail "
        "at once.",
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_topic_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        group = data.get("group_id", DEFAULT_GROUP)
        if not isinstance(group, str):
            return data  # reported by the field's own validation
        derived = {
            "dead_letter_topic": f"{group}.dlq",
            "retry_topic_prefix": f"{group}.retry",
            "channels_topic": f"{group}.channels",
            "order_topic": f"{group}.order",
        }
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

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaConfig:
        if self.min_insync_replicas is not None and (
            self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"expected min_insync_replicas at most replication_factor "
                f"({self.replication_factor}), got {self.min_insync_replicas}"
            )
        return self

    @property
    def effective_min_insync_replicas(self) -> int:
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return 2 if self.replication_factor >= 3 else 1

    @property
    def effective_rebalance_timeout_ms(self) -> int:
        if self.rebalance_timeout_ms is not None:
            return self.rebalance_timeout_ms
        return int(self.revoke_grace_seconds * 1000) + 30_000


class AttributesConfig(_Model):
    """The user attribute store that `run`, `send-test` and `attributes import` use."""

    backend: Literal["sqlite", "redis"] = Field(
        "sqlite", description="sqlite: a file on one host; redis: shared by every replica."
    )
    url: Annotated[str, Field(validate_default=True)] = Field(
        "sqlite:///./attributes.db",
        description="sqlite:///<path>; redis://host[:port][/db], rediss://... (TLS) or "
        "unix:///<socket>[?db=N].",
    )
    key_prefix: str = Field(
        "webhook-consumer:attrs:",
        description="redis: each user is one hash at `<key_prefix><user_id>`.",
    )
    timeout_seconds: PositiveFloat = Field(
        3.0,
        description="redis: bound of connecting and of each round trip; sqlite: of waiting "
        "for another writer's lock.",
    )
    cache_ttl_seconds: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="Lookups, found or not, are remembered this long per process; 0 turns "
        "the cache off.",
    )
    cache_max_users: PositiveInt = Field(
        100_000, description="Most users cached per process; the oldest go first."
    )
    cache_max_bytes: PositiveInt = Field(
        64 * 1024 * 1024,
        description="Most bytes of attributes (as JSON) cached per process; the oldest go first.",
    )
    # The password (AUTH) comes from here rather than from the URL, like every secret.
    password_env: str | None = Field(
        None, description="redis: environment variable holding the password."
    )
    password_file: Path | None = Field(None, description="redis: file holding the password.")
    ca_bundle: Path | None = Field(
        None,
        description="rediss://: PEM file of the CAs to trust instead of the system's; "
        "certificates are always verified.",
    )
    topic: TopicName | None = Field(
        None,
        description="A compacted topic keyed by user id whose value is the user's whole "
        "attribute object (JSON; null deletes the user). `run` keeps the store current from "
        "it, and delivers nothing until it has read it to the end it had at start.",
    )
    max_value_bytes: PositiveInt = Field(
        65_536,
        description="topic: a record whose value is larger is skipped (and counted).",
    )

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

    backend: Literal["local", "redis"] = Field(
        "local",
        description="local: limits per process; redis: each channel's rate, concurrency cap "
        "and circuit held across every replica.",
    )
    # Refused with backend local, like password_env, password_file and ca_bundle: a URL there
    # would look shared and be per replica.
    url: str | None = Field(
        None,
        description="redis only, and then required: redis://host:port/db, rediss:// (TLS) or "
        "unix://path.",
    )
    key_prefix: str = Field(
        "webhook-consumer:limits:",
        description="Prefix of the Redis keys; the group id and channel name follow.",
    )
    # A delivery never waits long on a Redis that does not answer.
    timeout_seconds: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5,
        description="Each Redis round trip gives up after this, and the limits fall back to "
        "a per-replica share until Redis answers again.",
    )
    password_env: str | None = Field(None, description="Environment variable with the password.")
    password_file: Path | None = Field(None, description="File with the password.")
    ca_bundle: Path | None = Field(
        None, description="rediss://: PEM CAs to trust instead of the system's."
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str | None) -> str | None:
        if value is not None:
            remember_password(value)  # whatever else goes wrong, it never reaches a log
            check_url("redis", value)
        return value


class CircuitBreakerConfig(_Model):
    """Per channel: stop sending to a receiver that keeps failing, and probe it later."""

    failures: PositiveInt = Field(
        5,
        description="Consecutive failures (5xx, 408, 425, timeouts, connection errors) that "
        "open the circuit.",
    )
    cooldown_seconds: PositiveFloat = Field(
        30.0, description="How long it stays open before one probe request (half-open)."
    )
    # A long outage then costs few probes and few rewrites of the waiting records.
    max_cooldown_seconds: PositiveFloat = Field(
        300.0, description="Each failed probe doubles the cool-down, up to this."
    )


class RetryConfig(_Model):
    """What happens to a delivery that failed: quick in-process tries, then the delay topics."""

    quick_attempts: PositiveInt = Field(
        3,
        description="In-process attempts of a new delivery, the first included, before it "
        "moves to the schedule.",
    )
    schedule_seconds: list[PositiveFloat] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="After the quick attempts, one attempt after each of these delays; then a "
        "dead letter.",
    )
    backoff_initial_ms: PositiveFloat = Field(
        200.0,
        description="Ceiling of the first quick retry's wait; it doubles per attempt "
        "(full jitter: the wait is uniform below the ceiling).",
    )
    backoff_max_ms: PositiveFloat = Field(
        5000.0, description="Largest ceiling of a quick retry's wait."
    )
    retry_after_max_seconds: PositiveFloat = Field(
        30.0,
        description="Longest Retry-After waited for in process; a longer one moves the "
        "delivery to the delay topics.",
    )
    # The overflow of a slow channel waits on Kafka instead of holding input offsets in memory.
    max_backlog_seconds: PositiveFloat = Field(
        30.0,
        description="A channel whose queue would take longer than this to send parks new "
        "work on the delay topics (without using a round). Long enough that a healthy backlog, "
        "which the in-flight limit already bounds, is sent rather than parked and read back.",
    )
    # Parking is paced by the lane's throughput; the bound means no delivery is rewritten
    # without end.
    max_parks: PositiveInt = Field(
        8, description="After this many parks a delivery is queued whatever the backlog."
    )
    max_age_seconds: PositiveFloat | None = Field(
        None,
        description="A delivery older than this is dead-lettered (reason max_age) at its next "
        "turn, however it waited. Default: the schedule's sum plus the larger of 10 minutes "
        "and a quarter of it.",
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        CircuitBreakerConfig(), description="Per-channel circuit breaker."
    )

    @property
    def max_age(self) -> float:
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        total = sum(self.schedule_seconds)
        return total + max(600.0, total / 4)


class RateLimitConfig(_Model):
    """Requests per second to one channel, with bursts (a token bucket)."""

    per_second: PositiveFloat = Field(description="Sustained requests per second.")
    burst: PositiveInt | None = Field(
        None, description="Requests that may go out at once. Default: one second's worth."
    )

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, round(self.per_second))


class BatchConfig(_Model):
    """Several users of one campaign in one request (`userAttr` then holds one per user)."""

    max_users: PositiveInt = Field(
        1, description="Users per request; 1 sends one request per event."
    )
    linger_ms: Annotated[int, Field(ge=0)] = Field(
        0, description="How long a batch waits for more users before it is sent."
    )


class BasicAuthConfig(_Model):
    """An `Authorization: Basic` header on every request of the channel."""

    username: str = Field(description="The user name.")
    password_env: str | None = Field(
        None, description="Environment variable holding the password (or password_file)."
    )
    password_file: Path | None = Field(None, description="File holding the password.")


class TlsConfig(_Model):
    """TLS to the receivers; certificates and host names are always verified."""

    ca_bundle: Path | None = Field(
        None, description="PEM file of the CAs to trust instead of the system's."
    )
    require_https: bool = Field(False, description="Reject http:// channel URLs at start.")


class ChannelTlsConfig(_Model):
    """TLS to this channel's receiver, overriding the top-level `tls`."""

    ca_bundle: Path | None = Field(
        None, description="Default: the top-level tls.ca_bundle, else the system's CAs."
    )
    require_https: bool | None = Field(
        None, description="Default: the top-level tls.require_https."
    )


class StandardWebhooksConfig(_Model):
    """Also sign as Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)."""

    secret_env: str | None = Field(
        None,
        description="Environment variable holding `whsec_` + base64 of 24 to 64 random bytes "
        "(or secret_file).",
    )
    secret_file: Path | None = Field(None, description="File holding that secret.")
    previous_secret_env: str | None = Field(
        None,
        description="During a rotation: the old secret, which keeps signing too until "
        "previous_valid_until.",
    )
    previous_secret_file: Path | None = Field(
        None, description="File holding the old secret (instead of _env)."
    )
    previous_valid_until: AwareDatetime | None = Field(
        None, description="End of the rotation, with a time zone."
    )


class ChannelConfig(_Model):
    """One receiver endpoint."""

    name: Annotated[str, Field(min_length=1)] = Field(
        description="Unique; sent as the body's `name`."
    )
    url: str = Field(description="Absolute http:// or https:// URL, without credentials.")
    query: dict[str, str] = Field(
        {},
        description="Query parameters added to the URL's own (and replacing any of the same name).",
    )
    secret_env: str | None = Field(
        None,
        description="Environment variable holding the X-gio-signature key. Neither this nor "
        "secret_file: an empty key.",
    )
    secret_file: Path | None = Field(
        None,
        description="File holding the X-gio-signature key (a trailing newline is dropped).",
    )
    secret: str | None = Field(
        None,
        description='Only `""`: an empty key is meant (GrowingIO\'s default), so secret_env or '
        "secret_file may hold nothing. Secrets themselves never go in the YAML.",
    )
    basic_auth: BasicAuthConfig | None = Field(None, description="Optional Basic authentication.")
    template_params: dict[str, ParamType] = Field(
        {},
        description="The `templateParam` keys, in body order, and their types; every campaign "
        "of the channel must give each one.",
    )
    user_attributes: list[str] = Field(
        [], description="The user attributes sent in `userAttr`, in this order."
    )
    rate_limit: RateLimitConfig | None = Field(
        None, description="Default: no limit but max_concurrency."
    )
    max_concurrency: PositiveInt = Field(16, description="Requests in flight at once.")
    timeout_seconds: PositiveFloat = Field(
        10.0, description="Bound of a whole attempt: connect, TLS, headers and body."
    )
    batch: BatchConfig = Field(BatchConfig(), description="Several users per request.")
    ordering: Literal["none", "per_user"] = Field(
        "none",
        description="per_user: one user's deliveries to this channel are attempted one at a "
        "time, in input order, also across retries, delay topics and restarts (needs "
        "batch.max_users 1).",
    )
    tls: ChannelTlsConfig = Field(ChannelTlsConfig(), description="TLS to this receiver.")
    standard_webhooks: StandardWebhooksConfig | None = Field(
        None, description="Also send Standard Webhooks signature headers."
    )
    expire_after_seconds: PositiveFloat | None = Field(
        None,
        description="A delivery whose oldest event occurred longer ago than this is not sent "
        "(dead letter `expired`); applies to every campaign of the channel, whose own limit "
        "wins when shorter.",
    )

    @field_validator("secret")
    @classmethod
    def _only_empty(cls, value: str | None) -> str | None:
        if value:  # never echoed: it may be a real secret someone pasted in
            raise ValueError(
                'expected "" (an empty key on purpose); a secret goes in secret_env or '
                "secret_file, got a non-empty value (not shown)"
            )
        return value

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
    """A campaign: the channels its events go to, and the values of their template parameters."""

    id: Annotated[str, Field(min_length=1)] = Field(
        description="Unique; matched against the event's campaign_id."
    )
    channels: Annotated[list[str], Field(min_length=1)] = Field(
        description="Names of the channels each event goes to."
    )
    template_params: dict[str, Any] = Field(
        {},
        description="A value for every template parameter its channels declare, of the "
        "declared type.",
    )
    expire_after_seconds: PositiveFloat | None = Field(
        None,
        description="A delivery whose oldest event's occurred_at is longer ago than this when "
        "it would be sent is not sent: it becomes a dead letter `expired`. A channel's own "
        "limit wins when shorter. Default: no limit.",
    )


class LoggingConfig(_Model):
    """Log lines on stderr; the --log-level/--log-format flags and environment win."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug adds one line per delivery transition."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON unless stderr is a terminal."
    )


class ReloadConfig(_Model):
    """SIGHUP always reloads the config file; `watch` also reloads when the file changes (a
    Kubernetes ConfigMap update, say), checked every `interval_seconds`."""

    watch: bool = Field(False, description="Reload when the file changes.")
    interval_seconds: PositiveFloat = Field(
        5.0, description="How often the file is checked when watch is on."
    )


class AdminConfig(_Model):
    """The admin port: /metrics, /healthz, /readyz and the status page at /."""

    enabled: bool = Field(True, description="Serve the admin port.")
    host: Annotated[str, Field(min_length=1)] = Field(
        "0.0.0.0", description="Address to listen on; probes and Prometheus come from outside."
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9108, description="Port to listen on; 0 takes any free port (tests)."
    )


class HttpConfig(_Model):
    """How webhooks are sent (a change takes a restart)."""

    client: Literal["lean", "aiohttp"] = Field(
        "lean",
        description="lean: our HTTP/1.1 client (httptools on asyncio), several times cheaper "
        "per request; aiohttp: the stock client. Both pass the same conformance suite.",
    )


class TracingConfig(_Model):
    """W3C trace context is always passed on to the webhooks; with `otlp_endpoint`, spans of
    our own work are exported too (needs `pip install webhook-consumer[tracing]`)."""

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector, e.g. http://otel-collector:4318 (`/v1/traces` is "
        "added to a URL without a path). Default: no spans exported.",
    )
    service_name: Annotated[str, Field(min_length=1)] = Field(
        "webhook-consumer", description="The `service.name` of the exported spans."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _usable_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        shown_url = USERINFO.sub("//***@", value)
        try:
            url = URL(value)
        except ValueError:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL, got {shown_url!r}")
        if url.raw_user is not None or url.raw_password is not None:
            raise ValueError(
                "expected no credentials in the URL (the exporter reads them from "
                f"OTEL_EXPORTER_OTLP_HEADERS), got {shown_url!r}"
            )
        from .otel import missing_sdk

        missing = missing_sdk()
        if missing is not None:
            raise ValueError(
                f"the OpenTelemetry SDK is not installed ({missing}): install "
                "webhook-consumer[tracing], or remove tracing.otlp_endpoint"
            )
        return value


class ServiceConfig(_Model):
    """The whole file."""

    kafka: KafkaConfig = Field(KafkaConfig(), description="The cluster, group and topics.")
    attributes: AttributesConfig = Field(
        AttributesConfig(), description="The user attribute store."
    )
    rate_limiter: RateLimiterConfig = Field(
        RateLimiterConfig(),
        description="Where channel limits live: per process, or shared by every replica.",
    )
    allowed_networks: list[Network] = Field(
        [],
        description="Non-public networks receivers may be in (loopback, private, link-local "
        "and other non-public addresses are refused otherwise).",
    )
    tls: TlsConfig = Field(TlsConfig(), description="TLS to the receivers.")
    http: HttpConfig = Field(HttpConfig(), description="The HTTP client that sends webhooks.")
    retry: RetryConfig = Field(RetryConfig(), description="Retries, delays and dead letters.")
    logging: LoggingConfig = Field(LoggingConfig(), description="Log level and format.")
    reload: ReloadConfig = Field(ReloadConfig(), description="Live reload of the file.")
    admin: AdminConfig = Field(
        AdminConfig(), description="The admin port: metrics, health and the status page."
    )
    tracing: TracingConfig = Field(
        TracingConfig(), description="Trace context and exported spans (OpenTelemetry)."
    )
    channels: Annotated[list[ChannelConfig], Field(min_length=1)] = Field(
        description="The receiver endpoints; at least one."
    )
    campaigns: list[CampaignConfig] = Field([], description="Campaigns, bound to channels.")


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
        closest = closest_field(ServiceConfig, error["loc"])
        return f"{path}: unknown field" + (f"; did you mean {closest}?" if closest else "")
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
