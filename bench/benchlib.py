"""What the benchmarks share: a timed local SparkSession set up as the tests' and the job's."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def start_spark(master: str, app_name: str, shuffle_partitions: int, arrow_batch_size: int) -> tuple[Any, float]:
    """One local session like the tests' (UI off, UTC, job settings); returns it and its start-up seconds.

    A bench, unlike a job, names its master: per-core figures need a known core count.
    """
    # Python workers must run this interpreter, where winnow is installed (editable).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from jobs.session import JOB_CONF, check_java

    check_java()
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        # What `winnow run` sets from run.arrow_batch_size (jobs.session.get_spark).
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_size))
    )
    for key, value in JOB_CONF.items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    spark = builder.getOrCreate()
    seconds = time.perf_counter() - started
    spark.sparkContext.setLogLevel("ERROR")
    return spark, seconds


def warm_workers(spark: Any, cores: int, load: Callable[[], Any]) -> float:
    """Start one Python worker per core and run ``load`` (an importable function) in each; returns seconds.

    Spark kills Python workers idle for a minute (PythonWorkerFactory's
    IDLE_WORKER_TIMEOUT_NS, not configurable), and a baseline run can last
    longer than that, so benches warm the workers again before every timed
    Spark run: the timing then covers the stage, not worker start-up and model
    loading, which a long job pays once per worker.
    """

    def run(batches: Any) -> Any:
        load()
        yield from batches

    started = time.perf_counter()
    spark.range(0, cores, 1, cores).mapInPandas(run, "id long").write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, reported with each benchmark (a busy machine skews its numbers)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def publish(report: dict[str, Any], load_start: list[float] | None, output: Path, fmt: Callable[[dict], str]) -> None:
    """Add the machine's facts to ``report``, print it with ``fmt`` and write it as JSON to ``output``."""
    report.update(
        load_average_start=load_start,
        load_average_end=load_average(),
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        unix_time=int(time.time()),
    )
    print(fmt(report))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {output}")


def cached_marker(marker: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of generated bench data if it exists and matches ``want`` (else the data is regenerated)."""
    if marker.exists():
        meta = json.loads(marker.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            return meta
    return None
