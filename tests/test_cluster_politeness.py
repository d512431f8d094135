"""The cluster-wide per-host bound on the standalone cluster (two executors): a host sees at most
``fetch.max_per_host`` x ``fetch.max_tasks_per_host`` connections from the whole run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from loopback_hosts import serve_hosts

from jobs import pipeline

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.spark


def _args(source: Path, out: Path, tasks_per_host: int) -> list[str]:
    settings = ["fetch.max_per_host=2", "fetch.threads=8", "fetch.host_split_rows=15", "fetch.retries=0",
                f"fetch.max_tasks_per_host={tasks_per_host}"]  # fmt: skip
    args = ["--input", str(source), "--output", str(out), "--stages", "image", "--allow-network", "127.0.0.0/29"]
    return args + [a for s in settings for a in ("--set", s)]


def _submit(cluster, tmp_path: Path, args: list[str]) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(REPO / "deploy" / "submit.sh"), "--master", cluster.master,
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.executor.memory=1g",
         "--conf", f"spark.pyspark.python={sys.executable}", "--", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_host_sees_at_most_max_per_host_times_max_tasks_per_host(spark, cluster, tmp_path):
    with serve_hosts(3, delay=0.1) as hosts:
        big, *others = hosts
        urls = [big.url(f"/img/big-{i}.jpg") for i in range(90)]
        urls += [h.url(f"/img/{n}-{i}.jpg") for n, h in enumerate(others) for i in range(10)]
        source = tmp_path / "pairs.parquet"
        captions = ["a red apple on a table"] * len(urls)
        pq.write_table(pa.table({"id": list(range(len(urls))), "url": urls, "caption": captions}), source)

        # one unit of a host at a time: both executors fetch, never the big host together
        earlier_logs = set(cluster.folder.glob("work-*/app-*/*/stderr"))  # the cluster is shared with other tests
        _submit(cluster, tmp_path, _args(source, tmp_path / "bounded", tasks_per_host=1))
        executors = set(cluster.folder.glob("work-*/app-*/*/stderr")) - earlier_logs
        assert len({p.parent.parent.parent for p in executors}) == 2  # both workers ran executors
        assert len(big.paths) == 90 == len(set(big.paths))
        assert big.peak_active <= 2 and big.peak_open <= 2, (big.peak_active, big.peak_open)
        assert big.opened < 90 / 4  # the connections are reused within a task

        # a budget of 2 x 2 (here in local mode: two tasks at once): the same input goes above the
        # first run's bound, so the bound is what held it there
        for h in hosts:
            h.reset()
        assert pipeline.main(_args(source, tmp_path / "two", tasks_per_host=2)) == 0
        assert len(big.paths) == 90
        assert 2 < big.peak_active <= 4 and big.peak_open <= 4, (big.peak_active, big.peak_open)
