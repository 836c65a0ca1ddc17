"""Which `attributes.url` each backend can use: one set of rules for check-config and run.

Every check here is static (the text of the URL and the local file system); nothing connects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from consumer.config_secrets import USERINFO
from consumer.secrets import remember

SQLITE_PREFIX = "sqlite:///"
SQLITE_EXPECTED = (
    "expected a sqlite URL like 'sqlite:///./attributes.db' (relative), "
    "'sqlite:////abs/path.db' (absolute) or 'sqlite:///:memory:'"
)
REDIS_EXPECTED = (
    "expected a redis://host[:port][/db], rediss://host[:port][/db] (TLS) or "
    "unix:///path/to/redis.sock[?db=N] URL"
)
_DB_PATH = re.compile(r"/?\d*")


def shown_url(url: str) -> str:
    """The URL for messages: credentials written into it become `***`."""
    return repr(USERINFO.sub("//***@", url))


def check_url(backend: str, url: str) -> None:
    """Raise ValueError (`expected ..., got ...`) unless `backend` could open `url`."""
    if backend == "sqlite":
        check_sqlite_folder(sqlite_path(url), url)
    elif backend == "redis":
        check_redis_url(url)


def sqlite_path(url: str) -> str:
    """The database path of a `sqlite:///<path>` URL."""
    path = url[len(SQLITE_PREFIX) :] if url.startswith(SQLITE_PREFIX) else ""
    # Query strings are rejected rather than silently becoming part of the filename.
    if not path or "?" in path:
        raise ValueError(f"{SQLITE_EXPECTED}, got {shown_url(url)}")
    return path


def check_sqlite_folder(path: str, url: str) -> None:
    """The store creates missing folders; the nearest existing one must let it."""
    if path == ":memory:":
        return
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        why = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK | os.X_OK):
        why = f"{folder} is not writable"
    else:
        return
    raise ValueError(
        f"expected a database path whose folder exists or can be created, "
        f"got {shown_url(url)} ({why})"
    )


def check_redis_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check (a number, 0-65535)
    except ValueError as exc:
        raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)} ({exc})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)} (no socket path)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)} (no host)")
        if not _DB_PATH.fullmatch(unquote(parts.path)):
            why = "the path must be a database number, like /0"
            raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)} ({why})")
    # Only the database may come from the URL: the client would let query parameters override
    # our timeouts, or switch TLS verification off.
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"db"})
    if unknown:
        raise ValueError(
            f"{REDIS_EXPECTED} with no query parameter but db, got {shown_url(url)} "
            f"(unsupported: {', '.join(unknown)})"
        )
    if "db" in query and not all(value.isdigit() for value in query["db"]):
        raise ValueError(f"{REDIS_EXPECTED}, got {shown_url(url)} (db is not a number)")


def remember_password(url: str) -> None:
    """Make `redact` scrub the password written into `url`, as written and as sent."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        remember(password)
        remember(unquote(password))
