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

Each stage's verdicts go to ``_checkpoints/<stage>/`` first (jobs.checkpoint: per
dump, fingerprinted); a re-run starts after the last stage whose checkpoint
still matches the config, code and input. The outputs are committed per dump
(jobs.storage: staged, then renamed into place, then ``_commits/dump=<name>.json``),
so a re-run replaces exactly the dumps it processed and a run killed at any
moment is completed or undone by the next. ``--incremental`` reads only the
input's dumps without a commit marker and dedups them against the committed
history. The job fails, before writing, if any stage's rows in != accepted +
rejected.

    winnow run --input pairs.parquet --output out/ [--config winnow.toml]
    spark-submit jobs/pipeline.py --input pairs.parquet --output out/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from jobs import __version__
from jobs.checkpoint import Checkpoints, code_version, fingerprint
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
from jobs.ground import (
    GroundError,
    box_verdicts,
    conform_boxes,
    grit_boxes,
    read_boxes,
    split_ground,
    with_grit_spans,
    with_ground_verdicts,
)
from jobs.image import split_image, with_image_verdicts
from jobs.ingest import IngestError, dump_folders, read_source, resolve_format, split_pairs, with_pair_columns
from jobs.report import render_report
from jobs.score import ScoreError, prepare_scorers, similarity_cutoff, split_score, with_score_verdicts, with_scores
from jobs.session import JavaMissing, get_spark, session_conf
from jobs.stage import ConservationError, StageCounts, count_stage
from jobs.statistics import report_statistics
from jobs.storage import Committer, FileStore, new_run_id
from jobs.text import rules_from_config, split_text, with_text_verdicts
from udfs import resources
from udfs.detectors import load_detector

