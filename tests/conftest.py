"""Shared fixtures: one local SparkSession for the whole run, paths to shared data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
LAION_10K = SHARED_DATA / "laion_style_captions_10k.parquet"


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
