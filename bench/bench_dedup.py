"""Benchmark: the dedup stage on synthetic pHashes at 1M, 2M and 4M rows, against single-process baselines.

Data: ``--sizes`` pair tables (id, image_phash, caption, dump), generated on
the executors (``spark.range`` and SQL expressions only, seeded xxhash64, so
the same size is the same table on every machine) and written once per size
to ``build/bench-dedup/<size>/`` with a ``_bench.json`` marker (what was
planted, checked on write-back), then read back for every timed run. Rows come
in blocks of 20:

- 17 random rows (85%): a random 64-bit pHash (xxhash64, as 16 lower-case hex
  digits) and a caption from a small vocabulary (8 openings, 24 adjectives,
  40 nouns, 20 places; a quarter of them in Title Case);
- 2 exact copies (10%): the (pHash, caption) of a random row of another block,
  the caption's case changed at random (the stage compares captions in lower
  case). One copies its source alone (a group of 2), the other is one of ~64
  copies of a source shared by 64 blocks (groups of ~65, a mild skew);
- 1 near copy (5%): the pHash of a random row of another block with 1 to 4
  bits flipped (uniform, at most one per 16-bit quarter, rotated), its own
  caption. Each near source has one near copy and no exact copy.

So ``duplicate-pair`` must reject exactly the planted exact copies (rows / 10),
and near-duplicates at distance k (pair dedup off) the exact copies (distance
0) and the near copies with at most k bits flipped, plus the rows of whatever
chance pairs of random hashes fall within k (0.24 pairs expected at 4M rows
for k = 4): the check allows the Poisson mean of those pairs plus 6 sigma plus
3, times the most rows one hash holds.

Spark: ONE ``local[2]`` session with the job's settings (jobs.session.JOB_CONF,
AQE on), ``--shuffle-partitions`` (default 64). Variants, each
``with_dedup_verdicts(pairs, cfg, blocklist=None, history=None)`` over the
table read from parquet, its annotated output written to the ``noop`` sink
(every column evaluated), timed from the call (near-duplicate groups run
Spark jobs while the plan is built) to the end of the write:

- ``exact``: ``DedupConfig(history=False, near_duplicates=False)`` (pair dedup);
- ``near-k2`` / ``near-k4``: ``DedupConfig(history=False, pair_dedup=False,
  near_duplicates=True, near_distance=k)`` (banded join + connected components).

``--runs`` (default 3) runs per (variant, size), the variants interleaved and
their order rotated each run; medians; rows / s / core = rows / median / 2.
A (variant, size) whose first run takes over ``--max-run-seconds`` (180) is
not repeated (the full run's time budget), and says so. Every timed run is
checked through a DataFrame ``Observation`` on the written output (counts
per reason, sum of ids: collected by the same write, no second pass): rows
out = rows in = kept + rejected, and the reject counts above. The JVM
start-up is reported once, apart; one untimed warm-up per variant on the
smallest table precedes the timed runs (JIT).

When the stage fails as it is with "Not enough memory to build and broadcast
the table" (its band join is planned as a broadcast join when the hashes'
size estimate, taken before the explode into band keys, is under
spark.sql.autoBroadcastJoinThreshold), the failure and its time are reported
and that (variant, size) is timed with the threshold at -1 for its runs,
marked ``B``.

Once per size and k, outside the timed runs, the band keys are counted with
a group-by instead of the join: rows after the explode, key values, and the
candidate pairs the stage's self-join emits (sum of n(n-1)/2 per key value),
which says where the near-duplicate time goes.

Baselines, one process, one core, the same parquet read with pyarrow (the read
is timed, as Spark's is):

- exact pairs: pandas (Arrow lower-case, sort by dump and id, ``duplicated``)
  and a plain Python dict pass, ``--runs`` each;
- near-duplicates at k = 2 and 4: a BK-tree (``pybktree``, pinned in
  ``bench/dedup-baseline-requirements.txt`` and pip-installed into this venv on
  first use; the bench's own BK-tree, the same algorithm, if that fails; the
  distance is ``int.bit_count`` of the XOR) over the distinct hashes, every
  distinct hash queried within k, union-find for the groups. Per size, small
  to large: the tree is built, a sample of queries (``--sample-queries``
  2,000, at most ``--sample-seconds`` 20) is timed, and the full run is done
  only if the estimate (read + build + queries) fits ``--baseline-budget``
  (600 s) and no smaller size has already exceeded it; otherwise the size is
  reported as estimated. (imagededup's pHash search is the same pure-Python BK-tree, or a
  brute-force distance matrix.)

Results: a table on stdout and ``bench/results/dedup.json``
(``dedup-quick.json`` with ``--quick``).

    .venv/bin/python bench/bench_dedup.py [--sizes 1000000,2000000,4000000] [--runs 3] [--quick] [--skip-baseline]

``--quick``: sizes 100,000, 200,000 and 400,000, one run, a 60 s baseline
budget and 200 sampled queries (a smoke test, results in dedup-quick.json).
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import (
    BUILD,
    CORES,
    MASTER,
    REPO,
    BenchArgs,
    ensure_cached,
    interleave,
    job_group,
    load_average,
    per_core,
    publish,
    ratio,
    rotate,
    run_main,
    start_spark,
    timings,
)

DATA_DIR = BUILD / "bench-dedup"
BASELINE_REQUIREMENTS = REPO / "bench" / "dedup-baseline-requirements.txt"
# Enough that the band join's sort at 4M rows and k = 4 (54M exploded rows a side) fits in
# memory (16 spilled 730 MB to disk there); AQE coalesces the small shuffles.
SHUFFLE_PARTITIONS = 64
DEFAULT_SIZES = (1_000_000, 2_000_000, 4_000_000)
QUICK_SIZES = (100_000, 200_000, 400_000)
NEAR_DISTANCES = (2, 4)
VARIANTS = ("exact", *(f"near-k{k}" for k in NEAR_DISTANCES))
PAIR_COLUMNS = ("id", "image_phash", "caption", "dump")

# --- the synthetic table: bumped when the generator changes, so a stale cache is not reused.
GENERATOR_VERSION = "v2"
SEED = 20261122
BLOCK = 20  # rows per block: 17 random, 2 exact copies, 1 near copy
PAIR_SOURCE, GROUP_SOURCE, NEAR_SOURCE = 0, 1, 2
PAIR_COPY, GROUP_COPY, NEAR_COPY = 17, 18, 19
GROUP_COPIES = 64  # blocks sharing one group source
MAX_FLIPS = 4  # near copies differ from their source in 1..MAX_FLIPS bits
# Blocks are mapped to their source block by b -> (b * PRIME + OFFSET) mod blocks: a
# permutation while PRIME does not divide the block count.
PRIME, OFFSET = 1_000_003, 7_919
WRITE_FILES = 8
OPENINGS = (
    "a photo of the",
    "an image of the",
    "close-up of the",
    "stock photo: the",
    "vintage postcard of the",
    "illustration of the",
    "aerial view of the",
    "picture of the",
)
ADJECTIVES = tuple(
    (
        "red small old wooden bright quiet modern rusty golden tiny huge green empty busy snowy sunny dark "
        "white vintage colorful broken shiny blue wild"
    ).split()
)
NOUNS = tuple(
    (
        "dog cat house bicycle car tree bridge boat chair table lamp mountain river street train flower horse "
        "church garden window door bird cake shoe guitar clock road lake tower market kitchen beach forest "
        "truck castle dress book cup field fence"
    ).split()
)
PLACES = (
    "in the city",
    "at night",
    "in winter",
    "on a white background",
    "near the sea",
    "in the park",
    "at sunset",
    "in the rain",
    "in a village",
    "on the table",
    "in the mountains",
    "at the market",
    "in spring",
    "by the river",
    "in the snow",
    "in autumn",
    "at dawn",
    "in the desert",
    "on the street",
    "in the garden",
)
DUMPS = ("CC-MAIN-2023-06", "CC-MAIN-2023-23", "CC-MAIN-2023-40", "CC-MAIN-2023-50")

# The error of a broadcast join whose table does not fit the driver: the stage's band join is
# planned as one when the hashes' size estimate (before the explode) is under the threshold.
BROADCAST_OOM = "Not enough memory to build and broadcast the table"
# A (variant, size) whose first run takes longer is not repeated (the full run's time budget).
MAX_RUN_SECONDS = 180.0

# --- baselines
BASELINE_BUDGET_S = 600.0
SAMPLE_QUERIES = 2_000
SAMPLE_SECONDS = 20.0
_HEX16 = re.compile(r"[0-9a-f]{16}")

log = logging.getLogger("winnow.bench.dedup")


# --- synthetic data -------------------------------------------------------------------------------------------------


def _rand(seed: int, salt: str, col: Any) -> Any:
    """A seeded 64-bit pseudo-random long per value of ``col``."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(seed), F.lit(salt), col)


