"""Settings come from MAILROOM_SENDER_* and the shared MAILROOM_* names, and are validated."""

from __future__ import annotations

import pytest
from mailroom_kit.settings import SettingsError
from mailroom_sender.settings import SenderSettings


def test_defaults_and_environment_names() -> None:
    s = SenderSettings.from_env({})
    assert (s.configuration_set, s.ses_events_topic_arn, s.concurrency, s.in_doubt_seconds) == (
        "mailroom-transactional",
        "",
        16,
        600.0,
    )
    assert (s.aws_region, s.ses_endpoint_url) == ("us-east-1", "")
    env = {
        "MAILROOM_SENDER_PORT": "9100",
        "MAILROOM_SENDER_CONFIGURATION_SET": "cs",
        "MAILROOM_SENDER_SES_EVENTS_TOPIC_ARN": "arn:aws:sns:eu-west-1:1:t",
        "MAILROOM_SENDER_CONCURRENCY": "4",
        "MAILROOM_SENDER_IN_DOUBT_SECONDS": "120",
        "MAILROOM_AWS_REGION": "eu-west-1",
        "MAILROOM_SES_ENDPOINT_URL": "http://127.0.0.1:4566",
        "MAILROOM_SENDER_AWS_REGION": "ignored",
    }
    s = SenderSettings.from_env(env)
    assert (s.port, s.configuration_set, s.concurrency, s.in_doubt_seconds) == (9100, "cs", 4, 120.0)
    assert s.ses_events_topic_arn == "arn:aws:sns:eu-west-1:1:t"
    assert (s.aws_region, s.ses_endpoint_url) == ("eu-west-1", "http://127.0.0.1:4566")


def test_invalid_values_are_refused() -> None:
    with pytest.raises(SettingsError, match="MAILROOM_SENDER_CONCURRENCY"):
        SenderSettings.from_env({"MAILROOM_SENDER_CONCURRENCY": "many"})
    with pytest.raises(ValueError, match="IN_DOUBT_SECONDS"):
        SenderSettings.from_env({"MAILROOM_SENDER_IN_DOUBT_SECONDS": "0"})
    with pytest.raises(ValueError, match="CONCURRENCY"):
        SenderSettings.from_env({"MAILROOM_SENDER_CONCURRENCY": "0"})


def test_read_timeout_is_capped_by_the_in_doubt_window() -> None:
    assert SenderSettings.from_env({}).effective_read_timeout == 30.0
    short = SenderSettings.from_env({"MAILROOM_SENDER_IN_DOUBT_SECONDS": "5"})
    assert short.effective_read_timeout == 2.5


def test_keep_alive_and_early_resend_settings_are_bounded() -> None:
    s = SenderSettings.from_env({})
    assert (s.ses_max_idle_seconds, s.in_doubt_grace_seconds, s.attempt_max_seconds) == (2.0, 30.0, 35.0)
    s = SenderSettings.from_env(
        {"MAILROOM_SENDER_SES_MAX_IDLE_SECONDS": "0.5", "MAILROOM_SENDER_IN_DOUBT_GRACE_SECONDS": "0"}
    )
    assert (s.ses_max_idle_seconds, s.in_doubt_grace_seconds) == (0.5, 0.0)
    for value in ("0", "61"):
        with pytest.raises(ValueError, match="SES_MAX_IDLE_SECONDS"):
            SenderSettings.from_env({"MAILROOM_SENDER_SES_MAX_IDLE_SECONDS": value})
    for value in ("-1", "3601"):
        with pytest.raises(ValueError, match="IN_DOUBT_GRACE_SECONDS"):
            SenderSettings.from_env({"MAILROOM_SENDER_IN_DOUBT_GRACE_SECONDS": value})


def test_configuration_set_names_of_both_streams() -> None:
    s = SenderSettings.from_env({"MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET": "acme-bulk"})
    assert (s.configuration_set, s.broadcast_configuration_set) == ("mailroom-transactional", "acme-bulk")
    assert SenderSettings.from_env({}).broadcast_configuration_set == "mailroom-broadcast"
    too_long = "x" * 52  # with "-opens-clicks" over SES's 64 characters
    for env in (
        {"MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET": ""},
        {"MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET": "bad name"},
        {"MAILROOM_SENDER_CONFIGURATION_SET": too_long},
        {"MAILROOM_SENDER_BROADCAST_CONFIGURATION_SET": "mailroom-transactional"},
    ):
        with pytest.raises(ValueError, match="CONFIGURATION_SET"):
            SenderSettings.from_env(env)
    SenderSettings.from_env({"MAILROOM_SENDER_CONFIGURATION_SET": "x" * 51})
