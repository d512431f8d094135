"""Blocklist: the pHashes of an evaluation set, for the dedup stage to keep it out of training data.

The dedup stage drops pairs whose ``image_phash`` is within Hamming distance
k of a blocklist hash. Users build one blocklist per evaluation set
(ImageNet, Flickr30K, COCO, CC3M, CC12M) from their own copy. Reads
``--images``, one of:

- ``files``: a folder, read recursively, of image files (``.jpg .jpeg .png
  .webp .gif .bmp .tif .tiff``, any case), through Spark's ``binaryFile``
  source; ``source`` = the file's path as Spark names it (``file:/...``,
  ``hdfs://...``). Spark does not list files or folders whose names start
  with ``.`` or ``_`` (it treats them as hidden or as job metadata), nor
  any row from a file of 0 bytes: for a local folder those are counted and
  listed in the manifest under ``skipped`` (``hidden-name``, ``empty-file``);
- ``image-parquet``: parquet with image bytes (img2dataset's ``--output_format
  parquet``: a ``jpg`` / ``png`` / ``webp`` column; or ``image``, also as
  Hugging Face's ``struct<bytes, path>``); ``--image-col`` names another;
  ``source`` = the ``key`` column, else ``url``, else ``<file>#<row>``;
- ``phash-parquet``: parquet with ready pHashes in ``--phash-col`` (default
  ``image_phash``, e.g. COYO's own parquet); a value that is not exactly 16
  hex digits is rejected as ``phash-invalid``; upper-case digits are lowered;
- ``auto`` (default): ``phash-parquet`` when the parquet has the pHash
  column, ``image-parquet`` when it has an image column, ``files`` when the
  path holds no parquet file at all.

The pHash is the image stage's: ``udfs.image.phash_verdict``, which is
``inspect_image`` with every COYO threshold off (any size, any aspect ratio)
but the pixel limit kept, so a decompression bomb is refused from its header
(``image-too-many-pixels``)
and every hash equals ``str(imagehash.phash(Image.open(...)))``, as the
pairs' ``image_phash`` does. Images are hashed on the executors in a
``mapInArrow``, a few rows per Arrow batch; no image bytes reach the driver.

Writes (``OUTPUT`` may hold many blocklists, one per name)::

    OUTPUT/name=<NAME>/part-*.parquet           image_phash (16 lower-case hex digits), source
    OUTPUT/name=<NAME>/_winnow_blocklist.json   counts per reason and examples, written last

one row per distinct ``image_phash``, with the smallest ``source`` among
its copies. ``spark.read.parquet(OUTPUT)`` gives every blocklist with a
``name`` column. A re-run with the same name replaces that name only
(dynamic partition overwrite); a name with no hash left is replaced by an
empty blocklist. Nothing is dropped silently: rows (or files) read =
hashed + rejected, checked before anything is written, and the manifest has
the count of every reason with up to 20 example sources each.

    winnow blocklist --images /data/coco/val2017 --name coco --output blocklists/
    spark-submit jobs/blocklist.py --images hdfs:///eval/cc3m --name cc3m --output hdfs:///blocklists
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from jobs import __version__
from jobs.errors import EXIT_CODES, ConservationError, WinnowError, run_command
from jobs.session import get_spark, session_conf
from jobs.storage import FileStore
from schemas import reasons
from schemas.tables import col_ref
from udfs.image import BLOCKLIST_RULES, phash_verdict

log = logging.getLogger("winnow")

KINDS = ("auto", "files", "image-parquet", "phash-parquet")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# Looked for in this order when --image-col is not given: a generic name, then img2dataset's encode formats.
IMAGE_COLUMNS = ("image", "jpg", "png", "webp")
SOURCE_COLUMNS = ("key", "url")
DEFAULT_PHASH_COL = "image_phash"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
MANIFEST = "_winnow_blocklist.json"
MAX_EXAMPLES = 20
# Image files of a local folder Spark does not read (unread_images): not in "read", listed apart.
SKIPPED_HIDDEN = "hidden-name"
SKIPPED_EMPTY = "empty-file"
# Rows per Arrow batch into the hashing function: each row carries a whole image.
BATCH_ROWS = 16

# Every input row (or file) once; image_phash is null when reason is set.
VERDICT = StructType(
    [
        StructField("source", StringType(), True),
        StructField("image_phash", StringType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)
VERDICT_ARROW = pa.schema([(f.name, pa.string()) for f in VERDICT.fields])


class BlocklistError(WinnowError):
    """The blocklist cannot be built as asked; the message names the option to change."""


@dataclass(frozen=True)
class BlocklistInput:
    """The input as read: its resolved kind, the raw frame, and the column holding images or hashes."""

    path: str
    kind: str
    frame: DataFrame
    column: str | None  # image-parquet: the image column; phash-parquet: the pHash column; files: None
    source: str  # how ``source`` is made, for the manifest

    @property
    def unit(self) -> str:
        return "files" if self.kind == "files" else "rows"


# --- hashing: pure Python, run on the executors --------------------------------------------------------------------


def phash_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: (``source``, ``data``) rows in, ``VERDICT`` rows out, one per row, same order."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        data = batch.column("data")
        verdicts = [phash_verdict(data[i].as_py()) for i in range(batch.num_rows)]
        columns = [batch.column("source").cast(pa.string())]
        columns += [pa.array([v[k] for v in verdicts], type=pa.string()) for k in range(3)]
        yield pa.RecordBatch.from_arrays(columns, schema=VERDICT_ARROW)


# --- reading -------------------------------------------------------------------------------------------------------


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise BlocklistError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only (it names a folder)")


def image_glob() -> str:
    """``*.{[jJ][pP][gG],...}``: Hadoop's glob has no case-insensitive flag, so every letter is a class."""
    both = ("".join(f"[{c.lower()}{c.upper()}]" for c in ext) for ext in IMAGE_EXTENSIONS)
    return "*.{" + ",".join(both) + "}"


