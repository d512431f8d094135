"""Local-mode Spark tests of ingest: every input format into the canonical pair table."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertSchemaEqual

from jobs.stage import count_stage
from jobs.stages.ingest import (
    IngestConfig,
    IngestError,
    read_source,
    resolve_format,
    source_rows,
    split_pairs,
    with_pair_columns,
    with_row_origin,
)
from schemas import reasons
from schemas.tables import PAIR

pytestmark = pytest.mark.spark


def ingest(spark, path, fmt="auto", **cfg):
    """(accepted rows by id, rejected rows, accepted frame) for ``path``."""
    config = IngestConfig(**cfg)
    resolved = resolve_format(str(path), fmt if fmt != "auto" else config.input_format)
    raw = with_row_origin(read_source(spark, str(path), resolved), resolved)  # as the stage reads it
    annotated = with_pair_columns(raw, resolved, config)
    # rows in: counted from the files, apart from the reader (what the pipeline checks)
    counts = count_stage("ingest", source_rows(spark, str(path), resolved, config), annotated)
    accepted, rejected = split_pairs(annotated)
    assert counts.accepted == accepted.count() and counts.rejected == rejected.count()
    return accepted, rejected


def write_parquet(path, rows, schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_generic_parquet_with_img2dataset_column_flags(spark, tmp_path):
    path = write_parquet(
        tmp_path / "list.parquet",
        [
            {"URL": "http://a.example/1.jpg", "TEXT": "a red bike", "extra": 1},
            {"URL": "http://a.example/2.jpg", "TEXT": "a blue car", "extra": 2},
            {"URL": None, "TEXT": "no url here", "extra": 3},
        ],
    )
    accepted, rejected = ingest(spark, path, url_col="URL", caption_col="TEXT")
    assertSchemaEqual(accepted.select(*PAIR.fieldNames()).schema, PAIR)
    rows = {r["caption"]: r for r in accepted.collect()}
    assert set(rows) == {"a red bike", "a blue car"}
    # the caption column is carried as it was; URL *is* the url column (case-insensitive clash)
    assert rows["a red bike"]["TEXT"] == "a red bike" and rows["a red bike"]["extra"] == 1
    assert "URL" not in accepted.columns
    # id: Spark's xxhash64 of the URL, the same in any run
    expected = spark.range(1).select(F.xxhash64(F.lit("http://a.example/1.jpg")).alias("h")).first()["h"]
    assert rows["a red bike"]["id"] == expected
    assert rows["a red bike"]["dump"] == "default"
    (bad,) = rejected.collect()
    assert (bad["stage"], bad["reason"], bad["caption"], bad["extra"]) == (
        "ingest",
        reasons.MISSING_URL,
        "no url here",
        3,
    )


def test_null_and_empty_fields_become_rejects(spark, tmp_path):
    path = write_parquet(
        tmp_path / "p.parquet",
        [
            {"url": "http://x/1", "caption": "fine caption here"},
            {"url": "", "caption": "empty url"},
            {"url": "   ", "caption": "blank url"},
            {"url": "http://x/2", "caption": ""},
            {"url": "http://x/3", "caption": None},
            {"url": None, "caption": None},
        ],
    )
    accepted, rejected = ingest(spark, path)
    assert accepted.count() == 1
    got = sorted((r["url"] or "", r["reason"]) for r in rejected.collect())
    assert got == [
        ("", reasons.MISSING_URL),
        ("", reasons.MISSING_URL),
        ("   ", reasons.MISSING_URL),
        ("http://x/2", reasons.MISSING_CAPTION),
        ("http://x/3", reasons.MISSING_CAPTION),
    ]


def test_csv_and_tsv_with_quoted_commas_and_newlines(spark, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(
        'url,caption,note\nhttp://x/1,"a cat, on a mat",n1\nhttp://x/2,"two\nlines of caption",n2\nhttp://x/3,,n3\n',
        encoding="utf-8",
    )
    accepted, rejected = ingest(spark, csv)
    captions = sorted(r["caption"] for r in accepted.collect())
    assert captions == ["a cat, on a mat", "two\nlines of caption"]
    assert [r["reason"] for r in rejected.collect()] == [reasons.MISSING_CAPTION]
    tsv = tmp_path / "list.tsv"
    tsv.write_text("link\ttitle\nhttp://y/1\ta dog in the park\n", encoding="utf-8")
    accepted, _ = ingest(spark, tsv, url_col="link", caption_col="title")
    (row,) = accepted.collect()
    assert (row["url"], row["caption"], row["link"], row["title"]) == (
        "http://y/1",
        "a dog in the park",
        "http://y/1",
        "a dog in the park",
    )


def test_jsonl_malformed_line_is_a_reject(spark, tmp_path):
    path = tmp_path / "list.jsonl"
    lines = [
        json.dumps({"url": "http://x/1", "caption": "a good row"}),
        "{this is not json",
        json.dumps({"url": "http://x/2"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    accepted, rejected = ingest(spark, path)
    assert [r["caption"] for r in accepted.collect()] == ["a good row"]
    assert sorted(r["reason"] for r in rejected.collect()) == [reasons.MALFORMED_RECORD, reasons.MISSING_CAPTION]


def test_coyo_parquet_keeps_source_id_and_text(spark, tmp_path):
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("url", pa.string()),
            ("text", pa.string()),
            ("width", pa.int32()),
            ("image_phash", pa.string()),
        ]
    )
    path = write_parquet(
        tmp_path / "coyo" / "part-0.parquet",
        [
            {"id": 4947802223, "url": "http://c/1", "text": "a photo of a lake", "width": 640, "image_phash": "ab" * 8},
            {"id": None, "url": "http://c/2", "text": "no id", "width": 1, "image_phash": None},
        ],
        schema,
    )
    accepted, rejected = ingest(spark, path.parent, fmt="coyo")
    (row,) = accepted.collect()
    # COYO's width / image_phash would clash with the image stage's: carried as source_<name>
    assert (row["id"], row["caption"], row["text"], row["source_width"], row["source_image_phash"]) == (
        4947802223,
        "a photo of a lake",
        "a photo of a lake",
        640,
        "ab" * 8,
    )
    assert [r["reason"] for r in rejected.collect()] == [reasons.MISSING_ID]


def test_grit_parquet_carries_its_columns(spark, tmp_path):
    chunk = pa.list_(pa.list_(pa.float64()))
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("url", pa.string()),
            ("caption", pa.string()),
            ("noun_chunks", chunk),
            ("ref_exps", chunk),
        ]
    )
    path = write_parquet(
        tmp_path / "grit.parquet",
        [
            {
                "id": 7,
                "url": "http://g/1",
                "caption": "a wire hanger",
                "noun_chunks": [[0, 13, 0.1, 0.1, 0.5, 0.5, 0.7]],
                "ref_exps": [[0, 13, 0.1, 0.1, 0.5, 0.5, 0.7]],
            }
        ],
        schema,
    )
    accepted, _ = ingest(spark, path, fmt="grit")
    (row,) = accepted.collect()
    assert row["id"] == 7 and row["caption"] == "a wire hanger"
    assert row["noun_chunks"] == [[0, 13, 0.1, 0.1, 0.5, 0.5, 0.7]]
    assert accepted.columns[:4] == ["id", "url", "caption", "dump"]


@pytest.mark.parametrize("choice,other", [("re_caption", "org_caption"), ("org_caption", "re_caption")])
def test_recap_picks_one_caption_and_carries_the_other(spark, tmp_path, choice, other):
    path = write_parquet(
        tmp_path / "recap.parquet",
        [
            {
                "url": "http://r/1",
                "re_caption": "The image shows a dog.",
                "org_caption": "dog pic",
                "sha256": "00",
                "key": "000000001",
            }
        ],
    )
    accepted, _ = ingest(spark, path, fmt="recap", recap_caption=choice)
    (row,) = accepted.collect()
    assert row["caption"] == row[choice] and row[other] in ("dog pic", "The image shows a dog.")
    assert row["key"] == "000000001"


def test_string_id_column_is_hashed_and_clashing_columns_renamed(spark, tmp_path):
    path = write_parquet(
        tmp_path / "p.parquet",
        [{"uid": "abc", "url": "http://x/1", "caption": "a tree", "reason": "kept", "stage": "s1"}],
    )
    accepted, _ = ingest(spark, path, id_col="uid")
    (row,) = accepted.collect()
    expected = spark.range(1).select(F.xxhash64(F.lit("abc")).alias("h")).first()["h"]
    assert row["id"] == expected and row["uid"] == "abc"
    assert row["source_reason"] == "kept" and row["source_stage"] == "s1"


def test_source_columns_named_like_the_stage_columns_are_kept(spark, tmp_path):
    """A crawl dump with its own language / word_count must not lose them to the text stage's columns."""
    row = {"url": "http://x/1", "caption": "a tree", "language": "de", "word_count": 7, "has_noun": True}
    accepted, _ = ingest(spark, write_parquet(tmp_path / "p.parquet", [row]))
    (got,) = accepted.collect()
    assert (got["source_language"], got["source_word_count"], got["source_has_noun"]) == ("de", 7, True)
    assert "language" not in accepted.columns and "word_count" not in accepted.columns


