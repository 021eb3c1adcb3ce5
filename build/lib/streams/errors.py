"""The exceptions churnstream raises: one root, one subclass per edge that can go wrong."""

from __future__ import annotations


class ChurnstreamError(Exception):
    """Root of every error churnstream raises on purpose."""


class SettingsError(ChurnstreamError):
    """A setting (environment variable or CLI flag) has a bad value; the message names it."""


class ValidationError(ChurnstreamError):
    """An event or record has a field that breaks the contract; the message names the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DecodeError(ChurnstreamError):
    """A Kafka record value could not be decoded.

    ``reason`` is a short machine-readable tag (``wrong_magic_byte``, ``unknown_schema_id``,
    ``truncated``, ``invalid_field``, ``schema_mismatch``) used for dead-letter headers
    and metric labels.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class EventsFileError(ChurnstreamError):
    """A line of an events file is not a valid event; the message starts with ``file:line``."""

    def __init__(self, message: str, path: str, line_number: int) -> None:
        super().__init__(f"{path}:{line_number}: {message}")
        self.path = path
        self.line_number = line_number


class KafkaLauncherError(ChurnstreamError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class ModelSignatureError(ChurnstreamError):
    """A model snapshot's HMAC signature does not verify: the snapshot must not be loaded."""