def _pick(seed: int, salt: str, col: Any, words: tuple[str, ...]) -> Any:
    from pyspark.sql import functions as F

    return F.element_at(
        F.array(*[F.lit(w) for w in words]), (F.pmod(_rand(seed, salt, col), F.lit(len(words))) + 1).cast("int")
    )


def synthetic_pairs(spark: Any, rows: int, seed: int = SEED) -> Any:
    """The bench table of ``rows`` rows (see the module docstring): the pair columns and the truth
    (``kind``, ``flips``, ``flip_mask``)."""
    from pyspark.sql import functions as F

    blocks = rows // BLOCK
    group_sources = max(1, blocks // GROUP_COPIES)
    i = F.col("id")
    pos = F.pmod(i, F.lit(BLOCK))
    source_block = F.pmod(F.expr(f"id div {BLOCK}") * F.lit(PRIME) + F.lit(OFFSET), F.lit(blocks))
    src = (
        F.when(pos == PAIR_COPY, source_block * BLOCK + PAIR_SOURCE)
        .when(pos == GROUP_COPY, F.pmod(source_block, F.lit(group_sources)) * BLOCK + GROUP_SOURCE)
        .when(pos == NEAR_COPY, source_block * BLOCK + NEAR_SOURCE)
        .otherwise(i)
    )
    kind = (
        F.when(pos == PAIR_COPY, "pair-copy")
        .when(pos == GROUP_COPY, "group-copy")
        .when(pos == NEAR_COPY, "near-copy")
        .when(pos == PAIR_SOURCE, "pair-source")
        .when((pos == GROUP_SOURCE) & (F.expr(f"id div {BLOCK}") < group_sources), "group-source")
        .when(pos == NEAR_SOURCE, "near-source")
        .otherwise("random")
    )
    flips = F.when(pos == NEAR_COPY, F.pmod(_rand(seed, "flips", i), F.lit(MAX_FLIPS)) + 1).otherwise(0)
    # Bit t (t < flips) lies in quarter t, rotated: distinct bits, spread over the hash.
    rotate = F.pmod(_rand(seed, "rotate", i), F.lit(64))
    mask = F.lit(0).cast("long")
    for t in range(MAX_FLIPS):
        position = F.pmod(F.pmod(_rand(seed, f"bit{t}", i), F.lit(16)) + 16 * t + rotate, F.lit(64))
        bit = F.call_function("shiftleft", F.lit(1).cast("long"), position.cast("int"))
        mask = mask.bitwiseOR(F.when(F.col("flips") > t, bit).otherwise(F.lit(0).cast("long")))
    # Near copies get their own caption; exact copies their source's, in a case of their own.
    caption_of = F.when(pos == NEAR_COPY, i).otherwise(F.col("src"))
    caption = F.concat_ws(
        " ",
        _pick(seed, "opening", caption_of, OPENINGS),
        _pick(seed, "adjective", caption_of, ADJECTIVES),
        _pick(seed, "noun", caption_of, NOUNS),
        _pick(seed, "place", caption_of, PLACES),
    )
    caption = F.when(F.pmod(_rand(seed, "case", i), F.lit(4)) == 0, F.initcap(caption)).otherwise(caption)
    return (
        spark.range(0, rows, 1, WRITE_FILES)
        .withColumn("src", src)
        .withColumn("flips", flips.cast("int"))
        .withColumn("flip_mask", mask)
        .select(
            i.alias("id"),
            F.lpad(F.lower(F.hex(_rand(seed, "phash", F.col("src")).bitwiseXOR(F.col("flip_mask")))), 16, "0").alias(
                "image_phash"
            ),
            caption.alias("caption"),
            _pick(seed, "dump", i, DUMPS).alias("dump"),
            kind.alias("kind"),
            F.col("flips"),
            F.col("flip_mask"),
        )
    )


def data_path(rows: int) -> Path:
    """Where the table of ``rows`` rows is cached (parquet, and its marker)."""
    return DATA_DIR / str(rows)


def ensure_data(spark: Any, rows: int) -> dict[str, Any]:
    """The table of ``rows`` rows under build/bench-dedup/<rows>/ (written if missing or stale) and its marker."""
    want = {"version": GENERATOR_VERSION, "seed": SEED, "rows": rows}
    return ensure_cached(data_path(rows), want, partial(write_table, spark, rows), f"{rows:,} rows")


def write_table(spark: Any, rows: int, tmp: Path) -> dict[str, Any]:
    """Write the table of ``rows`` rows to ``tmp`` and return what was planted; raises if the generator is off."""
    from pyspark.sql import functions as F

    blocks = rows // BLOCK
    if blocks % PRIME == 0:
        raise ValueError(f"{rows} rows: the block permutation needs a block count not divisible by {PRIME}")
    generated = synthetic_pairs(spark, rows)
    # Only the pair columns are written: the truth columns would change the file sizes the
    # planner estimates from. They are counted from the generator itself (deterministic).
    generated.select(*PAIR_COLUMNS).write.mode("overwrite").parquet(str(tmp))
    per_kind: dict[tuple[str, int], int] = {}
    bad_masks = 0
    for r in (
        generated.groupBy("kind", "flips")
        .agg(F.count(F.lit(1)).alias("n"), F.count_if(F.bit_count("flip_mask") != F.col("flips")).alias("bad"))
        .collect()
    ):
        per_kind[(r["kind"], r["flips"])] = r["n"]
        bad_masks += r["bad"]
    written = spark.read.parquet(str(tmp))
    per_hash = written.groupBy("image_phash").agg(F.count(F.lit(1)).alias("n"))
    hashes = per_hash.agg(F.count(F.lit(1)).alias("distinct"), F.max("n").alias("max_rows")).first()
    kinds: dict[str, int] = {}
    near_by_flips: dict[str, int] = {}
    for (k, flips), n in per_kind.items():
        kinds[k] = kinds.get(k, 0) + n
        if k == "near-copy":
            near_by_flips[str(flips)] = n
    exact_copies = kinds.get("pair-copy", 0) + kinds.get("group-copy", 0)
    if bad_masks or sum(kinds.values()) != rows or exact_copies != 2 * blocks or kinds.get("near-copy") != blocks:
        raise RuntimeError(f"generator check failed for {rows} rows: kinds {kinds}, {bad_masks} bad flip masks")
    return {
        "kinds": dict(sorted(kinds.items())),
        "planted_exact_copies": exact_copies,
        "near_copies_by_flips": dict(sorted(near_by_flips.items())),
        "distinct_hashes": hashes["distinct"],
        "max_rows_per_hash": hashes["max_rows"],
    }


def planted_near(meta: dict[str, Any], k: int) -> int:
    """Near copies whose flipped bits are within ``k``: the pairs the stage must find."""
    return sum(n for flips, n in meta["near_copies_by_flips"].items() if int(flips) <= k)


# --- Spark ----------------------------------------------------------------------------------------------------------


def dedup_config(variant: str) -> Any:
    """The stage's settings for a variant: ``exact`` (pair dedup only) or ``near-k<k>`` (near-duplicates only)."""
    from jobs.stages.dedup import DedupConfig

    if variant == "exact":
        return DedupConfig(history=False, near_duplicates=False)
    k = int(variant.removeprefix("near-k"))
    return DedupConfig(history=False, pair_dedup=False, near_duplicates=True, near_distance=k)


def read_pairs(spark: Any, rows: int) -> Any:
    """The cached table as the stage gets it: the pair columns only."""
    return spark.read.parquet(str(data_path(rows))).select(*PAIR_COLUMNS)


def time_variant(
    spark: Any, rows: int, variant: str, group: str, no_broadcast: bool = False
) -> tuple[float, dict[str, int], int]:
    """Wall seconds of the stage over the table, its annotated output written to the noop sink;
    the output's counts (observed by the same write) and the number of Spark jobs it ran.
    ``no_broadcast``: with spark.sql.autoBroadcastJoinThreshold=-1 for this run (see BROADCAST_OOM)."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from jobs.stages.dedup import with_dedup_verdicts
    from schemas import reasons

    codes = reasons.REASONS[reasons.DEDUP]
    reason = F.col("reason")
    metrics = [
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("id")).alias("id_sum"),
        F.count_if(reason.isNull()).alias("kept"),
        *[F.count_if(reason == code).alias(code) for code in codes],
        F.count_if(reason.isNotNull() & ~reason.isin(*codes)).alias("other"),
    ]
    observation = Observation(group)
    with job_group(spark, group, f"bench dedup {group}") as sc:
        if no_broadcast:
            spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
        try:
            started = time.perf_counter()
            annotated = with_dedup_verdicts(
                read_pairs(spark, rows), dedup_config(variant), blocklist=None, history=None
            )
            annotated.observe(observation, *metrics).write.format("noop").mode("overwrite").save()
            seconds = time.perf_counter() - started
        finally:
            if no_broadcast:
                spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
    counts = {k: int(v or 0) for k, v in observation.get.items()}
    jobs = len(sc.statusTracker().getJobIdsForGroup(group))
    return seconds, counts, jobs


def check_counts(variant: str, rows: int, counts: dict[str, int], expect: dict[str, int]) -> None:
    """Conservation and the reject counts the planted rows call for; raises on a mismatch."""
    from schemas import reasons

    rejected = {k: v for k, v in counts.items() if k in reasons.REASONS[reasons.DEDUP] or k == "other"}
    problems = []
    if counts["rows"] != rows or counts["id_sum"] != rows * (rows - 1) // 2:
        problems.append(f"{counts['rows']} rows out (id sum {counts['id_sum']}) for {rows} rows in")
    if counts["kept"] + sum(rejected.values()) != counts["rows"]:
        problems.append(f"kept {counts['kept']} + rejected {sum(rejected.values())} != rows {counts['rows']}")
    want = reasons.DUPLICATE_PAIR if variant == "exact" else reasons.NEAR_DUPLICATE
    for code, n in rejected.items():
        if code != want and n:
            problems.append(f"{n} rows rejected as {code}")
    got = rejected.get(want, 0)
    if not expect["min"] <= got <= expect["max"]:
        problems.append(f"{got} rows rejected as {want}, expected {expect['min']}..{expect['max']}")
    if problems:
        raise RuntimeError(f"{variant} at {rows} rows: " + "; ".join(problems) + f" (counts {counts})")


def band_join_analysis(spark: Any, rows: int, k: int, key_bits: int) -> dict[str, Any]:
    """The stage's band keys over the distinct hashes, grouped instead of joined: rows after the
    explode, key values, the largest, and the candidate pairs the self-join emits (a < b on an equal
    key: sum of n(n-1)/2 over key values holding n hashes; a pair sharing two keys counts twice, as
    in the join)."""
    from pyspark.sql import functions as F

    from jobs.stages.dedup import band_keys, phash_long
    from udfs.hamming import band_plan

    plan = band_plan(k, key_bits)
    hashes = read_pairs(spark, rows).select(phash_long(F.col("image_phash")).alias("h")).distinct()
    buckets = band_keys(hashes, k, key_bits, "h").groupBy("_band", "_key").agg(F.count(F.lit(1)).alias("n"))
    started = time.perf_counter()
    got = buckets.agg(
        F.sum("n").alias("exploded"),
        F.count(F.lit(1)).alias("keys"),
        F.max("n").alias("largest"),
        F.sum(F.col("n") * (F.col("n") - 1) / 2).cast("long").alias("candidates"),
    ).first()
    return {
        "k": k,
        "band_keys_per_row": len(plan.keys),
        "bands": len(plan.bands),
        "bands_per_key": plan.choose,
        "key_bits_min": plan.key_bits,
        "exploded_rows": got["exploded"],
        "key_values": got["keys"],
        "largest_key_value": got["largest"],
        "candidate_pairs": got["candidates"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def chance_pairs(distinct: int, k: int) -> float:
    """Expected pairs of independent random 64-bit hashes within ``k`` bits among ``distinct``."""
    within = sum(math.comb(64, d) for d in range(k + 1)) / 2**64
    return distinct * (distinct - 1) / 2 * within


def chance_allowance(expected: float) -> int:
    """Chance pairs the near-duplicate check allows: the Poisson mean plus 6 sigma plus 3 (for a mean
    of 0.3 the chance of more is below 1e-9)."""
    return math.ceil(expected + 6 * math.sqrt(expected)) + 3


def warm_up(spark: Any, rows: int) -> float:
    """Each variant once on the small table, untimed: the JVM compiles the stage's code paths."""
    started = time.perf_counter()
    for variant in VARIANTS:
        time_variant(spark, rows, variant, f"warm-up-{variant}")
    return time.perf_counter() - started


# --- baselines --------------------------------------------------------------------------------------------------------


def read_table(rows: int, columns: list[str]) -> Any:
    """The cached table read with pyarrow, in one process: how the baselines read it (timed, as Spark's read is)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(data_path(rows)), columns=columns)


def exact_pandas(rows: int) -> tuple[float, int]:
    """Seconds and rejects of (pHash, lower(caption)) dedup in pandas: earliest dump, then smallest id wins."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    started = time.perf_counter()
    table = read_table(rows, ["id", "image_phash", "caption", "dump"])
    valid = pc.fill_null(pc.match_substring_regex(table["image_phash"], "^[0-9a-f]{16}$"), False)
    frame = pd.DataFrame(
        {
            "id": table["id"].to_numpy(),
            "phash": table["image_phash"].to_pandas(),
            "key": pc.utf8_lower(table["caption"]).to_pandas(),
            "dump": table["dump"].to_pandas(),
            "valid": valid.to_numpy(zero_copy_only=False),
        }
    )
    ordered = frame[frame["valid"]].sort_values(["dump", "id"], kind="stable")
    lost = ordered.duplicated(["phash", "key"], keep="first")
    reason = pd.Series(np.full(len(frame), None, dtype=object))
    reason[~frame["valid"].to_numpy()] = "phash-invalid"
    reason[ordered.index[lost.to_numpy()]] = "duplicate-pair"
    seconds = time.perf_counter() - started
    return seconds, int((reason == "duplicate-pair").sum())


def exact_dict(rows: int) -> tuple[float, int]:
    """The same in plain Python: one dict pass for the winners, one pass for the verdicts."""
    started = time.perf_counter()
    table = read_table(rows, ["id", "image_phash", "caption", "dump"])
    ids, phashes, captions, dumps = (table[c].to_pylist() for c in ("id", "image_phash", "caption", "dump"))
    best: dict[tuple[str, str], tuple[str, int]] = {}
    for i, h, c, d in zip(ids, phashes, captions, dumps, strict=True):
        if h is None or not _HEX16.fullmatch(h):
            continue
        key, order = (h, (c or "").lower()), (d, i)
        b = best.get(key)
        if b is None or order < b:
            best[key] = order
    verdicts: list[str | None] = []
    for i, h, c, d in zip(ids, phashes, captions, dumps, strict=True):
        if h is None or not _HEX16.fullmatch(h):
            verdicts.append("phash-invalid")
        else:
            verdicts.append(None if best[(h, (c or "").lower())] == (d, i) else "duplicate-pair")
    seconds = time.perf_counter() - started
    return seconds, verdicts.count("duplicate-pair")


def hamming(a: int, b: int) -> int:
    """The BK-tree's distance: differing bits of two 64-bit pHashes."""
    return (a ^ b).bit_count()


class OwnBKTree:
    """A BK-tree as pybktree builds it (node = (item, {distance: child})), if pybktree cannot be installed."""

    def __init__(self, distance: Callable[[int, int], int], items: Iterable[int] = ()):
        self.distance = distance
        self.tree: tuple[int, dict[int, Any]] | None = None
        for item in items:
            self.add(item)

    def add(self, item: int) -> None:
        if self.tree is None:
            self.tree = (item, {})
            return
        node = self.tree
        while True:
            parent, children = node
            d = self.distance(item, parent)
            child = children.get(d)
            if child is None:
                children[d] = (item, {})
                return
            node = child

    def find(self, item: int, n: int) -> list[tuple[int, int]]:
        if self.tree is None:
            return []
        found, stack = [], [self.tree]
        while stack:
            parent, children = stack.pop()
            d = self.distance(item, parent)
            if d <= n:
                found.append((d, parent))
            for child_d, child in children.items():
                if d - n <= child_d <= d + n:
                    stack.append(child)
        return sorted(found)


def bktree_class() -> tuple[Any, str]:
    """pybktree.BKTree, pip-installed from the pinned requirements on first use; else OwnBKTree."""
    try:
        import pybktree
    except ImportError:
        log.warning(
            "pybktree is not installed: installing it into %s from %s (one-off, for the baseline)",
            sys.prefix,
            BASELINE_REQUIREMENTS.relative_to(REPO),
        )
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]
            + [str(BASELINE_REQUIREMENTS)],
            capture_output=True,
            text=True,
        )
        importlib.invalidate_caches()
        try:
            import pybktree
        except ImportError:
            log.warning("pip could not install pybktree (%s): using the bench's own BK-tree", done.stderr[-300:])
            return OwnBKTree, "own BK-tree (bench_dedup.OwnBKTree, pybktree's algorithm)"
    return pybktree.BKTree, f"pybktree {pybktree.__version__}"


