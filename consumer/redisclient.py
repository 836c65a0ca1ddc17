"""One way to open a Redis client, for every part that keeps state in Redis (attributes, limits).

The URL forms and their static checks live in `consumer.attributes.urls`; this module turns a
checked URL, a password and a CA bundle into a client with bounded waits everywhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from consumer.attributes.urls import remember_password
from consumer.secrets import Secret


def open_redis(
    url: str,
    *,
    timeout_seconds: float,
    max_connections: int,
    password: Secret | None = None,
    ca_bundle: str | Path | None = None,
    retry_once: bool = True,
    reply_timeout_seconds: float | None = None,
) -> Redis:
    """A client whose connecting, waiting for a pooled connection and every reply each give
    up after `timeout_seconds`. Nothing connects yet.

    `retry_once` heals a pooled connection that a Redis restart closed with one quick retry;
    callers that must answer within their own bound switch it off. `reply_timeout_seconds`
    (default `timeout_seconds`) is for clients of blocking commands, whose replies take longer.
    """
    remember_password(url)  # the client's own messages are scrubbed too
    options: dict[str, Any] = {}
    if password is not None:  # the URL carries none (check-config makes sure)
        options["password"] = password.reveal()
    if urlsplit(url).scheme == "rediss":
        # Certificate and host name always verified (redis-py 5 left the host name out).
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if ca_bundle is not None:
            options["ssl_ca_certs"] = str(ca_bundle)
    retry = (
        Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, (RedisConnectionError,))
        if retry_once
        else Retry(NoBackoff(), 0)
    )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,  # waiting for a free connection
        socket_connect_timeout=timeout_seconds,
        socket_timeout=reply_timeout_seconds or timeout_seconds,
        retry=retry,
        **options,
    )
    return Redis.from_pool(pool)


def raise_if_cancelled() -> None:
    """Called after every Redis reply. redis-py bounds a write with `asyncio.wait_for`, which on
    Python 3.11 returns a result that arrived in the same loop turn as a cancel and drops the
    cancel (fixed in 3.12): a lookup, a probe or a worker told to stop would go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
