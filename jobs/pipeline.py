"""The winnow pipeline driver: ingest -> text -> image -> score -> dedup -> ground -> write.

Reads INPUT (see jobs.ingest for the formats), runs the selected stages and
writes, under OUTPUT:

- ``accepted/``: parquet partitioned by ``dump`` (schemas.tables.TEXT_ACCEPTED
  first, then the source columns, then the image stage's columns);
- ``rejected/``: parquet partitioned by ``dump``: ``id``, ``stage``,
  ``reason``, ``detail`` and the stage's input columns;
- ``report/funnel.json``: rows in, accepted and rejected per reason, per stage,
  and the ``statistics`` block (jobs.statistics: histograms of the accepted
  rows, duplicate-group sizes, sample rejects);
- ``report/report.html``: the same as a static page with inline SVG charts
  (jobs.report), opens offline;
- ``history/``: with the dedup stage, what later dumps are deduplicated
  against (jobs.dedup), written after the accepted output;
- ``boxes/``: with the ground stage, one verdict per row of the Boxes table
  (jobs.ground: kept, below-score, suppressed, ... or a ``box-*`` reject).

A re-run replaces exactly the dumps it writes (dynamic partition overwrite).
The job fails, before writing, if any stage's rows in != accepted + rejected.

    winnow run --input pairs.parquet --output out/ [--config winnow.toml]
    spark-submit jobs/pipeline.py --input pairs.parquet --output out/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from jobs import __version__
from jobs.config import INPUT_FORMATS, KNOWN_STAGES, Config, ConfigError, load_config
from jobs.dedup import (
    DedupError,
    check_phash_column,
    history_rows,
    read_blocklists,
    read_history,
    split_dedup,
    with_dedup_verdicts,
)
from jobs.detect import BATCH_ROWS as DETECT_BATCH_ROWS
from jobs.detect import DetectError, boxes_table, with_detections
from jobs.ground import GroundError, grit_boxes, read_boxes, split_ground, with_grit_spans, with_ground_verdicts
from jobs.image import split_image, with_image_verdicts
from jobs.ingest import IngestError, read_source, resolve_format, split_pairs, with_pair_columns
from jobs.report import render_report
from jobs.score import ScoreError, prepare_scorers, similarity_cutoff, split_score, with_score_verdicts, with_scores
from jobs.session import JavaMissing, get_spark, session_conf
from jobs.stage import ConservationError, StageCounts, count_stage
from jobs.statistics import report_statistics
from jobs.text import rules_from_config, split_text, with_text_verdicts
from udfs import resources
from udfs.detectors import load_detector

log = logging.getLogger("winnow")


def config_keys_help() -> str:
    """Every config key with its default, for the end of --help."""
    lines = ["config keys (TOML [section] key = value, or --set section.key=value), with defaults:"]
    for section, table in Config().to_dict().items():
        lines += [f"  {section}.{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines)


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow run` and of `spark-submit jobs/pipeline.py`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = config_keys_help() + "\n\nexit codes: 0 done, 2 bad input or config, 3 conservation check failed"
    parser.add_argument("--input", required=True, help="input file or folder (dump=<name>/ sub-folders become dumps)")
    parser.add_argument("--output", required=True, help="output folder: accepted/, rejected/, report/")
    parser.add_argument("--config", help="TOML config file; every threshold is a key (README: config reference)")
    parser.add_argument(
        "--input-format", choices=INPUT_FORMATS, help="source format (ingest.input_format, default auto: by extension)"
    )
    parser.add_argument("--url-col", help="URL column of a generic list (ingest.url_col, default url)")
    parser.add_argument("--caption-col", help="caption column (ingest.caption_col, default caption; coyo: text)")
    parser.add_argument("--id-col", help="source id column (ingest.id_col; default: a 64-bit hash of the URL)")
    parser.add_argument(
        "--language", help="caption rule set: en (COYO rules, spaCy) or zh (jieba; TaiSu) (text.language, default en)"
    )
    parser.add_argument("--dump", help="dump name when the input has no dump=<name>/ folders (ingest.dump)")
    parser.add_argument(
        "--stages", help=f"comma-separated stages after ingest (run.stages, available: {','.join(KNOWN_STAGES)})"
    )
    parser.add_argument("--boxes", help="the Boxes table (parquet) for the ground stage (ground.boxes)")
    parser.add_argument(
        "--allow-network",
        action="append",
        metavar="CIDR",
        help="exempt a network from the private-address refusal, e.g. 127.0.0.1/32 (fetch.allow_networks; repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set text.max_occurrences=20 (repeatable)",
    )
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow run` (default local[*]); spark-submit sets its own"
    )
    return parser


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file through Hadoop's FileSystem (local, HDFS, S3 alike)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def _drop_partitions(spark: SparkSession, folder: str, dumps: set[str]) -> None:
    """Delete ``folder/dump=<name>`` for ``dumps``: a re-run that leaves a dump with no rows
    of this kind must not leave the previous run's rows behind (dynamic partition
    overwrite only replaces the partitions it writes)."""
    jvm = spark.sparkContext._jvm
    escape = jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils.escapePathName
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for dump in sorted(dumps):
        path = jvm.org.apache.hadoop.fs.Path(f"{folder}/dump={escape(dump)}")
        fs = path.getFileSystem(conf)
        if fs.exists(path):
            fs.delete(path, True)


def run_pipeline(spark: SparkSession, cfg: Config, input_path: str, output: str) -> dict[str, Any]:
    """Run ingest and the configured stages, write all outputs, return the funnel."""
    started = time.time()
    sc = spark.sparkContext
    fmt = resolve_format(input_path, cfg.ingest.input_format)
    if "text" in cfg.run.stages:
        rules = rules_from_config(cfg.text, cfg.text_zh)  # a missing model fails here, before any data is read

    dedup = "dedup" in cfg.run.stages
    history_path = (cfg.dedup.history_path or f"{output}/history") if dedup and cfg.dedup.history else None
    # Blocklists are read (and their layout checked) before any data is.
    sc.setJobDescription("ingest: read the blocklists and the Boxes table")
    blocklist = read_blocklists(spark, cfg.dedup.blocklists) if dedup else None
    ground = "ground" in cfg.run.stages
    if ground and cfg.ground.detector:
        try:
            load_detector(cfg.ground.detector)  # a bad plug-in path fails here, before any data is read
        except ValueError as exc:
            raise GroundError(f"ground.detector: {exc}") from None
    boxes = read_boxes(spark, cfg.ground.boxes) if ground and cfg.ground.boxes else None
    # Model files are shipped, loaded and probed here: a missing, corrupt or wrongly shaped model
    # stops the job before any data is read.
    scoring = prepare_scorers(spark, cfg.score) if "score" in cfg.run.stages else None

    sc.setJobDescription("ingest: read and map to the pair table")
    raw = read_source(spark, input_path, fmt, cfg.ingest)
    annotated = with_pair_columns(raw, fmt, cfg.ingest).persist(StorageLevel.MEMORY_AND_DISK)
    available = set(annotated.columns) | ({"image_phash"} if "image" in cfg.run.stages else set())
    if dedup:
        check_phash_column(available, cfg.dedup.phash_col)
    if ground and cfg.ground.grit_input:
        grit_boxes(annotated)  # checks the GRIT columns now, not after the other stages ran
    # Ingest is a projection of the input (one row out per row in), so counting
    # the persisted frame counts the input: the source is read once, not twice.
    rows_in = annotated.count()
    funnel: list[StageCounts] = [count_stage("ingest", rows_in, annotated)]
    current, rejected = split_pairs(annotated)
    rejected_parts = [rejected]
    cached = [annotated]

    if "text" in cfg.run.stages:
        which = "Chinese: jieba, posseg" if cfg.text.language == "zh" else "COYO: spaCy"
        sc.setJobDescription(f"text: {which} rules (length, words, NSFW, CLD3, frequency, nouns)")
        text_in = funnel[-1].accepted
        annotated = with_text_verdicts(current, rules, cfg.text.udf_partitions).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(annotated)
        funnel.append(count_stage("text", text_in, annotated))
        current, rejected = split_text(annotated, current.columns)
        rejected_parts.append(rejected)

    if "image" in cfg.run.stages:
        sc.setJobDescription("image: fetch, COYO image rules, pHash")
        image_in = funnel[-1].accepted
        annotated = with_image_verdicts(current, cfg.fetch, cfg.image).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(annotated)
        # Small Arrow batches: image rows may carry bytes (img2dataset inputs, kept images).
        with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.image.batch_size)}):
            funnel.append(count_stage("image", image_in, annotated))
        current, rejected = split_image(annotated, current.columns)
        rejected_parts.append(rejected)

    score_cutoff = None
    if scoring is not None:
        sc.setJobDescription("score: " + ", ".join(scoring.columns))
        score_in = funnel[-1].accepted
        scored = with_scores(current, scoring, cfg.score).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(scored)
        # Arrow batches of score.batch_size rows: each carries images, and the scorers take them as they come.
        with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.score.batch_size)}):
            score_cutoff = similarity_cutoff(scored, scoring, cfg.score)
            annotated = with_score_verdicts(scored, scoring, cfg.score, score_cutoff)
            funnel.append(count_stage("score", score_in, annotated))
        current, rejected = split_score(annotated, scoring, current.columns)
        rejected_parts.append(rejected)

    if dedup:
        sc.setJobDescription("dedup: eval blocklists, (pHash, caption) pairs, history, near-duplicates")
        dedup_in = funnel[-1].accepted
        history = read_history(spark, history_path, set(funnel[0].dumps)) if history_path else None
        annotated = with_dedup_verdicts(current, cfg.dedup, blocklist, history).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(annotated)
        funnel.append(count_stage("dedup", dedup_in, annotated))
        current, rejected = split_dedup(annotated, current.columns)
        rejected_parts.append(rejected)

    box_counts = None
    if ground:
        if cfg.ground.grit_input:
            # A GRIT release re-grounded: its own noun_chunks are the boxes (and, to refilter,
            # its chunk and expression spans stand in for the text stage's parse).
            boxes = grit_boxes(current)
            if cfg.ground.grit_input == "refilter":
                current = with_grit_spans(current)
        elif boxes is None:
            # Detection over the kept images of the pairs that reach this stage; a row the detector
            # fails on gets no box and is rejected no-grounding (its failure in the detail).
            sc.setJobDescription(f"detect: {cfg.ground.detector} over the kept images")
            with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(DETECT_BATCH_ROWS)}):
                boxes = boxes_table(with_detections(current, cfg.ground.detector)).persist(StorageLevel.MEMORY_AND_DISK)
                boxes.count()
            cached.append(boxes)
        sc.setJobDescription("ground: noun chunks x boxes, NMS, referring expressions")
        ground_in = funnel[-1].accepted
        annotated, box_verdicts = with_ground_verdicts(current, boxes, cfg.ground)
        # To disk: every box verdict is nested in its pair's row, and building that cache in memory
        # ran a 2 GB heap out of memory at 1M pairs (7.8 boxes each); on disk it streams.
        annotated = annotated.persist(StorageLevel.DISK_ONLY)
        cached.append(annotated)
        funnel.append(count_stage("ground", ground_in, annotated))
        current, rejected = split_ground(annotated, current.columns)
        rejected_parts.append(rejected)
        box_verdicts = box_verdicts.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(box_verdicts)
        box_counts = _box_counts(box_verdicts, boxes.count())

    sc.setJobDescription("write: accepted and rejected parquet")
    current.write.mode("overwrite").partitionBy("dump").parquet(f"{output}/accepted")
    all_rejected: DataFrame = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), rejected_parts)
    all_rejected.write.mode("overwrite").partitionBy("dump").parquet(f"{output}/rejected")
    input_dumps = set(funnel[0].dumps)
    _drop_partitions(
        spark, f"{output}/accepted", input_dumps - {d for d, n in funnel[-1].dumps.items() if n["accepted"]}
    )
    rejected_dumps = {d for counts in funnel for d, n in counts.dumps.items() if n["rejected"]}
    _drop_partitions(spark, f"{output}/rejected", input_dumps - rejected_dumps)
    if history_path:
        # After the accepted output: a run that dies before this point leaves no history
        # for output that was never written, and the re-run ignores its own dumps' history.
        sc.setJobDescription("write: dedup history of the accepted pairs")
        history_rows(current, cfg.dedup.phash_col).write.mode("overwrite").partitionBy("dump").parquet(history_path)
        _drop_partitions(spark, history_path, input_dumps - {d for d, n in funnel[-1].dumps.items() if n["accepted"]})
    if box_counts is not None:
        sc.setJobDescription("write: box verdicts")
        box_verdicts.write.mode("overwrite").parquet(f"{output}/boxes")
    # From the persisted stage frames, before they are unpersisted: no stage UDF runs again.
    sc.setJobDescription("report: statistics")
    statistics = report_statistics(
        current, all_rejected, [c.as_dict() for c in funnel], per_reason=cfg.run.report_samples
    )
    sc.setJobDescription(None)  # later jobs of this thread are not the report's
    for frame in cached:
        frame.unpersist()

    report = {
        "winnow_version": __version__,
        "input": input_path,
        "input_format": fmt,
        "output": output,
        "stages": [c.as_dict() for c in funnel],
        "rows_in": rows_in,
        "accepted": funnel[-1].accepted,
        "rejected": sum(c.rejected for c in funnel),
        "seconds": round(time.time() - started, 1),
        "config": cfg.to_dict(),
    }
    if box_counts is not None:
        report["boxes"] = box_counts
    if scoring is not None:
        report["score"] = {"columns": list(scoring.columns), "similarity_cutoff": score_cutoff}
    report["statistics"] = statistics
    _write_text(spark, f"{output}/report/funnel.json", json.dumps(report, indent=2) + "\n")
    _write_text(spark, f"{output}/report/report.html", render_report(report))
    return report


def _box_counts(box_verdicts: DataFrame, boxes_in: int) -> dict[str, Any]:
    """Rows of the Boxes table per outcome and per reject reason; every box exactly once."""
    rows = box_verdicts.groupBy("reason", "outcome").count().collect()
    out = {"boxes_in": boxes_in, "outcomes": {}, "rejected": {}}
    for row in rows:
        if row["reason"] is None:
            out["outcomes"][row["outcome"]] = row["count"]
        else:
            out["rejected"][row["reason"]] = row["count"]
    total = sum(out["outcomes"].values()) + sum(out["rejected"].values())
    if total != boxes_in:
        raise ConservationError(f"ground: {boxes_in} boxes in, {total} box verdicts")
    return out


def format_funnel(report: dict[str, Any]) -> str:
    """The funnel as a few aligned lines for the terminal."""
    lines = []
    for stage in report["stages"]:
        counts = f"accepted {stage['accepted']:>10,}  rejected {stage['rejected']:>10,}"
        lines.append(f"{stage['stage']:<8} in {stage['rows_in']:>10,}  {counts}")
        for reason, n in stage["reasons"].items():
            lines.append(f"{'':<10}{reason:<28}{n:>10,}")
    if "boxes" in report:
        boxes = report["boxes"]
        lines.append(f"{'boxes':<8} in {boxes['boxes_in']:>10,}")
        for name, n in sorted({**boxes["outcomes"], **boxes["rejected"]}.items()):
            lines.append(f"{'':<10}{name:<28}{n:>10,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/pipeline.py`; returns the exit code."""
    parser = add_run_arguments(argparse.ArgumentParser(prog="jobs/pipeline.py", description=DESCRIPTION))
    return execute(parser.parse_args(argv))


