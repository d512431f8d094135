"""Detector plug-ins for the grounding stage's Boxes table: the contract, loading one by name, one row.

The contract
------------
A detector is any callable

    detector(image: PIL.Image.Image, phrases: list[str]) -> list[list[tuple[float, float, float, float, float]]]

that returns, for each phrase in order, a (possibly empty) list of
``(x_min, y_min, x_max, y_max, score)`` boxes. Coordinates are normalised to
[0, 1] by the image's width and height, as pixel edges (a box covering pixel
columns 10..19 of a 100-pixel-wide image has x_min 0.10 and x_max 0.20);
``x_min < x_max``, ``y_min < y_max``, ``score`` in (0, 1], boxes sorted by
score, highest first. The detector accepts any Pillow mode (grey-scale, RGBA,
palette, 16-bit) and never raises on an image Pillow cannot fully decode: it
logs a warning and returns no boxes for that image. It must be safe to call
again and again from one Python worker; it keeps no state between calls.

A ``winnow detect`` job loads the callable once per Python worker with
``load_detector("package.module:name")`` (the path comes from the config), and
calls it once per image with the image's noun-chunk phrases (the text stage's
``noun_chunk_spans`` cut out of the caption). Each box becomes a Boxes-table row
(``schemas.tables.BOXES``): ``id``, the phrase's ``start`` / ``end``, the four
coordinates and the score. To configure a detector, point the path at a
module-level instance. The demo's colour-and-shape detector,
``jobs.demo.shapes:shape_detector``, is one.

``detect_row`` runs a detector over one pair row and checks what it returns
(``get_detector`` keeps one loaded detector per path in each Python worker);
``detect_mapper`` is its ``mapInArrow`` body, which ``winnow detect``
(jobs/detect.py) and the ground stage (``ground.detector``) run.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from PIL import Image
from pyspark.sql.pandas.types import to_arrow_type

from schemas import reasons
from schemas.tables import DETECTED
from udfs.grounding import Box, check_box
from udfs.image import ImageConfig

DetectorBox = tuple[float, float, float, float, float]  # x_min, y_min, x_max, y_max (normalised), score
Detector = Callable[[Image.Image, list[str]], list[list[DetectorBox]]]  # the contract above

# A row's outcome: the `outcome` column of schemas.tables.DETECTED.
WITH_BOXES, WITHOUT_BOXES, FAILED = "with-boxes", "without-boxes", "failed"
# The image stage's pixel limit: a decompression bomb is refused from its header.
MAX_PIXELS = ImageConfig().max_pixels
# Rows per Arrow batch into a detector: each row carries a whole image.
BATCH_ROWS = 16
_DETECTED_ARROW = pa.schema([pa.field(f.name, to_arrow_type(f.dataType)) for f in DETECTED.fields])
_BOX_FIELDS = DETECTED["boxes"].dataType.elementType.fieldNames()


def load_detector(path: str) -> Detector:
    """The callable named by ``"package.module:attribute"`` (the attribute may be dotted).

    Raises ValueError, naming the path, when it is malformed, the module cannot
    be imported, the attribute does not exist or is not callable.
    """
    module_name, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    dotted = (module_name, attr)
    if not sep or not all(name and all(part.isidentifier() for part in name.split(".")) for name in dotted):
        raise ValueError(f"detector path must look like 'package.module:callable', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"detector {path!r}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"detector {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"detector {path!r} is a {type(obj).__name__}, not a callable")
    return obj


_DETECTORS: dict[str, Detector] = {}


def get_detector(path: str) -> Detector:
    """``load_detector(path)``, imported once per Python worker (Spark reuses workers across tasks)."""
    detector = _DETECTORS.get(path)
    if detector is None:
        detector = _DETECTORS[path] = load_detector(path)
    return detector


@dataclass(frozen=True)
class RowResult:
    """``reason`` set: the row failed (``boxes`` empty); otherwise its boxes, possibly none."""

    reason: str | None = None
    detail: str | None = None
    boxes: list[Box] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.reason is not None:
            return FAILED
        return WITH_BOXES if self.boxes else WITHOUT_BOXES


def decode_image(data: bytes) -> tuple[Image.Image | None, str | None, str | None]:
    """``(image, None, None)`` fully decoded, or ``(None, reason, detail)``."""
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > MAX_PIXELS:
            return None, reasons.TOO_MANY_PIXELS, f"{width}x{height} = {width * height} pixels (limit {MAX_PIXELS})"
        img.load()
    except Image.DecompressionBombError as exc:
        return None, reasons.TOO_MANY_PIXELS, str(exc)[:500]
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ... on bad data
        return None, reasons.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:500]
    return img, None, None


def _checked_boxes(result: Any, spans: Sequence[tuple[int, int]], caption_length: int) -> list[Box] | str:
    """The detector's ``result`` as Boxes-table rows, or what is wrong with it."""
    if not isinstance(result, (list, tuple)) or len(result) != len(spans):
        got = f"{len(result)} lists" if isinstance(result, (list, tuple)) else type(result).__name__
        return f"expected one list of boxes per phrase ({len(spans)}), got {got}"
    out: list[Box] = []
    for (start, end), boxes in zip(spans, result, strict=True):
        for box in boxes or ():
            try:
                x_min, y_min, x_max, y_max, score = (float(v) for v in box)
            except (TypeError, ValueError):
                return f"phrase [{start}, {end}): a box is not 5 numbers: {box!r}"[:500]
            checked, reason = check_box(start, end, x_min, y_min, x_max, y_max, score, caption_length)
            if reason is not None or checked is None:
                return f"phrase [{start}, {end}): box {box!r} is {reason}"[:500]
            out.append(checked)
    return out


