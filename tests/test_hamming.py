"""The banded Hamming join of udfs.hamming without Spark: plans, hex <-> long, recall and precision.

``banded_pairs`` must find exactly the pairs ``brute_force_pairs`` finds: the hashes here are random ones plus
adversarial ones (neighbours at exactly k and k + 1 bits with the flips placed on band boundaries, inside one band,
one per band, on the sign bit and on bit 0; decoys equal on a whole band key and far apart elsewhere; all-zero,
all-one and single-bit hashes).
"""

from __future__ import annotations

import itertools
import math
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from udfs.hamming import (
    BITS,
    MAX_KEYS,
    BandPlan,
    band_keys,
    band_plan,
    banded_pairs,
    brute_force_pairs,
    hamming,
    int_to_phash,
    keys_per_row,
    phash_to_int,
    to_signed,
)

pytestmark = pytest.mark.timeout(60)

ALL = (1 << BITS) - 1
TOP = BITS - 1
LONG_MIN, LONG_MAX = -(1 << TOP), (1 << TOP) - 1
# The distances the stage serves with its default 20-bit keys (band_plan refuses 7 and up).
SERVED_K = range(7)
KEY_BITS = (8, 20, 32)
FLIP_KINDS = ("straddle", "one-band", "spread", "sign-bit", "bit-0", "sign-and-0", "random")


def served(k: int, min_key_bits: int) -> bool:
    """Whether band_plan accepts (k, min_key_bits), from the key count alone."""
    count = keys_per_row(k, min_key_bits)
    return count is not None and count <= MAX_KEYS


def mask_bits(mask: int) -> set[int]:
    return {i for i in range(BITS) if mask >> i & 1}


def flip(value: int, bits: set[int] | list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return to_signed(value)


def flip_positions(kind: str, d: int, plan: BandPlan, rnd: random.Random) -> set[int]:
    """``d`` distinct bit positions placed adversarially against ``plan``'s bands."""
    bits: set[int] = set()
    if kind == "straddle":
        # both sides of band boundaries: each pair of flips lands in two bands
        edges = [low for low, _ in plan.bands[1:]]
        rnd.shuffle(edges)
        for low in edges:
            for b in (low - 1, low):
                if len(bits) < d:
                    bits.add(b)
    elif kind == "one-band":
        # all flips in one band (the widest, whole, when none holds d bits)
        wide = [(low, width) for low, width in plan.bands if width >= d] or [max(plan.bands, key=lambda b: b[1])]
        low, width = rnd.choice(wide)
        bits.update(rnd.sample(range(low, low + width), min(d, width)))
    elif kind == "spread":
        # one flip in each of d bands (a plan has k + s > k bands, so d <= k + 1 always fits)
        for low, width in rnd.sample(plan.bands, min(d, len(plan.bands))):
            bits.add(rnd.randrange(low, low + width))
    elif kind == "sign-bit":
        bits.add(TOP)
    elif kind == "bit-0":
        bits.add(0)
    elif kind == "sign-and-0":
        bits.update((TOP, 0))
    while len(bits) < d:  # fill up (and trim the fixed ones when d is small)
        bits.add(rnd.randrange(BITS))
    return set(sorted(bits, key=lambda b: (b not in (TOP, 0), rnd.random()))[:d])


def band_decoy(value: int, mask: int, distance: int, rnd: random.Random) -> int:
    """A hash equal to ``value`` on every bit of ``mask`` (one band key), ``distance`` bits away elsewhere."""
    free = sorted(set(range(BITS)) - mask_bits(mask))
    return flip(value, rnd.sample(free, distance))


def adversarial_hashes(
    k: int, plan: BandPlan, seed: int
) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """(hashes, planted pairs at exactly k, planted pairs at exactly k + 1), pairs as indexes into hashes."""
    rnd = random.Random(seed)
    hashes = [to_signed(rnd.getrandbits(BITS)) for _ in range(250)]
    # all-zero, all-one, the extreme longs, every single-bit hash and every all-but-one-bit hash:
    # dense cliques whose members share almost every band key
    hashes += [0, -1, LONG_MIN, LONG_MAX, 1, -2]
    hashes += [to_signed(1 << b) for b in range(BITS)] + [to_signed(ALL ^ (1 << b)) for b in range(BITS)]
    # repeated values under other ids (the pure join takes (id, hash) rows; only Spark wants them distinct)
    hashes += hashes[:3]
    at_k, beyond = [], []
    for kind in FLIP_KINDS:
        for _ in range(3):
            for d, planted in ((k, at_k), (k + 1, beyond)):
                base = to_signed(rnd.getrandbits(BITS))
                if rnd.random() < 0.5:
                    base = to_signed(base | 1 << TOP)  # half of them negative longs
                hashes += [base, flip(base, flip_positions(kind, d, plan, rnd))]
                planted.append((len(hashes) - 2, len(hashes) - 1))
    # a chain: each link k bits from the next, the ends farther apart
    link = to_signed(rnd.getrandbits(BITS))
    for _ in range(4):
        hashes.append(link)
        link = flip(link, rnd.sample(range(BITS), k))
    # band-key decoys: equal on one whole key, k + 1 or many bits apart elsewhere (candidates the popcount
    # must reject); k = 0 has none, its one key is the whole hash
    for mask in plan.keys if k else ():
        value = to_signed(rnd.getrandbits(BITS))
        free = BITS - len(mask_bits(mask))
        for distance in (k + 1, rnd.randint(k + 2, free)):
            hashes += [value, band_decoy(value, mask, distance, rnd)]
    return hashes, at_k, beyond


# --- pHash hex <-> signed long ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phash", "value"),
    [
        ("0000000000000000", 0),
        ("0000000000000001", 1),
        ("00000000ffffffff", (1 << 32) - 1),
        ("0000000080000000", 1 << 31),
        ("7fffffffffffffff", LONG_MAX),
        ("8000000000000000", LONG_MIN),
        ("8000000000000001", LONG_MIN + 1),
        ("ffffffff00000000", -(1 << 32)),
        ("fffffffffffffffe", -2),
        ("ffffffffffffffff", -1),
        ("c3e1a5b4d2f00f96", int("c3e1a5b4d2f00f96", 16) - (1 << 64)),
    ],
)
def test_phash_to_int_is_the_signed_long(phash, value):
    assert phash_to_int(phash) == value
    assert LONG_MIN <= phash_to_int(phash) <= LONG_MAX
    assert int_to_phash(value) == phash


