"""Benchmark: the score stage's plumbing per row (Spark, Arrow, decode, preprocessing), against one process.

Data: ``--rows`` images made with tests/image_factory.py's ``scene`` (random
shapes and grain), 256 pixels on the short side, 4:3 or 3:4, JPEG quality 95
(what ``image.keep_bytes`` keeps: about 30 KB each), with captions from a
small vocabulary; written once per size to ``build/bench-score/<rows>/``.

Models: tests/onnx_factory.py's CLIP pair (image encoder with a 224 x 224
input, as CLIP ViT-B/32, then global average pooling and an 8-wide
projection; text encoder: embedding lookup and mean over 16 tokens; the
``tokenizers`` WordLevel tokenizer.json) and its NSFW classifier (224 x 224,
pooling, sigmoid). The networks themselves cost almost nothing, so what is
measured is everything around them: a real CLIP's preprocessing (bicubic
resize to cover 224 x 224, centre crop, normalisation to NCHW float32), JPEG
decode, Arrow batches in and out of the Python workers, and the stage's
SQL (filters, one approxQuantile pass, the funnel count). A real ViT-B/32 adds
its own inference time on top (README: "Model scores").

Spark: ONE ``local[2]`` session (benchlib.start_spark); timed from reading the
parquet to the end of writing accepted and rejected rows to the ``noop`` sink,
as jobs.pipeline runs the stage: ``with_scores`` persisted, the top-50 %
cutoff by ``similarity_cutoff``, ``with_score_verdicts``, ``count_stage``
(conservation checked), ``split_score``; ``score.batch_size`` 32, 6 tasks
(3 per core, as the image stage leaves them: the input is TASKS parquet files). Model loading and the driver's
probe (``prepare_scorers``) happen once before the runs and are not timed; one
untimed warm-up run on 200 rows first; the JVM start-up is reported apart.

Baselines, in the same run and interleaved with the Spark runs, one process,
one core (ONNX Runtime with 1 thread, as each Spark task has), the same
models through the same ``udfs.scorers`` objects, the image bytes already in
memory (read untimed from the same parquet):

- ``decode+score``: ``udfs.scorers.score_batch`` per 32 rows: JPEG decode,
  preprocessing and both models: the stage's own per-row Python work without Spark;
- ``score decoded``: the scorers called on images decoded beforehand
  (untimed): preprocessing and inference only, the cost floor.

ratio = Spark rows/s per core / baseline rows/s. Results: a table on stdout
and ``bench/results/score.json`` (``score-quick.json`` with ``--quick``).

    .venv/bin/python bench/bench_score.py [--rows 4000] [--runs 3] [--quick]
"""

from __future__ import annotations

import io
import logging
import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import (
    BUILD,
    CORES,
    MASTER,
    REPO,
    BenchArgs,
    ensure_cached,
    interleave,
    load_average,
    per_core,
    publish,
    ratio,
    run_main,
    start_spark,
    timings,
)

sys.path.insert(0, str(REPO / "tests"))  # the tests' image and model factories

DATA_DIR = BUILD / "bench-score"
DEFAULT_ROWS = 4_000
QUICK_ROWS = 600
WARM_UP_ROWS = 200
TASKS = 6
BATCH = 32
TOP_FRACTION = 0.5
MODEL_SIZE = 224
GENERATOR_VERSION = "v2"
WORDS = "a photo of the red blue green car dog cat house tree street sky field on in with and".split()

log = logging.getLogger("bench_score")


def ensure_data(rows: int) -> tuple[Path, dict[str, Any]]:
    """build/bench-score/<rows>/pairs.parquet (made once per size) and its marker (the mean JPEG size)."""
    folder = DATA_DIR / str(rows)
    want = {"version": GENERATOR_VERSION, "rows": rows}
    return folder / "pairs.parquet", ensure_cached(folder, want, partial(write_pairs, rows), f"{rows:,} images")