class NearBaseline:
    """The BK-tree baseline at one size: table read, hashes collapsed, tree built once for every k."""

    def __init__(self, rows: int, tree_class: Any):
        started = time.perf_counter()
        table = read_table(rows, ["id", "image_phash", "dump"])
        # Per distinct valid hash: [best (dump, id), rows].
        self.hashes: dict[int, list[Any]] = {}
        columns = (table[c].to_pylist() for c in ("id", "image_phash", "dump"))
        for i, h, d in zip(*columns, strict=True):
            if h is None or not _HEX16.fullmatch(h):
                continue
            value, order = int(h, 16), (d, i)
            got = self.hashes.get(value)
            if got is None:
                self.hashes[value] = [order, 1]
            else:
                got[1] += 1
                if order < got[0]:
                    got[0] = order
        self.read_s = time.perf_counter() - started
        started = time.perf_counter()
        self.tree = tree_class(hamming, self.hashes)
        self.build_s = time.perf_counter() - started

    def sample(self, k: int, queries: int, seconds: float) -> tuple[int, float]:
        """(queries timed, mean seconds per query) over a seeded sample of the distinct hashes."""
        rng = random.Random(SEED + k)
        sample = rng.sample(list(self.hashes), min(queries, len(self.hashes)))
        started, done = time.perf_counter(), 0
        for value in sample:
            self.tree.find(value, k)
            done += 1
            if time.perf_counter() - started > seconds:
                break
        return done, (time.perf_counter() - started) / done

    def run(self, k: int) -> tuple[float, int, int]:
        """(seconds for every query + groups, pairs within k, rows rejected): the stage's near-dup verdicts."""
        started = time.perf_counter()
        parent: dict[int, int] = {}

        def root(x: int) -> int:
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x

        pairs = 0
        for value in self.hashes:
            for distance, other in self.tree.find(value, k):
                if distance and value < other:
                    pairs += 1
                    parent.setdefault(value, value)
                    parent.setdefault(other, other)
                    ra, rb = root(value), root(other)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, int] = {}  # root -> rows
        for value, (_, rows) in self.hashes.items():
            groups[root(value)] = groups.get(root(value), 0) + rows
        # One winner row per group (rows sharing one hash are a group too); every other row is rejected.
        rejected = sum(rows - 1 for rows in groups.values())
        return time.perf_counter() - started, pairs, rejected


