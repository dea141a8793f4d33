"""Identifiers: UUIDv7 (RFC 9562), time-ordered so that ids sort like creation time."""

from __future__ import annotations

import os
import random
import time

# Ids need uniqueness, not secrecy: a fast generator seeded from the OS (and reseeded
# in forked children) gives 74 random bits per id.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_RAND_MASK = ((1 << 76) - 1) & ~(0x3 << 62)


def uuid7() -> str:
    return uuid7_many(1)[0]


def uuid7_many(n: int) -> list[str]:
    ms = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    head = (ms << 80) | _VERSION | _VARIANT
    out = []
    for _ in range(n):
        value = head | (_random.getrandbits(76) & _RAND_MASK)
        h = f"{value:032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    out.sort()  # increasing, also within the millisecond they share
    return out
