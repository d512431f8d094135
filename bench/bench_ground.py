"""Benchmark: the grounding stage on 1M synthetic pairs with several boxes each, against single-process baselines.

Data: one pair table and one Boxes table per ``--rows``, generated on the
executors (``spark.range`` and SQL expressions only, seeded xxhash64, so the
same size is the same data on every machine) and written once per size to
``build/bench-ground/<rows>/pairs/`` and ``.../boxes/`` with a ``_bench.json``
marker (what was planted). No spaCy: captions are built from a small
vocabulary of phrases, so the spans are known by construction.

- pairs (``id``, ``url``, ``caption``, ``noun_chunk_spans``, ``ref_exp_spans``,
  ``width``, ``height``, ``dump``): an opening ("a photo of") and 2 to 6
  segments joined by connectors (" next to "); a segment is a noun chunk
  "<det> <adjective> <noun>" (its root lemma the noun; 10 % of chunks on an
  abstract noun of GRIT's list) and in 40 % of them a tail ("with a hat") that
  the referring expression covers and the chunk does not.
- boxes: 1 to 3 per chunk (2 % of pairs have none). The image is a 3 x 2 grid
  of cells, one per chunk; box 0 and 1 of chunk k lie in cell k, box 2 in
  the cell of chunk k + 1 (NMS across chunks). Boxes of one cell are one
  0.27 x 0.40 box shifted by at most 0.02 (IoU >= 0.78 > 0.5), boxes of
  different cells do not meet. Scores uniform in [0.45, 0.99), 1 % exactly
  0.65 (the boundary: not kept); 2 % of boxes on a span that is no chunk
  (the chunk minus its last character: unmatched); 1 % malformed, one of
  span past the caption, score 1.5, NaN x_min, x_max 1.25, x_min > x_max.
  Plus rows / 1000 boxes whose id no pair has (box-no-pair).

So, with the stage's defaults (score > 0.65, NMS IoU 0.5), the planted
outcomes are known without running the rules: a box is malformed, else
unmatched, else abstract, else below-score, else eligible; each cell with an
eligible box keeps exactly one (kept = distinct (id, cell) over eligible
boxes, suppressed = the other eligible boxes), and a pair with no eligible
box is ``no-grounding``. The generator counts these (a group-by over its own
expressions, untimed) into the marker.

Spark: ONE ``local[2]`` session with the job's settings (jobs.session.JOB_CONF),
``--shuffle-partitions`` (default 16). Timed, from reading the two tables to
the end of the last write: ``with_ground_verdicts(pairs, read_boxes(...),
GroundConfig())``, the annotated frame persisted (DISK_ONLY, as
jobs.pipeline does), ``split_ground``, then accepted, rejected and box
verdicts each written to the ``noop`` sink (every column evaluated). Each
write carries a DataFrame ``Observation`` (counts collected by the same write,
no second pass); every timed run is checked: pairs in = accepted + rejected
(and the id sum), every reject ``no-grounding`` and as many as planted,
kept boxes (the entries of ``noun_chunks``, equal to those of ``ref_exps``)
as planted, box verdicts = box rows, their reasons and outcomes as planted.
One untimed warm-up run on a 20,000-row table first (JIT); the JVM start-up
is reported apart.

Baselines, one process, one core each, in the same run and interleaved with
the Spark runs (Spark run, ``rules`` run, ``judge_row`` run, ...): pyarrow
reads the same parquet (the read is timed, as Spark's is), sorts the boxes by
id (Arrow), and per batch of 10,000 pairs groups their boxes per id in Python,
then per pair:

- ``rules``: ``udfs.grounding.check_box`` on every box and
  ``udfs.grounding.ground`` once: the cost floor of the rules without Spark;
- ``judge_row``: ``udfs.grounding.judge_row``, the function the stage's
  ``mapInArrow`` runs per row, which also records every box's verdict and
  outcome (from the same ``ground`` call) and builds the verdict dicts: the
  stage's own Python work without Spark.

Each runs on all the pairs if a timed sample (the first 20,000 ids) predicts
it fits ``--baseline-budget`` (600 s), else on the largest prefix of ids that
does, reported as such. Their counts (kept, no-grounding, per box outcome and
reason) are checked against the generator's for the same ids: a second,
Spark-free check of the planting.

Results: a table on stdout and ``bench/results/ground.json``
(``ground-quick.json`` with ``--quick``).

    .venv/bin/python bench/bench_ground.py [--rows 1000000] [--runs 3] [--quick] [--skip-baseline]

``--quick``: 100,000 pairs, a 60 s baseline budget (a smoke test).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import (
    BUILD,
    CORES,
    MASTER,
    BenchArgs,
    ensure_cached,
    interleave,
    job_group,
    load_average,
    per_core,
    publish,
    ratio,
    run_main,
    start_spark,
    timings,
)

from udfs.grounding import GroundConfig

DATA_DIR = BUILD / "bench-ground"
SHUFFLE_PARTITIONS = 16
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
WARM_UP_ROWS = 20_000

# --- the synthetic tables: bumped when the generator changes, so a stale cache is not reused.
GENERATOR_VERSION = "v2"
SEED = 20261129
WRITE_FILES = 8
MIN_CHUNKS, MAX_CHUNKS = 2, 6  # noun chunks per caption
MAX_BOXES_PER_CHUNK = 3  # 1..3 boxes per chunk
ABSTRACT_PER_MILLE = 100  # chunks on an abstract noun
TAIL_PER_MILLE = 400  # segments with a tail (referring expression longer than the chunk)
NO_BOX_PER_MILLE = 20  # pairs without any box
EDGE_PER_MILLE = 10  # boxes scored exactly MIN_SCORE
UNMATCHED_PER_MILLE = 20  # boxes on a span that is no chunk
MALFORMED_PER_MILLE = 10  # malformed boxes
ORPHANS_PER_MILLE = 1  # boxes per 1000 pairs whose id no pair has
SCORE_LOW, SCORE_SPAN = 0.45, 0.54  # scores uniform in [0.45, 0.99)
MIN_SCORE = GroundConfig().min_score  # the stage's threshold: some boxes are planted exactly on it
# Cell c of the 3 x 2 grid: [c%3 / 3 + 0.03, + BOX_W] x [c//3 / 2 + 0.05, + BOX_H], shifted by
# at most MAX_SHIFT in x and y: IoU within a cell >= (0.25 * 0.38) / (2 * 0.108 - 0.095) = 0.78.
BOX_W, BOX_H, MAX_SHIFT = 0.27, 0.40, 0.02

OPENINGS = ("a photo of", "there is", "close-up of", "we see", "an image of", "in this picture:")
DETS = ("a", "the", "one", "another")
ADJECTIVES = tuple(
    "red small old wooden bright quiet modern rusty golden tiny huge green empty busy white vintage shiny blue".split()
)
NOUNS = tuple(
    (
        "dog cat house bicycle car tree bridge boat chair table lamp mountain river street train flower horse "
        "church garden window door bird cake shoe guitar clock road lake tower kitchen truck castle dress book cup"
    ).split()
)
TAILS = ("with a hat", "on the left", "in a box", "made of glass", "under a tree", "with red stripes")
CONNECTORS = (" and ", " next to ", " above ", " behind ", ", ", " beside ")
DUMPS = ("CC-MAIN-2023-06", "CC-MAIN-2023-23", "CC-MAIN-2023-40", "CC-MAIN-2023-50")

# Planted box kinds: malformations (one of these per malformed box) and outcomes.
MALFORMATIONS = ("box-span-invalid", "box-score-invalid", "box-not-finite", "box-outside-image", "box-degenerate")
OUTCOMES_PLANTED = ("unmatched", "abstract", "below-score", "eligible")

BASELINE_BUDGET_S = 600.0
BASELINE_SAMPLE = 20_000
BASELINE_BATCH = 10_000
BASELINES = ("rules", "judge_row")

log = logging.getLogger("winnow.bench.ground")


# --- synthetic data -------------------------------------------------------------------------------------------------


def _rand(salt: str, *cols: Any) -> Any:
    """A seeded 64-bit pseudo-random long per value of ``cols``."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(SEED), F.lit(salt), *cols)


