"""The score stage on the scores a release already ships (no model), and the aesthetic / watermark rules.

COYO-700M ships clip_similarity_vitb32, nsfw_score_opennsfw2, nsfw_score_gantman,
aesthetic_score_laion_v2 and watermark_score; LAION ships similarity. The rules
read them as they are (udfs/score_filters.py), at their boundaries: a floor keeps
a score equal to it, a ceiling rejects one equal to it, NaN fails, null passes.
A computed aesthetic / watermark score (an ONNX model) meets the same rules.
"""

from __future__ import annotations

import io
import math
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_server import serve
from onnx_factory import Models, build_models
from PIL import Image
from pyspark.sql.types import BinaryType, DoubleType, LongType, StringType, StructField, StructType
from test_pipeline import assert_conserved, read_funnel

from jobs import cli
from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.stage import count_stage
from jobs.stages.score import (
    ScoreError,
    prepare_scorers,
    similarity_cutoff,
    split_score,
    with_rule_columns,
    with_score_verdicts,
    with_scores,
)
from schemas import reasons

pytestmark = pytest.mark.spark

COYO = StructType(
    [
        StructField("id", LongType()),
        StructField("url", StringType()),
        StructField("caption", StringType()),
        StructField("dump", StringType()),
        StructField("clip_similarity_vitb32", DoubleType()),
        StructField("aesthetic_score_laion_v2", DoubleType()),
        StructField("watermark_score", DoubleType()),
        StructField("nsfw_score_opennsfw2", DoubleType()),
    ]
)
RULES_ON = ["score.min_similarity=0.28", "score.min_aesthetic=5", "score.max_watermark=0.8"]


def judge(spark: Any, frame: Any, sets: list[str]) -> dict[str, Any]:
    """The score stage's annotate and split over ``frame``, as the pipeline runs them, collected."""
    cfg = load_config(sets=["run.stages=score", *sets]).score
    scoring = with_rule_columns(prepare_scorers(spark, cfg), cfg, frame.columns)
    scored = with_scores(frame, scoring, cfg)
    cutoff = similarity_cutoff(scored, scoring, cfg)
    annotated = with_score_verdicts(scored, scoring, cfg, cutoff)
    counts = count_stage("score", frame.count(), annotated)  # raises on a lost or doubled row
    accepted, rejected = split_score(annotated, scoring, frame.columns)
    return {
        "rows": {r["id"]: (r["reason"], r["detail"]) for r in annotated.collect()},
        "accepted": accepted,
        "rejected": rejected,
        "counts": counts,
        "cutoff": cutoff,
        "scoring": scoring,
    }


def coyo_row(i: int, sim=0.3, aesthetic=5.5, watermark=0.1, nsfw=0.1) -> tuple:
    return (i, f"http://x/{i}.jpg", f"caption {i}", "d1", sim, aesthetic, watermark, nsfw)


def test_rules_on_input_columns_at_their_boundaries(spark: Any) -> None:
    rows = [
        coyo_row(1, sim=0.28, aesthetic=5.0, watermark=0.7999),  # every floor met exactly, ceiling not reached
        coyo_row(2, sim=0.2799),
        coyo_row(3, aesthetic=4.999),
        coyo_row(4, watermark=0.8),  # a ceiling rejects its own value
        coyo_row(5, nsfw=0.5),
        coyo_row(6, sim=math.nan),
        coyo_row(7, aesthetic=math.nan),
        coyo_row(8, sim=None, aesthetic=None, watermark=None, nsfw=None),  # no score is no reject
        coyo_row(9, nsfw=0.6, sim=0.1, watermark=0.9),  # the first rule failed is the reason
        coyo_row(10, watermark=0.9, aesthetic=1.0, sim=0.1),
        coyo_row(11, aesthetic=1.0, sim=0.1),
    ]
    got = judge(spark, spark.createDataFrame(rows, COYO), RULES_ON)
    reason = {i: r for i, (r, _) in got["rows"].items()}
    assert reason == {
        1: None,
        2: reasons.SCORE_LOW_SIMILARITY,
        3: reasons.SCORE_LOW_AESTHETIC,
        4: reasons.SCORE_WATERMARK,
        5: reasons.SCORE_NSFW,
        6: reasons.SCORE_LOW_SIMILARITY,
        7: reasons.SCORE_LOW_AESTHETIC,
        8: None,
        9: reasons.SCORE_NSFW,
        10: reasons.SCORE_WATERMARK,
        11: reasons.SCORE_LOW_AESTHETIC,
    }
    assert got["rows"][2][1] == "clip_similarity_vitb32=0.2799 < 0.28"
    assert got["rows"][4][1] == "watermark_score=0.8000 >= 0.8"
    assert got["rows"][5][1] == "nsfw_score_opennsfw2=0.5000 >= 0.5"
    assert got["rows"][6][1] == "clip_similarity_vitb32=NaN < 0.28"
    # no model: the input's columns are the ones read, carried as they are (not renamed source_*)
    scoring = got["scoring"]
    assert scoring.specs == () and scoring.similarity_column == "clip_similarity_vitb32"
    assert scoring.aesthetic_column == "aesthetic_score_laion_v2" and scoring.watermark_column == "watermark_score"
    assert got["accepted"].columns == COYO.fieldNames()
    assert got["counts"].accepted == 2 and got["counts"].rejected == 9


