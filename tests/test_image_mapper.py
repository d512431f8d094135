"""The image stage's Arrow function (udfs.image_udfs.image_mapper) without Spark.

What a task's Python worker does with its rows: every row out once with its
columns, Arrow batches no larger than ``image.batch_size``, one decode at a
time however many threads fetch, and a bug in one row costing that row only.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
from image_factory import jpeg_bytes, png_bytes

from schemas import reasons
from udfs import image_udfs
from udfs.fetch import FetchConfig
from udfs.image import ImageConfig, inspect_image
from udfs.image_udfs import VERDICT_FIELDS, image_mapper, judge_one

POLICY = FetchConfig(threads=8)
RULES = ImageConfig()


def bytes_batches(images: list[bytes | None], per_batch: int) -> list[pa.RecordBatch]:
    table = pa.table(
        {
            "id": pa.array(range(len(images)), pa.int64()),
            "note": [f"row {i}" for i in range(len(images))],
            "image_input": pa.array(images, pa.binary()),
        }
    )
    return table.to_batches(max_chunksize=per_batch)


def run_mapper(batches: list[pa.RecordBatch], batch_size: int, threads: int = 8) -> list[pa.RecordBatch]:
    mapper = image_mapper(FetchConfig(threads=threads), RULES, bytes_col="image_input", batch_size=batch_size)
    return list(mapper(iter(batches)))


def test_every_row_once_in_batches_of_at_most_batch_size():
    images = [jpeg_bytes(320, 240, seed=i) if i % 3 else None for i in range(50)]
    out = run_mapper(bytes_batches(images, per_batch=17), batch_size=8)
    assert out and all(b.num_rows <= 8 for b in out)
    table = pa.Table.from_batches(out)
    assert table.column_names == ["id", "note", *VERDICT_FIELDS], "the bytes column is not passed on"
    rows = {r["id"]: r for r in table.to_pylist()}
    assert sorted(rows) == list(range(50))
    for i, row in rows.items():
        assert row["note"] == f"row {i}"
        if i % 3:
            assert row["reason"] is None and (row["width"], row["height"]) == (320, 240), row
            assert row["image_phash"] == inspect_image(images[i], RULES).image_phash
        else:
            assert row["reason"] == reasons.IMAGE_MISSING and row["detail"]


def test_empty_input_and_empty_batches():
    assert run_mapper([], batch_size=8) == []
    empty = bytes_batches([], per_batch=4)
    assert run_mapper(empty, batch_size=8) == []


def test_one_decode_at_a_time_however_many_threads(monkeypatch):
    """Pixel memory per worker is one image: the fetch threads never decode side by side."""
    lock = threading.Lock()
    active = {"now": 0, "max": 0, "calls": 0}

    def watched(data, rules, original=None):
        with lock:
            active["now"] += 1
            active["calls"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.01)  # long enough for other threads to try
        try:
            return inspect_image(data, rules, original)
        finally:
            with lock:
                active["now"] -= 1

    monkeypatch.setattr(image_udfs, "inspect_image", watched)
    images = [png_bytes(300, 220, seed=i) for i in range(24)]
    out = run_mapper(bytes_batches(images, per_batch=24), batch_size=64, threads=8)
    assert sum(b.num_rows for b in out) == 24
    assert active["calls"] == 24 and active["max"] == 1


def test_a_bug_in_one_row_is_an_image_error_not_a_failed_task(monkeypatch):
    def broken(data, rules, original=None):
        if data.startswith(b"\x89PNG"):
            raise RuntimeError("boom")
        return inspect_image(data, rules, original)

    monkeypatch.setattr(image_udfs, "inspect_image", broken)
    images = [png_bytes(300, 220, seed=1), jpeg_bytes(300, 220, seed=2)]
    rows = {r["id"]: r for r in pa.Table.from_batches(run_mapper(bytes_batches(images, 2), 8)).to_pylist()}
    assert rows[0]["reason"] == reasons.IMAGE_ERROR and "RuntimeError: boom" in rows[0]["detail"]
    assert rows[1]["reason"] is None
    # and the decode slot was given back: the next row still decodes
    assert judge_one(jpeg_bytes(300, 220, seed=3), True, POLICY, RULES).reason is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (None, reasons.URL_INVALID),
        ("", reasons.URL_INVALID),
        ("gopher://example.org/x.jpg", reasons.UNSUPPORTED_SCHEME),
        ("http://10.0.0.1/x.jpg", reasons.SSRF_REFUSED),
        ("http://[::ffff:169.254.169.254]/latest", reasons.SSRF_REFUSED),
    ],
)
def test_url_rows_that_never_reach_the_network(url, reason):
    """Refused before any connection: no server needed, and the reason is the fetcher's."""
    table = pa.table({"id": pa.array([7], pa.int64()), "url": pa.array([url], pa.string())})
    mapper = image_mapper(POLICY, RULES, batch_size=4)
    (row,) = pa.Table.from_batches(list(mapper(iter(table.to_batches())))).to_pylist()
    assert row["id"] == 7 and row["url"] == url
    assert row["reason"] == reason and row["detail"]