def _below(per_mille: int, salt: str, *cols: Any) -> Any:
    """True for about ``per_mille`` in 1000 values of ``cols`` (seeded): how rows are picked for a planted kind."""
    from pyspark.sql import functions as F

    return F.pmod(_rand(salt, *cols), F.lit(1000)) < per_mille


def _pick(words: tuple[str, ...], salt: str, *cols: Any) -> Any:
    """One of ``words`` per value of ``cols`` (seeded)."""
    from pyspark.sql import functions as F

    return F.element_at(
        F.array(*[F.lit(w) for w in words]), (F.pmod(_rand(salt, *cols), F.lit(len(words))) + 1).cast("int")
    )


def synthetic_pairs(spark: Any, rows: int) -> Any:
    """The pair table of ``rows`` pairs (see the module docstring)."""
    from pyspark.sql import functions as F

    from udfs.grounding import GroundConfig

    abstract_words = tuple(sorted(GroundConfig().abstract_nouns))
    i = F.col("id")
    ks = F.sequence(F.lit(0), F.lit(MAX_CHUNKS - 1))

    def segment(k: Any) -> Any:
        noun = F.when(
            _below(ABSTRACT_PER_MILLE, "abstract", i, k), _pick(abstract_words, "abstract-noun", i, k)
        ).otherwise(_pick(NOUNS, "noun", i, k))
        tail = F.when(_below(TAIL_PER_MILLE, "tail", i, k), F.concat(F.lit(" "), _pick(TAILS, "tail-text", i, k)))
        return F.struct(
            F.coalesce(F.when(k > 0, _pick(CONNECTORS, "connector", i, k)), F.lit("")).alias("conn"),
            F.concat_ws(" ", _pick(DETS, "det", i, k), _pick(ADJECTIVES, "adjective", i, k), noun).alias("chunk"),
            F.coalesce(tail, F.lit("")).alias("tail"),
            noun.alias("noun"),
        )

    def place(acc: Any, s: Any) -> Any:
        # chunk k starts after the opening, one space, the segments before it and its connector
        at = acc["pos"] + F.length(s["conn"])
        chunk_end = at + F.length(s["chunk"])
        span = F.struct(
            at.alias("start"),
            chunk_end.alias("end"),
            (chunk_end + F.length(s["tail"])).alias("ref_end"),
            s["noun"].alias("noun"),
        )
        return F.struct(
            (chunk_end + F.length(s["tail"])).alias("pos"), F.array_append(acc["spans"], span).alias("spans")
        )

    zero = F.struct(
        (F.length("_opening") + 1).alias("pos"),
        F.array().cast("array<struct<start:int,end:int,ref_end:int,noun:string>>").alias("spans"),
    )
    frame = (
        spark.range(0, rows, 1, WRITE_FILES)
        .withColumn("_n", (F.pmod(_rand("chunks", i), F.lit(MAX_CHUNKS - MIN_CHUNKS + 1)) + MIN_CHUNKS).cast("int"))
        .withColumn("_opening", _pick(OPENINGS, "opening", i))
        .withColumn("_segs", F.slice(F.transform(ks, segment), 1, F.col("_n")))
        .withColumn("_spans", F.aggregate("_segs", zero, place, lambda acc: acc["spans"]))
        .withColumn(
            "caption",
            F.concat(
                F.col("_opening"),
                F.lit(" "),
                F.array_join(F.transform("_segs", lambda s: F.concat(s["conn"], s["chunk"], s["tail"])), ""),
            ),
        )
    )
    return frame.select(
        i.alias("id"),
        F.concat(F.lit("https://img.example.com/"), i.cast("string"), F.lit(".jpg")).alias("url"),
        "caption",
        F.transform(
            "_spans",
            lambda z: F.struct(
                z["start"].cast("int").alias("start"),
                z["end"].cast("int").alias("end"),
                z["noun"].alias("root_lemma"),
                F.lit("NOUN").alias("root_pos"),
            ),
        ).alias("noun_chunk_spans"),
        F.transform(
            "_spans", lambda z: F.struct(z["start"].cast("int").alias("start"), z["ref_end"].cast("int").alias("end"))
        ).alias("ref_exp_spans"),
        F.lit(640).alias("width"),
        F.lit(480).alias("height"),
        _pick(DUMPS, "dump", i).alias("dump"),
    )


