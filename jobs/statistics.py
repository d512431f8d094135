"""The report's statistics, computed in Spark: only bin counts, a few sample rows and their
thumbnails reach the driver.

``report_statistics`` is called by the pipeline on the frames it already has
(the accepted pairs, the union of the rejects and the box verdicts, all
filters over the persisted annotated frames of the stages), after the
outputs are written and before those frames are unpersisted, so no stage UDF
runs again. Its parts:

1. histograms over the accepted rows (``HISTOGRAMS``): width, height, aspect
   ratio (long side / short side), caption length in characters, word count,
   and the scores of the ``noun_chunks`` boxes; only the columns present are
   measured. The bins come from the data: one small job finds each measure's
   smallest and largest value, ``data_edges`` turns them into at most
   ``MAX_BINS`` bins (round linear steps, or log-spaced when the values span
   ``LOG_RATIO`` or more), widened to the published bounds of the run's config
   within ``BOUND_REACH``; a second job counts the rows per bin with one
   ``groupBy(name, bin)``: a few dozen rows are collected.
2. duplicate-group sizes: a dedup reject names its winner in ``detail``
   (``duplicate of id 7 (dump 2026-01)``, ``duplicate of accepted id ...``,
   ``near-duplicate of id ...``); a group is the winner and every reject that
   names it, so its size is 1 + those rejects. Sizes are binned in Spark.
3. samples, deterministic by id: ``GALLERY_ACCEPTED`` accepted rows and
   ``GRIT_SAMPLE`` grounded ones with the smallest hash of their id (a top-n:
   each partition keeps n rows, no shuffle of the data), and up to
   ``per_reason`` rejected rows per (stage, reason), the rows with the
   smallest hash of (stage, reason, id, url). Knowing each reason's count
   from the funnel, a reject is first kept with probability about
   ``8 * per_reason / count`` (one filter over the rejects: no shuffle of all
   of them), then a window over that small remainder ranks them. URL, caption
   and detail are cut to ``SAMPLE_CHARS`` characters in Spark, their full
   lengths kept. A sampled row with image bytes gets a thumbnail made on the
   executors (``udfs.image.thumbnail``: at most 128 px and 12 KB; 256 px and
   40 KB for the GRIT view); all of them within ``IMAGE_BUDGET`` characters
   of base64, past which rows are shown as text.
4. dumps over time: per committed dump, from the commit markers (the earlier
   runs' and this run's), rows in, accepted and rejected per stage and reason.

The result is the ``statistics`` block of ``funnel.json`` and the thumbnails
(base64, by key) that only the page holds; jobs.report draws both.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, NumericType

from jobs.report import bin_labels
from schemas import reasons
from udfs.image_udfs import thumbnail_udf

SAMPLES_PER_REASON = 5
SAMPLE_CHARS = 300
GALLERY_ACCEPTED = 24  # accepted pairs in the gallery
GRIT_SAMPLE = 8  # grounded pairs drawn with their boxes
GRIT_OTHERS = 2  # suppressed and below-score boxes drawn per pair, each
SHOWN_OUTCOMES = ("suppressed", "below-score")
DUMPS_SHOWN = 60  # the last dumps by name in "Dumps over time"
# Thumbnails: at most 128 px a side and 12 KB of JPEG in the galleries, 256 px and 40 KB in the GRIT
# view; all of them within IMAGE_BUDGET characters of base64 (past it, rows are shown as text).
THUMBNAIL_SIDE, THUMBNAIL_BYTES = 128, 12_000
GRIT_SIDE, GRIT_BYTES = 256, 40_000
IMAGE_BUDGET = 4_000_000
BYTES_COLUMNS = ("image", "image_input")
GRIT_CAPTION_CHARS = 1000  # a GRIT view caption is kept whole up to text.max_chars' default
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
    """Bins ``[edges[i], edges[i+1])``; with ``open_end`` one more bin for ``>= edges[-1]``,
    otherwise the last bin is closed (``<= edges[-1]``). ``integer``: values are whole numbers
    (labels say ``0–99`` rather than ``0–100``). ``bounds``: the config keys (``section.key``)
    whose values are drawn as lines, when their stage ran. The histograms of ``HISTOGRAMS``
    get their edges from the data (``data_edges``); ``scale`` says how."""

    name: str
    title: str
    edges: tuple[float, ...] = (0.0, 1.0)
    open_end: bool = False
    integer: bool = False
    unit: str = "rows"
    note: str = ""
    bounds: tuple[str, ...] = ()
    scale: str = "linear"

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1 + (1 if self.open_end else 0)


def even_edges(lo: float, step: float, n: int) -> tuple[float, ...]:
    """``n + 1`` edges from ``lo`` by ``step``, rounded so 1.0 + 3 * 0.1 is 1.3."""
    return tuple(round(lo + i * step, 9) for i in range(n + 1))


MAX_BINS = 20
# Log-spaced bins when the largest value is this many times the smallest (positive) one: sizes
# and caption lengths of web data spread over decades, and linear bins would put most rows in one.
LOG_RATIO = 20.0
# A published bound is drawn inside the axis when it is within this factor of the data's range
# (text.max_chars = 1000 beside captions of 40 characters would squeeze every bar into one).
BOUND_REACH = 4.0

HISTOGRAMS = {
    "width": HistogramSpec("width", "Width (pixels)", integer=True, bounds=("image.min_side",)),
    "height": HistogramSpec("height", "Height (pixels)", integer=True, bounds=("image.min_side",)),
    "aspect_ratio": HistogramSpec(
        "aspect_ratio", "Aspect ratio (long side / short side)", bounds=("image.max_aspect_ratio",)
    ),
    "caption_length": HistogramSpec(
        "caption_length", "Caption length (characters)", integer=True, bounds=("text.min_chars", "text.max_chars")
    ),
    "word_count": HistogramSpec("word_count", "Word count", integer=True, bounds=("text.min_words", "text.max_words")),
    "box_score": HistogramSpec(
        "box_score",
        "Box scores (noun_chunks)",
        unit="boxes",
        note="One count per box of the accepted rows' noun_chunks (the score is each entry's 7th value).",
        bounds=("ground.min_score",),
    ),
}
DUPLICATE_GROUP_SIZES = HistogramSpec(
    "duplicate_groups",
    "Duplicate group sizes",
    (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 21, 51, 101, 1001, 10001),
    open_end=True,
    integer=True,
    unit="groups",
)


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is at least ``raw`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return round(factor * power, 12)
    return 10.0 * power


def _significant(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def data_edges(lo: float, hi: float, integer: bool, bins: int = MAX_BINS) -> tuple[tuple[float, ...], str]:
    """(edges, scale) for values in ``[lo, hi]``: geometric edges (rounded to 3 significant digits)
    when ``hi / lo >= LOG_RATIO``, else linear ones with a round step; at most ``bins`` bins, every
    value inside (integer edges end above ``hi``, so the labels ``a–b`` hold whole values)."""
    if lo > 0 and hi / lo >= LOG_RATIO:
        raw = [lo * (hi / lo) ** (i / bins) for i in range(bins + 1)]
        if integer:
            inner = [float(round(x)) for x in raw[1:-1]]
            edges = sorted({float(math.floor(lo)), *inner, float(math.floor(hi)) + 1})
        else:
            edges = sorted({_significant(x) for x in raw[1:-1]} | {lo, hi})
        return tuple(edges), "log"
    step = nice_step((hi - lo) / bins) if hi > lo else (1.0 if integer else nice_step(max(abs(lo), 1.0) / 10))
    while True:  # the rounded start (and an integer's end above ``hi``) can take a bin more: a wider step
        if integer:
            step = max(1.0, math.ceil(step))
        start = math.floor(lo / step) * step
        n = math.floor((hi - start) / step) + 1 if integer else max(1, math.ceil((hi - start) / step - 1e-9))
        if not integer and start + n * step < hi:
            n += 1
        if n <= bins:
            break
        step = nice_step(step * 1.01)
    return even_edges(start, step, n), "linear"


def bound_values(spec: HistogramSpec, config: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The spec's bounds whose stage ran, with their values from the run's config (``Config.to_dict()``)."""
    if not config:
        return []
    out = []
    for key in spec.bounds:
        section, name = key.split(".")
        if section not in config["run"]["stages"]:
            continue
        if section == "text" and config["text"].get("language") == "zh":
            section = "text_zh"  # the Chinese rule set's own lengths and word counts
        if name in config.get(section, {}):
            out.append({"key": f"{section}.{name}", "value": float(config[section][name])})
    return out


