"""Prefixed, sortable, opaque ids: `<prefix>_` + 26 Crockford base32 chars (48-bit ms time + 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# issue 15 (three ids per accepted email): two digits at a time, from a table of all 1,024 pairs.
# The 130-bit value is 2 zero bits + 48 bits of milliseconds (the first 10 digits: the time's
# own, kept for the millisecond they stand for) + 80 random bits (the last 16 digits: 8 pairs).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_TIME_SHIFTS = tuple(range(40, -1, -10))
_RANDOM_SHIFTS = tuple(range(70, -1, -10))
# os.urandom in blocks, not one call (a syscall) per id; under a lock (two threads must never take
# the same ten bytes); a forked child draws a block of its own.
_BLOCK = 4096

PREFIXES = frozenset({"msg", "dom", "key", "tpl", "wh", "evt", "whd", "ten", "req"})


class _Source:
    __slots__ = ("block", "lock", "offset", "stamp")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.block = b""
        self.offset = _BLOCK
        # (millisecond, its ten digits): one attribute, so a thread never pairs one millisecond
        # with another's digits.
        self.stamp: tuple[int, str] = (-1, "")

    def random(self) -> bytes:
        with self.lock:
            offset = self.offset
            if offset + 10 > len(self.block):
                self.block, offset = os.urandom(_BLOCK), 0
            self.offset = offset + 10
            return self.block[offset : offset + 10]


_source = _Source()
os.register_at_fork(after_in_child=_source.reset)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    millis = int(time.time() * 1000)
    source = _source
    cached, digits = source.stamp
    if millis != cached:
        digits = _time_digits(millis)
        source.stamp = (millis, digits)
    return prefix + "_" + digits + _random_digits(source.random())


def _time_digits(millis: int) -> str:
    pairs = _PAIRS
    return "".join([pairs[(millis >> shift) & 1023] for shift in _TIME_SHIFTS])


def _random_digits(random: bytes) -> str:
    value = int.from_bytes(random, "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _RANDOM_SHIFTS])


def _encode(millis: int, random: bytes) -> str:
    """The 26 digits of the 130-bit value `millis` (48 bits) then `random` (80 bits), high first."""
    return _time_digits(millis) + _random_digits(random)


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