def _local(path: str) -> str | None:
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return parsed.path
    if not parsed.scheme or len(parsed.scheme) == 1:  # "C:" style drive letters are paths
        return path
    return None


def _spark_skips(name: str) -> bool:
    # Spark's InMemoryFileIndex.shouldFilterOutPathName, for files and (recursive lookup) folders.
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def unread_images(path: str) -> dict[str, list[str]] | None:
    """Image files under a local ``path`` that Spark lists but never reads, by why; None when not local.

    Spark leaves out files and folders named ``.*`` / ``_*`` (hidden, or job
    metadata) and reads no row from a file of 0 bytes. On HDFS / S3 this
    check is not made (it would list the whole tree a second time).
    """
    local = _local(path)
    if local is None:
        return None
    root = os.path.abspath(local)
    found: dict[str, list[str]] = {SKIPPED_HIDDEN: [], SKIPPED_EMPTY: []}
    if os.path.isfile(root):
        if os.path.getsize(root) == 0:
            found[SKIPPED_EMPTY].append(root)
        return found
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        hidden_folder = rel != "." and any(_spark_skips(part) for part in rel.split(os.sep))
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1][1:].lower() not in IMAGE_EXTENSIONS:
                continue
            file = os.path.join(folder, name)
            if hidden_folder or _spark_skips(name):
                found[SKIPPED_HIDDEN].append(file)
            elif os.path.getsize(file) == 0:
                found[SKIPPED_EMPTY].append(file)
    return found


def check_output(images: str, output: str) -> None:
    """The blocklists must not land inside the input: a re-run would read them as input (local paths)."""
    inside, out = _local(images), _local(output)
    if inside is None or out is None:
        return
    inside, out = os.path.realpath(inside), os.path.realpath(out)
    if out == inside or out.startswith(inside.rstrip(os.sep) + os.sep):
        raise BlocklistError(f"--output {output}: inside --images {images}; write the blocklists elsewhere")


def _read_parquet(spark: SparkSession, path: str) -> DataFrame | None:
    """The parquet files under ``path`` (any depth), or None when there are none."""
    try:
        # pathGlobFilter: img2dataset writes <shard>_stats.json beside its parquet files.
        return spark.read.options(pathGlobFilter="*.parquet", recursiveFileLookup="true").parquet(path)
    except AnalysisException as exc:
        if exc.getCondition() == "UNABLE_TO_INFER_SCHEMA":
            return None
        raise BlocklistError(f"--images {path}: {str(exc).splitlines()[0]}") from None


