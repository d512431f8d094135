"""Benchmark: the image stage's host-affine units against today's hash partitioning, on skewed loopback hosts.

``--hosts`` (default 8) loopback image hosts (``tests/loopback_hosts.py``: one
keep-alive HTTP/1.1 server per address 127.0.0.1 .. 127.0.0.n, in this
process, each answering after ``--delay`` seconds, default 0.025, so fetching
waits on the network as on the web) serve ``--rows`` URLs (default 4,000), each
once: host 1 holds ``--big-share`` (40 %) of them, the other hosts share the
rest with a mild skew (relative sizes 1.15 down to 0.85). The URL list
(parquet: id, url, caption, dump; the hosts' rows shuffled together as in a
dump) is read by ``jobs.stages.image.with_image_verdicts`` in two variants:

- ``today``: ``work=None``, the rows spread over ``image.partitions`` tasks (0 =
  3 per core) by a hash of the id, one Spark job; every task fetches from every
  host, at most ``fetch.max_per_host`` at a time per host and task;
- ``units``: ``work=`` a fresh folder, the host-affine units of ``jobs.units``
  (a host's rows in one unit, a host above T rows split into units that share
  the host's budget of max_per_host x max_tasks_per_host connections, one job
  per unit, a commit per unit).

Config: ``fetch.max_per_host=4``, ``fetch.max_tasks_per_host=1`` (``make
bench-host-affinity`` runs it again with 4, the default: a budget of 16) and
``fetch.host_split_rows`` = rows / 12 (so the big host is split into several
units), ``fetch.allow_networks`` the hosts' loopback network; the rest the
defaults. The bound a host may see from the units variant is max_per_host x
max_tasks_per_host (4).

Each master in turn, ``local[2]`` and then a standalone cluster of two 1-core
workers (``deploy/standalone.sh``, started by the bench in its own folder and
port and always stopped at the end), runs both variants once per round,
``--runs`` rounds (default 3), the first variant swapping every round. The
session's start-up (JVM launch, executors registered) and the Python-worker
warm-up before each run are timed apart. A run's wall time is the stage plus a
write of its verdicts to parquet (the one action: today's variant fetches
there; the units variant fetches inside ``with_image_verdicts`` and the write
reads its committed units). Checked per run: rows out == rows in, every id
once, accepted rows == URLs the hosts served (every one 200), no URL requested
twice. Read from the hosts per run: connections opened, peak open connections
and peak concurrent requests per host. For the units variant the driver's job
times (the Spark jobs ``jobs.units`` names by unit) say where its time went: the
plan (seconds to the first unit job) and the big host's slices (fetching, and the
gaps between one slice's end and the next one's start). The latency of one
request (one connection, one at a time) is measured before and after, and with
it the floor the big host alone sets: its rows x latency / requests in flight
(the bound for units; a task per core x ``fetch.max_per_host`` for today).

Printed: master, variant, the runs and their median, images/s per core
(median), the units / today ratio of images/s (median of the rounds' ratios,
each from one round), the peak open and active connections at the big host and
at any host, the bound, connections opened per image and requests per URL. The
bench exits 1 when the units variant exceeds the bound at any host (open or
active) or when any run of either variant fetched a URL twice or lost a row.
Results go to ``bench/results/bench_host_affinity.json`` (``-quick`` with --quick).

    .venv/bin/python bench/bench_host_affinity.py [--rows 4000] [--runs 3] [--quick] [--local-only]
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from benchlib import (
    BUILD,
    CORES,
    MASTER,
    REPO,
    BenchArgs,
    alternate,
    interleave,
    job_group,
    load_average,
    per_core,
    publish,
    rounded,
    run_main,
    start_spark,
    timings,
    warm_workers,
)

NAME = "bench_host_affinity"
WORK_DIR = BUILD / "bench-host-affinity"
STANDALONE = REPO / "deploy" / "standalone.sh"
VARIANTS = ("today", "units")
WORKERS = 2  # standalone workers, 1 core each: the machine's 2 cores, as local[2]
SKEW = (1.15, 0.85)  # the small hosts' relative sizes run linearly from the first to the second
SETTLE_S = 10.0  # how long to wait for the hosts to see the previous run's connections closed
# jobs.units names each unit's Spark job so (fetch_units' setJobDescription)
UNIT_JOB = re.compile(r"image: unit (\d+) of \d+ \((\d+) rows(?:, host (\S+) slice (\d+))?\)")

log = logging.getLogger("winnow.bench")


# --- hosts and URLs -------------------------------------------------------------------------------------------------


def loopback_hosts() -> Any:
    """tests/loopback_hosts.py (the servers the politeness tests count with), imported from the tests folder."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import loopback_hosts as module

    return module


