"""TLS certificates and SCRAM users for the local broker's secured mode (SASL_SSL).

:func:`prepare_tls` makes a throw-away certificate authority and a broker certificate for
127.0.0.1 with Java's ``keytool`` (the broker needs Java 17+ anyway, so nothing else has to be
installed), and :func:`security_properties` turns them into the broker's listener settings:
one ``SASL_SSL`` listener with SCRAM-SHA-512 for clients and for the broker itself, the KRaft
controller listener on loopback. SCRAM users are created when the storage is formatted
(:func:`scram_format_args`, ``kafka-storage format --add-scram``), so the broker accepts them
from its first start. Certificates and the broker's own login stay in the data dir; a second
start on the same data dir reuses them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streams.errors import KafkaLauncherError

MECHANISM: Final[str] = "SCRAM-SHA-512"
LISTENER: Final[str] = "SASL_SSL"
ADMIN_USER: Final[str] = "churnstream-broker"
SECRETS_FILE: Final[str] = "broker-secrets.json"
VALIDITY_DAYS: Final[int] = 30
# SCRAM users go into `--add-scram 'SCRAM-SHA-512=[name=...,password=...]'` and the JAAS line:
# keep names and passwords to characters neither format needs to quote.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """TLS with SCRAM-SHA-512 logins for the local broker: the users it accepts."""

    users: Mapping[str, str] = field(default_factory=dict)  # name -> password

    def __post_init__(self) -> None:
        for name, password in self.users.items():
            if not _SAFE.match(name) or name == ADMIN_USER:
                msg = f"SCRAM user name {name!r}: letters, digits, '.', '_', '-' only"
                raise KafkaLauncherError(msg)
            if not _SAFE.match(password) or len(password) < 8:
                msg = f"password of {name!r}: 8+ letters, digits, '.', '_', '-' only"
                raise KafkaLauncherError(msg)


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """Where a secured broker's certificates are, and the login the broker itself uses."""

    directory: Path
    ca_file: Path  # PEM: what clients trust (`CHURNSTREAM_KAFKA_SSL_CAFILE`)
    keystore: Path  # PKCS12: the broker's key and certificate chain
    store_password: str = field(repr=False)
    admin_password: str = field(repr=False)

    def client_config(self) -> dict[str, Any]:
        """Return kafka-python settings that log in as the broker's own user (probes)."""
        return {
            "security_protocol": LISTENER,
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": ADMIN_USER,
            "sasl_plain_password": self.admin_password,
            "ssl_cafile": str(self.ca_file),
        }


def _keytool(*args: str) -> None:
    try:
        done = subprocess.run(
            ["keytool", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"keytool (part of Java 17+) could not run: {exc}"
        raise KafkaLauncherError(msg) from exc
    if done.returncode != 0:
        msg = f"keytool {args[0]} failed: {(done.stdout + done.stderr).strip()[-300:]}"
        raise KafkaLauncherError(msg)


def load_tls(directory: Path) -> BrokerTls | None:
    """Return the certificates made earlier in ``directory``, or None if there are none."""
    try:
        raw = json.loads((directory / SECRETS_FILE).read_text())
        tls = BrokerTls(
            directory=directory,
            ca_file=directory / "ca.pem",
            keystore=directory / "broker.p12",
            store_password=str(raw["store_password"]),
            admin_password=str(raw["admin_password"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tls if tls.ca_file.is_file() and tls.keystore.is_file() else None


def prepare_tls(directory: Path) -> BrokerTls:
    """Return the broker's certificates in ``directory``, making a CA and a cert if needed.

    The CA signs one certificate for ``127.0.0.1`` / ``localhost`` (EC P-256, valid for
    30 days). Only the broker's keystore and the CA's certificate are kept; the CA's key
    is deleted once it signed, so nothing else can be issued under it.
    """
    existing = load_tls(directory)
    if existing is not None:
        return existing
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    store_password = secrets.token_urlsafe(18)
    ca_store = directory / "ca.p12"
    keystore = directory / "broker.p12"
    ca_file = directory / "ca.pem"
    request = directory / "broker.csr"
    signed = directory / "broker.pem"
    for stale in (ca_store, keystore, ca_file, request, signed):
        stale.unlink(missing_ok=True)
    ca = ("-keystore", str(ca_store), "-storetype", "PKCS12", "-storepass", store_password)
    broker = ("-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", store_password)
    key = ("-keyalg", "EC", "-groupname", "secp256r1", "-validity", str(VALIDITY_DAYS))
    san = "SAN=ip:127.0.0.1,dns:localhost"
    ca_name = "CN=churnstream test CA"
    steps: list[tuple[str, ...]] = [
        ("-genkeypair", "-alias", "ca", *key, "-dname", ca_name, "-ext", "bc:c", *ca),
        ("-exportcert", "-alias", "ca", "-rfc", "-file", str(ca_file), *ca),
        ("-genkeypair", "-alias", "broker", *key, "-dname", "CN=127.0.0.1", *broker),
        ("-certreq", "-alias", "broker", "-file", str(request), *broker),
        ("-gencert", "-alias", "ca", "-infile", str(request), "-outfile", str(signed), "-rfc",
         "-validity", str(VALIDITY_DAYS), "-ext", san, "-ext", "EKU=serverAuth,clientAuth", *ca),
        ("-importcert", "-alias", "ca", "-file", str(ca_file), "-noprompt", *broker),
        ("-importcert", "-alias", "broker", "-file", str(signed), "-noprompt", *broker),
    ]  # fmt: skip
    for step in steps:
        _keytool(*step)
    for used in (ca_store, request, signed):
        used.unlink()
    secrets_path = directory / SECRETS_FILE
    secrets_path.touch(mode=0o600)
    secrets_path.write_text(
        json.dumps({"store_password": store_password, "admin_password": secrets.token_urlsafe(24)})
    )
    tls = load_tls(directory)
    assert tls is not None  # just written
    return tls


def security_properties(tls: BrokerTls, port: int, controller_port: int) -> dict[str, str]:
    """Return the broker settings of one SASL_SSL listener (clients and inter-broker)."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{tls.admin_password}";'
    )
    return {
        "listeners": f"{LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{LISTENER}://127.0.0.1:{port}",
        "inter.broker.listener.name": LISTENER,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{LISTENER}:{LISTENER}",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.{LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.keystore.password": tls.store_password,
        "ssl.key.password": tls.store_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_file),
        "ssl.client.auth": "none",
    }


def scram_format_args(tls: BrokerTls, security: SecurityConfig) -> list[str]:
    """Return ``kafka-storage format`` arguments that create every SCRAM user."""
    users = {ADMIN_USER: tls.admin_password, **security.users}
    args: list[str] = []
    for name, password in users.items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args
