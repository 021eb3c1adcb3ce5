"""Settings are read once from the environment, CLI flags override, bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import SettingsError
from streams.settings import Settings


def test_defaults_match_the_interfaces() -> None:
    settings = Settings.load({})
    assert settings.web_port == 6066
    assert settings.horizon_days == 90
    assert settings.holdout_percent == 10.0
    assert settings.topic("orders") == "orders"


def test_environment_is_read_and_flags_override_it() -> None:
    env = {
        "CHURNSTREAM_BROKER": "127.0.0.1:9999",
        "CHURNSTREAM_TOPIC_PREFIX": "shop1.",
        "CHURNSTREAM_API_TOKENS": "a" * 16 + ", " + "b" * 20,
        "CHURNSTREAM_HORIZON_DAYS": "60",
        "CHURNSTREAM_DATA_DIR": "/tmp/state",
    }
    settings = Settings.load(env, {"broker": "127.0.0.1:1234", "horizon_days": None})
    assert settings.broker == "127.0.0.1:1234"
    assert settings.horizon_days == 60
    assert settings.api_tokens == ("a" * 16, "b" * 20)
    assert settings.topic("orders") == "shop1.orders"
    assert settings.data_dir == Path("/tmp/state")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CHURNSTREAM_WEB_PORT": "http"}, "CHURNSTREAM_WEB_PORT"),
        ({"CHURNSTREAM_WEB_PORT": "70000"}, "CHURNSTREAM_WEB_PORT"),
        ({"CHURNSTREAM_BROKER": "localhost"}, "CHURNSTREAM_BROKER"),
        ({"CHURNSTREAM_HORIZON_DAYS": "0"}, "CHURNSTREAM_HORIZON_DAYS"),
        ({"CHURNSTREAM_HOLDOUT_PERCENT": "150"}, "CHURNSTREAM_HOLDOUT_PERCENT"),
        ({"CHURNSTREAM_API_TOKENS": "short"}, "CHURNSTREAM_API_TOKENS"),
        ({"CHURNSTREAM_MODEL_SECRET": "short"}, "CHURNSTREAM_MODEL_SECRET"),
        ({"CHURNSTREAM_WEBHOOK_URLS": "ftp://x"}, "CHURNSTREAM_WEBHOOK_URLS"),
        ({"CHURNSTREAM_WEBHOOK_SECRET": "nope"}, "CHURNSTREAM_WEBHOOK_SECRET"),
        ({"CHURNSTREAM_WEBHOOK_URLS": "http://127.0.0.1:1/x"}, "CHURNSTREAM_WEBHOOK_SECRET"),
        ({"CHURNSTREAM_TOPIC_PREFIX": "bad prefix"}, "CHURNSTREAM_TOPIC_PREFIX"),
        ({"CHURNSTREAM_LOG_JSON": "maybe"}, "CHURNSTREAM_LOG_JSON"),
        ({"CHURNSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CHURNSTREAM_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "CHURNSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "CHURNSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            },
            "CHURNSTREAM_KAFKA_SASL_USERNAME",
        ),
    ],
)
def test_a_bad_setting_is_named_in_the_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.load(env)


def test_a_bad_flag_is_named_as_the_flag() -> None:
    with pytest.raises(SettingsError, match="--web-port"):
        Settings.load({}, {"web_port": 0})


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.load({"CHURNSTREAM_MODEL_SECRET": "x" * 32})
    assert "x" * 32 not in repr(settings)
