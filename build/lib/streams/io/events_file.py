"""Reading and writing JSON Lines events files (``.jsonl`` or ``.jsonl.gz``), one event a line.

The format is that of ``INTERFACES.md`` ("Events file"): one JSON object per line with an
``event_type`` (``order``, ``click`` or ``profile``) and that type's fields; blank lines are
skipped. Lines are validated by :func:`streams.core.events.event_from_dict`, so a file is held
to exactly the contract the Avro inputs are. Files are streamed, never loaded whole.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from io import BufferedIOBase
from pathlib import Path
from typing import IO, Final, NoReturn

from streams.core.events import Event, event_from_dict, event_to_dict
from streams.errors import EventsFileError, ValidationError

GZIP_MAGIC: Final[bytes] = b"\x1f\x8b"
# One event is a few hundred bytes; a megabyte-long line is a broken file, not an event.
MAX_LINE_BYTES: Final[int] = 1 << 20

OnError = Callable[[EventsFileError], None]


def read_events(
    path: str | Path, now: datetime | None = None, on_error: OnError | None = None
) -> Iterator[Event]:
    """Yield the validated events of the events file at ``path``, in file order.

    The first bad line raises ``EventsFileError`` (``path:line: message`` naming the field).
    With ``on_error``, each bad line's error is passed to it instead and the line skipped.
    An unreadable file (missing: line 0) or a corrupt gzip stream always raises. ``now``
    (aware UTC), when given, rejects event times more than a day after it.
    """
    name = str(path)
    for line_number, line in iter_lines(path):
        try:
            event = parse_event_line(line, name, line_number, now)
        except EventsFileError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        if event is not None:
            yield event


def parse_event_line(
    line: str | bytes, path: str = "<line>", line_number: int = 1, now: datetime | None = None
) -> Event | None:
    """Return the event on one events-file ``line``, None for a blank line.

    Raises ``EventsFileError`` at ``path:line_number`` for text that is not UTF-8, not JSON,
    not an object, or not a valid event (the message names the field).

    >>> parse_event_line('{"event_type": "profile", "customer_id": "c1", '
    ...     '"event_time": "2024-01-01T00:00:00Z", "sms_opt_in": false}').sms_opt_in
    False
    """
    if len(line) > MAX_LINE_BYTES:
        msg = f"line longer than {MAX_LINE_BYTES} bytes"
        raise EventsFileError(msg, path, line_number)
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line[exc.start : exc.start + 4]
            msg = f"not UTF-8 text ({exc.reason} at byte {exc.start}: {bad!r})"
            raise EventsFileError(msg, path, line_number) from exc
    else:
        text = line
    if line_number == 1:
        text = text.removeprefix("\ufeff")  # editors on Windows start files with a BOM
    if not text.strip():
        return None
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg} at column {exc.colno}"
        raise EventsFileError(msg, path, line_number) from exc
    except (ValueError, RecursionError) as exc:  # huge integers, absurdly deep nesting
        msg = f"not valid JSON: {_clip(str(exc))}"
        raise EventsFileError(msg, path, line_number) from exc
    if not isinstance(raw, dict):
        msg = f"must be a JSON object, got {type(raw).__name__} {_clip(repr(raw))}"
        raise EventsFileError(msg, path, line_number)
    for field, value in raw.items():
        # Only "items" may hold a list; event_from_dict's membership checks assume scalars.
        if field != "items" and isinstance(value, list | dict):
            msg = f"field {field!r}: must be a string, number, boolean or null, got {value!r}"
            raise EventsFileError(_clip(msg), path, line_number)
    try:
        return event_from_dict(raw, now=now)
    except ValidationError as exc:
        raise EventsFileError(_clip(str(exc)), path, line_number) from exc
    # Values event_from_dict does not expect to see, e.g. a year-1 time with an offset.
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f"invalid value in {_clip(text.strip(), 120)!r}: {exc}"
        raise EventsFileError(msg, path, line_number) from exc


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, raw line)`` of the plain or gzip file at ``path``, 1-based.

    Gzip is recognised by the ``.gz`` suffix or the gzip magic bytes. A line longer than
    ``MAX_LINE_BYTES`` is yielded cut to ``MAX_LINE_BYTES + 1`` bytes (and rejected by
    :func:`parse_event_line`). Raises ``EventsFileError`` (line 0) for a file that cannot be
    opened, and at the current line for a corrupt or cut gzip stream.
    """
    name = str(path)
    try:
        handle = _open(Path(path))
    except OSError as exc:
        msg = f"cannot open events file: {exc.strerror or exc}"
        raise EventsFileError(msg, name, 0) from exc
    line_number = 0
    with handle:
        while True:
            line_number += 1
            try:
                line = handle.readline(MAX_LINE_BYTES + 1)
                if len(line) > MAX_LINE_BYTES:
                    _skip_rest_of_line(handle)
            except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
                _raise_corrupt(exc, name, line_number)
            if not line:
                return
            yield line_number, line


def write_events(path: str | Path, events: Iterable[Event]) -> int:
    """Write ``events`` to ``path`` as JSON Lines (gzip if it ends in ``.gz``); return the count."""
    target = Path(path)
    count = 0
    try:
        with _text_writer(target) as handle:
            for event in events:
                handle.write(json.dumps(event_to_dict(event), ensure_ascii=False, allow_nan=False))
                handle.write("\n")
                count += 1
    except OSError as exc:
        msg = f"cannot write events file: {exc.strerror or exc}"
        raise EventsFileError(msg, str(target), count) from exc
    return count


def _text_writer(target: Path) -> IO[str]:
    if target.name.endswith(".gz"):
        return gzip.open(target, "wt", encoding="utf-8")
    return target.open("w", encoding="utf-8")


def _open(path: Path) -> BufferedIOBase:
    handle: BufferedIOBase = path.open("rb")
    try:
        magic = handle.read(len(GZIP_MAGIC))
        handle.seek(0)
    except OSError:
        handle.close()
        raise
    if magic == GZIP_MAGIC or path.name.endswith(".gz"):
        handle.close()
        return gzip.GzipFile(path, "rb")
    return handle


def _skip_rest_of_line(handle: BufferedIOBase) -> None:
    while True:
        chunk = handle.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


def _raise_corrupt(exc: BaseException, path: str, line_number: int) -> NoReturn:
    detail = _clip(str(exc)) or type(exc).__name__
    msg = f"cannot read events file (corrupt or cut gzip stream?): {detail}"
    raise EventsFileError(msg, path, line_number) from exc


def _reject_constant(name: str) -> NoReturn:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
