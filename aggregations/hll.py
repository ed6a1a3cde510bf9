"""HyperLogLog registers for approximate distinct counts that stay exact under replays and merges.

Why not a library sketch: the estimators of Apache DataSketches (HIP) and similar libraries depend on
the order of updates and merges, so the same set of users split across shards and windows in two ways
gives two different answers, and a value could not be checked against an independent truth. Here the
estimate is a function of the registers alone, and merging is a register-wise max: idempotent,
commutative and associative, so replays, restarts and any partition of the events give the same number.

p = 12: 4,096 one-byte registers, a standard error of about 1.6 %; a 64-bit BLAKE2b hash per value.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Mapping
from hashlib import blake2b

P = 12
M = 1 << P
_LOW_BITS = 64 - P
_LOW_MASK = (1 << _LOW_BITS) - 1
_ALPHA = 0.7213 / (1 + 1.079 / M)


# Hashes of recently seen short string values (user ids repeat): bounded in entries and in bytes (a
# value longer than _LOCATED_MAX_CHARS is hashed every time, never kept), and cleared when full.
_LOCATED_MAX = 65_536
_LOCATED_MAX_CHARS = 128
_located: dict[str, tuple[int, int]] = {}
LOCATED: Mapping[str, tuple[int, int]] = _located  # read-only view for hot loops that inline `locate`


def locate(value: object) -> tuple[int, int]:
    """(register index, rank) of one value: the hash's first P bits choose, the rest's leading zeros rank."""
    if type(value) is str:
        found = _located.get(value)
        if found is not None:
            return found
    text = value if isinstance(value, str) else repr(value)
    h = int.from_bytes(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    found = h >> _LOW_BITS, _LOW_BITS - (h & _LOW_MASK).bit_length() + 1
    if type(value) is str and len(value) <= _LOCATED_MAX_CHARS:
        if len(_located) >= _LOCATED_MAX:
            _located.clear()
        _located[value] = found
    return found


def new() -> bytearray:
    return bytearray(M)


def add(registers: bytearray, value: object) -> bytearray:
    index, rank = locate(value)
    if registers[index] < rank:
        registers[index] = rank
    return registers


def merge(a: bytes | bytearray, b: bytes | bytearray) -> bytearray:
    return bytearray(max(x, y) for x, y in zip(a, b, strict=True))


def estimate(registers: bytes | bytearray) -> int:
    """The classic HyperLogLog estimate, with linear counting while many registers are still empty."""
    zeros = registers.count(0)
    if zeros == M:
        return 0
    raw = _ALPHA * M * M / math.fsum(2.0**-r for r in registers)
    if raw <= 2.5 * M and zeros:
        return round(M * math.log(M / zeros))
    return round(raw)


def encode(registers: bytes | bytearray) -> str:
    return base64.b64encode(zlib.compress(bytes(registers), 9)).decode()


def decode(text: str) -> bytearray:
    registers = bytearray(zlib.decompress(base64.b64decode(text)))
    if len(registers) != M:
        raise ValueError(f"HyperLogLog registers must be {M} bytes, got {len(registers)}")
    return registers
