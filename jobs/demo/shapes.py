"""The demo's detector: colour and shape words of the built-in sample's scenes -> boxes.

``shape_detector`` follows the detector contract of ``udfs.detectors`` (the
demo runs it as ``ground.detector = jobs.demo.shapes:shape_detector``). It is
demo code: no production module imports it.

A classical colour-and-shape detector for the synthetic scenes of
``jobs/demo/sample.py`` ("a small red circle above a blue square on a wooden
table"); numpy, Pillow and scipy (already a dependency of imagehash), no model
weights. For each phrase:

1. Vocabulary: the first colour word of ``jobs.demo.sample.COLORS`` and the first
   shape word of ``jobs.demo.sample.SHAPES`` (a plural "circles" counts) in the
   lower-cased phrase. A phrase lacking either gets no boxes.
2. Segmentation, once per image: a 3 x 3 box blur (the sample's grain and JPEG
   noise are about 6 levels per channel; the blur divides them by ~3), then
   every pixel takes the nearest of the reference colours ``jobs.demo.sample.RGB``
   and of the background colour (the median of the image's border pixels,
   which wins ties). A colour's pixels are those nearest to it and within
   ``max_distance`` of it. The background competitor is what separates a green
   shape from green grass and a white shape from a white wall, whose reference
   colours are only 45 and 31 RGB levels apart.
3. A 3 x 3 binary opening removes grain specks and the thin seams of mixed
   colours that blur and chroma subsampling leave along shapes' edges; each
   4-connected component of at least ``min_area`` of the image is a candidate
   box: its bounding box, as pixel edges.
4. Score: how well the component's bounding-box geometry matches the phrase's
   shape (the colour is already a hard constraint):

       score = max(MIN_SCORE, exp(-(z_fill ** 2 + z_aspect ** 2 + z_offset ** 2) / 2))
       z_fill = (fill - (F + F_px / side)) / fill_sigma                  (fill_sigma 0.05)
       z_aspect = d_aspect / aspect_sigma                                (aspect_sigma 0.15)
       z_offset = (offset - (O + O_px / side)) / offset_sigma            (offset_sigma 0.02)

   ``fill`` = component pixels / bounding-box pixels; ``side`` = the box's
   short side in pixels; ``d_aspect`` = how far ln(long side / short side) lies
   outside the shape's interval of ln aspects (0 inside it); ``offset`` =
   distance of the component's centroid from its box centre, in box sizes.
   ``F``, ``O`` (the shape as drawn: a triangle fills 0.5 of its box with its
   centroid 1/6 below the centre), ``F_px``, ``O_px`` (what blur and opening
   shave off tips, in pixels) and the aspect interval are in ``SHAPE_PRIORS``.
   On 300 sample scenes (tests/test_detectors.py checks one of each shape) a
   component of the named shape scores 0.98 to 1.0 (median per shape; 10th
   percentile >= 0.91); one of the right colour but another shape scores 0.001
   to 0.03 (median), except a square asked for as a rectangle (0.22: a square
   is a kind of rectangle), and never more than 0.29. At most ``max_boxes``
   boxes per phrase, best first.

Known limit: two shapes of the same colour and the same shape ("a big red
circle next to a red circle") both come back with about equal scores; the
size words are ignored, so which is first is down to the grain.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from jobs.demo.sample import COLORS, RGB, SHAPES
from udfs.detectors import DetectorBox
from udfs.image import to_rgb

log = logging.getLogger(__name__)

MIN_SCORE = 1e-3  # scores are floored here: the contract promises (0, 1]


class ShapePrior(NamedTuple):
    """What a component of one shape word looks like in its bounding box, as this detector sees it.

    The blur and the opening round sharp tips off by a pixel or two whatever the
    size, so the expected fill is ``fill + fill_per_px / side`` and the expected
    offset ``offset + offset_per_px / side``, with ``side`` the box's short side
    in pixels.
    """

    fill: float  # component pixels / bounding-box pixels, as drawn
    aspect: tuple[float, float]  # allowed long side / short side, inclusive
    offset: float  # centroid distance from the box centre, in box sizes, as drawn
    fill_per_px: float = 0.0
    offset_per_px: float = 0.0


# fill and offset: the shapes as jobs.demo.sample._draw_shape draws them; the *_per_px terms:
# least-squares fits of what this detector measures on 700 sample shapes against 1 / side
# (intercepts 0.503 and 0.166 for the triangle, 0.696 and 0.053 for the star: the drawn
# values; residual sd <= 0.01 for fill and <= 0.003 for offset, every shape).
SHAPE_PRIORS: Mapping[str, ShapePrior] = {
    "circle": ShapePrior(math.pi / 4, (1.0, 1.15), 0.0),
    "square": ShapePrior(1.0, (1.0, 1.15), 0.0),
    "rectangle": ShapePrior(1.0, (1.3, 4.0), 0.0),  # the sample draws 2:1
    "triangle": ShapePrior(0.5, (1.0, 1.2), 1 / 6, 2.46, -0.78),  # apex up: centroid at 2/3 of the height
    # The sample's "star" is a regular pentagon with a spike inside it (a stand-in, see
    # _draw_shape), aspect 1.04..1.09. A real five-pointed star would fill about 0.45 of its box.
    "star": ShapePrior(0.69, (1.0, 1.15), 0.053, 1.12, -0.51),
}
_missing = set(SHAPES) - set(SHAPE_PRIORS)
if _missing:  # the sample grew a shape this detector cannot score
    raise ImportError(f"jobs.demo.shapes has no SHAPE_PRIORS for the sample's shapes {sorted(_missing)}")

_WORD = re.compile(r"[a-z]+")


def parse_phrase(
    phrase: str, colors: Container[str] = COLORS, shapes: Container[str] = SHAPES
) -> tuple[str | None, str | None]:
    """(first colour word, first shape word) of ``phrase``, each None when absent; plurals count."""
    color = shape = None
    for word in _WORD.findall(phrase.lower()):
        if color is None and word in colors:
            color = word
        if shape is None:
            if word in shapes:
                shape = word
            elif word.endswith("s") and word[:-1] in shapes:
                shape = word[:-1]
    return color, shape


def shape_score(
    fill: float, width: int, height: int, offset: float, prior: ShapePrior, sigmas: tuple[float, float, float]
) -> float:
    """The module docstring's score of a component with a ``width`` x ``height`` pixel box against ``prior``."""
    fill_sigma, aspect_sigma, offset_sigma = sigmas
    side = max(1, min(width, height))
    aspect = max(width, height) / side
    lo, hi = prior.aspect
    d_aspect = max(0.0, math.log(lo) - math.log(aspect), math.log(aspect) - math.log(hi))
    d_fill = fill - (prior.fill + prior.fill_per_px / side)
    d_offset = offset - (prior.offset + prior.offset_per_px / side)
    z2 = (d_fill / fill_sigma) ** 2 + (d_aspect / aspect_sigma) ** 2 + (d_offset / offset_sigma) ** 2
    return max(MIN_SCORE, math.exp(-z2 / 2))


