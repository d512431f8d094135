"""Ingest: read a source into the canonical pair table (id, url, caption, dump + source columns).

The first stage of every run (``IngestStage``); ``IngestConfig`` is its
``[ingest]`` config section. Formats (``ingest.input_format`` / ``--input-format``):

- ``parquet``, ``csv``, ``tsv``, ``jsonl``: generic URL lists, columns named
  img2dataset-style with ``--url-col`` (default ``url``), ``--caption-col``
  (default ``caption``) and ``--id-col`` (default: a column named ``id``
  when it holds integers, in a CSV / TSV digits);
- ``coyo``: COYO-700M parquet (``url``, ``text``, ``id``);
- ``grit``: GRIT parquet (``url``, ``caption``, ``id``);
- ``recap``: Recap-DataComp-1B parquet (``url``, ``re_caption``,
  ``org_caption``, ``sha256``, ``key`` and score columns): the caption named
  by ``ingest.recap_caption`` is filtered as ``caption``, both original
  columns are carried. With ``ingest.recap_both`` each row becomes two, one
  per caption (``caption_kind`` says which; the ``org_caption`` row of the
  default gets the id of ``<url>#org_caption``, so ids stay unique), and
  each is filtered on its own;
- ``taisu``: TaiSu's caption JSON + image tars (``jobs.stages.taisu``);
- ``img2dataset-parquet``: img2dataset's ``--output_format parquet`` (only
  ``*.parquet`` files are read, so its ``*_stats.json`` are skipped): ``url``,
  ``caption``, ``key``, ``status``, ``error_message``, ``width``, ``height``,
  ``original_width``, ``original_height``, ``exif``, ``sha256`` and the image
  bytes in a column named after the encode format (``jpg``, ``png`` or
  ``webp``; ``ingest.image_col`` names another). The bytes become
  ``image_input`` (null for rows img2dataset failed to download: the image
  stage rejects those as ``image-missing``), the other columns are carried;
- ``webdataset``: a folder of ``.tar`` shards (img2dataset's ``--output_format
  webdataset``, or any tar of ``<key>.jpg|png|webp``, ``<key>.txt``,
  ``<key>.json``). Read with Spark's ``binaryFile`` source (``*.tar`` only, so
  the ``.parquet`` / ``_stats.json`` files beside the shards are skipped; any
  Hadoop file system; ``dump=<name>/`` folders are discovered) and expanded in
  a ``mapInArrow`` (``udfs.wds``) into one row per key: ``url``, ``status``,
  ``error_message`` from the ``.json``, ``caption`` from the ``.txt``,
  ``image_input``, plus ``key``, ``json`` (the member's text) and
  ``shard_path``. A key without an image gets null ``image_input``, one
  without a caption a null caption (``missing-caption``); a tar that cannot
  be read whole is one ``malformed-record`` row (detail: why) with no samples.
  Each tar is one row of ``binaryFile``: at most 2 GB per file
  (``spark.sql.sources.binaryFile.maxLength``), held in executor memory while
  it is expanded. img2dataset leaves failed downloads out of its tars (they
  are only in the ``.parquet`` beside each tar), so they are not counted here;
- ``auto`` (default): by file extension; ``.tar`` is ``webdataset`` (also for
  a folder holding tars beside img2dataset's ``.parquet`` metadata files).
  img2dataset parquet cannot be told from a generic list by its name: pass
  ``--input-format img2dataset-parquet``, or the images are fetched again.

``id`` is the source id when the id column is an integer (in a CSV / TSV:
digits); otherwise ``xxhash64`` (Spark SQL, seed 42) of the id column's
string value, or of the URL when there is no id column (the default for the
img2dataset formats unless their rows have an integral ``id``; ``--id-col
key`` hashes img2dataset's key instead, unique only within one img2dataset
run): stable across runs and Spark versions. A generic or img2dataset parquet
input with an integral ``id`` column uses it without ``--id-col`` (a row whose
``id`` is null then takes the URL's hash), and so does a webdataset sample
whose ``.json`` has an integer ``id`` (``with_json_id``: winnow's export
writes the pair's id there). A row with neither id nor URL gets
the hash of where it was read (file name and row index for parquet, file name
for CSV / JSON lines, tar name and key for webdataset), its URL and caption,
so every reject can be traced and keeps its id from run to run.
``dump`` comes from a ``dump=<name>/`` input partition, else ``ingest.dump``.
Every source column is carried through; one whose name clashes with a column
winnow owns (id, url, caption, dump, stage, reason, detail, and the image
stage's width, height, image_bytes_size, image_format, image_phash, image,
image_input) is carried as ``source_<name>``: img2dataset's ``width`` and
``height`` become ``source_width`` and ``source_height``. Rows with no URL, no
caption or no id are rejects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegralType, LongType, StringType, StructField, StructType

from jobs.errors import WinnowError
from jobs.stage import Stage, accepted_rows, rejected_rows
from jobs.stages import taisu
from jobs.storage import FileStore
from schemas import reasons
from schemas.tables import IMAGE_BYTES, IMAGE_INPUT, IMAGE_MEASURES, PAIR, TEXT_VERDICT, WEBDATASET_SAMPLE, col_ref
from udfs import wds

STAGE = reasons.INGEST
INPUT_FORMATS = (
    "auto",
    "parquet",
    "csv",
    "tsv",
    "jsonl",
    "coyo",
    "grit",
    "recap",
    "img2dataset-parquet",
    "webdataset",
    "taisu",
)
TAISU_CAPTIONS = ("web", "generated", "web-then-generated", "both")
GENERIC_FORMATS = ("parquet", "csv", "tsv", "jsonl")
PARQUET_FORMATS = ("parquet", "coyo", "grit", "recap")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".tar": "webdataset",
}
# Columns winnow writes: a source column of the same name is carried as source_<name>.
RESERVED = (
    *PAIR.fieldNames(),
    "stage",
    "reason",
    "detail",
    *(f.name for f in TEXT_VERDICT.fields),
    *(f.name for f in IMAGE_MEASURES),
    IMAGE_BYTES.name,
    IMAGE_INPUT,
)
CORRUPT = "_corrupt_record"
# webdataset: why a tar (or one sample of it) could not be read; becomes the reject's detail.
READ_ERROR = "read_error"
# img2dataset names the image column after its encode format.
IMAGE_COLUMNS = ("jpg", "png", "webp")
_I2D_MARKERS = ("key", "status", "error_message")

log = logging.getLogger("winnow")


class IngestError(WinnowError):
    """The input cannot be read as configured; the message says what to pass."""


@dataclass(frozen=True)
class IngestConfig:
    """``[ingest]``: which source format, which of its columns are the URL, caption and id."""

    input_format: str = "auto"
    """auto (by file extension) | parquet | csv | tsv | jsonl | coyo | grit | recap | img2dataset-parquet
    | webdataset | taisu; the named formats set the column defaults."""
    url_col: str = ""
    """The URL column (img2dataset's --url_col); "" = the format's default (url)."""
    caption_col: str = ""
    """The caption column; "" = the format's default (caption; coyo: text; recap: ingest.recap_caption)."""
    id_col: str = ""
    """The source id column; "" = the format's default (coyo, grit: id; taisu: its image id; parquet, csv,
    tsv, jsonl, img2dataset-parquet: an integral `id` column when there is one; webdataset: an integer `id` in
    the sample's .json; else a 64-bit hash of the URL)."""
    dump: str = "default"
    """The dump name when the input has no dump=<name>/ folders."""
    recap_caption: str = "re_caption"
    """Recap-DataComp: which caption is filtered as `caption` (re_caption | org_caption); the other
    is carried through as it was."""
    recap_both: bool = False
    """Recap-DataComp: also write the other caption as a training caption of its own (two rows per
    image, `caption_kind` re_caption / org_caption, each filtered)."""
    taisu_captions: str = "both"
    """TaiSu: which caption(s) of an image become rows: web | generated | web-then-generated (web,
    else generated) | both (one row each; the release's 219M captions for 166M images)."""
    taisu_split_bytes: int = 64 * 1024 * 1024
    """TaiSu's caption file is one JSON object: read in byte ranges of this size, one task each."""
    taisu_max_entry_bytes: int = 1024 * 1024
    """TaiSu: a caption entry longer than this is reported as malformed, not read (bounds a task's memory)."""
    image_col: str = ""
    """img2dataset outputs: the parquet column (or the webdataset tar member extension) holding the
    image bytes; "" finds jpg, png or webp (img2dataset names it after its encode format)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        if self.input_format not in INPUT_FORMATS:
            yield "input_format", f"{self.input_format!r} is not one of {', '.join(INPUT_FORMATS)}"
        if self.recap_caption not in ("re_caption", "org_caption"):
            yield "recap_caption", "must be re_caption or org_caption"
        if self.taisu_captions not in TAISU_CAPTIONS:
            yield "taisu_captions", f"{self.taisu_captions!r} is not one of {', '.join(TAISU_CAPTIONS)}"
        if self.taisu_split_bytes < 1024:
            yield "taisu_split_bytes", "must be at least 1024"
        if self.taisu_max_entry_bytes < 1024:
            yield "taisu_max_entry_bytes", "must be at least 1024"
        if not self.dump.strip() or "/" in self.dump or "=" in self.dump:
            yield "dump", f"{self.dump!r} is not a usable partition value"


def resolve_format(path: str, input_format: str) -> str:
    """``input_format``, or for ``auto`` the format of the files at ``path``.

    In a folder, the first (sorted) sub-folder holding known files decides;
    ``.tar`` files win over the ``.parquet`` / ``.json`` that img2dataset
    writes beside its webdataset shards.
    """
    if input_format != "auto":
        return input_format
    parsed = urlparse(path)
    if parsed.scheme in ("", "file") and os.path.isdir(parsed.path or path):
        for _root, dirs, files in os.walk(parsed.path or path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            found = [
                _EXTENSIONS[ext]
                for name in sorted(files)
                if not name.startswith((".", "_")) and (ext := os.path.splitext(name)[1].lower()) in _EXTENSIONS
            ]
            if found:
                return "webdataset" if "webdataset" in found else found[0]
        raise IngestError(f"no .parquet/.csv/.tsv/.jsonl/.tar files under {path}; pass --input-format")
    ext = os.path.splitext(parsed.path or path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise IngestError(f"cannot tell the format of {path} from its name; pass --input-format")


def read_source(
    spark: SparkSession,
    path: str,
    input_format: str,
    cfg: IngestConfig | None = None,
    folders: list[str] | None = None,
) -> DataFrame:
    """Read ``path`` as ``input_format`` (already resolved); dump=<name>/ folders become a column.

    ``folders`` (``dump=<name>`` folder names under ``path``) reads only those
    dumps (``winnow run --incremental``), with ``path`` as the partition base so
    the ``dump`` column stays. ``cfg`` matters for ``webdataset`` and ``taisu``:
    ``ingest.image_col`` there names the image member's extension (default:
    jpg, jpeg, png, webp in that order).
    """
    paths, reader = _paths(spark, path, folders)
    if input_format in PARQUET_FORMATS:
        return reader.parquet(*paths)
    if input_format == "img2dataset-parquet":
        # img2dataset writes <shard>_stats.json beside its parquet files.
        return reader.option("pathGlobFilter", "*.parquet").parquet(*paths)
    cfg = cfg or IngestConfig()
    base = None if folders is None else path
    if input_format == "webdataset":
        return with_json_id(read_webdataset(spark, paths, cfg, base), cfg)
    if input_format == "taisu":
        tars = read_webdataset(spark, paths, cfg, base)
        return taisu.read_taisu(
            spark, paths, tars, cfg.taisu_captions, cfg.dump, cfg.taisu_split_bytes, cfg.taisu_max_entry_bytes
        )
    if input_format in ("csv", "tsv"):
        return _delimited(reader, input_format, paths)
    if input_format == "jsonl":
        return reader.options(mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT).json(paths)
    raise IngestError(f"unknown input format {input_format!r}")


def _paths(spark: SparkSession, path: str, folders: list[str] | None) -> tuple[list[str], Any]:
    """The paths to read and a reader that keeps ``dump`` as a partition column when only some are read."""
    paths = [path] if folders is None else [f"{path.rstrip('/')}/{f}" for f in folders]
    return paths, spark.read if folders is None else spark.read.option("basePath", path)


def _delimited(reader: Any, input_format: str, paths: list[str]) -> DataFrame:
    sep = "," if input_format == "csv" else "\t"
    # multiLine: web captions contain quoted newlines; PERMISSIVE keeps bad lines as nulls.
    return reader.options(header=True, sep=sep, multiLine=True, escape='"', mode="PERMISSIVE").csv(paths)


def source_rows(
    spark: SparkSession, path: str, input_format: str, cfg: IngestConfig, folders: list[str] | None = None
) -> int:
    """How many rows the ingest stage must put out for this source, counted from the source's files
    apart from the readers that map them (``read_source``, ``with_pair_columns``): a table's rows
    (twice with ``ingest.recap_both``: a row per caption), a WebDataset's samples from the tars'
    member headers (one row for an unreadable tar), TaiSu's caption rows per image id."""
    paths, reader = _paths(spark, path, folders)
    base = None if folders is None else path
    if input_format in PARQUET_FORMATS:
        rows = reader.parquet(*paths).count()  # from the parquet footers
        return 2 * rows if input_format == "recap" and cfg.recap_both else rows
    if input_format == "img2dataset-parquet":
        return reader.option("pathGlobFilter", "*.parquet").parquet(*paths).count()
    if input_format in ("csv", "tsv"):
        return _delimited(reader, input_format, paths).count()
    if input_format == "jsonl":  # one record per line that is not blank
        return reader.text(paths).where(F.col("value").rlike(r"\S")).count()
    if input_format == "webdataset":
        return tar_keys(spark, paths, base).count()
    if input_format == "taisu":
        policy, split, entry = cfg.taisu_captions, cfg.taisu_split_bytes, cfg.taisu_max_entry_bytes
        return taisu.expected_rows(spark, paths, tar_keys(spark, paths, base), policy, cfg.dump, split, entry)
    raise IngestError(f"unknown input format {input_format!r}")