def run_baselines(
    sizes: list[int],
    runs: int,
    metas: dict[int, dict[str, Any]],
    expects: dict[str, dict[int, dict[str, int]]],
    budget: float,
    sample_queries: int,
    sample_seconds: float,
) -> dict[str, Any]:
    """Every baseline at every size: the exact ones ``runs`` times each, the BK-tree within ``budget``."""
    out: dict[str, Any] = {"exact-pandas": {}, "exact-dict": {}}
    for rows in sizes:
        for name, fn in (("exact-pandas", exact_pandas), ("exact-dict", exact_dict)):
            seconds, rejected = [], 0
            for run in range(1, runs + 1):
                s, rejected = fn(rows)
                seconds.append(s)
                log.info("baseline %s %d rows run %d/%d: %.1f s", name, rows, run, runs, s)
            want = metas[rows]["planted_exact_copies"]
            if rejected != want:
                raise RuntimeError(f"baseline {name} at {rows} rows rejected {rejected}, planted {want}")
            out[name][str(rows)] = {
                "status": "ran",
                **timings(seconds),
                "rows_per_s": round(rows / statistics.median(seconds), 1),
                "rejected": rejected,
            }

    tree_class, tree_name = bktree_class()
    out["bktree"] = tree_name
    stopped = {k: False for k in NEAR_DISTANCES}
    for k in NEAR_DISTANCES:
        out[f"near-k{k}"] = {}
    for rows in sizes:
        log.info("baseline BK-tree at %d rows: reading, building the tree", rows)
        base = NearBaseline(rows, tree_class)
        log.info("baseline BK-tree at %d rows: read %.1f s, built %.1f s", rows, base.read_s, base.build_s)
        for k in NEAR_DISTANCES:
            queries, per_query = base.sample(k, sample_queries, sample_seconds)
            estimate = base.read_s + base.build_s + per_query * len(base.hashes)
            entry: dict[str, Any] = {
                "distinct_hashes": len(base.hashes),
                "read_s": round(base.read_s, 3),
                "build_s": round(base.build_s, 3),
                "sampled_queries": queries,
                "ms_per_query": round(1000 * per_query, 3),
                "estimated_seconds": round(estimate, 1),
            }
            log.info(
                "baseline BK-tree k=%d at %d rows: %.2f ms/query over %d queries, estimate %.0f s",
                k,
                rows,
                1000 * per_query,
                queries,
                estimate,
            )
            if stopped[k] or estimate > budget:
                stopped[k] = True
                entry.update(status="estimated", rows_per_s=round(rows / estimate, 1))
            else:
                query_s, pairs, rejected = base.run(k)
                seconds = base.read_s + base.build_s + query_s
                expect = expects[f"near-k{k}"][rows]
                if not expect["min"] <= rejected <= expect["max"]:
                    raise RuntimeError(
                        f"baseline near-k{k} at {rows} rows rejected {rejected}, "
                        f"expected {expect['min']}..{expect['max']}"
                    )
                entry.update(
                    status="ran",
                    seconds=round(seconds, 3),
                    query_s=round(query_s, 3),
                    pairs_within_k=pairs,
                    rejected=rejected,
                    rows_per_s=round(rows / seconds, 1),
                )
                log.info("baseline BK-tree k=%d at %d rows: %.1f s, %d rejected", k, rows, seconds, rejected)
            out[f"near-k{k}"][str(rows)] = entry
        del base
    return out


