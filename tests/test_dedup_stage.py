"""The dedup stage (jobs.stages.dedup) in local-mode Spark: pairs, skew, blocklists, history, and the pipeline.

Near-duplicate grouping and the banded join's recall are in test_near_duplicates.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs import pipeline
from jobs.stages.dedup import HISTORY, DedupConfig, phash_long, split_dedup, with_dedup_verdicts
from schemas import reasons
from udfs.hamming import int_to_phash, phash_to_int

pytestmark = pytest.mark.spark

SCHEMA = "id long, url string, caption string, dump string, image_phash string"
PAIRS_ONLY = DedupConfig(history=False)


def h(n: int) -> str:
    """A pHash far from every other h(m): n spread over all 64 bits."""
    return int_to_phash((n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))


def verdicts(spark, rows, cfg=PAIRS_ONLY, **kw) -> dict[int, tuple[str | None, str | None]]:
    df = spark.createDataFrame(rows, SCHEMA)
    annotated = with_dedup_verdicts(df, cfg, **kw)
    out = {r["id"]: (r["reason"], r["detail"]) for r in annotated.collect()}
    assert len(out) == len(rows) == annotated.count(), "every row exactly once"
    return out


def test_pair_winner_is_the_earliest_dump_then_the_smallest_id(spark):
    rows = [
        (5, "u5", "a red bike", "2026-02", h(1)),
        (9, "u9", "a red bike", "2026-01", h(1)),  # earlier dump beats smaller id
        (7, "u7", "A Red Bike", "2026-01", h(1)),  # captions compare in lower case
        (3, "u3", "a blue bike", "2026-02", h(1)),  # another caption: another pair
        (4, "u4", "a red bike", "2026-02", h(2)),  # another image: another pair
    ]
    got = verdicts(spark, rows)
    assert got[7] == (None, None)
    assert got[9] == (reasons.DUPLICATE_PAIR, "duplicate of id 7 (dump 2026-01)")
    assert got[5] == (reasons.DUPLICATE_PAIR, "duplicate of id 7 (dump 2026-01)")
    assert got[3] == got[4] == (None, None)


def test_invalid_phashes_are_rejected_not_grouped(spark):
    rows = [
        (1, "u", "a cat", "d", None),
        (2, "u", "a cat", "d", "ABCDEF0123456789"),  # upper case is not what the image stage writes
        (3, "u", "a cat", "d", "123"),
        (4, "u", "a cat", "d", "zzzzzzzzzzzzzzzz"),
        (5, "u", "a cat", "d", h(1)),
    ]
    got = verdicts(spark, rows)
    assert {i for i, (r, _) in got.items() if r == reasons.PHASH_INVALID} == {1, 2, 3, 4}
    assert got[1][1] == "image_phash=null" and got[3][1] == "image_phash=123"
    assert got[5] == (None, None)


def test_one_hash_shared_by_many_rows_is_aggregated_not_windowed(spark):
    """Skew: 40,000 copies of one pair and 2,000 distinct ones; one winner, and no Window in the plan
    (a window would sort the whole hot group in one task)."""
    hot = spark.range(40_000).select(
        (F.col("id") + 1000).alias("id"),
        F.lit("u").alias("url"),
        F.lit("the same stock photo").alias("caption"),
        F.when(F.col("id") % 2 == 0, "d1").otherwise("d2").alias("dump"),
        F.lit(h(7)).alias("image_phash"),
    )
    rest = spark.range(2_000).select(
        (F.col("id") + 100_000).alias("id"),
        F.lit("u").alias("url"),
        F.concat(F.lit("photo "), F.col("id").cast("string")).alias("caption"),
        F.lit("d1").alias("dump"),
        F.lit(h(8)).alias("image_phash"),
    )
    annotated = with_dedup_verdicts(hot.unionByName(rest), PAIRS_ONLY)
    plan = annotated._jdf.queryExecution().executedPlan().toString()
    assert "Window" not in plan and "partial_min" in plan
    counts = {r["reason"]: r["n"] for r in annotated.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    assert counts == {None: 2_001, reasons.DUPLICATE_PAIR: 39_999}
    (winner,) = annotated.where(F.col("reason").isNull() & (F.col("caption") == "the same stock photo")).collect()
    assert (winner["id"], winner["dump"]) == (1000, "d1")


def test_blocklist_exact_and_within_k(spark):
    near = int_to_phash(phash_to_int(h(1)) ^ 0b101)  # 2 bits from h(1)
    blocklist = spark.createDataFrame(
        [(phash_to_int(h(1)), "coco"), (phash_to_int(h(3)), "flickr30k")], "blocked long, name string"
    )
    rows = [(1, "u", "a", "d", h(1)), (2, "u", "b", "d", near), (3, "u", "c", "d", h(3)), (4, "u", "d", "d", h(4))]
    exact = verdicts(spark, rows, DedupConfig(history=False), blocklist=blocklist)
    assert exact[1] == (reasons.EVAL_OVERLAP, f"coco: distance 0 to {h(1)}")
    assert exact[3] == (reasons.EVAL_OVERLAP, f"flickr30k: distance 0 to {h(3)}")
    assert exact[2] == exact[4] == (None, None)
    within = verdicts(spark, rows, DedupConfig(history=False, blocklist_distance=2), blocklist=blocklist)
    assert within[2] == (reasons.EVAL_OVERLAP, f"coco: distance 2 to {h(1)}")
    assert within[4] == (None, None)
    assert verdicts(spark, rows, DedupConfig(history=False, blocklist_distance=1), blocklist=blocklist)[2][0] is None


def test_split_keeps_the_columns_and_the_rejects_name_the_stage(spark):
    df = spark.createDataFrame([(1, "u1", "a cat", "d", h(1)), (2, "u2", "a cat", "d", h(1))], SCHEMA)
    accepted, rejected = split_dedup(with_dedup_verdicts(df, PAIRS_ONLY), df.columns)
    assert accepted.columns == df.columns
    (row,) = rejected.collect()
    assert (row["id"], row["stage"], row["reason"], row["url"]) == (2, "dedup", reasons.DUPLICATE_PAIR, "u2")


def test_phash_long_round_trips_with_the_pure_helper(spark):
    values = ["0000000000000000", "ffffffffffffffff", "8000000000000000", "7fffffffffffffff", h(5)]
    df = spark.createDataFrame([(v,) for v in values], "p string")
    got = [r["x"] for r in df.select(phash_long(F.col("p")).alias("x")).collect()]
    assert got == [phash_to_int(v) for v in values]


# --- the pipeline: history across dumps, blocklists from disk, errors ----------------------------------------------


def write_dump(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    return folder


def run(inp: Path, out: Path, *extra: str) -> dict:
    # The source's own pHash (as COYO publishes it): no fetching, dedup on the text stage's output.
    argv = ["--input", str(inp), "--output", str(out), "--stages", "dedup", "--id-col", "key"]
    argv += ["--set", "dedup.phash_col=source_image_phash", *extra]
    assert pipeline.main(argv) == 0
    return json.loads((out / "report" / "funnel.json").read_text())


def pair(key: int, caption: str, phash: str) -> dict:
    return {"key": key, "url": f"http://x/{key}", "caption": caption, "image_phash": phash}


def table(spark, path: Path) -> list[tuple]:
    return sorted(tuple(r) for r in spark.read.parquet(str(path)).drop("detail").collect())


def test_history_rejects_copies_of_earlier_dumps_and_a_rerun_changes_nothing(spark, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    first = [pair(1, "a red bike", h(1)), pair(2, "a blue car", h(2)), pair(3, "a red bike", h(1))]
    write_dump(inp / "dump=2026-01", first)
    funnel = run(inp / "dump=2026-01", out, "--dump", "2026-01")
    assert funnel["stages"][-1]["reasons"] == {reasons.DUPLICATE_PAIR: 1}

    # dump 2 holds copies of both accepted pairs of dump 1 (new ids, new URLs) and one new pair
    second = [pair(11, "A Red Bike", h(1)), pair(12, "a blue car", h(2)), pair(13, "a green boat", h(3))]
    write_dump(inp / "dump=2026-02", second)
    funnel = run(inp / "dump=2026-02", out, "--dump", "2026-02")
    assert funnel["stages"][-1]["reasons"] == {reasons.HISTORY_DUPLICATE: 2}
    rejected = spark.read.parquet(str(out / "rejected")).where("dump = '2026-02'").collect()
    assert {(r["source_key"] if "source_key" in r else r["id"], r["detail"]) for r in rejected} == {
        (11, "duplicate of accepted id 1 (dump 2026-01)"),
        (12, "duplicate of accepted id 2 (dump 2026-01)"),
    }
    history = spark.read.parquet(str(out / "history"))
    assert [f.name for f in history.schema] == HISTORY.fieldNames()
    assert sorted((r["id"], r["dump"]) for r in history.collect()) == [(1, "2026-01"), (2, "2026-01"), (13, "2026-02")]

    before = {part: table(spark, out / part) for part in ("accepted", "rejected", "history")}
    again = run(inp / "dump=2026-02", out, "--dump", "2026-02")
    assert again["stages"] == funnel["stages"]
    assert {part: table(spark, out / part) for part in ("accepted", "rejected", "history")} == before


def test_history_off_and_blocklist_from_a_folder(spark, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_dump(inp, [pair(1, "a red bike", h(1)), pair(2, "a blue car", h(2))])
    blocklist = tmp_path / "blocklists"
    write_dump(blocklist / "name=coco", [{"image_phash": h(2), "source": "coco/000.jpg"}])
    funnel = run(inp, out, "--set", "dedup.history=false", "--set", f"dedup.blocklists=[{json.dumps(str(blocklist))}]")
    assert funnel["stages"][-1]["reasons"] == {reasons.EVAL_OVERLAP: 1}
    assert not (out / "history").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "dedup.phash_col=nope"], "dedup needs the pHash column 'nope'"),
        (["--set", 'dedup.blocklists=["{bad}"]'], "has no image_phash / name=<name> columns"),
    ],
)
def test_dedup_errors_exit_2_before_writing(spark, tmp_path, capsys, extra, message):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_dump(inp, [pair(1, "a red bike", h(1))])
    bad = write_dump(tmp_path / "bad", [{"x": 1}])
    argv = ["--input", str(inp), "--output", str(out), "--stages", "dedup", "--id-col", "key"]
    argv += [e.replace("{bad}", str(bad)) for e in extra]
    assert pipeline.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (out / "accepted").exists()