def tar_keys(spark: SparkSession, path: str | list[str], base: str | None = None) -> DataFrame:
    """(path, key, partition columns) per sample of every ``*.tar`` under ``path``, from the member
    headers only (``udfs.wds.shard_keys``); a null key for an unreadable tar. The listing is read on
    the driver (binaryFile without its content), the headers by the executors."""
    reader = spark.read.format("binaryFile").option("pathGlobFilter", "*.tar")
    files = (reader if base is None else reader.option("basePath", base)).load(path)
    partitions = [f for f in files.schema.fields if f.name not in ("path", "modificationTime", "length", "content")]
    names = [f.name for f in partitions]
    listing = files.select("path", "length", *names)
    out = StructType([StructField("path", StringType(), True), StructField("key", StringType(), True), *partitions])
    return listing.repartition(max(1, spark.sparkContext.defaultParallelism)).mapInArrow(wds.keys_lister(names), out)


def read_webdataset(
    spark: SparkSession, path: str | list[str], cfg: IngestConfig, base: str | None = None
) -> DataFrame:
    """One row per sample of every ``*.tar`` under ``path`` (schemas.tables.WEBDATASET_SAMPLE + partitions).

    binaryFile reads each tar whole (one row, at most 2 GB); the expansion is
    a ``mapInArrow`` over the tar bytes, so the rows counted downstream are
    the samples (and one row per unreadable tar), not the files. ``base``: the
    partition base path when ``path`` lists some dump folders.
    """
    reader = spark.read.format("binaryFile").option("pathGlobFilter", "*.tar")
    files = (reader if base is None else reader.option("basePath", base)).load(path)
    partitions = [f for f in files.schema.fields if f.name not in ("path", "modificationTime", "length", "content")]
    names = [f.name for f in partitions]
    extensions = (cfg.image_col.lower(),) if cfg.image_col else wds.IMAGE_EXTENSIONS
    return files.select("path", "content", *names).mapInArrow(
        wds.shard_expander(names, extensions), StructType(WEBDATASET_SAMPLE.fields + partitions)
    )


