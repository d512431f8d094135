"""Grounding stage (GRIT / Kosmos-2 section 2): noun chunks x detector boxes -> GRIT columns.

Reads two inputs: the accepted pairs of the earlier stages (``id``,
``caption``, the text stage's ``noun_chunk_spans`` / ``ref_exp_spans``, and
``width`` / ``height`` when the image stage ran) and the Boxes table
(``schemas.tables.BOXES``, one detector box per row, ``read_boxes``). Writes
every pair row once, with the GRIT release columns ``noun_chunks`` and
``ref_exps`` (lists of ``[start, end, x_min, y_min, x_max, y_max, score]``,
aligned 1:1, sorted by score, highest first) or a reject, and one verdict per
box row (``schemas.tables.BOX_VERDICT``).

What happens to one pair's boxes, in order:

1. ``udfs.grounding.check_box`` on every box, against the caption's length
   (Python characters, the offsets spaCy and ``parse_spans`` write) and, with
   ``ground.boxes_in_pixels``, the image's ``width`` / ``height`` (rows without
   them reject pixel boxes as ``box-no-image-size``). A malformed box (span
   outside the caption, bad score, NaN, outside the image, inverted or empty)
   is a box reject with its ``box-*`` code; it never fails the job or the pair.
2. Of the valid boxes, the ``udfs.grounding.MAX_BOXES_PER_ROW`` best-scored are grounded; the
   rest are ``box-too-many`` (greedy NMS is quadratic in the boxes of a row).
3. ``udfs.grounding.ground``: abstract-noun chunks (root lemma), boxes on no
   chunk's span, score not above ``ground.min_score``, greedy NMS across all
   boxes of the image whatever their chunk (``ground.nms_iou``: GRIT does not
   publish it; that module's docstring says why its default), then with
   ``ground.drop_contained`` Kosmos-2's drop of expressions inside another one.
   Each box that passed 1 and 2 gets an ``outcome``: kept, abstract,
   unmatched, below-score, suppressed or contained.
4. A pair with no kept box is rejected ``no-grounding`` (``detail`` counts its
   boxes per outcome and reason); ``ground-error`` when its spans do not fit its
   caption (an inconsistent input, not a crash).

Boxes whose id no pair has become ``box-no-pair``. Box verdicts are not pair
rejects: they are the second output of ``with_ground_verdicts``, one row per
row of the Boxes table (``schemas.tables.BOX_VERDICT``), and their codes are
``schemas.reasons.BOX_REASONS``.

Pair ids are expected unique (COYO's and GRIT's are): the Boxes table is keyed
by ``id`` alone, so when an id repeats each of its pair rows is grounded with
all of its boxes and ``box_verdicts`` holds those boxes once per such row.

Where the boxes come from (``GroundStage``): the Boxes table (``--boxes``,
``ground.boxes``), a detector run in this job over the kept images
(``ground.detector``), or a GRIT release's own ``noun_chunks``
(``ground.grit_input``). Its config is ``[ground]``
(``udfs.grounding.GroundConfig``); the box verdicts are committed per dump as
the ``boxes`` part, and counted in funnel.json's ``boxes``.

Performance shape: one aggregation (the boxes grouped per ``id`` into a list of
structs; ``collect_list`` is a map-side partial aggregate, so an image with many
boxes becomes one row instead of a sorted group), one left join of that onto the
pairs by ``id`` (adaptive execution broadcasts a small boxes side and splits a
skewed partition), and one ``mapInArrow`` that checks each row's boxes and
grounds the row in Python (``udfs.grounding.judge_row``), in Arrow batches of
``spark.sql.execution.arrow.maxRecordsPerBatch`` rows (``run.arrow_batch_size``).
The box verdicts of pairs are exploded from that annotated frame (stored once,
as every stage's is, so the Python pass runs once); boxes without a pair are
found by a left anti join with the pairs' ids, in SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_type
from pyspark.sql.types import (
    ArrayType,
    ByteType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
)

from jobs.errors import ConservationError, WinnowError, require
from jobs.session import session_conf
from jobs.stage import Rule, Stage, accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import BOX_VERDICT, BOXES, DETECTED, GRIT_COLUMNS, col_ref
from udfs import detectors
from udfs.grounding import GroundConfig, judge_row

log = logging.getLogger("winnow")

STAGE = reasons.GROUND

# Working columns, dropped before the stage's outputs.
_BOXES, _VERDICTS = "_ground_boxes", "_ground_box_verdicts"
_BOX_FIELDS = [f.name for f in BOXES.fields if f.name != "id"]
# What the Arrow pass writes per box: the input box, then the verdict.
_VERDICT_STRUCT = StructType(
    [StructField(f.name, f.dataType, True) for f in BOX_VERDICT.fields if f.name not in ("id", "dump")]
)
_ADDED = GRIT_COLUMNS + [
    StructField("reason", StringType(), True),
    StructField("detail", StringType(), True),
    StructField(_VERDICTS, ArrayType(_VERDICT_STRUCT, False), True),
]

_INTEGRAL = (ByteType, ShortType, IntegerType, LongType)
_NUMERIC = (*_INTEGRAL, FloatType, DoubleType, DecimalType)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class GroundError(WinnowError):
    """The stage cannot run on these inputs; the message names the column or path."""


# --- the Boxes table -------------------------------------------------------------------


def _grit_entries(pairs: DataFrame, column: str) -> F.Column:
    """The row's GRIT column as array<array<double>>; a clear error when it is missing or not lists."""
    if column not in pairs.columns:
        raise GroundError(
            f"ground.grit_input needs the GRIT column {column!r} in the pairs (read a GRIT parquet with "
            f"--input-format grit; columns: {', '.join(pairs.columns)})"
        )
    kind = pairs.schema[column].dataType
    if not (isinstance(kind, ArrayType) and isinstance(kind.elementType, ArrayType)):
        raise GroundError(f"GRIT column {column!r} is {kind.simpleString()}, not a list of lists of numbers")
    return col_ref(column).try_cast("array<array<double>>")


