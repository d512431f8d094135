"""The winnow pipeline driver: ingest -> text -> image -> score -> dedup -> ground -> write.

Reads INPUT (see jobs.stages.ingest for the formats), runs ingest and the
stages ``run.stages`` selects (``jobs.stages.STAGES``, each a ``jobs.stage.Stage``)
one after the other, and writes, under OUTPUT:

- ``accepted/``: parquet partitioned by ``dump`` (schemas.tables.TEXT_ACCEPTED
  first, then the source columns, then the image stage's columns);
- ``rejected/``: parquet partitioned by ``dump``: ``id``, ``stage``,
  ``reason``, ``detail`` and the stage's input columns;
- ``report/funnel.json``: rows in, accepted and rejected per reason, per stage,
  and the ``statistics`` block (jobs.statistics: histograms of the accepted
  rows, duplicate-group sizes, sampled accepted, rejected and grounded pairs,
  the committed dumps over time);
- ``report/report.html``: the same as a static page (jobs.report): inline SVG
  charts, the sampled pairs' thumbnails, their GRIT boxes; opens offline;
- ``history/``: with the dedup stage, what later dumps are deduplicated
  against (jobs.stages.dedup), committed with the accepted output;
- ``boxes/``: with the ground stage, one verdict per row of the Boxes table
  (jobs.stages.ground: kept, below-score, suppressed, ... or a ``box-*`` reject).

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
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs import __version__
from jobs.checkpoint import Checkpoints, code_version, fingerprint
from jobs.config import known_stages, load_config, stage_classes
from jobs.errors import EXIT_CODES, run_command
from jobs.reference import keys_help
from jobs.report import render_report
from jobs.session import bound_row_groups, get_spark, session_conf
from jobs.stage import Config, Context, Stage, StageCounts, count_stage
from jobs.stages.ingest import INPUT_FORMATS, IngestError, dump_folders
from jobs.statistics import report_statistics
from jobs.storage import Committer, FileStore, Lease, new_run_id

log = logging.getLogger("winnow")

WORK = "_work"  # OUTPUT/_checkpoints/<stage>/_work/<fingerprint>/: a stage's partial work (Context.work)


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow run` and of `spark-submit jobs/pipeline.py`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = keys_help() + "\n\n" + EXIT_CODES
    parser.add_argument("--input", required=True, help="input file or folder (dump=<name>/ sub-folders become dumps)")
    parser.add_argument("--output", required=True, help="output folder: accepted/, rejected/, report/")
    parser.add_argument("--config", help="TOML config file; every threshold is a key (docs/config.md)")
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
        "--stages", help=f"comma-separated stages after ingest (run.stages, available: {','.join(known_stages())})"
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


@dataclass
class Run:
    """One run of the pipeline: what its stages share (``ctx``), its checkpoints, its committer, its funnel."""

    ctx: Context
    stages: list[Stage]  # ingest and the selected stages, in pipeline order
    part_paths: dict[str, str]  # every output part, also those of stages not selected
    committer: Committer
    checkpoints: Checkpoints | None
    lease: Lease  # one run at a time per output
    fingerprint: str = ""  # of the last stage run
    funnel: list[StageCounts] = field(default_factory=list)
    rejected: list[DataFrame] = field(default_factory=list)

    @classmethod
    def start(cls, spark: SparkSession, cfg: Config, input_path: str, output: str) -> Run:
        store, run_id = FileStore(spark), new_run_id()
        bound_row_groups(spark, cfg.run.row_group_bytes)
        ctx = Context(spark, cfg, input_path, output, store, committed={})
        every = [stage(cfg, ctx) for stage in stage_classes()]
        selected = [s for s in every if s is every[0] or s.name in cfg.run.stages]
        # Every part is committed per dump, also one this run does not write: a dump re-run without
        # the dedup (or ground) stage must not keep the history (or box verdicts) of its old output.
        parts = {"accepted": f"{output}/accepted", "rejected": f"{output}/rejected"}
        for stage in every:
            parts.update(stage.part_paths())
        checkpoints = Checkpoints(spark, store, f"{output}/_checkpoints", run_id) if cfg.run.checkpoints else None
        lease = Lease(store, output, run_id, cfg.run.lease_timeout)
        return cls(ctx, selected, parts, Committer(store, output, run_id), checkpoints, lease)

    @contextmanager
    def leased(self) -> Iterator[None]:
        """Hold OUTPUT's lease while the block runs: a second run on it stops at once, naming this one."""
        self.lease.take()
        try:
            yield
        finally:
            self.lease.release()

    def open(self, incremental: bool) -> bool:
        """Finish or undo what a killed run left; pick the dumps to read. False: nothing new to read."""
        ctx = self.ctx
        if incremental:
            found = dump_folders(ctx.spark, ctx.input_path)
            if not found:
                raise IngestError(f"--incremental needs dump=<name>/ folders directly under {ctx.input_path}")
        # A commit a killed run recorded is finished first; staging no commit names is deleted.
        ctx.spark.sparkContext.setJobDescription("commit: finish or clean up an interrupted run")
        for line in self.committer.recover(list(self.part_paths.values())):
            log.info("recovery: %s", line)
        if self.checkpoints is not None:
            self.checkpoints.clean_staging()
        ctx.committed = self.committer.committed()
        if incremental:
            ctx.folders = [f for f in found if ctx.store.partition_value(f) not in ctx.committed]
            return bool(ctx.folders)
        return True

    def run(self, stage: Stage, frame: DataFrame | None) -> DataFrame:
        """The stage's annotated frame, its counts checked and added to the funnel. ``frame`` None:
        ingest, whose rows in are counted from its source (and whose rows name the run's dumps)."""
        ctx = self.ctx
        ctx.spark.sparkContext.setJobDescription(stage.description)
        sections = {s: ctx.cfg.to_dict()[s] for s in stage.sections}
        files = self.referenced_files(sections)
        self.fingerprint = fingerprint(
            stage.name, code_version(), self.fingerprint, sections, files, stage.fingerprint()
        )
        ctx.work = self.work_folder(stage)
        with session_conf(ctx.spark, stage.spark_conf()):
            annotated, schema = self._annotated(stage, frame)
            rows_in = stage.rows_read() if frame is None else self.funnel[-1].accepted
            counts = count_stage(stage.name, rows_in, annotated)
        if schema is not None:
            self.checkpoints.mark(stage.name, self.fingerprint, ctx.dumps, schema)
        if frame is None:
            ctx.dumps = sorted(counts.dumps)
        self.funnel.append(counts)
        return annotated

    def work_folder(self, stage: Stage) -> str:
        """The stage's work folder under this fingerprint; another fingerprint's work is deleted."""
        root = f"{self.ctx.output}/_checkpoints/{stage.name}/{WORK}"
        for name in self.ctx.store.children(root):
            if name != self.fingerprint:
                self.ctx.store.delete(f"{root}/{name}")
        return f"{root}/{self.fingerprint}"

    def _annotated(self, stage: Stage, frame: DataFrame | None) -> tuple[DataFrame, Any]:
        """(the stage's frame, the schema to mark its new checkpoint complete with, or None): read from
        its checkpoint when the fingerprint matches, else computed and checkpointed (or persisted)."""
        ctx = self.ctx
        if self.checkpoints is None:
            return ctx.persist(stage.annotate(frame)), None
        loaded = self.checkpoints.load(stage.name, self.fingerprint, ctx.dumps)
        if loaded is not None:
            log.info("%s: resumed from its checkpoint (%s)", stage.name, self.fingerprint)
            annotated, ctx.dumps = loaded
            return annotated, None
        computed = stage.annotate(frame)
        annotated, ctx.dumps = self.checkpoints.save(stage.name, self.fingerprint, computed, ctx.dumps)
        return annotated, computed.schema

    def referenced_files(self, sections: dict[str, dict[str, Any]]) -> dict[str, list]:
        """The files the stage's config names (models, word lists, blocklists, the Boxes table):
        path, size, time of each, so a file replaced under the same name is a change."""
        out = {}
        for table in sections.values():
            for value in table.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item and ("://" in item or os.path.exists(item)):
                        try:
                            out[item] = self.ctx.store.files(item)
                        except Exception:  # a value that merely looks like a URI (Hadoop cannot parse it)
                            continue
        return out

    def commit(self, accepted: DataFrame, started: float) -> dict[str, Any]:
        """Stage every part and the report, commit them dump by dump; return the report."""
        ctx, committer = self.ctx, self.committer
        rejected: DataFrame = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), self.rejected)
        frames = {"accepted": accepted, "rejected": rejected}
        for stage in self.stages:  # before anything is written: a part's own check may still fail
            frames.update(stage.parts(accepted))
        staged: dict[str, tuple[str, list[str]]] = {}
        for name, path in self.part_paths.items():
            ctx.spark.sparkContext.setJobDescription(f"write: {name} (staged, committed per dump)")
            staged[name] = (path, committer.stage(path, frames[name]) if name in frames else [])
        funnel = [c.as_dict() for c in self.funnel]
        per_dump = {
            dump: {
                "fingerprint": self.fingerprint,
                "stages": {c.stage: c.dumps.get(dump, {"accepted": 0, "rejected": 0}) for c in self.funnel},
                "reasons": {c.stage: dict(sorted(c.dump_reasons.get(dump, {}).items())) for c in self.funnel},
            }
            for dump in ctx.dumps
        }
        # Every committed dump over time: the earlier runs' markers, this run's dumps as it commits them.
        markers = {**ctx.committed, **{d: {"run_id": committer.run_id, **m} for d, m in per_dump.items()}}
        # From the stored stage frames, before they are unpersisted: no stage UDF runs again.
        ctx.spark.sparkContext.setJobDescription("report: statistics")
        statistics, images = report_statistics(
            accepted,
            rejected,
            funnel,
            per_reason=ctx.cfg.run.report_samples,
            config=ctx.cfg.to_dict(),
            verdicts=frames.get("boxes"),
            markers=markers,
        )
        ctx.spark.sparkContext.setJobDescription(None)  # later jobs of this thread are not the report's
        for frame in ctx.cached:
            frame.unpersist()
        report = {
            "winnow_version": __version__,
            "run_id": committer.run_id,
            "input": ctx.input_path,
            "output": ctx.output,
            "dumps": ctx.dumps,
            "stages": funnel,
            "rows_in": self.funnel[0].rows_in,
            "accepted": self.funnel[-1].accepted,
            "rejected": sum(c.rejected for c in self.funnel),
            "seconds": round(time.time() - started, 1),
            "config": ctx.cfg.to_dict(),
        }
        for stage in self.stages:
            report.update(stage.report())
        report["statistics"] = statistics
        page = render_report(report, images)
        files = {"funnel.json": json.dumps(report, indent=2) + "\n", "report.html": page}
        committer.stage_files(f"{ctx.output}/report", files)
        self.lease.confirm()  # a run whose lease was taken over (its heartbeat stalled) must not commit
        committer.commit(staged, per_dump, (f"{ctx.output}/report", sorted(files)))
        if self.checkpoints is not None and not ctx.cfg.run.keep_checkpoints:
            self.checkpoints.drop(ctx.dumps)
        for stage in self.stages:  # the stages' work is in their committed output now
            ctx.store.delete(f"{ctx.output}/_checkpoints/{stage.name}/{WORK}")
        return report


