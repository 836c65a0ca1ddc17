"""webhook-consumer: Kafka threshold events in, signed GrowingIO-compatible webhooks out.

The names a user or a receiver needs; everything else is reached through its module. A
receiver that only verifies signatures imports hashlib and hmac, not Kafka, HTTP or pydantic:
the service's names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .signing import sign, verify
from .standard_webhooks import verify_standard
from .version import __version__

if TYPE_CHECKING:
    from .config import ConfigError, ServiceConfig, load_config
    from .service import run_service

_LAZY = {
    "ConfigError": ".config",
    "ServiceConfig": ".config",
    "load_config": ".config",
    "run_service": ".service",
}

__all__ = [
    "ConfigError",
    "ServiceConfig",
    "__version__",
    "load_config",
    "run_service",
    "sign",
    "verify",
    "verify_standard",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