def axis_range(lo: float, hi: float, bounds: list[dict[str, Any]]) -> tuple[float, float]:
    """``[lo, hi]`` widened to the bounds within ``BOUND_REACH`` of it."""
    for b in bounds:
        v = b["value"]
        if lo > 0 and lo / BOUND_REACH <= v <= hi * BOUND_REACH:
            lo, hi = min(lo, v), max(hi, v)
    return lo, hi


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


def _bins(spec: HistogramSpec, counts: dict[int, int], bounds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
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
        "scale": spec.scale,
        "bounds": bounds or [],
        "bins": [
            {"lo": lo, "hi": hi, "label": label, "count": counts.get(i, 0)}
            for i, (lo, hi, label) in enumerate(zip(los, his, labels, strict=True))
        ],
        "nulls": counts.get(NULL_BIN, 0),
        "outside": counts.get(OUTSIDE_BIN, 0),
    }


def _measured(accepted: DataFrame) -> DataFrame | None:
    """One row ``(h, x)`` per measured value: the histogram's name and the value (a double)."""
    measures = row_measures(accepted.columns, accepted.schema)
    parts = []
    if measures:
        entries = [F.struct(F.lit(name).alias("h"), col.cast("double").alias("x")) for name, col in measures.items()]
        parts.append(accepted.select(F.explode(F.array(*entries)).alias("e")).select("e.h", "e.x"))
    if has_box_scores(accepted.schema):
        chunk = F.explode(F.col("noun_chunks")).alias("c")
        score = F.try_element_at(F.col("c"), F.lit(7)).cast("double")
        parts.append(accepted.select(chunk).select(F.lit("box_score").alias("h"), score.alias("x")))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