def _find(frame: DataFrame, name: str) -> str | None:
    """The column called ``name`` (Spark resolves names case-insensitively by default), or None."""
    return next((c for c in frame.columns if c.lower() == name.lower()), None)


def _image_bytes(frame: DataFrame, name: str) -> Column | None:
    """The image bytes of column ``name``: binary, or a ``struct<bytes: binary, ...>`` (Hugging Face)."""
    dtype = frame.schema[name].dataType
    if isinstance(dtype, BinaryType):
        return col_ref(name)
    if isinstance(dtype, StructType) and "bytes" in dtype.fieldNames():
        if isinstance(dtype["bytes"].dataType, BinaryType):
            return col_ref(name).getField("bytes")
    return None


def _image_column(frame: DataFrame, path: str, image_col: str | None) -> str:
    if image_col:
        found = _find(frame, image_col)
        if found is None:
            raise BlocklistError(f"--image-col {image_col}: no such column in {path} (columns: {_names(frame)})")
        candidates = [found]
    else:
        candidates = [c for want in IMAGE_COLUMNS if (c := _find(frame, want)) is not None]
        if not candidates:
            raise BlocklistError(
                f"--images {path}: the parquet has no image column ({', '.join(IMAGE_COLUMNS)}) and no "
                f"pHash column (--phash-col {DEFAULT_PHASH_COL}); pass --image-col or --phash-col, or --kind files "
                f"for the image files beside it (columns: {_names(frame)})"
            )
    for name in candidates:
        if _image_bytes(frame, name) is not None:
            return name
    name = candidates[0]
    flag = "--image-col" if image_col else "--images"
    raise BlocklistError(
        f"{flag} {image_col or path}: column {name!r} is {frame.schema[name].dataType.simpleString()}, "
        "not image bytes (binary, or a struct with a binary `bytes` field)"
    )


def _phash_column(frame: DataFrame, path: str, phash_col: str) -> str:
    found = _find(frame, phash_col)
    if found is None:
        raise BlocklistError(f"--phash-col {phash_col}: no such column in {path} (columns: {_names(frame)})")
    if not isinstance(frame.schema[found].dataType, StringType):
        kind = frame.schema[found].dataType.simpleString()
        raise BlocklistError(f"--phash-col {phash_col}: the column is {kind}, not a string of 16 hex digits")
    return found


def _names(frame: DataFrame) -> str:
    shown = ", ".join(frame.columns[:20])
    return shown + (", ..." if len(frame.columns) > 20 else "")


def open_input(
    spark: SparkSession,
    path: str,
    kind: str = "auto",
    image_col: str | None = None,
    phash_col: str | None = None,
) -> BlocklistInput:
    """Read ``path`` as ``kind`` (``auto`` resolved here); BlocklistError names the option to change.

    ``phash_col`` None means the default (``image_phash``) and lets ``auto``
    fall through to image columns; a given one must exist.
    """
    if kind not in KINDS:
        raise BlocklistError(f"--kind {kind}: must be one of {', '.join(KINDS)}")
    local = _local(path)
    if local is not None and not os.path.exists(local):
        raise BlocklistError(f"--images {path}: no such file or folder")
    parquet = _read_parquet(spark, path) if kind != "files" else None
    if kind == "auto":
        if parquet is None:
            kind = "files"
        elif phash_col is None and image_col:
            kind = "image-parquet"
        elif phash_col is not None or _find(parquet, DEFAULT_PHASH_COL) is not None:
            kind = "phash-parquet"
        else:
            kind = "image-parquet"
    if kind == "files":
        reader = spark.read.format("binaryFile").options(pathGlobFilter=image_glob(), recursiveFileLookup="true")
        try:
            files = reader.load(path)
        except AnalysisException as exc:
            raise BlocklistError(f"--images {path}: {str(exc).splitlines()[0]}") from None
        return BlocklistInput(path, kind, files, None, "path")
    if parquet is None:
        raise BlocklistError(f"--images {path}: no .parquet files for --kind {kind} (a folder of images: --kind files)")
    present = [c for c in SOURCE_COLUMNS if c in parquet.columns]
    source = " / ".join(present + ["<file>#<row>"])
    if kind == "phash-parquet":
        return BlocklistInput(path, kind, parquet, _phash_column(parquet, path, phash_col or DEFAULT_PHASH_COL), source)
    return BlocklistInput(path, kind, parquet, _image_column(parquet, path, image_col), source)


