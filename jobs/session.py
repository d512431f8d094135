"""SparkSession set-up shared by the CLI, spark-submit and the tests.

No master is set in code: spark-submit (or the test fixture) decides. Only a
plain ``winnow run`` outside spark-submit falls back to ``--master`` /
``local[*]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from jobs.errors import WinnowError

# Settings the job relies on, not tuning: dynamic partition overwrite makes a
# re-run replace exactly the dumps it wrote; UTC keeps timestamps stable.
JOB_CONF = {
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.skewJoin.enabled": "true",
    # dump=007/ stays "007": partition values are names, not numbers or dates.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    # Let AQE coalesce the partitions of persisted stage frames too.
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
}


# Defaults for a long run watched in a terminal, unless the user configured them
# (--conf, spark-defaults.conf): Spark's stage progress bar on stderr.
CONSOLE_CONF = {"spark.ui.showConsoleProgress": "true"}


def _configured(key: str) -> bool:
    """Whether the driver JVM's configuration (spark-submit --conf, spark-defaults.conf) sets ``key``."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # starts the JVM gateway (or joins spark-submit's) if not yet running
    return SparkConf().contains(key)


def bound_row_groups(spark: SparkSession, row_group_bytes: int) -> None:
    """Parquet row groups the job writes close at about ``row_group_bytes`` (``run.row_group_bytes``).

    A Parquet reader holds a whole row group's column chunks in memory, and the
    writer buffers one per task until it closes: with full-size image bytes in a
    row, Parquet's 128 MiB default (checked only every 100 rows, so ~100 images
    at least) does not fit a default 1 GB heap. The size is checked from the
    second row on, so one row group holds as few as two rows of large images.
    0 leaves Parquet's defaults.
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    keys = ("parquet.block.size", "parquet.block.size.row.check.min", "parquet.page.size.row.check.min")
    if row_group_bytes <= 0:
        for key in keys:
            conf.unset(key)
        return
    for key, value in zip(keys, (str(row_group_bytes), "2", "2"), strict=True):
        conf.set(key, value)


class JavaMissing(WinnowError):
    """No usable Java runtime: Spark cannot start."""


def check_java() -> None:
    """Fail with one line instead of a py4j stack trace when Java 17+ is missing."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        raise JavaMissing(
            f"Spark needs Java 17 or newer: {where} (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
        )
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise JavaMissing(f"Spark needs Java 17 or newer: `{java} -version` failed ({exc})") from None


def get_spark(app_name: str, master: str | None = None, arrow_batch_size: int | None = None) -> SparkSession:
    """The active session, or a new one; ``master`` only applies outside spark-submit."""
    active = SparkSession.getActiveSession()
    if active is not None:
        spark = active
    else:
        check_java()
        builder = SparkSession.builder.appName(app_name)
        # Under spark-submit the JVM exists already (PYSPARK_GATEWAY_PORT) and
        # its --master stands; a plain `winnow run` defaults to local[*].
        if master:
            builder = builder.master(master)
        elif "PYSPARK_GATEWAY_PORT" not in os.environ:
            builder = builder.master("local[*]")
        if "PYSPARK_GATEWAY_PORT" not in os.environ:
            # Python workers must run this interpreter (with winnow installed in it).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in JOB_CONF.items():
            builder = builder.config(key, value)
        for key, value in CONSOLE_CONF.items():
            if not _configured(key):
                builder = builder.config(key, value)
        spark = builder.getOrCreate()
    for key, value in JOB_CONF.items():
        spark.conf.set(key, value)
    if arrow_batch_size:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_size))
    return spark


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Set SQL settings for the actions run inside the block, then restore them.

    Used for per-stage Arrow batch sizes: the image stage sends a few dozen
    rows per batch (they may carry image bytes), the text stage thousands.
    """
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