def histograms(accepted: DataFrame, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All histograms of the accepted rows, their bins from the data: one small job for each
    measure's smallest and largest value, one for the bin counts (a few dozen rows collected)."""
    values = _measured(accepted)
    if values is None:
        return []
    names = [n for n in HISTOGRAMS if n in row_measures(accepted.columns, accepted.schema)]
    names += ["box_score"] if has_box_scores(accepted.schema) else []
    # Infinities do not set the range (they are counted outside the bins).
    valid = values.where(F.col("x").isNotNull() & ~F.isnan("x") & (F.abs("x") < F.lit(float("inf"))))
    ranges = {
        r["h"]: (r["lo"], r["hi"])
        for r in valid.groupBy("h").agg(F.min("x").alias("lo"), F.max("x").alias("hi")).collect()
    }
    specs, bounds = {}, {}
    for name in names:
        spec = HISTOGRAMS[name]
        bounds[name] = bound_values(spec, config)
        if name in ranges:
            lo, hi = axis_range(*ranges[name], bounds[name])
            edges, scale = data_edges(lo, hi, spec.integer)
            spec = dataclasses.replace(spec, edges=edges, scale=scale)
        specs[name] = spec
    index = F.lit(NULL_BIN)
    for name, spec in specs.items():
        index = F.when(F.col("h") == name, bin_index(F.col("x"), spec)).otherwise(index)
    counts: dict[str, dict[int, int]] = {}
    for row in values.groupBy("h", index.alias("b")).count().collect():
        counts.setdefault(row["h"], {})[row["b"]] = row["count"]
    return [_bins(specs[name], counts.get(name, {}), bounds[name]) for name in names]


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


def image_bytes(frame: DataFrame) -> Column:
    """The row's image bytes: the kept image (``image``), else an img2dataset input's (``image_input``)."""
    present = [
        F.col(c) for c in BYTES_COLUMNS if c in frame.columns and isinstance(frame.schema[c].dataType, BinaryType)
    ]
    if not present:
        return F.lit(None).cast(BinaryType())
    return present[0] if len(present) == 1 else F.coalesce(*present)


class Images:
    """The thumbnails a report shows, as base64 JPEG keyed by name, within ``budget`` characters
    of base64 in all: past it a row is shown as text (the page stays a few MB)."""

    def __init__(self, budget: int = IMAGE_BUDGET) -> None:
        self.budget = budget
        self.used = 0
        self.data: dict[str, str] = {}

    def add(self, key: str, thumb: Any) -> dict[str, Any] | None:
        """``{"key", "width", "height"}`` of a collected ``THUMBNAIL_TYPE`` value, or None (none, or over budget)."""
        if thumb is None:
            return None
        text = base64.b64encode(thumb["data"]).decode("ascii")
        if self.used + len(text) > self.budget:
            return None
        self.used += len(text)
        self.data[key] = text
        return {"key": key, "width": thumb["width"], "height": thumb["height"]}


def _hash_order(*columns: str) -> Column:
    return F.pmod(F.xxhash64(*columns), F.lit(_HASH_RANGE)) / F.lit(float(_HASH_RANGE))


def sample_accepted(accepted: DataFrame, images: Images, n: int = GALLERY_ACCEPTED) -> list[dict[str, Any]]:
    """The ``n`` accepted rows with the smallest hash of their id (a top-n per partition, then on
    the driver: no shuffle of the data), with a thumbnail made on the executors when the row has bytes."""
    if n <= 0:
        return []
    sizes = [c for c in ("width", "height") if c in accepted.columns]
    picked = (
        accepted.select("id", "dump", *_cut("url"), *_cut("caption"), *sizes, image_bytes(accepted).alias("_bytes"))
        .withColumn("_u", _hash_order("id"))
        .orderBy("_u", "id")
        .limit(n)
    )
    thumb = thumbnail_udf(THUMBNAIL_SIDE, THUMBNAIL_BYTES)(F.col("_bytes")).alias("_thumb")
    rows = picked.select("_u", *[c for c in picked.columns if c not in ("_bytes", "_u")], thumb).collect()
    out = []
    for row in sorted(rows, key=lambda r: (r["_u"], r["id"])):
        item = {k: v for k, v in row.asDict().items() if not k.startswith("_")}
        item["thumbnail"] = images.add(f"accepted-{len(out)}", row["_thumb"])
        out.append(item)
    return out


def sample_rejects(
    rejected: DataFrame,
    reason_counts: dict[tuple[str, str], int],
    per_reason: int = SAMPLES_PER_REASON,
    images: Images | None = None,
) -> list[dict[str, Any]]:
    """Up to ``per_reason`` rejected rows per (stage, reason), deterministic, at most a few hundred
    collected; with ``images``, a thumbnail of each row that has image bytes."""
    if per_reason <= 0 or not reason_counts:
        return []
    u = _hash_order("stage", "reason", "id", "url")
    keep = None
    for (stage, reason), n in reason_counts.items():
        share = min(1.0, OVERSAMPLE * per_reason / max(n, 1))
        hit = (F.col("stage") == stage) & (F.col("reason") == reason)
        keep = F.when(hit, F.lit(share)) if keep is None else keep.when(hit, F.lit(share))
    columns = ["stage", "reason", "id", "dump", "url", "caption", "detail"]
    picked = rejected.select(*columns, image_bytes(rejected).alias("_bytes")).withColumn("_u", u)
    picked = picked.where(F.col("_u") < keep.otherwise(F.lit(0.0)))
    rank = F.row_number().over(Window.partitionBy("stage", "reason").orderBy("_u", "id"))
    thumb = thumbnail_udf(THUMBNAIL_SIDE, THUMBNAIL_BYTES)(F.col("_bytes")) if images else F.lit(None)
    rows = (
        picked.withColumn("_rank", rank)
        .where(F.col("_rank") <= per_reason)
        .select(
            "stage",
            "reason",
            "_rank",
            "id",
            "dump",
            *_cut("url"),
            *_cut("caption"),
            *_cut("detail"),
            thumb.alias("_thumb"),
        )
        .collect()
    )
    stage_order = {s: i for i, s in enumerate(reasons.STAGES)}
    groups: dict[tuple[str, str], list] = {key: [] for key in reason_counts}
    for row in sorted(rows, key=lambda r: (r["stage"], r["reason"], r["_rank"])):
        item = {k: row[k] for k in row.asDict() if k not in ("stage", "reason", "_rank", "_thumb")}
        if images is not None:
            item["thumbnail"] = images.add(f"rejected-{row['stage']}-{row['reason']}-{row['_rank']}", row["_thumb"])
        groups.setdefault((row["stage"], row["reason"]), []).append(item)
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


def _unit_box(box: Any, row: Any, pixels: bool) -> list[float] | None:
    """A box verdict's corners normalised to [0, 1] (pixel boxes by the row's width and height)."""
    corners = [box["x_min"], box["y_min"], box["x_max"], box["y_max"]]
    if any(c is None or not math.isfinite(c) for c in corners):
        return None
    if pixels:
        width, height = row.get("width"), row.get("height")
        if not width or not height:
            return None
        corners = [corners[0] / width, corners[1] / height, corners[2] / width, corners[3] / height]
    return [min(1.0, max(0.0, float(c))) for c in corners]


def _others(verdicts: DataFrame, keys: list[tuple[int, str]], per_pair: int) -> dict[tuple[int, str], list]:
    """Up to ``per_pair`` boxes per outcome in ``SHOWN_OUTCOMES`` (the best-scored) of the sampled pairs."""
    ids = sorted({k[0] for k in keys})
    rank = F.row_number().over(Window.partitionBy("id", "dump", "outcome").orderBy(F.desc("score"), "start", "x_min"))
    rows = (
        verdicts.where(F.col("id").isin(ids) & F.col("outcome").isin(*SHOWN_OUTCOMES))
        .withColumn("_rank", rank)
        .where(F.col("_rank") <= per_pair)
        .collect()
    )
    out: dict[tuple[int, str], list] = {}
    for row in sorted(rows, key=lambda r: (r["outcome"], r["_rank"])):
        out.setdefault((row["id"], row["dump"]), []).append(row)
    return out


def sample_grounded(
    accepted: DataFrame,
    verdicts: DataFrame | None,
    images: Images,
    pixels: bool = False,
    n: int = GRIT_SAMPLE,
    per_pair: int = GRIT_OTHERS,
) -> list[dict[str, Any]]:
    """``n`` grounded pairs, deterministic by id: caption, GRIT columns, image, and a few of their
    suppressed and below-score boxes from the box verdicts (``verdicts``). Up to half of them are
    the pairs with the smallest hash among those that have such boxes, the rest the smallest of all."""
    if n <= 0 or not has_box_scores(accepted.schema) or "ref_exps" not in accepted.columns:
        return []
    sizes = [c for c in ("width", "height") if c in accepted.columns]
    columns = ["id", "dump", "caption", "noun_chunks", "ref_exps", *sizes]
    grounded = (
        accepted.where(F.size("noun_chunks") > 0)
        .select(*columns, image_bytes(accepted).alias("_bytes"))
        .withColumn("caption", F.substring("caption", 1, GRIT_CAPTION_CHARS))  # the text rules' cap
        .withColumn("_u", _hash_order("id"))
    )
    picked = grounded.orderBy("_u", "id").limit(n).withColumn("_flagged", F.lit(False))
    if verdicts is not None:
        marked = verdicts.where(F.col("outcome").isin(*SHOWN_OUTCOMES)).select("id", "dump").distinct()
        flagged = grounded.join(marked, ["id", "dump"], "left_semi").orderBy("_u", "id").limit(n // 2)
        picked = picked.unionByName(flagged.withColumn("_flagged", F.lit(True)))
    thumb = thumbnail_udf(GRIT_SIDE, GRIT_BYTES)(F.col("_bytes")).alias("_thumb")
    collected = picked.select("_u", "_flagged", *columns, thumb).collect()
    chosen = {(r["id"], r["dump"]): r for r in collected if r["_flagged"]}
    for row in sorted((r for r in collected if not r["_flagged"]), key=lambda r: (r["_u"], r["id"])):
        if len(chosen) < n:
            chosen.setdefault((row["id"], row["dump"]), row)
    rows = sorted(chosen.values(), key=lambda r: (r["_u"], r["id"]))
    others = _others(verdicts, [(r["id"], r["dump"]) for r in rows], per_pair) if verdicts is not None and rows else {}
    out = []
    for row in rows:
        item = {k: v for k, v in row.asDict().items() if not k.startswith("_")}
        item["thumbnail"] = images.add(f"grit-{len(out)}", row["_thumb"])
        item["others"] = []
        for box in others.get((row["id"], row["dump"]), []):
            corners = _unit_box(box, item, pixels)
            if corners is not None:
                item["others"].append(
                    {
                        "outcome": box["outcome"],
                        "start": box["start"],
                        "end": box["end"],
                        "box": corners,
                        "score": box["score"],
                    }
                )
        out.append(item)
    return out


def _final_stage(stages: dict[str, Any]) -> str | None:
    order = [s for s in reasons.STAGES if s in stages] + sorted(s for s in stages if s not in reasons.STAGES)
    return order[-1] if order else None


def dumps_over_time(markers: dict[str, dict[str, Any]], shown: int = DUMPS_SHOWN) -> list[dict[str, Any]]:
    """Per committed dump (the last ``shown`` by name): rows in, accepted, committed when and by
    which run, rejected per stage and reason, from the commit markers (``_commits/dump=<name>.json``).
    A marker written before winnow recorded reasons per dump has counts per stage only."""
    out = []
    for dump in sorted(markers, key=lambda d: (d is None, d or ""))[-shown:]:
        marker = markers[dump]
        stages = marker.get("stages", {})
        last = _final_stage(stages)
        first = stages.get(reasons.INGEST) or (stages[last] if last else {})
        out.append(
            {
                "dump": dump,
                "run_id": marker.get("run_id"),
                "committed_at": marker.get("committed_at"),
                "rows_in": first.get("accepted", 0) + first.get("rejected", 0),
                "accepted": stages[last]["accepted"] if last else 0,
                "rejected": {s: c.get("rejected", 0) for s, c in stages.items() if c.get("rejected")},
                "reasons": marker.get("reasons"),
            }
        )
    return out


def report_statistics(
    accepted: DataFrame,
    rejected: DataFrame,
    stages: list[dict[str, Any]],
    per_reason: int = SAMPLES_PER_REASON,
    config: dict[str, Any] | None = None,
    verdicts: DataFrame | None = None,
    markers: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the ``statistics`` block of funnel.json, the thumbnails it names as base64 JPEG).

    ``stages`` is the funnel (``StageCounts.as_dict()`` each), ``config`` the run's
    (``Config.to_dict()``: the bounds drawn on the histograms), ``verdicts`` the box verdicts
    (ground stage), ``markers`` every committed dump's marker, this run's included."""
    reason_counts = {(s["stage"], reason): n for s in stages for reason, n in s["reasons"].items() if n}
    images = Images()
    out: dict[str, Any] = {"histograms": histograms(accepted, config)}
    if any(s["stage"] == reasons.DEDUP for s in stages):
        out["duplicate_groups"] = duplicate_groups(rejected)
    # GRIT first: its pictures matter most to a grounding run when the budget is tight.
    grounded = sample_grounded(
        accepted, verdicts, images, bool(config and config.get("ground", {}).get("boxes_in_pixels"))
    )
    out["gallery"] = {"size": GALLERY_ACCEPTED, "rows": sample_accepted(accepted, images)}
    out["samples"] = {
        "per_reason": per_reason,
        "chars": SAMPLE_CHARS,
        "groups": sample_rejects(rejected, reason_counts, per_reason, images),
    }
    if grounded:
        out["grounded"] = {"size": GRIT_SAMPLE, "others_per_outcome": GRIT_OTHERS, "rows": grounded}
    if markers:
        out["dumps"] = dumps_over_time(markers)
    out["images"] = {"count": len(images.data), "base64_chars": images.used, "budget": images.budget}
    return out, images.data
