"""The image stage at crawl scale: host-affine units, fetched under a per-host task bound, committed one by one.

A unit is a group of rows one task fetches. ``plan_units`` groups the rows by
the registrable host of their URL (``udfs.fetch.registrable_host``):

- a host with at most T rows goes whole into one unit; such hosts are packed
  (in the order of a hash of the host) into units of about T rows;
- a host with more than T rows is split by a hash of the row id into
  ceil(rows / T) units of its own, each of at most about T rows;

where T = min(``fetch.host_split_rows``, rows / ``image.partitions``), so a
small input still spreads over every core. The rows are written once, grouped
by unit, under the stage's work folder (``OUTPUT/_checkpoints/image/_work/
<fingerprint>/input/``), with ``plan.json`` naming every unit, its rows and,
for a split host's unit, its host.

``fetch_units`` then runs one Spark job per unit, as many at a time as the
cluster has cores (plus one being planned). A host's connection budget is
``fetch.max_per_host`` x ``fetch.max_tasks_per_host`` (``host_share``): a unit
of a split host holds that one host and fetches it with up to
``fetch.threads`` connections within the budget, and takes them from the
budget while it runs, so at most ``max_tasks_per_host`` such units of a host
run at once (one, with the defaults: 16 threads of a budget of 16). A packed
unit fetches at most ``max_per_host`` at a time per host, and each of its
hosts is in no other unit. So a host sees at most ``max_per_host`` x
``max_tasks_per_host`` connections from the whole run, however many
executors fetch. A task keeps its connections for its hosts (one pooled
session per Python worker) and closes them when it ends.

Each unit's verdicts are written to staging and renamed into ``done/`` when
its job ends, after its row count is checked: the commit of one unit, atomic
on a local disk and HDFS. A run killed in the stage leaves its committed
units; the next run with the same fingerprint (same input, config and code)
reads them and fetches only the rest. While it fetches, the driver logs the
rows done of all, images per second and an ETA every ``run.progress_seconds``.

Trade-offs (docs/stages/image.md, "The trade-offs"): a host with most of
the rows is fetched with its budget of connections at most, so at the end of
a skewed run the other cores wait for it; waiting is the price of the bound.
Each unit costs a Spark job (a fraction of a second of driver work), which
is why units are thousands of rows, not tens.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.errors import ConservationError, WinnowError
from jobs.storage import STAGING, FileStore

log = logging.getLogger("winnow")

UNIT = "winnow_unit"  # the work input's unit column (its folders: input/winnow_unit=<n>/)
HOST = "_host"
PLAN = "plan.json"
DONE = "done"


@dataclass(frozen=True)
class Unit:
    """One unit of the plan: its number, its rows, and the host when it is a slice of a split host."""

    index: int
    rows: int
    host: str | None = None  # a split host's unit takes a share of its host's connection budget
    slice: int = 0  # which slice of its host (scheduling interleaves the hosts' slices)


@dataclass(frozen=True)
class Plan:
    """What ``plan_units`` wrote: the units and the schema of their input rows."""

    units: tuple[Unit, ...]
    schema: StructType
    unit_rows: int  # T

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.units)

    def to_json(self) -> str:
        body = {"unit_rows": self.unit_rows, "schema": json.loads(self.schema.json())}
        body["units"] = [asdict(u) for u in self.units]
        return json.dumps(body, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        body = json.loads(text)
        units = tuple(Unit(**u) for u in body["units"])
        return cls(units, StructType.fromJson(body["schema"]), body["unit_rows"])


def host_column(url: str) -> Any:
    """A column: the registrable host of each row's URL ("" when it names none)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")  # type: ignore[call-overload]
    def hosts(urls):  # no annotations: pyspark reads a UDF's hints
        from udfs.fetch import registrable_host

        return urls.map(registrable_host)

    return hosts(F.col(url))


def unit_rows(rows: int, split_rows: int, partitions: int) -> int:
    """T: at most ``split_rows``, and small enough that ``rows`` make at least ``partitions`` units."""
    return max(1, min(split_rows, math.ceil(rows / max(1, partitions))))


