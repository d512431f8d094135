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
imported once per Python worker (``udfs.detectors.get_detector``, cached by its
path) and called in a ``mapInArrow`` over Arrow batches of
``udfs.detectors.BATCH_ROWS`` rows (each row carries an image); the ground stage
runs the same transform (``jobs.stages.ground.with_detections``) when
``ground.detector`` is set.

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

    winnow detect --input OUTPUT/accepted --output OUTPUT/boxes --detector jobs.demo.shapes:shape_detector
    spark-submit jobs/detect.py --input ... --output ... --detector mypkg.owl:detector
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from jobs import __version__
from jobs.errors import EXIT_CODES, ConservationError, WinnowError, run_command
from jobs.session import get_spark, session_conf
from jobs.stages.ground import boxes_table, with_detections
from jobs.storage import FileStore
from schemas import reasons
from udfs.detectors import BATCH_ROWS, FAILED, WITH_BOXES, WITHOUT_BOXES, get_detector

log = logging.getLogger("winnow")

MANIFEST = "_winnow_detect.json"
MAX_EXAMPLES = 20
DEFAULT_IMAGE_COL = "image"
REQUIRED = ("id", "caption", "noun_chunk_spans")


class DetectError(WinnowError):
    """The job cannot run as asked; the message says what to change."""


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


def failure_examples(detected: DataFrame, limit: int = MAX_EXAMPLES) -> DataFrame:
    """Up to ``limit`` smallest ids of each failure reason."""
    first = Window.partitionBy("reason").orderBy("id")
    failed = detected.filter(F.col("outcome") == FAILED).withColumn("_rank", F.row_number().over(first))
    return failed.filter(F.col("_rank") <= limit).select("reason", "id", "detail")


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
            failed = dict.fromkeys(reasons.DETECT_FAILURES, 0)
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
    FileStore(spark).write_text(f"{output.rstrip('/')}/{MANIFEST}", json.dumps(manifest, indent=2) + "\n")
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
    parser.epilog = EXIT_CODES
    parser.add_argument(
        "--input", required=True, help="accepted pairs parquet (winnow's OUTPUT/accepted, with image bytes)"
    )
    parser.add_argument("--output", required=True, help="folder for the Boxes table parquet (replaced)")
    parser.add_argument(
        "--detector",
        required=True,
        help="the detector callable, package.module:name (e.g. jobs.demo.shapes:shape_detector)",
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
    return run_command(lambda: _detect(args))


def _detect(args: argparse.Namespace) -> int:
    try:
        get_detector(args.detector)  # a bad path fails here, before Spark starts
    except ValueError as exc:  # load_detector's message names the path and what is wrong
        raise DetectError(f"--detector: {exc}") from None
    if "://" not in args.input and not os.path.exists(args.input):
        raise DetectError(f"--input {args.input}: no such file or folder")
    spark = get_spark("winnow-detect", master=args.master, arrow_batch_size=BATCH_ROWS)
    spark.sparkContext.setLogLevel("WARN")
    print(format_summary(run_detect(spark, args.input, args.output, args.detector, args.image_col)))
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
