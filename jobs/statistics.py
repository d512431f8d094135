"""The report's statistics, computed in Spark: only bin counts and a few sample rows reach the driver.

``report_statistics`` is called by the pipeline on the frames it already has
(the accepted pairs and the union of the rejects, both filters over the
persisted annotated frames of the stages), after the outputs are written and
before those frames are unpersisted, so no stage UDF runs again. Three jobs:

1. histograms over the accepted rows, fixed bins (``HISTOGRAMS``): width,
   height, aspect ratio (long side / short side), caption length in
   characters, word count, and the scores of the ``noun_chunks`` boxes; only
   the columns present are measured. One scan and one ``groupBy(name, bin)``
   for all of them: a few dozen rows are collected.
2. duplicate-group sizes: a dedup reject names its winner in ``detail``
   (``duplicate of id 7 (dump 2026-01)``, ``duplicate of accepted id ...``,
   ``near-duplicate of id ...``); a group is the winner and every reject that
   names it, so its size is 1 + those rejects. Sizes are binned in Spark.
3. sample rejected rows: up to ``per_reason`` per (stage, reason), the rows
   with the smallest hash of (stage, reason, id, url), so the same input gives
   the same samples. Knowing each reason's count from the funnel, a row is
   first kept with probability about ``8 * per_reason / count`` (one filter
   over the rejects: no shuffle of all of them), then a window over that small
   remainder ranks them. URL, caption and detail are cut to ``SAMPLE_CHARS``
   characters in Spark, their full lengths kept.

The result is the ``statistics`` block of ``funnel.json``; jobs.report draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, NumericType

from jobs.report import bin_labels
from schemas import reasons

SAMPLES_PER_REASON = 5
SAMPLE_CHARS = 300
# Over-sampling factor of the first pass: with 8 x N expected rows, fewer than N
# are picked for a reason with probability below 1e-9 (Poisson, N = 5).
OVERSAMPLE = 8
_HASH_RANGE = 1 << 31

# A dedup reject's detail -> the winner's (id, dump); see jobs.stages.dedup._of.
WINNER_PATTERN = r"^(?:duplicate of|duplicate of accepted|near-duplicate of) id (-?\d+) \(dump (.*)\)$"
DUPLICATE_REASONS = (reasons.DUPLICATE_PAIR, reasons.HISTORY_DUPLICATE, reasons.NEAR_DUPLICATE)

NULL_BIN = -1  # no value (null or NaN)
OUTSIDE_BIN = -2  # below the first edge, or above the last of a closed histogram


@dataclass(frozen=True)
class HistogramSpec:
    """Fixed bins ``[edges[i], edges[i+1])``; with ``open_end`` one more bin for ``>= edges[-1]``,
    otherwise the last bin is closed (``<= edges[-1]``). ``integer``: values are whole numbers
    (labels say ``0–99`` rather than ``0–100``)."""

    name: str
    title: str
    edges: tuple[float, ...]
    open_end: bool = True
    integer: bool = False
    unit: str = "rows"
    note: str = ""

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1 + (1 if self.open_end else 0)


def even_edges(lo: float, step: float, n: int) -> tuple[float, ...]:
    """``n + 1`` edges from ``lo`` by ``step``, rounded so 1.0 + 3 * 0.1 is 1.3."""
    return tuple(round(lo + i * step, 9) for i in range(n + 1))


# Bins chosen to show the COYO filters' ranges at their defaults: sides from 0 to 2,000 px
# (image.min_side kept), aspect ratio 1 to 3 (image.max_aspect_ratio), captions to 500
# characters and 100 words.
HISTOGRAMS = {
    "width": HistogramSpec("width", "Width (pixels)", even_edges(0, 100, 20), integer=True),
    "height": HistogramSpec("height", "Height (pixels)", even_edges(0, 100, 20), integer=True),
    "aspect_ratio": HistogramSpec(
        "aspect_ratio", "Aspect ratio (long side / short side)", even_edges(1.0, 0.1, 20), note="bins of 0.1"
    ),
    "caption_length": HistogramSpec(
        "caption_length", "Caption length (characters)", even_edges(0, 25, 20), integer=True
    ),
    "word_count": HistogramSpec("word_count", "Word count", even_edges(0, 5, 20), integer=True),
    "box_score": HistogramSpec(
        "box_score",
        "Box scores (noun_chunks)",
        even_edges(0.0, 0.05, 20),
        open_end=False,
        unit="boxes",
        note="One count per box of the accepted rows' noun_chunks (the score is each entry's 7th value).",
    ),
}
DUPLICATE_GROUP_SIZES = HistogramSpec(
    "duplicate_groups",
    "Duplicate group sizes",
    (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 21, 51, 101, 1001, 10001),
    integer=True,
    unit="groups",
)


def bin_index(value: Column, spec: HistogramSpec) -> Column:
    """The bin of ``value`` (0-based), ``NULL_BIN`` for null / NaN, ``OUTSIDE_BIN`` out of range.

    Comparisons with the edges, not ``floor((x - lo) / step)``: 1.3 / 0.1 is not 13 in
    floating point, and a reader recomputing the bins with the edges of funnel.json
    (``numpy.searchsorted``) must land on the same counts.
    """
    x = value.cast("double")
    edges = spec.edges
    expr = F.when(x.isNull() | F.isnan(x), F.lit(NULL_BIN)).when(x < edges[0], F.lit(OUTSIDE_BIN))
    for i, edge in enumerate(edges[1:-1]):
        expr = expr.when(x < edge, F.lit(i))
    last = len(edges) - 2
    if spec.open_end:
        return expr.when(x < edges[-1], F.lit(last)).otherwise(F.lit(last + 1))
    return expr.when(x <= edges[-1], F.lit(last)).otherwise(F.lit(OUTSIDE_BIN))


def row_measures(columns: list[str], schema: Any) -> dict[str, Column]:
    """The per-row measures of ``HISTOGRAMS`` that the frame's columns allow."""
    numeric = {f.name for f in schema.fields if isinstance(f.dataType, NumericType)}
    out: dict[str, Column] = {}
    for side in ("width", "height"):
        if side in numeric:
            out[side] = F.col(side)
    if {"width", "height"} <= numeric:
        w, h = F.col("width").cast("double"), F.col("height").cast("double")
        out["aspect_ratio"] = F.when(F.least(w, h) > 0, F.greatest(w, h) / F.least(w, h))
    if "caption" in columns:
        out["caption_length"] = F.length("caption")
    if "word_count" in numeric:
        out["word_count"] = F.col("word_count")
    return out


