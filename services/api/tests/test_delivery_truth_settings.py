"""The delivery-truth settings (issue 22): defaults, and a value out of range stops the process at
start with the variable's name."""

from __future__ import annotations

import pytest
from mailroom_api.settings import ApiSettings
from mailroom_kit.settings import SettingsError


def test_soft_bounce_suppression_is_off_by_default_and_bounded() -> None:
    assert ApiSettings.from_env({}).soft_bounce_suppress_after == 0
    assert ApiSettings.from_env({"MAILROOM_API_SOFT_BOUNCE_SUPPRESS_AFTER": "3"}).soft_bounce_suppress_after == 3
    for bad in ("-1", "1001", "three"):
        with pytest.raises(SettingsError, match=r"soft_bounce_suppress_after|SOFT_BOUNCE"):
            ApiSettings.from_env({"MAILROOM_API_SOFT_BOUNCE_SUPPRESS_AFTER": bad})