def dump_folders(spark: SparkSession, path: str) -> list[str]:
    """The ``dump=<name>`` folders directly under ``path`` (names, sorted)."""
    return [f for f in FileStore(spark).children(path) if f.startswith("dump=")]


def image_column(raw: DataFrame, input_format: str, cfg: IngestConfig) -> str | None:
    """The column holding the source's image bytes (img2dataset formats), else None."""
    if input_format in ("webdataset", "taisu"):
        return IMAGE_INPUT
    if input_format != "img2dataset-parquet":
        return None
    if cfg.image_col:
        name = _find(raw, cfg.image_col, "--set ingest.image_col=<column>")
    else:
        found = [c for c in raw.columns if c.lower() in IMAGE_COLUMNS]
        if len(found) != 1:
            which = f"several ({', '.join(found)})" if found else "none"
            raise IngestError(
                f"img2dataset parquet: expected one image column named jpg, png or webp, found {which} "
                f"(columns: {', '.join(raw.columns)}); pass --set ingest.image_col=<column>"
            )
        name = found[0]
    if not isinstance(raw.schema[name].dataType, BinaryType):
        raise IngestError(f"image column {name!r} is {raw.schema[name].dataType.simpleString()}, not binary")
    return name


def _warn_if_img2dataset(raw: DataFrame, input_format: str) -> None:
    lower = {c.lower() for c in raw.columns}
    binary = {f.name.lower() for f in raw.schema.fields if isinstance(f.dataType, BinaryType)}
    if input_format == "parquet" and set(_I2D_MARKERS) <= lower and binary & set(IMAGE_COLUMNS):
        log.warning(
            "the input looks like img2dataset parquet output (key, status, %s): read as a generic list, "
            "its images are fetched again; pass --input-format img2dataset-parquet to use the stored bytes",
            "/".join(sorted(binary & set(IMAGE_COLUMNS))),
        )


