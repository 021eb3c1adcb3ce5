"""Log lines as text or JSON, with customer ids replaced by a keyed hash unless allowed.

Customer ids are personal data: a log shipped to a third party must not carry them by
accident. :class:`RedactCustomerIds` runs on the handler (filters on a logger do not see
records propagated from its children) and replaces them, in the ``customer_id`` extra, in
``customer_id=...``-looking text of the message and in formatted tracebacks, with a token:
``cid:`` + the first 16 hex digits of HMAC-SHA256(key, customer id). The same id gives the same
token under the same key, so an operator can follow one customer through the log, and with
the key can compute the token of a given id; the id itself cannot be read back. The key is
``CHURNSTREAM_LOG_REDACTION_KEY``; without it every process draws a random key at start, so
tokens still match within one process run but not across processes or restarts.
``log_customer_ids`` on leaves ids as they are.

Two ways in: :func:`configure_logging` installs one handler on the root logger (the one-shot
CLI commands), and :func:`logging_dict_config` returns the same set-up as a ``dictConfig``
dict for ``faust.Worker(..., logging_config=...)``, because mode's worker replaces the root
handlers when it starts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any, Final, Protocol

TOKEN_PREFIX: Final[str] = "cid:"
TOKEN_HEX_DIGITS: Final[int] = 16
# Drawn once per process: without a configured key, tokens match only within this run.
_PROCESS_KEY: Final[bytes] = secrets.token_bytes(32)
# Set on a record once it is redacted, so a second handler does not hash the tokens again.
_REDACTED_MARK: Final[str] = "_churnstream_redacted"
# Keys whose values are customer ids wherever they appear (extras, key=value text, JSON).
CUSTOMER_ID_KEYS: Final[frozenset[str]] = frozenset({"customer_id", "customer", "customer_ids"})
_CUSTOMER_ID_TEXT = re.compile(
    r"""(?P<key>\bcustomer[_-]?ids?['"]?\s*[=:]\s*)"""
    r"""(?:(?P<quote>['"])(?P<quoted>.*?)(?P=quote)|(?P<list>[\[(][^\])]*[\])])"""
    # A sentence's full stop after a bare id is not part of it: "customer_id=c42." is c42.
    r"""|(?P<bare>[^\s,;'"}\])]+?)(?=\.?(?:[\s,;'"}\])]|$)))""",
    re.IGNORECASE,
)
# Every attribute a bare LogRecord has: anything else on a record came in through ``extra``.
_RECORD_FIELDS: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)
TEXT_FORMAT: Final[str] = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogSettings(Protocol):
    """The settings logging reads (``streams.settings.Settings`` has them all)."""

    @property
    def log_json(self) -> bool:
        """Whether log lines are JSON objects."""
        ...

    @property
    def log_customer_ids(self) -> bool:
        """Whether customer ids may appear in logs."""
        ...

    @property
    def log_redaction_key(self) -> str:
        """HMAC key of the customer id tokens (empty = a random key per process)."""
        ...


def _key_bytes(key: str | bytes | None) -> bytes:
    """Return ``key`` as bytes; an empty or missing key means this process's random key."""
    if not key:
        return _PROCESS_KEY
    return key.encode("utf-8") if isinstance(key, str) else key


def customer_token(customer_id: object, key: str | bytes | None = None) -> str:
    """Return ``cid:`` + the first 16 hex digits of HMAC-SHA256(key, customer id).

    A missing or empty ``key`` uses this process's random key.

    >>> customer_token("c42", key="a-key-of-16-chars")
    'cid:7771ecd282496142'
    """
    mac = hmac.new(_key_bytes(key), str(customer_id).encode("utf-8"), hashlib.sha256)
    return TOKEN_PREFIX + mac.hexdigest()[:TOKEN_HEX_DIGITS]


def redact_text(text: str, key: str | bytes | None = None) -> str:
    """Return ``text`` with the value of every ``customer_id=...``-like pair replaced by its token.

    A list value becomes a list of tokens. A missing or empty ``key`` uses this process's
    random key.

    >>> redact_text("scored customer_id=c42 band=HIGH", key="a-key-of-16-chars")
    'scored customer_id=cid:7771ecd282496142 band=HIGH'
    >>> redact_text('{"customer_id": "c42", "band": "LOW"}', key="a-key-of-16-chars")
    '{"customer_id": "cid:7771ecd282496142", "band": "LOW"}'
    """
    key_bytes = _key_bytes(key)

    def replace(match: re.Match[str]) -> str:
        quote = match.group("quote") or ""
        listed = match.group("list")
        if listed is not None:
            tokens = [_quoted_token(item.strip(), key_bytes) for item in listed[1:-1].split(",")]
            value = listed[0] + ", ".join(token for token in tokens if token) + listed[-1]
        else:
            customer_id = match.group("quoted") if quote else match.group("bare")
            value = customer_token(customer_id, key_bytes)
        return f"{match.group('key')}{quote}{value}{quote}"

    return _CUSTOMER_ID_TEXT.sub(replace, text)


def _quoted_token(item: str, key: bytes) -> str:
    """Return the token of one list item, in the item's quotes if it had any ('' if empty)."""
    quote = item[0] if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"" else ""
    customer_id = item[1:-1] if quote else item
    return f"{quote}{customer_token(customer_id, key)}{quote}" if item else ""


def _redact_value(value: object, key: bytes) -> object:
    """Return the token of one id, a list of tokens for a collection of ids, None for None."""
    if value is None:
        return None
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [customer_token(item, key) for item in value]
    return customer_token(value, key)


class RedactCustomerIds(logging.Filter):
    """Handler filter that replaces customer ids by keyed-hash tokens (never drops a record)."""

    def __init__(self, allow: bool = False, key: str | bytes | None = None) -> None:
        super().__init__()
        self.allow = allow
        self._key = _key_bytes(key)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place unless ids are allowed; always keep the record."""
        if self.allow or getattr(record, _REDACTED_MARK, False):
            return True
        for name in CUSTOMER_ID_KEYS:
            if name in record.__dict__:
                setattr(record, name, _redact_value(record.__dict__[name], self._key))
        message = record.getMessage()
        redacted = redact_text(message, self._key)
        if redacted != message:
            # Freeze the formatted message: args may hold the id a second time.
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self._key)
        setattr(record, _REDACTED_MARK, True)
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
    handler.addFilter(
        RedactCustomerIds(allow=settings.log_customer_ids, key=settings.log_redaction_key)
    )
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
            "redact": {
                "()": RedactCustomerIds,
                "allow": settings.log_customer_ids,
                "key": settings.log_redaction_key,
            },
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