# --- transforms ----------------------------------------------------------------------------------------------------


def _row_source(frame: DataFrame) -> Column:
    """``key``, else ``url``, else ``<parquet file>#<row index in the file>``: never null."""
    where = F.concat(F.col("_metadata.file_path"), F.lit("#"), F.col("_metadata.row_index").cast("string"))
    present = [col_ref(c).cast("string") for c in SOURCE_COLUMNS if c in frame.columns]
    return F.coalesce(*present, where)


def _valid_phash(value: Column) -> Column:
    # \A ... \z: Java's $ would also match before a trailing newline.
    return F.coalesce(value.rlike(r"\A[0-9a-fA-F]{16}\z"), F.lit(False))


def with_phash_verdicts(data: BlocklistInput) -> DataFrame:
    """``VERDICT`` rows, one per input row or file: the pHash, or the reason there is none."""
    frame = data.frame
    if data.kind == "phash-parquet":
        value = col_ref(data.column)  # type: ignore[arg-type]
        valid = _valid_phash(value)
        shown = F.when(value.isNull(), F.lit("null")).otherwise(
            F.concat(F.lit("'"), F.substring(value, 1, 64), F.lit("'"))
        )
        return frame.select(
            _row_source(frame).alias("source"),
            F.when(valid, F.lower(value)).alias("image_phash"),
            F.when(~valid, F.lit(reasons.PHASH_INVALID)).alias("reason"),
            F.when(~valid, F.concat(F.lit(f"{data.column} = "), shown, F.lit(": not 16 hex digits"))).alias("detail"),
        )
    if data.kind == "files":
        pairs = frame.select(F.col("path").alias("source"), F.col("content").alias("data"))
    else:
        image = _image_bytes(frame, data.column)  # type: ignore[arg-type]
        pairs = frame.select(_row_source(frame).alias("source"), image.alias("data"))  # type: ignore[union-attr]
    return pairs.mapInArrow(phash_batches, VERDICT)


def blocklist_hashes(
    spark: SparkSession,
    path: str,
    kind: str = "auto",
    name: str = "blocklist",
    image_col: str | None = None,
    phash_col: str | None = None,
) -> DataFrame:
    """Every image (file or row) at ``path`` once: ``name``, ``source``, ``image_phash``, ``reason``, ``detail``.

    ``reason`` is null for a hashed image; ``image_phash`` is null for a
    rejected one. ``distinct_hashes`` turns this into the blocklist rows.
    """
    check_name(name)
    return named_verdicts(open_input(spark, path, kind, image_col, phash_col), name)


def named_verdicts(data: BlocklistInput, name: str) -> DataFrame:
    """``with_phash_verdicts`` with the blocklist's ``name`` first."""
    return with_phash_verdicts(data).select(F.lit(name).alias("name"), *VERDICT.fieldNames())


def reject_examples(verdicts: DataFrame, limit: int = MAX_EXAMPLES) -> DataFrame:
    """The ``limit`` smallest sources of each reason (Spark keeps the top rows per task before the shuffle)."""
    first = Window.partitionBy("reason").orderBy("source", "detail")
    rejected = verdicts.filter(F.col("reason").isNotNull()).withColumn("_rank", F.row_number().over(first))
    return rejected.filter(F.col("_rank") <= limit).select("reason", "source", "detail")


def distinct_hashes(verdicts: DataFrame) -> DataFrame:
    """One row per (``name``, ``image_phash``) of the hashed rows, with the smallest ``source`` of its copies."""
    hashed = verdicts.filter(F.col("reason").isNull() & F.col("image_phash").isNotNull())
    return (
        hashed.groupBy("name", "image_phash")
        .agg(F.min("source").alias("source"))
        .select("image_phash", "source", "name")
    )