def write_pairs(rows: int, folder: Path) -> dict[str, Any]:
    """``rows`` pairs with their JPEGs as TASKS parquet files in ``folder``/pairs.parquet; returns their mean size."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from image_factory import encode, scene

    rnd = random.Random(20261129)
    records = []
    for i in range(rows):
        w, h = (341, 256) if i % 2 else (256, 341)
        data = encode(scene(w, h, seed=i, noise=0.1), "JPEG", quality=95)
        caption = " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(4, 12)))
        records.append({"id": i, "url": f"http://bench/{i}.jpg", "caption": caption, "dump": "d1", "image": data})
    # TASKS files: Spark reads them as TASKS partitions (3 per core, as the image stage leaves its rows).
    out = folder / "pairs.parquet"
    out.mkdir()
    step = -(-rows // TASKS)
    for k in range(TASKS):
        part = records[k * step : (k + 1) * step]
        if part:
            pq.write_table(pa.Table.from_pylist(part), out / f"part-{k}.parquet")
    mean_kb = sum(len(r["image"]) for r in records) / rows / 1024
    return {"mean_kib": round(mean_kb, 1)}


def score_sets(models: Any) -> list[str]:
    """The --set overrides pointing the score stage at the built models, with the bench's batch and top fraction."""
    return [
        f"score.clip_image_model={models.image}",
        f"score.clip_text_model={models.text}",
        f"score.clip_tokenizer={models.tokenizer}",
        f"score.nsfw_model={models.nsfw}",
        f"score.batch_size={BATCH}",
        f"score.top_fraction={TOP_FRACTION}",
    ]


def time_spark(spark: Any, path: Path, cfg: Any, scoring: Any) -> tuple[float, dict[str, int]]:
    """Wall seconds of the stage as jobs.pipeline runs it, from the parquet read to both noop writes; its counts."""
    from pyspark import StorageLevel

    from jobs.session import session_conf
    from jobs.stage import count_stage
    from jobs.stages.score import similarity_cutoff, split_score, with_score_verdicts, with_scores

    started = time.perf_counter()
    pairs = spark.read.parquet(str(path))
    rows_in = pairs.count()  # parquet footers
    scored = with_scores(pairs, scoring, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size)}):
            cutoff = similarity_cutoff(scored, scoring, cfg)
            annotated = with_score_verdicts(scored, scoring, cfg, cutoff)
            counts = count_stage("score", rows_in, annotated)  # raises on a conservation failure
            accepted, rejected = split_score(annotated, scoring, pairs.columns)
            accepted.write.format("noop").mode("overwrite").save()
            rejected.write.format("noop").mode("overwrite").save()
    finally:
        scored.unpersist()
    seconds = time.perf_counter() - started
    return seconds, {"rows_in": rows_in, "accepted": counts.accepted, **counts.reasons}


def baseline_run(blobs: list[bytes], captions: list[str], loaded: list, decoded: list | None) -> float:
    """One process: score_batch per BATCH rows (decoded is None), or the scorers on pre-decoded images."""
    from udfs import scorers

    started = time.perf_counter()
    for start in range(0, len(blobs), BATCH):
        caps = captions[start : start + BATCH]
        if decoded is None:
            scorers.score_batch(loaded, blobs[start : start + BATCH], caps)
        else:
            imgs = decoded[start : start + BATCH]
            for _, scorer in loaded:
                scorer(imgs, caps)
    return time.perf_counter() - started


