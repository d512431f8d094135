"""Near-duplicate images on Spark: the banded join of jobs.stages.dedup against brute force, and real image copies.

``near_pairs`` and ``blocklist_matches`` must find exactly what an O(n²) check finds on a few thousand hashes with
planted neighbours at k and k + 1 bits and band-key decoys. The near-duplicate verdicts of ``with_dedup_verdicts``
are compared with a plain-Python reference (connected components of rows within k bits, one winner per component:
earliest dump, then smallest id). Last, pHashes of generated images and their transformed copies (JPEG
re-encoding, resizing, small crops) show which copies the default ``dedup.near_distance`` catches; run with ``-s``
to see the distance distributions.
"""

from __future__ import annotations

import collections
import itertools
import random
import re

import numpy as np
import pytest
from image_factory import encode, scene
from PIL import Image
from pyspark.sql import functions as F
from test_hamming import FLIP_KINDS, band_decoy, flip, flip_positions

from jobs.stages.dedup import DedupConfig, blocklist_matches, near_pairs, phash_hex, phash_long, with_dedup_verdicts
from schemas import reasons
from udfs.hamming import BITS, band_plan, brute_force_pairs, hamming, int_to_phash, phash_to_int, to_signed
from udfs.image import ImageConfig, encode_resized, inspect_image

pytestmark = pytest.mark.timeout(180)

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
NEAR_KS = (0, 1, 2, 4, 6)
DEFAULT_K = DedupConfig().near_distance
ROWS = "id long, image_phash string, caption string, dump string"
VALID = re.compile(r"[0-9a-f]{16}")


def near_config(k: int) -> DedupConfig:
    return DedupConfig(pair_dedup=False, history=False, near_duplicates=True, near_distance=k)


def pairs_within(values: list[int], k: int) -> dict[tuple[int, int], int]:
    """Brute force: {(a, b): distance} for every a < b (signed) of ``values`` within ``k`` bits."""
    arr = np.array(values, dtype=np.int64).view(np.uint64)
    out = {}
    for start in range(0, len(arr), 512):
        block = np.bitwise_count(arr[start : start + 512, None] ^ arr[None, :])
        for i, j in zip(*np.nonzero(block <= k), strict=True):
            a, b = values[start + i], values[j]
            if a < b:
                out[(a, b)] = int(block[i, j])
    return out


