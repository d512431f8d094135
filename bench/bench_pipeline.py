"""Benchmark: what stage checkpoints and the per-dump commit cost, and what a resume saves.

Builds a crawl of two dumps (``dump=d1/``, ``dump=d2/``) from the 10k real web
captions in ``../shared/data/laion_style_captions_10k.parquet`` (beside the
checkout; skipped with exit 0 when absent), ``--rows`` rows in all (default
100,000: the captions repeated, as web data repeats, each row with its own
URL and a made-up pHash in ``source_phash``), and runs the pipeline
(``jobs.pipeline.run_pipeline``: ingest, text, dedup on the source pHash, the
report and the commit) on ONE ``local[2]`` session, alternating, ``--runs``
times each:

- ``checkpoints``: the default, every stage written to ``_checkpoints/`` and
  read back (``run.checkpoints = true``);
- ``in-memory`` (the baseline): ``run.checkpoints = false``, stage frames
  persisted in memory and on disk as before checkpoints existed; the same
  commit;
- ``resume``: a re-run over an output whose checkpoints match
  (``run.keep_checkpoints = true`` on the run before), so every stage is read
  from disk and only the counts, the report and the commit run.

It prints medians, rows/s per core, the ratios against the in-memory run, the
JVM start-up apart and the load average, and writes them as JSON to
``bench/results/pipeline.json``.

    .venv/bin/python bench/bench_pipeline.py [--runs 3] [--rows 100000]
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import (
    CAPTIONS,
    CORES,
    MASTER,
    BenchArgs,
    interleave,
    load_average,
    per_core,
    publish,
    ratio,
    run_main,
    skip_without_captions,
    start_spark,
    warm_workers,
)

STAGES = ["text", "dedup"]
VARIANTS = ("checkpoints", "in-memory", "resume")

log = logging.getLogger("winnow.bench.pipeline")


def write_crawl(folder: Path, rows: int) -> None:
    """Two dumps of ``rows`` rows in all, the real captions repeated, unique URLs and pHashes."""
    captions = [c for c in pq.read_table(CAPTIONS, columns=["TEXT"]).column("TEXT").to_pylist() if c]
    half = rows // 2
    for n, (dump, start) in enumerate((("d1", 0), ("d2", half))):
        count = half if n == 0 else rows - half
        ids = range(start, start + count)
        table = pa.table(
            {
                "url": [f"https://img.example/{i}.jpg" for i in ids],
                "caption": [captions[i % len(captions)] for i in ids],
                "source_phash": [f"{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}" for i in ids],
            }
        )
        (folder / f"dump={dump}").mkdir(parents=True)
        pq.write_table(table, folder / f"dump={dump}" / "part-0.parquet")


def run_once(spark: Any, crawl: Path, output: Path, **run: bool) -> float:
    """Wall seconds of one ``run_pipeline`` over ``crawl`` into ``output``, with ``run.<key>=<value>`` set."""
    from jobs.config import load_config
    from jobs.pipeline import run_pipeline

    sets = ["dedup.phash_col=source_phash", *[f"run.{k}={str(v).lower()}" for k, v in run.items()]]
    cfg = load_config(None, {"run.stages": STAGES}, sets)
    started = time.perf_counter()
    report = run_pipeline(spark, cfg, str(crawl), str(output))
    seconds = time.perf_counter() - started
    assert report["rows_in"] > 0
    return seconds


def load_text_stage() -> None:
    """The text stage's models and tools in a (worker) process, before a timed run (benchlib.warm_workers)."""
    from jobs.stages.text import rules_from_config
    from udfs.text_rules import TextConfig
    from udfs.text_rules_zh import ChineseTextConfig

    rules_from_config(TextConfig(), ChineseTextConfig())


def order(run: int, names: list[str]) -> list[str]:
    """In-memory first on odd rounds, checkpoints first on even ones; the resume last in each."""
    return ["in-memory", "checkpoints", "resume"] if run % 2 else ["checkpoints", "in-memory", "resume"]


def time_variant(run: int, variant: str, spark: Any, crawl: Path, work: Path) -> float:
    """One timed pipeline run of ``variant`` into a fresh output, the Python workers warmed first."""
    warm_workers(spark, CORES, load_text_stage)
    output = work / f"out-{variant}-{run - 1}"
    if variant == "resume":
        # The run before (untimed) leaves matching checkpoints behind.
        run_once(spark, crawl, output, keep_checkpoints=True)
        warm_workers(spark, CORES, load_text_stage)
        seconds = run_once(spark, crawl, output, keep_checkpoints=True)
    else:
        seconds = run_once(spark, crawl, output, checkpoints=variant == "checkpoints")
    shutil.rmtree(output)
    log.info("run %d: %-12s %6.1f s", run, variant, seconds)
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = BenchArgs(__doc__, "pipeline", rows=100_000, rows_help="rows in all, over the two dumps").parse(argv)
    if skip_without_captions("bench_pipeline"):
        return 0
    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-pipeline-"))
    try:
        crawl = work / "crawl"
        write_crawl(crawl, args.rows)
        spark, jvm_seconds = start_spark(MASTER, "winnow-bench-pipeline", 4, 5000)
        sides = {v: partial(time_variant, variant=v, spark=spark, crawl=crawl, work=work) for v in VARIANTS}
        times = interleave(args.runs, sides, order)
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["in-memory"]
    report = {
        "rows": args.rows,
        "stages": ["ingest", *STAGES],
        "runs": args.runs,
        "seconds": times,
        "median_seconds": medians,
        "rows_per_second_per_core": {k: round(per_core(args.rows, v), 1) for k, v in medians.items()},
        # Speed against the in-memory run: its seconds over the variant's (above 1: faster).
        "ratio_vs_in_memory": {k: ratio(base, v, 2) for k, v in medians.items()},
        "jvm_start_seconds": round(jvm_seconds, 1),
    }
    publish(report, load_start, args.output, format_report)
    return 0


def format_report(r: dict[str, Any]) -> str:
    """The medians table; the load averages follow (benchlib.publish)."""
    lines = [
        f"pipeline ({', '.join(r['stages'])}), {r['rows']:,} rows in two dumps, {MASTER}, "
        f"medians of {r['runs']} interleaved runs; JVM start-up {r['jvm_start_seconds']} s apart",
        f"{'variant':<14}{'seconds':>9}{'rows/s/core':>13}{'speed vs in-memory':>20}",
    ]
    for k in ("in-memory", "checkpoints", "resume"):
        lines.append(
            f"{k:<14}{r['median_seconds'][k]:>9.1f}{r['rows_per_second_per_core'][k]:>13,.1f}"
            f"{r['ratio_vs_in_memory'][k]:>20.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_pipeline"))