def format_report(report: dict[str, Any]) -> str:
    """The Spark and baseline table, the per-row costs and the counts; the load averages follow (publish)."""
    s = report["spark"]
    lines = [
        f"score stage, {report['rows']:,} images ({report['mean_kib']} KiB JPEG, 256 px short side), CLIP pair + NSFW "
        f"classifier at {MODEL_SIZE} px (tiny networks: plumbing cost), {report['master']}, batch {BATCH}, "
        f"runs interleaved, medians",
        f"JVM start-up {report['jvm_startup_s']:.1f} s, model load + probe on the driver "
        f"{report['prepare_s']:.2f} s (apart); warm-up {report['warm_up_s']:.1f} s on {WARM_UP_ROWS} rows (untimed)",
        "",
        f"{'variant':<40} {'runs':>4} {'seconds':<22} {'median s':>9} {'rows/s/core':>12} {'ratio':>6}",
        f"{'spark local[2] (per core)':<40} {len(s['seconds']):>4} {', '.join(f'{x:.2f}' for x in s['seconds']):<22} "
        f"{s['seconds_median']:>9.2f} {s['rows_per_s_per_core']:>12,.1f} {'':>6}",
    ]
    for name, b in report["baseline"].items():
        lines.append(
            f"{'baseline ' + name + ', 1 process':<40} {len(b['seconds']):>4} "
            f"{', '.join(f'{x:.2f}' for x in b['seconds']):<22} {b['seconds_median']:>9.2f} "
            f"{b['rows_per_s']:>12,.1f} {b['ratio']:>6.2f}"
        )
    lines += [
        "",
        "ratio = Spark rows/s per core / baseline rows/s (one core); per-row cost: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in report["ms_per_row"].items()),
        f"checked every run: rows in = accepted + rejected; counts {s['counts']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "score",
        rows=DEFAULT_ROWS,
        quick_rows=QUICK_ROWS,
        min_rows=WARM_UP_ROWS,
        rows_help="images",
        quick_help=f"{QUICK_ROWS:,} images",
    )
    args = parser.parse(argv)
    rows = args.rows

    import pyarrow.parquet as pq
    from onnx_factory import build_models
    from PIL import Image

    from jobs.config import RunConfig, load_config
    from jobs.stages.score import prepare_scorers
    from udfs import scorers

    load_start = load_average()
    (path, meta), (warm_path, _) = ensure_data(rows), ensure_data(WARM_UP_ROWS)
    models = build_models(DATA_DIR / "models", WORDS, size=MODEL_SIZE)
    cfg = load_config(sets=score_sets(models)).score
    spark, jvm_startup_s = start_spark(MASTER, "winnow-bench-score", 2 * CORES, RunConfig().arrow_batch_size)
    table = pq.read_table(path, columns=["image", "caption"])
    blobs, captions = table.column("image").to_pylist(), table.column("caption").to_pylist()
    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    for img in decoded:
        img.load()
    spark_counts: dict[str, int] = {}

    def spark_side(run: int) -> float:
        seconds, counts = time_spark(spark, path, cfg, scoring)
        spark_counts.update(counts)  # the last run's (count_stage checks every run's)
        log.info("run %d/%d spark: %.2f s = %.1f rows/s/core", run, args.runs, seconds, per_core(rows, seconds))
        return seconds

    def baseline_side(run: int, name: str, pre: list | None) -> float:
        seconds = baseline_run(blobs, captions, loaded, pre)
        log.info("run %d/%d baseline %s: %.2f s = %.1f rows/s", run, args.runs, name, seconds, rows / seconds)
        return seconds

    try:
        started = time.perf_counter()
        scoring = prepare_scorers(spark, cfg)
        prepare_s = time.perf_counter() - started
        loaded = [(spec.label, scorers.get_scorer(spec)) for spec in scoring.specs]
        started = time.perf_counter()
        time_spark(spark, warm_path, cfg, scoring)
        warm_up_s = time.perf_counter() - started
        baseline_run(blobs[:WARM_UP_ROWS], captions[:WARM_UP_ROWS], loaded, None)
        # Each round: Spark, then the baselines.
        seconds = interleave(
            args.runs,
            {
                "spark": spark_side,
                "decode+score": partial(baseline_side, name="decode+score", pre=None),
                "score decoded": partial(baseline_side, name="score decoded", pre=decoded),
            },
        )
    finally:
        spark.stop()

    spark_seconds = seconds.pop("spark")  # what remains are the baselines
    med = statistics.median(spark_seconds)
    spark_rate = per_core(rows, med)
    report: dict[str, Any] = {
        "bench": "score",
        "master": MASTER,
        "cores": CORES,
        "rows": rows,
        "runs": args.runs,
        "batch_size": BATCH,
        "tasks": TASKS,
        "model_size": MODEL_SIZE,
        "mean_kib": meta.get("mean_kib"),
        "jvm_startup_s": round(jvm_startup_s, 3),
        "prepare_s": round(prepare_s, 3),
        "warm_up_s": round(warm_up_s, 3),
        "spark": {
            **timings(spark_seconds),
            "rows_per_s_per_core": round(spark_rate, 1),
            "counts": spark_counts,
        },
        "baseline": {},
        "ms_per_row": {"spark (per core)": 1000 / spark_rate},
    }
    for name, runs in seconds.items():
        b_med = statistics.median(runs)
        report["baseline"][name] = {
            **timings(runs),
            "rows_per_s": round(rows / b_med, 1),
            "ratio": ratio(spark_rate, rows / b_med),
        }
        report["ms_per_row"][name] = 1000 * b_med / rows
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_score"))
