"""Detector job: accepted pairs with their images -> the Boxes table, through a plug-in detector.

Reads parquet of accepted pairs as ``winnow run`` writes them (``OUTPUT/accepted``):
``id``, ``caption``, ``noun_chunk_spans`` (the text stage) and the image bytes in
``image`` (``--image-col``), which the image stage keeps only with
``--set image.keep_bytes=true``; without that column the job refuses to start.

For each row the image is decoded once (Pillow), the phrases are the caption cut
at each noun chunk (``caption[start:end]``), and the detector named by
``--detector package.module:callable`` (``udfs.detectors``' contract and
``load_detector``) is called once with the image and all its phrases. Each box it
returns becomes one Boxes-table row (``schemas.tables.BOXES``: ``id``, the
chunk's ``start`` / ``end``, the normalised box and score). The detector is
imported once per Python worker (``get_detector``, cached by its path) and
called in a ``mapInArrow`` over Arrow batches of ``BATCH_ROWS`` rows (each row
carries an image).

Nothing is dropped silently. Every input row is counted once as

- with boxes: the detector returned at least one box for one of its phrases;
- without boxes: no noun chunk, or no box for any of them (the image is not
  decoded when there is no phrase to look for);
- failed, with a reason: ``image-missing`` (null bytes), ``image-undecodable``,
  ``image-too-many-pixels`` (above the image stage's default pixel limit, from
  the header), ``span-invalid`` (a chunk outside its caption, or no caption),
  ``id-missing`` (a box could not be joined to its pair), ``detector-error``
  (the detector raised on this row) and ``detector-bad-output`` (not one list
  per phrase, or a box that ``udfs.grounding.check_box`` refuses: the row's
  boxes are then all left out, since the detector broke its contract on it).

rows read = with boxes + without boxes + failed is checked before anything is
written (exit 3 otherwise). Writes::

    OUTPUT/part-*.parquet           the Boxes table (schemas.tables.BOXES), replaced on every run
    OUTPUT/_winnow_detect.json      counts, failures per reason with up to 20 example ids; written last

The per-row results are persisted once (memory and disk; they hold boxes, not
images), so each image is decoded and detected once for both the counts and the
written boxes.

    winnow detect --input OUTPUT/accepted --output OUTPUT/boxes --detector udfs.detectors:shape_detector
    spark-submit jobs/detect.py --input ... --output ... --detector mypkg.owl:detector
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from PIL import Image
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_type
from pyspark.sql.types import ArrayType, BinaryType, LongType, StringType, StructField, StructType

from jobs import __version__
from jobs.session import JavaMissing, get_spark, session_conf
from jobs.stage import ConservationError
from schemas import reasons
from schemas.tables import BOXES, col_ref
from udfs.detectors import Detector, load_detector
from udfs.grounding import check_box
from udfs.image import ImageRules

log = logging.getLogger("winnow")

MANIFEST = "_winnow_detect.json"
MAX_EXAMPLES = 20
# Rows per Arrow batch into the detector: each row carries a whole image.
BATCH_ROWS = 16
DEFAULT_IMAGE_COL = "image"
REQUIRED = ("id", "caption", "noun_chunk_spans")
# The image stage's default limit: a decompression bomb is refused from its header.
MAX_PIXELS = ImageRules().max_pixels

# Why a row failed (beyond schemas.reasons' image codes).
SPAN_INVALID = "span-invalid"
ID_MISSING = "id-missing"
DETECTOR_ERROR = "detector-error"
DETECTOR_BAD_OUTPUT = "detector-bad-output"
FAILURE_REASONS = (
    reasons.IMAGE_MISSING,
    reasons.UNDECODABLE,
    reasons.TOO_MANY_PIXELS,
    SPAN_INVALID,
    ID_MISSING,
    DETECTOR_ERROR,
    DETECTOR_BAD_OUTPUT,
)
# A row's outcome (DETECTED.outcome).
WITH_BOXES, WITHOUT_BOXES, FAILED = "with-boxes", "without-boxes", "failed"

_BOX_STRUCT = StructType([StructField(f.name, f.dataType, True) for f in BOXES.fields if f.name != "id"])
# One row per input row: what the detector made of it.
DETECTED = StructType(
    [
        StructField("id", LongType(), True),
        StructField("outcome", StringType(), True),
        StructField("reason", StringType(), True),  # set when outcome is failed
        StructField("detail", StringType(), True),
        StructField("boxes", ArrayType(_BOX_STRUCT, True), True),
    ]
)
_DETECTED_ARROW = pa.schema([pa.field(f.name, to_arrow_type(f.dataType)) for f in DETECTED.fields])

ChunkBox = tuple[int, int, float, float, float, float, float]  # start, end, x_min, y_min, x_max, y_max, score


class DetectError(ValueError):
    """The job cannot run as asked; the message says what to change."""


# --- the detector, once per Python worker ---------------------------------------------------------------------------

_DETECTORS: dict[str, Detector] = {}


def get_detector(path: str) -> Detector:
    """``load_detector(path)``, imported once per Python worker (Spark reuses workers across tasks)."""
    detector = _DETECTORS.get(path)
    if detector is None:
        detector = _DETECTORS[path] = load_detector(path)
    return detector


# --- one row, pure Python -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowResult:
    """``reason`` set: the row failed (``boxes`` empty); otherwise its boxes, possibly none."""

    reason: str | None = None
    detail: str | None = None
    boxes: list[ChunkBox] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.reason is not None:
            return FAILED
        return WITH_BOXES if self.boxes else WITHOUT_BOXES


def decode_image(data: bytes) -> tuple[Image.Image | None, str | None, str | None]:
    """``(image, None, None)`` fully decoded, or ``(None, reason, detail)``."""
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > MAX_PIXELS:
            return None, reasons.TOO_MANY_PIXELS, f"{width}x{height} = {width * height} pixels (limit {MAX_PIXELS})"
        img.load()
    except Image.DecompressionBombError as exc:
        return None, reasons.TOO_MANY_PIXELS, str(exc)[:500]
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ... on bad data
        return None, reasons.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:500]
    return img, None, None


def _checked_boxes(result: Any, spans: Sequence[tuple[int, int]], caption_length: int) -> list[ChunkBox] | str:
    """The detector's ``result`` as Boxes-table rows, or what is wrong with it."""
    if not isinstance(result, (list, tuple)) or len(result) != len(spans):
        got = f"{len(result)} lists" if isinstance(result, (list, tuple)) else type(result).__name__
        return f"expected one list of boxes per phrase ({len(spans)}), got {got}"
    out: list[ChunkBox] = []
    for (start, end), boxes in zip(spans, result, strict=True):
        for box in boxes or ():
            try:
                x_min, y_min, x_max, y_max, score = (float(v) for v in box)
            except (TypeError, ValueError):
                return f"phrase [{start}, {end}): a box is not 5 numbers: {box!r}"[:500]
            checked, reason = check_box(start, end, x_min, y_min, x_max, y_max, score, caption_length)
            if reason is not None or checked is None:
                return f"phrase [{start}, {end}): box {box!r} is {reason}"[:500]
            out.append(checked)  # type: ignore[arg-type]
    return out


