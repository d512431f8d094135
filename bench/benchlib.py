"""The harness every benchmark shares; each bench_*.py holds only its data, variants, baselines and checks.

What lives here, once:

- where things are: ``REPO``, ``BUILD`` (generated data, baseline venvs), ``RESULTS`` (JSON), the
  real captions beside the checkout (``CAPTIONS``, ``skip_without_captions``), and ``MASTER`` /
  ``CORES``: every bench runs on ``local[2]``, so per-core figures divide by a known core count;
- the command line: ``BenchArgs`` (``--runs``, ``--rows``, ``--quick``, ``--output``, logging) and
  ``run_main`` (a missing Java or model ends a bench with exit 2 and one line, no traceback);
- generated data cached under build/ with a marker: ``cached_marker``, ``ensure_cached``;
- Spark: ``start_spark`` (its start-up timed apart from the measured runs), ``warm_workers``
  (Python-worker start-up timed apart too), ``job_group`` (count a run's jobs and tasks);
- the measurements: ``interleave`` (every variant and baseline once per round, in a chosen order:
  ``in_turn``, ``alternate``, ``rotate``), ``timings`` / ``rounded`` (medians and the runs, as
  reported), ``per_core`` and ``ratio`` (Spark per core against a one-core baseline);
- the results: ``load_average`` and ``publish`` (machine facts, printed report, JSON file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
RESULTS = REPO / "bench" / "results"
# The 10k real web captions beside the checkout (not in a user's clone): the text and pipeline benches read them.
CAPTIONS = REPO.parent / "shared" / "data" / "laion_style_captions_10k.parquet"
# Every bench names its master (a job does not): per-core figures need a known core count, and the
# one-process baselines they are compared with run on one core.
MASTER = "local[2]"
CORES = 2
RUNS = 3
MARKER = "_bench.json"

log = logging.getLogger("winnow.bench")

K = TypeVar("K", bound=Hashable)


# --- command line -------------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """Something a bench needs is missing on this machine (Java, a model): ``run_main`` exits 2 with the reason."""


def run_main(main: Callable[[list[str] | None], int], name: str, argv: list[str] | None = None) -> int:
    """``main(argv)``, or 2 with one line on stderr when it raises ``Unavailable`` (a setup problem, not a bug)."""
    try:
        return main(argv)
    except Unavailable as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2


class BenchArgs(argparse.ArgumentParser):
    """The options every bench takes, resolved one way by ``parse``; a bench adds its own before parsing.

    - ``--runs``: timed rounds (default 3; ``quick_runs`` with --quick). Three or more give a
      median that one slow round (a GC, a neighbour's job) does not move.
    - ``--rows`` (when the bench has a ``rows`` default; ``quick_rows`` with --quick), at least ``min_rows``.
    - ``--quick`` (when ``quick_help`` is given): a smoke run.
    - ``--output``: bench/results/<name>.json, or <name>-quick.json with --quick, so a smoke run
      never overwrites the figures of a full one.
    """

    def __init__(
        self,
        doc: str,
        name: str,
        *,
        rows: int | None = None,
        quick_rows: int | None = None,
        min_rows: int = 1,
        rows_help: str = "rows",
        quick_runs: int | None = None,
        quick_help: str | None = None,
    ) -> None:
        super().__init__(description=doc.split("\n\n")[0])
        self.name = name
        self.rows, self.quick_rows, self.min_rows = rows, quick_rows, min_rows
        self.quick_runs = quick_runs
        self.add_argument(
            "--runs",
            type=int,
            help=f"timed rounds, the variants and baselines interleaved in each (default {RUNS}"
            + (f"; {quick_runs} with --quick)" if quick_help and quick_runs else ")"),
        )
        if rows is not None:
            self.add_argument(
                "--rows",
                type=int,
                help=f"{rows_help} (default {rows:,}" + (f"; {quick_rows:,} with --quick)" if quick_rows else ")"),
            )
        if quick_help is not None:
            self.add_argument("--quick", action="store_true", help=f"smoke run: {quick_help}")
        self.add_argument(
            "--output",
            type=Path,
            help=f"JSON results (default bench/results/{name}.json"
            + (f"; {name}-quick.json with --quick)" if quick_help else ")"),
        )

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """The parsed options with --runs, --rows and --output filled in and checked; logging set up."""
        args = self.parse_args(argv)
        quick = bool(getattr(args, "quick", False))
        if args.runs is None:
            args.runs = self.quick_runs if quick and self.quick_runs else RUNS
        if args.runs < 1:
            self.error("--runs must be at least 1")
        if self.rows is not None:
            if args.rows is None:
                args.rows = self.quick_rows if quick and self.quick_rows else self.rows
            if args.rows < self.min_rows:
                self.error(f"--rows must be at least {self.min_rows}")
        if args.output is None:
            args.output = RESULTS / f"{self.name}{'-quick' if quick else ''}.json"
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return args


def skip_without_captions(name: str) -> bool:
    """True (after saying so) when ``CAPTIONS`` is absent: a clone has no ../shared/data, and that is no failure."""
    if CAPTIONS.exists():
        return False
    print(f"{name}: skipped: {CAPTIONS} is absent (../shared/data sits beside the checkout, not in a clone)")
    return True


# --- generated data -----------------------------------------------------------------------------------------------


def cached_marker(marker: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of generated bench data if it exists and matches ``want`` (else the data is regenerated)."""
    if marker.exists():
        meta = json.loads(marker.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            return meta
    return None


def ensure_cached(
    path: Path, want: dict[str, Any], build: Callable[[Path], dict[str, Any]], what: str
) -> dict[str, Any]:
    """The marker of the data under ``path`` (``path/_bench.json``), generated first unless it matches ``want``.

    Generating a bench table can take minutes at full size, so it is made once per size and
    generator version (bump the version in ``want`` when the generator changes) and read back by
    every run. ``build(tmp)`` writes the data into an empty sibling folder and returns what it
    planted (the counts the checks compare with); the folder is then renamed into place and the
    marker, ``want`` + that + ``generate_s``, written last: a generation killed half-way leaves no
    marker and is redone rather than read.
    """
    marker = path / MARKER
    if (meta := cached_marker(marker, want)) is not None:
        return meta
    log.info("generating %s into %s (once per size)", what, path)
    started = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    planted = build(tmp)
    meta = {**want, **planted, "generate_s": round(time.perf_counter() - started, 1)}
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    marker.write_text(json.dumps(meta, indent=2) + "\n")
    log.info("generated %s in %.1f s: %s", what, meta["generate_s"], planted)
    return meta


# --- Spark --------------------------------------------------------------------------------------------------------


def start_spark(master: str, app_name: str, shuffle_partitions: int, arrow_batch_size: int) -> tuple[Any, float]:
    """One local session like the tests' (UI off, UTC, job settings); returns it and its start-up seconds.

    The start-up (JVM launch, getOrCreate) is returned apart so that no timed run pays it: a long
    job pays it once. Raises ``Unavailable`` when there is no usable Java.
    """
    # Python workers must run this interpreter, where winnow is installed (editable).
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from jobs.session import JOB_CONF, JavaMissing, check_java

    try:
        check_java()
    except JavaMissing as exc:
        raise Unavailable(str(exc)) from exc
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
    """Start one Python worker per core and run ``load`` in each (import modules, load models); returns seconds.

    Spark kills Python workers idle for a minute (PythonWorkerFactory's
    IDLE_WORKER_TIMEOUT_NS, not configurable), and a baseline run can last
    longer than that, so benches warm the workers again before every timed
    Spark run: the timing then covers the stage, not worker start-up and model
    loading, which a long job pays once per worker. ``load`` is pickled to the
    workers: a function of the bench script itself (``__main__``, pickled by
    value) or of winnow, not of another bench module (the workers cannot import it).
    """

    def run(batches: Any) -> Any:
        load()
        yield from batches

    started = time.perf_counter()
    spark.range(0, cores, 1, cores).mapInPandas(run, "id long").write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


@contextmanager
def job_group(spark: Any, group: str, description: str) -> Iterator[Any]:
    """Tag the Spark jobs run inside with ``group``; yields the SparkContext.

    The status tracker then gives the jobs, stages and tasks of one timed run
    (``getJobIdsForGroup(group)``); on leaving, later jobs go to an idle group so
    they are not counted with it.
    """
    sc = spark.sparkContext
    sc.setJobGroup(group, description)
    try:
        yield sc
    finally:
        sc.setJobGroup("bench-idle", "bench idle")


# --- measurements -------------------------------------------------------------------------------------------------


def in_turn(run: int, names: list[K]) -> list[K]:
    """The sides in the order given, every round."""
    return names


def alternate(run: int, names: list[K]) -> list[K]:
    """The order given on odd rounds, reversed on even ones: no side always runs first (or last)."""
    return names if run % 2 else names[::-1]


def rotate(run: int, names: list[K]) -> list[K]:
    """Round r starts with the (r-1)-th side, then the rest in turn: each side leads once per len(names) rounds."""
    shift = (run - 1) % len(names)
    return names[shift:] + names[:shift]


def interleave(
    rounds: int,
    sides: Mapping[K, Callable[[int], float | None]],
    order: Callable[[int, list[K]], list[K]] = in_turn,
) -> dict[K, list[float]]:
    """Run every side once per round (1..``rounds``) in ``order(round, names)``; returns each side's seconds.

    Variants and baselines take turns inside each round instead of running
    back to back, so a drift of the machine (thermal, a neighbour's job, the
    page cache) falls on all of them alike and their medians compare. A side
    is called with the round number and returns its seconds, or None when it
    sits the round out (e.g. a variant too slow to repeat); its own results
    (counts, checks) it keeps itself.
    """
    seconds: dict[K, list[float]] = {name: [] for name in sides}
    for run in range(1, rounds + 1):
        for name in order(run, list(sides)):
            got = sides[name](run)
            if got is not None:
                seconds[name].append(got)
    return seconds


def rounded(values: Sequence[float], digits: int = 3) -> list[float]:
    """Seconds as the reports keep them: to the millisecond."""
    return [round(v, digits) for v in values]


def timings(seconds: Sequence[float], key: str = "seconds") -> dict[str, Any]:
    """``{key: every run, key_median: their median}``, rounded: the runs are reported beside the median
    so that a spread (one slow round) stays visible."""
    return {key: rounded(seconds), f"{key}_median": round(statistics.median(seconds), 3)}


def per_core(items: float, seconds: float, cores: int = CORES) -> float:
    """Items per second per core: Spark's throughput on ``cores`` cores, comparable with a one-core baseline."""
    return items / seconds / cores


def ratio(value: float, baseline: float, digits: int = 3) -> float:
    """``value / baseline``, rounded; above 1 means the side measured beats the baseline it is divided by."""
    return round(value / baseline, digits)


# --- results ------------------------------------------------------------------------------------------------------


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, reported with each benchmark (a busy machine skews its numbers)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def publish(report: dict[str, Any], load_start: list[float] | None, output: Path, fmt: Callable[[dict], str]) -> None:
    """Add the machine's facts to ``report``, print it (``fmt``, then the load averages), write JSON to ``output``.

    The load averages at start and end close every printed report: a figure
    taken on a busy machine says so next to itself.
    """
    report.update(
        load_average_start=load_start,
        load_average_end=load_average(),
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        unix_time=int(time.time()),
    )
    print(fmt(report))
    print(f"load average (1/5/15 min) at start {report['load_average_start']}, end {report['load_average_end']}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {output}")
