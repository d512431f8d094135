"""GRIT grounding rules as pure functions (no Spark, no global state).

``GroundConfig`` is the ``[ground]`` config section: its fields are the rules'
defaults, and the object the ground stage ships to its executors.

Input per row: the caption's length, the text stage's ``noun_chunk_spans`` and
aligned ``ref_exp_spans`` (``udfs.text_rules.parse_spans``), and the detector's
boxes for that row (the Boxes table, validated with ``check_box``). Output: the
GRIT release columns ``noun_chunks`` and ``ref_exps``, each a list of
``[start, end, x_min, y_min, x_max, y_max, score]`` aligned 1:1 and sorted by
score, highest first (Kosmos-2 section 2, and the released rows).

Steps, in order: drop chunks whose root lemma is an abstract noun; match boxes
to chunks by exact span; keep boxes with score strictly above ``min_score``;
greedy NMS across all boxes of the row, whatever their chunk; optionally drop
expressions contained in another one (Kosmos-2 training). ``judge_row`` does
all of it for one pair row with its boxes, and gives every box its verdict.

NMS IoU threshold: GRIT does not publish it, but its release shows a lower
bound. The example row of GRIT-20M (caption "a wire hanger with a paper cover
that reads we heart our customers") keeps both of its boxes, "a paper cover"
(score 0.793) and "a wire hanger" (0.675), although the two overlap with an IoU
of 0.688: whatever threshold the release used across chunks was above 0.688.
``nms_iou``'s default is 0.7, the smallest threshold in common use above that
bound (the region-proposal NMS of Faster R-CNN, detectron2's ``RPN.NMS_THRESH``):
it gives the release's row back as published while still suppressing boxes
that overlap more than any pair the release is known to keep. A box is
suppressed when its IoU with a kept box is strictly greater than the threshold.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schemas import reasons

# Rounding slack of detectors that write 1.0000001 or -1e-8: clipped, not rejected.
BOX_EPSILON = 1e-6
# Valid boxes grounded per pair row, best scores first; the rest are box-too-many. Detectors
# emit tens to a few hundred boxes per image (DETR: 100 queries, OWLv2: its top-k), so this only
# bites on a broken detector job; it bounds greedy NMS (quadratic) and the row's output size.
MAX_BOXES_PER_ROW = 1000

# (start, end, x_min, y_min, x_max, y_max, score); start/end are caption character offsets, end exclusive.
Box = tuple[int, int, float, float, float, float, float]


@dataclass(frozen=True)
class GroundConfig:
    """``[ground]``: GRIT's grounding rules (Kosmos-2 section 2) and where the boxes come from."""

    min_score: float = 0.65
    """GRIT: keep boxes with a score strictly above this."""
    nms_iou: float = 0.7
    """NMS IoU threshold across all boxes of an image. GRIT does not publish it; its example row keeps
    two boxes whose IoU is 0.688, so the release's threshold is above that (udfs/grounding.py)."""
    abstract_nouns: tuple[str, ...] = (
        "advantage",
        "courage",
        "faith",
        "freedom",
        "happiness",
        "hope",
        "justice",
        "life",
        "love",
        "peace",
        "pursuit",
        "time",
        "understanding",
        "wisdom",
    )
    """Chunks whose root lemma is one of these are not grounded (the list a GRIT maintainer gave as
    the abstract nouns they used; matched lower-cased against the chunk root's lemma)."""
    drop_contained: bool = False
    """Kosmos-2 training mode: drop expressions contained in another one (the release keeps them)."""
    boxes_in_pixels: bool = False
    """The Boxes table is in pixels: divided by the pair's width / height (needs the image stage)."""
    boxes: str = ""
    """The Boxes table (parquet, schemas.tables.BOXES; `winnow detect` writes one); --boxes PATH."""
    detector: str = ""
    """Or detect in the same job: a detector plug-in "package.module:callable" (udfs/detectors.py's
    contract) run over the kept images (needs the image stage with image.keep_bytes = true)."""
    grit_input: str = ""
    """Or a GRIT release's own boxes (--input-format grit; its noun_chunks read as the Boxes table):
    "refilter" uses the release's chunk and expression spans as they are (no parse; the text stage
    must not run, it would rewrite the caption the spans index); "reground" parses again with the
    text stage and matches the boxes to its chunks."""

    @cached_property
    def abstract_lemmas(self) -> frozenset[str]:
        """``abstract_nouns`` lower-cased, for the look-up."""
        return frozenset(w.strip().lower() for w in self.abstract_nouns)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        if self.grit_input not in GRIT_INPUT_MODES:
            yield "grit_input", f"{self.grit_input!r} is not one of refilter, reground (or empty: off)"
        # min_score 1.0 keeps no box (scores are at most 1): allowed, a way to switch grounding off.
        if not 0.0 <= self.min_score <= 1.0:
            yield "min_score", "must be within [0, 1]"
        if not 0.0 <= self.nms_iou <= 1.0:
            yield "nms_iou", "must be within [0, 1] (1 = no suppression)"
        for noun in self.abstract_nouns:
            if not noun.strip() or " " in noun.strip():
                yield "abstract_nouns", f"{noun!r} is not one word (they are matched against the chunk root's lemma)"