def test_the_rules_are_off_by_default_but_nsfw(spark: Any) -> None:
    rows = [coyo_row(1, sim=-0.5, aesthetic=0.5, watermark=0.99), coyo_row(2, nsfw=0.5)]
    got = judge(spark, spark.createDataFrame(rows, COYO), [])
    assert {i: r for i, (r, _) in got["rows"].items()} == {1: None, 2: reasons.SCORE_NSFW}


def test_top_fraction_on_an_input_column(spark: Any) -> None:
    rows = [coyo_row(i, sim=i / 100) for i in range(100)]
    sets = ["score.top_fraction=0.3", "score.quantile_relative_error=0"]
    got = judge(spark, spark.createDataFrame(rows, COYO).repartition(3), sets)
    kept = {i for i, (r, _) in got["rows"].items() if r is None}
    # the exact 0.7 quantile of 0.00 .. 0.99 (Spark's: the value of rank ceil(0.7 n)) and every row at or above it
    assert got["cutoff"] == pytest.approx(0.69) and kept == set(range(69, 100))
    assert all(d.endswith("(top 0.3)") for r, d in got["rows"].values() if r == reasons.SCORE_BELOW_QUANTILE)


def test_laions_similarity_column_by_name_even_as_text(spark: Any) -> None:
    # LAION's parquet names it "similarity"; from a CSV it arrives as a string
    schema = "id long, url string, caption string, dump string, similarity string"
    rows = [(1, "u", "c", "d1", "0.31"), (2, "u", "c", "d1", "0.2799"), (3, "u", "c", "d1", None)]
    got = judge(spark, spark.createDataFrame(rows, schema), ["score.similarity_column=similarity", RULES_ON[0]])
    assert {i: r for i, (r, _) in got["rows"].items()} == {1: None, 2: reasons.SCORE_LOW_SIMILARITY, 3: None}