def run_pipeline(
    spark: SparkSession, cfg: Config, input_path: str, output: str, incremental: bool = False
) -> dict[str, Any]:
    """Run ingest and the configured stages, commit the outputs dump by dump, return the funnel.

    ``incremental``: read only the input's ``dump=<name>/`` folders that have no
    committed output; with none, return ``{"new_dumps": []}`` and touch nothing.
    """
    started = time.time()
    run = Run.start(spark, cfg, input_path, output)
    with run.leased():  # before anything is read or written
        if not run.open(incremental):
            return {"new_dumps": [], "committed": sorted(run.ctx.committed)}
        # Models, word lists, blocklists, the Boxes table: loaded and checked before any data is read.
        for stage in run.stages:
            spark.sparkContext.setJobDescription(f"{stage.name}: preflight (models, lists, tables)")
            stage.preflight()
        frame = None
        for stage in run.stages:
            annotated = run.run(stage, frame)
            if frame is None:  # ingest: what later stages need of the source's columns, before they run
                for later in run.stages[1:]:
                    later.check_source(annotated)
            frame, rejected = stage.split(annotated, frame)
            run.rejected.append(rejected)
        return run.commit(frame, started)


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
    return run_command(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
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
    cfg = load_config(args.config, overrides, args.set)
    if "://" not in args.input and not os.path.exists(args.input):
        raise IngestError(f"input not found: {args.input}")
    spark = get_spark("winnow", master=args.master, arrow_batch_size=cfg.run.arrow_batch_size)
    spark.sparkContext.setLogLevel("WARN")
    report = run_pipeline(spark, cfg, args.input, args.output, incremental=args.incremental)
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