def grit_boxes(pairs: DataFrame) -> DataFrame:
    """The Boxes table of a GRIT release's own ``noun_chunks``: one box per entry
    ``[start, end, x_min, y_min, x_max, y_max, score]`` (a short or non-numeric entry gives nulls,
    which the stage rejects as a malformed box, never a failed job)."""
    entries = pairs.select("id", F.explode(_grit_entries(pairs, "noun_chunks")).alias("_e"))
    at = [F.try_element_at(F.col("_e"), F.lit(i)) for i in range(1, 8)]
    return entries.select(
        "id",
        at[0].try_cast("int").alias("start"),
        at[1].try_cast("int").alias("end"),
        *[at[i + 2].alias(name) for i, name in enumerate(("x_min", "y_min", "x_max", "y_max", "score"))],
    )


def with_grit_spans(pairs: DataFrame) -> DataFrame:
    """``noun_chunk_spans`` / ``ref_exp_spans`` from the release's own ``noun_chunks`` / ``ref_exps``
    (``ground.grit_input = "refilter"``: no parse).

    One chunk per distinct chunk span, aligned with the referring-expression span of its first
    entry (the chunk itself when ``ref_exps`` has no entry there). Without a parse there is no
    lemma: the abstract-noun rule compares the chunk's last word, lower-cased ("the pursuit of
    happiness" -> "happiness"; a plural such as "times" does not match "time").
    """
    chunks = _grit_entries(pairs, "noun_chunks")
    refs = _grit_entries(pairs, "ref_exps") if "ref_exps" in pairs.columns else F.lit(None).cast("array<array<double>>")
    spans = F.transform(
        F.coalesce(chunks, F.array()),
        lambda e, i: F.struct(
            F.try_element_at(e, F.lit(1)).try_cast("int").alias("start"),
            F.try_element_at(e, F.lit(2)).try_cast("int").alias("end"),
            F.coalesce(F.try_element_at(F.try_element_at(refs, i + 1), F.lit(1)), F.try_element_at(e, F.lit(1)))
            .try_cast("int")
            .alias("ref_start"),
            F.coalesce(F.try_element_at(F.try_element_at(refs, i + 1), F.lit(2)), F.try_element_at(e, F.lit(2)))
            .try_cast("int")
            .alias("ref_end"),
        ),
    )
    # First entry per chunk span: a chunk with two boxes appears twice in the release.
    spans = F.filter(F.array_distinct(spans), lambda x: x["start"].isNotNull() & x["end"].isNotNull())
    words = lambda x: F.split(F.lower(F.substring(F.col("caption"), x["start"] + 1, x["end"] - x["start"])), " ")  # noqa: E731
    chunk_spans = F.transform(
        spans,
        lambda x: F.struct(
            x["start"].alias("start"),
            x["end"].alias("end"),
            F.try_element_at(words(x), F.lit(-1)).alias("root_lemma"),
            F.lit("NOUN").alias("root_pos"),
        ),
    )
    ref_spans = F.transform(spans, lambda x: F.struct(x["ref_start"].alias("start"), x["ref_end"].alias("end")))
    return pairs.withColumn("noun_chunk_spans", chunk_spans).withColumn("ref_exp_spans", ref_spans)