# --- the job: count, write, manifest -------------------------------------------------------------------------------


def name_folder(output: str, name: str) -> str:
    # --name allows no character Spark escapes in a partition folder name.
    return f"{output.rstrip('/')}/name={name}"


def write_hashes(verdicts: DataFrame, output: str, name: str, empty: bool) -> None:
    """Replace ``OUTPUT/name=<name>/`` by the distinct hashes of ``verdicts`` (other names stay)."""
    # Sorted by the partition column first, so the writer keeps this order within each file.
    hashes = distinct_hashes(verdicts).sortWithinPartitions("name", "image_phash")
    if empty:
        # No partition to write would leave the previous run's hashes: replace them by an empty file.
        hashes.drop("name").write.mode("overwrite").parquet(name_folder(output, name))
    else:
        # Dynamic overwrite: only name=<name> is replaced, other blocklists in OUTPUT stay.
        hashes.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy("name").parquet(output)


def build_blocklist(
    spark: SparkSession,
    path: str,
    output: str,
    name: str,
    kind: str = "auto",
    image_col: str | None = None,
    phash_col: str | None = None,
) -> dict:
    """Hash ``path``, write ``OUTPUT/name=<name>/`` and its manifest (last); return the manifest.

    The verdicts are persisted once, so each image is decoded once for the
    counts, the examples and the written hashes.
    """
    check_name(name)
    check_output(path, output)
    data = open_input(spark, path, kind, image_col, phash_col)
    unread = unread_images(path) if data.kind == "files" else None
    skipped = {why: len(files) for why, files in unread.items()} if unread is not None else None
    sc = spark.sparkContext
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS)}):
        sc.setJobDescription(f"blocklist {name}: count the input")
        read = data.frame.count()  # listing / parquet footers only: no image bytes are read
        if read == 0:
            what = f"no image files ({', '.join(IMAGE_EXTENSIONS)}, any case)" if data.kind == "files" else "no rows"
            if skipped and sum(skipped.values()):
                what += f" that Spark reads (skipped: {', '.join(f'{n} {why}' for why, n in skipped.items() if n)})"
            raise BlocklistError(f"--images {path}: {what}")
        verdicts = named_verdicts(data, name).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            sc.setJobDescription(f"blocklist {name}: pHash the images")
            groups = (
                verdicts.groupBy("reason")
                .agg(F.count(F.lit(1)).alias("n"), F.countDistinct("image_phash").alias("distinct"))
                .collect()
            )
            hashed = sum(r["n"] for r in groups if r["reason"] is None)
            distinct = sum(r["distinct"] for r in groups if r["reason"] is None)
            rejected = {code: 0 for code in reasons.BLOCKLIST_REASONS}
            rejected.update({r["reason"]: r["n"] for r in groups if r["reason"] is not None})
            if hashed + sum(rejected.values()) != read:
                raise ConservationError(
                    f"blocklist {name}: {read} {data.unit} read but {hashed} hashed + "
                    f"{sum(rejected.values())} rejected = {hashed + sum(rejected.values())}"
                )
            examples: dict[str, list[dict[str, str]]] = {}
            for r in reject_examples(verdicts).collect() if sum(rejected.values()) else []:
                examples.setdefault(r["reason"], []).append({"source": r["source"], "detail": r["detail"]})

            sc.setJobDescription(f"blocklist {name}: write {name_folder(output, name)}")
            write_hashes(verdicts, output, name, empty=not distinct)
        finally:
            verdicts.unpersist()

    manifest = {
        "name": name,
        "kind": data.kind,
        "input": path,
        "column": data.column,
        "source": data.source,
        "output": name_folder(output, name),
        "read": read,
        "read_unit": data.unit,
        "hashed": hashed,
        "distinct_hashes": distinct,
        "duplicates": hashed - distinct,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()),
        "examples": dict(sorted(examples.items())),
        "phash": "from the input column" if data.kind == "phash-parquet" else "imagehash.phash (udfs.image)",
        "max_pixels": BLOCKLIST_RULES.max_pixels,
        "winnow_version": __version__,
    }
    if data.kind == "files":
        # None: a remote folder, where files Spark does not read are not looked for.
        manifest["skipped"] = skipped
        manifest["skipped_examples"] = (
            {why: files[:MAX_EXAMPLES] for why, files in unread.items() if files} if unread else {}
        )
        for why, files in (unread or {}).items():
            if files:
                log.warning(
                    "%d image files under %s not read (%s: Spark does not read them), not in the blocklist; first: %s",
                    len(files),
                    path,
                    why,
                    files[0],
                )
    if not distinct:
        log.warning("blocklist %s has no hash: every %s was rejected", name, data.unit[:-1])
    FileStore(spark).write_text(f"{name_folder(output, name)}/{MANIFEST}", json.dumps(manifest, indent=2) + "\n")
    return manifest