def near_groups(rows: list[tuple], k: int) -> list[list[tuple]]:
    """The rows with a valid pHash as connected groups: rows within k bits are linked, equal pHashes included."""
    valid = [row for row in rows if row[1] is not None and VALID.fullmatch(row[1])]
    parent = list(range(len(valid)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    values = [phash_to_int(row[1]) for row in valid]
    for i, j in itertools.combinations(range(len(valid)), 2):
        if hamming(values[i], values[j]) <= k:
            parent[root(i)] = root(j)
    groups = collections.defaultdict(list)
    for i, row in enumerate(valid):
        groups[root(i)].append(row)
    return list(groups.values())


def expected_verdicts(rows: list[tuple], k: int) -> dict[int, tuple[str | None, str | None]]:
    """The stage's contract in plain Python: {id: (reason, detail)}. Each group of ``near_groups`` keeps its
    earliest (dump, id); the others are near-duplicates of it. Invalid pHashes come first, as phash-invalid."""
    verdicts: dict[int, tuple[str | None, str | None]] = {
        row_id: (reasons.PHASH_INVALID, f"image_phash={'null' if phash is None else phash}")
        for row_id, phash, _, _ in rows
        if phash is None or not VALID.fullmatch(phash)
    }
    for group in near_groups(rows, k):
        win_dump, win_id = min((dump, row_id) for row_id, _, _, dump in group)
        for row_id, _, _, _ in group:
            if row_id == win_id:
                verdicts[row_id] = (None, None)
            else:
                verdicts[row_id] = (reasons.NEAR_DUPLICATE, f"near-duplicate of id {win_id} (dump {win_dump})")
    return verdicts


def run_stage(spark, rows: list[tuple], k: int) -> dict[int, tuple[str | None, str | None]]:
    df = spark.createDataFrame(rows, ROWS)
    out = with_dedup_verdicts(df, near_config(k))
    assert out.columns == df.columns + ["reason", "detail"]
    got = out.select("id", "reason", "detail").collect()
    # conservation: every input row exactly once
    assert sorted(r.id for r in got) == sorted(r[0] for r in rows)
    return {r.id: (r.reason, r.detail) for r in got}


# --- hex pHash <-> long -----------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_phash_long_is_phash_to_int(spark):
    rnd = random.Random(5)
    hexes = [f"{rnd.getrandbits(BITS):016x}" for _ in range(300)]
    hexes += [
        "0000000000000000",
        "0000000000000001",
        "0000000080000000",  # the low word's top bit: conv + cast must not sign it
        "00000000ffffffff",
        "7fffffffffffffff",
        "8000000000000000",
        "8000000000000001",
        "80000000ffffffff",
        "ffffffff00000000",
        "fffffffffffffffe",
        "ffffffffffffffff",
    ]
    assert sum(int(h, 16) >= 1 << 63 for h in hexes) > 100
    df = spark.createDataFrame([(h,) for h in hexes] + [(None,)], "image_phash string")
    value = phash_long(F.col("image_phash"))
    got = df.select("image_phash", value.alias("value"), phash_hex(value).alias("back")).collect()
    assert len(got) == len(hexes) + 1
    for row in got:
        if row.image_phash is None:
            assert row.value is None and row.back is None
        else:
            assert row.value == phash_to_int(row.image_phash), row.image_phash
            assert row.back == row.image_phash


# --- near_pairs against brute force -----------------------------------------------------------------------------------


def near_pair_hashes() -> list[int]:
    """A few thousand DISTINCT longs: random ones, dense single-bit cliques, and for each k of NEAR_KS neighbours
    planted at exactly k and k + 1 bits against that k's band plan, band-key decoys and a chain."""
    rnd = random.Random(2024)
    values = {to_signed(rnd.getrandbits(BITS)) for _ in range(1500)}
    values |= {0, -1, LONG_MIN, LONG_MAX}
    values |= {to_signed(1 << b) for b in range(BITS)} | {to_signed(~(1 << b)) for b in range(BITS)}
    for k in NEAR_KS:
        plan = band_plan(k)
        for kind in FLIP_KINDS:
            for d in (k, k + 1):
                for _ in range(4):
                    base = to_signed(rnd.getrandbits(BITS) | (rnd.random() < 0.5) << 63)
                    values |= {base, flip(base, flip_positions(kind, d, plan, rnd))}
        for mask in plan.keys if k else ():
            value = to_signed(rnd.getrandbits(BITS))
            free = BITS - bin(mask & ((1 << BITS) - 1)).count("1")
            values |= {
                value,
                band_decoy(value, mask, k + 1, rnd),
                band_decoy(value, mask, rnd.randint(k + 2, free), rnd),
            }
        link = to_signed(rnd.getrandbits(BITS))
        for _ in range(5):
            values.add(link)
            link = flip(link, rnd.sample(range(BITS), max(k, 1)))
    return sorted(values)


@pytest.fixture(scope="module")
def near_data(spark):
    values = near_pair_hashes()
    reference = pairs_within(values, max(NEAR_KS) + 1)
    # the numpy reference agrees with udfs.hamming's on a sample
    sample = values[::9]
    sample_pairs = set(pairs_within(sample, 7))
    assert sample_pairs and sample_pairs == brute_force_pairs([(v, v) for v in sample], 7)
    # one null row: it has no band key and must pair with nothing
    df = spark.createDataFrame([(v,) for v in values] + [(None,)], "phash long").cache()
    assert df.count() == len(values) + 1
    yield values, reference, df
    df.unpersist()


@pytest.mark.spark
@pytest.mark.parametrize("k", NEAR_KS)
def test_near_pairs_equal_brute_force(near_data, k):
    values, reference, df = near_data
    expected = {(a, b, d) for (a, b), d in reference.items() if d <= k}
    rows = near_pairs(df, k).collect()
    got = {(r.a, r.b, r.distance) for r in rows}
    assert len(rows) == len(got), "a pair came out twice"
    missed, extra = expected - got, got - expected
    assert not missed and not extra, f"missed {sorted(missed)[:3]}, extra {sorted(extra)[:3]}"
    # not vacuous: the data has pairs at exactly k and k + 1 (the ones the join must leave out)
    at = collections.Counter(reference.values())
    assert at[k + 1] >= 20
    assert at[k] >= 20 if k else not got


# --- blocklist_matches ------------------------------------------------------------------------------------------------


def blocklist_data(k_plan: int) -> tuple[list[int], list[tuple[int, str]], dict]:
    """(dataset hashes, blocklist (blocked, name), the special cases) with hashes planted 0..k+1 bits from
    blocked ones."""
    rnd = random.Random(77)
    blocklist = [(to_signed(rnd.getrandbits(BITS)), rnd.choice(["coco-val", "imagenet-val"])) for _ in range(150)]
    blocklist += [(0, "coco-val"), (-1, "imagenet-val"), (LONG_MIN, "coco-val")]
    shared = to_signed(rnd.getrandbits(BITS))
    blocklist += [(shared, "imagenet-val"), (shared, "coco-val")]  # one hash in two lists: the name decides
    hashes = {to_signed(rnd.getrandbits(BITS)) for _ in range(800)}
    plan = band_plan(k_plan)
    for blocked, _ in blocklist[:60] + blocklist[-5:]:
        for d in range(0, k_plan + 2):
            hashes.add(flip(blocked, flip_positions(rnd.choice(FLIP_KINDS), d, plan, rnd)))
    # one hash 1 bit from one blocked hash and 3 from another: the nearest wins
    a = to_signed(rnd.getrandbits(BITS))
    probe = flip(a, [5])
    blocklist += [(a, "imagenet-val"), (flip(probe, [40, 50, 63]), "coco-val")]
    # one hash 2 bits from two blocked hashes of different lists: the tie goes to the smaller (name, hash)
    tie = to_signed(rnd.getrandbits(BITS))
    blocklist += [(flip(tie, [0, 63]), "imagenet-val"), (flip(tie, [31, 32]), "coco-val")]
    hashes |= {probe, tie}
    return sorted(hashes), blocklist, {"probe": (probe, a), "tie": (tie, flip(tie, [31, 32])), "shared": shared}


@pytest.mark.spark
@pytest.mark.parametrize("k", [0, 3])
def test_blocklist_matches_nearest_within_k(spark, k):
    hashes, blocklist, special = blocklist_data(3)
    expected = {}
    for h in hashes:
        near = [(hamming(h, b), name, b) for b, name in blocklist if hamming(h, b) <= k]
        if near:
            expected[h] = min(near)
    assert sum(d == k for d, _, _ in expected.values()) >= 10
    assert expected[special["shared"]] == (0, "coco-val", special["shared"])
    if k == 3:
        probe, nearest = special["probe"]
        assert expected[probe] == (1, "imagenet-val", nearest)
        tie, coco = special["tie"]
        assert expected[tie] == (2, "coco-val", coco)
    hashes_df = spark.createDataFrame([(h,) for h in hashes] + [(None,)], "phash long")
    blocked_df = spark.createDataFrame(blocklist, "blocked long, name string")
    rows = blocklist_matches(hashes_df, blocked_df, k).collect()
    got = {r.phash: (r.match.distance, r.match.name, r.match.blocked) for r in rows}
    assert len(rows) == len(got)
    assert got == expected
    # nothing beyond k, and the planted k + 1 neighbours exist
    assert all(d <= k for d, _, _ in got.values())
    assert any(min(hamming(h, b) for b, _ in blocklist) == k + 1 for h in hashes)


# --- transformed copies of images -------------------------------------------------------------------------------------

PHASH_RULES = ImageConfig(min_bytes=0, min_side=1)
BASES = 24
RECODED = ("jpeg-q95", "jpeg-q75", "jpeg-q50", "resize-50%", "resize-200%", "resize-short-256")
CROPS = {"crop-1%": 0.01, "crop-2%": 0.02, "crop-3%": 0.03, "crop-5%": 0.05}


def natural_scene(width: int, height: int, seed: int) -> Image.Image:
    """image_factory's shapes and grain over a few smooth gratings: broad gradients and texture, as in photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    waves = sum(
        np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        for fx, fy, phase in zip(
            rng.uniform(0.004, 0.05, 4), rng.uniform(0.004, 0.05, 4), rng.uniform(0, 6.3, 4), strict=True
        )
    )
    waves = (waves - waves.min()) / (np.ptp(waves) + 1e-9) * 255
    texture = Image.fromarray(np.stack([waves, np.roll(waves, 9, axis=0), waves[::-1]], axis=-1).astype(np.uint8))
    return Image.blend(scene(width, height, seed), texture, 0.35)


def crop(img: Image.Image, fraction: float) -> Image.Image:
    """``fraction`` of the width / height off each of the four borders."""
    w, h = img.size
    dx, dy = round(w * fraction), round(h * fraction)
    return img.crop((dx, dy, w - dx, h - dy))


def copies(img: Image.Image) -> dict[str, bytes]:
    w, h = img.size
    out = {
        "jpeg-q95": encode(img, "JPEG", quality=95),
        "jpeg-q75": encode(img, "JPEG", quality=75),
        "jpeg-q50": encode(img, "JPEG", quality=50),
        "resize-50%": encode(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), "JPEG", quality=90),
        "resize-200%": encode(img.resize((w * 2, h * 2), Image.Resampling.BICUBIC), "JPEG", quality=90),
        # what the image stage keeps with keep_bytes: short side 256, aspect kept, JPEG q95
        "resize-short-256": encode_resized(img, ImageConfig(keep_bytes=True, image_size=256)),
    }
    out.update({name: encode(crop(img, f), "PNG", compress_level=1) for name, f in CROPS.items()})
    return out


def phash_of(data: bytes) -> str:
    verdict = inspect_image(data, PHASH_RULES)
    assert verdict.reason is None, verdict
    return verdict.image_phash


@pytest.fixture(scope="module")
def image_hashes() -> dict[int, dict[str, str]]:
    """{base: {"original" | copy kind: pHash}} over BASES generated scenes of varied sizes."""
    out = {}
    for base in range(BASES):
        rnd = random.Random(base)
        img = natural_scene(rnd.randrange(240, 420), rnd.randrange(200, 320), seed=500 + base)
        hashes = {"original": phash_of(encode(img, "PNG", compress_level=1))}
        hashes.update({kind: phash_of(data) for kind, data in copies(img).items()})
        out[base] = hashes
    return out


def distance_to_original(image_hashes, kind: str) -> list[int]:
    return [hamming(phash_to_int(h["original"]), phash_to_int(h[kind])) for h in image_hashes.values()]


def test_copies_within_default_k_and_different_images_apart(image_hashes):
    print(f"\npHash distance copy -> original over {BASES} scenes (k = dedup.near_distance = {DEFAULT_K})")
    for kind in RECODED + tuple(CROPS):
        dist = distance_to_original(image_hashes, kind)
        within = {k: sum(d <= k for d in dist) for k in (2, 4, 6, 8, 12)}
        print(f"  {kind:17s} {dict(sorted(collections.Counter(dist).items()))}  within k: {within}")
    originals = [phash_to_int(h["original"]) for h in image_hashes.values()]
    between = [hamming(a, b) for a, b in itertools.combinations(originals, 2)]
    families = [[phash_to_int(v) for v in h.values()] for h in image_hashes.values()]
    across = [hamming(a, b) for fa, fb in itertools.combinations(families, 2) for a in fa for b in fb]
    print(f"  different scenes: min {min(between)}, 1st percentile {sorted(between)[len(between) // 100]}")
    print(f"  any copy of one scene to any copy of another: min {min(across)}")

    # re-encoding and resizing move a pHash by 0-4 bits: all within the default k
    for kind in RECODED:
        assert max(distance_to_original(image_hashes, kind)) <= DEFAULT_K, kind
    # different images, and all their copies, are far apart (about 32 bits; 20 at the closest here)
    assert min(between) > 3 * DEFAULT_K
    assert min(across) > DEFAULT_K
    # crops shift the DCT grid: measured on these scenes (and on 100 similar ones while writing this test), a
    # crop of 1% a side is within 4 bits 85-90% of the time, 2% a side about half the time, 3% a quarter or
    # less, 5% almost never.
    # The floors below hold that property with some slack; they are not a promise that crops are caught.
    within = {kind: sum(d <= DEFAULT_K for d in distance_to_original(image_hashes, kind)) / BASES for kind in CROPS}
    assert within["crop-1%"] >= 0.75
    assert within["crop-2%"] >= 0.35
    assert within["crop-1%"] >= within["crop-2%"] >= within["crop-5%"]
    # a pHash of 64 bits with 32 set (pHash thresholds at the median), so distances are even
    assert all(d % 2 == 0 for d in between)


# --- the near-duplicate stage -----------------------------------------------------------------------------------------


def crafted_rows() -> list[tuple]:
    """(id, image_phash, caption, dump) rows with every shape of group the stage must handle at k = 4."""
    rnd = random.Random(9)
    rows: list[tuple] = []

    def add(value: int | str | None, dump: str, caption: str = "a photo") -> int:
        row_id = 1000 + len(rows) * 37 % 101  # ids in neither insertion nor hash order
        phash = int_to_phash(value) if isinstance(value, int) else value
        rows.append((row_id, phash, caption, dump))
        return row_id

    # a chain c0 ~ c1 ~ c2 ~ c3 ~ c4, 3 bits per link and 6 between c(i) and c(i+2): ONE group; the winner
    # sits at the far end so its label has to cross every link; c2 is shared by two rows
    bits = rnd.sample(range(BITS), 15)
    link = to_signed(rnd.getrandbits(BITS))
    chain = []
    for i in range(5):
        chain.append(link)
        link = flip(link, bits[3 * i : 3 * i + 3])
    for i, value in enumerate(chain):
        add(value, "2024-05", f"chain {i}")
    add(chain[2], "2024-06", "chain 2 again")
    add(chain[4], "2024-01", "chain end, earliest dump")
    # a group across the sign bit: positive and negative longs 2 bits apart; same dump, the smallest id wins
    positive = to_signed(rnd.getrandbits(BITS)) & LONG_MAX
    add(positive, "2024-02")
    add(flip(positive, [63, 0]), "2024-02")
    add(flip(positive, [63, 1, 2, 3]), "2024-02")
    # equal hashes with a neighbour 1 bit away: equal dumps, ids decide
    equal = to_signed(rnd.getrandbits(BITS))
    for caption in ("x", "y", "z"):
        add(equal, "2024-03", caption)
    add(flip(equal, [17]), "2024-03")
    # all-zero and all-one hashes each with a 4-bit neighbour, but 64 bits from each other
    add(0, "2024-04")
    add(flip(0, [0, 1, 62, 63]), "2024-04")
    add(-1, "2024-04")
    add(flip(-1, [20, 21, 22, 23]), "2024-02")
    # 5 bits apart: two groups of one, both kept
    lone = to_signed(rnd.getrandbits(BITS))
    add(lone, "2024-01")
    add(flip(lone, rnd.sample(range(BITS), 5)), "2024-01")
    # rows near nothing
    for _ in range(20):
        add(to_signed(rnd.getrandbits(BITS)), rnd.choice(["2024-01", "2024-02"]))
    # not a pHash
    for bad in (None, "", "ABCDEF0123456789", "abc", "0123456789abcdef0", "0123456789abcdeg", " 123456789abcdef"):
        add(bad, "2024-01")
    assert len({r[0] for r in rows}) == len(rows)
    return rows


def equal_alone_rows() -> list[tuple]:
    """Three rows of one pHash (three captions, so pair dedup keeps them) with no other pHash near it."""
    h = int_to_phash(0x5A5A_0F0F_3C3C_9696)
    return [
        (2001, h, "a cat on a mat", "2024-02"),
        (2002, h, "the same cat", "2024-02"),
        (2003, h, "cat, again", "2024-01"),
        (2004, int_to_phash(0x0123_4567_89AB_CDEF), "something else", "2024-01"),
    ]


def image_rows(image_hashes) -> tuple[list[tuple], dict[int, int]]:
    """One row per scene and copy, dumps at random: (rows, scene of each id)."""
    rnd = random.Random(31)
    rows, scene_of = [], {}
    for base, hashes in image_hashes.items():
        for kind, phash in hashes.items():
            row_id = 3000 + len(rows) * 13 % 997
            rows.append((row_id, phash, f"scene {base} {kind}", rnd.choice(["2023-12", "2024-01", "2024-02"])))
            scene_of[row_id] = base
    rows.append((3999, None, "no image", "2024-01"))
    return rows, scene_of


@pytest.fixture(scope="module")
def stage_run(spark, image_hashes):
    """The stage at the default k, run ONCE over three row sets (disjoint ids, no group across sets; each test
    checks its own set): {"crafted" | "alone" | "images": rows}, the scene of each image row, the verdicts."""
    images, scene_of = image_rows(image_hashes)
    sets = {"crafted": crafted_rows(), "alone": equal_alone_rows(), "images": images}
    every = [row for rows in sets.values() for row in rows]
    set_of = {row[0]: name for name, rows in sets.items() for row in rows}
    assert len(set_of) == len(every)
    for group in near_groups(every, DEFAULT_K):
        assert len({set_of[row[0]] for row in group}) == 1
    return sets, scene_of, run_stage(spark, every, DEFAULT_K)


def verdicts_of(got: dict, rows: list[tuple]) -> dict:
    return {row[0]: got[row[0]] for row in rows}


@pytest.mark.spark
def test_near_duplicate_stage_one_winner_per_group(stage_run):
    sets, _, all_verdicts = stage_run
    k = DEFAULT_K
    rows = sets["crafted"]
    got = verdicts_of(all_verdicts, rows)
    assert got == expected_verdicts(rows, k)
    # the chain: its ends are farther than 2k apart, yet every other row of it names the far end's row
    chain = [r for r in rows if r[2].startswith("chain")]
    assert hamming(phash_to_int(chain[0][1]), phash_to_int(chain[4][1])) > 2 * k
    winner = next(r for r in chain if r[2] == "chain end, earliest dump")
    assert got[winner[0]] == (None, None)
    for r in chain:
        if r is not winner:
            assert got[r[0]] == (reasons.NEAR_DUPLICATE, f"near-duplicate of id {winner[0]} (dump 2024-01)")
    counts = collections.Counter(reason for reason, _ in got.values())
    assert counts[reasons.PHASH_INVALID] == 7
    assert counts[reasons.NEAR_DUPLICATE] == 6 + 2 + 3 + 2
    assert counts[None] == len(rows) - 7 - 13
    assert got[next(r[0] for r in rows if r[1] is None)] == (reasons.PHASH_INVALID, "image_phash=null")


@pytest.mark.spark
def test_near_duplicate_stage_equal_hashes_alone(stage_run):
    sets, _, all_verdicts = stage_run
    rows = sets["alone"]
    got = verdicts_of(all_verdicts, rows)
    assert got == expected_verdicts(rows, DEFAULT_K)
    assert got[2001] == (reasons.NEAR_DUPLICATE, "near-duplicate of id 2003 (dump 2024-01)")


@pytest.mark.spark
def test_near_distance_0_rejects_equal_hashes(spark):
    rows = equal_alone_rows()
    assert run_stage(spark, rows, 0) == expected_verdicts(rows, 0)


@pytest.mark.spark
def test_stage_on_image_copies_never_merges_scenes(stage_run):
    sets, scene_of, all_verdicts = stage_run
    rows = sets["images"]
    got = verdicts_of(all_verdicts, rows)
    expected = expected_verdicts(rows, DEFAULT_K)
    assert got[3999] == (reasons.PHASH_INVALID, "image_phash=null")

    def winner(row_id: int) -> int:
        reason, detail = got[row_id]
        return row_id if reason is None else int(detail.split()[3])

    # every loser names a kept row of its own scene, and every scene keeps a row
    for row_id, base in scene_of.items():
        assert got[winner(row_id)] == (None, None)
        assert scene_of[winner(row_id)] == base
    assert {scene_of[i] for i in scene_of if got[i] == (None, None)} == set(range(BASES))
    # groups of 2+ distinct pHashes keep exactly their earliest row
    groups = [g for g in near_groups(rows, DEFAULT_K) if len(g) > 1]
    spread = [g for g in groups if len({row[1] for row in g}) > 1]
    print(f"\n{len(rows) - 1} image rows: {len(groups)} groups of 2+ rows, {len(spread)} of 2+ distinct pHashes")
    assert len(spread) > BASES // 2
    for group in spread:
        assert verdicts_of(got, group) == verdicts_of(expected, group)


@pytest.mark.spark
def test_stage_on_image_copies_keeps_one_row_per_group(stage_run):
    sets, _, all_verdicts = stage_run
    rows = sets["images"]
    assert verdicts_of(all_verdicts, rows) == expected_verdicts(rows, DEFAULT_K)
