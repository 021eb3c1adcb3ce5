"""Log lines as text or JSON, with customer ids redacted unless ``log_customer_ids`` is on.

Customer ids are personal data: a log shipped to a third party must not carry them by
accident. :class:`RedactCustomerIds` runs on the handler (filters on a logger do not see
records propagated from its children) and removes them from the ``customer_id`` extra, from
``customer_id=...``-looking text in the message, and from formatted tracebacks.

Two ways in: :func:`configure_logging` installs one handler on the root logger (the one-shot
CLI commands), and :func:`logging_dict_config` returns the same set-up as a ``dictConfig``
dict for ``faust.Worker(..., logging_config=...)``, because mode's worker replaces the root
handlers when it starts.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final, Protocol

REDACTED: Final[str] = "<redacted>"
# Keys whose values are customer ids wherever they appear (extras, key=value text, JSON).
CUSTOMER_ID_KEYS: Final[frozenset[str]] = frozenset({"customer_id", "customer", "customer_ids"})
_CUSTOMER_ID_TEXT = re.compile(
    r"""(?P<key>\bcustomer[_-]?ids?['"]?\s*[=:]\s*)"""
    r"""(?:(?P<quote>['"])(?P<quoted>.*?)(?P=quote)|(?P<list>[\[(][^\])]*[\])])"""
    r"""|(?P<bare>[^\s,;'"}\])]+))""",
    re.IGNORECASE,
)
# Every attribute a bare LogRecord has: anything else on a record came in through ``extra``.
_RECORD_FIELDS: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
TEXT_FORMAT: Final[str] = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogSettings(Protocol):
    """The two settings logging reads (``streams.settings.Settings`` has both)."""

    @property
    def log_json(self) -> bool:
        """Whether log lines are JSON objects."""
        ...

    @property
    def log_customer_ids(self) -> bool:
        """Whether customer ids may appear in logs."""
        ...


def redact_text(text: str) -> str:
    """Return ``text`` with the value of every ``customer_id=...``-like pair replaced.

    >>> redact_text("scored customer_id=c42 band=HIGH")
    'scored customer_id=<redacted> band=HIGH'
    >>> redact_text('{"customer_id": "c 42", "band": "LOW"}')
    '{"customer_id": "<redacted>", "band": "LOW"}'
    """

    def replace(match: re.Match[str]) -> str:
        quote = match.group("quote") or ""
        return f"{match.group('key')}{quote}{REDACTED}{quote}"

    return _CUSTOMER_ID_TEXT.sub(replace, text)


class RedactCustomerIds(logging.Filter):
    """Handler filter that removes customer ids from a record (it never drops a record)."""

    def __init__(self, allow: bool = False) -> None:
        super().__init__()
        self.allow = allow

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place unless ids are allowed; always keep the record."""
        if self.allow:
            return True
        for key in CUSTOMER_ID_KEYS:
            if key in record.__dict__:
                setattr(record, key, REDACTED)
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            # Freeze the formatted message: args may hold the id a second time.
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as a single-line JSON object."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold is logged as its text, never lost.
        return json.dumps(line, default=str, ensure_ascii=False)


def make_formatter(settings: LogSettings) -> logging.Formatter:
    """Return the JSON formatter when ``log_json`` is on, else the plain text one."""
    return JsonFormatter() if settings.log_json else logging.Formatter(TEXT_FORMAT)


def configure_logging(
    settings: LogSettings, level: str | int = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Install one handler on the root logger (replacing any) and return it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(settings))
    handler.addFilter(RedactCustomerIds(allow=settings.log_customer_ids))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def logging_dict_config(settings: LogSettings, level: str = "INFO") -> dict[str, Any]:
    """Return a ``logging.config.dictConfig`` dict of the same set-up (for ``faust.Worker``)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.log_json else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"churnstream": formatter},
        "filters": {
            "redact": {"()": RedactCustomerIds, "allow": settings.log_customer_ids},
        },
        "handlers": {
            "churnstream": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "churnstream",
                "filters": ["redact"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["churnstream"]},
    }