def assign_units(
    frame: DataFrame, url: str, split_rows: int, partitions: int
) -> tuple[DataFrame, dict[int, tuple[str, int]], int, DataFrame]:
    """(``frame`` with the ``UNIT`` column, {unit: (host, slice)} of split hosts' units, T, the cached
    host counts the first depends on: the caller unpersists them once it wrote the first)."""
    spark = frame.sparkSession
    hosted = frame.withColumn(HOST, host_column(url))
    counts = hosted.groupBy(HOST).agg(F.count(F.lit(1)).alias("n"))
    # Packing order: a bucket of the host's hash, then the hash; the buckets' totals make the offsets.
    counts = counts.withColumn("_bucket", F.pmod(F.xxhash64(HOST), F.lit(PACK_BUCKETS))).cache()
    total = counts.agg(F.sum("n")).first()[0] or 0
    t = unit_rows(total, split_rows, partitions)
    big = counts.filter(F.col("n") > t).orderBy(F.desc("n"), HOST).collect()
    split, split_of, base = [], {}, 0
    for row in big:
        slices = math.ceil(row["n"] / t)
        split.append((row[HOST], base, slices))
        if row[HOST]:  # rows without a host (local files, bad URLs) are split but not bounded
            split_of.update({base + s: (row[HOST], s) for s in range(slices)})
        base += slices
    small = counts.filter(F.col("n") <= t)
    sizes = dict(small.groupBy("_bucket").agg(F.sum("n")).collect())
    offsets, running = [], 0
    for bucket in range(PACK_BUCKETS):
        offsets.append(running)
        running += sizes.get(bucket, 0)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), (F.col("_bucket") + 1).cast("int"))
    order = Window.partitionBy("_bucket").orderBy(F.xxhash64(HOST), HOST)
    start = offset + F.sum("n").over(order) - F.col("n")  # rows packed before this host
    packed = small.select(
        HOST,
        (F.lit(base) + F.floor(start / t)).cast("long").alias("_base"),
        F.lit(1).cast("long").alias("_slices"),
    )
    hosts = spark.createDataFrame(split, f"{HOST} string, _base long, _slices long").unionByName(packed)
    unit = F.col("_base") + F.pmod(F.xxhash64("id"), F.col("_slices"))
    assigned = hosted.join(hosts, HOST).withColumn(UNIT, unit).drop(HOST, "_base", "_slices")
    return assigned, split_of, t, counts


PACK_BUCKETS = 64


def plan_units(frame: DataFrame, work: str, url: str, split_rows: int, partitions: int) -> Plan:
    """The stage's plan under ``work``: read back when an earlier run with the same fingerprint wrote
    it, else ``frame``'s rows assigned to units (``assign_units``) and written there, grouped by unit."""
    spark, store = frame.sparkSession, FileStore(frame.sparkSession)
    if UNIT in frame.columns:
        raise WinnowError(f"the image stage's input must not have a column named {UNIT} (winnow's own)")
    text = store.read_text(f"{work}/{PLAN}")
    if text:
        return Plan.from_json(text)
    store.delete(work)  # a killed run's half-written plan
    assigned, split_of, t, counts = assign_units(frame, url, split_rows, partitions)
    staging = f"{work}/{STAGING}/input-{uuid.uuid4().hex[:12]}"
    tasks = max(1, min(200, 2 * spark.sparkContext.defaultParallelism))
    try:
        empty = counts.isEmpty()
        if not empty:
            assigned.repartition(tasks, UNIT).write.partitionBy(UNIT).parquet(staging)
    finally:
        counts.unpersist()
    written = []
    if not empty:
        store.rename(staging, f"{work}/input")
        written = spark.read.parquet(f"{work}/input").groupBy(UNIT).count().collect()
    units = []
    for row in written:
        index = int(row[UNIT])
        host, piece = split_of.get(index, (None, 0))
        units.append(Unit(index, int(row["count"]), host, piece))
    plan = Plan(tuple(sorted(units, key=lambda u: u.index)), frame.schema, t)
    store.write_text(f"{work}/{PLAN}", plan.to_json())
    return plan


def fetch_order(units: list[Unit]) -> list[Unit]:
    """Split hosts' units first, their slices interleaved (first slice of every host, biggest host
    first, then the second ...), so the hosts that bound the run's length start at once; then the
    packed units, biggest first."""
    host_rows = Counter()
    for u in units:
        if u.host:
            host_rows[u.host] += u.rows
    split = sorted((u for u in units if u.host), key=lambda u: (u.slice, -host_rows[u.host], u.host, u.index))
    packed = sorted((u for u in units if not u.host), key=lambda u: (-u.rows, u.index))
    return split + packed