def format_summary(manifest: dict) -> str:
    """A few lines for the terminal: read, hashed, distinct, rejected per reason, where it went."""
    unit = manifest["read_unit"]
    lines = [
        f"blocklist {manifest['name']} ({manifest['kind']}): {manifest['read']:,} {unit} read, "
        f"{manifest['hashed']:,} hashed, {manifest['distinct_hashes']:,} distinct hashes",
        f"rejected: {manifest['rejected_total']:,}",
    ]
    lines += [f"  {code:<28}{n:>10,}" for code, n in manifest["rejected"].items()]
    for why, n in (manifest.get("skipped") or {}).items():
        if n:
            lines.append(f"skipped:  {n:,} image files ({why}: Spark does not read them)")
    lines.append(f"output:   {manifest['output']}/")
    lines.append(f"manifest: {manifest['output']}/{MANIFEST}")
    return "\n".join(lines)


DESCRIPTION = (
    "Build an evaluation-set pHash blocklist (OUTPUT/name=<NAME>/) from a folder of images, "
    "parquet with image bytes, or parquet with ready pHashes."
)


def add_blocklist_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow blocklist` and of `spark-submit jobs/blocklist.py`."""
    parser.epilog = EXIT_CODES
    parser.add_argument(
        "--images", required=True, help="a folder of image files, or parquet with image bytes or pHashes"
    )
    parser.add_argument("--name", required=True, help="the blocklist's name, e.g. coco ([A-Za-z0-9_.-]+)")
    parser.add_argument("--output", required=True, help="blocklists folder; this one goes to OUTPUT/name=<NAME>/")
    parser.add_argument(
        "--kind",
        default="auto",
        help="auto (default), files, image-parquet or phash-parquet: what --images holds",
    )
    parser.add_argument(
        "--image-col", help=f"image-parquet: the image bytes column (default: first of {', '.join(IMAGE_COLUMNS)})"
    )
    parser.add_argument("--phash-col", help=f"phash-parquet: the pHash column (default {DEFAULT_PHASH_COL})")
    parser.add_argument(
        "--master", help="Spark master for a plain `winnow blocklist` (default local[*]); spark-submit sets its own"
    )
    return parser


def execute(args: argparse.Namespace) -> int:
    """Build the blocklist for parsed arguments; 0 ok, 2 bad input or options, 3 conservation failure."""
    return run_command(lambda: _blocklist(args))


def _blocklist(args: argparse.Namespace) -> int:
    check_name(args.name)
    check_output(args.images, args.output)
    if args.kind not in KINDS:
        raise BlocklistError(f"--kind {args.kind}: must be one of {', '.join(KINDS)}")
    local = _local(args.images)
    if local is not None and not os.path.exists(local):
        raise BlocklistError(f"--images {args.images}: no such file or folder")
    spark = get_spark("winnow-blocklist", master=args.master)
    spark.sparkContext.setLogLevel("WARN")
    manifest = build_blocklist(spark, args.images, args.output, args.name, args.kind, args.image_col, args.phash_col)
    print(format_summary(manifest))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/blocklist.py`; returns the exit code."""
    parser = add_blocklist_arguments(argparse.ArgumentParser(prog="jobs/blocklist.py", description=DESCRIPTION))
    return execute(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