def synthetic_boxes(spark: Any, pairs: Any, rows: int) -> Any:
    """The Boxes table of the written ``pairs`` (see the module docstring), with its truth:
    ``_planted`` (a malformation, box-no-pair, or an outcome) and ``_cell``."""
    from pyspark.sql import functions as F

    from udfs.grounding import GroundConfig

    abstract = F.array(*[F.lit(w) for w in sorted(GroundConfig().abstract_nouns)])
    i, n = F.col("id"), F.size("noun_chunk_spans")

    def of_chunk(chunk: Any, k: Any) -> Any:
        count = F.pmod(_rand("boxes", i, k), F.lit(MAX_BOXES_PER_CHUNK)) + 1
        is_abstract = F.array_contains(abstract, chunk["root_lemma"])
        return F.transform(F.sequence(F.lit(0), count - 1), lambda j: _box(i, n, chunk, is_abstract, k, j))

    boxes = F.flatten(F.transform("noun_chunk_spans", of_chunk))
    # a pair without boxes: the same array, emptied (keeps its element type)
    boxes = F.filter(boxes, lambda b: ~_below(NO_BOX_PER_MILLE, "no-boxes", i))
    exploded = pairs.select("id", F.explode(boxes).alias("b")).select("id", "b.*")
    orphans = max(1, rows * ORPHANS_PER_MILLE // 1000)
    stray = spark.range(rows, rows + orphans, 1, 1).select(
        i.alias("id"),
        F.lit(0).alias("start"),
        F.lit(5).alias("end"),
        F.lit(0.1).alias("x_min"),
        F.lit(0.1).alias("y_min"),
        F.lit(0.5).alias("x_max"),
        F.lit(0.5).alias("y_max"),
        F.lit(0.9).alias("score"),
        F.lit("box-no-pair").alias("_planted"),
        F.lit(None).cast("int").alias("_cell"),
    )
    return exploded.unionByName(stray)


def _box(i: Any, n: Any, chunk: Any, is_abstract: Any, k: Any, j: Any) -> Any:
    """Box ``j`` of chunk ``k`` of pair ``i`` (see the module docstring), with its planted kind and cell."""
    from pyspark.sql import functions as F

    cell = F.when(j == 2, F.pmod(k + 1, n)).otherwise(k)
    x0 = F.pmod(cell, F.lit(3)) / 3.0 + 0.03 + F.pmod(_rand("dx", i, k, j), F.lit(2001)) * (MAX_SHIFT / 2000)
    y0 = F.floor(cell / 3) / 2.0 + 0.05 + F.pmod(_rand("dy", i, k, j), F.lit(2001)) * (MAX_SHIFT / 2000)
    u = F.pmod(_rand("score", i, k, j), F.lit(1_000_000)) / 1_000_000.0
    score = F.when(_below(EDGE_PER_MILLE, "edge", i, k, j), F.lit(MIN_SCORE)).otherwise(SCORE_LOW + SCORE_SPAN * u)
    start = chunk["start"]
    end = F.when(_below(UNMATCHED_PER_MILLE, "unmatched", i, k, j), chunk["end"] - 1).otherwise(chunk["end"])
    x_min, y_min, x_max, y_max = x0, y0, x0 + BOX_W, y0 + BOX_H
    bad = F.when(
        _below(MALFORMED_PER_MILLE, "malformed", i, k, j),
        F.pmod(_rand("malformation", i, k, j), F.lit(len(MALFORMATIONS))),
    )
    end = F.when(bad == 0, F.length("caption") + 3).otherwise(end)
    score = F.when(bad == 1, F.lit(1.5)).otherwise(score)
    x_min_bad = F.when(bad == 2, F.lit(float("nan"))).when(bad == 4, x_max).otherwise(x_min)
    x_max = F.when(bad == 3, F.lit(1.25)).when(bad == 4, x_min).otherwise(x_max)
    planted = (
        F.when(bad.isNotNull(), F.element_at(F.array(*[F.lit(m) for m in MALFORMATIONS]), (bad + 1).cast("int")))
        .when(end != chunk["end"], "unmatched")
        .when(is_abstract, "abstract")
        .when(~(score > MIN_SCORE), "below-score")
        .otherwise("eligible")
    )
    return F.struct(
        start.cast("int").alias("start"),
        end.cast("int").alias("end"),
        x_min_bad.cast("double").alias("x_min"),
        y_min.cast("double").alias("y_min"),
        x_max.cast("double").alias("x_max"),
        y_max.cast("double").alias("y_max"),
        score.cast("double").alias("score"),
        planted.alias("_planted"),
        cell.cast("int").alias("_cell"),
    )


def data_path(rows: int) -> Path:
    """Where the tables of ``rows`` pairs are cached (pairs/, boxes/ and the marker)."""
    return DATA_DIR / str(rows)


def planted_counts(boxes: Any, pairs: int, limit: int | None = None) -> dict[str, Any]:
    """What the stage must find, from the generator's truth: box rows per planted kind, kept boxes
    (one per (id, cell) with an eligible box) and pairs without any (no-grounding). ``limit``: ids below it."""
    from pyspark.sql import functions as F

    if limit is not None:
        boxes = boxes.filter(F.col("id") < limit)
        pairs = min(pairs, limit)
    eligible = F.col("_planted") == "eligible"
    kinds = ("box-no-pair", *MALFORMATIONS, *OUTCOMES_PLANTED)
    got = boxes.agg(
        F.count(F.lit(1)).alias("box_rows"),
        *[F.count_if(F.col("_planted") == k).alias(k) for k in kinds],
        F.count_distinct(F.when(eligible, F.struct("id", "_cell"))).alias("kept"),
        F.count_distinct(F.when(eligible, F.col("id"))).alias("pairs_grounded"),
    ).first()
    planted = {k: int(got[k]) for k in kinds}
    if got["box_rows"] != sum(planted.values()):
        raise RuntimeError(f"generator check failed: {got['box_rows']} boxes, planted kinds {planted}")
    return {
        "pairs": pairs,
        "box_rows": int(got["box_rows"]),
        "planted": planted,
        "kept": int(got["kept"]),
        "suppressed": planted["eligible"] - int(got["kept"]),
        "pairs_grounded": int(got["pairs_grounded"]),
        "no_grounding": pairs - int(got["pairs_grounded"]),
    }


def ensure_data(spark: Any, rows: int) -> dict[str, Any]:
    """The tables of ``rows`` pairs under build/bench-ground/<rows>/ (written if missing or stale) and their marker."""
    want = {"version": GENERATOR_VERSION, "seed": SEED, "rows": rows}
    return ensure_cached(data_path(rows), want, partial(write_tables, spark, rows), f"{rows:,} pairs and their boxes")


def write_tables(spark: Any, rows: int, tmp: Path) -> dict[str, Any]:
    """Write the pairs and boxes of ``rows`` pairs under ``tmp`` and return what was planted."""
    from schemas.tables import BOXES

    synthetic_pairs(spark, rows).write.mode("overwrite").parquet(str(tmp / "pairs"))
    # The boxes are made from the written pairs (their spans); only BOXES' columns are written,
    # the truth is counted from the generator (deterministic).
    boxes = synthetic_boxes(spark, spark.read.parquet(str(tmp / "pairs")), rows)
    boxes.select(*BOXES.fieldNames()).write.mode("overwrite").parquet(str(tmp / "boxes"))
    meta = planted_counts(boxes, rows)
    stats = (
        spark.read.parquet(str(tmp / "pairs"))
        .selectExpr("count(1) AS n", "avg(size(noun_chunk_spans)) AS chunks", "avg(length(caption)) AS caption_chars")
        .first()
    )
    if stats["n"] != rows:
        raise RuntimeError(f"generator wrote {stats['n']} pairs, not {rows}")
    meta.update(
        chunks_per_pair=round(stats["chunks"], 3),
        boxes_per_pair=round((meta["box_rows"] - meta["planted"]["box-no-pair"]) / rows, 3),
        caption_chars_mean=round(stats["caption_chars"], 1),
    )
    return meta


def prefix_planted(spark: Any, rows: int, limit: int) -> dict[str, Any]:
    """The planted counts of the pairs with id < ``limit`` (the baseline's prefix)."""
    boxes = synthetic_boxes(spark, spark.read.parquet(str(data_path(rows) / "pairs")), rows)
    return planted_counts(boxes, rows, limit)


# --- Spark ----------------------------------------------------------------------------------------------------------


def time_spark(spark: Any, rows: int, group: str) -> tuple[float, dict[str, dict[str, int]]]:
    """Wall seconds of the stage as the pipeline runs it, its three outputs written to the noop sink;
    the outputs' counts, observed by the same writes."""
    from pyspark import StorageLevel
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from jobs.stages.ground import read_boxes, split_ground, with_ground_verdicts
    from schemas import reasons
    from schemas.reasons import BOX_OUTCOMES as OUTCOMES
    from udfs.grounding import GroundConfig

    reason, outcome = F.col("reason"), F.col("outcome")
    metrics = {
        "accepted": [
            F.count(F.lit(1)).alias("rows"),
            F.sum("id").alias("id_sum"),
            F.sum(F.size("noun_chunks")).alias("kept"),
            F.sum(F.size("ref_exps")).alias("ref_exps"),
            F.count_if(F.size("noun_chunks") < 1).alias("empty"),
        ],
        "rejected": [
            F.count(F.lit(1)).alias("rows"),
            F.sum("id").alias("id_sum"),
            F.count_if(reason == reasons.NO_GROUNDING).alias(reasons.NO_GROUNDING),
        ],
        "boxes": [
            F.count(F.lit(1)).alias("rows"),
            *[F.count_if(reason == code).alias(code) for code in reasons.BOX_REASONS],
            *[F.count_if(reason.isNull() & (outcome == o)).alias(o) for o in OUTCOMES],
            F.count_if(reason.isNull() & outcome.isNull()).alias("unjudged"),
        ],
    }
    observations = {name: Observation(f"{group}-{name}") for name in metrics}
    path = data_path(rows)
    with job_group(spark, group, f"bench ground {group}"):
        started = time.perf_counter()
        pairs = spark.read.parquet(str(path / "pairs"))
        annotated, box_verdicts = with_ground_verdicts(pairs, read_boxes(spark, str(path / "boxes")), GroundConfig())
        annotated = annotated.persist(StorageLevel.DISK_ONLY)
        try:
            accepted, rejected = split_ground(annotated, pairs.columns)
            for name, frame in (("accepted", accepted), ("rejected", rejected), ("boxes", box_verdicts)):
                frame.observe(observations[name], *metrics[name]).write.format("noop").mode("overwrite").save()
            seconds = time.perf_counter() - started
        finally:
            annotated.unpersist(blocking=True)
    counts = {name: {k: int(v or 0) for k, v in o.get.items()} for name, o in observations.items()}
    return seconds, counts


def expected_box_counts(meta: dict[str, Any]) -> dict[str, int]:
    """Box verdict counts per reason and outcome that the planting calls for."""
    from schemas import reasons
    from schemas.reasons import BOX_OUTCOMES as OUTCOMES

    planted = meta["planted"]
    want = {code: planted.get(code, 0) for code in reasons.BOX_REASONS}
    want.update({o: 0 for o in OUTCOMES})
    want.update(
        kept=meta["kept"],
        suppressed=meta["suppressed"],
        abstract=planted["abstract"],
        unmatched=planted["unmatched"],
        **{"below-score": planted["below-score"]},
    )
    return want


def check_spark(rows: int, counts: dict[str, dict[str, int]], meta: dict[str, Any]) -> None:
    """Conservation and the planted counts; raises on a mismatch."""
    from schemas import reasons

    a, r, b = counts["accepted"], counts["rejected"], counts["boxes"]
    problems = []
    if a["rows"] + r["rows"] != rows or a["id_sum"] + r["id_sum"] != rows * (rows - 1) // 2:
        problems.append(f"accepted {a['rows']} + rejected {r['rows']} != {rows} pairs in (or the ids differ)")
    if r[reasons.NO_GROUNDING] != r["rows"] or r["rows"] != meta["no_grounding"]:
        problems.append(f"{r['rows']} rejects, {r[reasons.NO_GROUNDING]} no-grounding, planted {meta['no_grounding']}")
    if a["kept"] != meta["kept"] or a["ref_exps"] != a["kept"] or a["empty"]:
        problems.append(
            f"kept boxes {a['kept']} (ref_exps {a['ref_exps']}, empty rows {a['empty']}), planted {meta['kept']}"
        )
    if b["rows"] != meta["box_rows"] or b["unjudged"]:
        problems.append(
            f"{b['rows']} box verdicts ({b['unjudged']} without reason or outcome) for {meta['box_rows']} box rows"
        )
    for key, n in expected_box_counts(meta).items():
        if b[key] != n:
            problems.append(f"{b[key]} boxes {key}, planted {n}")
    if problems:
        raise RuntimeError(f"spark at {rows} pairs: " + "; ".join(problems) + f" (counts {counts})")


# --- baseline -------------------------------------------------------------------------------------------------------


def baseline_run(rows: int, limit: int, variant: str = "rules") -> tuple[float, dict[str, int]]:
    """Seconds and counts of one process over the pairs with id < ``limit``: pyarrow read, boxes
    sorted by id (Arrow) and grouped per id in Python, then per pair ``rules``: check_box per box and
    ground; ``judge_row``: the stage's own per-row function (udfs.grounding.judge_row)."""
    import numpy as np
    import pyarrow.parquet as pq

    from schemas.reasons import KEPT
    from schemas.tables import BOXES
    from udfs.grounding import GroundConfig, check_box, ground, judge_row

    rules = GroundConfig()
    box_columns = BOXES.fieldNames()
    path = data_path(rows)
    filters = [("id", "<", limit)] if limit < rows else None
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    pairs = pq.read_table(
        str(path / "pairs"),
        columns=["id", "caption", "noun_chunk_spans", "ref_exp_spans", "width", "height"],
        filters=filters,
    ).sort_by("id")
    boxes = pq.read_table(str(path / "boxes"), columns=box_columns, filters=filters).sort_by("id")
    box_ids = boxes.column("id").to_numpy()
    matched = 0
    for batch in pairs.to_batches(max_chunksize=BASELINE_BATCH):
        ids = batch.column("id").to_pylist()
        lo = int(np.searchsorted(box_ids, ids[0], "left"))
        hi = int(np.searchsorted(box_ids, ids[-1], "right"))
        part = boxes.slice(lo, hi - lo)
        per_id: dict[int, list[tuple]] = {}
        for box in zip(*(part.column(c).to_pylist() for c in box_columns), strict=True):
            per_id.setdefault(box[0], []).append(box)
        columns = (
            batch.column(c).to_pylist() for c in ("caption", "noun_chunk_spans", "ref_exp_spans", "width", "height")
        )
        for pid, caption, chunks, refs, width, height in zip(ids, *columns, strict=True):
            counts["pairs"] += 1
            if variant == "judge_row":
                mine = [dict(zip(box_columns[1:], b[1:], strict=True)) for b in per_id.pop(pid, ())]
                matched += len(mine)
                row = judge_row(caption, chunks, refs, width, height, mine, rules, False)
                counts["kept"] += len(row.noun_chunks)
                counts["no-grounding"] += row.reason is not None
                for v in row.boxes:
                    if v["outcome"] != KEPT:
                        counts[v["reason"] or v["outcome"]] += 1
                continue
            length = len(caption or "")
            valid = []
            for _, start, end, x_min, y_min, x_max, y_max, score in per_id.pop(pid, ()):
                matched += 1
                box, code = check_box(start, end, x_min, y_min, x_max, y_max, score, length, width, height, False)
                if code is None:
                    valid.append(box)
                else:
                    counts[code] += 1
            result = ground(length, chunks or [], refs or [], valid, rules)
            counts["kept"] += len(result.noun_chunks)
            counts["abstract"] += result.abstract
            counts["unmatched"] += result.unmatched
            counts["below-score"] += result.below_score
            counts["suppressed"] += result.suppressed
            counts["no-grounding"] += result.reason is not None
    counts["box-no-pair"] = boxes.num_rows - matched
    counts["box_rows"] = boxes.num_rows
    seconds = time.perf_counter() - started
    return seconds, dict(counts)


def check_baseline(limit: int, counts: dict[str, int], planted: dict[str, Any]) -> None:
    """The baseline's counts against the generator's for the same ids; raises on a mismatch."""
    want = {
        "pairs": planted["pairs"],
        "box_rows": planted["box_rows"],
        "kept": planted["kept"],
        "suppressed": planted["suppressed"],
        "no-grounding": planted["no_grounding"],
        **{k: planted["planted"][k] for k in ("box-no-pair", *MALFORMATIONS, "abstract", "unmatched", "below-score")},
    }
    problems = [f"{key} {counts.get(key, 0)}, planted {n}" for key, n in want.items() if counts.get(key, 0) != n]
    if problems:
        raise RuntimeError(f"baseline on ids < {limit}: " + "; ".join(problems))


def baseline_limit(rows: int, budget: float, variant: str) -> tuple[int, dict[str, Any]]:
    """The pairs the baseline runs on: all if a timed sample predicts it fits ``budget``, else the largest
    prefix (a multiple of 1,000 ids) that does."""
    sample = min(rows, BASELINE_SAMPLE)
    seconds, _ = baseline_run(rows, sample, variant)
    per_pair = seconds / sample
    estimate = per_pair * rows
    limit = rows if estimate <= budget else max(1_000, int(budget * 0.9 / per_pair) // 1_000 * 1_000)
    info = {"sample_pairs": sample, "sample_s": round(seconds, 3), "estimated_full_s": round(estimate, 1)}
    log.info(
        "baseline %s sample: %d pairs in %.1f s, full run estimated %.0f s: running on %d pairs",
        variant,
        sample,
        seconds,
        estimate,
        limit,
    )
    return min(limit, rows), info


# --- report ---------------------------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """The Spark and baseline table and what every run was checked against; the load averages follow (publish)."""
    s, meta = report["spark"], report["generator"]["table"]
    lines = [
        f"grounding stage, {report['rows']:,} pairs ({meta['chunks_per_pair']} noun chunks, {meta['boxes_per_pair']} "
        f"boxes per pair; {meta['box_rows']:,} box rows), {report['master']}, "
        "runs interleaved (Spark, then each baseline), medians",
        f"JVM start-up {report['jvm_startup_s']:.1f} s (apart); warm-up run on {report['warm_up_rows']:,} pairs "
        f"{report['warm_up_s']:.1f} s (untimed)",
        "",
        f"{'variant':<38} {'rows':>10} {'runs':>4} {'seconds':<22} {'median s':>9} {'rows/s/core':>12} {'ratio':>6}",
        f"{'spark local[2]':<38} {report['rows']:>10,} {len(s['seconds']):>4} "
        f"{', '.join(f'{x:.1f}' for x in s['seconds']):<22} {s['seconds_median']:>9.1f} "
        f"{s['rows_per_s_per_core']:>12,.0f} {'':>6}",
    ]
    baselines = report.get("baseline", {})
    for variant, b in baselines.items():
        name = f"baseline {variant}, 1 process" + ("" if b["full"] else " (PREFIX)")
        lines.append(
            f"{name:<38} {b['rows']:>10,} {len(b['seconds']):>4} {', '.join(f'{x:.1f}' for x in b['seconds']):<22} "
            f"{b['seconds_median']:>9.1f} {b['rows_per_s']:>12,.0f} {b['ratio']:>6.2f}"
        )
        if not b["full"]:
            lines.append(
                f"  ran on the first {b['rows']:,} ids only: all {report['rows']:,} were estimated at "
                f"{b['estimate']['estimated_full_s']:.1f} s > budget {report['baseline_budget_s']:g} s"
            )
    if baselines:
        lines += [
            "ratio = Spark rows/s per core / baseline rows/s (one core); baselines read the same parquet (timed)",
            "rules = check_box per box + ground per pair (the cost floor of the rules); judge_row = the stage's own",
            "per-row function (also builds every box's verdict), without Spark",
        ]
    c = s["counts"]
    lines += [
        "",
        f"checked every run: {c['accepted']['rows']:,} accepted + {c['rejected']['rows']:,} no-grounding = "
        f"{report['rows']:,} pairs; {c['accepted']['kept']:,} boxes kept; "
        f"{c['boxes']['rows']:,} box verdicts = box rows; "
        "box reasons and outcomes as planted"
        + ("; the baselines' counts as planted for their ids" if baselines else ""),
        f"box outcomes: {', '.join(f'{k} {v:,}' for k, v in report['expected_box_counts'].items() if v)}",
    ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "ground",
        rows=DEFAULT_ROWS,
        quick_rows=QUICK_ROWS,
        min_rows=1_000,
        rows_help="pairs",
        quick_help=f"{QUICK_ROWS:,} pairs, 60 s baseline budget",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="Spark only")
    parser.add_argument(
        "--shuffle-partitions", type=int, default=SHUFFLE_PARTITIONS, help=f"default {SHUFFLE_PARTITIONS}"
    )
    parser.add_argument(
        "--baseline-budget", type=float, help=f"seconds a baseline run may take (default {BASELINE_BUDGET_S:g})"
    )
    args = parser.parse(argv)
    rows = args.rows
    budget = args.baseline_budget if args.baseline_budget is not None else (60.0 if args.quick else BASELINE_BUDGET_S)
    if args.shuffle_partitions < 1:
        parser.error("--shuffle-partitions must be at least 1")

    from jobs.config import RunConfig

    load_start = load_average()
    spark, jvm_startup_s = start_spark(
        MASTER, "winnow-bench-ground", args.shuffle_partitions, RunConfig().arrow_batch_size
    )
    log.info("JVM start-up %.1f s", jvm_startup_s)

    warm_rows = min(WARM_UP_ROWS, rows)
    variants = () if args.skip_baseline else BASELINES
    base: dict[str, dict[str, Any]] = {v: {} for v in variants}
    spark_counts: dict[str, dict[str, int]] = {}

    def spark_side(run: int) -> float:
        seconds, counts = time_spark(spark, rows, f"bench-ground-{rows}-{run}")
        check_spark(rows, counts, meta)
        spark_counts.update(counts)
        log.info("run %d/%d spark: %.1f s = %.0f rows/s/core", run, args.runs, seconds, per_core(rows, seconds))
        return seconds

    def baseline_side(run: int, variant: str) -> float:
        b = base[variant]
        seconds, b["counts"] = baseline_run(rows, b["rows"], variant)
        check_baseline(b["rows"], b["counts"], b["planted"])
        log.info(
            "run %d/%d baseline %s on %d pairs: %.1f s = %.0f rows/s",
            run,
            args.runs,
            variant,
            b["rows"],
            seconds,
            b["rows"] / seconds,
        )
        return seconds

    try:
        warm_meta = ensure_data(spark, warm_rows)
        started = time.perf_counter()
        _, warm_counts = time_spark(spark, warm_rows, "warm-up")
        check_spark(warm_rows, warm_counts, warm_meta)
        warm_up_s = time.perf_counter() - started
        log.info("warm-up on %d pairs: %.1f s", warm_rows, warm_up_s)
        meta = ensure_data(spark, rows)
        for variant in variants:
            b = base[variant]
            b["rows"], b["estimate"] = baseline_limit(rows, budget, variant)
            b["planted"] = meta if b["rows"] == rows else prefix_planted(spark, rows, b["rows"])
        # Each round: Spark, then each baseline.
        sides = {"spark": spark_side, **{v: partial(baseline_side, variant=v) for v in variants}}
        seconds = interleave(args.runs, sides)
    finally:
        spark.stop()

    med = statistics.median(seconds["spark"])
    report: dict[str, Any] = {
        "bench": "ground",
        "master": MASTER,
        "cores": CORES,
        "shuffle_partitions": args.shuffle_partitions,
        "arrow_batch_size": RunConfig().arrow_batch_size,
        "rows": rows,
        "runs": args.runs,
        "generator": {"version": GENERATOR_VERSION, "seed": SEED, "table": meta},
        "jvm_startup_s": round(jvm_startup_s, 3),
        "warm_up_rows": warm_rows,
        "warm_up_s": round(warm_up_s, 3),
        "spark": {
            **timings(seconds["spark"]),
            "rows_per_s_per_core": round(per_core(rows, med), 1),
            "counts": spark_counts,
        },
        "expected_box_counts": expected_box_counts(meta),
    }
    if variants:
        report["baseline_budget_s"] = budget
        report["baseline"] = {}
        for variant in variants:
            b = base[variant]
            rate = b["rows"] / statistics.median(seconds[variant])
            report["baseline"][variant] = {
                "rows": b["rows"],
                "full": b["rows"] == rows,
                "estimate": b["estimate"],
                **timings(seconds[variant]),
                "rows_per_s": round(rate, 1),
                "ratio": ratio(report["spark"]["rows_per_s_per_core"], rate),
                "counts": b["counts"],
            }
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_ground"))
