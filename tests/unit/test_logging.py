"""Structured logs: JSON lines on request, customer ids as keyed-hash tokens unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import logging.config
import re
import sys
from collections.abc import Iterator

import pytest

from streams.errors import SettingsError
from streams.logging_setup import (
    RedactCustomerIds,
    configure_logging,
    customer_token,
    logging_dict_config,
    redact_text,
)
from streams.settings import Settings

KEY = "an-operators-log-key-0001"
OTHER_KEY = "another-log-key-000000002"
ID = "cust-981"
TOKEN = re.compile(r"^cid:[0-9a-f]{16}$")


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
    return Settings.load({"CHURNSTREAM_LOG_REDACTION_KEY": KEY}, overrides)


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
    assert first["message"] == f"scored customer_id={customer_token(ID, KEY)} as HIGH"
    assert first["customer_id"] == customer_token(ID, KEY)
    assert first["time"].endswith("+00:00")
    assert second["band"] == "HIGH"
    assert second["score"] == 0.91
    assert "KeyError" in second["exception"]
    assert f"customer_id='{customer_token(ID, KEY)}'" in second["exception"]
    assert ID not in stream.getvalue()


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
    token = customer_token(ID, KEY)
    assert f"INFO streams.worker.test: scored customer_id={token} as HIGH" in text
    assert "Traceback" in text
    assert f"customer_id='{token}'" in text
    assert ID not in text
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
    assert lines[0]["customer_id"] == customer_token(ID, KEY)
    assert customer_token(ID, KEY) in lines[1]["exception"]
    assert ID not in json.dumps(lines)


def _t(customer_id: str) -> str:
    return customer_token(customer_id, KEY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer_id=c1 band=LOW", f"customer_id={_t('c1')} band=LOW"),
        ("customer_id: c1, ok", f"customer_id: {_t('c1')}, ok"),
        ('{"customer_id": "c 1"}', f'{{"customer_id": "{_t("c 1")}"}}'),
        ("{'customer_id': 'c1'}", f"{{'customer_id': '{_t('c1')}'}}"),
        ("customerId=abc", f"customerId={_t('abc')}"),
        ("customer-id=abc;", f"customer-id={_t('abc')};"),
        ("customer_ids=[a, b] done", f"customer_ids=[{_t('a')}, {_t('b')}] done"),
        ('{"customer_ids": ["a", "b"]}', f'{{"customer_ids": ["{_t("a")}", "{_t("b")}"]}}'),
        ("customer_ids=[] done", "customer_ids=[] done"),
        ("CUSTOMER_ID=X9", f"CUSTOMER_ID={_t('X9')}"),
        ("lost customer_id=c1.", f"lost customer_id={_t('c1')}."),
        ("customer_id=c.1 x", f"customer_id={_t('c.1')} x"),
        ("customer_id='' x", f"customer_id='{_t('')}' x"),
        ("no ids in here: order_id=o1", "no ids in here: order_id=o1"),
    ],
)
def test_redact_text_covers_the_usual_spellings(text: str, expected: str) -> None:
    assert redact_text(text, KEY) == expected


def test_a_token_is_cid_and_16_hex_digits_of_hmac_sha256() -> None:
    digest = hmac.new(KEY.encode(), ID.encode(), hashlib.sha256).hexdigest()
    assert customer_token(ID, KEY) == "cid:" + digest[:16]
    assert TOKEN.match(customer_token(ID, KEY))


def test_the_same_id_gives_the_same_token_under_the_same_key() -> None:
    assert customer_token(ID, KEY) == customer_token(ID, KEY.encode())
    assert redact_text(f"customer_id={ID}", KEY) == redact_text(f"customer_id={ID}", KEY.encode())
    assert customer_token(ID, KEY) != customer_token("cust-982", KEY)


def test_different_keys_give_different_tokens() -> None:
    assert customer_token(ID, KEY) != customer_token(ID, OTHER_KEY)


def test_without_a_key_tokens_match_within_the_process_only() -> None:
    # No key: one random key per process, so ids still correlate within this run.
    assert customer_token(ID) == customer_token(ID, "") == customer_token(ID, None)
    assert TOKEN.match(customer_token(ID))
    assert customer_token(ID) != customer_token(ID, KEY)


@pytest.mark.usefixtures("restore_root_logger")
def test_two_lines_of_one_customer_carry_the_same_token() -> None:
    stream = io.StringIO()
    configure_logging(_settings(log_json=True), stream=stream)
    logger = logging.getLogger("streams.worker.test")
    logger.info("scored", extra={"customer_id": ID})
    logger.warning("risk changed customer_id=%s", ID)
    logger.info("scored", extra={"customer_id": "cust-982"})
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["customer_id"] == customer_token(ID, KEY)
    assert second["message"] == f"risk changed customer_id={first['customer_id']}"
    assert third["customer_id"] != first["customer_id"]
    assert ID not in stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_the_key_comes_from_the_settings_and_changes_every_token() -> None:
    tokens = []
    for key in (KEY, OTHER_KEY):
        stream = io.StringIO()
        settings = Settings.load({"CHURNSTREAM_LOG_REDACTION_KEY": key}, {"log_json": True})
        configure_logging(settings, stream=stream)
        logging.getLogger("streams.worker.test").info("scored", extra={"customer_id": ID})
        tokens.append(json.loads(stream.getvalue())["customer_id"])
    assert tokens == [customer_token(ID, KEY), customer_token(ID, OTHER_KEY)]


@pytest.mark.usefixtures("restore_root_logger")
def test_without_a_configured_key_logs_are_still_redacted() -> None:
    stream = io.StringIO()
    configure_logging(Settings.load({}, {"log_json": True}), stream=stream)
    _emit_sample(logging.getLogger("streams.worker.test"))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["customer_id"] == customer_token(ID)
    assert customer_token(ID) in second["exception"]
    assert ID not in stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_the_worker_dict_config_passes_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    config = logging_dict_config(_settings(), level="info")
    assert config["filters"]["redact"]["key"] == KEY
    logging.config.dictConfig(config)
    logging.getLogger("streams.worker.test").info("scored customer_id=%s", ID)
    err = capsys.readouterr().err
    assert f"scored customer_id={customer_token(ID, KEY)}" in err
    assert ID not in err


def test_a_chained_traceback_keeps_no_id() -> None:
    record = _record_with_traceback()
    RedactCustomerIds(key=KEY).filter(record)
    text = logging.Formatter().format(record)
    assert "The above exception was the direct cause" in text
    assert ID not in text
    assert text.count(customer_token(ID, KEY)) == 3  # the message and both exceptions


def test_a_second_handler_does_not_hash_the_tokens_again() -> None:
    record = logging.LogRecord(
        "streams", logging.INFO, __file__, 1, "scored customer_id=%s", (ID,), None
    )
    record.customer_ids = [ID, "cust-982"]
    for _ in range(2):
        RedactCustomerIds(key=KEY).filter(record)
    assert record.getMessage() == f"scored customer_id={customer_token(ID, KEY)}"
    assert record.customer_ids == [customer_token(ID, KEY), customer_token("cust-982", KEY)]


def test_allowed_ids_are_left_as_they_are() -> None:
    record = _record_with_traceback()
    RedactCustomerIds(allow=True, key=KEY).filter(record)
    assert record.customer_id == ID
    assert record.getMessage() == f"lookup of customer_id={ID} failed"


def test_a_short_key_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="CHURNSTREAM_LOG_REDACTION_KEY"):
        Settings.load({"CHURNSTREAM_LOG_REDACTION_KEY": "short"})


def test_the_key_stays_out_of_repr() -> None:
    assert KEY not in repr(_settings())


def _record_with_traceback() -> logging.LogRecord:
    try:
        try:
            raise KeyError(f"customer_id={ID}")
        except KeyError as exc:
            msg = f"retry for customer_id='{ID}' failed"
            raise RuntimeError(msg) from exc
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "streams", logging.ERROR, __file__, 1, "lookup of customer_id=%s failed", (ID,), exc_info
    )
    record.customer_id = ID
    return record