def with_detections(pairs: DataFrame, detector_path: str, image_col: str = "image") -> DataFrame:
    """Every pair row once, as ``DETECTED``: what the detector plug-in found in its image for its
    noun chunks (``udfs.detectors.detect_row``), or why it failed."""
    rows = pairs.select(
        col_ref("id").cast("long").alias("id"),
        col_ref("caption").cast("string").alias("caption"),
        col_ref("noun_chunk_spans"),
        col_ref(image_col),
    )
    return rows.mapInArrow(detectors.detect_mapper(detector_path, image_col), DETECTED)


def boxes_table(detected: DataFrame) -> DataFrame:
    """The Boxes table (``BOXES``) of ``with_detections``' rows: one row per box."""
    exploded = detected.select("id", F.explode("boxes").alias("_box"))
    return exploded.select(
        *[(F.col("id") if f.name == "id" else F.col("_box")[f.name]).cast(f.dataType).alias(f.name) for f in BOXES]
    )


def read_boxes(spark: SparkSession, path: str) -> DataFrame:
    """The Boxes table at ``path`` (a parquet file or a folder of them) as ``BOXES``."""
    try:
        frame = spark.read.parquet(path)
    except Exception as exc:  # AnalysisException: missing path, no parquet in it
        raise GroundError(f"boxes {path}: cannot read parquet: {str(exc).splitlines()[0]}") from None
    return conform_boxes(frame, path)


def conform_boxes(frame: DataFrame, source: str = "boxes") -> DataFrame:
    """``frame`` as ``BOXES``: its columns checked, widened, extra columns left out.

    ``id`` (any integer type) becomes long, ``start`` / ``end`` int (a long
    outside the int range becomes null, so the box is ``box-span-invalid``
    rather than an overflow error), the box and score (any number) double.
    """
    types = {f.name: f.dataType for f in frame.schema}
    columns = []
    for target in BOXES.fields:
        name = target.name
        if name not in types:
            raise GroundError(f"boxes {source}: column {name!r} missing (have {', '.join(types)})")
        integral = name in ("id", "start", "end")
        allowed = _INTEGRAL if integral else _NUMERIC
        if not isinstance(types[name], allowed):
            kind = "an integer" if integral else "a number"
            raise GroundError(f"boxes {source}: column {name!r} must be {kind}, got {types[name].simpleString()}")
        column = col_ref(name)
        if name in ("start", "end") and isinstance(types[name], LongType):
            column = F.when(column.between(_INT_MIN, _INT_MAX), column.cast(IntegerType()))
        columns.append(column.cast(target.dataType).alias(name))
    return frame.select(*columns)


# --- the Spark pass ----------------------------------------------------------------------


