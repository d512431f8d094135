"""Export: winnow's accepted pairs as WebDataset tar shards, with img2dataset's .json fields and GRIT's columns.

Reads ``OUTPUT/accepted`` (parquet partitioned by ``dump``). It must have the
binary ``image`` column, which the image stage writes only with
``--set image.keep_bytes=true``; without it the export refuses to start.
Writes, per dump::

    <output>/dump=<name>/<name>_00000.tar, <name>_00001.tar, ...   at most --shard-size samples each
    <output>/dump=<name>/_winnow_export.json                        shard list and counts, written last

Each sample is ``<key>.jpg`` (the ``image`` bytes), ``<key>.txt`` (the
caption) and ``<key>.json``: img2dataset's fields with its meaning (``url``,
``caption``, ``key``, ``width`` / ``height`` of the stored ``.jpg``,
``original_width`` / ``original_height`` of the image the rules judged), then
the pair's ``id``, ``image_phash``, ``dump`` and, when the input has them,
GRIT's ``noun_chunks`` / ``ref_exps`` as the GRIT release has them (span ends
as integers, box and score as floats; Kosmos-2's scripts slice the caption
with the spans) and winnow's ``noun_chunk_spans`` / ``ref_exp_spans``.

Keys and shard names are unique across dumps, so the shards of every dump
can be read as one dataset or extracted into one folder (Kosmos-2's
``prepare_grit.py`` reads such a folder): the key is the dump, ``_``, the
pair's id (``2024-05_8137``; a second row with the same id in the dump is
``2024-05_8137_1``), the shard name the dump, ``_``, the shard number. In both,
a dump name keeps its letters, digits and ``-``; any other character (a dot
would end a WebDataset key) is written ``%XX`` (``udfs.wds.dump_token``). The
dump folder is ``dump=<name>`` (escaped as Spark escapes partition values) so
the shards read back with ``--input-format webdataset`` keep their dump, and
the ``.json``'s integral ``id`` stays the pair's id there.

Deterministic: within a dump, samples are ordered by ``id`` (then url,
caption, image bytes, which also settles duplicate ids), numbered from 0, and
sample ``n`` goes to shard ``n // shard_size``; the tar members have fixed
owner, mode and time. The same input and shard size give byte-identical tars.
A re-export first deletes the ``dump=<name>/`` folders of the dumps it
writes (dumps not in the input are left alone), so no stale shard of an
earlier, larger export survives.

Where the tars are written: by the executors, with plain Python file I/O
(each task writes its shards into a hidden temporary file and renames it,
so a retried task cannot leave half a shard). ``--output`` must therefore be
a path the driver and every executor can write: a local folder in local
mode, an NFS or other shared POSIX mount on a cluster. HDFS / S3 URLs are
refused; export to a shared or local folder and copy (``hdfs dfs -put``,
``aws s3 sync``), until the writer goes through fsspec / pyarrow.fs.

Recap-DataComp mixed training (``--caption-mix P``): each sample's caption is
the recaption (``re_caption``) with probability P, else the original
(``org_caption``), as in the Recap paper's mixed training. The draw is
deterministic by id (Spark's ``xxhash64`` of (id, 7) modulo 2^53, over 2^53),
so a re-export picks the same captions; both columns are whitespace-normalised
as the text stage does, a null or empty pick falls back to the other, and the
``.json`` says which one the ``.txt`` holds (``caption_source``). It needs the
Recap columns in the accepted rows (the ``recap`` input format carries both)
and one row per image (not ``ingest.recap_both``).

Scale: the ranking runs on (dump, id, count) rows only, one task per dump
(a running sum); the image bytes are shuffled twice (a join to those ranks,
then by shard), each shard's rows go to one task and stream into one open tar.

    winnow export-wds --input OUTPUT/accepted --output shards/ [--shard-size 10000]
    spark-submit jobs/export.py --input OUTPUT/accepted --output /mnt/shared/shards
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from urllib.parse import urlparse

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.errors import WinnowError, run_command
from jobs.session import get_spark
from jobs.stages.text import normalise_caption_col
from schemas.tables import EXPORTED_SHARD, IMAGE_BYTES, col_ref
from udfs import wds

log = logging.getLogger("winnow")

DEFAULT_SHARD_SIZE = 10_000  # img2dataset's number_sample_per_shard
# Rows per Arrow batch into the writer: each row carries an image.
BATCH_ROWS = 64
MANIFEST = "_winnow_export.json"
REQUIRED = ("id", "url", "caption")


class ExportError(WinnowError):
    """The export cannot run as asked; the message says what to change."""


def local_folder(output: str) -> str:
    """``output`` as a local path, or ExportError for a URL Python file I/O cannot write."""
    parsed = urlparse(output)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme and len(parsed.scheme) > 1:  # "C:" style drive letters are paths
        raise ExportError(
            f"--output {output}: the shards are written by the executors with Python file I/O, so the output "
            "must be a local or shared (NFS) folder every executor can write; export there and copy the "
            "shards to HDFS / S3 (hdfs dfs -put, aws s3 sync)"
        )
    return output


def check_exportable(accepted: DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in accepted.columns]
    if missing:
        raise ExportError(f"the input has no {', '.join(missing)} column: is it winnow's OUTPUT/accepted?")
    if IMAGE_BYTES.name not in accepted.columns:
        raise ExportError(
            "the input has no `image` column: winnow keeps the images only when the image stage runs with "
            "--set image.keep_bytes=true; re-run `winnow run ... --stages text,image --set image.keep_bytes=true`"
        )


def with_shard_positions(pairs: DataFrame, shard_size: int) -> DataFrame:
    """``_pos`` (0-based rank within the dump by id, url, caption, image), ``_shard`` (= _pos // shard_size)
    and ``_repeat`` (the rank among the dump's rows with the same id, 0 for the first).

    The rank of an id's first row is the number of rows with a smaller id in
    the dump: a running sum over (dump, id, count), so only those small rows
    are sorted per dump. Rows sharing an id are then ranked among themselves.
    """
    per_id = pairs.groupBy("dump", "id").agg(F.count(F.lit(1)).alias("_n"))
    running = Window.partitionBy("dump").orderBy("id").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    starts = per_id.select(
        F.col("dump").alias("_dump"),
        F.col("id").alias("_id"),
        (F.sum("_n").over(running) - F.col("_n")).alias("_start"),
    )
    joined = pairs.join(starts, pairs["dump"].eqNullSafe(starts["_dump"]) & pairs["id"].eqNullSafe(starts["_id"]))
    same_id = Window.partitionBy("dump", "id").orderBy("url", "caption", IMAGE_BYTES.name)
    return (
        joined.withColumn("_repeat", F.row_number().over(same_id) - 1)
        .withColumn("_pos", F.col("_start") + F.col("_repeat"))
        .drop("_dump", "_id", "_start")
        .withColumn("_shard", F.floor(F.col("_pos") / F.lit(shard_size)).cast("long"))
    )


MIX_SEED = 7
RECAPTION, ORIGINAL = "re_caption", "org_caption"


def mix_draw(id_col: str = "id") -> F.Column:
    """A number in [0, 1) fixed by the id: Spark's xxhash64 of (id, 7), modulo 2^53, over 2^53."""
    hashed = F.xxhash64(F.col(id_col).cast("long"), F.lit(MIX_SEED))
    return F.pmod(hashed, F.lit(1 << 53)).cast("double") / F.lit(float(1 << 53))


def with_caption_mix(pairs: DataFrame, p: float) -> DataFrame:
    """``caption`` replaced by the recaption with probability ``p`` (by id), else the original; adds
    ``caption_source``."""
    if not 0.0 <= p <= 1.0:
        raise ExportError(f"--caption-mix must be within [0, 1], got {p}")
    missing = [c for c in (RECAPTION, ORIGINAL) if c not in pairs.columns]
    if missing:
        raise ExportError(
            f"--caption-mix needs the Recap-DataComp columns {', '.join(missing)} in the accepted rows "
            "(read the input with --input-format recap)"
        )
    if "caption_kind" in pairs.columns:
        raise ExportError("--caption-mix picks one caption per image: run without ingest.recap_both")
    recap = F.nullif(normalise_caption_col(RECAPTION), F.lit(""))
    original = F.nullif(normalise_caption_col(ORIGINAL), F.lit(""))
    pick_recap = mix_draw() < F.lit(p)
    first = F.when(pick_recap, recap).otherwise(original)
    second = F.when(pick_recap, original).otherwise(recap)
    source = (
        F.when(first.isNotNull(), F.when(pick_recap, F.lit(RECAPTION)).otherwise(F.lit(ORIGINAL)))
        .when(second.isNotNull(), F.when(pick_recap, F.lit(ORIGINAL)).otherwise(F.lit(RECAPTION)))
        .otherwise(F.lit("caption"))
    )
    return pairs.withColumn("caption_source", source).withColumn("caption", F.coalesce(first, second, F.col("caption")))


def present(frame: DataFrame, name: str) -> F.Column:
    """The column ``name``, or a null one when ``frame`` has none."""
    return col_ref(name) if name in frame.columns else F.lit(None).alias(name)


def original_size(frame: DataFrame, name: str) -> F.Column:
    """``original_width`` / ``original_height``: img2dataset's column when the input carried one, else
    ``width`` / ``height`` (the image the rules judged, as fetched)."""
    side = name.removeprefix("original_")
    found = [col_ref(c) for c in (name, side) if c in frame.columns]
    return (F.coalesce(*found) if found else F.lit(None)).cast("long").alias(name)


def export_webdataset(accepted: DataFrame, output: str, shard_size: int, caption_mix: float | None = None) -> int:
    """Write ``accepted`` as WebDataset shards under ``output``; returns the number of samples written.

    Rows without image bytes cannot be a sample: they are counted, logged and
    listed in the manifest as ``rows_without_image``, not written.
    """
    check_exportable(accepted)
    if shard_size < 1:
        raise ExportError(f"--shard-size must be at least 1, got {shard_size}")
    if caption_mix is not None:
        accepted = with_caption_mix(accepted, caption_mix)
    folder = local_folder(output)
    pairs = accepted if "dump" in accepted.columns else accepted.withColumn("dump", F.lit("default"))
    pairs = pairs.withColumn("dump", F.coalesce(F.col("dump").cast("string"), F.lit("default")))
    extra = tuple(c for c in (*wds.GRIT_COLUMNS, *wds.SPAN_COLUMNS, "caption_source") if c in pairs.columns)
    meta = [original_size(pairs, c) if c.startswith("original_") else present(pairs, c) for c in wds.META_COLUMNS]

    # Row counts per dump read no column data; they give the dumps to replace.
    totals = {r["dump"]: r["n"] for r in pairs.groupBy("dump").agg(F.count(F.lit(1)).alias("n")).collect()}
    for dump in totals:
        shutil.rmtree(os.path.join(folder, "dump=" + wds.escape_path_name(dump)), ignore_errors=True)

    with_image = pairs.filter(F.col(IMAGE_BYTES.name).isNotNull()).select(
        "dump", *meta, IMAGE_BYTES.name, *[col_ref(c) for c in extra]
    )
    ordered = (
        with_shard_positions(with_image, shard_size)
        .repartition("dump", "_shard")
        .sortWithinPartitions("dump", "_shard", "_pos")
    )
    shards = ordered.mapInArrow(wds.shard_writer(folder, extra), EXPORTED_SHARD).collect()

    written = 0
    for dump, total in sorted(totals.items()):
        mine = sorted((r for r in shards if r["dump"] == dump), key=lambda r: r["shard"])
        samples = sum(r["samples"] for r in mine)
        written += samples
        if samples < total:
            log.warning(
                "dump %s: %d of %d rows have no image bytes and were not exported", dump, total - samples, total
            )
        manifest = {
            "dump": dump,
            "shard_size": shard_size,
            "samples": samples,
            "rows_without_image": total - samples,
            "shards": [
                {"file": wds.shard_file_name(dump, r["shard"]), "samples": r["samples"], "bytes": r["bytes"]}
                for r in mine
            ],
        }
        dump_folder = os.path.join(folder, "dump=" + wds.escape_path_name(dump))
        os.makedirs(dump_folder, exist_ok=True)
        with open(os.path.join(dump_folder, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        log.info("dump %s: %d samples in %d shards under %s", dump, samples, len(mine), dump_folder)
    return written


DESCRIPTION = "Write winnow's accepted pairs (with kept image bytes) as WebDataset tar shards."


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow export-wds` and of `spark-submit jobs/export.py`."""
    parser.epilog = "exit codes: 0 done, 2 bad input or options"
    parser.add_argument("--input", required=True, help="winnow's OUTPUT/accepted folder (needs the `image` column)")
    parser.add_argument(
        "--output", required=True, help="folder for dump=<name>/NNNNN.tar; local or shared (NFS) for every executor"
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help=f"samples per shard, at most (default {DEFAULT_SHARD_SIZE:,})",
    )
    parser.add_argument(
        "--caption-mix",
        type=float,
        metavar="P",
        help="Recap-DataComp: the recaption with probability P per image (deterministic by id), else the original",
    )
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow export-wds` (default local[*]); spark-submit sets its own"
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    """Run the export for parsed arguments; 0 ok, 2 bad input or options."""
    return run_command(lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    if args.shard_size < 1:
        raise ExportError(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.caption_mix is not None and not 0.0 <= args.caption_mix <= 1.0:
        raise ExportError(f"--caption-mix must be within [0, 1], got {args.caption_mix}")
    local_folder(args.output)
    if "://" not in args.input and not os.path.exists(args.input):
        raise ExportError(f"input not found: {args.input}")
    spark = get_spark("winnow-export", master=args.master, arrow_batch_size=BATCH_ROWS)
    spark.sparkContext.setLogLevel("WARN")
    written = export_webdataset(spark.read.parquet(args.input), args.output, args.shard_size, args.caption_mix)
    print(f"exported: {written:,} samples under {args.output}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/export.py`; returns the exit code."""
    parser = add_export_arguments(argparse.ArgumentParser(prog="jobs/export.py", description=DESCRIPTION))
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
