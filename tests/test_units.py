"""The image stage's host-affine units (jobs/units.py): the plan, the per-host task bound, resume, progress.

The cluster-wide bound with several executors is in tests/test_cluster_politeness.py; the fault test
(the driver killed half-way through the stage) is here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from loopback_hosts import serve_hosts

from jobs import pipeline
from jobs.units import DONE, UNIT, Unit, fetch_order, host_share, plan_units, run_bounded, unit_rows
from udfs.fetch import FetchConfig, registrable_host

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://cdn1.images.example.co.uk/a.jpg", "example.co.uk"),
        ("https://i.pinimg.com/736x/a.jpg", "pinimg.com"),
        ("HTTP://WWW.Example.COM./x.png", "example.com"),
        ("http://127.0.0.5:8080/x.jpg", "127.0.0.5"),
        ("http://[::1]:81/x.jpg", "::1"),
        ("http://localhost/x.jpg", "localhost"),
        ("http://x.blogspot.com/a.jpg", "x.blogspot.com"),  # the list's private section: a site per name
        ("/data/images/a.jpg", ""),
        ("", ""),
        (None, ""),
        ("http://[bad/", ""),
    ],
)
def test_registrable_host(url, host):
    assert registrable_host(url) == host


def test_unit_rows_spreads_a_small_input_and_caps_a_large_one():
    assert unit_rows(60, 10_000, 6) == 10
    assert unit_rows(10_000_000, 10_000, 6) == 10_000
    assert unit_rows(0, 10_000, 6) == 1


def test_a_split_hosts_unit_takes_its_threads_within_the_budget():
    assert host_share(16, 4, 4) == (16, 16)  # the defaults: one unit at a time, 16 connections
    assert host_share(16, 4, 1) == (4, 4)
    assert host_share(4, 2, 4) == (8, 4)  # two units at a time
    assert host_share(8, 2, 2) == (4, 4)


def test_split_and_bound_keys_are_checked():
    problems = dict(FetchConfig(host_split_rows=0, max_tasks_per_host=0).problems())
    assert set(problems) >= {"host_split_rows", "max_tasks_per_host"}


def _pairs(spark, hosts: dict[str, int]):
    rows, n = [], 0
    for host, count in hosts.items():
        for i in range(count):
            # two sub-domains per site: one registrable host
            rows.append((n, f"http://cdn{i % 2}.{host}/img/{i}.jpg", "a caption", "d1"))
            n += 1
    return spark.createDataFrame(rows, "id long, url string, caption string, dump string")


def _unit_rows(work: Path) -> dict[int, list[dict]]:
    out = {}
    for folder in sorted((work / "input").glob(f"{UNIT}=*")):
        out[int(folder.name.split("=")[1])] = pq.read_table(folder).to_pylist()
    return out


def test_plan_keeps_a_host_together_and_splits_a_big_one(spark, tmp_path):
    sizes = {"bigsite.com": 400, **{f"site{i}.org": 20 + 10 * i for i in range(7)}}
    sizes.update({f"tiny{i}.net": 2 for i in range(30)})
    total = sum(sizes.values())
    work = tmp_path / "work"
    plan = plan_units(_pairs(spark, sizes), str(work), "url", 100, 6)
    t = unit_rows(total, 100, 6)
    assert plan.unit_rows == t == 100 and plan.rows == total
    units = _unit_rows(work)
    assert sorted(units) == [u.index for u in plan.units]
    assert {u.index: u.rows for u in plan.units} == {i: len(rows) for i, rows in units.items()}
    where: dict[str, set[int]] = {}
    for index, rows in units.items():
        for row in rows:
            where.setdefault(registrable_host(row["url"]), set()).add(index)
    # every site that fits is in one unit, both its sub-domains with it
    for host, count in sizes.items():
        if count <= t:
            assert len(where[host]) == 1, host
    # the big site: ceil(400 / 100) units of its own, each a slice of about T rows, marked with the site
    big = [u for u in plan.units if u.host == "bigsite.com"]
    assert len(big) == math.ceil(400 / t) and where["bigsite.com"] == {u.index for u in big}
    assert sorted(u.slice for u in big) == list(range(len(big)))
    assert all(50 <= u.rows <= 150 for u in big), [u.rows for u in big]
    # the packed units hold whole sites, fewer than 2T rows each, and no site of another's
    packed = [u for u in plan.units if u.host is None]
    assert all(0 < u.rows < 2 * t for u in packed)
    assert sum(u.rows for u in packed) == total - 400


def test_a_written_plan_is_read_back_not_made_again(spark, tmp_path):
    work = tmp_path / "work"
    first = plan_units(_pairs(spark, {"a.example.com": 30, "b.example.com": 5}), str(work), "url", 10, 2)
    again = plan_units(_pairs(spark, {"c.example.com": 1}), str(work), "url", 10, 2)
    assert again == first and first.rows == 35


def test_hostless_rows_are_split_but_not_bounded(spark, tmp_path):
    rows = [(i, f"/local/{i}.jpg", "c", "d") for i in range(50)]
    frame = spark.createDataFrame(rows, "id long, url string, caption string, dump string")
    plan = plan_units(frame, str(tmp_path / "work"), "url", 10, 2)
    assert len(plan.units) == 5 and all(u.host is None for u in plan.units)


def test_fetch_order_interleaves_the_split_hosts_then_the_biggest_packed_units():
    units = [Unit(0, 10, "a.com", 0), Unit(1, 10, "a.com", 1), Unit(2, 10, "a.com", 2)]
    units += [Unit(3, 9, "b.com", 0), Unit(4, 9, "b.com", 1), Unit(5, 4), Unit(6, 8)]
    assert [u.index for u in fetch_order(units)] == [0, 3, 1, 4, 2, 6, 5]


def _recording(delay: float):
    lock, now, peak, started = threading.Lock(), Counter(), Counter(), []

    def run_one(unit: Unit) -> None:
        key = unit.host or f"packed-{unit.index}"
        with lock:
            now[key] += 1
            now["all"] += 1
            peak[key] = max(peak[key], now[key])
            peak["all"] = max(peak["all"], now["all"])
            started.append(unit.index)
        time.sleep(delay)
        with lock:
            now[key] -= 1
            now["all"] -= 1

    return run_one, peak, started


def test_run_bounded_never_runs_more_units_of_a_host_than_its_budget_holds():
    units = [Unit(i, 10, "a.com", i) for i in range(8)] + [Unit(8 + i, 10, "b.com", i) for i in range(3)]
    units += [Unit(11 + i, 5) for i in range(6)]
    run_one, peak, started = _recording(0.05)
    done = []
    run_bounded(units, run_one, slots=6, budget=4, need=2, on_done=done.append)
    assert sorted(started) == list(range(17)) and len(done) == 17
    assert peak["a.com"] == 2 and peak["b.com"] == 2  # the bound, and it was reached
    assert peak["all"] == 6  # the other slots kept working meanwhile


def test_a_failed_unit_stops_new_starts_and_is_raised():
    units = [Unit(i, 1) for i in range(20)]
    started = []

    def run_one(unit: Unit) -> None:
        started.append(unit.index)
        time.sleep(0.02)
        if unit.index == 3:
            raise RuntimeError("unit 3 failed")

    with pytest.raises(RuntimeError, match="unit 3 failed"):
        run_bounded(units, run_one, slots=2, budget=1)
    assert len(started) < 8


# --- the stage in a run: resume after the driver is killed, progress ---

ALLOW = "127.0.0.0/29"
SETTINGS = [
    "fetch.host_split_rows=20",
    "fetch.max_per_host=2",
    "fetch.threads=4",
    "fetch.retries=0",
    "run.progress_seconds=0.3",
]


def _input(tmp_path: Path, hosts) -> tuple[Path, list[str]]:
    """240 image URLs over 4 hosts (the first with half) and 4 that are not found, as a parquet of
    id, url, caption."""
    import pyarrow as pa

    counts = [120, 40, 40, 40]
    urls = [hosts[h].url(f"/img/{h}-{i}.jpg") for h, n in enumerate(counts) for i in range(n)]
    urls += [hosts[3].url(f"/missing/{i}.jpg") for i in range(4)]
    table = pa.table({"id": list(range(len(urls))), "url": urls, "caption": ["a red apple on a table"] * len(urls)})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path)
    return path, urls


def _args(source: Path, out: Path) -> list[str]:
    args = ["--input", str(source), "--output", str(out), "--stages", "image", "--allow-network", ALLOW]
    for setting in SETTINGS:
        args += ["--set", setting]
    return args


def _committed_urls(out: Path) -> list[str]:
    urls = []
    for folder in out.glob(f"_checkpoints/image/_work/*/{DONE}/unit-*"):
        urls += pq.read_table(folder, columns=["url"]).column("url").to_pylist()
    return urls


def _requested(hosts) -> list[str]:
    return sorted(h.url(p) for h in hosts for p in h.paths)


def _rows(spark, out: Path, part: str) -> list[str]:
    return sorted(map(repr, spark.read.parquet(str(out / part)).drop("dump").collect()))


@pytest.mark.spark
def test_a_killed_image_stage_resumes_from_its_committed_units(spark, tmp_path, caplog):
    with serve_hosts(4, delay=0.15) as hosts:
        source, urls = _input(tmp_path, hosts)
        out = tmp_path / "out"
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "jobs.cli", "run", *_args(source, out), "--master", "local[2]"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        units = 0
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                plans = list(out.glob("_checkpoints/image/_work/*/plan.json"))
                if plans:
                    units = len(json.loads(plans[0].read_text())["units"])
                    if len(list(plans[0].parent.glob(f"{DONE}/unit-*"))) >= units / 2:
                        break
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, mid-stage
            proc.wait(60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]
        committed = _committed_urls(out)
        done = len(list(out.glob(f"_checkpoints/image/_work/*/{DONE}/unit-*")))
        assert units >= 12 and done >= units / 2, (units, done)
        assert len(committed) < len(urls), "the stage ended before the kill: nothing to resume"
        first = _requested(hosts)
        assert set(committed) <= set(first)

        for h in hosts:
            h.reset()
        with caplog.at_level(logging.INFO, logger="winnow"):
            assert pipeline.main(_args(source, out)) == 0
        again = _requested(hosts)
        # the re-run fetched exactly the rows no unit had committed, each once
        assert again == sorted(set(urls) - set(committed))
        messages = [r.getMessage() for r in caplog.records if r.name == "winnow"]
        assert any(re.search(r"image: \d+ of \d+ units \(\d+ rows\) committed by an earlier run", m) for m in messages)
        progress = r"image: [\d,]+ of 244 rows \(\d+%\), \d+ of \d+ units; [\d.,]+ images/s; ETA (\d+:\d\d:\d\d|\?)"
        assert sum(bool(re.fullmatch(progress, m)) for m in messages) >= 2, messages  # while it ran, and at the end
        assert not list(out.glob("_checkpoints/image/_work"))  # committed: the work is gone

        clean = tmp_path / "clean"
        assert pipeline.main(_args(source, clean)) == 0
    for part in ("accepted", "rejected"):
        assert _rows(spark, out, part) == _rows(spark, clean, part)
    assert len(_rows(spark, out, "accepted")) == 240 and len(_rows(spark, out, "rejected")) == 4
