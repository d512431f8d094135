"""The score stage (jobs.stages.score) in local-mode Spark, and `winnow run --stages text,image,score` end to end.

Stage tests feed uniformly coloured JPEGs, so the expected scores come from
``onnx_factory.Models``' numpy reference (mean colour x weights), computed
without udfs.scorers; the expected rejects of each filter mode follow from
those numbers. A test plug-in (shipped to the workers with ``addPyFile``)
records, per Python worker, how often it was built and which batch sizes it
was called with.
"""

from __future__ import annotations

import io
import json
import os
import random
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_server import serve
from onnx_factory import Models, build_models
from PIL import Image
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, DoubleType, LongType, StringType, StructField, StructType
from test_pipeline import assert_conserved, read_funnel

from jobs import cli
from jobs.config import load_config
from jobs.session import session_conf
from jobs.stage import count_stage
from jobs.stages.score import (
    ScoreError,
    gpu_profile,
    prepare_scorers,
    scorer_specs,
    similarity_cutoff,
    split_score,
    with_rule_columns,
    with_score_verdicts,
    with_scores,
)
from schemas import reasons
from udfs import scorers

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

WORDS = "a red car blue sky photo of the cat green field dog on grass house street tree".split()
N = 30
JUNK, NO_BYTES = 900, 901
INPUT = StructType(
    [
        StructField("id", LongType()),
        StructField("url", StringType()),
        StructField("caption", StringType()),
        StructField("dump", StringType()),
        StructField("image", BinaryType()),
        StructField("note", StringType()),
    ]
)
PLUGIN_MODULE = "winnow_test_score_plugins"
PLUGIN_SOURCE = textwrap.dedent(
    '''
    """Test scorer plug-ins for tests/test_score_stage.py, shipped to the workers with addPyFile."""
    import os
    import time

    import numpy as np
    from pyspark import TaskContext


    class Counting:
        columns = ["clip_similarity_plug", "nsfw_score_plug"]

        def __init__(self, log_dir):
            self.log_dir = log_dir
            with open(os.path.join(log_dir, f"load-{os.getpid()}-{time.monotonic_ns()}"), "w"):
                pass

        def __call__(self, images, captions):
            ctx = TaskContext.get()
            part = ctx.partitionId() if ctx is not None else -1
            with open(os.path.join(self.log_dir, f"calls-{os.getpid()}.txt"), "a") as f:
                f.write(f"{part} {len(images)}\\n")
            if any("boom" in c for c in captions):
                raise RuntimeError("boom: the scorer broke on this row")
            sim = np.array([np.asarray(img, dtype=float).mean() / 255.0 for img in images])
            nsfw = np.array([np.nan if "nanword" in c else 0.1 for c in captions])
            return {"clip_similarity_plug": sim, "nsfw_score_plug": nsfw}


    def counting(log_dir, device=None):
        return Counting(log_dir)
    '''
)


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def decoded_mean(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return build_models(tmp_path_factory.mktemp("score-models"), WORDS, seed=3)


@pytest.fixture(scope="module")
def rows() -> list[tuple]:
    rng = random.Random(7)
    out = []
    for i in range(N):
        colour = tuple(rng.randrange(256) for _ in range(3))
        caption = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 7)))
        out.append((i, f"http://x/{i}", caption, "d1", jpeg(colour), "scene"))  # type: ignore[arg-type]
    out.append((JUNK, "http://x/junk", "a red car", "d1", b"\xff\xd8 not really a jpeg" * 50, "junk"))
    out.append((NO_BYTES, "http://x/none", "a red car", "d1", None, "no-bytes"))
    return out


@pytest.fixture(scope="module")
def reference(models: Models, rows: list[tuple]) -> dict[int, dict[str, float]]:
    """Per scene id: similarity and NSFW score from the numpy reference."""
    ref = {}
    for i, _, caption, _, data, _ in rows:
        if data is not None and i < N:
            mean = decoded_mean(data)
            ref[i] = {"sim": models.similarity(mean, caption), "nsfw": models.nsfw_score(mean)}
    return ref


