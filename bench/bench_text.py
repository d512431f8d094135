"""Benchmark: the text stage on Spark against raw spaCy in one Python process.

Reads the 10k real web captions in ``../shared/data/laion_style_captions_10k.parquet``
(beside the checkout; skipped with exit 0 when absent) and builds two pair
tables (id, url, caption, dump) of ``--rows`` rows (default 100,000):

- ``repeat10x``: the 10k rows repeated 10 times, as web data repeats. The
  stage judges each distinct caption once, so this measures that shortcut.
- ``distinct``: the same rows with every caption made unique by an English
  prefix ("photo 12345 of ..."), so every row is judged and parsed.

For each variant and each of ``--runs`` runs, alternating, it times:

- Spark: ``with_text_verdicts(pairs, rules)`` written to the ``noop`` sink
  (every column evaluated) on ONE ``local[2]`` session with the job's
  settings (jobs.session.JOB_CONF, the pipeline's Arrow batch size), 4
  shuffle partitions, workers on this interpreter;
- spaCy: ``nlp.pipe`` over the same captions, every row (not deduplicated),
  in this process on one core, with the stage's pipeline (ner excluded) and
  batch size.

and prints medians, captions/s per core and their ratio, the reject funnel of
each variant, the JVM start-up time apart, and writes them as JSON to
``bench/results/text.json``.

    .venv/bin/python bench/bench_text.py [--runs 3] [--rows 100000] [--quick]
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from benchlib import (
    CAPTIONS,
    MASTER,
    REPO,
    BenchArgs,
    Unavailable,
    interleave,
    job_group,
    load_average,
    per_core,
    publish,
    ratio,
    rounded,
    run_main,
    skip_without_captions,
    start_spark,
    timings,
    warm_workers,
)

# More partitions than cores so the two cores stay busy after the groupBy; 2
# (the tests' value) would leave one core idle whenever one partition is slower.
SHUFFLE_PARTITIONS = 4
QUICK_ROWS = 20_000

log = logging.getLogger("winnow.bench.text")


def load_source(path: Path) -> pd.DataFrame:
    """The source rows as (url, caption) strings; a null caption becomes "" as spaCy needs a str."""
    df = pd.read_parquet(path, columns=["URL", "TEXT"])
    return pd.DataFrame({"url": df["URL"].astype("string"), "caption": df["TEXT"].fillna("").astype(str)})


def build_pairs(source: pd.DataFrame, repeats: int, distinct: bool) -> pd.DataFrame:
    """``source`` repeated ``repeats`` times as the canonical pair table (id unique per row).

    With ``distinct`` each caption gets a prefix with its row number ("photo 12 of ..."):
    unique per row and English, though it moves the funnel a little (every
    caption gains three words, and CLD3 calls more short captions English).
    """
    n = len(source)
    ids = pd.RangeIndex(n * repeats)
    captions = pd.concat([source["caption"]] * repeats, ignore_index=True)
    if distinct:
        captions = "photo " + pd.Series(ids + 1).astype(str) + " of " + captions
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "url": pd.concat([source["url"]] * repeats, ignore_index=True),
            "caption": captions,
            "dump": "bench",
        }
    )


def load_english_models(model: str) -> None:
    """CLD3 and the spaCy pipeline in this (worker) process."""
    from udfs import resources

    resources.spacy_pipeline(model)
    resources.language_identifier()


def funnel(annotated: Any, rows: int) -> dict[str, dict[str, int]]:
    """Rows and distinct normalised captions per reason ("accepted" for null); checks conservation."""
    from pyspark.sql import functions as F

    from jobs.stages.text import NORMALISED

    counts = {
        r["reason"] or "accepted": {"rows": r["rows"], "distinct_captions": r["distinct_captions"]}
        for r in annotated.groupBy("reason")
        .agg(F.count(F.lit(1)).alias("rows"), F.count_distinct(NORMALISED).alias("distinct_captions"))
        .collect()
    }
    total = sum(c["rows"] for c in counts.values())
    if total != rows:
        raise RuntimeError(f"text stage returned {total} rows for {rows} input rows")
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]["rows"]))


def time_spark(spark: Any, pairs: Any, rules: Any, group: str) -> tuple[float, list[int]]:
    """Seconds for the text stage with every column evaluated, and the task count of each Spark stage."""
    from jobs.stages.text import with_text_verdicts

    with job_group(spark, group, f"bench text stage {group}") as sc:
        started = time.perf_counter()
        with_text_verdicts(pairs, rules).write.format("noop").mode("overwrite").save()
        seconds = time.perf_counter() - started
        tracker = sc.statusTracker()
        tasks = []
        for job_id in sorted(tracker.getJobIdsForGroup(group)):
            job = tracker.getJobInfo(job_id)
            for stage_id in sorted(job.stageIds) if job else []:
                stage = tracker.getStageInfo(stage_id)
                if stage is not None and stage.numTasks:
                    tasks.append(stage.numTasks)
    return seconds, tasks


def time_spacy(nlp: Any, captions: list[str], batch_size: int) -> float:
    """Seconds for ``nlp.pipe`` over every caption in this process."""
    started = time.perf_counter()
    n = 0
    for _doc in nlp.pipe(captions, batch_size=batch_size):
        n += 1
    seconds = time.perf_counter() - started
    if n != len(captions):
        raise RuntimeError(f"spaCy returned {n} docs for {len(captions)} captions")
    return seconds


def format_report(report: dict[str, Any]) -> str:
    """The results table, the funnels and the context lines; the load averages follow (benchlib.publish)."""
    cores = report["cores"]
    lines = [
        f"JVM start-up (SparkSession getOrCreate): {report['jvm_startup_s']:.1f} s",
        f"spaCy load in the driver ({report['spacy_model']}, {'+'.join(report['spacy_components'])}): "
        f"{report['spacy_load_s']:.1f} s",
        f"master {report['master']} ({cores} cores), {report['runs']} run(s) per side, medians; "
        f"Spark per core = rows / s / {cores}; spaCy = one process, one core, every row parsed",
        "",
        f"{'variant':<10} {'rows':>8} {'spark s':>8} {'spark cap/s/core':>17} "
        f"{'spaCy s':>8} {'spaCy cap/s':>12} {'ratio':>7}",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"{name:<10} {v['rows']:>8,} {v['spark_s_median']:>8.1f} {v['spark_captions_per_s_per_core']:>17,.0f} "
            f"{v['spacy_s_median']:>8.1f} {v['spacy_captions_per_s']:>12,.0f} "
            f"{v['ratio_spark_to_spacy_per_core']:>7.2f}"
        )
    lines.append("ratio = Spark captions/s/core / spaCy captions/s (above 1: Spark per core beats bare spaCy)")
    for name, v in report["variants"].items():
        lines += [
            "",
            f"{name}: spark runs {', '.join(f'{s:.1f}' for s in v['spark_s'])} s; "
            f"spaCy runs {', '.join(f'{s:.1f}' for s in v['spacy_s'])} s; "
            f"worker warm-ups {', '.join(f'{s:.1f}' for s in v['worker_warmup_s'])} s; "
            f"tasks per Spark stage (last run) {v['spark_stage_tasks']}",
            f"{name}: {v['distinct_captions']:,} distinct normalised captions, "
            f"{v['spark_spacy_captions']:,} of them parsed by spaCy inside Spark "
            f"(the baseline parses all {v['rows']:,} rows)",
            f"{name} funnel (warm-up run, untimed):",
        ]
        for reason, c in v["funnel"].items():
            lines.append(f"  {reason:<24} {c['rows']:>9,} rows {c['distinct_captions']:>9,} distinct captions")
    full = report.get("spacy_all_components")
    if full:
        lines += [
            "",
            f"spaCy with all components ({'+'.join(full['components'])}), once over {full['captions']:,} "
            f"captions of {full['variant']}: {full['seconds']:.1f} s = {full['captions_per_s']:,.0f} captions/s "
            f"(stage pipeline on the same captions: {full['stage_pipeline_captions_per_s']:,.0f} captions/s)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "text",
        rows=100_000,
        quick_rows=QUICK_ROWS,
        rows_help="rows per variant, rounded up to whole repeats of the source",
        quick_runs=1,
        quick_help=f"{QUICK_ROWS:,} rows, 1 run",
    )
    parser.add_argument(
        "--skip-all-components", action="store_true", help="do not time spaCy with every component (ner included)"
    )
    args = parser.parse(argv)
    runs, target_rows = args.runs, args.rows

    if skip_without_captions("bench_text"):
        return 0

    from pyspark import StorageLevel

    from jobs.config import RunConfig
    from jobs.stages.text import with_text_verdicts
    from schemas import reasons
    from schemas.tables import PAIR
    from udfs import resources
    from udfs.text_rules import TextConfig, TextRules

    rules = TextRules.from_config(TextConfig())
    source = load_source(CAPTIONS)
    repeats = math.ceil(target_rows / len(source))
    # COYO rejects a caption seen more than max_occurrences (10) times. At exactly
    # 10 repeats a caption unique in the source occurs 10 times and passes, so the
    # funnel stays realistic; only the ~12 captions already repeated in the source
    # go over. More repeats would reject every caption as too frequent.
    if repeats > rules.config.max_occurrences:
        log.warning(
            "%d repeats > text.max_occurrences %d: every repeated caption is rejected as too frequent",
            repeats,
            rules.config.max_occurrences,
        )
    variants = {
        "repeat10x" if repeats == 10 else f"repeat{repeats}x": build_pairs(source, repeats, distinct=False),
        "distinct": build_pairs(source, repeats, distinct=True),
    }
    log.info("%d source rows x %d repeats = %d rows per variant", len(source), repeats, len(source) * repeats)

    load_start = load_average()
    try:
        started = time.perf_counter()
        nlp = resources.spacy_pipeline(rules.config.spacy_model)
        spacy_load_s = time.perf_counter() - started
    except resources.ModelUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    arrow_batch_size = RunConfig().arrow_batch_size
    spark, jvm_startup_s = start_spark(MASTER, "winnow-bench-text", SHUFFLE_PARTITIONS, arrow_batch_size)
    log.info("JVM start-up %.1f s, spaCy load %.1f s", jvm_startup_s, spacy_load_s)
    cores = spark.sparkContext.defaultParallelism

    frames: dict[str, Any] = {}
    captions: dict[str, list[str]] = {}
    try:
        for name, pdf in variants.items():
            # Cached like the ingest output the pipeline hands to the text stage,
            # so the timings hold the stage, not building the input.
            frames[name] = spark.createDataFrame(pdf, schema=PAIR).persist(StorageLevel.MEMORY_ONLY)
            frames[name].count()
            captions[name] = pdf["caption"].tolist()
        if len(set(captions["distinct"])) != len(captions["distinct"]):
            raise RuntimeError("the distinct variant has repeated captions")

        results: dict[str, dict[str, Any]] = {}
        for name, frame in frames.items():
            log.info("%s: warm-up run (untimed): Python workers start, spaCy loads per worker; funnel", name)
            started = time.perf_counter()
            f = funnel(with_text_verdicts(frame, rules), len(captions[name]))
            log.info("%s: warm-up run %.1f s", name, time.perf_counter() - started)
            results[name] = {"funnel": f, "worker_warmup_s": []}

        def spark_side(run: int, name: str) -> float:
            r = results[name]
            r["worker_warmup_s"].append(
                warm_workers(spark, cores, partial(load_english_models, rules.config.spacy_model))
            )
            seconds, tasks = time_spark(spark, frames[name], rules, f"bench-{name}-{run}")
            r["spark_stage_tasks"] = tasks
            log.info("run %d/%d %s: Spark %.1f s (tasks per stage %s)", run, runs, name, seconds, tasks)
            return seconds

        def spacy_side(run: int, name: str) -> float:
            seconds = time_spacy(nlp, captions[name], rules.config.spacy_batch_size)
            log.info("run %d/%d %s: spaCy %.1f s", run, runs, name, seconds)
            return seconds

        # Per round and variant: Spark (workers warmed first), then spaCy on the same captions.
        sides = {}
        for name in frames:
            sides[name, "spark"] = partial(spark_side, name=name)
            sides[name, "spacy"] = partial(spacy_side, name=name)
        seconds = interleave(runs, sides)

        variants_report = {}
        for name, r in results.items():
            rows = len(captions[name])
            spark_s = statistics.median(seconds[name, "spark"])
            spacy_s = statistics.median(seconds[name, "spacy"])
            spark_rate = per_core(rows, spark_s, cores)
            spacy_rate = rows / spacy_s
            f = r["funnel"]
            parsed = f.get("accepted", {}).get("distinct_captions", 0)
            parsed += f.get(reasons.NO_NOUN, {}).get("distinct_captions", 0)
            variants_report[name] = {
                "rows": rows,
                "repeats": repeats,
                "distinct_captions": sum(c["distinct_captions"] for c in f.values()),
                "spark_spacy_captions": parsed,
                **timings(seconds[name, "spark"], "spark_s"),
                "spark_captions_per_s_per_core": round(spark_rate, 1),
                "spark_stage_tasks": r["spark_stage_tasks"],
                "worker_warmup_s": rounded(r["worker_warmup_s"]),
                **timings(seconds[name, "spacy"], "spacy_s"),
                "spacy_captions_per_s": round(spacy_rate, 1),
                "ratio_spark_to_spacy_per_core": ratio(spark_rate, spacy_rate),
                "funnel": f,
            }

        all_components = None
        if not args.skip_all_components:
            import spacy

            # For information: what excluding ner saves. One pass over one copy of the
            # source (the repeated variant is that copy, 10 times over).
            name = next(iter(variants_report))
            sample = captions[name][: len(source)]
            full_nlp = spacy.load(rules.config.spacy_model)
            log.info("spaCy with all components %s over %d captions", full_nlp.pipe_names, len(sample))
            full_s = time_spacy(full_nlp, sample, rules.config.spacy_batch_size)
            all_components = {
                "variant": name,
                "components": full_nlp.pipe_names,
                "captions": len(sample),
                "seconds": round(full_s, 3),
                "captions_per_s": round(len(sample) / full_s, 1),
                "stage_pipeline_captions_per_s": variants_report[name]["spacy_captions_per_s"],
            }
    finally:
        for frame in frames.values():
            frame.unpersist()
        spark.stop()

    report = {
        "bench": "text",
        "source": str(CAPTIONS.relative_to(REPO.parent)),
        "master": MASTER,
        "cores": cores,
        "shuffle_partitions": SHUFFLE_PARTITIONS,
        "arrow_batch_size": RunConfig().arrow_batch_size,
        "runs": runs,
        "jvm_startup_s": round(jvm_startup_s, 3),
        "spacy_model": rules.config.spacy_model,
        "spacy_components": nlp.pipe_names,
        "spacy_batch_size": rules.config.spacy_batch_size,
        "spacy_load_s": round(spacy_load_s, 3),
        "variants": variants_report,
        "spacy_all_components": all_components,
    }
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_text"))
