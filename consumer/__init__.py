"""webhook-consumer: Kafka threshold events in, signed GrowingIO-compatible webhooks out.

The names a user or a receiver needs; everything else is reached through its module.
"""

__version__ = "0.1.0"  # before the imports: sender.py and cli.py read it

from .config import ConfigError, ServiceConfig, load_config
from .service import run_service
from .signing import sign, verify
from .standard_webhooks import verify_standard

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