@dataclass(frozen=True, eq=False)
class ShapeDetector:
    """The colour-and-shape detector of the module docstring; an instance is a detector callable.

    ``colors`` maps colour words to reference RGB, ``priors`` shape words to
    ``ShapePrior``; both default to the sample's vocabulary. ``min_area`` is a
    fraction of the image's pixels; images whose long side exceeds
    ``max_side`` are shrunk to it first (boxes are normalised, so unchanged).
    """

    colors: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: dict(RGB))
    priors: Mapping[str, ShapePrior] = field(default_factory=lambda: dict(SHAPE_PRIORS))
    max_distance: float = 90.0
    min_area: float = 0.001
    max_boxes: int = 5
    max_side: int = 512
    fill_sigma: float = 0.05
    aspect_sigma: float = 0.15
    offset_sigma: float = 0.02

    def __post_init__(self) -> None:
        if not self.colors or not self.priors:
            raise ValueError("a ShapeDetector needs at least one colour and one shape")
        if self.max_distance <= 0 or not 0 <= self.min_area < 1 or self.max_boxes < 1 or self.max_side < 8:
            raise ValueError(
                f"bad ShapeDetector settings: max_distance={self.max_distance}, min_area={self.min_area}, "
                f"max_boxes={self.max_boxes}, max_side={self.max_side}"
            )
        if min(self.fill_sigma, self.aspect_sigma, self.offset_sigma) <= 0:
            raise ValueError("ShapeDetector sigmas must be positive")

    def __call__(self, image: Image.Image, phrases: list[str]) -> list[list[DetectorBox]]:
        parsed = [parse_phrase(p, self.colors, self.priors) for p in phrases]
        wanted = [(c, s) for c, s in parsed if c is not None and s is not None]
        if not wanted:
            return [[] for _ in phrases]
        try:
            pixels = self._pixels(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # Pillow's for bad data
            log.warning("detector: cannot decode the image, no boxes: %s: %s", type(exc).__name__, exc)
            return [[] for _ in phrases]
        nearest, within = self._classify(pixels)
        names = list(self.colors)
        found: dict[tuple[str, str], list[DetectorBox]] = {}
        for color, shape in set(wanted):
            k = names.index(color) + 1  # class 0 is the background
            found[(color, shape)] = self._boxes((nearest == k) & within[k - 1], self.priors[shape])
        return [found[(c, s)] if c is not None and s is not None else [] for c, s in parsed]

    def _pixels(self, image: Image.Image) -> np.ndarray:
        """float32 (H, W, 3) RGB, blurred; at most ``max_side`` on the long side."""
        img = to_rgb(image)
        scale = self.max_side / max(img.size)
        if scale < 1:
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BOX)
        return np.asarray(img.filter(ImageFilter.BoxBlur(1)), dtype=np.float32)

    def _classify(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest class per pixel: 0 background, k the k-th colour; (K, H, W) within max_distance of colour k)."""
        h, w, _ = pixels.shape
        ring = max(1, min(h, w) // 50)
        border = np.concatenate(
            [pixels[:ring].reshape(-1, 3), pixels[-ring:].reshape(-1, 3)]
            + [pixels[:, :ring].reshape(-1, 3), pixels[:, -ring:].reshape(-1, 3)]
        )
        refs = np.vstack([np.median(border, axis=0), np.asarray(list(self.colors.values()), dtype=np.float32)])
        channels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
        # one squared-distance plane per reference colour; a (N, 3) @ (3, K) product is ~10x slower here
        d2 = np.empty((len(refs), h, w), dtype=np.float32)
        for k, ref in enumerate(refs):
            diff = channels[0] - ref[0]
            plane = diff * diff
            for c in (1, 2):
                diff = channels[c] - ref[c]
                plane += diff * diff
            d2[k] = plane
        nearest = d2.argmin(0)  # argmin takes the first of equals: the background wins ties
        return nearest, d2[1:] <= self.max_distance**2

    def _boxes(self, mask: np.ndarray, prior: ShapePrior) -> list[DetectorBox]:
        # binary opening with a 3 x 3 square, as min then max filters (same result, half the time)
        eroded = ndimage.minimum_filter(mask.view(np.uint8), size=3, mode="constant", cval=0)
        labels, count = ndimage.label(ndimage.maximum_filter(eroded, size=3))
        if count == 0:
            return []
        h, w = mask.shape
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        sigmas = (self.fill_sigma, self.aspect_sigma, self.offset_sigma)
        boxes: list[DetectorBox] = []
        for i, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            if areas[i] < max(1.0, self.min_area * h * w):
                continue
            bh, bw = rows.stop - rows.start, cols.stop - cols.start
            ys, xs = np.nonzero(labels[rows, cols] == i)
            offset = math.hypot((xs.mean() + 0.5) / bw - 0.5, (ys.mean() + 0.5) / bh - 0.5)
            score = shape_score(areas[i] / (bh * bw), bw, bh, offset, prior, sigmas)
            boxes.append((cols.start / w, rows.start / h, cols.stop / w, rows.stop / h, score))
        boxes.sort(key=lambda b: (-b[4], b[:4]))
        return boxes[: self.max_boxes]


def make_shape_detector(**settings: Any) -> ShapeDetector:
    """A ``ShapeDetector`` with ``settings`` (its field names) changed from the defaults."""
    return ShapeDetector(**settings)


shape_detector = ShapeDetector()