def ground_mapper(
    rules: GroundConfig, pixels: bool, has_size: bool, arrow_types: list[pa.DataType]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow`` over the joined rows: every row in, the same row
    without ``_ground_boxes`` plus the ``_ADDED`` columns out, one output batch per input batch."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            column = batch.column
            captions = column("caption").to_pylist()
            chunks = column("noun_chunk_spans").to_pylist()
            refs = column("ref_exp_spans").to_pylist()
            widths = column("width").to_pylist() if has_size else [None] * n
            heights = column("height").to_pylist() if has_size else [None] * n
            boxes = column(_BOXES).to_pylist()
            rows = [
                judge_row(captions[i], chunks[i], refs[i], widths[i], heights[i], boxes[i], rules, pixels)
                for i in range(n)
            ]
            values = (
                [r.noun_chunks for r in rows],
                [r.ref_exps for r in rows],
                [r.reason for r in rows],
                [r.detail for r in rows],
                [r.boxes for r in rows],
            )
            kept = batch.drop_columns([_BOXES])
            added = [pa.array(v, type=t) for v, t in zip(values, arrow_types, strict=True)]
            names = kept.schema.names + [f.name for f in _ADDED]
            yield pa.RecordBatch.from_arrays(kept.columns + added, names=names)

    return run


def with_ground_verdicts(pairs: DataFrame, boxes: DataFrame, cfg: GroundConfig) -> tuple[DataFrame, DataFrame]:
    """(every pair row once, with the GRIT columns, ``reason`` and ``detail``; every box row once,
    as ``BOX_VERDICT``).

    The box verdicts of pairs are read from the annotated frame (its working
    column ``_ground_box_verdicts``), so persist it before reading both; the
    verdicts of boxes without a pair come from an anti join, in SQL. An
    input's own ``noun_chunks`` / ``ref_exps`` (a GRIT parquet re-grounded)
    are replaced.
    """
    needed = ["id", "caption", "noun_chunk_spans", "ref_exp_spans"]
    missing = [c for c in needed if c not in pairs.columns]
    if missing:
        raise GroundError(
            f"ground needs the pair columns {', '.join(missing)}: run the text stage before it "
            "(it writes the noun-chunk and referring-expression spans)"
        )
    has_size = "width" in pairs.columns and "height" in pairs.columns
    own = [f.name for f in GRIT_COLUMNS if f.name in pairs.columns]
    rows = pairs.drop(*own)
    boxes = conform_boxes(boxes)

    grouped = boxes.groupBy("id").agg(F.collect_list(F.struct(*_BOX_FIELDS)).alias(_BOXES))
    joined = rows.join(grouped, "id", "left")  # a pair without boxes gets a null list
    # The join puts ``id`` first; the pass keeps the pairs' column order.
    joined = joined.select(*[col_ref(c) for c in rows.columns], _BOXES)
    passed = [StructField(f.name, f.dataType, True) for f in joined.schema.fields if f.name != _BOXES]
    arrow_types = [to_arrow_type(f.dataType) for f in _ADDED]
    mapper = ground_mapper(cfg, cfg.boxes_in_pixels, has_size, arrow_types)
    annotated = joined.mapInArrow(mapper, StructType(passed + _ADDED))
    return annotated, box_verdicts(annotated, pairs, boxes)


def box_verdicts(annotated: DataFrame, pairs: DataFrame, boxes: DataFrame | None) -> DataFrame:
    """Every box row once, as ``BOX_VERDICT``: the verdicts of pairs' boxes from ``annotated``
    (the ground stage's frame, with its working column), then ``boxes`` whose id no pair has
    (None: detections made from these pairs, so none is without a pair)."""
    dump = F.col("dump") if "dump" in pairs.columns else F.lit(None).cast(StringType())
    judged = annotated.select("id", dump.alias("dump"), F.explode(_VERDICTS).alias("_v")).select(
        *[(F.col(f.name) if f.name in ("id", "dump") else F.col("_v")[f.name]).alias(f.name) for f in BOX_VERDICT]
    )
    # Boxes whose id no pair has (null ids match none either; left_anti keeps them).
    verdict = {
        "dump": F.lit(None),
        "reason": F.lit(reasons.BOX_NO_PAIR),
        "outcome": F.lit(None),
        "detail": F.lit("no accepted pair has this id"),
    }
    if boxes is None:
        return judged
    orphans = conform_boxes(boxes).join(pairs.select("id"), "id", "left_anti")
    orphans = orphans.select(*[verdict.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name) for f in BOX_VERDICT])
    return judged.unionByName(orphans)


