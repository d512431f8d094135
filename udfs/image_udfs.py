"""The image stage's Spark wrapper: a ``mapInArrow`` function over pair rows; the report's thumbnail UDF.

Each input row passes through unchanged with the ``IMAGE_VERDICT`` columns
appended. Rows are fetched (or read from the ``image_input`` column) on a
thread pool with a per-host cap (``udfs.fetch.map_bounded``) and come out in
completion order, ``batch_size`` rows per Arrow batch, so a slow URL never
holds finished rows back and at most a few batches of image bytes are in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

from schemas import reasons
from udfs.fetch import FetchConfig, get_fetcher, map_bounded, registrable_host
from udfs.image import ImageConfig, ImageVerdict, inspect_image, rejected, thumbnail

# Images decoded at once per Python worker (= per task). Decoding is CPU work, so one per
# core is all the CPU can use; the fetch threads overlap only their network waits. This
# bounds a worker's pixel memory to one image (up to image.max_pixels) however many
# threads fetch.
DECODE_SLOTS = threading.BoundedSemaphore(1)

VERDICT_FIELDS = ("reason", "detail", "width", "height", "image_bytes_size", "image_format", "image_phash", "image")
VERDICT_TYPES = (pa.string(), pa.string(), pa.int32(), pa.int32(), pa.int64(), pa.string(), pa.string(), pa.binary())
# With the original's size (img2dataset inputs): what the stored copy holds.
STORED_FIELDS = ("stored_width", "stored_height")
STORED_TYPES = (pa.int32(), pa.int32())


def judge_one(
    payload: str | bytes | None,
    from_bytes: bool,
    policy: FetchConfig,
    rules: ImageConfig,
    original: tuple[int | None, int | None] | None = None,
) -> ImageVerdict:
    """Fetch (or take) one image and apply the rules (size rules on ``original`` when known); never raises."""
    try:
        if from_bytes:
            if payload is None:
                return rejected(reasons.IMAGE_MISSING, "the source row has no image bytes")
            data = payload
        else:
            got = get_fetcher(policy).fetch(payload)  # type: ignore[arg-type]
            if got.reason is not None:
                return rejected(got.reason, got.detail)
            data = got.data or b""
        with DECODE_SLOTS:
            return inspect_image(data, rules, original)  # type: ignore[arg-type]
    except Exception as exc:  # a bug must cost one row, not the job
        return rejected(reasons.IMAGE_ERROR, f"{type(exc).__name__}: {exc}"[:500])


def _verdict_arrays(verdicts: list[ImageVerdict], fields: tuple[str, ...], types: tuple) -> list[pa.Array]:
    return [pa.array([getattr(v, name) for v in verdicts], type=typ) for name, typ in zip(fields, types, strict=True)]


def image_mapper(
    policy: FetchConfig,
    rules: ImageConfig,
    url_col: str = "url",
    bytes_col: str | None = None,
    batch_size: int = 64,
    original_cols: tuple[str, str] | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow``: every row in, the same row plus the verdict out.

    With ``bytes_col`` the image bytes come from that column (img2dataset
    inputs) and nothing is fetched; the column itself is not passed on. With
    ``original_cols`` (width, height columns of the original image, with
    ``bytes_col``) the size rules judge the original and the verdict adds
    ``STORED_FIELDS``.
    """
    fields = VERDICT_FIELDS + (STORED_FIELDS if original_cols else ())
    types = VERDICT_TYPES + (STORED_TYPES if original_cols else ())

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held: dict[int, pa.RecordBatch] = {}
        left: dict[int, int] = {}
        from_bytes = bytes_col is not None

        def items() -> Iterator[tuple[tuple[int, int], str, Any]]:
            for number, batch in enumerate(batches):
                if batch.num_rows == 0:
                    continue
                keep = batch.drop_columns([bytes_col]) if from_bytes else batch
                held[number], left[number] = keep, batch.num_rows
                if from_bytes:
                    column = batch.column(bytes_col)
                    sizes = [batch.column(c).to_pylist() for c in original_cols] if original_cols else None
                    for i in range(batch.num_rows):
                        original = (sizes[0][i], sizes[1][i]) if sizes else None
                        yield (number, i), "", (column[i].as_py(), original)
                else:
                    for i, url in enumerate(batch.column(url_col).to_pylist()):
                        yield (number, i), registrable_host(url), url

        def work(payload: Any) -> ImageVerdict:
            if from_bytes:  # (bytes, original size)
                return judge_one(payload[0], True, policy, rules, payload[1])
            return judge_one(payload, False, policy, rules)

        def emit(done: list[tuple[tuple[int, int], ImageVerdict]]) -> Iterator[pa.RecordBatch]:
            by_batch: dict[int, list[tuple[int, ImageVerdict]]] = {}
            for (number, i), verdict in done:
                by_batch.setdefault(number, []).append((i, verdict))
            for number, rows in by_batch.items():
                source = held[number].take(pa.array([i for i, _ in rows], type=pa.int64()))
                arrays = source.columns + _verdict_arrays([v for _, v in rows], fields, types)
                yield pa.RecordBatch.from_arrays(arrays, names=source.schema.names + list(fields))
                left[number] -= len(rows)
                if left[number] == 0:
                    del held[number], left[number]

        threads = max(1, min(policy.threads, 4)) if from_bytes else policy.threads
        per_host = threads if from_bytes else policy.max_per_host
        # Read-ahead bounds memory: bytes rows hold images, URL rows are small.
        pending = threads * 4 if from_bytes else 4096
        done: list[tuple[tuple[int, int], ImageVerdict]] = []
        try:
            for key, verdict in map_bounded(items(), work, threads, per_host, max_pending=pending):
                done.append((key, verdict))
                if len(done) >= batch_size:
                    yield from emit(done)
                    done = []
        finally:
            if not from_bytes:  # the task's connections end with it: idle ones count at the host too
                get_fetcher(policy).close()
        if done:
            yield from emit(done)

    return run


THUMBNAIL_TYPE = StructType(
    [
        StructField("data", BinaryType(), False),
        StructField("width", IntegerType(), False),
        StructField("height", IntegerType(), False),
    ]
)


def thumbnail_udf(max_side: int, max_bytes: int) -> Callable[..., Column]:
    """A Spark UDF: image bytes -> ``THUMBNAIL_TYPE`` (null when there is none; ``udfs.image.thumbnail``).

    Row at a time on purpose: the report applies it to a few dozen sampled rows only."""

    def one(data):  # no annotations: pyspark 4 reads a UDF's hints to guess a pandas UDF, and warns
        thumb = thumbnail(data, max_side, max_bytes)
        return None if thumb is None else (thumb.data, thumb.width, thumb.height)

    return F.udf(one, THUMBNAIL_TYPE)
