"""Dead-letter headers in the Kafka Connect style, under ``churnstream.errors.*``."""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BYTES = 2000


def dead_letter_headers(message: Any, error: Exception, reason: str) -> list[tuple[str, bytes]]:
    """Return the headers naming where a bad record came from and what was wrong with it."""
    text = str(error).encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    return [
        ("churnstream.errors.topic", str(message.topic).encode()),
        ("churnstream.errors.partition", str(message.partition).encode()),
        ("churnstream.errors.offset", str(message.offset).encode()),
        ("churnstream.errors.class.name", type(error).__qualname__.encode()),
        ("churnstream.errors.exception.message", text),
        ("churnstream.errors.reason", reason.encode()),
    ]