def test_dump_from_partition_folders_and_from_config(spark, tmp_path):
    for dump in ("007", "2026-01-01"):
        write_parquet(
            tmp_path / "in" / f"dump={dump}" / "part-0.parquet", [{"url": f"http://d/{dump}", "caption": "a cat"}]
        )
    accepted, _ = ingest(spark, tmp_path / "in")
    # names as written: no number or date inference on partition values
    assert sorted(r["dump"] for r in accepted.collect()) == ["007", "2026-01-01"]
    write_parquet(tmp_path / "flat.parquet", [{"url": "http://d/x", "caption": "a cat"}])
    accepted, _ = ingest(spark, tmp_path / "flat.parquet", dump="crawl-7")
    assert [r["dump"] for r in accepted.collect()] == ["crawl-7"]


def test_missing_columns_and_unknown_formats_are_clear_errors(spark, tmp_path):
    path = write_parquet(tmp_path / "p.parquet", [{"link": "http://x/1", "caption": "a cat"}])
    with pytest.raises(IngestError, match="column 'url' not found.*--url-col"):
        ingest(spark, path)
    (tmp_path / "data.bin").write_bytes(b"\x00")
    with pytest.raises(IngestError, match="--input-format"):
        resolve_format(str(tmp_path / "data.bin"), "auto")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="no .parquet"):
        resolve_format(str(empty), "auto")