GRIT_INPUT_MODES = ("", "refilter", "reground")


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
        return None, reasons.BOX_SPAN_INVALID
    if not _finite(score) or not 0.0 <= score <= 1.0:
        return None, reasons.BOX_SCORE_INVALID
    if pixels and not (_finite(width) and _finite(height) and width > 0 and height > 0):
        return None, reasons.BOX_NO_IMAGE_SIZE
    coords = (x_min, y_min, x_max, y_max)
    if not all(_finite(c) for c in coords):
        return None, reasons.BOX_NOT_FINITE
    if pixels:
        coords = (x_min / width, y_min / height, x_max / width, y_max / height)
    clipped = [_clip_unit(float(c)) for c in coords]
    if any(c is None for c in clipped):
        return None, reasons.BOX_OUTSIDE_IMAGE
    x0, y0, x1, y1 = clipped
    if x0 >= x1 or y0 >= y1:
        return None, reasons.BOX_DEGENERATE
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
    below_score: int = 0  # score not above min_score
    suppressed: int = 0  # removed by NMS
    contained: int = 0  # drop_contained: expression inside (or equal to) a higher-ranked one
    outcomes: list[str] = field(default_factory=list)  # per input box, in input order: reasons.KEPT, ...

    @property
    def reason(self) -> str | None:
        """NO_GROUNDING when nothing is left, else None."""
        return None if self.noun_chunks else reasons.NO_GROUNDING


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
    rules: GroundConfig,
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
        chunks.setdefault((chunk["start"], chunk["end"]), ((ref["start"], ref["end"]), lemma in rules.abstract_lemmas))

    result = GroundingResult()
    scored: list[Box] = []
    scored_at: list[int] = []  # input index of each scored box
    for i, box in enumerate(boxes):
        result.boxes_in += 1
        match = chunks.get((box[0], box[1]))
        if match is None:
            result.unmatched += 1
            result.outcomes.append(reasons.UNMATCHED)
        elif match[1]:
            result.abstract += 1
            result.outcomes.append(reasons.ABSTRACT)
        elif not box[6] > rules.min_score:
            result.below_score += 1
            result.outcomes.append(reasons.BELOW_SCORE)
        else:
            scored.append(tuple(box))
            scored_at.append(i)
            result.outcomes.append(reasons.SUPPRESSED)  # until NMS keeps it

    kept_at = nms(scored, rules.nms_iou)
    result.suppressed = len(scored) - len(kept_at)
    # already in _rank order: (box, referring-expression span, input index)
    entries = [(scored[j], chunks[(scored[j][0], scored[j][1])][0], scored_at[j]) for j in kept_at]
    if rules.drop_contained:
        survivors = _drop_contained(entries)
        result.contained = len(entries) - len(survivors)
        for _, _, i in set(entries) - set(survivors):
            result.outcomes[i] = reasons.CONTAINED
        entries = survivors

    for box, (ref_start, ref_end), i in entries:
        result.outcomes[i] = reasons.KEPT
        result.noun_chunks.append(list(box))
        result.ref_exps.append([ref_start, ref_end, *box[2:]])
    return result