def host_sizes(rows: int, hosts: int, big_share: float) -> list[int]:
    """Rows per host: the first ``big_share`` of ``rows``, the others the rest in sizes from SKEW[0] to SKEW[1]."""
    big = round(rows * big_share)
    rest = rows - big
    others = hosts - 1
    step = (SKEW[1] - SKEW[0]) / max(1, others - 1)
    weights = [SKEW[0] + i * step for i in range(others)]
    sizes = [math.floor(rest * w / sum(weights)) for w in weights]
    for i in range(rest - sum(sizes)):  # the rounding's remainder, one row each from the largest down
        sizes[i % others] += 1
    return [big, *sizes]


def write_pairs(path: Path, hosts: list[Any], sizes: list[int]) -> None:
    """The URL list, every host's rows shuffled together (a dump's order), ids 0..rows-1."""
    urls = [hosts[h].url(f"/img/h{h}-{k}.jpg") for h, n in enumerate(sizes) for k in range(n)]
    random.Random(7).shuffle(urls)
    table = pa.table(
        {
            "id": pa.array(range(len(urls)), pa.int64()),
            "url": urls,
            "caption": ["a photograph of a loopback host"] * len(urls),
            "dump": ["bench"] * len(urls),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def allow_network(hosts: int) -> str:
    """The smallest 127.0.0.0/k that holds 127.0.0.1 .. 127.0.0.<hosts>."""
    prefix = 32 - math.ceil(math.log2(hosts + 1))
    return f"127.0.0.0/{prefix}"


def settle(hosts: list[Any]) -> int:
    """Wait (up to SETTLE_S) until no connection is open at any host; the connections still open."""
    deadline = time.monotonic() + SETTLE_S
    while sum(h.open for h in hosts) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sum(h.open for h in hosts)


def request_latency(host: Any, requests: int = 30) -> float:
    """Seconds per request, one kept-alive connection, one request at a time: what a fetch waits for a reply
    (the host's delay plus what loopback and this busy process add)."""
    import http.client

    conn = http.client.HTTPConnection(host.server_address[0], host.server_address[1], timeout=10)
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 does
        started = time.perf_counter()
        for i in range(requests):
            conn.request("GET", f"/img/latency-{i}.jpg")
            conn.getresponse().read()
        return (time.perf_counter() - started) / requests
    finally:
        conn.close()


def host_counts(hosts: list[Any]) -> list[dict[str, int]]:
    """What each host saw since its last reset."""
    out = []
    for h in hosts:
        paths = list(h.paths)
        out.append(
            {
                "opened": h.opened,
                "peak_open": h.peak_open,
                "peak_active": h.peak_active,
                "requests": len(paths),
                "urls": len(set(paths)),
            }
        )
    return out


# --- Spark ----------------------------------------------------------------------------------------------------------


def load_image_modules() -> None:
    """The image stage's modules, imported in each Python worker before a timed run (benchlib.warm_workers)."""
    import imagehash  # noqa: F401
    import PIL.Image  # noqa: F401

    import udfs.fetch  # noqa: F401
    import udfs.image  # noqa: F401
    import udfs.image_udfs  # noqa: F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standalone_env(folder: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "STANDALONE_DIR": str(folder),
        "MASTER_PORT": str(port),
        "WORKERS": str(WORKERS),
        "WORKER_CORES": "1",
        "WORKER_MEMORY": "1g",
    }


def start_cluster(env: dict[str, str]) -> tuple[str, float]:
    """deploy/standalone.sh start: the master URL and the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run([str(STANDALONE), "start"], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"standalone.sh start failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1], time.perf_counter() - started


def stop_cluster(env: dict[str, str]) -> None:
    done = subprocess.run([str(STANDALONE), "stop"], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        log.error("standalone.sh stop failed (%d): %s", done.returncode, done.stderr[-3000:])


def cluster_session(master: str, arrow_batch_size: int) -> tuple[Any, float]:
    """A session on the standalone cluster, in this process (the JVM of the local session is reused), once
    every worker's executor registered; returns it and the seconds from getOrCreate to the last executor."""
    from pyspark.sql import SparkSession

    from jobs.session import JOB_CONF

    builder = (
        SparkSession.builder.master(master)
        .appName("winnow-bench-host-affinity")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.executor.memory", "1g")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.shuffle.partitions", str(2 * CORES))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_size))
    )
    for key, value in JOB_CONF.items():
        builder = builder.config(key, value)
    started = time.perf_counter()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    deadline = time.monotonic() + 180
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < WORKERS + 1:  # + the driver
        if time.monotonic() > deadline:
            raise RuntimeError(f"the executors of {WORKERS} workers did not register with {master} in 180 s")
        time.sleep(0.2)
    return spark, time.perf_counter() - started


