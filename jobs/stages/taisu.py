"""Ingest of TaiSu (Chinese, 166M images, web + generated captions): caption JSON + image tars.

Layout read under INPUT (``--input-format taisu``), optionally in ``dump=<name>/`` folders:

- ``*.json``: TaiSu's caption files, each ONE object
  ``{image_id: {"w": web caption or null, "g": generated caption or null}}``.
  A single file is split into byte ranges of ``ingest.taisu_split_bytes``
  (64 MiB) read by separate tasks (``udfs.taisu`` says how a range finds its
  first entry); executors open the file with pyarrow's file systems (local
  and mounted paths; ``hdfs://`` needs libhdfs, ``s3://`` pyarrow's S3);
- ``*.tar``: the image parts; a member ``<image_id>.jpg`` (png, webp ...), in
  any folder inside the tar, is that image, read as the webdataset format is
  (the ingest stage reads them with ``read_webdataset`` and hands them here; as
  there, the first dot of the file name ends the id).

Captions join the images on (dump, image_id). ``ingest.taisu_captions`` (``captions``) picks
the caption(s) of each image, and every row keeps ``caption_kind`` (``web`` or
``generated``) and ``image_id``:

- ``web`` / ``generated``: that caption only;
- ``web-then-generated``: the web caption, else the generated one;
- ``both`` (default; the release's 219M captions for 166M images): one row per
  caption the image has.

``id`` is ``xxhash64(image_id)`` for a web caption and
``xxhash64(image_id + "#generated")`` for a generated one, so the two rows of
one image never share an id and an id does not change with the policy.
Rejects (ingest): an entry whose id has no image -> ``no-image``; an image with
no caption entry, or without the caption the policy asks for ->
``missing-caption`` (detail says which); a caption-file region that does not
parse or a tar that cannot be read -> ``malformed-record`` (detail names the
file and bytes). The join shuffles the image bytes once, by image id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from jobs.errors import WinnowError
from schemas import reasons
from schemas.tables import IMAGE_INPUT
from udfs import taisu, wds

WEB, GENERATED = "web", "generated"
# Working columns with_pair_columns reads (jobs.stages.ingest) and drops.
PROBLEM, PROBLEM_DETAIL = "_problem", "_problem_detail"

_RANGE = StructType(
    [
        StructField("path", StringType(), False),
        StructField("size", LongType(), False),
        StructField("start", LongType(), False),
        StructField("end", LongType(), False),
        StructField("dump", StringType(), True),
    ]
)
_ENTRY = StructType(
    [
        StructField("image_id", StringType(), True),
        StructField("w", StringType(), True),
        StructField("g", StringType(), True),
        StructField("caption_error", StringType(), True),
        StructField("dump", StringType(), True),
    ]
)
_ENTRY_ARROW = pa.schema([(f.name, pa.string()) for f in _ENTRY.fields])


class TaiSuError(WinnowError):
    """The TaiSu input cannot be read as laid out; the message says what was expected."""


def _dump_of(path: str) -> str | None:
    """The value of the innermost ``dump=<name>`` folder in ``path`` (unescaped), else None."""
    parts = [p for p in urlparse(path).path.split("/") if p.startswith("dump=")]
    return unquote(parts[-1][len("dump=") :]) if parts else None


def caption_ranges(
    spark: SparkSession, path: str | list[str], split_bytes: int
) -> list[tuple[str, int, int, int, str | None]]:
    """(file, size, start, end, dump) for every byte range of every ``*.json`` under ``path``.

    Only the listing reaches the driver (binaryFile with its content column
    pruned reads no data), never the captions.
    """
    listing = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.json")
        .option("recursiveFileLookup", "true")
        .load(path)
        .select("path", "length")
        .collect()
    )
    if not listing:
        raise TaiSuError(f"taisu: no caption file (*.json) under {path}")
    ranges = []
    for row in sorted(listing, key=lambda r: r["path"]):
        for start, end in taisu.plan_ranges(row["length"], split_bytes):
            ranges.append((row["path"], row["length"], start, end, _dump_of(row["path"])))
    return ranges


def _range_reader(max_entry_bytes: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for r in batch.to_pylist():
                name = os.path.basename(urlparse(r["path"]).path)
                entries = taisu.read_file_range(
                    lambda p=r["path"]: wds.open_source(p), r["size"], r["start"], r["end"], name, max_entry_bytes
                )
                if entries:
                    yield pa.RecordBatch.from_pylist(
                        [
                            dict(image_id=e.image_id, w=e.web, g=e.generated, caption_error=e.error, dump=r["dump"])
                            for e in entries
                        ],
                        schema=_ENTRY_ARROW,
                    )

    return run


def read_captions(spark: SparkSession, path: str | list[str], split_bytes: int, max_entry_bytes: int) -> DataFrame:
    """One row per caption entry (or reading error) of the caption files: image_id, w, g, caption_error, dump.

    Each file is read in ranges of ``split_bytes`` (one task each); an entry longer than
    ``max_entry_bytes`` is reported as malformed, not read.
    """
    ranges = caption_ranges(spark, path, split_bytes)
    frame = spark.createDataFrame(ranges, _RANGE)
    return frame.repartition(len(ranges)).mapInArrow(_range_reader(max_entry_bytes), _ENTRY)


def read_taisu(
    spark: SparkSession,
    path: str | list[str],
    tars: DataFrame,
    captions_policy: str,
    dump: str,
    split_bytes: int,
    max_entry_bytes: int,
) -> DataFrame:
    """TaiSu as rows for ``jobs.stages.ingest.with_pair_columns``: taisu_id (the pair id), url, caption,
    caption_kind, image_id, dump, image_input and the ingest verdict (``_problem``, ``_problem_detail``).

    ``tars``: the samples of the image tars under ``path`` (the webdataset reader's rows);
    ``captions_policy``: web | generated | web-then-generated | both; ``dump``: the dump of files
    outside ``dump=<name>/`` folders.
    """
    dump_default = F.lit(dump)
    captions = read_captions(spark, path, split_bytes, max_entry_bytes).withColumn(
        "dump", F.coalesce("dump", dump_default)
    )
    tar_dump = F.col("dump").cast("string") if "dump" in tars.columns else F.lit(None).cast("string")
    # A member's key keeps its folder inside the tar (webdataset style); the id is the base name.
    images = tars.select(
        F.element_at(F.split(F.col("key"), "/"), -1).alias("image_id"),
        F.when(F.col("key").isNotNull(), F.concat("shard_path", F.lit("#"), "key")).alias("url"),
        F.col(IMAGE_INPUT),
        F.col("read_error").alias("image_error"),
        F.coalesce(tar_dump, dump_default).alias("dump"),
    )
    # One join, no filtered branches: each branch would read the caption files and expand the tars
    # again. Unreadable regions and tars have a null image id, which joins nothing, so they come
    # out once each, as malformed rows.
    entries = captions.withColumn("_in_json", F.col("image_id").isNotNull())
    joined = entries.join(images, ["dump", "image_id"], "full_outer")

    policy = captions_policy
    web = F.when(F.length("w") > 0, F.col("w"))
    gen = F.when(F.length("g") > 0, F.col("g"))
    if policy == "both":
        options = F.filter(
            F.array(
                F.struct(F.lit(WEB).alias("kind"), web.alias("text")),
                F.struct(F.lit(GENERATED).alias("kind"), gen.alias("text")),
            ),
            lambda c: c["text"].isNotNull(),
        )
        # An image with neither caption still yields one row (rejected missing-caption).
        none = F.array(F.struct(F.lit(None).cast("string").alias("kind"), F.lit(None).cast("string").alias("text")))
        chosen = F.explode(F.when(F.size(options) > 0, options).otherwise(none))
    else:
        text = {WEB: web, GENERATED: gen, "web-then-generated": F.coalesce(web, gen)}[policy]
        kind = {
            WEB: F.lit(WEB),
            GENERATED: F.lit(GENERATED),
            "web-then-generated": F.when(web.isNotNull(), F.lit(WEB)).when(gen.isNotNull(), F.lit(GENERATED)),
        }[policy]
        chosen = F.struct(F.when(text.isNotNull(), kind).alias("kind"), text.alias("text"))
    rows = joined.select("*", chosen.alias("_c")).select("*", "_c.kind", "_c.text").drop("_c")
    in_json = F.coalesce(F.col("_in_json"), F.lit(False))
    problem = (
        F.when(F.col("caption_error").isNotNull(), F.lit(reasons.MALFORMED_RECORD))
        .when(F.col("image_error").isNotNull(), F.lit(reasons.MALFORMED_RECORD))
        .when(F.col("url").isNull(), F.lit(reasons.NO_IMAGE))
        .when(F.col("text").isNull(), F.lit(reasons.MISSING_CAPTION))
    )
    problem_detail = (
        F.when(F.col("caption_error").isNotNull(), F.col("caption_error"))
        .when(F.col("image_error").isNotNull(), F.col("image_error"))
        .when(F.col("url").isNull(), F.lit("no image member with this id in the tars"))
        .when(~in_json, F.lit("no caption entry for this image id"))
        .when(F.col("text").isNull(), F.lit(f"no caption for taisu_captions = {policy}"))
    )
    suffix = F.when(F.col("kind") == GENERATED, F.lit("#" + GENERATED)).otherwise(F.lit(""))
    pairs = rows.select(
        F.when(F.col("image_id").isNotNull(), F.xxhash64(F.concat("image_id", suffix))).alias("taisu_id"),
        "url",
        F.col("text").alias("caption"),
        F.col("kind").alias("caption_kind"),
        "image_id",
        "dump",
        F.col(IMAGE_INPUT),
        problem.alias(PROBLEM),
        problem_detail.alias(PROBLEM_DETAIL),
    )
    return pairs


def expected_rows(
    spark: SparkSession,
    path: str | list[str],
    tar_keys: DataFrame,
    captions_policy: str,
    dump: str,
    split_bytes: int,
    max_entry_bytes: int,
) -> int:
    """The rows ``read_taisu`` makes of this input, counted apart from its join: per (dump, image
    id), the caption rows of its entries (by ``captions_policy``; 1 when it has none) times its
    images (1 when it has none), plus one row per unreadable caption region or tar.

    ``tar_keys``: (key, dump) per sample of the tars from their member headers
    (``jobs.stages.ingest.tar_keys``), a null key for an unreadable tar.
    """
    default = F.lit(dump)
    entries = read_captions(spark, path, split_bytes, max_entry_bytes).withColumn("dump", F.coalesce("dump", default))
    if captions_policy == "both":
        given = F.when(F.length("w") > 0, 1).otherwise(0) + F.when(F.length("g") > 0, 1).otherwise(0)
        per_entry = F.greatest(given, F.lit(1))
    else:
        per_entry = F.lit(1)
    tar_dump = F.col("dump").cast("string") if "dump" in tar_keys.columns else F.lit(None).cast("string")
    images = tar_keys.select(
        F.element_at(F.split("key", "/"), -1).alias("image_id"), F.coalesce(tar_dump, default).alias("dump")
    )
    # One aggregation over both: a row of no id (an unreadable region or tar) is a group of its own.
    marked = entries.select("dump", "image_id", per_entry.alias("r"), F.lit(1).alias("entry"), F.lit(0).alias("n"))
    marked = marked.unionByName(
        images.select("dump", "image_id", F.lit(0).alias("r"), F.lit(0).alias("entry"), F.lit(1).alias("n"))
    )
    group = F.coalesce(F.col("image_id"), F.concat(F.lit("\0"), F.monotonically_increasing_id().cast("string")))
    per_id = marked.groupBy("dump", group.alias("_id")).agg(
        (F.when(F.max("entry") == 1, F.sum("r")).otherwise(1) * F.greatest(F.sum("n"), F.lit(1))).alias("rows")
    )
    return int(per_id.agg(F.sum("rows")).first()[0] or 0)
