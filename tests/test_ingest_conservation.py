"""The ingest stage's conservation check can fail: its rows in are counted from the source's files,
apart from the readers, so a reader that loses or repeats rows stops the job (exit 3, nothing
committed). Each test breaks one reader on the driver (the plan it builds) and runs the pipeline."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.stages import ingest, taisu

pytestmark = pytest.mark.spark

ARGS = ["--stages", "text", "--set", "run.checkpoints=false"]


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def parquet_input(tmp_path: Path) -> list[str]:
    rows = [{"url": f"http://x/{i}.jpg", "caption": f"a small red bicycle number {i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    return ["--input", str(tmp_path / "pairs.parquet")]


def webdataset_input(tmp_path: Path) -> list[str]:
    for shard in range(2):
        members = {}
        for i in range(3):
            key = f"{shard}{i:04d}"
            members[f"{key}.jpg"] = b"\xff\xd8 not really a jpeg"
            members[f"{key}.txt"] = f"a small red bicycle number {key}".encode()
            members[f"{key}.json"] = json.dumps({"url": f"http://x/{key}.jpg"}).encode()
        write_tar(tmp_path / "shards" / f"{shard:05d}.tar", members)
    return ["--input", str(tmp_path / "shards"), "--input-format", "webdataset"]


def recap_input(tmp_path: Path) -> list[str]:
    rows = [
        {"url": f"http://x/{i}.jpg", "re_caption": f"The image shows bicycle {i}.", "org_caption": f"bike {i}"}
        for i in range(4)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "recap.parquet")
    return ["--input", str(tmp_path / "recap.parquet"), "--input-format", "recap", "--set", "ingest.recap_both=true"]


def taisu_input(tmp_path: Path) -> list[str]:
    root = tmp_path / "taisu"
    root.mkdir()
    captions = {f"img{i}": {"w": f"一只红色的自行车{i}", "g": f"自行车{i}的照片"} for i in range(4)}
    (root / "captions.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    write_tar(root / "part-00000.tar", {f"img{i}.jpg": b"\xff\xd8 not a jpeg" for i in range(4)})
    return ["--input", str(root), "--input-format", "taisu", "--language", "zh"]


def drop_one(frame):
    """The frame without its first row by some key: a reader that loses one row."""
    column = "url" if "url" in frame.columns else frame.columns[0]
    first = frame.agg(F.min(column)).first()[0]
    return frame.where(F.col(column) != F.lit(first))


def test_a_reader_that_drops_a_table_row_fails_the_check(tmp_path, monkeypatch, capsys):
    real = ingest.read_source
    monkeypatch.setattr(ingest, "read_source", lambda *a, **k: drop_one(real(*a, **k)))
    out = tmp_path / "out"
    assert pipeline.main([*parquet_input(tmp_path), "--output", str(out), *ARGS]) == 3
    err = capsys.readouterr().err
    assert "conservation check failed" in err and "stage ingest: 5 rows in but 4 accepted + 0 rejected" in err
    assert not (out / "accepted").exists()


def test_an_expander_that_loses_a_tar_sample_fails_the_check(tmp_path, monkeypatch, capsys):
    real = ingest.read_webdataset
    monkeypatch.setattr(ingest, "read_webdataset", lambda *a, **k: drop_one(real(*a, **k)))
    assert pipeline.main([*webdataset_input(tmp_path), "--output", str(tmp_path / "out"), *ARGS]) == 3
    assert "stage ingest: 6 rows in but" in capsys.readouterr().err


def test_recap_both_without_its_second_caption_row_fails_the_check(tmp_path, monkeypatch, capsys):
    real = ingest.with_pair_columns
    monkeypatch.setattr(
        ingest, "with_pair_columns", lambda *a, **k: real(*a, **k).dropDuplicates(["url"])
    )  # one row per image where each of its two captions is a row
    assert pipeline.main([*recap_input(tmp_path), "--output", str(tmp_path / "out"), *ARGS]) == 3
    assert "stage ingest: 8 rows in but" in capsys.readouterr().err


def test_a_taisu_join_that_loses_a_row_fails_the_check(tmp_path, monkeypatch, capsys):
    real = taisu.read_taisu
    monkeypatch.setattr(taisu, "read_taisu", lambda *a, **k: drop_one(real(*a, **k)))
    assert pipeline.main([*taisu_input(tmp_path), "--output", str(tmp_path / "out"), *ARGS]) == 3
    assert "stage ingest: 8 rows in but" in capsys.readouterr().err  # 4 images x (web + generated)


@pytest.mark.parametrize("make", [parquet_input, webdataset_input, recap_input, taisu_input])
def test_the_unbroken_readers_pass_the_check(tmp_path, make):
    assert pipeline.main([*make(tmp_path), "--output", str(tmp_path / "out"), *ARGS]) == 0