def test_phash_round_trip_random():
    rnd = random.Random(7)
    for _ in range(2000):
        unsigned = rnd.getrandbits(BITS)
        phash = f"{unsigned:016x}"
        signed = phash_to_int(phash)
        assert signed == (unsigned if unsigned < 1 << TOP else unsigned - (1 << BITS))
        assert int_to_phash(signed) == phash
        # the unsigned value (>= 2**63 for half of them) names the same 64 bits
        assert int_to_phash(unsigned) == phash
        assert phash_to_int(int_to_phash(unsigned)) == to_signed(unsigned) == signed


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0",
        "000000000000000",  # 15 digits
        "00000000000000000",  # 17 digits
        "C3E1A5B4D2F00F96",  # upper case: the stage's pHashes are lower case, and so is its validity rule
        "0x3e1a5b4d2f00f96",
        "g000000000000000",
        " 000000000000000",
        "000000000000000\n",
        "-000000000000001",
        None,
        12345,
        b"0000000000000000",
    ],
)
def test_phash_to_int_refuses_non_phashes(bad):
    with pytest.raises(ValueError, match="16-hex-digit"):
        phash_to_int(bad)


def test_hamming_counts_64_bits_of_signed_values():
    assert hamming(0, -1) == 64
    assert hamming(LONG_MIN, LONG_MAX) == 64
    assert hamming(LONG_MIN, 0) == 1
    assert hamming(-1, -2) == 1
    rnd = random.Random(3)
    for _ in range(500):
        a, b = rnd.getrandbits(BITS), rnd.getrandbits(BITS)
        assert hamming(a, b) == hamming(to_signed(a), to_signed(b)) == hamming(b, a) == bin(a ^ b).count("1")


# --- band plans -------------------------------------------------------------------------------------------------------

# every (k, min_key_bits) band_plan accepts, for these key lengths (with 1-bit keys, every k)
PLANS = [(k, bits) for bits in (1, 8, 16, 20, 32, 40, 64) for k in range(BITS) if served(k, bits)]


