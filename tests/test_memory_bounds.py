"""Memory stays bounded with full-size image bytes: row groups winnow writes close at run.row_group_bytes,
and a Spark that runs out of memory (or whose JVM goes away) ends in exit 4 with one line.

The run over hundreds of MB of full-size images with the default heap is bench/bench_memory.py (minutes).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from py4j.protocol import Py4JNetworkError

from jobs import pipeline
from jobs.config import default_config
from jobs.errors import SPARK_FAILED, run_command
from jobs.session import bound_row_groups

MIB = 1024 * 1024


def noisy_jpeg(seed: int, width: int = 900, height: int = 700) -> bytes:
    """A full-size photo-like JPEG of a few hundred KB (noise does not compress)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def img2dataset_parquet(folder: Path, images: list[bytes]) -> None:
    """An img2dataset --resize_mode no parquet: the original bytes in `jpg`, in one row group as pyarrow writes it."""
    folder.mkdir()
    rows = [
        {
            "url": f"http://127.0.0.1:9/{i}.jpg",  # refused before any connect if it were fetched
            "caption": f"photo {i}",
            "key": f"{i:09d}",
            "status": "success",
            "error_message": None,
            "width": 900,
            "height": 700,
            "original_width": 900,
            "original_height": 700,
            "exif": "{}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "jpg": data,
        }
        for i, data in enumerate(images)
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")


def row_group_bytes(folder: Path) -> list[int]:
    sizes = []
    for path in folder.rglob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        sizes += [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    return sizes


@pytest.mark.spark
@pytest.mark.parametrize(("bound", "most"), [(1 * MIB, 1 * MIB), (0, None)])
def test_checkpoints_with_image_bytes_have_bounded_row_groups(spark: Any, tmp_path: Path, bound: int, most) -> None:
    images = [noisy_jpeg(i) for i in range(12)]
    largest = max(len(b) for b in images)
    assert sum(len(b) for b in images) > 4 * MIB  # so one unbounded row group would be several MiB
    img2dataset_parquet(tmp_path / "in", images)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--input-format", "img2dataset-parquet"]
    argv += ["--stages", "image", "--set", "run.keep_checkpoints=true", "--set", f"run.row_group_bytes={bound}"]
    try:
        assert pipeline.main(argv) == 0
    finally:
        bound_row_groups(spark, default_config().run.row_group_bytes)  # the shared session's default again
    sizes = row_group_bytes(out / "_checkpoints" / "ingest")
    assert sum(sizes) > 4 * MIB
    if most is None:  # Parquet's own: every image of a task in one row group
        assert max(sizes) > 4 * MIB, sizes
    else:  # closed once past the bound: at most the bound plus the row that crossed it
        assert max(sizes) <= most + largest, sizes
        assert len(sizes) >= 4, sizes


def test_a_jvm_out_of_memory_is_exit_4_and_one_line(capsys) -> None:
    def oom() -> int:
        raise RuntimeError("Job aborted: Task 0 in stage 1.0 failed: java.lang.OutOfMemoryError: Java heap space")

    assert run_command(oom) == SPARK_FAILED == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("winnow: error: Spark ran out of memory")
    assert "run.row_group_bytes" in err[0] and "--driver-memory" in err[0]


def test_a_jvm_that_went_away_is_exit_4_and_one_line(capsys) -> None:
    def gone() -> int:
        raise Py4JNetworkError("Answer from Java side is empty")

    assert run_command(gone) == SPARK_FAILED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("winnow: error: the Spark JVM went away") and "nothing was committed" in line


def test_py4js_tracebacks_for_a_gone_jvm_are_not_logged(capsys) -> None:
    import logging

    def gone() -> int:
        # what py4j does on every call after the JVM died: a traceback on the root logger
        record = logging.LogRecord("root", logging.ERROR, "/x/site-packages/py4j/java_gateway.py", 1, "x", (), None)
        logging.getLogger().handle(record)
        raise Py4JNetworkError("Answer from Java side is empty")

    assert run_command(gone) == SPARK_FAILED
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_bug_keeps_its_trace() -> None:
    def bug() -> int:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_command(bug)
