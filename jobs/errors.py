"""What can stop a winnow command, and the exit code each gives: one place for every command.

- 0: done.
- 2: bad input, config or environment (a missing column, an impossible value,
  no Java, a model that will not load): one line on stderr naming what to
  change, before anything is written. Every such error is a ``WinnowError``
  (or the model loader's ``ModelUnavailable``).
- 3: a conservation check failed (rows in != rows accepted + rows rejected):
  the output is not committed.

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
OK, BAD_INPUT, NOT_CONSERVED = 0, 2, 3
EXIT_CODES = "exit codes: 0 done, 2 bad input or config, 3 conservation check failed"


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


def run_command(body: Callable[[], int]) -> int:
    """Run one command's ``body`` with logging set up; its errors become one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return body()
    except ConservationError as exc:
        print(f"winnow: conservation check failed, output not trusted: {exc}", file=sys.stderr)
        return NOT_CONSERVED
    except (WinnowError, ModelUnavailable) as exc:
        print(f"winnow: error: {exc}", file=sys.stderr)
        return BAD_INPUT