# --- one pair row with its boxes ---------------------------------------------------------------


@dataclass
class RowVerdict:
    """One joined row: the pair's GRIT columns and reason, and one verdict per box."""

    noun_chunks: list[list[float]] = field(default_factory=list)
    ref_exps: list[list[float]] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None
    boxes: list[dict[str, Any]] = field(default_factory=list)


def _box_detail(code: str, box: dict[str, Any], caption_length: int, width: Any, height: Any) -> str:
    if code == reasons.BOX_SPAN_INVALID:
        return f"span {box['start']}..{box['end']}, caption has {caption_length} characters"
    if code == reasons.BOX_SCORE_INVALID:
        return f"score {box['score']}"
    if code == reasons.BOX_NO_IMAGE_SIZE:
        return f"pixel box, image width {width} height {height}"
    return f"box ({box['x_min']}, {box['y_min']}, {box['x_max']}, {box['y_max']})"


def _summary(chunks: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> str:
    """``detail`` of a pair row: its boxes counted per outcome, then per reject reason."""
    counts = Counter(v["outcome"] or v["reason"] for v in verdicts)
    order = [*reasons.BOX_OUTCOMES, *reasons.BOX_REASONS]
    parts = [f"{counts[k]} {k}" for k in order if counts[k]]
    text = f"boxes {len(verdicts)}" + (": " + ", ".join(parts) if parts else "")
    return text if chunks else f"no noun chunks; {text}"


def judge_row(
    caption: str | None,
    chunks: list[dict[str, Any]] | None,
    refs: list[dict[str, int]] | None,
    width: float | None,
    height: float | None,
    boxes: list[dict[str, Any]] | None,
    rules: GroundConfig,
    pixels: bool,
) -> RowVerdict:
    """Check one pair's boxes, ground the pair, and give every box its verdict (in input order)."""
    boxes = boxes or []
    verdicts = [{**b, "reason": None, "outcome": None, "detail": None} for b in boxes]
    chunks, refs = chunks or [], refs or []
    caption_length = len(caption or "")  # Python characters: parse_spans' offsets
    valid: list[tuple[int, Box]] = []
    for i, b in enumerate(boxes):
        box, code = check_box(
            b["start"],
            b["end"],
            b["x_min"],
            b["y_min"],
            b["x_max"],
            b["y_max"],
            b["score"],
            caption_length,
            width,
            height,
            pixels,
        )
        if code is not None:
            verdicts[i]["reason"] = code
            verdicts[i]["detail"] = _box_detail(code, b, caption_length, width, height)
        else:
            valid.append((i, box))

    if len(valid) > MAX_BOXES_PER_ROW:
        valid.sort(key=lambda ib: (-ib[1][6], ib[1][:6], ib[0]))  # best score first, then a total order
        for i, _ in valid[MAX_BOXES_PER_ROW:]:
            verdicts[i]["reason"] = reasons.BOX_TOO_MANY
            verdicts[i]["detail"] = f"{len(valid)} valid boxes for one pair; the {MAX_BOXES_PER_ROW} best are used"
        valid = valid[:MAX_BOXES_PER_ROW]

    used = [box for _, box in valid]
    try:
        result = ground(caption_length, chunks, refs, used, rules)
    except ValueError as exc:  # spans that do not fit the caption: this row's input is inconsistent
        for i, _ in valid:
            verdicts[i]["outcome"] = reasons.ERROR
        return RowVerdict(reason=reasons.GROUND_ERROR, detail=str(exc)[:500], boxes=verdicts)
    for (i, _), outcome in zip(valid, result.outcomes, strict=True):
        verdicts[i]["outcome"] = outcome
    return RowVerdict(result.noun_chunks, result.ref_exps, result.reason, _summary(chunks, verdicts), verdicts)
