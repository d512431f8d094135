"""One run per OUTPUT: the lease of jobs.storage, alone and between real `winnow run` processes.

A second run on a held OUTPUT stops with exit 2 and one line naming the holder, before it
touches anything; the first finishes with the output a run alone gives. A run killed with
SIGKILL leaves its lease behind; once its heartbeat is older than ``run.lease_timeout`` the
next run takes it over and says so. The slow runs fetch from a loopback server only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_server import serve

from jobs import pipeline
from jobs.storage import LEASE, FileStore, Lease, LeaseHeld

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]


@pytest.fixture
def store(spark) -> FileStore:
    return FileStore(spark)


def lease(store: FileStore, out: Path, run_id: str, timeout: float = 60.0) -> Lease:
    return Lease(store, str(out), run_id, timeout)


def test_a_held_lease_stops_the_second_holder_and_names_the_first(store, tmp_path):
    first = lease(store, tmp_path, "run-a")
    assert first.take() is None
    holder = json.loads((tmp_path / LEASE).read_text())
    assert (holder["run_id"], holder["host"], holder["pid"]) == ("run-a", socket.gethostname(), os.getpid())
    with pytest.raises(LeaseHeld, match=f"is in use by run run-a on {socket.gethostname()} \\(pid {os.getpid()}"):
        lease(store, tmp_path, "run-b").take()
    first.confirm()
    first.release()
    assert not (tmp_path / LEASE).exists()
    second = lease(store, tmp_path, "run-b")
    assert second.take() is None
    second.release()


def test_a_stale_lease_is_taken_over_and_its_old_holder_may_not_commit(store, tmp_path):
    dead = lease(store, tmp_path, "run-dead", timeout=5)
    dead.take()
    dead._stop.set()  # as if the process had been killed: no heartbeat any more
    old = time.time() - 60
    os.utime(tmp_path / LEASE, (old, old))
    new = lease(store, tmp_path, "run-new", timeout=5)
    said = new.take()
    assert said is not None and said.startswith("took over the lease of run run-dead") and "stopped 60 s ago" in said
    assert json.loads((tmp_path / LEASE).read_text())["run_id"] == "run-new"
    with pytest.raises(LeaseHeld, match="this run lost the lease"):
        dead.confirm()
    dead.release()  # not its lease any more: left alone
    assert json.loads((tmp_path / LEASE).read_text())["run_id"] == "run-new"
    new.release()


def test_a_lease_of_a_gone_process_on_this_host_is_taken_over_at_once(store, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = {"run_id": "run-gone", "host": socket.gethostname(), "pid": gone.pid, "started": "then"}
    (tmp_path / LEASE).write_text(json.dumps(holder))
    taker = lease(store, tmp_path, "run-next", timeout=600)
    said = taker.take()
    assert said is not None and "run run-gone" in said and "process is gone" in said
    taker.release()


def test_an_empty_lease_file_is_judged_by_its_age(store, tmp_path):
    (tmp_path / LEASE).write_text("")  # a holder killed between create and write
    with pytest.raises(LeaseHeld, match="an unknown run"):
        lease(store, tmp_path, "run-x", timeout=30).take()
    old = time.time() - 31
    os.utime(tmp_path / LEASE, (old, old))
    taker = lease(store, tmp_path, "run-x", timeout=30)
    assert "an unknown run" in taker.take()
    taker.release()


def test_the_holder_renews_its_heartbeat(store, tmp_path):
    held = lease(store, tmp_path, "run-a", timeout=2)  # renewed every second
    held.take()
    old = time.time() - 100
    os.utime(tmp_path / LEASE, (old, old))
    time.sleep(1.5)
    assert time.time() - (tmp_path / LEASE).stat().st_mtime < 1.5
    held.release()


# --- real runs ------------------------------------------------------------------------------------------------------


def slow_input(tmp_path: Path, server, rows: int = 12) -> Path:
    """Pairs whose images the server answers after a second each: a run that lasts."""
    path = tmp_path / "pairs.parquet"
    urls = [server.url("/sleep", s="1", k=f"lease-{i}") for i in range(rows - 1)] + [server.url("/status/404")]
    table = [{"url": u, "caption": f"a photo number {i} of a red bicycle"} for i, u in enumerate(urls)]
    pq.write_table(pa.Table.from_pylist(table), path)
    return path


ARGS = ["--stages", "image", "--allow-network", "127.0.0.1/32", "--set", "image.partitions=2"]
ARGS += ["--set", "fetch.threads=1", "--set", "fetch.timeout=30"]


def start_run(pairs: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`winnow run` in a process group of its own (its JVM too), in local mode."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--input", str(pairs), "--output", str(out)]
    cmd += ["--master", "local[2]", *ARGS, *extra]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(what: str, ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < end, f"no {what} within {timeout} s"
        time.sleep(0.2)


def rows(spark, out: Path) -> list[str]:
    return sorted(map(repr, spark.read.parquet(str(out / "accepted")).collect())) + sorted(
        map(repr, spark.read.parquet(str(out / "rejected")).collect())
    )


def test_a_second_run_exits_2_naming_the_holder_and_the_first_is_unchanged(spark, tmp_path, capsys):
    with serve() as server:
        pairs = slow_input(tmp_path, server)
        out = tmp_path / "out"
        first = start_run(pairs, out)
        try:
            wait_for("the lease", (out / LEASE).exists, first)
            holder = json.loads((out / LEASE).read_text())
            assert pipeline.main(["--input", str(pairs), "--output", str(out), *ARGS]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"winnow: error: {out} is in use by run {holder['run_id']}")
            assert f"pid {first.pid}" in err[0]
            # Had the second run touched the output (recovery deletes staging no commit names), the
            # first would fail or differ from a run alone.
            stdout, stderr = first.communicate(timeout=240)
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
        assert first.returncode == 0, stderr[-3000:]
        assert not (out / LEASE).exists()
        alone = tmp_path / "alone"
        assert pipeline.main(["--input", str(pairs), "--output", str(alone), *ARGS]) == 0
    assert rows(spark, out) == rows(spark, alone) and len(rows(spark, out)) == 12  # 11 accepted, 1 http-4xx


def test_a_killed_runs_lease_is_taken_over_by_the_next_run(spark, tmp_path, capsys, caplog):
    """The killed run ran on this host: its process is gone, so its lease is taken over at once
    (on another host the next run would wait for run.lease_timeout: the unit test above)."""
    with serve() as server:
        pairs = slow_input(tmp_path, server)
        out = tmp_path / "out"
        killed = start_run(pairs, out)
        try:
            wait_for("the lease", (out / LEASE).exists, killed)
            wait_for("a fetch", lambda: server.hits("/sleep", prefix=True), killed)
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(timeout=30)
        holder = json.loads((out / LEASE).read_text())
        assert holder["pid"] == killed.pid
        assert pipeline.main(["--input", str(pairs), "--output", str(out), *ARGS]) == 0
        took = [r.getMessage() for r in caplog.records if "took over the lease" in r.getMessage()]
        assert took and f"took over the lease of run {holder['run_id']}" in took[0] and "process is gone" in took[0]
        alone = tmp_path / "alone"
        assert pipeline.main(["--input", str(pairs), "--output", str(alone), *ARGS]) == 0
    assert not (out / LEASE).exists()
    assert rows(spark, out) == rows(spark, alone)


def test_a_run_that_stops_before_writing_leaves_no_output_folder(spark, tmp_path, capsys):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"url": "http://x/1", "caption": "a red bicycle"}]), pairs)
    out = tmp_path / "never"
    assert pipeline.main(["--input", str(pairs), "--output", str(out), "--caption-col", "nope"]) == 2
    assert not out.exists()
