"""The one frozen settings object, read from ``CHURNSTREAM_*`` variables and CLI overrides.

Built once at start by :meth:`Settings.load` and passed down; nothing else reads the
environment. Every bad value raises :class:`~streams.errors.SettingsError` naming the
variable (or flag) and what it should be.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from streams.errors import SettingsError

PREFIX: Final[str] = "CHURNSTREAM_"
INPUT_TOPICS: Final[tuple[str, ...]] = ("clickstream", "orders", "customer-profiles")
OUTPUT_TOPICS: Final[tuple[str, ...]] = (
    "churn-scores",
    "risk-changes",
    "interventions",
    "training-examples",
    "churn-models",
    "dead-letters",
)
COMPACTED_TOPICS: Final[frozenset[str]] = frozenset({"churn-scores", "churn-models"})
SECURITY_PROTOCOLS: Final[frozenset[str]] = frozenset(
    {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
)
SASL_MECHANISMS: Final[frozenset[str]] = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._\-]{0,100}$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of churnstream; see ../shared/INTERFACES.md, "Settings"."""

    broker: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    data_dir: Path = Path(".churnstream")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    api_tokens: tuple[str, ...] = ()
    model_secret: str = field(default="", repr=False)
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = field(default="", repr=False)
    horizon_days: int = 90
    holdout_percent: float = 10.0
    partitions: int = 4
    # Off pins the model (prior only, no trainer): replay-equality tests and canary workers.
    train: bool = True
    snapshot_every: int = 500
    # Live mode: the watermark also follows wall clock minus this grace (None = event time only).
    wall_grace_s: float | None = None
    log_json: bool = False
    log_customer_ids: bool = False
    # HMAC key of the customer id tokens in logs; empty = a random key per process.
    log_redaction_key: str = field(default="", repr=False)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = None

    @classmethod
    def load(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Return settings from ``CHURNSTREAM_*`` variables with CLI ``overrides`` on top.

        ``overrides`` maps field names to already-typed values; ``None`` means "not given".

        >>> Settings.load({"CHURNSTREAM_WEB_PORT": "7000"}).web_port
        7000
        """
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for spec in fields(cls):
            env_name = PREFIX + spec.name.upper()
            if env_name in environ and environ[env_name] != "":
                values[spec.name] = _parse_env(spec.name, env_name, environ[env_name])
                sources[spec.name] = env_name
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in {spec.name for spec in fields(cls)}:
                msg = f"unknown setting {name!r}"
                raise SettingsError(msg)
            values[name] = value
            sources[name] = "--" + name.replace("_", "-")
        settings = cls(**values)
        settings._validate(sources)
        return settings

    def topic(self, name: str) -> str:
        """Return the full name of topic ``name`` with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    def _validate(self, sources: Mapping[str, str]) -> None:
        def bad(name: str, message: str) -> SettingsError:
            where = sources.get(name, PREFIX + name.upper())
            return SettingsError(f"{where}: {message}")

        servers = [part.strip() for part in self.broker.split(",")]
        if not servers or any(not _HOST_PORT.match(server) for server in servers):
            raise bad("broker", f"expected host:port[,host:port...], got {self.broker!r}")
        for server in servers:
            port = int(server.rsplit(":", 1)[1])
            if not 1 <= port <= 65535:
                raise bad("broker", f"port {port} out of range 1-65535")
        if not _TOPIC_PREFIX.match(self.topic_prefix):
            raise bad("topic_prefix", f"only letters, digits, '.', '_', '-': {self.topic_prefix!r}")
        if not 1 <= self.web_port <= 65535:
            raise bad("web_port", f"must be 1-65535, got {self.web_port}")
        if not 1 <= self.horizon_days <= 3650:
            raise bad("horizon_days", f"must be 1-3650 days, got {self.horizon_days}")
        if not 0 <= self.holdout_percent <= 100:
            raise bad("holdout_percent", f"must be 0-100, got {self.holdout_percent}")
        if not 1 <= self.snapshot_every <= 10_000_000:
            raise bad("snapshot_every", f"must be 1-10000000, got {self.snapshot_every}")
        if self.wall_grace_s is not None and not 0 <= self.wall_grace_s <= 30 * 86400:
            raise bad("wall_grace_s", f"must be 0-2592000 seconds, got {self.wall_grace_s}")
        if not 1 <= self.partitions <= 1024:
            raise bad("partitions", f"must be 1-1024, got {self.partitions}")
        if any(len(token) < 16 for token in self.api_tokens):
            raise bad("api_tokens", "every token must have at least 16 characters")
        if self.model_secret and len(self.model_secret) < 16:
            raise bad("model_secret", "must have at least 16 characters")
        if self.log_redaction_key and len(self.log_redaction_key) < 16:
            raise bad("log_redaction_key", "must have at least 16 characters")
        for url in self.webhook_urls:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise bad("webhook_urls", f"not an http(s) URL: {url!r}")
        if self.webhook_secret:
            _check_webhook_secret(self.webhook_secret, bad)
        elif self.webhook_urls:
            raise bad("webhook_secret", "required when CHURNSTREAM_WEBHOOK_URLS is set")
        self._validate_security(bad)

    def _validate_security(self, bad: Any) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise bad("kafka_security_protocol", f"one of {sorted(SECURITY_PROTOCOLS)}")
        uses_sasl = protocol.startswith("SASL_")
        if uses_sasl:
            if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
                raise bad("kafka_sasl_mechanism", f"one of {sorted(SASL_MECHANISMS)} for SASL")
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise bad("kafka_sasl_username", "SASL needs a username and a password")
        if self.kafka_ssl_cafile is not None and not self.kafka_ssl_cafile.is_file():
            raise bad("kafka_ssl_cafile", f"no such file: {str(self.kafka_ssl_cafile)!r}")


def _check_webhook_secret(secret: str, bad: Any) -> None:
    if not secret.startswith("whsec_"):
        raise bad("webhook_secret", "must start with 'whsec_' (Standard Webhooks format)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad("webhook_secret", "the part after 'whsec_' is not base64") from exc
    if len(key) < 24:
        raise bad("webhook_secret", "the key must be at least 24 bytes")


def _parse_env(name: str, env_name: str, raw: str) -> Any:
    """Return ``raw`` converted to the type of setting ``name``; raise SettingsError if it won't."""
    try:
        if name in {"web_port", "horizon_days", "partitions", "snapshot_every"}:
            return int(raw)
        if name in {"holdout_percent", "wall_grace_s"}:
            return float(raw)
        if name in {"log_json", "log_customer_ids", "train"}:
            return _parse_bool(raw)
        if name in {"data_dir", "kafka_ssl_cafile"}:
            return Path(raw)
        if name in {"api_tokens", "webhook_urls"}:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if name == "kafka_security_protocol":
            return raw.strip().upper()
        if name == "kafka_sasl_mechanism":
            return raw.strip().upper()
    except ValueError as exc:
        msg = f"{env_name}: cannot parse {raw!r} ({exc})"
        raise SettingsError(msg) from exc
    return raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    msg = f"expected true/false, got {raw!r}"
    raise ValueError(msg)