def source_columns(input_format: str, cfg: IngestConfig) -> tuple[str, str, str]:
    """(url column, caption column, id column or "") for a format, flags first."""
    defaults = {
        "coyo": ("url", "text", "id"),
        "grit": ("url", "caption", "id"),
        "recap": ("url", cfg.recap_caption, ""),
        "taisu": ("url", "caption", "taisu_id"),
    }.get(input_format, ("url", "caption", ""))
    return cfg.url_col or defaults[0], cfg.caption_col or defaults[1], cfg.id_col or defaults[2]


def _find(raw: DataFrame, name: str, flag: str) -> str:
    """The input column called ``name`` (exact, else case-insensitive), or a clear error."""
    if name in raw.columns:
        return name
    matches = [c for c in raw.columns if c.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    raise IngestError(f"column {name!r} not found in the input (columns: {', '.join(raw.columns)}); pass {flag}")


def with_pair_columns(raw: DataFrame, input_format: str, cfg: IngestConfig) -> DataFrame:
    """Canonical columns, the carried source columns, and ``reason`` / ``detail``."""
    url_name, caption_name, id_name = source_columns(input_format, cfg)
    url_col = _find(raw, url_name, "--url-col")
    caption_col = _find(raw, caption_name, "--caption-col")
    id_col = _find(raw, id_name, "--id-col") if id_name else None
    if url_col == caption_col:
        raise IngestError(f"--url-col and --caption-col both name column {url_col!r}")
    image_col = image_column(raw, input_format, cfg)
    _warn_if_img2dataset(raw, input_format)

    url = col_ref(url_col).cast("string")
    caption = col_ref(caption_col).cast("string")
    if id_col is None and input_format in DEFAULT_ID_FORMATS:
        id_col, id_found = default_id_column(raw, input_format), True
    else:
        id_found = False
    # A second caption of the same image (Recap's recap_both) hashes "<id source>#<kind>".
    suffix = F.lit("")
    if input_format == "recap" and cfg.recap_both:
        other_name = "org_caption" if caption_name == "re_caption" else "re_caption"
        other = _find(raw, other_name, "--set ingest.recap_both=false")
        raw = raw.select("*", _both_captions(caption_col, other).alias(_RECAP))
        caption = F.col(f"{_RECAP}.text")
        suffix = F.when(F.col(f"{_RECAP}.kind") != caption_col, F.concat(F.lit("#"), F.col(f"{_RECAP}.kind")))
        suffix = F.coalesce(suffix, F.lit(""))
    url_hash = F.when(url.isNotNull(), F.xxhash64(F.concat(url, suffix)))  # xxhash64(NULL) would be the seed, 42
    if id_col is None:
        source_id = None
        pair_id = url_hash
    else:
        source_id = col_ref(id_col)
        integral = isinstance(raw.schema[id_col].dataType, IntegralType)
        hashed = F.when(source_id.isNotNull(), F.xxhash64(F.concat(source_id.cast("string"), suffix)))
        if input_format in ("csv", "tsv"):  # a text file's numbers are text: "123" is the id 123
            number = F.btrim(source_id.cast("string"))
            hashed = F.when(number.rlike(r"^-?[0-9]{1,18}$"), number.cast("long")).otherwise(hashed)
        pair_id = source_id.cast("long") if integral and input_format != "recap" else hashed
        if id_found:  # found by its name, not asked for: a row without one keeps the URL's hash
            pair_id, source_id = F.coalesce(pair_id, url_hash), None
    # Rows without an id of their own (no URL, no id) still get a stable one, to trace their reject.
    pair_id = F.coalesce(pair_id, row_id(raw, url, caption, suffix))
    dump_col = next((c for c in raw.columns if c.lower() == "dump"), None)
    dump = F.coalesce(col_ref(dump_col).cast("string"), F.lit(cfg.dump)) if dump_col else F.lit(cfg.dump)

    consumed = {url_col: "url", caption_col: "caption", dump_col: "dump"}
    if id_col is not None and isinstance(raw.schema[id_col].dataType, IntegralType):
        consumed[id_col] = "id"
    carried = []
    for c in raw.columns:
        if consumed.get(c, "").lower() == c.lower():
            continue  # it *is* the canonical column (url, caption, an integer id, dump)
        if c == image_col or (input_format == "webdataset" and c == READ_ERROR):
            continue  # the bytes travel once, as image_input; the read error becomes the detail
        if c in (taisu.PROBLEM, taisu.PROBLEM_DETAIL, _RECAP, ROW_ORIGIN):
            continue  # the reader's verdict and working columns
        alias = f"source_{c}" if c.lower() in RESERVED else c
        carried.append(col_ref(c).alias(alias))
    image = [col_ref(image_col).alias(IMAGE_INPUT)] if image_col else []
    if _RECAP in raw.columns:
        carried.append(F.col(f"{_RECAP}.kind").alias("caption_kind"))

    read_error = F.col(READ_ERROR) if input_format == "webdataset" else F.lit(None).cast("string")
    malformed = F.col(CORRUPT).isNotNull() if CORRUPT in raw.columns else read_error.isNotNull()
    checks = [
        (malformed, reasons.MALFORMED_RECORD),
        (url.isNull() | (F.btrim(url) == ""), reasons.MISSING_URL),
        (caption.isNull() | (caption == ""), reasons.MISSING_CAPTION),
    ]
    if source_id is not None:
        checks.append((source_id.isNull(), reasons.MISSING_ID))
    reason = F.lit(None).cast("string")
    for failed, code in reversed(checks):
        reason = F.when(failed, F.lit(code)).otherwise(reason)
    detail = F.when(reason == F.lit(reasons.MALFORMED_RECORD), read_error)
    if taisu.PROBLEM in raw.columns:
        # The TaiSu reader judged the join (no-image, missing caption, unreadable file) first.
        reason = F.coalesce(F.col(taisu.PROBLEM), reason)
        detail = F.when(F.col(taisu.PROBLEM).isNotNull(), F.col(taisu.PROBLEM_DETAIL)).otherwise(detail)

    return raw.select(
        pair_id.alias("id"),
        url.alias("url"),
        caption.alias("caption"),
        dump.alias("dump"),
        *carried,
        *image,
        reason.alias("reason"),
        detail.alias("detail"),
    )


_RECAP = "_recap_caption"

# Rows per vectorized Parquet batch when reading a source whose rows carry image bytes.
BYTES_READER_BATCH_ROWS = 16
# Formats whose pairs take an integral ``id`` column as their id when --id-col names none.
DEFAULT_ID_FORMATS = ("parquet", "csv", "tsv", "jsonl", "img2dataset-parquet", "webdataset")
# Where a row was read from (file and row index, or tar and member key), for the ids of rows without one.
ROW_ORIGIN = "_winnow_row_origin"
FILE_FORMATS = (*PARQUET_FORMATS, "img2dataset-parquet", "csv", "tsv", "jsonl")


def default_id_column(raw: DataFrame, input_format: str) -> str | None:
    """The source's ``id`` column (any case) when it holds integers (in a CSV / TSV: text), else None."""
    found = [c for c in raw.columns if c.lower() == "id"]
    if len(found) != 1:
        return None
    kind = raw.schema[found[0]].dataType
    return (
        found[0]
        if isinstance(kind, IntegralType) or (input_format in ("csv", "tsv") and kind == StringType())
        else None
    )


_JSON_ID = StructType([StructField("id", LongType(), True)])


def with_json_id(samples: DataFrame, cfg: IngestConfig) -> DataFrame:
    """WebDataset samples with an ``id`` column: the ``id`` of each sample's ``.json`` when it is a
    JSON integer that fits 64 bits (winnow's export writes the pair's id there), else null (the URL's
    hash then). Left as read when ``--id-col`` names the id, or a column is already called id."""
    if cfg.id_col or any(c.lower() == "id" for c in samples.columns):
        return samples
    # A 64-bit integer field: a JSON string, fraction, boolean or larger number parses to null.
    parsed = F.from_json(F.col("json"), _JSON_ID, {"mode": "PERMISSIVE"})
    return samples.withColumn("id", parsed["id"])


def with_row_origin(raw: DataFrame, input_format: str) -> DataFrame:
    """``raw`` with where each row was read from: file name and row index (parquet), file name (CSV,
    JSON lines: Spark gives no row position there), tar name and member key (webdataset)."""
    if input_format in FILE_FORMATS:
        origin = F.col("_metadata.file_name")
        if input_format in PARQUET_FORMATS or input_format == "img2dataset-parquet":
            origin = F.concat_ws(":", origin, F.col("_metadata.row_index").cast("string"))
    elif {"shard_path", "key"} <= set(raw.columns):
        origin = F.concat_ws(":", F.element_at(F.split(F.col("shard_path"), "/"), -1), F.col("key"))
    else:
        return raw
    return raw.withColumn(ROW_ORIGIN, origin)


def row_id(raw: DataFrame, url: Column, caption: Column, suffix: Column) -> Column:
    """A stable id for a row that has neither its own id nor a URL: a 64-bit hash of where it was read
    from (``with_row_origin``), its URL and caption as they are, and its caption kind (Recap)."""
    origin = F.col(ROW_ORIGIN) if ROW_ORIGIN in raw.columns else F.lit("")
    parts = [F.lit("row"), F.coalesce(origin, F.lit("")), F.coalesce(url, F.lit("")), F.coalesce(caption, F.lit(""))]
    return F.xxhash64(F.concat_ws("\u001f", *parts, suffix))


def _both_captions(first: str, second: str) -> F.Column:
    """One struct (kind = column name, text) per caption column, to explode into two rows."""
    return F.explode(
        F.array(*[F.struct(F.lit(c).alias("kind"), col_ref(c).cast("string").alias("text")) for c in (first, second)])
    )


def split_pairs(annotated: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(accepted canonical pairs, ingest rejects)."""
    input_columns = [c for c in annotated.columns if c not in ("reason", "detail")]
    return accepted_rows(annotated, PAIR, drop=[]), rejected_rows(annotated, STAGE, input_columns)


def input_listing(store: FileStore, input_path: str, folders: list[str] | None) -> list[tuple[str, int, int]]:
    """(path, size, time) of the input files the run reads: its fingerprint, beside the config."""
    if folders is None:
        return store.files(input_path)
    return [f for folder in folders for f in store.files(f"{input_path.rstrip('/')}/{folder}")]


class IngestStage(Stage):
    """The source read into the pair table; a row that cannot be a pair is a reject. Always runs first."""

    name = STAGE
    sections = {"ingest": IngestConfig}
    description = "ingest: read and map to the pair table"

    def preflight(self) -> None:
        self.input_format = resolve_format(self.ctx.input_path, self.cfg.ingest.input_format)

    def spark_conf(self) -> dict[str, str]:
        if self.input_format != "img2dataset-parquet":
            return {}
        # Its rows hold image bytes, full-size with --resize_mode no, in the row groups img2dataset wrote
        # (one per shard): the vectorized reader's batch (4,096 rows) would hold a whole one a second time.
        return {"spark.sql.parquet.columnarReaderBatchSize": str(BYTES_READER_BATCH_ROWS)}

    def fingerprint(self) -> Any:
        ctx = self.ctx
        files = input_listing(ctx.store, ctx.input_path, ctx.folders)
        return {"input": ctx.input_path, "format": self.input_format, "files": files}

    def rows_read(self) -> int:
        ctx = self.ctx
        return source_rows(ctx.spark, ctx.input_path, self.input_format, self.cfg.ingest, ctx.folders)

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        ctx = self.ctx
        raw = read_source(ctx.spark, ctx.input_path, self.input_format, self.cfg.ingest, ctx.folders)
        return with_pair_columns(with_row_origin(raw, self.input_format), self.input_format, self.cfg.ingest)

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        return split_pairs(annotated)

    def report(self) -> dict[str, Any]:
        return {"input_format": self.input_format}