@pytest.mark.parametrize(("k", "min_key_bits"), PLANS)
def test_band_plan_invariants(k, min_key_bits):
    plan = band_plan(k, min_key_bits)
    assert plan.k == k
    # the bands tile the 64 bits: contiguous from bit 0, no gap, no overlap, no empty band
    low = 0
    for band_low, width in plan.bands:
        assert band_low == low and width >= 1
        low += width
    assert low == BITS
    m = len(plan.bands)
    assert m == (1 if k == 0 else k + plan.choose)
    # as even as possible: widths differ by at most one
    assert max(w for _, w in plan.bands) - min(w for _, w in plan.bands) <= 1
    # every key is the union of exactly `choose` bands, and every choice of `choose` bands is a key
    band_sets = [set(range(lo, lo + w)) for lo, w in plan.bands]
    expected = {
        frozenset().union(*(band_sets[i] for i in combo)) for combo in itertools.combinations(range(m), plan.choose)
    }
    got = [frozenset(mask_bits(mask)) for mask in plan.keys]
    assert len(got) == len(set(got)) == math.comb(m, plan.choose)
    assert set(got) == expected
    for mask in plan.keys:
        assert LONG_MIN <= mask <= LONG_MAX  # a Spark long literal
    assert plan.key_bits == min(len(bits) for bits in got)
    # the plan holds the promised key length
    assert plan.key_bits >= min_key_bits
    # the smallest such s: one band fewer per key would fall short of min_key_bits
    if k > 0 and plan.choose > 1 and plan.key_bits >= min_key_bits:
        s = plan.choose - 1
        assert (BITS // (k + s)) * s < min_key_bits
    assert keys_per_row(k, min_key_bits) == len(plan.keys)


@pytest.mark.parametrize(("k", "min_key_bits"), [p for p in PLANS if p[0] <= 8])
def test_pigeonhole_any_pair_within_k_shares_a_key(k, min_key_bits):
    """By construction: flip up to k bits of random hashes, placed adversarially; one key must still agree."""
    plan = band_plan(k, min_key_bits)
    rnd = random.Random(k * 100 + min_key_bits)
    for _ in range(300):
        value = to_signed(rnd.getrandbits(BITS))
        d = rnd.randint(0, k)
        other = flip(value, flip_positions(rnd.choice(FLIP_KINDS), d, plan, rnd))
        assert hamming(value, other) == d
        assert any(value & mask == other & mask for mask in plan.keys), (k, int_to_phash(value ^ other))
        # and the band_keys the join explodes a row into are the same on that key
        assert set(band_keys(value, plan)) & set(band_keys(other, plan))


@pytest.mark.parametrize("k", [1, 2])
def test_pigeonhole_exhaustive_for_small_k(k):
    """Every set of exactly k flipped bits (64 and 2016 of them) leaves some key untouched."""
    plan = band_plan(k)
    for bits in itertools.combinations(range(BITS), k):
        diff = sum(1 << b for b in bits)
        assert any(diff & (mask & ALL) == 0 for mask in plan.keys), bits


def test_band_plan_k0_is_the_whole_hash():
    plan = band_plan(0)
    assert plan.keys == (-1,) and plan.bands == ((0, BITS),) and plan.key_bits == BITS


def test_band_plan_default_sizes():
    """The plans of the stage's served distances with 20-bit keys (what README's cost table rests on)."""
    assert [keys_per_row(k) for k in SERVED_K] == [1, 2, 3, 10, 15, 56, 84]
    assert [band_plan(k).key_bits for k in SERVED_K] == [64, 32, 21, 25, 20, 24, 21]


@pytest.mark.parametrize(
    ("k", "min_key_bits", "message"),
    [
        (-1, 20, "outside 0..63"),
        (64, 20, "outside 0..63"),
        (1000, 20, "outside 0..63"),
        (3, 0, "min_key_bits 0 is outside 1..64"),
        (3, 65, "min_key_bits 65 is outside 1..64"),
        (7, 20, "distance 7 needs 330 band keys per row for 20-bit keys"),
        (8, 20, "limit 128"),
        (5, 32, "use a smaller distance or fewer key bits"),
        (2, 64, "band keys per row"),
    ],
)
def test_band_plan_refuses_what_it_cannot_serve(k, min_key_bits, message):
    with pytest.raises(ValueError, match=message):
        band_plan(k, min_key_bits)
    if 0 <= k < BITS and 1 <= min_key_bits <= BITS:
        assert not served(k, min_key_bits)


class TookTooLong(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TookTooLong in the block after ``seconds`` (SIGALRM: main thread, POSIX)."""

    def ring(signum, frame):
        raise TookTooLong(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("k", [10, 12])
def test_band_plan_refuses_quickly(k):
    """Refusals whose key count is still small enough to enumerate (3003 and 50388 keys)."""
    with deadline(5.0), pytest.raises(ValueError, match="band keys per row"):
        band_plan(k)


@pytest.mark.parametrize("k", [15, 32, 50, 62, 63])
def test_band_plan_refuses_large_k_without_enumerating_keys(k):
    """comb(k + s, s) keys is 3.3 million at k = 15 and 1.3e14 at k = 32: the count is checked first."""
    with deadline(1.0), pytest.raises(ValueError, match="band keys per row"):
        band_plan(k)


def test_band_plan_k63_refuses_one_bit_keys():
    """64 one-bit bands would put half of all rows on one key value: a quadratic join, refused."""
    with pytest.raises(ValueError, match="no band keys per row of 20 bits"):
        band_plan(63)
    assert keys_per_row(63) is None
    # with 1-bit keys asked for explicitly, it is what was asked
    assert band_plan(63, 1).key_bits == 1


@pytest.mark.parametrize("min_key_bits", [1, 8, 20, 32, 64])
def test_keys_per_row_matches_the_plan(min_key_bits):
    for k in range(0, 12):
        count = keys_per_row(k, min_key_bits)
        if count is None:
            with pytest.raises(ValueError, match="no band keys per row"):
                band_plan(k, min_key_bits)
        elif count <= MAX_KEYS:
            assert count == len(band_plan(k, min_key_bits).keys)
        else:
            with pytest.raises(ValueError, match=f"needs {count} band keys per row"):
                band_plan(k, min_key_bits)


# --- recall and precision of the banded join --------------------------------------------------------------------------


def test_brute_force_reference_on_a_hand_example():
    rows = [(10, 0), (11, 1), (12, 3), (13, -1), (14, LONG_MIN), (15, 0)]
    assert brute_force_pairs(rows, 0) == {(10, 15)}
    assert brute_force_pairs(rows, 1) == {(10, 11), (10, 14), (10, 15), (11, 12), (11, 15), (14, 15)}
    assert (12, 14) in brute_force_pairs(rows, 3) and (12, 14) not in brute_force_pairs(rows, 2)


@pytest.mark.parametrize(("k", "min_key_bits"), [(k, bits) for bits in KEY_BITS for k in SERVED_K if served(k, bits)])
def test_banded_pairs_equal_brute_force(k, min_key_bits):
    plan = band_plan(k, min_key_bits)
    hashes, at_k, beyond = adversarial_hashes(k, plan, seed=1000 * k + min_key_bits)
    rows = list(enumerate(hashes))
    expected = brute_force_pairs(rows, k)
    found = banded_pairs(rows, k, min_key_bits)
    assert found == expected, f"missed {sorted(expected - found)[:5]}, extra {sorted(found - expected)[:5]}"
    # not vacuous: every neighbour planted at k is found, none planted at k + 1
    assert all(hamming(hashes[a], hashes[b]) == k for a, b in at_k)
    assert all(hamming(hashes[a], hashes[b]) == k + 1 for a, b in beyond)
    assert set(at_k) <= found
    assert not set(beyond) & found
    assert len(found) > len(at_k)


def test_banded_pairs_on_random_clusters():
    """Clusters of hashes a few bits around random centres: many pairs at every distance 0..7."""
    rnd = random.Random(11)
    hashes = []
    for _ in range(40):
        centre = to_signed(rnd.getrandbits(BITS))
        hashes += [flip(centre, rnd.sample(range(BITS), rnd.randint(0, 4))) for _ in range(8)]
    rows = list(enumerate(hashes))
    for k in SERVED_K:
        expected = brute_force_pairs(rows, k)
        assert banded_pairs(rows, k) == expected
        assert expected or k == 0
