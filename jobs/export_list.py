"""Export-list: winnow's accepted pairs as one folder of plain parquet, ``dump`` a column.

``OUTPUT/accepted`` is partitioned: its rows sit in ``dump=<name>/`` folders
and the dump is in the folder name only. Tools that read a folder of parquet
files without Hive partitioning miss it: img2dataset's ``--url_list`` looks
for ``*.parquet`` directly in the folder (none there), HF ``datasets``'
parquet builder drops the ``dump`` column. This job writes the same rows as
parquet files directly in ``--output``, with ``dump`` as an ordinary string
column, sorted by (dump, id, url), so any parquet reader gets every row and
its dump.

Columns: every column of the input except the image bytes (``image``, from
``image.keep_bytes``: a URL list should not carry them; ``--with-images``
keeps them), or the ones ``--columns`` names (``dump`` is always written).
Nested columns (``noun_chunks``, ``noun_chunk_spans``) stay nested.

Checks before anything is written: the input exists and reads as parquet
with ``id``, ``url``, ``caption`` and ``dump`` columns (exit 2 otherwise);
``--output`` does not exist yet unless ``--overwrite``. After the write the
output's row count (from the parquet footers) must equal the input's, or
the job exits 3.

    winnow export-list --input OUTPUT/accepted --output urls.parquet [--columns id,url,caption] [--overwrite]
    spark-submit jobs/export_list.py --input hdfs:///winnow/out/accepted --output hdfs:///winnow/urls
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from jobs.errors import ConservationError, WinnowError, run_command
from jobs.session import get_spark
from jobs.storage import FileStore
from schemas.tables import IMAGE_BYTES, col_ref

log = logging.getLogger("winnow")

REQUIRED = ("id", "url", "caption", "dump")
DESCRIPTION = "Write winnow's accepted pairs as one folder of parquet, `dump` a column (for img2dataset, HF datasets)."


class ExportListError(WinnowError):
    """The list cannot be written as asked; the message says what to change."""


def read_accepted(spark: SparkSession, path: str) -> DataFrame:
    """``path`` read as winnow's accepted pairs, or ExportListError naming what is wrong with it."""
    store = FileStore(spark)
    if not store.exists(path):
        raise ExportListError(f"input not found: {path}")
    children = store.children(path)
    if "accepted" in children and not any(c.startswith("dump=") for c in children):
        raise ExportListError(f"{path} is a run's output folder: give {path.rstrip('/')}/accepted, not OUTPUT")
    try:
        pairs = spark.read.parquet(path)
    except AnalysisException as exc:
        raise ExportListError(f"{path} is not a folder of parquet: {str(exc).splitlines()[0]}") from None
    missing = [c for c in REQUIRED if c not in pairs.columns]
    if missing:
        why = "no dump=<name>/ folders" if missing == ["dump"] else f"no {', '.join(missing)} column"
        raise ExportListError(f"{path}: {why}; is it winnow's OUTPUT/accepted?")
    return pairs


def overlaps(first: str, second: str) -> bool:
    """Whether one path is the other or inside it (local paths made absolute, URLs compared as written)."""

    def parts(path: str) -> list[str]:
        path = path.removeprefix("file://").removeprefix("file:")
        if "://" not in path:
            path = os.path.abspath(path)
        return [p for p in path.split("/") if p]

    a, b = parts(first), parts(second)
    return a[: len(b)] == b or b[: len(a)] == a


def list_columns(pairs: DataFrame, columns: list[str] | None, with_images: bool) -> list[str]:
    """The columns to write, in the input's order, ``dump`` included."""
    if columns is None:
        return [c for c in pairs.columns if with_images or c != IMAGE_BYTES.name]
    unknown = [c for c in columns if c not in pairs.columns]
    if unknown:
        raise ExportListError(f"--columns: {', '.join(unknown)} not in the input (it has {', '.join(pairs.columns)})")
    wanted = set(columns) | {"dump"}
    return [c for c in pairs.columns if c in wanted]


def export_list(
    spark: SparkSession,
    input_path: str,
    output: str,
    columns: list[str] | None = None,
    with_images: bool = False,
    overwrite: bool = False,
) -> int:
    """Write the accepted pairs under ``input_path`` as plain parquet in ``output``; returns the rows written."""
    if overlaps(input_path, output):
        # Spark's overwrite deletes --output before it reads the input.
        raise ExportListError(f"--output {output} and --input {input_path} must not be one inside the other")
    pairs = read_accepted(spark, input_path)
    if FileStore(spark).exists(output) and not overwrite:
        raise ExportListError(f"--output {output} exists; pass --overwrite to replace it")
    keep = list_columns(pairs, columns, with_images)
    rows = pairs.count()  # from the parquet footers
    listed = pairs.select(*[col_ref(c) for c in keep]).orderBy("dump", "id", "url")
    listed.write.mode("overwrite").parquet(output)
    written = spark.read.parquet(output).count()
    if written != rows:
        raise ConservationError(f"export-list read {rows:,} rows from {input_path} but {output} holds {written:,}")
    return written


def add_export_list_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow export-list` and of `spark-submit jobs/export_list.py`."""
    parser.epilog = "exit codes: 0 done, 2 bad input or options, 3 rows written != rows read"
    parser.add_argument("--input", required=True, help="winnow's OUTPUT/accepted folder (parquet in dump=<name>/)")
    parser.add_argument("--output", required=True, help="folder for the parquet files (any Hadoop file system)")
    parser.add_argument(
        "--columns", help="comma-separated columns to write (default: all but the image bytes); dump is always written"
    )
    parser.add_argument("--with-images", action="store_true", help="keep the `image` column (image.keep_bytes)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output when it exists")
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow export-list` (default local[*]); spark-submit sets its own"
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    """Run the export for parsed arguments; 0 ok, 2 bad input or options, 3 not conserved."""
    return run_command(lambda: _export_list(args))


def _export_list(args: argparse.Namespace) -> int:
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    if columns is not None and not columns:
        raise ExportListError("--columns names no column")
    spark = get_spark("winnow-export-list", master=args.master)
    spark.sparkContext.setLogLevel("WARN")
    written = export_list(spark, args.input, args.output, columns, args.with_images, args.overwrite)
    print(f"listed: {written:,} rows under {args.output}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/export_list.py`; returns the exit code."""
    parser = add_export_list_arguments(argparse.ArgumentParser(prog="jobs/export_list.py", description=DESCRIPTION))
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
