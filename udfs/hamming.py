"""Hamming-distance search over 64-bit pHashes: the plan of the banded join, and its references.

Two hashes within Hamming distance k differ in at most k bits. Cut the 64 bits
into ``k + s`` bands: at most k bands can hold a difference, so at least ``s``
bands are equal (pigeonhole). The banded join therefore emits, per row, one
key per choice of ``s`` bands (the hash with every other bit masked off) and
joins rows on equal keys: every pair within k shares at least one key, and a
popcount of the XOR confirms the candidates. ``s = 1`` is the classic "k + 1
bands"; a larger ``s`` makes each key longer (fewer random collisions per key)
at the price of more keys per row (``comb(k + s, s)``). ``band_plan`` picks the
smallest ``s`` whose keys hold at least ``min_key_bits`` bits: with N rows a
random key collides with about N / 2**bits others, so 20 bits keeps the
candidates near N per key up to about a million rows per key value, and the
join near-linear in N.

Hashes are handled as signed 64-bit integers (Spark's ``long``), the same bits
as the unsigned value of the 16 hex digits.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

BITS = 64
_MASK64 = (1 << BITS) - 1
_HEX16 = re.compile(r"[0-9a-f]{16}")
# A plan with more keys than this per row costs more than it saves; k is too large for banding.
MAX_KEYS = 128


def phash_to_int(phash: str) -> int:
    """The 16 hex digits of ``str(imagehash.phash(...))`` as a signed 64-bit integer (Spark ``long``)."""
    if not isinstance(phash, str) or not _HEX16.fullmatch(phash):
        raise ValueError(f"not a 16-hex-digit pHash: {phash!r}")
    return to_signed(int(phash, 16))


def int_to_phash(value: int) -> str:
    return f"{value & _MASK64:016x}"


def to_signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << BITS) if value >> (BITS - 1) else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _MASK64).bit_count()


@dataclass(frozen=True)
class BandPlan:
    """``keys[j]`` is a 64-bit mask (signed): the bits of the ``s`` bands of key j."""

    k: int
    bands: tuple[tuple[int, int], ...]  # (lowest bit, width) per band
    choose: int  # s: bands per key
    keys: tuple[int, ...]

    @property
    def key_bits(self) -> int:
        """The fewest bits any key holds."""
        return min(bin(m & _MASK64).count("1") for m in self.keys)


def band_plan(k: int, min_key_bits: int = 20) -> BandPlan:
    """The band split for distance ``k``: ``k + s`` bands, one key per ``s`` of them.

    Refuses (ValueError) a plan whose keys cannot hold ``min_key_bits`` bits or
    that needs more than ``MAX_KEYS`` keys per row; the count is checked before
    any key is built, so a large ``k`` is refused at once.
    """
    if k < 0 or k >= BITS:
        raise ValueError(f"distance {k} is outside 0..63")
    if not 1 <= min_key_bits <= BITS:
        raise ValueError(f"min_key_bits {min_key_bits} is outside 1..64")
    if k == 0:
        return BandPlan(0, ((0, BITS),), 1, (to_signed(_MASK64),))
    s = _bands_per_key(k, min_key_bits)
    if s is None:
        raise ValueError(
            f"distance {k} leaves no band keys per row of {min_key_bits} bits: use a smaller distance or fewer key bits"
        )
    count = math.comb(k + s, s)
    if count > MAX_KEYS:
        raise ValueError(
            f"distance {k} needs {count} band keys per row for {min_key_bits}-bit keys (limit {MAX_KEYS}): "
            "use a smaller distance or fewer key bits"
        )
    bands = _split(k + s)
    keys = tuple(
        to_signed(sum(((1 << width) - 1) << low for low, width in (bands[i] for i in combo)))
        for combo in itertools.combinations(range(k + s), s)
    )
    return BandPlan(k, bands, s, keys)


def _bands_per_key(k: int, min_key_bits: int) -> int | None:
    """The smallest ``s`` whose narrowest key (``s`` of ``k + s`` bands) holds ``min_key_bits`` bits, or None."""
    for s in range(1, BITS - k + 1):
        if (BITS // (k + s)) * s >= min_key_bits:
            return s
    return None


def keys_per_row(k: int, min_key_bits: int = 20) -> int | None:
    """How many rows the banded join makes of one, without building the plan (None: no plan exists)."""
    if k == 0:
        return 1
    s = _bands_per_key(k, min_key_bits)
    return None if s is None else math.comb(k + s, s)


def _split(m: int) -> tuple[tuple[int, int], ...]:
    """64 bits into ``m`` bands as even as possible, wider bands first."""
    base, extra = divmod(BITS, m)
    bands, low = [], 0
    for i in range(m):
        width = base + (1 if i < extra else 0)
        bands.append((low, width))
        low += width
    return tuple(bands)


def band_keys(value: int, plan: BandPlan) -> list[tuple[int, int]]:
    """(key index, masked hash) per key of ``plan``: what the Spark join explodes a row into."""
    return [(j, to_signed(value & mask)) for j, mask in enumerate(plan.keys)]


def brute_force_pairs(hashes: list[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """Every (id_a, id_b), id_a < id_b, of rows whose hashes are within ``k``: the O(n²) reference."""
    out = set()
    for (ia, ha), (ib, hb) in itertools.combinations(hashes, 2):
        if hamming(ha, hb) <= k:
            out.add((min(ia, ib), max(ia, ib)))
    return out


def banded_pairs(hashes: list[tuple[int, int]], k: int, min_key_bits: int = 20) -> set[tuple[int, int]]:
    """The banded join in plain Python, exactly as the Spark stage does it (for tests and small inputs)."""
    plan = band_plan(k, min_key_bits)
    buckets: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for row_id, value in hashes:
        for key in band_keys(value, plan):
            buckets.setdefault(key, []).append((row_id, value))
    out = set()
    for rows in buckets.values():
        for (ia, ha), (ib, hb) in itertools.combinations(rows, 2):
            if hamming(ha, hb) <= k:
                out.add((min(ia, ib), max(ia, ib)))
    return out
