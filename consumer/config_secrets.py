"""Where the raw config names a secret or a file: given once, there, readable, not empty.

Shared by the checks across fields (config_checks.py) and of the connections
(connection_checks.py); a URL is shown with its password masked by USERINFO.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

USERINFO = re.compile(r"//[^/?#]*@")  # credentials written into a URL


def secret_checks(
    prefix: str,
    section: dict[str, Any],
    env_key: str,
    file_key: str,
    environ: Mapping[str, str],
    required: bool = False,
) -> Iterator[str]:
    given = [key for key in (env_key, file_key) if section.get(key) is not None]
    if len(given) > 1:
        yield f"{prefix}: expected at most one of {env_key} or {file_key}, got both"
    elif required and not given:
        yield f"{prefix}: expected one of {env_key} or {file_key}"
    var = section.get(env_key)
    if isinstance(var, str) and var not in environ:
        yield (
            f"{prefix}.{env_key}: environment variable {var} is not set; "
            "expected it to hold the secret"
        )
    file = section.get(file_key)
    if isinstance(file, str) and not Path(file).is_file():
        yield (
            f"{prefix}.{file_key}: expected a readable file holding the secret, {file!r} is not one"
        )


def ca_bundle_check(prefix: str, tls: dict[str, Any]) -> Iterator[str]:
    bundle = tls.get("ca_bundle")
    if not isinstance(bundle, str):
        return
    try:
        ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield (
            f"{prefix}.ca_bundle: expected a readable PEM file of CA certificates, "
            f"{bundle!r} is not one ({why})"
        )


def pem_problem(path: str, marker: str, what: str) -> str | None:
    """Why `path` is not a readable PEM file holding `marker`; None when it is."""
    try:
        text = file_head(path)
    except (OSError, ValueError) as exc:
        return f"is not one ({exc.strerror if isinstance(exc, OSError) else exc})"
    return None if marker in text else f"is not one (no PEM {what} in it)"


def non_empty_file(path: str) -> bool:
    try:
        return bool(file_head(path).strip())
    except (OSError, ValueError):
        return False


def file_head(path: str, limit: int = 1 << 20) -> str:
    """The start of a file, as text: enough for any PEM file, and /dev/zero cannot hang us."""
    with open(path, "rb") as file:
        return file.read(limit).decode("ascii", errors="replace")


def secret_value(
    section: dict[str, Any], env_key: str, file_key: str, environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """Which key names the secret, and its value when it can be read (else reported above)."""
    var, file = section.get(env_key), section.get(file_key)
    if isinstance(var, str) and var in environ:
        return env_key, environ[var]
    if isinstance(file, str) and Path(file).is_file():
        try:
            return file_key, Path(file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            return file_key, None
    return env_key, None


def section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}
