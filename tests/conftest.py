"""Shared fixtures: one local SparkSession for the whole run, one local standalone cluster
(deploy/standalone.sh) for the tests that submit to it, paths to shared data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
LAION_10K = SHARED_DATA / "laion_style_captions_10k.parquet"
STANDALONE = str(REPO / "deploy" / "standalone.sh")


@pytest.fixture(scope="session")
def spark():
    """local[2], 2 shuffle partitions, no UI, UTC, workers on this interpreter."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from jobs.session import JOB_CONF

    builder = (
        SparkSession.builder.master("local[2]")
        .appName("winnow-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
    )
    for key, value in JOB_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def laion_10k() -> Path:
    if not LAION_10K.exists():
        pytest.skip(
            f"{LAION_10K} is absent: ../shared/data exists beside the checkout and in CI, not in a user's clone"
        )
    return LAION_10K


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    """A running deploy/standalone.sh cluster: its master URL, its folder (logs, work dirs)."""

    master: str
    folder: Path
    env: dict[str, str]
    workers: int = 2

    def script(self, *args: str, timeout: float = 180) -> str:
        """Run deploy/standalone.sh with ``args`` against this cluster; its stdout (fails on an error)."""
        done = subprocess.run([STANDALONE, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        assert done.returncode == 0, f"standalone.sh {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def restore_workers(self) -> None:
        """Start again any worker that is not running (a test killed it), and wait for its registration."""
        for n in range(1, self.workers + 1):
            if not _alive(self.folder / f"worker-{n}.pid"):
                self.script("worker-start", str(n))


def _alive(pid_file: Path) -> bool:
    """Whether the process of a pid file runs (a killed one not yet reaped is a zombie, not alive)."""
    try:
        stat = Path(f"/proc/{int(pid_file.read_text())}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """A master and two 1-core workers on 127.0.0.1 for the whole session (a start costs ~15-20 s)."""
    folder = tmp_path_factory.mktemp("standalone")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "STANDALONE_DIR": str(folder),
        "MASTER_PORT": str(free_port()),
        "WORKER_MEMORY": "1g",
    }
    started = subprocess.run([STANDALONE, "start"], capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield Cluster(started.stdout.strip().splitlines()[-1], folder, env)
    finally:
        subprocess.run([STANDALONE, "stop"], env=env, timeout=60, check=False)


@pytest.fixture
def cluster(standalone: Cluster) -> Cluster:
    """The shared standalone cluster with all its workers running: a worker an earlier test
    killed (and failed to bring back) is started again first."""
    standalone.restore_workers()
    return standalone
