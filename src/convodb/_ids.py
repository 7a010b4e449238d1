"""Identifiers: time-ordered UUIDv7 strings (RFC 9562) for new conversations and messages.

Time-ordered ids keep B-tree inserts local and make ids roughly sortable by creation, without
any coordination between workers. Python 3.11 has no ``uuid.uuid7``, so it is built here.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]


def new_id() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 random bits: 12 for rand_a, 62 for rand_b
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 68) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"  # uuid.UUID(int=value) and str() cost 3x this
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
