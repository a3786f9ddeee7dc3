import time

import pytest
from mailroom_kit.ids import has_prefix, new_id
from mailroom_kit.settings import BaseSettings, SettingsError


class DemoSettings(BaseSettings, frozen=True, kw_only=True):
    env_prefix = "MAILROOM_DEMO_"
    batch: int = 5
    enabled: bool = False


def test_settings_read_shared_and_prefixed_names() -> None:
    s = DemoSettings.from_env(
        {
            "MAILROOM_DATABASE_URL": "postgresql://x/y",
            "MAILROOM_DEMO_BATCH": "7",
            "MAILROOM_DEMO_ENABLED": "true",
            "MAILROOM_DEMO_PORT": "9001",
            "MAILROOM_BATCH": "99",
        }
    )
    assert (s.database_url, s.batch, s.enabled, s.port) == ("postgresql://x/y", 7, True, 9001)


def test_settings_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="MAILROOM_DEMO_BATCH"):
        DemoSettings.from_env({"MAILROOM_DEMO_BATCH": "many"})


def test_ids_are_prefixed_unique_and_sortable() -> None:
    a = new_id("msg")
    time.sleep(0.002)
    b = new_id("msg")
    assert has_prefix(a, "msg") and has_prefix(b, "msg")
    assert a < b
    assert len({new_id("evt") for _ in range(10_000)}) == 10_000
    with pytest.raises(ValueError):
        new_id("nope")
