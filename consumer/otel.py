"""Whether the optional OpenTelemetry SDK (the `tracing` extra) can be imported: asked by the
config's validation without loading the tracing hook (which needs the observer, and so the
config itself)."""

from __future__ import annotations

import importlib

# What the tracing hook needs of the extra; `check-config` names the first one missing.
SDK_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)


def missing_sdk() -> str | None:
    """The first module of the SDK that cannot be imported, or None when all can."""
    for module in SDK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None
