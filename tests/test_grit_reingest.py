"""A released GRIT parquet re-filtered (its own spans and boxes) or re-grounded (a new parse), no detector."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import pipeline
from jobs.config import load_config
from jobs.errors import ConfigError
from schemas import reasons

pytestmark = pytest.mark.spark

CAPTION = "a wire hanger with a paper cover that reads we heart our customers"
# GRIT-20M's example row: caption, noun_chunks and ref_exps are the release's values verbatim;
# key, id, url, size and similarities are made up for the test (the release's example omits them).
HANGER = [0.019422357885505368, 0.027634161214033764, 0.9593302408854166, 0.969467560450236, 0.67520964]
COVER = [0.019644069503434333, 0.31054004033406574, 0.9622142865754519, 0.9603442351023356, 0.79298526]
PUBLISHED = {
    "key": "000000001",
    "clip_similarity_vitb32": 0.353,
    "clip_similarity_vitl14": 0.250,
    "id": 1795296605919,
    "url": "http://www.example.com/hanger.jpg",
    "caption": CAPTION,
    "width": 1000,
    "height": 1000,
    "noun_chunks": [[19, 32, *COVER], [0, 13, *HANGER]],
    "ref_exps": [[19, 66, *COVER], [0, 66, *HANGER]],
}
ROWS = [
    PUBLISHED,
    # both boxes between 0.65 and 0.7
    {
        **PUBLISHED,
        "id": 2,
        "noun_chunks": [[0, 13, 0.1, 0.1, 0.5, 0.5, 0.68]],
        "ref_exps": [[0, 66, 0.1, 0.1, 0.5, 0.5, 0.68]],
    },
    # an abstract noun chunk, and one entry that is not a box at all (too short)
    {
        **PUBLISHED,
        "id": 3,
        "caption": "the time of a red clock",
        "noun_chunks": [[0, 8, 0.1, 0.1, 0.5, 0.5, 0.9], [12, 23, 0.2, 0.2, 0.6, 0.6, 0.8], [1, 2]],
        "ref_exps": [[0, 23, 0.1, 0.1, 0.5, 0.5, 0.9], [12, 23, 0.2, 0.2, 0.6, 0.6, 0.8], [1, 2]],
    },
    # a chunk that appears twice (two boxes), the second overlapping the first (NMS)
    {
        **PUBLISHED,
        "id": 4,
        "caption": "a dog",
        "noun_chunks": [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9], [0, 5, 0.11, 0.1, 0.5, 0.5, 0.8]],
        "ref_exps": [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9], [0, 5, 0.11, 0.1, 0.5, 0.5, 0.8]],
    },
]
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("clip_similarity_vitb32", pa.float64()),
        ("clip_similarity_vitl14", pa.float64()),
        ("id", pa.int64()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("noun_chunks", pa.list_(pa.list_(pa.float64()))),
        ("ref_exps", pa.list_(pa.list_(pa.float64()))),
    ]
)


@pytest.fixture
def grit_parquet(tmp_path):
    path = tmp_path / "grit.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS, schema=SCHEMA), path)
    return path


def run(spark, path, out, *sets):
    argv = ["--input", str(path), "--output", str(out), "--input-format", "grit"]
    for s in sets:
        argv += ["--set", s]
    assert pipeline.main(argv) == 0
    accepted = {r["id"]: r for r in spark.read.parquet(f"{out}/accepted").collect()}
    has_rejects = any((out / "rejected").glob("dump=*/*.parquet"))
    rejected = {r["id"]: r for r in spark.read.parquet(f"{out}/rejected").collect()} if has_rejects else {}
    boxes = spark.read.parquet(f"{out}/boxes").collect()
    report = json.loads((out / "report" / "funnel.json").read_text())
    return accepted, rejected, boxes, report


def test_refilter_at_the_release_threshold_gives_the_release_back(spark, tmp_path, grit_parquet):
    # under the defaults: its two boxes overlap at IoU 0.688 and both stay (ground.nms_iou = 0.7)
    accepted, _, boxes, _ = run(spark, grit_parquet, tmp_path / "o", "run.stages=ground", "ground.grit_input=refilter")
    row = accepted[PUBLISHED["id"]]
    assert sorted(b["outcome"] for b in boxes if b["id"] == PUBLISHED["id"]) == ["kept", "kept"]
    assert row["noun_chunks"] == [[float(x) for x in e] for e in PUBLISHED["noun_chunks"]]
    assert row["ref_exps"] == [[float(x) for x in e] for e in PUBLISHED["ref_exps"]]
    assert row["source_width"] == 1000 and row["key"] == PUBLISHED["key"]


def test_refilter_with_a_stricter_threshold(spark, tmp_path, grit_parquet):
    accepted, rejected, boxes, report = run(
        spark, grit_parquet, tmp_path / "o", "run.stages=ground", "ground.grit_input=refilter", "ground.min_score=0.7"
    )
    row = accepted[PUBLISHED["id"]]
    assert row["noun_chunks"] == [[19.0, 32.0, *COVER]]
    assert row["ref_exps"] == [[19.0, 66.0, *COVER]]
    assert rejected[2]["reason"] == reasons.NO_GROUNDING and "below-score" in rejected[2]["detail"]
    # "the time" is abstract (its last word), "a red clock" kept, the 2-number entry a malformed box
    assert [e[:2] for e in accepted[3]["noun_chunks"]] == [[12.0, 23.0]]
    by_id = {}
    for b in boxes:
        by_id.setdefault(b["id"], []).append(b["outcome"] or b["reason"])
    assert sorted(by_id[3]) == ["abstract", "box-score-invalid", "kept"]
    # the same chunk twice: one box kept, the overlapping one suppressed
    assert sorted(by_id[4]) == ["kept", "suppressed"] and len(accepted[4]["noun_chunks"]) == 1
    assert report["boxes"]["boxes_in"] == sum(len(r["noun_chunks"]) for r in ROWS) == len(boxes)


def test_reground_parses_again_and_matches_the_release_boxes(spark, tmp_path, grit_parquet):
    accepted, _, boxes, _ = run(
        spark, grit_parquet, tmp_path / "o", "run.stages=text,ground", "ground.grit_input=reground"
    )
    row = accepted[PUBLISHED["id"]]
    # en_core_web_sm's chunks: "a paper cover" matches; it parses "a wire" where the release has "a wire hanger"
    assert [e[:2] for e in row["noun_chunks"]] == [[19.0, 32.0]]
    outcome = {(b["id"], b["start"], b["end"]): b["outcome"] for b in boxes}
    assert outcome[(PUBLISHED["id"], 0, 13)] == "unmatched"


def test_grit_input_config_is_checked():
    with pytest.raises(ConfigError, match="ground.grit_input"):
        load_config(sets=["run.stages=text,ground", "ground.grit_input=refilter"])
    with pytest.raises(ConfigError, match="one source of boxes"):
        load_config(sets=["run.stages=text,ground", "ground.grit_input=reground", "ground.boxes=/tmp"])
    with pytest.raises(ConfigError, match="ground.grit_input"):
        load_config(sets=["ground.grit_input=yes"])


def test_input_without_grit_columns_exits_2_before_the_stages(spark, tmp_path, capsys):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": 1, "url": "http://x/1", "caption": "a dog"}]), path)
    argv = ["--input", str(path), "--output", str(tmp_path / "o"), "--input-format", "grit"]
    assert pipeline.main([*argv, "--set", "run.stages=ground", "--set", "ground.grit_input=refilter"]) == 2
    assert "noun_chunks" in capsys.readouterr().err
