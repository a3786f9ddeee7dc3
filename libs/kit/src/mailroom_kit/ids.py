"""Prefixed, sortable, opaque ids: `<prefix>_` + 26 Crockford base32 chars (48-bit ms time + 80 random bits)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# issue 15 (three ids per accepted email): two digits at a time, from a table of all 1,024 pairs
# (13 shifts of the 130-bit value, not 26): the same string a 5-bit loop builds, at half its cost.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))

PREFIXES = frozenset({"msg", "dom", "key", "tpl", "wh", "evt", "whd", "ten", "req"})


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return prefix + "_" + _encode(int(time.time() * 1000), os.urandom(10))


def _encode(millis: int, random: bytes) -> str:
    """The 26 digits of the 130-bit value `millis` (48 bits) then `random` (80 bits), high first."""
    value = (millis << 80) | int.from_bytes(random, "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
