"""A private Kafka broker with secured listeners, started through deploy/local/kafka.

Next to its PLAINTEXT listener (for the tests' own producing and reading) it offers
- SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (Kafka's built-in validator of
  unsigned JWTs, which checks the subject and expiry: enough to test a token file);
- SSL requiring a client certificate (mutual TLS).
Certificates come from a throwaway CA; the server's is valid for 127.0.0.1 and localhost.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

from ..pki import Authority, write
from .kafka import LOCAL_KAFKA, REPO

HOST = "127.0.0.1"
SCRAM_USER = "webhook"
KEY_PASSWORD = "client-key-Pa55"


@dataclass(frozen=True)
class SecuredKafka:
    plaintext: str  # bootstrap address of the PLAINTEXT listener
    sasl_ssl: str
    mtls: str
    ca: Path  # the CA that signed the broker's certificate
    other_ca: Path  # a CA that did not
    client_cert: Path
    client_key: Path  # encrypted with the password in key_password_file
    key_password_file: Path
    scram_passwords: dict[str, str]  # mechanism -> SCRAM_USER's password
    folder: Path

    def token(self, subject: str = "webhook", lifetime: float = 600) -> str:
        """An unsigned JWT, as Kafka's default OAUTHBEARER validator accepts."""
        now = int(time.time())
        return ".".join(
            [
                _b64({"alg": "none"}),
                _b64({"sub": subject, "iat": now, "exp": now + int(lifetime)}),
                "",
            ]
        )


def _b64(claims: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def _shared_lib() -> Path:
    """The jars `deploy/local/kafka fetch` keeps; a second home links to them, no copy."""
    home = Path(os.environ.get("KAFKA_LOCAL_HOME", REPO / ".cache" / "kafka"))
    return home / "lib"


@contextmanager
def secured_kafka_broker(folder: Path) -> Iterator[SecuredKafka]:
    """Start the broker in `folder` (its own data, ports and pid file); stop it afterwards."""
    fetched = subprocess.run(
        [LOCAL_KAFKA, "fetch"], capture_output=True, text=True, timeout=600, check=False
    )
    if fetched.returncode != 0:
        raise RuntimeError(f"deploy/local/kafka fetch failed:\n{fetched.stderr}")
    home = folder / "home"
    home.mkdir()
    (home / "lib").symlink_to(_shared_lib())

    ca, other_ca = Authority("kafka-test-ca"), Authority("some-other-ca")
    server = ca.issue_server(HOST, "localhost")
    client = ca.issue_client("webhook-consumer")
    broker_pem = write(folder / "broker.pem", server.key_pem, server.cert_pem)
    ca_pem = write(folder / "ca.pem", ca.cert_pem)
    passwords = {m: secrets.token_urlsafe(16) for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")}

    port, controller, sasl_ssl, mtls = free_ports(4, HOST)
    scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    oauth_login = (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
        'unsecuredLoginStringClaim_sub="broker";'
    )
    properties = write(
        folder / "secured.properties",
        "\n".join(
            [
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={broker_pem}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={ca_pem}",
                "listener.name.mtls.ssl.client.auth=required",
                "listener.name.sasl_ssl.sasl.enabled.mechanisms="
                "SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
                f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_login}",
                f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_login}",
                f"listener.name.sasl_ssl.oauthbearer.sasl.jaas.config={oauth_login}",
                "",
            ]
        ).encode(),
    )
    env = {
        **os.environ,
        "KAFKA_LOCAL_HOME": str(home),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_EXTRA_LISTENERS": f"SASL_SSL://{HOST}:{sasl_ssl},MTLS://{HOST}:{mtls}",
        "KAFKA_EXTRA_PROTOCOL_MAP": "SASL_SSL:SASL_SSL,MTLS:SSL",
        "KAFKA_EXTRA_PROPERTIES": str(properties),
        "KAFKA_SCRAM_CREDENTIALS": " ".join(
            f"{mechanism}=[name={SCRAM_USER},password={password}]"
            for mechanism, password in passwords.items()
        ),
    }
    env.pop("KAFKA_LOCAL_FRESH", None)
    started = subprocess.run(
        [LOCAL_KAFKA, "start"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    try:
        if started.returncode != 0:
            raise RuntimeError(f"the secured broker did not start:\n{started.stderr}")
        yield SecuredKafka(
            plaintext=f"{HOST}:{port}",
            sasl_ssl=f"{HOST}:{sasl_ssl}",
            mtls=f"{HOST}:{mtls}",
            ca=ca_pem,
            other_ca=write(folder / "other-ca.pem", other_ca.cert_pem),
            client_cert=write(folder / "client.pem", client.cert_pem),
            client_key=write(folder / "client.key", client.key_pem_encrypted(KEY_PASSWORD)),
            key_password_file=write(folder / "client-key-password", KEY_PASSWORD.encode()),
            scram_passwords=passwords,
            folder=folder,
        )
    finally:
        subprocess.run([LOCAL_KAFKA, "stop"], env=env, capture_output=True, check=False)
