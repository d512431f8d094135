"""What can stop a winnow command, and the exit code each gives: one place for every command.

- 0: done.
- 2: bad input, config or environment (a missing column, an impossible value,
  no Java, a model that will not load): one line on stderr naming what to
  change, before anything is written. Every such error is a ``WinnowError``
  (or the model loader's ``ModelUnavailable``).
- 3: a conservation check failed (rows in != rows accepted + rows rejected):
  the output is not committed.
- 4: Spark itself failed: its JVM ran out of memory (``java.lang.OutOfMemoryError``)
  or went away mid-job; nothing is committed, the next run resumes from the
  last complete checkpoint. Spark's own log above the line has the JVM's side.

A bad row is none of these: it becomes a rejected row with a reason. Anything
else is a bug and keeps its stack trace.

    def execute(args) -> int:
        return run_command(lambda: run_job(args))
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from udfs.resources import ModelUnavailable

# Exit codes (also in each command's --help).
OK, BAD_INPUT, NOT_CONSERVED, SPARK_FAILED = 0, 2, 3, 4
EXIT_CODES = (
    "exit codes: 0 done, 2 bad input or config, 3 conservation check failed, "
    "4 Spark failed (out of memory, or its JVM went away)"
)
MEMORY_HINT = (
    "give Spark more memory (spark-submit --driver-memory / --executor-memory, or spark.driver.memory) "
    "or lower run.row_group_bytes and image.batch_size"
)


def spark_failure(exc: BaseException) -> str | None:
    """One line for an exception that means Spark itself failed (out of memory, its JVM gone), else None."""
    from py4j.protocol import Py4JError, Py4JNetworkError

    text = ""
    try:
        text = str(exc)
    except Exception:  # a Py4JJavaError whose JVM is gone cannot even say what it was
        pass
    if "java.lang.OutOfMemoryError" in text:
        return f"Spark ran out of memory (java.lang.OutOfMemoryError): {MEMORY_HINT}"
    if isinstance(exc, (Py4JNetworkError, ConnectionRefusedError)) or (isinstance(exc, Py4JError) and not text):
        return (
            "the Spark JVM went away during the job (most often java.lang.OutOfMemoryError: see Spark's log "
            f"above): {MEMORY_HINT}; nothing was committed"
        )
    return None


class WinnowError(Exception):
    """Bad input, config or environment; the message names what to change."""


class ConfigError(WinnowError):
    """A configuration problem, with the offending key first in the message."""


class ConservationError(RuntimeError):
    """rows in != rows accepted + rows rejected: the job must not publish its output."""


def require(ok: bool, key: str, why: str) -> None:
    """Raise ``ConfigError("<key>: <why>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {why}")


def _not_from_py4j(record: logging.LogRecord) -> bool:
    return "/py4j/" not in record.pathname.replace("\\", "/")


def run_command(body: Callable[[], int]) -> int:
    """Run one command's ``body`` with logging set up; its errors become one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # py4j logs a traceback for every call that finds the JVM gone (thousands after an out-of-memory
    # death): the exception that reaches here says it once.
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    if _not_from_py4j not in logging.getLogger().filters:  # it also logs on the root logger
        logging.getLogger().addFilter(_not_from_py4j)
    try:
        return body()
    except ConservationError as exc:
        print(f"winnow: conservation check failed, output not trusted: {exc}", file=sys.stderr)
        return NOT_CONSERVED
    except (WinnowError, ModelUnavailable) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except Exception as exc:
        line = spark_failure(exc)
        if line is None:
            raise  # a bug: keep its stack trace
        print(f"winnow: error: {line}", file=sys.stderr)
        return SPARK_FAILED