def has_box_scores(schema: Any) -> bool:
    """``noun_chunks`` as GRIT writes it: a list of numeric lists."""
    if "noun_chunks" not in schema.fieldNames():
        return False
    kind = schema["noun_chunks"].dataType
    return (
        isinstance(kind, ArrayType)
        and isinstance(kind.elementType, ArrayType)
        and isinstance(kind.elementType.elementType, NumericType)
    )


def _bins(spec: HistogramSpec, counts: dict[int, int]) -> dict[str, Any]:
    labels = bin_labels(list(spec.edges), spec.open_end, spec.integer)
    los = list(spec.edges[:-1]) + ([spec.edges[-1]] if spec.open_end else [])
    his = list(spec.edges[1:]) + ([None] if spec.open_end else [])
    return {
        "name": spec.name,
        "title": spec.title,
        "unit": spec.unit,
        "note": spec.note,
        "edges": list(spec.edges),
        "open_end": spec.open_end,
        "bins": [
            {"lo": lo, "hi": hi, "label": label, "count": counts.get(i, 0)}
            for i, (lo, hi, label) in enumerate(zip(los, his, labels, strict=True))
        ],
        "nulls": counts.get(NULL_BIN, 0),
        "outside": counts.get(OUTSIDE_BIN, 0),
    }


def histograms(accepted: DataFrame) -> list[dict[str, Any]]:
    """All histograms of the accepted rows in one job (one scan, one small aggregation)."""
    measures = row_measures(accepted.columns, accepted.schema)
    boxes = has_box_scores(accepted.schema)
    parts = []
    if measures:
        entries = [
            F.struct(F.lit(name).alias("h"), bin_index(col, HISTOGRAMS[name]).alias("b"))
            for name, col in measures.items()
        ]
        parts.append(accepted.select(F.explode(F.array(*entries)).alias("e")).select("e.h", "e.b"))
    if boxes:
        chunk = F.explode(F.col("noun_chunks")).alias("c")
        score = F.try_element_at(F.col("c"), F.lit(7))
        parts.append(
            accepted.select(chunk).select(
                F.lit("box_score").alias("h"), bin_index(score, HISTOGRAMS["box_score"]).alias("b")
            )
        )
    if not parts:
        return []
    union = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    counts: dict[str, dict[int, int]] = {}
    for row in union.groupBy("h", "b").count().collect():
        counts.setdefault(row["h"], {})[row["b"]] = row["count"]
    names = list(measures) + (["box_score"] if boxes else [])
    return [_bins(HISTOGRAMS[name], counts.get(name, {})) for name in names]


