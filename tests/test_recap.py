"""Recap-DataComp-1B: filter the chosen caption and carry the other, both as rows, mixed export."""

from __future__ import annotations

import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import export
from jobs.stage import count_stage
from jobs.stages.ingest import IngestConfig, read_source, source_rows, split_pairs, with_pair_columns
from jobs.stages.text import rules_from_config, split_text, with_text_verdicts
from schemas import reasons
from tests.image_factory import jpeg_bytes
from udfs.text_rules import TextConfig
from udfs.text_rules_zh import ChineseTextConfig

pytestmark = pytest.mark.spark

# The published columns (Recap-DataComp-1B on the Hugging Face hub): url, re_caption,
# org_caption, sha256, key, and score columns such as re_clip_score / org_clip_score.
SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("re_caption", pa.string()),
        ("org_caption", pa.string()),
        ("sha256", pa.string()),
        ("key", pa.string()),
        ("re_clip_score", pa.float64()),
        ("org_clip_score", pa.float64()),
    ]
)
ROWS = [
    ("http://r.example/1.jpg", "The image shows a brown dog running on a sandy beach.", "dog beach", "a1", "000000001"),
    ("http://r.example/2.jpg", "A red bicycle is leaning against a brick wall.", "bike 4 sale!!", "a2", "000000002"),
    ("http://r.example/3.jpg", "A bowl of ramen with an egg and green onions on top.", "ok", "a3", "000000003"),
    ("http://r.example/4.jpg", None, "a photo of a small wooden boat on a lake", "a4", "000000004"),
]


def recap_file(tmp_path):
    rows = [dict(zip(SCHEMA.names[:5], r, strict=True), re_clip_score=0.31, org_clip_score=0.22) for r in ROWS]
    path = tmp_path / "recap.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


def ingest_and_filter(spark, path, **cfg):
    config = IngestConfig(input_format="recap", **cfg)
    annotated = with_pair_columns(read_source(spark, str(path), "recap", config), "recap", config)
    counts = count_stage("ingest", source_rows(spark, str(path), "recap", config), annotated)
    pairs, ingest_rejects = split_pairs(annotated)
    rules = rules_from_config(TextConfig(), ChineseTextConfig())
    judged = with_text_verdicts(pairs, rules, 2).persist()
    accepted, rejected = split_text(judged, pairs.columns)
    return counts, accepted.collect(), rejected.collect() + ingest_rejects.collect()


def test_default_filters_the_recaption_and_carries_every_source_column(spark, tmp_path):
    counts, accepted, rejected = ingest_and_filter(spark, recap_file(tmp_path))
    assert counts.rows_in == 4
    kept = {r["key"]: r for r in accepted}
    assert set(kept) == {"000000001", "000000002", "000000003"}
    for r in kept.values():
        assert r["caption"] == r["re_caption"]
        assert r["org_caption"] is not None and r["sha256"] and r["re_clip_score"] == 0.31
    # the row without a recaption is a reject, even though its original caption would pass
    (missing,) = [r for r in rejected if r["key"] == "000000004"]
    assert missing["reason"] == reasons.MISSING_CAPTION


def test_org_caption_choice_filters_the_web_caption(spark, tmp_path):
    _, accepted, rejected = ingest_and_filter(spark, recap_file(tmp_path), recap_caption="org_caption")
    assert {r["key"] for r in accepted} == {"000000004"}
    why = {r["key"]: r["reason"] for r in rejected}
    assert why["000000003"] == reasons.TOO_SHORT and why["000000001"] == reasons.TOO_FEW_WORDS


def test_recap_both_writes_each_caption_as_its_own_filtered_row(spark, tmp_path):
    counts, accepted, rejected = ingest_and_filter(spark, recap_file(tmp_path), recap_both=True)
    assert counts.rows_in == 8 and counts.accepted + counts.rejected == 8
    kept = {(r["key"], r["caption_kind"]) for r in accepted}
    assert kept == {
        ("000000001", "re_caption"),
        ("000000002", "re_caption"),
        ("000000003", "re_caption"),
        ("000000004", "org_caption"),
    }
    assert len(accepted) + len(rejected) == 8
    why = {(r["key"], r["caption_kind"]): r["reason"] for r in rejected}
    assert why[("000000001", "org_caption")] == reasons.TOO_FEW_WORDS
    assert why[("000000004", "re_caption")] == reasons.MISSING_CAPTION
    # ids: the chosen caption's row keeps the plain URL hash, the other hashes "<url>#org_caption"
    ids = {(r["key"], r["caption_kind"]): r["id"] for r in accepted}
    url1 = spark.range(1).select(F.xxhash64(F.lit(ROWS[0][0])).alias("h")).first()["h"]
    url4 = spark.range(1).select(F.xxhash64(F.lit(ROWS[3][0] + "#org_caption")).alias("h")).first()["h"]
    assert ids[("000000001", "re_caption")] == url1 and ids[("000000004", "org_caption")] == url4


def mixed_frame(spark, n):
    rows = [
        (i, f"http://m/{i}", f"recaption {i}", f"recaption {i}", f"original  {i}", jpeg_bytes(32, 32, seed=i % 5))
        for i in range(n)
    ]
    rows.append((n, f"http://m/{n}", "only the recaption", "only the recaption", "", jpeg_bytes(32, 32)))
    schema = "id long, url string, caption string, re_caption string, org_caption string, image binary"
    return spark.createDataFrame(rows, schema).withColumn("dump", F.lit("d"))


def exported_captions(folder):
    out = {}
    for shard in sorted(folder.glob("dump=d/*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    out[meta["id"]] = (meta["caption"], meta["caption_source"])
    return out


def test_caption_mix_is_deterministic_by_id_and_close_to_p(spark, tmp_path):
    frame = mixed_frame(spark, 1500)
    assert export.export_webdataset(frame, str(tmp_path / "a"), 500, caption_mix=0.3) == 1501
    first = exported_captions(tmp_path / "a")
    export.export_webdataset(frame.repartition(3), str(tmp_path / "b"), 500, caption_mix=0.3)
    assert exported_captions(tmp_path / "b") == first  # same picks whatever the partitioning
    picked = [src for i, (_, src) in first.items() if i < 1500]
    share = picked.count("re_caption") / len(picked)
    assert 0.26 < share < 0.34, share
    for i, (caption, src) in first.items():
        if i < 1500:
            expected = f"recaption {i}" if src == "re_caption" else f"original {i}"  # whitespace normalised
            assert caption == expected
    assert first[1500] == ("only the recaption", "re_caption")  # an empty original falls back
    export.export_webdataset(frame, str(tmp_path / "c"), 500, caption_mix=0.0)
    assert {src for i, (_, src) in exported_captions(tmp_path / "c").items() if i < 1500} == {"org_caption"}
    export.export_webdataset(frame, str(tmp_path / "d"), 500, caption_mix=1.0)
    assert {src for _, src in exported_captions(tmp_path / "d").values()} == {"re_caption"}


def test_caption_mix_refuses_without_recap_columns_or_out_of_range(spark, tmp_path):
    frame = mixed_frame(spark, 3)
    with pytest.raises(export.ExportError, match="org_caption"):
        export.export_webdataset(frame.drop("org_caption"), str(tmp_path / "x"), 10, caption_mix=0.5)
    with pytest.raises(export.ExportError, match="within"):
        export.export_webdataset(frame, str(tmp_path / "x"), 10, caption_mix=1.5)
    with pytest.raises(export.ExportError, match="recap_both"):
        export.export_webdataset(frame.withColumn("caption_kind", F.lit("re_caption")), str(tmp_path / "x"), 10, 0.5)