@pytest.mark.parametrize(
    ("sets", "columns", "message"),
    [
        (["score.min_similarity=0.28"], ["id", "caption"], "score.similarity_column: no column is named or found"),
        (
            ["score.min_similarity=0.28", "score.similarity_column=similarity"],
            ["id", "clip_similarity_vitb32"],
            "score.similarity_column: 'similarity' is neither scored nor in the input",
        ),
        # two candidates and none named: which one is meant is the user's call
        (["score.top_fraction=0.5"], ["clip_similarity_vitb32", "clip_similarity_vitl14"], "score.similarity_column"),
        (["score.min_aesthetic=5"], ["id"], "score.aesthetic_column"),
        (["score.max_watermark=0.8", "score.watermark_column=pwatermark"], ["watermark_score"], "'pwatermark'"),
        ([], ["id", "url", "caption"], "score: no scorer is configured"),
    ],
)
def test_a_rule_without_its_column_stops_before_data_is_read(
    spark: Any, sets: list[str], columns: list[str], message: str
) -> None:
    cfg = load_config(sets=["run.stages=score", *sets]).score
    with pytest.raises(ScoreError, match=message.replace("*", r"\*")):
        with_rule_columns(prepare_scorers(spark, cfg), cfg, columns)


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["score.min_aesthetic=-1"], "score.min_aesthetic"),
        (["score.min_aesthetic=10.5"], "score.min_aesthetic"),
        (["score.max_watermark=1.5"], "score.max_watermark"),
        (["score.similarity_column=clip similarity"], "score.similarity_column"),
        (['score.watermark_column=""'], "score.watermark_column"),
        # a model needs the kept images: the image stage with keep_bytes
        (["run.stages=text,score", "score.nsfw_model=/m.onnx"], "image.keep_bytes"),
        (["run.stages=text,image,score", "score.nsfw_model=/m.onnx"], "image.keep_bytes"),
    ],
)
def test_score_config_is_checked(sets: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(sets=sets)
    assert str(info.value).startswith(f"{key}:"), str(info.value)


def test_without_a_model_the_score_stage_needs_no_image_stage() -> None:
    cfg = load_config(sets=["run.stages=text,score", "score.min_similarity=0.28"])
    assert cfg.run.stages == ("text", "score") and not cfg.score.has_models


# --- a COYO parquet through `winnow run --stages text,score`: nothing is fetched -------------------------------------

CAPTIONS = [
    "a photograph of a wooden chair standing next to an open window in a sunny kitchen",
    "a small brown dog sleeping on a blue blanket in front of the fireplace at home",
    "an old red bicycle leaning against a brick wall on a quiet street in the city",
    "a bowl of fresh green apples on a white table in the morning light",
    "a sailing boat on a calm lake with mountains and pine trees behind it",
    "a cup of hot coffee beside an open book on a rainy afternoon",
]
# (similarity, nsfw) per caption: kept, kept at 0.28, low similarity, nsfw, kept, low similarity
SCORES = [(0.35, 0.01), (0.28, 0.02), (0.2799, 0.03), (0.33, 0.7), (0.31, None), (0.1, 0.0)]


def test_coyo_parquet_text_and_score_fetches_nothing(spark: Any, tmp_path: Path) -> None:
    with serve() as server:
        k = uuid.uuid4().hex[:8]
        rows = [
            {
                "id": 1000 + i,
                "url": server.url(f"/img/good.jpg?k={k}{i}"),
                "text": caption,
                "width": 640,
                "height": 480,
                "clip_similarity_vitb32": sim,
                "clip_similarity_vitl14": sim - 0.05,
                "nsfw_score_opennsfw2": nsfw,
                "watermark_score": 0.1,
                "aesthetic_score_laion_v2": 5.2,
            }
            for i, (caption, (sim, nsfw)) in enumerate(zip(CAPTIONS, SCORES, strict=True))
        ]
        coyo = tmp_path / "coyo.parquet"
        pq.write_table(pa.Table.from_pylist(rows), coyo)
        out = tmp_path / "out"
        argv = ["run", "--input", str(coyo), "--output", str(out), "--input-format", "coyo"]
        argv += ["--stages", "text,score", "--allow-network", "127.0.0.1/32"]
        argv += ["--set", "score.similarity_column=clip_similarity_vitb32", "--set", "score.min_similarity=0.28"]
        assert cli.main(argv) == 0
        assert server.hits() == [], "the score stage on the input's columns fetched an image"
    funnel = read_funnel(out)
    assert_conserved(spark, out, funnel)
    assert [s["stage"] for s in funnel["stages"]] == ["ingest", "text", "score"]
    score = funnel["stages"][2]
    assert score["rows_in"] == len(CAPTIONS), funnel["stages"][1]
    assert score["reasons"] == {reasons.SCORE_LOW_SIMILARITY: 2, reasons.SCORE_NSFW: 1}
    accepted = {r["id"]: r for r in spark.read.parquet(str(out / "accepted")).collect()}
    assert set(accepted) == {1000, 1001, 1004}
    assert accepted[1001]["clip_similarity_vitb32"] == 0.28  # carried as it is, not renamed source_*
    assert funnel["score"]["rules_read"]["similarity"] == "clip_similarity_vitb32"


# --- computed aesthetic and watermark scores meet the same rules -----------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return build_models(tmp_path_factory.mktemp("score-columns-models"), ["red", "car"], seed=5)


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_computed_aesthetic_and_watermark_scores_are_filtered(spark: Any, models: Models) -> None:
    # the factory's classifier stands in for both models: its score is a known function of the image
    schema = StructType(
        [
            StructField("id", LongType()),
            StructField("url", StringType()),
            StructField("caption", StringType()),
            StructField("dump", StringType()),
            StructField("image", BinaryType()),
        ]
    )
    colours = [(i * 13 % 256, i * 29 % 256, i * 71 % 256) for i in range(24)]
    frame = spark.createDataFrame([(i, "u", "a red car", "d1", jpeg(c)) for i, c in enumerate(colours)], schema)
    models_on = [
        "run.stages=image,score",
        "image.keep_bytes=true",
        f"score.aesthetic_model={models.nsfw}",
        "score.aesthetic_name=t",
        f"score.watermark_model={models.nsfw}",
        "score.watermark_normalize=clip",
    ]
    plain = judge(spark, frame, models_on)
    scores = {r["id"]: r["aesthetic_score_t"] for r in plain["accepted"].collect()}
    assert len(scores) == len(colours)
    ranked = sorted(scores.values())
    floor = (ranked[7] + ranked[8]) / 2  # 8 below it
    ceiling = (ranked[15] + ranked[16]) / 2  # 8 at or above it
    got = judge(spark, frame, [*models_on, f"score.min_aesthetic={floor}", f"score.max_watermark={ceiling}"])
    reason = {i: r for i, (r, _) in got["rows"].items()}
    assert {i for i, r in reason.items() if r == reasons.SCORE_WATERMARK} == {
        i for i, s in scores.items() if s >= ceiling
    }
    assert {i for i, r in reason.items() if r == reasons.SCORE_LOW_AESTHETIC} == {
        i for i, s in scores.items() if s < floor
    }
    assert got["scoring"].aesthetic_column == "aesthetic_score_t"
    assert got["scoring"].watermark_column == "watermark_score"