def run_bounded(
    units: list[Unit],
    run_one: Callable[[Unit], None],
    slots: int,
    budget: int,
    need: int = 1,
    on_done: Callable[[Unit], None] = lambda u: None,
    thread: Callable[..., threading.Thread] = threading.Thread,
) -> None:
    """Run ``run_one(unit)`` for every unit on ``slots`` threads, in ``fetch_order``; a split host's
    unit takes ``need`` of its host's ``budget`` while it runs, so at most ``budget // need`` units of
    one host run at a time. A failure stops new starts; the running units finish (and commit), then
    the first failure is raised."""
    pending = fetch_order(units)
    used: Counter[str] = Counter()
    failed: list[BaseException] = []
    ready = threading.Condition()

    def take() -> Unit | None:
        with ready:
            while pending and not failed:
                for i, u in enumerate(pending):
                    if not u.host or used[u.host] + need <= budget:
                        if u.host:
                            used[u.host] += need
                        return pending.pop(i)
                ready.wait()
            return None

    def loop() -> None:
        while (unit := take()) is not None:
            try:
                run_one(unit)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread below
                with ready:
                    failed.append(exc)
            else:
                on_done(unit)
            finally:
                with ready:
                    if unit.host:
                        used[unit.host] -= need
                    ready.notify_all()

    workers = [thread(target=loop, name=f"winnow-unit-{n}", daemon=True) for n in range(max(1, slots))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failed:
        raise failed[0]


def host_share(threads: int, max_per_host: int, max_tasks_per_host: int) -> tuple[int, int]:
    """(a host's connection budget across the cluster, what one unit of a split host takes of it).

    The budget is ``max_per_host`` x ``max_tasks_per_host``. A split host's unit holds that one host,
    so its task may use up to ``threads`` connections to it, within the budget: with the defaults
    (16 threads, 4 x 4) one unit at a time with 16 connections, not 4 units of 4 each on 4 cores."""
    budget = max_per_host * max_tasks_per_host
    return budget, max(1, min(threads, budget))


@dataclass
class Progress:
    """Rows done of all while the units run, logged every ``every`` seconds (and once at the end)."""

    stage: str
    total_rows: int
    total_units: int
    every: float
    done_rows: int = 0  # committed, by this run or an earlier one
    done_units: int = 0
    resumed_rows: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stop = threading.Event()

    def add(self, unit: Unit) -> None:
        with self._lock:
            self.done_rows += unit.rows
            self.done_units += 1

    def line(self) -> str:
        with self._lock:
            done, units = self.done_rows, self.done_units
        seconds = max(time.monotonic() - self._started, 1e-9)
        rate = (done - self.resumed_rows) / seconds
        share = 100.0 * done / self.total_rows if self.total_rows else 100.0
        left = self.total_rows - done
        eta = _clock(left / rate) if rate > 0 else "?"
        return (
            f"{self.stage}: {done:,} of {self.total_rows:,} rows ({share:.0f}%), {units} of {self.total_units} "
            f"units; {rate:,.1f} images/s; ETA {eta}"
        )

    def _report(self) -> None:
        while not self._stop.wait(self.every):
            log.info("%s", self.line())

    def __enter__(self) -> Progress:
        threading.Thread(target=self._report, name="winnow-progress", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        log.info("%s", self.line())


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fetch_units(
    spark: SparkSession,
    plan: Plan,
    work: str,
    mapper_for: Callable[[Unit], Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]],
    out_schema: StructType,
    budget: int,
    need: int,
    progress_seconds: float,
    stage: str = "image",
) -> DataFrame:
    """Every unit of ``plan`` through its mapper (one Spark job each, see the module docstring), the
    ones an earlier run committed skipped; the verdicts of all units, read from ``work/done/``.

    ``mapper_for(unit)`` is the ``mapInArrow`` function of a unit; ``budget`` and ``need`` as
    ``run_bounded`` takes them (``host_share``)."""
    from pyspark import InheritableThread

    store = FileStore(spark)
    store.delete(f"{work}/{STAGING}")  # a killed run's unfinished units
    done = set(store.children(f"{work}/{DONE}"))
    todo = [u for u in plan.units if _done_name(u) not in done]
    resumed = [u for u in plan.units if _done_name(u) in done]
    progress = Progress(stage, plan.rows, len(plan.units), progress_seconds)
    for u in resumed:
        progress.add(u)
    progress.resumed_rows = progress.done_rows
    if resumed:
        log.info("%s: %d of %d units (%d rows) committed by an earlier run; fetching the other %d",
                 stage, len(resumed), len(plan.units), progress.done_rows, len(todo))  # fmt: skip
    sc = spark.sparkContext
    described = sc.getLocalProperty("spark.job.description")  # the stage's, restored for the jobs after the units

    def run_one(unit: Unit) -> None:
        sc.setJobDescription(f"{stage}: unit {unit.index} of {len(plan.units)} ({unit.rows} rows{_of(unit)})")
        rows = spark.read.schema(plan.schema).parquet(f"{work}/input/{UNIT}={unit.index}").coalesce(1)
        staging = f"{work}/{STAGING}/{_done_name(unit)}"
        verdicts = sc.accumulator(0)  # merged when the task succeeds (a failed attempt's rows are not)
        rows.mapInArrow(_counted(mapper_for(unit), verdicts), out_schema).write.parquet(staging)
        if verdicts.value != unit.rows:
            raise ConservationError(f"{stage}: unit {unit.index} has {unit.rows} rows but {verdicts.value} verdicts")
        store.rename(staging, f"{work}/{DONE}/{_done_name(unit)}")

    # One more job than cores: the driver plans the next unit while every core fetches.
    slots = max(1, sc.defaultParallelism) + 1
    with progress:
        run_bounded(todo, run_one, slots, budget, need, progress.add, thread=InheritableThread)
    sc.setJobDescription(described)
    if not plan.units:
        return spark.createDataFrame([], out_schema)
    return spark.read.schema(out_schema).option("recursiveFileLookup", "true").parquet(f"{work}/{DONE}")


def _counted(mapper: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]], counter: Any) -> Callable:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in mapper(batches):
            counter.add(batch.num_rows)
            yield batch

    return run


def _done_name(unit: Unit) -> str:
    return f"unit-{unit.index:06d}"


def _of(unit: Unit) -> str:
    return f", host {unit.host} slice {unit.slice}" if unit.host else ""