def detect_row(
    detector: Detector, row_id: int | None, caption: str | None, spans: Sequence[dict] | None, data: bytes | None
) -> RowResult:
    """What ``detector`` finds for one pair row; never raises."""
    chunks = [(s.get("start"), s.get("end")) for s in spans or () if s is not None]
    if row_id is None:
        return RowResult(reasons.ID_MISSING, "the row has no id: its boxes could not be joined to it")
    if not chunks:
        return RowResult()
    length = len(caption) if caption is not None else -1
    bad = [(s, e) for s, e in chunks if s is None or e is None or not 0 <= s < e <= length]
    if bad:
        return RowResult(reasons.SPAN_INVALID, f"noun chunk {list(bad[0])} outside the caption ({length} characters)")
    if data is None:
        return RowResult(reasons.IMAGE_MISSING, "the row has no image bytes")
    img, reason, detail = decode_image(data)
    if img is None:
        return RowResult(reason, detail)
    phrases = [caption[s:e] for s, e in chunks]  # type: ignore[index]
    try:
        result = detector(img, phrases)
    except Exception as exc:  # a detector bug or a bad image costs this row, not the job
        return RowResult(reasons.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}"[:500])
    boxes = _checked_boxes(result, chunks, length)  # type: ignore[arg-type]
    if isinstance(boxes, str):
        return RowResult(reasons.DETECTOR_BAD_OUTPUT, boxes)
    return RowResult(boxes=boxes)


def detect_mapper(detector_path: str, image_col: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow``: pair rows in, one ``DETECTED`` row per row out."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        detector = get_detector(detector_path)  # module-level accessor: the cache lives in the worker
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("id").to_pylist()
            captions = batch.column("caption").to_pylist()
            spans = batch.column("noun_chunk_spans").to_pylist()
            images = batch.column(image_col)
            results = [
                detect_row(detector, ids[i], captions[i], spans[i], images[i].as_py()) for i in range(batch.num_rows)
            ]
            box_rows = [
                None if r.outcome == FAILED else [dict(zip(_BOX_FIELDS, b, strict=True)) for b in r.boxes]
                for r in results
            ]
            columns = [
                pa.array(ids, type=pa.int64()),
                pa.array([r.outcome for r in results], type=pa.string()),
                pa.array([r.reason for r in results], type=pa.string()),
                pa.array([r.detail for r in results], type=pa.string()),
                pa.array(box_rows, type=_DETECTED_ARROW.field("boxes").type),
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=_DETECTED_ARROW)

    return run
