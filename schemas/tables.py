"""StructTypes of the canonical pair table, the text stage's additions and rejects.

Every stage output is ``conform``-ed: the fixed columns come first, in this
order and with these types, then every source column carried through as it
was read. Columns winnow adds beyond the GRIT / COYO release names:

- ``dump``: which crawl dump / source snapshot the row came from (the output
  partition column).
- ``language``, ``language_probability``: CLD3's top language and its score.
- ``noun_chunk_spans``: spaCy noun chunks of ``caption`` as character spans
  ``[start, end)`` with the chunk root's lemma and part of speech.
- ``ref_exp_spans``: aligned 1:1 with ``noun_chunk_spans``; the referring
  expression of each chunk (the subtree of its root), or the chunk itself when
  the root has conjuncts (as in the GRIT release).
- ``image_bytes_size``, ``image_format``: the size in bytes and Pillow's format
  name (lower case: jpeg, png, webp, gif, ...) of the image as obtained;
  ``width`` / ``height`` are its dimensions as stored (before any EXIF
  rotation), ``image_phash`` is ``str(imagehash.phash(image))``.
- ``image`` (only with ``image.keep_bytes``): the image resized as img2dataset
  does (EXIF rotation applied), JPEG.
- ``image_input`` (img2dataset inputs only, dropped by the image stage): the
  source row's image bytes, used instead of fetching the URL.
- webdataset inputs (``WEBDATASET_SAMPLE``): ``shard_path`` (the tar the
  sample came from), img2dataset's ``key``, ``status``, ``error_message`` and
  ``json`` (the sample's ``.json`` member as text).
- ``noun_chunks``, ``ref_exps`` (the grounding stage, GRIT release names):
  lists of ``[start, end, x_min, y_min, x_max, y_max, score]`` (doubles;
  character span ``[start, end)`` of the caption, box normalised to [0, 1]),
  aligned 1:1 and sorted by score, highest first; ``noun_chunks`` holds the
  chunk's span, ``ref_exps`` its referring expression's span, same box and score.
- score columns (the score stage, COYO's names, doubles; null when the row
  could not be scored): ``clip_similarity_<name>`` (cosine similarity of the
  CLIP image and text embeddings), ``nsfw_score_<name>``,
  ``aesthetic_score_<name>``, ``watermark_score``, or a plug-in's columns
  (udfs/scorers.py); a source column of the same name is carried as
  ``source_<name>``.
- ``BOXES``: the detector's output, the grounding stage's second input (one
  row per box); ``BOX_VERDICT``: what the stage says about each of its rows.
- ``HISTORY``: the dedup stage's history of accepted pairs; ``BLOCKLIST``: an eval-set blocklist.
- rejects: ``stage``, ``reason`` (codes in ``schemas.reasons``) and ``detail``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

PAIR = StructType(
    [
        StructField("id", LongType(), True),
        StructField("url", StringType(), True),
        StructField("caption", StringType(), True),
        StructField("dump", StringType(), True),
    ]
)

CHUNK_SPAN = StructType(
    [
        StructField("start", IntegerType(), False),
        StructField("end", IntegerType(), False),
        StructField("root_lemma", StringType(), True),
        StructField("root_pos", StringType(), True),
    ]
)
SPAN = StructType(
    [
        StructField("start", IntegerType(), False),
        StructField("end", IntegerType(), False),
    ]
)

# Columns the text stage adds to the accepted pairs.
_TEXT_MEASURES = [
    StructField("text_length", IntegerType(), True),
    StructField("word_count", IntegerType(), True),
    StructField("language", StringType(), True),
    StructField("language_probability", FloatType(), True),
]
_TEXT_SPANS = [
    StructField("noun_chunk_spans", ArrayType(CHUNK_SPAN, False), True),
    StructField("ref_exp_spans", ArrayType(SPAN, False), True),
]

# The text stage's judgement of one distinct normalised caption (udfs.text_rules.Verdict).
TEXT_VERDICT = StructType(
    _TEXT_MEASURES
    + [
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("has_noun", BooleanType(), True),
    ]
    + _TEXT_SPANS
)

TEXT_ACCEPTED = StructType(PAIR.fields + _TEXT_MEASURES + _TEXT_SPANS)

# Columns the image stage adds to the accepted pairs (after the input's columns).
IMAGE_MEASURES = [
    StructField("width", IntegerType(), True),
    StructField("height", IntegerType(), True),
    StructField("image_bytes_size", LongType(), True),
    StructField("image_format", StringType(), True),
    StructField("image_phash", StringType(), True),
]
IMAGE_BYTES = StructField("image", BinaryType(), True)
IMAGE_INPUT = "image_input"
# img2dataset inputs that recorded the original's size: width / height are the original's, these
# what the stored copy holds, and whether it is a resized copy ("resized") or not ("same-size").
IMAGE_STORED = [
    StructField("stored_width", IntegerType(), True),
    StructField("stored_height", IntegerType(), True),
    StructField("image_stored", StringType(), True),
]

# What the image UDF returns per row, besides the columns it passes through.
IMAGE_VERDICT = StructType(
    [StructField("reason", StringType(), True), StructField("detail", StringType(), True)]
    + IMAGE_MEASURES
    + [IMAGE_BYTES]
)

# One row per sample of a WebDataset tar, as ingest reads it (udfs.wds.SAMPLE_SCHEMA in
# Arrow types); partition columns such as ``dump`` follow. ``read_error`` is set on the
# one row of a tar that cannot be read, and on samples whose .txt / .json are unusable.
WEBDATASET_SAMPLE = StructType(
    [
        StructField("shard_path", StringType(), True),
        StructField("key", StringType(), True),
        StructField("url", StringType(), True),
        StructField("caption", StringType(), True),
        StructField("status", StringType(), True),
        StructField("error_message", StringType(), True),
        StructField("json", StringType(), True),
        StructField(IMAGE_INPUT, BinaryType(), True),
        StructField("read_error", StringType(), True),
    ]
)

# One row per tar written by the WebDataset export (udfs.wds.EXPORTED_SHARD_SCHEMA).
EXPORTED_SHARD = StructType(
    [
        StructField("dump", StringType(), True),
        StructField("shard", LongType(), True),
        StructField("samples", LongType(), True),
        StructField("bytes", LongType(), True),
    ]
)

# The grounding stage's output columns (GRIT release names and types).
GRIT_ENTRY = ArrayType(DoubleType(), False)  # [start, end, x_min, y_min, x_max, y_max, score]
GRIT_COLUMNS = [
    StructField("noun_chunks", ArrayType(GRIT_ENTRY, False), True),  # chunk span + its kept box
    StructField("ref_exps", ArrayType(GRIT_ENTRY, False), True),  # aligned: referring-expression span, same box
]

# The Boxes table: one detector box per row, the grounding stage's second input (``winnow detect``
# writes one). jobs.stages.ground.read_boxes widens narrower numeric types to these.
BOXES = StructType(
    [
        StructField("id", LongType(), True),  # the pair's id
        StructField("start", IntegerType(), True),  # character span [start, end) of the phrase in the caption
        StructField("end", IntegerType(), True),
        StructField("x_min", DoubleType(), True),  # normalised to [0, 1], or pixels (ground.boxes_in_pixels)
        StructField("y_min", DoubleType(), True),
        StructField("x_max", DoubleType(), True),
        StructField("y_max", DoubleType(), True),
        StructField("score", DoubleType(), True),  # detector confidence in [0, 1]
    ]
)

# One row per pair row that a detector plug-in looked at (``winnow detect``, or the ground stage with
# ground.detector): ``outcome`` with-boxes / without-boxes / failed, ``reason`` (schemas.reasons.
# DETECT_FAILURES) and ``detail`` when failed, and the boxes it found (BOXES without the id).
DETECTED = StructType(
    [
        StructField("id", LongType(), True),
        StructField("outcome", StringType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField(
            "boxes",
            ArrayType(StructType([StructField(f.name, f.dataType, True) for f in BOXES.fields[1:]]), True),
            True,
        ),
    ]
)

# One row per row of the Boxes table, as the grounding stage judged it. The box columns are
# the input's values (not normalised). ``reason`` (schemas.reasons.BOX_REASONS) is set when the
# box could not be used at all; otherwise ``outcome`` says what grounding made of it: kept,
# below-score, suppressed (NMS), abstract (abstract-noun chunk), unmatched (span is no noun
# chunk), contained (ground.drop_contained) or error (its pair row failed: ground-error).
BOX_VERDICT = StructType(
    BOXES.fields[:1]
    + [StructField("dump", StringType(), True)]  # the pair's dump; null for box-no-pair
    + BOXES.fields[1:]
    + [
        StructField("reason", StringType(), True),
        StructField("outcome", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)

# The dedup stage's history of accepted pairs (OUTPUT/history/, partitioned by dump): what later
# dumps are deduplicated against. ``phash`` is the 64-bit pHash as a signed long, ``caption_hash``
# xxhash64 of the lower-cased caption.
HISTORY = StructType(
    [
        StructField("phash", LongType(), False),
        StructField("caption_hash", LongType(), False),
        StructField("id", LongType(), True),
        StructField("dump", StringType(), True),
    ]
)

# An evaluation-set blocklist as `winnow blocklist` writes it (OUTPUT/name=<NAME>/): one row per
# distinct pHash (16 lower-case hex digits), with the smallest source among its copies.
BLOCKLIST = StructType(
    [
        StructField("image_phash", StringType(), True),
        StructField("source", StringType(), True),
    ]
)

REJECT = StructType(
    [
        StructField("id", LongType(), True),
        StructField("dump", StringType(), True),
        StructField("stage", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("detail", StringType(), True),
        StructField("url", StringType(), True),
        StructField("caption", StringType(), True),
    ]
)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select ``schema``'s columns first (cast to their types), then the rest.

    A missing schema column is a programming error and fails here, at plan
    time, rather than as a confusing error in the writer.
    """
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; have {df.columns}")
    have = {f.name: f.dataType for f in df.schema.fields}
    # A column read back from parquet (a stage checkpoint) has lost the nullability of its nested
    # fields; Spark refuses that cast although the data fit, so such a column stays as it is.
    fixed = [
        col_ref(f.name) if _nullable(have[f.name]) == _nullable(f.dataType) else col_ref(f.name).cast(f.dataType)
        for f in schema.fields
    ]
    fixed = [c.alias(f.name) for c, f in zip(fixed, schema.fields, strict=True)]
    names = set(schema.fieldNames())
    return df.select(*fixed, *[col_ref(c) for c in df.columns if c not in names])


def _nullable(dtype: DataType) -> DataType:
    """``dtype`` with every nested field, element and value nullable."""
    if isinstance(dtype, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType), True) for f in dtype.fields])
    if isinstance(dtype, ArrayType):
        return ArrayType(_nullable(dtype.elementType), True)
    if isinstance(dtype, MapType):
        return MapType(_nullable(dtype.keyType), _nullable(dtype.valueType), True)
    return dtype


def col_ref(name: str) -> Column:
    """A column by its literal name, even with dots or backticks in it."""
    return F.col("`" + name.replace("`", "``") + "`")