def detect_row(
    detector: Detector, row_id: int | None, caption: str | None, spans: Sequence[dict] | None, data: bytes | None
) -> RowResult:
    """What ``detector`` finds for one pair row; never raises."""
    chunks = [(s.get("start"), s.get("end")) for s in spans or () if s is not None]
    if row_id is None:
        return RowResult(ID_MISSING, "the row has no id: its boxes could not be joined to it")
    if not chunks:
        return RowResult()
    length = len(caption) if caption is not None else -1
    bad = [(s, e) for s, e in chunks if s is None or e is None or not 0 <= s < e <= length]
    if bad:
        return RowResult(SPAN_INVALID, f"noun chunk {list(bad[0])} outside the caption ({length} characters)")
    if data is None:
        return RowResult(reasons.IMAGE_MISSING, "the row has no image bytes")
    img, reason, detail = decode_image(data)
    if img is None:
        return RowResult(reason, detail)
    phrases = [caption[s:e] for s, e in chunks]  # type: ignore[index]
    try:
        result = detector(img, phrases)
    except Exception as exc:  # a detector bug or a bad image costs this row, not the job
        return RowResult(DETECTOR_ERROR, f"{type(exc).__name__}: {exc}"[:500])
    boxes = _checked_boxes(result, chunks, length)  # type: ignore[arg-type]
    if isinstance(boxes, str):
        return RowResult(DETECTOR_BAD_OUTPUT, boxes)
    return RowResult(boxes=boxes)


