from __future__ import annotations

import pytest
from pydantic import ValidationError

from rules.config import EngineConfig
from services.settings import BoundsSettings, SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.kafka.topic_prefix == "skipwatch."
    assert settings.topic("gps.raw") == "skipwatch.gps.raw"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SKIPWATCH_KAFKA__PARTITIONS", "many"),
        ("SKIPWATCH_KAFKA__PARTITIONS", "0"),
        ("SKIPWATCH_API__PORT", "70000"),
        ("SKIPWATCH_LOG_LEVEL", "LOUD"),
        ("SKIPWATCH_WORKER__STORE", "postgres://x"),
        ("SKIPWATCH_AUTH__TOKENS", '{"short": "admin"}'),
        ("SKIPWATCH_AUTH__TOKENS", '{"aaaaaaaaaaaaaaaaaaaa": "root"}'),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_insecure_dev_tokens_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIPWATCH_ENV", "prod")
    monkeypatch.setenv("SKIPWATCH_AUTH__ALLOW_INSECURE_DEV_TOKENS", "true")
    with pytest.raises(SettingsError, match="allow_insecure_dev_tokens"):
        load_settings()


def test_nested_values_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092")
    monkeypatch.setenv("SKIPWATCH_AUTH__TOKENS", '{"0123456789abcdef01": "viewer"}')
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert settings.auth.tokens == {"0123456789abcdef01": "viewer"}


def test_no_front_door_may_accept_what_the_engine_refuses_as_too_far_ahead() -> None:
    """Front doors and the engine agree (issue 14): the window of every front door may allow an
    event time at most as far ahead as the engine's own limit, so a 2xx is never answered for
    an event the engine would refuse (FutureEventError, dead-lettered `ahead_of_clock`)."""
    engine_limit = EngineConfig().max_future_skew_s
    assert BoundsSettings(max_future_skew_s=engine_limit).window().max_future_skew_s == engine_limit
    with pytest.raises(ValidationError, match="max_future_skew_s"):
        BoundsSettings(max_future_skew_s=engine_limit + 1)
    assert BoundsSettings().max_future_skew_s < engine_limit


def test_event_clock_lateness_beyond_the_engines_future_limit_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the event clock `now` trails the newest event by the lateness: a lateness at or past
    the engine's limit on events ahead of its clock would dead-letter every newer event, so the
    worker refuses to start with it (naming the variable) instead."""
    limit = EngineConfig().max_future_skew_s
    monkeypatch.setenv("SKIPWATCH_WORKER__CLOCK", "event")
    monkeypatch.setenv("SKIPWATCH_WORKER__ALLOWED_LATENESS_S", str(limit))
    with pytest.raises(SettingsError, match=r"SKIPWATCH_WORKER: .*allowed_lateness_s=86400"):
        load_settings()
    monkeypatch.setenv("SKIPWATCH_WORKER__ALLOWED_LATENESS_S", str(limit - 1))
    assert load_settings().worker.allowed_lateness_s == limit - 1
    monkeypatch.setenv("SKIPWATCH_WORKER__CLOCK", "wall")
    monkeypatch.setenv("SKIPWATCH_WORKER__ALLOWED_LATENESS_S", str(limit))
    assert load_settings().worker.allowed_lateness_s == limit  # judged by arrival, not `now`


def test_source_timeout_below_the_session_timeout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead binder's gps.raw partitions get a new binder only after the session timeout: a
    source timeout shorter than it would leave them out of the clock before every takeover."""
    monkeypatch.setenv("SKIPWATCH_WORKER__SESSION_TIMEOUT_S", "45")
    monkeypatch.setenv("SKIPWATCH_WORKER__SOURCE_TIMEOUT_S", "40")
    with pytest.raises(SettingsError, match="source_timeout_s"):
        load_settings()
    monkeypatch.setenv("SKIPWATCH_WORKER__SOURCE_TIMEOUT_S", "90")
    assert load_settings().worker.source_timeout_s == 90.0