def split_ground(annotated: DataFrame, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted: the input columns then ``noun_chunks`` / ``ref_exps``; rejected: REJECT + input columns)."""
    grit = {f.name for f in GRIT_COLUMNS}
    columns = [c for c in input_columns if c not in grit]
    fields = [StructField(annotated.schema[c].name, annotated.schema[c].dataType, True) for c in columns]
    accepted = accepted_rows(annotated, StructType(fields + GRIT_COLUMNS), [_VERDICTS])
    return accepted, rejected_rows(annotated, STAGE, columns)


def box_counts(verdicts: DataFrame, boxes_in: int | None) -> dict[str, Any]:
    """Rows of the Boxes table per outcome and per reject reason; every box exactly once
    (``boxes_in`` None: detections, counted as their verdicts)."""
    rows = verdicts.groupBy("reason", "outcome").count().collect()
    if boxes_in is None:
        boxes_in = sum(row["count"] for row in rows)
    out: dict[str, Any] = {"boxes_in": boxes_in, "outcomes": {}, "rejected": {}}
    for row in rows:
        if row["reason"] is None:
            out["outcomes"][row["outcome"]] = row["count"]
        else:
            out["rejected"][row["reason"]] = row["count"]
    total = sum(out["outcomes"].values()) + sum(out["rejected"].values())
    if total != boxes_in:
        raise ConservationError(f"ground: {boxes_in} boxes in, {total} box verdicts")
    return out


def unmatched_ids_warning(counts: dict[str, Any]) -> str | None:
    """A warning when most rows of a Boxes table match no pair: their ids are not the pairs' ids."""
    no_pair, boxes_in = counts["rejected"].get(reasons.BOX_NO_PAIR, 0), counts["boxes_in"]
    if boxes_in == 0 or no_pair * 2 <= boxes_in:
        return None
    return (
        f"{no_pair:,} of {boxes_in:,} boxes match no pair id (box-no-pair): the Boxes table is probably keyed by "
        "other ids than the pairs'. A pair's id is the source's integral id column (coyo, grit: id; parquet, "
        "csv, jsonl: a column named id; --id-col picks another), else a 64-bit hash of its URL; the ids are in "
        "OUTPUT/accepted/"
    )