def detect_mapper(detector_path: str, image_col: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow``: pair rows in, one ``DETECTED`` row per row out."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        detector = get_detector(detector_path)  # module-level accessor: the cache lives in the worker
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("id").to_pylist()
            captions = batch.column("caption").to_pylist()
            spans = batch.column("noun_chunk_spans").to_pylist()
            images = batch.column(image_col)
            results = [
                detect_row(detector, ids[i], captions[i], spans[i], images[i].as_py()) for i in range(batch.num_rows)
            ]
            box_rows = [
                None if r.outcome == FAILED else [dict(zip(_BOX_STRUCT.fieldNames(), b, strict=True)) for b in r.boxes]
                for r in results
            ]
            columns = [
                pa.array(ids, type=pa.int64()),
                pa.array([r.outcome for r in results], type=pa.string()),
                pa.array([r.reason for r in results], type=pa.string()),
                pa.array([r.detail for r in results], type=pa.string()),
                pa.array(box_rows, type=_DETECTED_ARROW.field("boxes").type),
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=_DETECTED_ARROW)

    return run


# --- Spark ----------------------------------------------------------------------------------------------------------


def check_input(pairs: DataFrame, image_col: str) -> None:
    missing = [c for c in REQUIRED if c not in pairs.columns]
    if missing:
        raise DetectError(
            f"the input has no {', '.join(missing)} column: is it winnow's OUTPUT/accepted "
            "(after the text stage, which writes noun_chunk_spans)?"
        )
    if image_col not in pairs.columns:
        raise DetectError(
            f"the input has no `{image_col}` column: winnow keeps the images only when the image stage runs with "
            "--set image.keep_bytes=true; re-run `winnow run ... --stages text,image --set image.keep_bytes=true`"
            + ("" if image_col == DEFAULT_IMAGE_COL else " (or fix --image-col)")
        )
    if not isinstance(pairs.schema[image_col].dataType, BinaryType):
        kind = pairs.schema[image_col].dataType.simpleString()
        raise DetectError(f"--image-col {image_col}: the column is {kind}, not image bytes (binary)")


def with_detections(pairs: DataFrame, detector_path: str, image_col: str = DEFAULT_IMAGE_COL) -> DataFrame:
    """Every pair row once, as ``DETECTED``: its outcome, failure reason and boxes."""
    check_input(pairs, image_col)
    rows = pairs.select(
        col_ref("id").cast("long").alias("id"),
        col_ref("caption").cast("string").alias("caption"),
        col_ref("noun_chunk_spans"),
        col_ref(image_col),
    )
    return rows.mapInArrow(detect_mapper(detector_path, image_col), DETECTED)


def boxes_table(detected: DataFrame) -> DataFrame:
    """The Boxes table (``BOXES``) of ``with_detections``' rows: one row per box."""
    exploded = detected.select("id", F.explode("boxes").alias("_box"))
    return exploded.select(
        *[(F.col("id") if f.name == "id" else F.col("_box")[f.name]).cast(f.dataType).alias(f.name) for f in BOXES]
    )


def failure_examples(detected: DataFrame, limit: int = MAX_EXAMPLES) -> DataFrame:
    """Up to ``limit`` smallest ids of each failure reason."""
    first = Window.partitionBy("reason").orderBy("id")
    failed = detected.filter(F.col("outcome") == FAILED).withColumn("_rank", F.row_number().over(first))
    return failed.filter(F.col("_rank") <= limit).select("reason", "id", "detail")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """A small text file through Hadoop's FileSystem (local, HDFS, S3 alike)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def run_detect(
    spark: SparkSession, input_path: str, output: str, detector_path: str, image_col: str = DEFAULT_IMAGE_COL
) -> dict:
    """Detect, check conservation, write ``output`` then its manifest; return the manifest."""
    try:
        pairs = spark.read.parquet(input_path)
    except Exception as exc:  # AnalysisException: no such path, no parquet in it
        raise DetectError(f"--input {input_path}: cannot read parquet: {str(exc).splitlines()[0]}") from None
    check_input(pairs, image_col)
    sc = spark.sparkContext
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS)}):
        sc.setJobDescription("detect: count the input")
        read = pairs.count()  # parquet footers: no image bytes are read
        detected = with_detections(pairs, detector_path, image_col).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            sc.setJobDescription(f"detect: run {detector_path}")
            groups = (
                detected.groupBy("outcome", "reason")
                .agg(F.count(F.lit(1)).alias("n"), F.sum(F.size(F.coalesce("boxes", F.array()))).alias("boxes"))
                .collect()
            )
            counts = {WITH_BOXES: 0, WITHOUT_BOXES: 0, FAILED: 0}
            failed = dict.fromkeys(FAILURE_REASONS, 0)
            boxes = 0
            for r in groups:
                counts[r["outcome"]] = counts.get(r["outcome"], 0) + r["n"]
                boxes += r["boxes"] or 0
                if r["outcome"] == FAILED:
                    failed[r["reason"]] = failed.get(r["reason"], 0) + r["n"]
            if sum(counts.values()) != read or len(counts) != 3:
                raise ConservationError(
                    f"detect: {read} rows read but {counts[WITH_BOXES]} with boxes + {counts[WITHOUT_BOXES]} "
                    f"without + {counts[FAILED]} failed = {sum(counts.values())} ({counts})"
                )
            examples: dict[str, list[dict[str, Any]]] = {}
            for r in failure_examples(detected).collect() if counts[FAILED] else []:
                examples.setdefault(r["reason"], []).append({"id": r["id"], "detail": r["detail"]})
            for reason, n in failed.items():
                if n:
                    first = examples[reason][0]
                    log.warning("detect: %d rows failed (%s), e.g. id %s: %s", n, reason, first["id"], first["detail"])

            sc.setJobDescription(f"detect: write {output}")
            table = boxes_table(detected).sortWithinPartitions("id", "start", F.desc("score"))
            table.write.mode("overwrite").parquet(output)
        finally:
            detected.unpersist()

    manifest = {
        "input": input_path,
        "output": output,
        "detector": detector_path,
        "image_col": image_col,
        "rows_read": read,
        "rows_with_boxes": counts[WITH_BOXES],
        "rows_without_boxes": counts[WITHOUT_BOXES],
        "rows_failed": counts[FAILED],
        "failed": {reason: n for reason, n in sorted(failed.items())},
        "failed_examples": {reason: [e["id"] for e in found] for reason, found in sorted(examples.items())},
        "failed_details": {reason: found[0]["detail"] for reason, found in sorted(examples.items())},
        "boxes_written": boxes,
        "winnow_version": __version__,
    }
    write_text(spark, f"{output.rstrip('/')}/{MANIFEST}", json.dumps(manifest, indent=2) + "\n")
    return manifest


def format_summary(manifest: dict) -> str:
    lines = [
        f"detect ({manifest['detector']}): {manifest['rows_read']:,} rows read, "
        f"{manifest['rows_with_boxes']:,} with boxes, {manifest['rows_without_boxes']:,} without, "
        f"{manifest['rows_failed']:,} failed; {manifest['boxes_written']:,} boxes written",
    ]
    lines += [f"  failed {code:<24}{n:>10,}" for code, n in manifest["failed"].items() if n]
    lines.append(f"output:   {manifest['output']}/")
    lines.append(f"manifest: {manifest['output'].rstrip('/')}/{MANIFEST}")
    return "\n".join(lines)


DESCRIPTION = "Run a detector plug-in over accepted pairs' images and noun chunks; write the Boxes table."


def add_detect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow detect` and of `spark-submit jobs/detect.py`."""
    parser.epilog = "exit codes: 0 done, 2 bad input or options, 3 conservation check failed"
    parser.add_argument(
        "--input", required=True, help="accepted pairs parquet (winnow's OUTPUT/accepted, with image bytes)"
    )
    parser.add_argument("--output", required=True, help="folder for the Boxes table parquet (replaced)")
    parser.add_argument(
        "--detector",
        required=True,
        help="the detector callable, package.module:name (e.g. udfs.detectors:shape_detector)",
    )
    parser.add_argument(
        "--image-col", default=DEFAULT_IMAGE_COL, help=f"the image bytes column (default {DEFAULT_IMAGE_COL})"
    )
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow detect` (default local[*]); spark-submit sets its own"
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    """Run the job for parsed arguments; 0 ok, 2 bad input or options, 3 conservation failure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        get_detector(args.detector)  # a bad path fails here, before Spark starts
        if "://" not in args.input and not os.path.exists(args.input):
            raise DetectError(f"--input {args.input}: no such file or folder")
        spark = get_spark("winnow-detect", master=args.master, arrow_batch_size=BATCH_ROWS)
    except (DetectError, JavaMissing) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # load_detector's message names the path and what is wrong
        print(f"winnow: error: --detector: {exc}", file=sys.stderr)
        return 2
    spark.sparkContext.setLogLevel("WARN")
    try:
        manifest = run_detect(spark, args.input, args.output, args.detector, args.image_col)
    except DetectError as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except ConservationError as exc:
        print(f"winnow: conservation check failed, output not trusted: {exc}", file=sys.stderr)
        return 3
    print(format_summary(manifest))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/detect.py`; returns the exit code."""
    parser = add_detect_arguments(argparse.ArgumentParser(prog="jobs/detect.py", description=DESCRIPTION))
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: cloudpickle ships __main__'s
    # functions by value, and the workers' detector cache must live in jobs.detect.
    from jobs import detect

    sys.exit(detect.main())
