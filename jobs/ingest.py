"""Ingest: read a source into the canonical pair table (id, url, caption, dump + source columns).

Formats (``ingest.input_format`` / ``--input-format``):

- ``parquet``, ``csv``, ``tsv``, ``jsonl``: generic URL lists, columns named
  img2dataset-style with ``--url-col`` (default ``url``), ``--caption-col``
  (default ``caption``) and ``--id-col`` (default none);
- ``coyo``: COYO-700M parquet (``url``, ``text``, ``id``);
- ``grit``: GRIT parquet (``url``, ``caption``, ``id``);
- ``recap``: Recap-DataComp-1B parquet (``url``, ``re_caption`` or
  ``org_caption`` per ``ingest.recap_caption``; the other is carried);
- ``auto`` (default): by file extension.

``id`` is the source id when the id column is an integer; otherwise
``xxhash64`` (Spark SQL, seed 42) of the id column's string value, or of the
URL when there is no id column: stable across runs and Spark versions.
``dump`` comes from a ``dump=<name>/`` input partition, else ``ingest.dump``.
Every source column is carried through; one whose name clashes with a column
winnow owns (id, url, caption, dump, stage, reason, detail) is carried as
``source_<name>``. Rows with no URL, no caption or no id are rejects.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

from jobs.config import IngestConfig
from jobs.stage import accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import PAIR, col_ref

STAGE = reasons.INGEST
GENERIC_FORMATS = ("parquet", "csv", "tsv", "jsonl")
PARQUET_FORMATS = ("parquet", "coyo", "grit", "recap")
_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
RESERVED = ("id", "url", "caption", "dump", "stage", "reason", "detail")
CORRUPT = "_corrupt_record"


class IngestError(ValueError):
    """The input cannot be read as configured; the message says what to pass."""


def resolve_format(path: str, input_format: str) -> str:
    """``input_format``, or for ``auto`` the format of the files at ``path``."""
    if input_format != "auto":
        return input_format
    parsed = urlparse(path)
    if parsed.scheme in ("", "file") and os.path.isdir(parsed.path or path):
        for _root, dirs, files in os.walk(parsed.path or path):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(files):
                ext = os.path.splitext(name)[1].lower()
                if not name.startswith((".", "_")) and ext in _EXTENSIONS:
                    return _EXTENSIONS[ext]
        raise IngestError(f"no .parquet/.csv/.tsv/.jsonl files under {path}; pass --input-format")
    ext = os.path.splitext(parsed.path or path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise IngestError(f"cannot tell the format of {path} from its name; pass --input-format")


def read_source(spark: SparkSession, path: str, input_format: str) -> DataFrame:
    """Read ``path`` as ``input_format`` (already resolved); dump=<name>/ folders become a column."""
    reader = spark.read
    if input_format in PARQUET_FORMATS:
        return reader.parquet(path)
    if input_format in ("csv", "tsv"):
        sep = "," if input_format == "csv" else "\t"
        # multiLine: web captions contain quoted newlines; PERMISSIVE keeps bad lines as nulls.
        return reader.options(header=True, sep=sep, multiLine=True, escape='"', mode="PERMISSIVE").csv(path)
    if input_format == "jsonl":
        return reader.options(mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT).json(path)
    raise IngestError(f"unknown input format {input_format!r}")


def source_columns(input_format: str, cfg: IngestConfig) -> tuple[str, str, str]:
    """(url column, caption column, id column or "") for a format, flags first."""
    defaults = {
        "coyo": ("url", "text", "id"),
        "grit": ("url", "caption", "id"),
        "recap": ("url", cfg.recap_caption, ""),
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

    url = col_ref(url_col).cast("string")
    caption = col_ref(caption_col).cast("string")
    if id_col is None:
        source_id = None
        pair_id = F.when(url.isNotNull(), F.xxhash64(url))  # xxhash64(NULL) would be the seed, 42
    else:
        source_id = col_ref(id_col)
        integral = isinstance(raw.schema[id_col].dataType, IntegralType)
        hashed = F.when(source_id.isNotNull(), F.xxhash64(source_id.cast("string")))
        pair_id = source_id.cast("long") if integral else hashed
    dump_col = next((c for c in raw.columns if c.lower() == "dump"), None)
    dump = F.coalesce(col_ref(dump_col).cast("string"), F.lit(cfg.dump)) if dump_col else F.lit(cfg.dump)

    consumed = {url_col: "url", caption_col: "caption", dump_col: "dump"}
    if id_col is not None and isinstance(raw.schema[id_col].dataType, IntegralType):
        consumed[id_col] = "id"
    carried = []
    for c in raw.columns:
        if consumed.get(c, "").lower() == c.lower():
            continue  # it *is* the canonical column (url, caption, an integer id, dump)
        alias = f"source_{c}" if c.lower() in RESERVED else c
        carried.append(col_ref(c).alias(alias))

    checks = [
        (F.col(CORRUPT).isNotNull() if CORRUPT in raw.columns else F.lit(False), reasons.MALFORMED_RECORD),
        (url.isNull() | (F.btrim(url) == ""), reasons.MISSING_URL),
        (caption.isNull() | (caption == ""), reasons.MISSING_CAPTION),
    ]
    if source_id is not None:
        checks.append((source_id.isNull(), reasons.MISSING_ID))
    reason = F.lit(None).cast("string")
    for failed, code in reversed(checks):
        reason = F.when(failed, F.lit(code)).otherwise(reason)

    return raw.select(
        pair_id.alias("id"),
        url.alias("url"),
        caption.alias("caption"),
        dump.alias("dump"),
        *carried,
        reason.alias("reason"),
        F.lit(None).cast("string").alias("detail"),
    )


def split_pairs(annotated: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(accepted canonical pairs, ingest rejects)."""
    input_columns = [c for c in annotated.columns if c not in ("reason", "detail")]
    return accepted_rows(annotated, PAIR, drop=[]), rejected_rows(annotated, STAGE, input_columns)
