"""How the Kafka clients prove who they are and whom they talk to: TLS and SASL options.

Host names are always verified (`ssl.create_default_context`); there is no switch to turn
verification off. Passwords come from the environment or files, as `Secret` values, and are
revealed only to aiokafka.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from .config import KafkaConfig, KafkaTlsConfig
from .secrets import Secret, read_secret


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """OAUTHBEARER: the token is read from its file at every login, so a token that is
    rotated in place (a Kubernetes projected service account token) is picked up by the next
    connection. aiokafka does not re-authenticate a connection that is open (KIP-368)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def token(self) -> str:
        text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        return text.strip()


def security_options(kafka: KafkaConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The aiokafka keyword arguments for `kafka.security_protocol` and its credentials."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        tls = kafka.tls
        key_password = None
        if tls.client_key_password_env is not None or tls.client_key_password_file is not None:
            key_password = read_secret(
                tls.client_key_password_env, tls.client_key_password_file, environ
            )
        options["ssl_context"] = tls_context(tls, key_password)
    if kafka.security_protocol in ("SASL_SSL", "SASL_PLAINTEXT") and kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_mechanism == "OAUTHBEARER":
            assert kafka.sasl_oauth_token_file is not None  # config_checks requires it
            options["sasl_oauth_token_provider"] = FileTokenProvider(kafka.sasl_oauth_token_file)
        else:
            password = read_secret(kafka.sasl_password_env, kafka.sasl_password_file, environ)
            options["sasl_plain_username"] = kafka.sasl_username
            options["sasl_plain_password"] = password.reveal()
    return options


@lru_cache(maxsize=16)  # loading CA bundles and keys is slow; every client shares one context
def tls_context(tls: KafkaTlsConfig, key_password: Secret | None = None) -> ssl.SSLContext:
    """A client context trusting `tls.ca_bundle` (else the system's CAs), host names checked,
    presenting the client certificate when one is configured."""
    context = ssl.create_default_context(
        cafile=None if tls.ca_bundle is None else str(tls.ca_bundle)
    )
    if tls.client_cert is not None:

        def password() -> str:  # a callback, so OpenSSL never prompts on the terminal
            return "" if key_password is None else key_password.reveal()

        context.load_cert_chain(tls.client_cert, tls.client_key, password=password)
    return context