def run_stage(spark: Any, cfg: Any, pairs: Path, out: Path, work: Path | None) -> float:
    """Wall seconds of the image stage (URL list in, verdicts written to parquet)."""
    from jobs.stages.image import with_image_verdicts

    started = time.perf_counter()
    frame = spark.read.parquet(str(pairs))
    annotated = with_image_verdicts(
        frame, cfg.fetch, cfg.image, cfg.score.max_nsfw_score, None if work is None else str(work)
    )
    annotated.write.mode("overwrite").parquet(str(out))
    return time.perf_counter() - started


def output_counts(spark: Any, out: Path) -> dict[str, Any]:
    """Rows, accepted rows, distinct ids and the reasons of the written verdicts."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(out))
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("reason").isNull(), 1).otherwise(0)).alias("accepted"),
        F.countDistinct("id").alias("ids"),
    ).first()
    reasons = {r["reason"]: r["n"] for r in df.where(F.col("reason").isNotNull()).groupBy("reason").count()
               .withColumnRenamed("count", "n").collect()}  # fmt: skip
    return {"rows": row["rows"], "accepted": row["accepted"] or 0, "ids": row["ids"], "reasons": reasons}


def unit_timeline(spark: Any, since: float, until: float, big_host: str) -> dict[str, Any]:
    """When the units variant's jobs ran, from the driver's status store (the Spark jobs that
    ``jobs.units`` names by unit): seconds to the first unit job (the plan), and the big host's
    slices, fetching and in between. Empty when the store cannot be read (a private API: the
    figures are a diagnosis, not a check)."""
    try:
        listed = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
        spans = []
        for i in range(listed.size()):
            job = listed.apply(i)
            sub, end, desc = job.submissionTime(), job.completionTime(), job.description()
            if not (sub.isDefined() and end.isDefined() and desc.isDefined()):
                continue
            start_s, end_s = sub.get().getTime() / 1000 - since, end.get().getTime() / 1000 - since
            if start_s >= 0 and (m := UNIT_JOB.match(desc.get())):
                spans.append((start_s, end_s, m.group(3)))
    except Exception as exc:  # noqa: BLE001 - py4j or a Spark version without the method
        log.warning("no unit timeline: %s", exc)
        return {}
    if not spans:
        return {}
    spans.sort()
    big = [(a, b) for a, b, h in spans if h == big_host]
    return {
        "unit_jobs": len(spans),
        "plan_s": round(spans[0][0], 3),
        "after_last_unit_s": round(until - since - max(b for _, b, _ in spans), 3),
        "big_host_slices": len(big),
        "big_host_fetch_s": round(sum(b - a for a, b in big), 3),
        "big_host_between_slices_s": round(sum(big[i + 1][0] - big[i][1] for i in range(len(big) - 1)), 3),
        "big_host_end_s": round(big[-1][1], 3) if big else None,
    }


def plan_summary(work: Path) -> dict[str, Any]:
    """The units the units variant planned (plan.json): count, T, and slices per split host."""
    plans = list(work.rglob("plan.json"))
    if not plans:
        return {}
    body = json.loads(plans[0].read_text())
    split: dict[str, int] = {}
    for u in body["units"]:
        if u.get("host"):
            split[u["host"]] = split.get(u["host"], 0) + 1
    return {"units": len(body["units"]), "unit_rows": body["unit_rows"], "split_hosts": split}


# --- one master -----------------------------------------------------------------------------------------------------


def bench_master(
    spark: Any,
    label: str,
    cfg: Any,
    pairs: Path,
    hosts: list[Any],
    sizes: list[int],
    runs: int,
    bound: int,
    failures: list[str],
) -> dict[str, Any]:
    """Both variants on one session, interleaved; per variant the runs and what the hosts saw."""
    rows = sum(sizes)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    slug = "local" if label == MASTER else "standalone"

    def one(run: int, variant: str) -> float:
        out = WORK_DIR / f"out-{slug}-{variant}"
        work = WORK_DIR / f"work-{slug}-{run}" if variant == "units" else None
        shutil.rmtree(out, ignore_errors=True)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        warm = warm_workers(spark, CORES, load_image_modules)
        leftover = settle(hosts)
        for h in hosts:
            h.reset()
        group = f"{slug}-{variant}-{run}"
        with job_group(spark, group, f"bench {group}") as sc:
            since = time.time()
            seconds = run_stage(spark, cfg, pairs, out, work)
            until = time.time()
            jobs = len(sc.statusTracker().getJobIdsForGroup(group))
        timeline = unit_timeline(spark, since, until, hosts[0].address) if work is not None else {}
        seen = host_counts(hosts)
        got = output_counts(spark, out)
        plan = plan_summary(work) if work is not None else {}
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        requests = sum(s["requests"] for s in seen)
        urls = sum(s["urls"] for s in seen)
        record = {
            "round": run,
            "seconds": round(seconds, 3),
            "worker_warmup_s": round(warm, 3),
            "spark_jobs": jobs,
            "connections_open_before": leftover,
            "hosts": seen,
            "requests": requests,
            "distinct_urls": urls,
            "output": got,
            **({"plan": plan} if plan else {}),
            **({"timeline": timeline} if timeline else {}),
        }
        results[variant].append(record)
        what = f"{label} {variant} round {run}"
        if requests != urls:
            failures.append(f"{what}: {requests - urls} URL(s) requested more than once ({requests} requests)")
        if urls != rows:
            failures.append(f"{what}: {urls} distinct URLs requested for {rows} rows")
        if got["rows"] != rows or got["ids"] != rows:
            failures.append(f"{what}: {got['rows']} rows out ({got['ids']} distinct ids) for {rows} in")
        if got["accepted"] != requests:
            failures.append(f"{what}: {got['accepted']} accepted for {requests} URLs served (reasons {got['reasons']})")
        if variant == "units":
            for i, s in enumerate(seen):
                if s["peak_open"] > bound or s["peak_active"] > bound:
                    failures.append(
                        f"{what}: host {hosts[i].address} saw {s['peak_open']} open / {s['peak_active']} active "
                        f"connections at once, above the bound {bound}"
                    )
        big = seen[0]
        log.info(
            "%s: %.1f s = %.1f images/s/core; %d jobs; big host peak %d open, %d active; %d connections opened "
            "for %d requests%s",
            what,
            seconds,
            per_core(rows, seconds),
            jobs,
            big["peak_open"],
            big["peak_active"],
            sum(s["opened"] for s in seen),
            requests,
            f"; {plan['units']} units, split {plan['split_hosts']}; {timeline}" if plan else "",
        )
        return seconds

    sides = {v: functools.partial(one, variant=v) for v in VARIANTS}
    seconds = interleave(runs, sides, alternate)
    variants = {v: summarize(results[v], seconds[v], rows, bound) for v in VARIANTS}
    same_round = [t / u for t, u in zip(seconds["today"], seconds["units"], strict=True)]
    return {
        "variants": variants,
        # images/s of units over today's, each round's pair of runs (above 1: units are faster)
        "ratio_units_today": rounded(same_round),
        "ratio_units_today_median": round(statistics.median(same_round), 3),
    }


def summarize(runs: list[dict[str, Any]], seconds: list[float], rows: int, bound: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    opened = sum(s["opened"] for r in runs for s in r["hosts"])
    requests = sum(r["requests"] for r in runs)
    return {
        **timings(seconds),
        "images_per_s_per_core": round(per_core(rows, median), 2),
        "worker_warmup_s": [r["worker_warmup_s"] for r in runs],
        "spark_jobs": [r["spark_jobs"] for r in runs],
        "peak_open_big_host": max(r["hosts"][0]["peak_open"] for r in runs),
        "peak_active_big_host": max(r["hosts"][0]["peak_active"] for r in runs),
        "peak_open_any_host": max(s["peak_open"] for r in runs for s in r["hosts"]),
        "peak_active_any_host": max(s["peak_active"] for r in runs for s in r["hosts"]),
        "bound": bound,
        "connections_opened_per_image": round(opened / max(1, requests), 4),
        "requests_per_url": round(requests / max(1, sum(r["distinct_urls"] for r in runs)), 4),
        **{
            f"{key}_median": round(statistics.median(got), 3)
            for key in ("plan_s", "big_host_fetch_s", "big_host_between_slices_s", "big_host_end_s")
            if (got := [r["timeline"][key] for r in runs if r.get("timeline", {}).get(key) is not None])
        },
        "runs": runs,
    }


# --- report ---------------------------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"{report['rows']:,} URLs on {len(report['host_rows'])} loopback hosts (rows per host {report['host_rows']}; "
        f"the big host {report['big_share']:.0%}), {s['delay_s'] * 1000:.0f} ms delay per request; "
        f"{report['runs']} round(s), variants alternating, medians",
        f"config: {', '.join(s['sets'])}; fetch.threads {s['fetch.threads']}, image.partitions "
        f"{s['image.partitions']} (0 = 3 per core)",
        "request latency, host 1, one connection, one request at a time: "
        + ", ".join(f"{k.removesuffix('_s')} {v * 1000:.0f} ms" for k, v in report["request_latency"].items())
        + f" (the {s['delay_s'] * 1000:.0f} ms delay + loopback and the busy bench process)",
        f"floor set by the big host alone ({report['host_rows'][0]:,} rows x latency / requests in flight): units "
        f"{report['big_host_floor_s']['units']:.1f} s (the bound), today {report['big_host_floor_s']['today']:.1f} s "
        f"({CORES} tasks x fetch.max_per_host)",
    ]
    for label, m in report["masters"].items():
        lines.append(
            f"{label}: session start-up {m['session_startup_s']:.1f} s"
            + (f" (cluster start {m['cluster_start_s']:.1f} s)" if "cluster_start_s" in m else "")
            + "; worker warm-ups "
            + ", ".join(f"{w:.1f}" for v in m["variants"].values() for w in v["worker_warmup_s"])
            + " s (apart)"
        )
        units = m["variants"]["units"]["runs"][-1].get("plan", {})
        if units:
            lines.append(
                f"  units plan: {units['units']} units of T={units['unit_rows']} rows; split hosts (slices) "
                f"{units['split_hosts']}"
            )
        u = m["variants"]["units"]
        if "plan_s_median" in u:
            lines.append(
                f"  units timeline (medians): first unit job after {u['plan_s_median']:.1f} s (the plan); the big "
                f"host's slices fetching {u['big_host_fetch_s_median']:.1f} s, between its slices "
                f"{u['big_host_between_slices_s_median']:.1f} s, its last done at {u['big_host_end_s_median']:.1f} s "
                f"of the run's {u['seconds_median']:.1f} s"
            )
    header = (
        f"{'master':<26} {'variant':<7} {'runs (wall s)':<20} {'median s':>8} {'img/s/core':>10} "
        f"{'units/today':>11} {'peak open big':>13} {'peak act big':>12} {'peak open any':>13} {'bound':>5} "
        f"{'conns/image':>11} {'req/URL':>7} {'jobs':>5}"
    )
    lines += ["", header, "-" * len(header)]
    for label, m in report["masters"].items():
        for name, v in m["variants"].items():
            ratio = f"{m['ratio_units_today_median']:.2f}" if name == "units" else "-"
            lines.append(
                f"{label:<26} {name:<7} {', '.join(f'{x:.1f}' for x in v['seconds']):<20} {v['seconds_median']:>8.1f} "
                f"{v['images_per_s_per_core']:>10.1f} {ratio:>11} {v['peak_open_big_host']:>13} "
                f"{v['peak_active_big_host']:>12} {v['peak_open_any_host']:>13} {v['bound']:>5} "
                f"{v['connections_opened_per_image']:>11.4f} {v['requests_per_url']:>7.2f} "
                f"{statistics.median(v['spark_jobs']):>5.0f}"
            )
    lines += [
        "",
        "units/today: images/s of the units variant over today's, median of the rounds' ratios (above 1: units "
        "faster); peak open/act: most connections open / requests in flight at once at the big host (or any host), "
        "max over the runs; bound: fetch.max_per_host x fetch.max_tasks_per_host; conns/image: connections the hosts "
        "accepted per request; jobs: Spark jobs per run (median)",
    ]
    lines.append("checks: " + ("all passed" if not report["failures"] else f"{len(report['failures'])} FAILED"))
    lines += [f"  FAILED: {f}" for f in report["failures"]]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        NAME,
        rows=4000,
        quick_rows=1200,
        min_rows=100,
        rows_help="URLs over all hosts",
        quick_runs=1,
        quick_help="1,200 URLs, 1 round",
    )
    parser.add_argument("--hosts", type=int, default=8, help="loopback hosts (default 8, at least 2)")
    parser.add_argument("--big-share", type=float, default=0.4, help="the big host's share of the URLs (0.4)")
    parser.add_argument("--delay", type=float, default=0.025, help="seconds each host waits per request (0.025)")
    parser.add_argument("--max-per-host", type=int, default=4, help="fetch.max_per_host (4)")
    parser.add_argument("--max-tasks-per-host", type=int, default=1, help="fetch.max_tasks_per_host (1)")
    parser.add_argument("--split-rows", type=int, help="fetch.host_split_rows (default rows / 12)")
    parser.add_argument("--local-only", action="store_true", help="local[2] only, no standalone cluster")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config section.key=value")
    args = parser.parse(argv)
    if not 2 <= args.hosts <= 254 or not 0 < args.big_share < 1 or args.delay < 0:
        parser.error("--hosts must be 2..254, --big-share in (0, 1), --delay not negative")

    from jobs.config import load_config

    split_rows = args.split_rows or max(1, args.rows // 12)
    sets = [
        f"fetch.max_per_host={args.max_per_host}",
        f"fetch.max_tasks_per_host={args.max_tasks_per_host}",
        f"fetch.host_split_rows={split_rows}",
        *args.sets,
    ]
    network = allow_network(args.hosts)
    try:
        cfg = load_config(None, {"fetch.allow_networks": [network]}, sets)
    except ValueError as exc:
        parser.error(str(exc))
    bound = cfg.fetch.max_per_host * cfg.fetch.max_tasks_per_host
    sizes = host_sizes(args.rows, args.hosts, args.big_share)
    failures: list[str] = []
    masters: dict[str, dict[str, Any]] = {}
    load_start = load_average()
    started = time.perf_counter()

    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    cluster_env = standalone_env(WORK_DIR / "standalone", free_port())
    cluster_started = False
    spark = None
    with loopback_hosts().serve_hosts(args.hosts, delay=args.delay) as hosts:
        try:
            pairs = WORK_DIR / "pairs" / "pairs.parquet"
            write_pairs(pairs, hosts, sizes)
            latency = {"start_s": round(request_latency(hosts[0]), 4)}
            log.info("serving %d URLs from %d hosts (%s), %s ms delay, %.1f ms per request", args.rows, args.hosts,
                     sizes, args.delay * 1000, latency["start_s"] * 1000)  # fmt: skip

            spark, startup = start_spark(MASTER, "winnow-bench-host-affinity", 2 * CORES, cfg.image.batch_size)
            log.info("local session (JVM) start-up %.1f s", startup)
            masters[MASTER] = {
                "session_startup_s": round(startup, 3),
                **bench_master(spark, MASTER, cfg, pairs, hosts, sizes, args.runs, bound, failures),
            }
            spark.stop()
            spark = None

            if not args.local_only:
                cluster_started = True  # stop even a half-started cluster
                url, cluster_s = start_cluster(cluster_env)
                spark, startup = cluster_session(url, cfg.image.batch_size)
                log.info("standalone cluster %s: started in %.1f s, session %.1f s", url, cluster_s, startup)
                label = f"standalone {WORKERS}x1 core"
                masters[label] = {
                    "master_url": url,
                    "cluster_start_s": round(cluster_s, 3),
                    "session_startup_s": round(startup, 3),
                    **bench_master(spark, label, cfg, pairs, hosts, sizes, args.runs, bound, failures),
                }
            latency["end_s"] = round(request_latency(hosts[0]), 4)
        finally:
            if spark is not None:
                spark.stop()
            if cluster_started:
                stop_cluster(cluster_env)
    shutil.rmtree(WORK_DIR, ignore_errors=True)

    report: dict[str, Any] = {
        "bench": NAME,
        "rows": args.rows,
        "host_rows": sizes,
        "big_share": args.big_share,
        "cores": CORES,
        "runs": args.runs,
        "settings": {
            "delay_s": args.delay,
            "sets": [f"fetch.allow_networks={network}", *sets],
            "fetch.threads": cfg.fetch.threads,
            "fetch.max_per_host": cfg.fetch.max_per_host,
            "fetch.max_tasks_per_host": cfg.fetch.max_tasks_per_host,
            "fetch.host_split_rows": cfg.fetch.host_split_rows,
            "image.partitions": cfg.image.partitions,
            "image.batch_size": cfg.image.batch_size,
            "output": "parquet (measures, pHash; no image bytes)",
        },
        "request_latency": latency,
        # The big host's rows at the latency measured, as many in flight as each variant allows: units the
        # bound, today one fetch.max_per_host per task running (a task per core).
        "big_host_floor_s": {
            "units": round(sizes[0] * latency["start_s"] / bound, 1),
            "today": round(sizes[0] * latency["start_s"] / (CORES * cfg.fetch.max_per_host), 1),
        },
        "masters": masters,
        "failures": failures,
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    publish(report, load_start, args.output, format_report)
    print(f"bench wall time {report['bench_wall_s']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_main(main, NAME))