def duplicate_groups(rejected: DataFrame) -> dict[str, Any]:
    """Sizes of the duplicate groups (winner + the dedup rejects naming it), binned in Spark."""
    spec = DUPLICATE_GROUP_SIZES
    named = (
        rejected.where((F.col("stage") == reasons.DEDUP) & F.col("reason").isin(*DUPLICATE_REASONS))
        .select(
            F.regexp_extract("detail", WINNER_PATTERN, 1).alias("winner_id"),
            F.regexp_extract("detail", WINNER_PATTERN, 2).alias("winner_dump"),
        )
        .where(F.col("winner_id") != "")
    )
    sizes = named.groupBy("winner_id", "winner_dump").agg((F.count(F.lit(1)) + 1).alias("size"))
    rows = (
        sizes.groupBy(bin_index(F.col("size"), spec).alias("b"))
        .agg(F.count(F.lit(1)).alias("groups"), F.sum("size").alias("rows"), F.max("size").alias("max_size"))
        .collect()
    )
    out = _bins(spec, {r["b"]: r["groups"] for r in rows})
    out["groups"] = sum(r["groups"] for r in rows)
    out["rows"] = sum(r["rows"] for r in rows)
    out["max_size"] = max((r["max_size"] for r in rows), default=0)
    return out


def _cut(name: str) -> list[Column]:
    return [F.substring(F.col(name), 1, SAMPLE_CHARS).alias(name), F.length(F.col(name)).alias(f"{name}_chars")]


def sample_rejects(
    rejected: DataFrame, reason_counts: dict[tuple[str, str], int], per_reason: int = SAMPLES_PER_REASON
) -> list[dict[str, Any]]:
    """Up to ``per_reason`` rejected rows per (stage, reason), deterministic, at most a few hundred collected."""
    if per_reason <= 0 or not reason_counts:
        return []
    u = F.pmod(F.xxhash64("stage", "reason", "id", "url"), F.lit(_HASH_RANGE)) / F.lit(float(_HASH_RANGE))
    keep = None
    for (stage, reason), n in reason_counts.items():
        share = min(1.0, OVERSAMPLE * per_reason / max(n, 1))
        hit = (F.col("stage") == stage) & (F.col("reason") == reason)
        keep = F.when(hit, F.lit(share)) if keep is None else keep.when(hit, F.lit(share))
    picked = rejected.select("stage", "reason", "id", "dump", "url", "caption", "detail").withColumn("_u", u)
    picked = picked.where(F.col("_u") < keep.otherwise(F.lit(0.0)))
    rank = F.row_number().over(Window.partitionBy("stage", "reason").orderBy("_u", "id"))
    rows = (
        picked.withColumn("_rank", rank)
        .where(F.col("_rank") <= per_reason)
        .select("stage", "reason", "_rank", "id", "dump", *_cut("url"), *_cut("caption"), *_cut("detail"))
        .collect()
    )
    stage_order = {s: i for i, s in enumerate(reasons.STAGES)}
    groups: dict[tuple[str, str], list] = {key: [] for key in reason_counts}
    for row in sorted(rows, key=lambda r: (r["stage"], r["reason"], r["_rank"])):
        groups.setdefault((row["stage"], row["reason"]), []).append(
            {k: row[k] for k in row.asDict() if k not in ("stage", "reason", "_rank")}
        )
    ordered = sorted(groups, key=lambda key: (stage_order.get(key[0], len(stage_order)), key[0], key[1]))
    return [
        {
            "stage": stage,
            "reason": reason,
            "count": reason_counts.get((stage, reason), 0),
            "rows": groups[(stage, reason)],
        }
        for stage, reason in ordered
    ]


def report_statistics(
    accepted: DataFrame,
    rejected: DataFrame,
    stages: list[dict[str, Any]],
    per_reason: int = SAMPLES_PER_REASON,
) -> dict[str, Any]:
    """The ``statistics`` block of funnel.json; ``stages`` is the funnel (``StageCounts.as_dict()`` each)."""
    reason_counts = {(s["stage"], reason): n for s in stages for reason, n in s["reasons"].items() if n}
    out: dict[str, Any] = {"histograms": histograms(accepted)}
    if any(s["stage"] == reasons.DEDUP for s in stages):
        out["duplicate_groups"] = duplicate_groups(rejected)
    out["samples"] = {
        "per_reason": per_reason,
        "chars": SAMPLE_CHARS,
        "groups": sample_rejects(rejected, reason_counts, per_reason),
    }
    return out
