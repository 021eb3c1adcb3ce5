"""Structured logs: JSON lines on request, customer ids redacted unless explicitly allowed."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from streams.logging_setup import (
    REDACTED,
    configure_logging,
    logging_dict_config,
    redact_text,
)
from streams.settings import Settings


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test reconfigured it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _settings(**overrides: object) -> Settings:
    return Settings.load({}, overrides)


def _emit_sample(logger: logging.Logger) -> None:
    logger.info(
        "scored customer_id=%s as %s", "cust-981", "HIGH", extra={"customer_id": "cust-981"}
    )
    try:
        raise KeyError("customer_id='cust-981'")
    except KeyError:
        logger.exception("lookup failed", extra={"band": "HIGH", "score": 0.91})


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_extras_and_redact_customer_ids() -> None:
    stream = io.StringIO()
    configure_logging(_settings(log_json=True), stream=stream)
    _emit_sample(logging.getLogger("streams.worker.test"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO"
    assert first["logger"] == "streams.worker.test"
    assert first["message"] == f"scored customer_id={REDACTED} as HIGH"
    assert first["customer_id"] == REDACTED
    assert first["time"].endswith("+00:00")
    assert second["band"] == "HIGH"
    assert second["score"] == 0.91
    assert "KeyError" in second["exception"]
    assert "cust-981" not in stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_customer_ids_stay_when_explicitly_enabled() -> None:
    stream = io.StringIO()
    configure_logging(_settings(log_json=True, log_customer_ids=True), stream=stream)
    _emit_sample(logging.getLogger("streams.worker.test"))
    first = json.loads(stream.getvalue().splitlines()[0])
    assert first["customer_id"] == "cust-981"
    assert first["message"] == "scored customer_id=cust-981 as HIGH"


@pytest.mark.usefixtures("restore_root_logger")
def test_text_lines_are_redacted_too() -> None:
    stream = io.StringIO()
    configure_logging(_settings(), stream=stream)
    _emit_sample(logging.getLogger("streams.worker.test"))
    text = stream.getvalue()
    assert "INFO streams.worker.test: scored customer_id=<redacted> as HIGH" in text
    assert "Traceback" in text
    assert "cust-981" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.usefixtures("restore_root_logger")
def test_dict_config_for_the_faust_worker_gives_the_same_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.config.dictConfig(logging_dict_config(_settings(log_json=True), level="info"))
    _emit_sample(logging.getLogger("streams.worker.test"))
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "ERROR"]
    assert lines[0]["customer_id"] == REDACTED
    assert "cust-981" not in json.dumps(lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer_id=c1 band=LOW", "customer_id=<redacted> band=LOW"),
        ("customer_id: c1, ok", "customer_id: <redacted>, ok"),
        ('{"customer_id": "c 1"}', '{"customer_id": "<redacted>"}'),
        ("{'customer_id': 'c1'}", "{'customer_id': '<redacted>'}"),
        ("customerId=abc", "customerId=<redacted>"),
        ("customer-id=abc;", "customer-id=<redacted>;"),
        ("customer_ids=[a, b] done", "customer_ids=<redacted> done"),
        ("CUSTOMER_ID=X9", "CUSTOMER_ID=<redacted>"),
        ("no ids in here: order_id=o1", "no ids in here: order_id=o1"),
    ],
)
def test_redact_text_covers_the_usual_spellings(text: str, expected: str) -> None:
    assert redact_text(text) == expected