def compare(report: dict[str, Any]) -> dict[str, Any]:
    """Spark rows/s/core over baseline rows/s (one core), at the largest size both ran (else the smallest
    size, against the baseline's estimate)."""
    baseline = report["baseline"]
    pairs = {"exact": ("exact-pandas", "exact-dict")} | {f"near-k{k}": (f"near-k{k}",) for k in NEAR_DISTANCES}
    out = {}
    for variant, names in pairs.items():
        spark_sizes = report["spark"][variant]
        for name in names:
            sizes = [s for s in spark_sizes if s in baseline[name]]
            ran = [s for s in sizes if baseline[name][s]["status"] == "ran"]
            if not sizes:
                continue
            size = ran[-1] if ran else sizes[0]
            b = baseline[name][size]
            spark_rate = spark_sizes[size]["rows_per_s_per_core"]
            out[f"{variant} / {name}"] = {
                "rows": int(size),
                "spark_rows_per_s_per_core": spark_rate,
                "baseline_rows_per_s": b["rows_per_s"],
                "baseline_status": b["status"],
                "ratio": ratio(spark_rate, b["rows_per_s"]),
            }
    return out


# --- report ---------------------------------------------------------------------------------------------------------


def _m(rows: int) -> str:
    """A size as the growth line names it: 1M, 400k."""
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def format_report(report: dict[str, Any]) -> str:
    """The Spark table, the band-key analysis, the baselines and the ratios; the load averages follow (publish)."""
    cores = report["cores"]
    sizes = [str(s) for s in report["sizes"]]
    lines = [
        f"synthetic pairs (build/bench-dedup/<rows>/): 85% random 64-bit pHashes, 10% exact (pHash, caption) "
        f"copies (half in pairs, half in groups of ~{GROUP_COPIES + 1}), 5% near copies with 1..{MAX_FLIPS} bits "
        f"flipped; captions from a {report['vocabulary_words']}-word vocabulary; {len(DUMPS)} dumps",
        f"master {report['master']} ({cores} cores), {report['shuffle_partitions']} shuffle partitions, AQE on; "
        f"{report['runs']} run(s) per (variant, size), variants interleaved, medians; "
        f"annotated output written to the noop sink",
        f"JVM start-up (SparkSession getOrCreate, once): {report['jvm_startup_s']:.1f} s; untimed warm-up "
        f"(each variant once on {report['warm_up_rows']:,} rows): {report['warm_up_s']:.1f} s",
        "",
        f"{'variant':<9} {'rows':>10} {'runs (wall s)':<24} {'median s':>9} {'rows/s/core':>12} {'rejected':>10} "
        f"{'jobs':>5}",
    ]
    notes = []
    for variant, per_size in report["spark"].items():
        for size in sizes:
            v = per_size[size]
            mark = ""
            if v["broadcast_joins_off"]:
                mark += " B"
                notes.append(
                    f"B {variant} at {int(size):,} rows: the stage as it is FAILED after "
                    f"{v['failure']['after_s']:.1f} s ({v['failure']['error']}); "
                    "timed with spark.sql.autoBroadcastJoinThreshold=-1"
                )
            if v["capped"]:
                mark += " C"
                notes.append(
                    f"C {variant} at {int(size):,} rows: the first run took over {report['max_run_seconds']:.0f} s, "
                    "not repeated"
                )
            lines.append(
                f"{variant:<9} {int(size):>10,} {', '.join(f'{s:.1f}' for s in v['seconds']):<24} "
                f"{v['seconds_median']:>9.1f} {v['rows_per_s_per_core']:>12,.0f} {v['rejected']:>10,} "
                f"{v['jobs']:>5}{mark}"
            )
    lo, hi = int(sizes[0]), int(sizes[-1])
    lines += [
        *notes,
        "",
        f"growth time({_m(hi)}) / time({_m(lo)}) for {hi / lo:g}x the rows ({hi / lo:g} = linear, "
        f"{(hi / lo) ** 2:g} = quadratic): "
        + ", ".join(f"{variant} {g:.2f}" for variant, g in report["growth"].items()),
        "jobs = Spark jobs per run (near-duplicates: the band join's checkpoint, then a few per "
        "connected-components round)",
        "",
        "band keys, once per size and k, outside the timed runs: distinct hashes exploded into band keys (the rows "
        "each side of the stage's sort-merge self-join), and the candidate pairs that join emits (sum of n(n-1)/2 "
        "per key value; each is then confirmed by a popcount):",
        f"{'k':>2} {'rows':>10} {'distinct':>10} {'keys/row':>8} {'exploded':>12} {'largest key':>11} "
        f"{'candidates':>12} {'cand/distinct':>13} {'planted':>8} {'chance':>7} {'seconds':>8}",
    ]
    for size in sizes:
        for a in report["band_join"][size]:
            lines.append(
                f"{a['k']:>2} {int(size):>10,} {a['distinct_hashes']:>10,} {a['band_keys_per_row']:>8} "
                f"{a['exploded_rows']:>12,} {a['largest_key_value']:>11,} {a['candidate_pairs']:>12,} "
                f"{a['candidates_per_distinct']:>13.2f} {a['planted_within_k']:>8,} "
                f"{a['chance_pairs_expected']:>7.2f} {a['seconds']:>8.1f}"
            )
    lines.append(
        "planted = near copies within k (the stage must reject exactly these, plus a few rows per chance pair); "
        "chance = expected pairs of random hashes within k; seconds = explode + group, no join"
    )
    b = report.get("baseline")
    if b:
        lines += [
            "",
            f"baselines, one process, one core, parquet read with pyarrow included ({b['bktree']}; near-duplicate "
            f"budget {report['baseline_budget_s']:.0f} s per run, estimated = read + build + sampled ms/query x "
            f"distinct hashes):",
            f"{'baseline':<13} {'rows':>10} {'status':<10} {'seconds':>9} {'rows/s':>10} {'detail'}",
        ]
        for name in ("exact-pandas", "exact-dict", *(f"near-k{k}" for k in NEAR_DISTANCES)):
            for size in sizes:
                e = b[name].get(size)
                if not e:
                    continue
                if name.startswith("exact"):
                    seconds = e["seconds_median"]
                    detail = f"runs {', '.join(f'{s:.1f}' for s in e['seconds'])} s; {e['rejected']:,} rejected"
                else:
                    seconds = e["seconds"] if e["status"] == "ran" else e["estimated_seconds"]
                    detail = (
                        f"read {e['read_s']:.1f} s, build {e['build_s']:.1f} s, {e['ms_per_query']:.2f} ms/query "
                        f"({e['sampled_queries']:,} sampled) x {e['distinct_hashes']:,}"
                    )
                    if e["status"] == "ran":
                        detail += f"; {e['rejected']:,} rejected"
                lines.append(
                    f"{name:<13} {int(size):>10,} {e['status']:<10} {seconds:>9.1f} {e['rows_per_s']:>10,.0f} {detail}"
                )
        lines += ["", "ratio Spark rows/s/core / baseline rows/s (one core), at the largest size both ran:"]
        for name, c in report["ratio"].items():
            note = "" if c["baseline_status"] == "ran" else " (baseline ESTIMATED: it did not run within the budget)"
            lines.append(
                f"  {name:<26} at {c['rows']:>10,} rows: {c['spark_rows_per_s_per_core']:>9,.0f} / "
                f"{c['baseline_rows_per_s']:>9,.0f} = {c['ratio']:.2f}{note}"
            )
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    """``--sizes``: distinct multiples of the block, sorted (the growth ratio is largest over smallest)."""
    sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    if not sizes or any(s < BLOCK or s % BLOCK for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"--sizes must be distinct positive multiples of {BLOCK}")
    return sorted(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "dedup",
        quick_runs=1,
        quick_help=f"sizes {','.join(map(str, QUICK_SIZES))}, 1 run, 60 s baseline budget, 200 sampled queries",
    )
    parser.add_argument(
        "--sizes", help=f"rows per table, comma-separated (default {','.join(map(str, DEFAULT_SIZES))})"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="Spark only")
    parser.add_argument(
        "--shuffle-partitions", type=int, default=SHUFFLE_PARTITIONS, help=f"default {SHUFFLE_PARTITIONS}"
    )
    parser.add_argument(
        "--max-run-seconds",
        type=float,
        default=MAX_RUN_SECONDS,
        help=f"a (variant, size) whose first run takes longer is not repeated (default {MAX_RUN_SECONDS:g})",
    )
    parser.add_argument("--baseline-budget", type=float, help="seconds a baseline run may take (default 600)")
    parser.add_argument("--sample-queries", type=int, help=f"BK-tree queries timed per size and k ({SAMPLE_QUERIES})")
    parser.add_argument(
        "--sample-seconds", type=float, default=SAMPLE_SECONDS, help=f"at most this long ({SAMPLE_SECONDS:g})"
    )
    args = parser.parse(argv)
    try:
        sizes = parse_sizes(args.sizes) if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    except ValueError as exc:
        parser.error(str(exc))
    runs = args.runs
    budget = args.baseline_budget if args.baseline_budget is not None else (60.0 if args.quick else BASELINE_BUDGET_S)
    sample_queries = args.sample_queries or (200 if args.quick else SAMPLE_QUERIES)
    max_run_seconds = args.max_run_seconds
    if args.shuffle_partitions < 1 or sample_queries < 1:
        parser.error("--shuffle-partitions and --sample-queries must be at least 1")

    from jobs.config import RunConfig
    from jobs.stages.dedup import DedupConfig
    from schemas import reasons

    key_bits = DedupConfig().band_key_bits
    load_start = load_average()
    spark, jvm_startup_s = start_spark(
        MASTER, "winnow-bench-dedup", args.shuffle_partitions, RunConfig().arrow_batch_size
    )
    log.info("JVM start-up %.1f s", jvm_startup_s)

    warm_rows = min(QUICK_SIZES[0], sizes[0])
    metas: dict[int, dict[str, Any]] = {}
    expects: dict[str, dict[int, dict[str, int]]] = {v: {} for v in VARIANTS}
    band: dict[str, list[dict[str, Any]]] = {}
    # Per variant and size: jobs, counts, the broadcast fallback and the cap (the seconds come from interleave).
    spark_runs: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in VARIANTS}

    def run_variant(run: int, variant: str, rows: int) -> float | None:
        """One timed run of ``variant`` at ``rows``, checked; None once the (variant, size) is capped."""
        t = spark_runs[variant].setdefault(rows, {"jobs": [], "no_broadcast": False})
        if t.get("capped"):
            return None
        group = f"bench-{variant}-{rows}-{run}"
        started = time.perf_counter()
        try:
            seconds, counts, jobs = time_variant(spark, rows, variant, group, t["no_broadcast"])
        except Exception as exc:
            if t["no_broadcast"] or BROADCAST_OOM not in str(exc):
                raise
            # The stage as it is cannot run here: say so, and time it with broadcast
            # joins off (what the error suggests) for this (variant, size) from now on.
            t["no_broadcast"] = True
            t["failure"] = {"error": BROADCAST_OOM, "after_s": round(time.perf_counter() - started, 3)}
            log.warning(
                "%s at %d rows FAILED after %.1f s (%s): timing it with broadcast joins off",
                variant,
                rows,
                t["failure"]["after_s"],
                BROADCAST_OOM,
            )
            seconds, counts, jobs = time_variant(spark, rows, variant, group + "-nobroadcast", True)
        check_counts(variant, rows, counts, expects[variant][rows])
        t["jobs"].append(jobs)
        t["counts"] = counts
        if run == 1 and seconds > max_run_seconds and runs > 1:
            t["capped"] = True
            log.warning("%s at %d rows took %.0f s > %.0f s: not repeated", variant, rows, seconds, max_run_seconds)
        log.info(
            "run %d/%d %s at %d rows: %.1f s = %.0f rows/s/core (%d jobs)%s",
            run,
            runs,
            variant,
            rows,
            seconds,
            per_core(rows, seconds),
            jobs,
            ", broadcast joins off" if t["no_broadcast"] else "",
        )
        return seconds

    try:
        ensure_data(spark, warm_rows)
        warm_up_s = warm_up(spark, warm_rows)
        log.info("warm-up (each variant once on %d rows): %.1f s", warm_rows, warm_up_s)
        for rows in sizes:
            meta = metas[rows] = ensure_data(spark, rows)
            exact = meta["planted_exact_copies"]
            expects["exact"][rows] = {"min": exact, "max": exact}
            band[str(rows)] = []
            for k in NEAR_DISTANCES:
                log.info("band keys k=%d at %d rows (untimed)", k, rows)
                a = band_join_analysis(spark, rows, k, key_bits)
                planted = planted_near(meta, k)
                expected = chance_pairs(meta["distinct_hashes"], k)
                a.update(
                    distinct_hashes=meta["distinct_hashes"],
                    candidates_per_distinct=round(a["candidate_pairs"] / meta["distinct_hashes"], 3),
                    planted_within_k=planted,
                    chance_pairs_expected=round(expected, 4),
                )
                band[str(rows)].append(a)
                log.info("band keys k=%d at %d rows: %s", k, rows, a)
                # Each chance pair may join a hash holding up to max_rows_per_hash rows to a group.
                # Exact copies share their source's hash: near-duplicates at distance 0 (pair dedup is off).
                expects[f"near-k{k}"][rows] = {
                    "min": planted + exact,
                    "max": planted + exact + chance_allowance(expected) * meta["max_rows_per_hash"],
                }
            # The variants in turn each round, the first one rotating (each leads once in three rounds).
            sides = {variant: partial(run_variant, variant=variant, rows=rows) for variant in VARIANTS}
            for variant, seconds in interleave(runs, sides, rotate).items():
                spark_runs[variant][rows]["seconds"] = seconds
    finally:
        spark.stop()

    spark_report: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        spark_report[variant] = {}
        for rows in sizes:
            t = spark_runs[variant][rows]
            counts = t["counts"]
            spark_report[variant][str(rows)] = {
                **timings(t["seconds"]),
                "rows_per_s_per_core": round(per_core(rows, statistics.median(t["seconds"])), 1),
                "jobs": max(t["jobs"]),
                # The stage failed as it is; these runs had spark.sql.autoBroadcastJoinThreshold=-1.
                "failure": t.get("failure"),
                "broadcast_joins_off": t["no_broadcast"],
                "capped": bool(t.get("capped")),
                "rejected": counts["rows"] - counts["kept"],
                "counts": {k: v for k, v in counts.items() if k == "kept" or k in reasons.REASONS[reasons.DEDUP]},
                "expected_rejects": expects[variant][rows],
            }
    first, last = str(sizes[0]), str(sizes[-1])
    growth = {
        v: round(spark_report[v][last]["seconds_median"] / spark_report[v][first]["seconds_median"], 3)
        for v in VARIANTS
    }
    report: dict[str, Any] = {
        "bench": "dedup",
        "master": MASTER,
        "cores": CORES,
        "shuffle_partitions": args.shuffle_partitions,
        "max_run_seconds": max_run_seconds,
        "band_key_bits": key_bits,
        "runs": runs,
        "sizes": sizes,
        "generator": {"version": GENERATOR_VERSION, "seed": SEED, "tables": {str(r): metas[r] for r in sizes}},
        "vocabulary_words": len({w for phrase in (*OPENINGS, *ADJECTIVES, *NOUNS, *PLACES) for w in phrase.split()}),
        "jvm_startup_s": round(jvm_startup_s, 3),
        "warm_up_rows": warm_rows,
        "warm_up_s": round(warm_up_s, 3),
        "spark": spark_report,
        "growth": growth,
        "growth_linear": sizes[-1] / sizes[0],
        "band_join": band,
    }
    if not args.skip_baseline:
        report["baseline_budget_s"] = budget
        report["baseline"] = run_baselines(sizes, runs, metas, expects, budget, sample_queries, args.sample_seconds)
        report["ratio"] = compare(report)
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_dedup"))
