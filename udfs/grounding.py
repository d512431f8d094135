"""GRIT grounding rules as pure functions (no Spark, no global state).

Input per row: the caption's length, the text stage's ``noun_chunk_spans`` and
aligned ``ref_exp_spans`` (``udfs.text_rules.parse_spans``), and the detector's
boxes for that row (the Boxes table, validated with ``check_box``). Output: the
GRIT release columns ``noun_chunks`` and ``ref_exps``, each a list of
``[start, end, x_min, y_min, x_max, y_max, score]`` aligned 1:1 and sorted by
score, highest first (Kosmos-2 section 2; DESIGN.md "GRIT details").

Steps, in order: drop chunks whose root lemma is an abstract noun; match boxes
to chunks by exact span; keep boxes with score strictly above ``min_score``
(0.65); greedy NMS across all boxes of the row, whatever their chunk;
optionally drop expressions contained in another one (Kosmos-2 training).

NMS IoU threshold: GRIT does not publish it. 0.5 is the test-time default of
the common two-stage detectors (torchvision's Faster R-CNN ``box_nms_thresh``,
detectron2's ``NMS_THRESH_TEST``) and the overlap at which PASCAL VOC counts two
boxes as the same object, so two boxes above it are taken to show one object.
A box is suppressed when its IoU with a kept box is strictly greater than it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Reject reason codes. Box codes describe one row of the Boxes table; a row of
# the pair table with no grounded expression left is rejected as NO_GROUNDING.
BOX_SPAN_INVALID = "box-span-invalid"  # start/end missing, start < 0, end > caption length, or start >= end
BOX_SCORE_INVALID = "box-score-invalid"  # score missing, NaN, or outside [0, 1]
BOX_NO_IMAGE_SIZE = "box-no-image-size"  # pixel box, but the image's width/height is missing or not positive
BOX_NOT_FINITE = "box-not-finite"  # a coordinate is missing, NaN or infinite
BOX_OUTSIDE_IMAGE = "box-outside-image"  # a normalised coordinate outside [0, 1] (beyond BOX_EPSILON)
BOX_DEGENERATE = "box-degenerate"  # x_min >= x_max or y_min >= y_max: inverted or zero area
NO_GROUNDING = "no-grounding"  # no noun chunk of the caption keeps a box

BOX_REASONS = (
    BOX_SPAN_INVALID,
    BOX_SCORE_INVALID,
    BOX_NO_IMAGE_SIZE,
    BOX_NOT_FINITE,
    BOX_OUTSIDE_IMAGE,
    BOX_DEGENERATE,
)

# What became of a box that passed check_box (GroundingResult.outcomes).
KEPT, ABSTRACT, UNMATCHED, BELOW_SCORE, SUPPRESSED, CONTAINED = (
    "kept",
    "abstract",
    "unmatched",
    "below-score",
    "suppressed",
    "contained",
)

# Rounding slack of detectors that write 1.0000001 or -1e-8: clipped, not rejected.
BOX_EPSILON = 1e-6

DEFAULT_ABSTRACT_NOUNS = frozenset(
    {
        "time",
        "life",
        "love",
        "freedom",
        "happiness",
        "wisdom",
        "peace",
        "justice",
        "hope",
        "courage",
        "faith",
        "understanding",
        "advantage",
        "pursuit",
    }
)

# (start, end, x_min, y_min, x_max, y_max, score); start/end are caption character offsets, end exclusive.
Box = tuple[int, int, float, float, float, float, float]


@dataclass(frozen=True)
class GroundingRules:
    """Thresholds of the grounding stage, small enough to ship to executors.

    ``abstract_nouns`` is stored lower-cased and matched against the lower-cased
    lemma of each chunk's root. With ``drop_contained``, of several expressions
    with the same span only the highest-scored one is kept.
    """

    min_score: float = 0.65
    nms_iou: float = 0.5
    abstract_nouns: frozenset[str] = DEFAULT_ABSTRACT_NOUNS
    drop_contained: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        object.__setattr__(self, "abstract_nouns", frozenset(w.strip().lower() for w in self.abstract_nouns))

    @classmethod
    def from_config(cls, cfg: Any) -> GroundingRules:
        """From the ``[ground]`` config section (any object with these attribute names)."""
        return cls(
            min_score=cfg.min_score,
            nms_iou=cfg.nms_iou,
            abstract_nouns=frozenset(cfg.abstract_nouns),
            drop_contained=cfg.drop_contained,
        )


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _clip_unit(value: float) -> float | None:
    """``value`` clipped to [0, 1] if it is within BOX_EPSILON of it, else None."""
    if value < -BOX_EPSILON or value > 1.0 + BOX_EPSILON:
        return None
    return min(max(value, 0.0), 1.0)


def check_box(
    start: int | None,
    end: int | None,
    x_min: float | None,
    y_min: float | None,
    x_max: float | None,
    y_max: float | None,
    score: float | None,
    caption_length: int,
    width: float | None = None,
    height: float | None = None,
    pixels: bool = False,
) -> tuple[Box | None, str | None]:
    """``(box, None)`` with the box normalised to [0, 1], or ``(None, reason)``.

    With ``pixels``, x is divided by ``width`` and y by ``height``. Checks, in
    order: span, score, image size (pixels only), finite, inside the image,
    positive area.
    """
    if start is None or end is None or start < 0 or end > caption_length or start >= end:
        return None, BOX_SPAN_INVALID
    if not _finite(score) or not 0.0 <= score <= 1.0:
        return None, BOX_SCORE_INVALID
    if pixels and not (_finite(width) and _finite(height) and width > 0 and height > 0):
        return None, BOX_NO_IMAGE_SIZE
    coords = (x_min, y_min, x_max, y_max)
    if not all(_finite(c) for c in coords):
        return None, BOX_NOT_FINITE
    if pixels:
        coords = (x_min / width, y_min / height, x_max / width, y_max / height)
    clipped = [_clip_unit(float(c)) for c in coords]
    if any(c is None for c in clipped):
        return None, BOX_OUTSIDE_IMAGE
    x0, y0, x1, y1 = clipped
    if x0 >= x1 or y0 >= y1:
        return None, BOX_DEGENERATE
    return (int(start), int(end), x0, y0, x1, y1, float(score)), None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes; 0 when both are empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _rank(box: Box) -> tuple[float, ...]:
    """Score descending, then span and coordinates ascending: a total, deterministic order."""
    return (-box[6], *box[:6])


def nms(boxes: Sequence[Box], iou_threshold: float) -> list[int]:
    """Indices of the boxes greedy NMS keeps, in the order kept (score descending).

    A box is suppressed when its IoU with an already kept box is strictly
    greater than ``iou_threshold``; equal scores are taken in ``_rank`` order.
    """
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: _rank(boxes[i])):
        if all(iou(boxes[i][2:6], boxes[k][2:6]) <= iou_threshold for k in kept):
            kept.append(i)
    return kept


@dataclass
class GroundingResult:
    """The row's ``noun_chunks`` and aligned ``ref_exps``, and where its boxes went.

    Every count is in boxes: ``boxes_in == abstract + unmatched + below_score
    + suppressed + contained + len(noun_chunks)``.
    """

    noun_chunks: list[list[float]] = field(default_factory=list)
    ref_exps: list[list[float]] = field(default_factory=list)
    boxes_in: int = 0
    abstract: int = 0  # on a chunk whose root lemma is an abstract noun
    unmatched: int = 0  # span equal to no noun chunk of the caption
    below_score: int = 0  # score <= min_score
    suppressed: int = 0  # removed by NMS
    contained: int = 0  # drop_contained: expression inside (or equal to) a higher-ranked one
    outcomes: list[str] = field(default_factory=list)  # per input box, in input order: KEPT, ABSTRACT, ...

    @property
    def reason(self) -> str | None:
        """NO_GROUNDING when nothing is left, else None."""
        return None if self.noun_chunks else NO_GROUNDING


def _drop_contained(entries: list[tuple[Box, tuple[int, int], int]]) -> list[tuple[Box, tuple[int, int], int]]:
    """Entries whose ref-exp span lies in no other entry's span; of equal spans, the first (best-ranked).

    ``entries`` must be in ``_rank`` order. Containment is transitive, so
    testing against every entry equals testing against the kept ones.
    """
    kept = []
    for i, (_, (s, e), _) in enumerate(entries):
        inside = any(
            (os_ <= s and e <= oe) and ((os_, oe) != (s, e) or j < i)
            for j, (_, (os_, oe), _) in enumerate(entries)
            if j != i
        )
        if not inside:
            kept.append(entries[i])
    return kept


def ground(
    caption_len: int,
    noun_chunks: Sequence[dict[str, Any]],
    ref_exps: Sequence[dict[str, int]],
    boxes: Iterable[Box],
    rules: GroundingRules,
) -> GroundingResult:
    """Ground one row: the chunks' boxes that pass the rules, with their referring expressions.

    ``noun_chunks`` / ``ref_exps`` as written by ``parse_spans``; ``boxes``
    already passed ``check_box``. Spans that do not fit the caption or lists
    that are not aligned are a programming error and raise ValueError.
    """
    if len(noun_chunks) != len(ref_exps):
        raise ValueError(f"{len(noun_chunks)} noun chunks but {len(ref_exps)} referring expressions")
    for span in (*noun_chunks, *ref_exps):
        if not 0 <= span["start"] < span["end"] <= caption_len:
            raise ValueError(f"span {span['start']}..{span['end']} does not fit a caption of {caption_len}")

    # chunk span -> (referring-expression span, is abstract); the first chunk wins a repeated span
    chunks: dict[tuple[int, int], tuple[tuple[int, int], bool]] = {}
    for chunk, ref in zip(noun_chunks, ref_exps, strict=True):
        lemma = (chunk["root_lemma"] or "").lower()
        chunks.setdefault((chunk["start"], chunk["end"]), ((ref["start"], ref["end"]), lemma in rules.abstract_nouns))

    result = GroundingResult()
    scored: list[Box] = []
    scored_at: list[int] = []  # input index of each scored box
    for i, box in enumerate(boxes):
        result.boxes_in += 1
        match = chunks.get((box[0], box[1]))
        if match is None:
            result.unmatched += 1
            result.outcomes.append(UNMATCHED)
        elif match[1]:
            result.abstract += 1
            result.outcomes.append(ABSTRACT)
        elif not box[6] > rules.min_score:
            result.below_score += 1
            result.outcomes.append(BELOW_SCORE)
        else:
            scored.append(tuple(box))
            scored_at.append(i)
            result.outcomes.append(SUPPRESSED)  # until NMS keeps it

    kept_at = nms(scored, rules.nms_iou)
    result.suppressed = len(scored) - len(kept_at)
    # already in _rank order: (box, referring-expression span, input index)
    entries = [(scored[j], chunks[(scored[j][0], scored[j][1])][0], scored_at[j]) for j in kept_at]
    if rules.drop_contained:
        survivors = _drop_contained(entries)
        result.contained = len(entries) - len(survivors)
        for _, _, i in set(entries) - set(survivors):
            result.outcomes[i] = CONTAINED
        entries = survivors

    for box, (ref_start, ref_end), i in entries:
        result.outcomes[i] = KEPT
        result.noun_chunks.append(list(box))
        result.ref_exps.append([ref_start, ref_end, *box[2:]])
    return result
