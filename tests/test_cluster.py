"""The pipeline submitted to a local standalone cluster (deploy/standalone.sh) gives the local-mode output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import pipeline

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.spark


def read_funnel(out: Path) -> dict:
    return json.loads((out / "report" / "funnel.json").read_text())


def test_standalone_cluster_output_equals_local_mode(spark, cluster, tmp_path):
    from jobs.demo.sample import serve_images, write_sample

    master, folder = cluster.master, cluster.folder
    assert master.startswith("spark://127.0.0.1:")
    earlier_logs = set(folder.glob("work-*/app-*/*/stderr"))  # the cluster is shared with other tests
    with serve_images(tmp_path / "images") as base_url:
        sample = write_sample(tmp_path / "in", n=200, seed=5, images=tmp_path / "images", base_url=base_url)
        allow = ["--allow-network", "127.0.0.1/32"]
        local = tmp_path / "local"
        assert pipeline.main(["--input", str(sample), "--output", str(local), *allow]) == 0
        submitted = tmp_path / "cluster"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        proc = subprocess.run(
            [str(REPO / "deploy" / "submit.sh"), "--master", master,
             "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.executor.memory=1g",
             "--conf", f"spark.pyspark.python={sys.executable}",
             "--", "--input", str(sample), "--output", str(submitted), *allow],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_funnel(submitted)["stages"] == read_funnel(local)["stages"]
    assert [s["stage"] for s in read_funnel(local)["stages"]] == ["ingest", "text", "image", "dedup"]
    for part in ("accepted", "rejected"):
        a = sorted(map(repr, spark.read.parquet(str(local / part)).collect()))
        b = sorted(map(repr, spark.read.parquet(str(submitted / part)).collect()))
        assert a == b and len(a) > 0
    # the executors ran on the workers, not in the driver
    logs = set(folder.glob("work-*/app-*/*/stderr")) - earlier_logs
    assert logs, "no executor ran on the standalone workers"
