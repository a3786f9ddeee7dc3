import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailroom_kit import ids
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


def _loop_reference(millis: int, random: bytes) -> str:
    """The id's 26 digits as first written: 5 bits at a time from the low end, Crockford's digits."""
    value = (millis << 80) | int.from_bytes(random, "big")
    chars = []
    for _ in range(26):
        chars.append("0123456789abcdefghjkmnpqrstvwxyz"[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@settings(max_examples=500, derandomize=True)
@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_the_base32_encoder_gives_the_digits_the_loop_gave(millis: int, random: bytes) -> None:
    # issue 15: a table of digit pairs replaced the per-digit loop (7 -> ~4 us per id); the ids stay the same.
    assert ids._encode(millis, random) == _loop_reference(millis, random)


def test_the_encoder_at_the_edges() -> None:
    assert ids._encode(0, bytes(10)) == "0" * 26
    assert ids._encode(2**48 - 1, b"\xff" * 10) == _loop_reference(2**48 - 1, b"\xff" * 10) == "7" + "z" * 25


def test_a_forked_child_draws_random_bits_of_its_own() -> None:
    """The random bits come from a block of os.urandom; a child must not replay its parent's block."""
    new_id("msg")  # the parent has a block in use
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out at once
        os.write(write, new_id("msg").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = new_id("msg")
    assert has_prefix(child, "msg") and child[-16:] != parent[-16:]


def test_the_time_digits_are_the_millisecond_of_the_call() -> None:
    """The first ten digits are kept for the millisecond they encode: a later millisecond gets its own."""
    for _ in range(3):
        before = int(time.time() * 1000)
        made = new_id("evt")
        after = int(time.time() * 1000)
        assert ids._encode(before, bytes(10))[:10] <= made[4:14] <= ids._encode(after, bytes(10))[:10]
        time.sleep(0.002)