def model_sets(m: Models, name: str = "t") -> list[str]:
    return [
        f"score.clip_name={name}",
        f"score.clip_image_model={m.image}",
        f"score.clip_text_model={m.text}",
        f"score.clip_tokenizer={m.tokenizer}",
        f"score.nsfw_name={name}",
        f"score.nsfw_model={m.nsfw}",
    ]


def run_stage(spark: Any, pairs: Any, sets: list[str]) -> dict[str, Any]:
    """What jobs.pipeline does for the score stage, collected."""
    cfg = load_config(sets=sets).score
    scoring = with_rule_columns(prepare_scorers(spark, cfg), cfg, pairs.columns)
    scored = with_scores(pairs, scoring, cfg).persist()
    try:
        with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_size)}):
            cutoff = similarity_cutoff(scored, scoring, cfg)
            annotated = with_score_verdicts(scored, scoring, cfg, cutoff)
            counts = count_stage("score", pairs.count(), annotated)
            accepted, rejected = split_score(annotated, scoring, pairs.columns)
            out = {
                "cutoff": cutoff,
                "counts": counts,
                "rows": {r["id"]: r.asDict() for r in annotated.drop("image").collect()},
                "accepted": accepted,
                "accepted_ids": {r["id"] for r in accepted.select("id").collect()},
                "rejected": {
                    r["id"]: (r["stage"], r["reason"]) for r in rejected.select("id", "stage", "reason").collect()
                },
                "scoring": scoring,
            }
    finally:
        scored.unpersist()
    return out


@pytest.fixture(scope="module")
def pairs(spark: Any, rows: list[tuple]) -> Any:
    return spark.createDataFrame(rows, INPUT).repartition(3)


@pytest.fixture(scope="module")
def plain(spark: Any, pairs: Any, models: Models) -> dict[str, Any]:
    """CLIP + NSFW with the defaults: only NSFW >= 0.5 and failures are rejected."""
    return run_stage(spark, pairs, model_sets(models) + ["score.batch_size=4"])


# --- scores and the default filter -----------------------------------------------------------------


def test_scores_match_the_reference(plain: dict, reference: dict) -> None:
    for i, ref in reference.items():
        row = plain["rows"][i]
        assert row["clip_similarity_t"] == pytest.approx(ref["sim"], abs=2e-3), i
        assert row["nsfw_score_t"] == pytest.approx(ref["nsfw"], abs=2e-3), i


def test_unscorable_rows_are_score_failed(plain: dict) -> None:
    junk, none = plain["rows"][JUNK], plain["rows"][NO_BYTES]
    assert junk["reason"] == none["reason"] == reasons.SCORE_FAILED
    assert junk["detail"].startswith("image undecodable") and none["detail"].startswith("no image bytes")
    assert junk["clip_similarity_t"] is None and none["nsfw_score_t"] is None


def test_nsfw_filter_is_coyos(plain: dict, reference: dict) -> None:
    margin = [i for i, r in reference.items() if abs(r["nsfw"] - 0.5) < 2e-3]
    expected_nsfw = {i for i, r in reference.items() if r["nsfw"] >= 0.5} - set(margin)
    got_nsfw = {i for i, r in plain["rows"].items() if r["reason"] == reasons.SCORE_NSFW}
    assert expected_nsfw and got_nsfw - set(margin) == expected_nsfw
    assert all(plain["rows"][i]["detail"].startswith("nsfw_score_t=") for i in got_nsfw)
    assert plain["accepted_ids"] == set(reference) - got_nsfw


def test_conservation_schema_and_rejects(plain: dict, rows: list[tuple]) -> None:
    c = plain["counts"]
    assert c.rows_in == len(rows) == c.accepted + c.rejected
    assert set(c.reasons) <= set(reasons.REASONS[reasons.SCORE])
    assert all(stage == reasons.SCORE for stage, _ in plain["rejected"].values())
    assert len(plain["rejected"]) == c.rejected
    schema = plain["accepted"].schema
    assert schema.fieldNames()[:6] == ["id", "url", "caption", "dump", "image", "note"]
    assert schema["clip_similarity_t"].dataType == DoubleType() and schema["nsfw_score_t"].dataType == DoubleType()
    assert "reason" not in schema.fieldNames()