DESCRIPTION = "Run winnow's stages over INPUT and write accepted/, rejected/ and report/ under OUTPUT."


def execute(args: argparse.Namespace) -> int:
    """Run the job for parsed `run` arguments; 0 ok, 2 bad input or config, 3 conservation failure."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {
        "ingest.input_format": args.input_format,
        "ingest.url_col": args.url_col,
        "ingest.caption_col": args.caption_col,
        "ingest.id_col": args.id_col,
        "ingest.dump": args.dump,
        "text.language": args.language,
        "run.stages": [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None,
        "fetch.allow_networks": args.allow_network,
        "ground.boxes": args.boxes,
    }
    try:
        cfg = load_config(args.config, overrides, args.set)
        if "://" not in args.input and not os.path.exists(args.input):
            raise IngestError(f"input not found: {args.input}")
        spark = get_spark("winnow", master=args.master, arrow_batch_size=cfg.run.arrow_batch_size)
    except (ConfigError, IngestError, JavaMissing) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    spark.sparkContext.setLogLevel("WARN")
    try:
        report = run_pipeline(spark, cfg, args.input, args.output)
    except (IngestError, DedupError, GroundError, DetectError, ScoreError, resources.ModelUnavailable) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except ConservationError as exc:
        print(f"winnow: conservation check failed, output not trusted: {exc}", file=sys.stderr)
        return 3
    print(format_funnel(report))
    print(f"accepted: {args.output}/accepted/")
    print(f"rejected: {args.output}/rejected/")
    if "boxes" in report:
        print(f"boxes:    {args.output}/boxes/")
    print(f"funnel:   {args.output}/report/funnel.json")
    print(f"report:   {args.output}/report/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