class GroundStage(Stage):
    """GRIT grounding: noun chunks x boxes (a Boxes table, a detector, or a GRIT release's own)."""

    name = STAGE
    sections = {"ground": GroundConfig}
    rules = (
        Rule(
            "noun chunks whose root lemma is one of `ground.abstract_nouns` are not grounded",
            "GRIT",
            ("ground.abstract_nouns",),
            reasons.NO_GROUNDING,
            "udfs/grounding.py:ground",
            "tests/test_grounding_rules.py::test_abstract_noun_chunks_are_dropped_by_lemma",
        ),
        Rule(
            "keep boxes with score strictly above `ground.min_score`",
            "GRIT",
            ("ground.min_score",),
            reasons.NO_GROUNDING,
            "udfs/grounding.py:ground",
            "tests/test_grounding_rules.py::test_score_must_be_strictly_above_min_score",
        ),
        Rule(
            "greedy NMS across all boxes of an image, even across chunks: IoU above `ground.nms_iou` is suppressed",
            "GRIT (threshold not published)",
            ("ground.nms_iou",),
            reasons.NO_GROUNDING,
            "udfs/grounding.py:nms",
            "tests/test_grounding_rules.py::test_nms_suppresses_across_different_chunks",
        ),
        Rule(
            "each kept chunk expands to its referring expression (the subtree of its root; not with conjuncts)",
            "GRIT",
            (),
            "",
            "udfs/text_rules.py:parse_spans",
            "tests/test_grounding_rules.py::test_conjunct_chunks_keep_the_chunk_as_expression",
        ),
        Rule(
            "Kosmos-2 training: drop expressions contained in another one",
            "Kosmos-2",
            ("ground.drop_contained",),
            reasons.NO_GROUNDING,
            "udfs/grounding.py:_drop_contained",
            "tests/test_grounding_rules.py::test_contained_expressions_dropped_only_in_kosmos_mode",
        ),
        Rule(
            "a pair with no box left is dropped",
            "GRIT",
            (),
            reasons.NO_GROUNDING,
            "udfs/grounding.py:judge_row",
            "tests/test_grounding_rules.py::test_caption_without_chunks_is_no_grounding",
        ),
        Rule(
            "a malformed box (span, score, NaN, outside the image, no area) is a box reject, not a failure",
            "winnow",
            ("ground.boxes_in_pixels",),
            reasons.BOX_SPAN_INVALID,
            "udfs/grounding.py:check_box",
            "tests/test_grounding_rules.py::test_check_box_rejects_malformed_boxes",
        ),
    )
    description = "ground: noun chunks x boxes, NMS, referring expressions"

    def needs(self) -> dict[str, str]:
        g = self.cfg.ground
        needed = {} if g.grit_input == "refilter" else {"text": "it writes the noun-chunk spans"}
        if g.detector.strip():
            needed["image"] = "the detector reads the kept images (image.keep_bytes = true)"
        return needed

    def validate(self) -> None:
        g, stages = self.cfg.ground, self.cfg.run.stages
        sources = [bool(g.boxes.strip()), bool(g.detector.strip()), bool(g.grit_input)]
        require(
            sum(sources) == 1,
            "ground.boxes",
            "the ground stage needs one source of boxes: a Boxes table (--boxes PATH), a detector "
            "(ground.detector) or a GRIT input's own boxes (ground.grit_input)",
        )
        if g.detector.strip():
            require(
                "image" in stages and self.cfg.image.keep_bytes,
                "ground.detector",
                "detecting in the job needs the image stage with image.keep_bytes = true (to read the images)",
            )
        if g.grit_input == "refilter":
            require(
                "text" not in stages,
                "ground.grit_input",
                "refilter uses the release's own spans, which index the caption as published; the text stage "
                "rewrites its whitespace: leave text out of run.stages, or use grit_input = reground",
            )

    def preflight(self) -> None:
        g = self.cfg.ground
        if g.detector:
            try:
                detectors.load_detector(g.detector)  # a bad plug-in path fails here, before any data is read
            except ValueError as exc:
                raise GroundError(f"ground.detector: {exc}") from None
        self.boxes = read_boxes(self.ctx.spark, g.boxes) if g.boxes else None
        self.detected: int | None = None

    def check_source(self, source: DataFrame) -> None:
        if self.cfg.ground.grit_input:
            grit_boxes(source)  # checks the GRIT columns now, not after the other stages ran

    def _pairs_and_boxes(self, frame: DataFrame) -> tuple[DataFrame, DataFrame | None]:
        """The pairs to ground and their boxes (None: to be detected). A GRIT release re-grounded
        brings its own boxes (its noun_chunks) and, to refilter, its chunk and expression spans
        stand in for the text stage's parse."""
        if not self.cfg.ground.grit_input:
            return frame, self.boxes
        pairs = with_grit_spans(frame) if self.cfg.ground.grit_input == "refilter" else frame
        return pairs, grit_boxes(frame)

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        pairs, boxes = self._pairs_and_boxes(frame)
        if boxes is None:
            # Detection over the kept images of the pairs that reach this stage; a row the detector
            # fails on gets no box and is rejected no-grounding (its failure in the detail).
            spark = self.ctx.spark
            spark.sparkContext.setJobDescription(f"detect: {self.cfg.ground.detector} over the kept images")
            with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(detectors.BATCH_ROWS)}):
                boxes = self.ctx.persist(boxes_table(with_detections(pairs, self.cfg.ground.detector)))
                self.detected = boxes.count()
            spark.sparkContext.setJobDescription(self.description)
        return with_ground_verdicts(pairs, boxes, self.cfg.ground)[0]

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        self.annotated, (self.pairs, self.own_boxes) = annotated, self._pairs_and_boxes(frame)
        return split_ground(annotated, self.pairs.columns)

    def part_paths(self) -> dict[str, str]:
        return {"boxes": f"{self.ctx.output}/boxes"}

    def parts(self, accepted: DataFrame) -> dict[str, DataFrame]:
        # Detected boxes come from these pairs, so each has a pair; a Boxes table's may not.
        verdicts = self.ctx.persist(box_verdicts(self.annotated, self.pairs, self.own_boxes))
        # Boxes in: the table's rows, or the detections (None when the stage came from its checkpoint:
        # then the verdicts are what the detections were).
        boxes_in = conform_boxes(self.own_boxes).count() if self.own_boxes is not None else self.detected
        self.counts = box_counts(verdicts, boxes_in)
        warning = unmatched_ids_warning(self.counts) if self.boxes is not None else None
        if warning:
            log.warning("ground: %s", warning)
            self.counts["warning"] = warning
        return {"boxes": verdicts}

    def report(self) -> dict[str, Any]:
        return {"boxes": self.counts}