log = logging.getLogger("winnow")
# The output parts committed per dump (history may live elsewhere: dedup.history_path).
PARTS = ("accepted", "rejected", "history", "boxes")


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
        "--incremental",
        action="store_true",
        help="process only the input's dump=<name>/ folders without committed output (a scheduled run); "
        "nothing new: exit 0 and change nothing",
    )
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow run` (default local[*]); spark-submit sets its own"
    )
    return parser


STAGE_CONFIG = {
    "text": ("text", "text_zh"),
    "image": ("fetch", "image"),
    "score": ("score",),
    "dedup": ("dedup",),
    "ground": ("ground",),
}


@dataclass
class Run:
    """One run's place on disk: its id, the file store, the committer and the checkpoints."""

    spark: SparkSession
    cfg: Config
    output: str
    store: FileStore
    committer: Committer
    checkpoints: Checkpoints | None
    dumps: list[str] | None = None  # the run's dumps, known after ingest
    fingerprint: str = ""  # of the last stage run

    @classmethod
    def start(cls, spark: SparkSession, cfg: Config, output: str) -> Run:
        store = FileStore(spark)
        run_id = new_run_id()
        checkpoints = Checkpoints(spark, store, f"{output}/_checkpoints", run_id) if cfg.run.checkpoints else None
        return cls(spark, cfg, output, store, Committer(store, output, run_id), checkpoints)

    def stage(
        self,
        name: str,
        extra: Any,
        compute: Callable[[], DataFrame],
        rows_in: int | None,
        conf: dict[str, str] | None = None,
    ) -> tuple[DataFrame, StageCounts]:
        """The stage's annotated frame and its checked counts (``rows_in`` None: ingest, whose
        rows in are its rows): from its checkpoint when the fingerprint matches, else computed
        and checkpointed (or persisted). The checkpoint is marked complete after the check."""
        sections = {s: dataclasses.asdict(getattr(self.cfg, s)) for s in STAGE_CONFIG.get(name, ("ingest",))}
        files = self.referenced_files(sections)
        self.fingerprint = fingerprint(name, code_version(), self.fingerprint, sections, files, extra)
        with session_conf(self.spark, conf or {}):
            if self.checkpoints is None:
                frame = compute().persist(StorageLevel.MEMORY_AND_DISK)
                return frame, count_stage(name, frame.count() if rows_in is None else rows_in, frame)
            loaded = self.checkpoints.load(name, self.fingerprint, self.dumps)
            if loaded is not None:
                log.info("%s: resumed from its checkpoint (%s)", name, self.fingerprint)
                frame, self.dumps = loaded
                return frame, count_stage(name, frame.count() if rows_in is None else rows_in, frame)
            computed = compute()
            frame, self.dumps = self.checkpoints.save(name, self.fingerprint, computed, self.dumps)
            counts = count_stage(name, frame.count() if rows_in is None else rows_in, frame)
            self.checkpoints.mark(name, self.fingerprint, self.dumps, computed.schema)
            return frame, counts

    def referenced_files(self, sections: dict[str, dict[str, Any]]) -> dict[str, list]:
        """The files the stage's config names (models, word lists, blocklists, the Boxes table):
        path, size, time of each, so a file replaced under the same name is a change."""
        out = {}
        for table in sections.values():
            for value in table.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item and ("://" in item or os.path.exists(item)):
                        try:
                            out[item] = self.store.files(item)
                        except Exception:  # a value that merely looks like a URI (Hadoop cannot parse it)
                            continue
        return out


def input_listing(store: FileStore, input_path: str, folders: list[str] | None) -> list[tuple[str, int, int]]:
    """(path, size, time) of the input files the run reads: its fingerprint, beside the config."""
    if folders is None:
        return store.files(input_path)
    return [f for folder in folders for f in store.files(f"{input_path.rstrip('/')}/{folder}")]


def run_pipeline(
    spark: SparkSession, cfg: Config, input_path: str, output: str, incremental: bool = False
) -> dict[str, Any]:
    """Run ingest and the configured stages, commit the outputs dump by dump, return the funnel.

    ``incremental``: read only the input's ``dump=<name>/`` folders that have no
    committed output; with none, return ``{"new_dumps": []}`` and touch nothing.
    """
    started = time.time()
    sc = spark.sparkContext
    run = Run.start(spark, cfg, output)
    store = run.store
    dedup = "dedup" in cfg.run.stages
    ground = "ground" in cfg.run.stages
    history_path = (cfg.dedup.history_path or f"{output}/history") if dedup and cfg.dedup.history else None
    # Every part is committed per dump, also one this run does not write: a dump re-run without
    # the dedup (or ground) stage must not keep the history (or box verdicts) of its old output.
    part_paths = {p: f"{output}/{p}" for p in PARTS}
    part_paths["history"] = history_path or cfg.dedup.history_path or f"{output}/history"

    folders = None
    if incremental:
        found = dump_folders(spark, input_path)
        if not found:
            raise IngestError(f"--incremental needs dump=<name>/ folders directly under {input_path}")
    # A commit a killed run recorded is finished first; staging no commit names is deleted.
    sc.setJobDescription("commit: finish or clean up an interrupted run")
    for line in run.committer.recover(list(part_paths.values())):
        log.info("recovery: %s", line)
    if run.checkpoints is not None:
        run.checkpoints.clean_staging()
    committed = run.committer.committed()
    if incremental:
        folders = [f for f in found if store.partition_value(f) not in committed]
        if not folders:
            return {"new_dumps": [], "committed": sorted(committed)}

    fmt = resolve_format(input_path, cfg.ingest.input_format)
    if "text" in cfg.run.stages:
        rules = rules_from_config(cfg.text, cfg.text_zh)  # a missing model fails here, before any data is read
    # Blocklists are read (and their layout checked) before any data is.
    sc.setJobDescription("ingest: read the blocklists and the Boxes table")
    blocklist = read_blocklists(spark, cfg.dedup.blocklists) if dedup else None
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
    source = {"input": input_path, "format": fmt, "files": input_listing(store, input_path, folders)}
    annotated, counts = run.stage(
        "ingest",
        source,
        lambda: with_pair_columns(read_source(spark, input_path, fmt, cfg.ingest, folders), fmt, cfg.ingest),
        None,
    )
    available = set(annotated.columns) | ({"image_phash"} if "image" in cfg.run.stages else set())
    if dedup:
        check_phash_column(available, cfg.dedup.phash_col)
    if ground and cfg.ground.grit_input:
        grit_boxes(annotated)  # checks the GRIT columns now, not after the other stages ran
    # Ingest is a projection of the input (one row out per row in), so counting
    # the stored frame counts the input: the source is read once, not twice.
    funnel: list[StageCounts] = [counts]
    rows_in = counts.rows_in
    run.dumps = sorted(counts.dumps)
    current, rejected = split_pairs(annotated)
    rejected_parts = [rejected]
    cached = [] if run.checkpoints is not None else [annotated]

    if "text" in cfg.run.stages:
        which = "Chinese: jieba, posseg" if cfg.text.language == "zh" else "COYO: spaCy"
        sc.setJobDescription(f"text: {which} rules (length, words, NSFW, CLD3, frequency, nouns)")
        text_in = funnel[-1].accepted
        annotated, counts = run.stage(
            "text", None, lambda: with_text_verdicts(current, rules, cfg.text.udf_partitions), text_in
        )
        cached.append(annotated)
        funnel.append(counts)
        current, rejected = split_text(annotated, current.columns)
        rejected_parts.append(rejected)

    if "image" in cfg.run.stages:
        sc.setJobDescription("image: fetch, COYO image rules, pHash")
        image_in = funnel[-1].accepted
        # Small Arrow batches: image rows may carry bytes (img2dataset inputs, kept images).
        batch = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.image.batch_size)}
        annotated, counts = run.stage(
            "image", None, lambda: with_image_verdicts(current, cfg.fetch, cfg.image), image_in, batch
        )
        cached.append(annotated)
        funnel.append(counts)
        current, rejected = split_image(annotated, current.columns)
        rejected_parts.append(rejected)

    score_cutoff = None
    if scoring is not None:
        sc.setJobDescription("score: " + ", ".join(scoring.columns))
        score_in = funnel[-1].accepted
        # Arrow batches of score.batch_size rows: each carries images, and the scorers take them as they come.
        batch = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.score.batch_size)}

        def scored_rows() -> DataFrame:
            scored = with_scores(current, scoring, cfg.score).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(scored)
            return with_score_verdicts(scored, scoring, cfg.score, similarity_cutoff(scored, scoring, cfg.score))

        annotated, counts = run.stage("score", None, scored_rows, score_in, batch)
        cached.append(annotated)
        funnel.append(counts)
        # The cut-off again, from the stored scores: the same rows, so the same number.
        score_cutoff = similarity_cutoff(annotated, scoring, cfg.score)
        current, rejected = split_score(annotated, scoring, current.columns)
        rejected_parts.append(rejected)

    if dedup:
        sc.setJobDescription("dedup: eval blocklists, (pHash, caption) pairs, history, near-duplicates")
        dedup_in = funnel[-1].accepted
        # Only committed dumps count as history, and never the run's own (a re-run changes nothing).
        earlier = None if cfg.dedup.history_path else sorted(set(committed) - set(run.dumps))
        history = read_history(spark, history_path, set(run.dumps), earlier) if history_path else None
        if earlier is not None:
            state = [(d, committed[d].get("run_id")) for d in earlier]
        else:  # a shared history: its files, but for the run's own dumps (this run rewrites them)
            own = tuple(f"/{store.partition_dir(d)}/" for d in run.dumps)
            state = [f for f in store.files(history_path) if not any(o in f[0] for o in own) and "/_" not in f[0]]
        annotated, counts = run.stage(
            "dedup", state, lambda: with_dedup_verdicts(current, cfg.dedup, blocklist, history), dedup_in
        )
        cached.append(annotated)
        funnel.append(counts)
        current, rejected = split_dedup(annotated, current.columns)
        rejected_parts.append(rejected)

    box_counts = None
    if ground:
        pairs = current
        own_boxes = boxes
        if cfg.ground.grit_input:
            # A GRIT release re-grounded: its own noun_chunks are the boxes (and, to refilter,
            # its chunk and expression spans stand in for the text stage's parse).
            own_boxes = grit_boxes(current)
            if cfg.ground.grit_input == "refilter":
                pairs = with_grit_spans(current)

        detected: dict[str, int] = {}

        def grounded() -> DataFrame:
            found = own_boxes
            if found is None:
                # Detection over the kept images of the pairs that reach this stage; a row the detector
                # fails on gets no box and is rejected no-grounding (its failure in the detail).
                sc.setJobDescription(f"detect: {cfg.ground.detector} over the kept images")
                with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(DETECT_BATCH_ROWS)}):
                    found = boxes_table(with_detections(pairs, cfg.ground.detector)).persist(
                        StorageLevel.MEMORY_AND_DISK
                    )
                    detected["boxes"] = found.count()
                cached.append(found)
            sc.setJobDescription("ground: noun chunks x boxes, NMS, referring expressions")
            return with_ground_verdicts(pairs, found, cfg.ground)[0]

        ground_in = funnel[-1].accepted
        annotated, counts = run.stage("ground", None, grounded, ground_in)
        cached.append(annotated)
        funnel.append(counts)
        current, rejected = split_ground(annotated, pairs.columns)
        rejected_parts.append(rejected)
        # Detected boxes come from these pairs, so each has a pair; a Boxes table's may not.
        verdicts = box_verdicts(annotated, pairs, own_boxes).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(verdicts)
        # Boxes in: the table's rows, or the detections (None when the stage came from its checkpoint:
        # then the verdicts are what the detections were).
        boxes_in = conform_boxes(own_boxes).count() if own_boxes is not None else detected.get("boxes")
        box_counts = _box_counts(verdicts, boxes_in)

    sc.setJobDescription("write: accepted and rejected parquet (staged, committed per dump)")
    committer = run.committer
    staged: dict[str, tuple[str, list[str]]] = {name: (path, []) for name, path in part_paths.items()}
    staged["accepted"] = (part_paths["accepted"], committer.stage(part_paths["accepted"], current))
    all_rejected: DataFrame = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), rejected_parts)
    staged["rejected"] = (part_paths["rejected"], committer.stage(part_paths["rejected"], all_rejected))
    if history_path:
        sc.setJobDescription("write: dedup history of the accepted pairs")
        staged["history"] = (history_path, committer.stage(history_path, history_rows(current, cfg.dedup.phash_col)))
    if box_counts is not None:
        sc.setJobDescription("write: box verdicts")
        staged["boxes"] = (part_paths["boxes"], committer.stage(part_paths["boxes"], verdicts))
    # From the stored stage frames, before they are unpersisted: no stage UDF runs again.
    sc.setJobDescription("report: statistics")
    statistics = report_statistics(
        current, all_rejected, [c.as_dict() for c in funnel], per_reason=cfg.run.report_samples
    )
    sc.setJobDescription(None)  # later jobs of this thread are not the report's
    for frame in cached:
        frame.unpersist()

    report = {
        "winnow_version": __version__,
        "run_id": committer.run_id,
        "input": input_path,
        "input_format": fmt,
        "output": output,
        "dumps": run.dumps,
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
    files = {"funnel.json": json.dumps(report, indent=2) + "\n", "report.html": render_report(report)}
    committer.stage_files(f"{output}/report", files)
    per_dump = {
        dump: {
            "fingerprint": run.fingerprint,
            "stages": {c.stage: c.dumps.get(dump, {"accepted": 0, "rejected": 0}) for c in funnel},
        }
        for dump in run.dumps
    }
    committer.commit(staged, per_dump, (f"{output}/report", sorted(files)))
    if run.checkpoints is not None and not cfg.run.keep_checkpoints:
        run.checkpoints.drop(run.dumps)
    return report


def _box_counts(box_verdicts: DataFrame, boxes_in: int | None) -> dict[str, Any]:
    """Rows of the Boxes table per outcome and per reject reason; every box exactly once
    (``boxes_in`` None: detections, counted as their verdicts)."""
    rows = box_verdicts.groupBy("reason", "outcome").count().collect()
    if boxes_in is None:
        boxes_in = sum(row["count"] for row in rows)
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
        report = run_pipeline(spark, cfg, args.input, args.output, incremental=args.incremental)
    except (IngestError, DedupError, GroundError, DetectError, ScoreError, resources.ModelUnavailable) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return 2
    except ConservationError as exc:
        print(f"winnow: conservation check failed, output not trusted: {exc}", file=sys.stderr)
        return 3
    if report.get("new_dumps") == []:
        print(f"nothing new: all {len(report['committed'])} dumps under {args.input} are committed in {args.output}")
        return 0
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