# --- the similarity filters: absolute and top fraction ----------------------------------------------


def test_min_similarity(spark: Any, pairs: Any, models: Models, reference: dict) -> None:
    sims = sorted(r["sim"] for r in reference.values())
    gaps = [(b - a, (a + b) / 2) for a, b in zip(sims, sims[1:], strict=False)]
    _, threshold = max(gaps[len(gaps) // 4 : 3 * len(gaps) // 4])  # the widest gap in the middle half
    out = run_stage(
        spark, pairs, model_sets(models) + ["score.max_nsfw_score=1.0", f"score.min_similarity={threshold}"]
    )
    low = {i for i, r in reference.items() if r["sim"] < threshold}
    assert low and low != set(reference)
    got = {i for i, r in out["rows"].items() if r["reason"] == reasons.SCORE_LOW_SIMILARITY}
    assert got == low
    assert out["accepted_ids"] == set(reference) - low


def test_top_fraction(spark: Any, pairs: Any, models: Models, reference: dict) -> None:
    p = 0.4
    sets = model_sets(models) + ["score.max_nsfw_score=1.0", f"score.top_fraction={p}"]
    out = run_stage(spark, pairs, sets + ["score.quantile_relative_error=0"])
    kept = out["accepted_ids"]
    below = {i for i, r in out["rows"].items() if r["reason"] == reasons.SCORE_BELOW_QUANTILE}
    assert kept | below == set(reference)  # the two unscorable rows are score-failed, not ranked
    assert int(p * len(reference)) - 1 <= len(kept) <= int(p * len(reference)) + 2
    # the kept rows are the most similar ones (by the reference, up to its tolerance)
    assert min(reference[i]["sim"] for i in kept) >= max(reference[i]["sim"] for i in below) - 2e-3
    assert out["cutoff"] is not None
    assert all(out["rows"][i]["detail"].endswith(f"(top {p:g})") for i in below)


def test_filters_apply_in_order(spark: Any, pairs: Any, models: Models, reference: dict) -> None:
    """NSFW first, then the absolute minimum, then the quantile: each row gets the first it fails."""
    sets = model_sets(models) + ["score.min_similarity=0.0", "score.top_fraction=0.5"]
    out = run_stage(spark, pairs, sets)
    for i, ref in reference.items():
        reason = out["rows"][i]["reason"]
        if ref["nsfw"] >= 0.5 + 2e-3:
            assert reason == reasons.SCORE_NSFW, i
        elif ref["nsfw"] < 0.5 - 2e-3 and ref["sim"] < -2e-3:
            assert reason == reasons.SCORE_LOW_SIMILARITY, i


# --- batching and one load per worker (a plug-in that writes down what it sees) -----------------------


@pytest.fixture(scope="module")
def plugin(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("score-plugins")
    (folder / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    spark.sparkContext.addPyFile(str(folder / f"{PLUGIN_MODULE}.py"))
    return f"{PLUGIN_MODULE}:counting"


def test_batches_of_batch_size_and_one_load_per_worker(spark: Any, plugin: str, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    parts, per_part, batch = 6, 10, 4
    data = [(i, "u", f"a red car {i}", "d1", jpeg((i * 8 % 256, 40, 90)), "scene") for i in range(parts * per_part)]
    frame = spark.createDataFrame(data, INPUT).repartitionByRange(parts, "id")
    sets = [f"score.plugin={plugin}", f"score.plugin_options=log_dir={log_dir}", f"score.batch_size={batch}"]
    out = run_stage(spark, frame, sets)
    assert out["counts"].accepted == parts * per_part
    worker_pids = {int(p.name.split("-")[1]) for p in log_dir.glob("load-*")} - {os.getpid()}
    loads = [p.name.split("-")[1] for p in log_dir.glob("load-*")]
    assert all(loads.count(str(pid)) == 1 for pid in worker_pids), loads  # one load per worker
    calls: dict[int, list[int]] = {}
    partitions_per_pid: dict[int, set[int]] = {}
    for f in log_dir.glob("calls-*.txt"):
        pid = int(f.stem.split("-")[1])
        if pid == os.getpid():
            continue  # the driver's probe
        assert pid in worker_pids
        for line in f.read_text().split("\n"):
            if line:
                part, size = map(int, line.split())
                calls.setdefault(part, []).append(size)
                partitions_per_pid.setdefault(pid, set()).add(part)
    # every task's rows reached the scorer in batches of score.batch_size (the last one smaller);
    # count_stage and split each run the persisted frame once: each partition scored once
    assert sorted(calls) == list(range(parts))
    for sizes in calls.values():
        assert sorted(sizes, reverse=True) == [batch, batch, per_part - 2 * batch], calls
    # the workers were reused across tasks, so "one load per worker" means something
    assert max(len(s) for s in partitions_per_pid.values()) >= 2, partitions_per_pid


def test_plugin_failures_cost_their_rows_only(spark: Any, plugin: str, tmp_path: Path) -> None:
    data = [(i, "u", "a red car", "d1", jpeg((10 * i, 20, 30)), "scene") for i in range(8)]
    data += [
        (100, "u", "a boom box", "d1", jpeg((1, 2, 3)), "boom"),
        (101, "u", "nanword", "d1", jpeg((1, 2, 3)), "nan"),
    ]
    frame = spark.createDataFrame(data, INPUT).coalesce(1)
    out = run_stage(spark, frame, [f"score.plugin={plugin}", f"score.plugin_options=log_dir={tmp_path}"])
    assert out["rows"][100]["reason"] == reasons.SCORE_FAILED and "boom" in out["rows"][100]["detail"]
    assert out["rows"][101]["detail"] == "nsfw_score_plug is nan (not a finite number)"
    assert out["accepted_ids"] == set(range(8))
    assert out["scoring"].similarity_column == "clip_similarity_plug"


# --- model files shipped with addFile; a source column of the same name ------------------------------


def test_uri_model_paths_are_shipped_with_addfile(spark: Any, pairs: Any, models: Models, reference: dict) -> None:
    unique = models.folder / f"nsfw-{uuid.uuid4().hex[:8]}.onnx"
    unique.write_bytes(models.nsfw.read_bytes())
    sets = ["score.nsfw_name=shipped", f"score.nsfw_model=file://{unique}"]
    out = run_stage(spark, pairs, sets)
    for i, ref in reference.items():
        assert out["rows"][i]["nsfw_score_shipped"] == pytest.approx(ref["nsfw"], abs=2e-3)
    assert spark.sparkContext.listFiles and any(unique.name in f for f in spark.sparkContext.listFiles)


def test_a_source_score_column_is_carried_as_source(spark: Any, models: Models) -> None:
    data = [(1, "u", "a red car", "d1", jpeg((200, 10, 10)), "scene", 0.99)]
    schema = StructType(INPUT.fields + [StructField("nsfw_score_t", DoubleType())])
    out = run_stage(spark, spark.createDataFrame(data, schema), model_sets(models) + ["score.max_nsfw_score=1.0"])
    accepted = out["accepted"].collect()[0]
    assert accepted["source_nsfw_score_t"] == 0.99 and accepted["nsfw_score_t"] != 0.99


# --- GPU: the resource profile (stage-level scheduling cannot run in local mode) ----------------------


def test_gpu_profile_asks_for_the_configured_gpus(spark: Any) -> None:
    assert gpu_profile(load_config().score) is None
    profile = gpu_profile(load_config(sets=["score.gpu_amount=0.5"]).score)
    assert profile.taskResources["gpu"].amount == 0.5 and profile.executorResources == {}
    sets = ["score.gpu_amount=1", "score.gpu_executor_amount=2", "score.gpu_discovery_script=/opt/gpus.sh"]
    executor = gpu_profile(load_config(sets=sets).score).executorResources["gpu"]
    assert (executor.amount, executor.discoveryScript) == (2, "/opt/gpus.sh")


def test_gpu_in_local_mode_is_refused_at_start(spark: Any, models: Models) -> None:
    with pytest.raises(ScoreError, match="not in local mode"):
        prepare_scorers(spark, load_config(sets=[f"score.nsfw_model={models.nsfw}", "score.gpu_amount=1"]).score)


# --- the job: errors at start, before any data is read; end to end through the CLI -------------------


@pytest.mark.parametrize(
    "model, message",
    [
        ("missing", "score.nsfw_model: model file not found"),
        ("corrupt", "is not a loadable ONNX model"),
        ("wrong_shape", "output has shape (2, 3), expected (2,), (2, 1) or (2, 2)"),
    ],
)
def test_bad_model_stops_the_job_before_reading_data(
    spark: Any, models: Models, tmp_path: Path, capsys: pytest.CaptureFixture, model: str, message: str
) -> None:
    path = models.folder / "absent.onnx" if model == "missing" else getattr(models, model)
    bad_input = tmp_path / "input.parquet"
    bad_input.write_bytes(b"not parquet: reading this fails differently")
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    argv = ["run", "--input", str(bad_input), "--output", str(tmp_path / "out"), "--stages", "text,image,score"]
    argv += ["--set", "image.keep_bytes=true", "--set", f"score.nsfw_model={path}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "score.nsfw_model" in err
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup()) == jobs_before  # no Spark job ran
    assert not (tmp_path / "out").exists()


CAPTIONS = [
    "a red car parked on the street in front of the house",
    "a dog running on the green grass in the park",
    "the blue sky over a field of green grass and a tree",
    "a photo of the cat sleeping on the sofa at home",
    "an old house on a quiet street with a tree",
    "a small dog and a cat on the grass in the garden",
    "a red car driving on the street under a blue sky",
]
IMAGES = ["good.jpg", "good.png", "photo.webp", "portrait.png", "cmyk.jpg", "exif-rotated.jpg", "palette.png"]


def test_winnow_run_text_image_score_end_to_end(spark: Any, models: Models, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with serve() as server:
        k = uuid.uuid4().hex[:8]
        rows = [
            {"url": server.url(f"/img/{name}", k=f"{k}{i}"), "caption": c}
            for i, (name, c) in enumerate(zip(IMAGES, CAPTIONS, strict=True))
        ]
        rows.append({"url": server.url("/img/small.png", k=k), "caption": "a small red car on the street at night"})
        listing = tmp_path / "list.parquet"
        pq.write_table(pa.Table.from_pylist(rows), listing)
        out = tmp_path / "out"
        argv = ["run", "--input", str(listing), "--output", str(out), "--stages", "text,image,score"]
        argv += ["--allow-network", "127.0.0.1/32", "--set", "image.keep_bytes=true"]
        for item in model_sets(models, "e2e") + ["score.batch_size=3", "score.max_nsfw_score=0.6"]:
            argv += ["--set", item]
        assert cli.main(argv) == 0
    funnel = read_funnel(out)
    assert [s["stage"] for s in funnel["stages"]] == ["ingest", "text", "image", "score"]
    assert_conserved(spark, out, funnel)
    image_stage, score_stage = funnel["stages"][2], funnel["stages"][3]
    assert set(image_stage["reasons"]) <= {reasons.LOW_RESOLUTION}
    assert score_stage["rows_in"] == image_stage["accepted"] >= 4
    assert funnel["score"]["columns"] == ["clip_similarity_e2e", "nsfw_score_e2e"]
    # every scored row: its columns are what the scorers give for its own kept image and caption
    accepted = spark.read.parquet(str(out / "accepted")).collect()
    rejected = spark.read.parquet(str(out / "rejected")).filter(F.col("stage") == "score").collect()
    assert len(accepted) + len(rejected) == score_stage["rows_in"]
    clip = scorers.get_scorer(scorer_specs(load_config(sets=model_sets(models, "e2e")).score)[0])
    for row in accepted:
        expected = scorers.score_batch([("clip", clip)], [row["image"]], [row["caption"]])
        assert row["clip_similarity_e2e"] == pytest.approx(expected.values["clip_similarity_e2e"][0], abs=1e-6)
        assert row["nsfw_score_e2e"] < 0.6
    assert all(r["reason"] == reasons.SCORE_NSFW for r in rejected)
    assert score_stage["reasons"] == ({reasons.SCORE_NSFW: len(rejected)} if rejected else {})
    report = json.loads((out / "report" / "funnel.json").read_text())
    assert report["config"]["score"]["nsfw_name"] == "e2e"
