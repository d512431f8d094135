"""COYO image rules, pHash and img2dataset-style resizing on image bytes: pure Python, no Spark.

``ImageConfig`` is the ``[image]`` config section: its fields are the rules'
defaults (the COYO-700M values), and the object the image stage ships to its
executors. ``inspect_image(data, cfg)`` applies the rules in this order,
cheapest first, and returns the first failure as a reject reason
(``schemas.reasons``):

1. file size >= ``min_bytes``;
2. Pillow identifies the format from the header;
3. width x height <= ``max_pixels``: read from the header, so a decompression
   bomb is refused before a single pixel is allocated;
4. min(width, height) >= ``min_side``;
5. long side / short side <= ``max_aspect_ratio``;
6. Pillow decodes the whole image (COYO: "Pillow can decode it"; a truncated
   file fails here).

Accepted images get ``width`` / ``height`` as stored (EXIF orientation is not
applied, as in COYO's columns), ``image_bytes_size``, ``image_format`` and
``image_phash`` = ``str(imagehash.phash(image))`` on the decoded image: the
same function, so the same 16 hex digits as COYO's ``image_phash``. With
``phash = "fast"`` a JPEG is decoded at a reduced scale first (libjpeg's DCT
scaling), which changes a few pHashes (docs/stages/image.md gives the
agreement rate).

``keep_bytes`` re-encodes the image as JPEG resized the way img2dataset's
``resize_mode`` does, after applying the EXIF orientation (a training image
must look the right way up), transparency flattened onto white.

``phash_verdict`` hashes any image for an evaluation-set blocklist: every
COYO threshold off, the pixel limit kept.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageOps

from schemas import reasons

# The fast pHash decodes JPEGs at no less than this size (pHash itself works on 32x32).
FAST_PHASH_MIN_SIDE = 256
EXIF_ORIENTATION = 0x0112
RESIZE_MODES = ("keep_ratio", "center_crop", "no")  # img2dataset's resize modes
PHASH_MODES = ("exact", "fast")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class ImageConfig:
    """``[image]``: the COYO image-level rules, and what the image stage keeps of each image."""

    min_bytes: int = 5 * 1024
    """COYO: the image file is at least 5 KB (read as KiB)."""
    max_aspect_ratio: float = 3.0
    """COYO: long side / short side is at most this."""
    min_side: int = 200
    """COYO: min(width, height) is at least this many pixels."""
    max_pixels: int = 89_478_485
    """Refused from the header, before decoding: width x height above this is a decompression bomb
    (Pillow's own MAX_IMAGE_PIXELS)."""
    phash: str = "exact"
    """exact: str(imagehash.phash(image)); fast: a JPEG draft decode first (a few hashes differ)."""
    keep_bytes: bool = False
    """Keep the image, resized as img2dataset does, as the binary column `image` (JPEG)."""
    image_size: int = 256
    """The kept image's size (img2dataset's image_size)."""
    resize_mode: str = "keep_ratio"
    """keep_ratio | center_crop | no (img2dataset's resize_mode)."""
    resize_only_if_bigger: bool = False
    """Never enlarge a kept image (img2dataset's resize_only_if_bigger)."""
    encode_quality: int = 95
    """JPEG quality of the kept image."""
    batch_size: int = 64
    """Rows per Arrow batch into and out of the image UDF (bounds image bytes in memory)."""
    partitions: int = 0
    """Units (tasks) at least that URL rows are cut into, when fewer rows than that many times
    fetch.host_split_rows; the tasks of rows that carry their bytes; 0 = 3 per core."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        if self.min_bytes < 0:
            yield "min_bytes", "must not be negative"
        if self.max_aspect_ratio < 1.0:
            yield "max_aspect_ratio", "must be at least 1.0 (long side / short side)"
        if self.min_side < 1:
            yield "min_side", "must be at least 1"
        if self.max_pixels < 1:
            yield "max_pixels", "must be at least 1"
        if self.phash not in PHASH_MODES:
            yield "phash", f"{self.phash!r} is not one of {', '.join(PHASH_MODES)}"
        if self.image_size < 1:
            yield "image_size", "must be at least 1"
        if self.resize_mode not in RESIZE_MODES:
            yield "resize_mode", f"{self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}"
        if not 1 <= self.encode_quality <= 100:
            yield "encode_quality", "must be within [1, 100]"
        if self.batch_size < 1:
            yield "batch_size", "must be at least 1"
        if self.partitions < 0:
            yield "partitions", "must not be negative (0 = 3 per core)"


# A blocklist wants every image of an evaluation set, so every COYO threshold is off; the pixel
# limit stays (the image stage's), so a decompression bomb costs a header read, not memory.
# The source's record of the original image's (width, height), when it has one.
OriginalSize = tuple[int | None, int | None] | None

BLOCKLIST_RULES = ImageConfig(min_bytes=0, max_aspect_ratio=1e9, min_side=1, phash="exact")


@dataclass
class ImageVerdict:
    """One image's measures, or the first rule it fails (``reason``)."""

    reason: str | None = None
    detail: str | None = None
    width: int | None = None
    height: int | None = None
    image_bytes_size: int | None = None
    image_format: str | None = None
    image_phash: str | None = None
    image: bytes | None = None
    stored_width: int | None = None
    stored_height: int | None = None


def rejected(reason: str, detail: str | None, **measures: Any) -> ImageVerdict:
    return ImageVerdict(reason=reason, detail=detail, **measures)


def _describe(exc: BaseException) -> str:
    # Pillow names the BytesIO it read ("<_io.BytesIO object at 0x7f...>"): the address
    # would make the same input give a different detail on every run.
    text = _ADDRESS.sub("", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."


def inspect_image(
    data: bytes, rules: ImageConfig, original: tuple[int | None, int | None] | None = None
) -> ImageVerdict:
    """Apply the COYO image rules to ``data``; never raises.

    ``original``: the size of the image ``data`` was made from, when the source
    recorded it (img2dataset's ``original_width`` / ``original_height``: its
    stored copy is resized). The size rules (min side, aspect ratio) then judge
    the original, the verdict's ``width`` / ``height`` are the original's, and
    ``stored_width`` / ``stored_height`` what ``data`` holds. The byte-size,
    pixel-count and decode rules always judge ``data`` itself.
    """
    size = len(data)
    if size < rules.min_bytes:
        return rejected(reasons.FILE_TOO_SMALL, f"{size} bytes (minimum {rules.min_bytes})", image_bytes_size=size)
    with warnings.catch_warnings():
        # Pillow's own bomb warning and palette/EXIF chatter: the rules below decide.
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as exc:
            return rejected(reasons.TOO_MANY_PIXELS, _describe(exc), image_bytes_size=size)
        except Exception as exc:  # Pillow raises many kinds on hostile bytes
            return rejected(reasons.UNDECODABLE, _describe(exc), image_bytes_size=size)
        try:
            return _inspect_open(img, size, rules, _known_size(original))
        except Exception as exc:  # e.g. a codec error outside load()
            return rejected(reasons.UNDECODABLE, _describe(exc), image_bytes_size=size)
        finally:
            img.close()


def _known_size(original: tuple[int | None, int | None] | None) -> tuple[int, int] | None:
    """``original`` when both sides are positive integers, else None (judge the stored image)."""
    if original is None or not all(isinstance(v, int) and v > 0 for v in original):
        return None
    return original  # type: ignore[return-value]


def _inspect_open(img: Image.Image, size: int, rules: ImageConfig, original: tuple[int, int] | None) -> ImageVerdict:
    stored_width, stored_height = img.size
    fmt = (img.format or "").lower() or None
    width, height = original or (stored_width, stored_height)
    measures: dict[str, Any] = {"width": width, "height": height, "image_bytes_size": size, "image_format": fmt}
    if original is not None:
        measures |= {"stored_width": stored_width, "stored_height": stored_height}
    if stored_width <= 0 or stored_height <= 0:
        return rejected(reasons.UNDECODABLE, f"{stored_width}x{stored_height} pixels", **measures)
    if stored_width * stored_height > rules.max_pixels:
        detail = f"{stored_width}x{stored_height} = {stored_width * stored_height} pixels (limit {rules.max_pixels})"
        return rejected(reasons.TOO_MANY_PIXELS, detail, **measures)
    # The size rules judge the original when the source recorded it; the detail says which.
    judged = f"original {width}x{height} (stored {stored_width}x{stored_height})" if original else f"{width}x{height}"
    if min(width, height) < rules.min_side:
        return rejected(reasons.LOW_RESOLUTION, f"{judged} (minimum side {rules.min_side})", **measures)
    ratio = max(width, height) / min(width, height)
    if ratio > rules.max_aspect_ratio:
        detail = f"{judged}, ratio {ratio:.3f} (limit {rules.max_aspect_ratio:g})"
        return rejected(reasons.ASPECT_RATIO, detail, **measures)
    if rules.phash == "fast" and img.format == "JPEG":
        side = max(FAST_PHASH_MIN_SIDE, rules.image_size if rules.keep_bytes else 0)
        img.draft("RGB" if rules.keep_bytes else "L", (side, side))
    try:
        img.load()
    except Exception as exc:
        return rejected(reasons.UNDECODABLE, f"decoding failed: {_describe(exc)}", **measures)
    phash = str(imagehash.phash(img))
    kept = encode_resized(img, rules) if rules.keep_bytes else None
    return ImageVerdict(None, None, image_phash=phash, image=kept, **measures)


def phash_bytes(data: bytes) -> str | None:
    """``str(imagehash.phash(image))`` of encoded bytes, or None when Pillow cannot decode them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return str(imagehash.phash(img))
        except Exception:
            return None


def phash_verdict(data: bytes | None) -> tuple[str | None, str | None, str | None]:
    """``(image_phash, reason, detail)`` of one image for a blocklist; exactly one of hash and reason is set."""
    if data is None:
        return None, reasons.IMAGE_MISSING, "the row has no image bytes"
    try:
        verdict = inspect_image(data, BLOCKLIST_RULES)
    except Exception as exc:  # inspect_image does not raise; a bug must cost one row, not the job
        return None, reasons.IMAGE_ERROR, f"{type(exc).__name__}: {exc}"[:500]
    if verdict.reason is not None:
        return None, verdict.reason, verdict.detail
    return verdict.image_phash, None, None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB for JPEG: high bit depths scaled down, transparency flattened onto white."""
    if img.mode in _HIGH_BIT_DEPTH:
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img if img.mode == "RGB" else img.convert("RGB")


def resize(img: Image.Image, size: int, mode: str, only_if_bigger: bool) -> Image.Image:
    """img2dataset's resize modes: ``keep_ratio`` makes the smaller side ``size``;
    ``center_crop`` does that, then crops the centre ``size`` x ``size``; ``no``
    keeps the image. ``only_if_bigger`` never enlarges."""
    if mode == "no":
        return img
    width, height = img.size
    short = min(width, height)
    if only_if_bigger and short <= size:
        return img  # img2dataset leaves an image it does not resize alone: no crop either
    scale = size / short
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1:
        # Area averaging, as cv2's INTER_AREA that img2dataset shrinks with: an integer
        # box reduction first (cheap), then a box filter for the remaining fraction.
        scaled = img.resize(target, Image.Resampling.BOX, reducing_gap=2.0)
    elif scale > 1:
        scaled = img.resize(target, Image.Resampling.LANCZOS)  # img2dataset enlarges with Lanczos
    else:
        scaled = img
    if mode == "center_crop":
        w, h = scaled.size
        side_w, side_h = min(w, size), min(h, size)
        left, top = (w - side_w) // 2, (h - side_h) // 2
        scaled = scaled.crop((left, top, left + side_w, top + side_h))
    return scaled


def encode_resized(img: Image.Image, rules: ImageConfig) -> bytes:
    """The kept image: EXIF orientation applied, RGB, resized, JPEG at ``encode_quality``."""
    # exif_transpose copies the image even when there is nothing to turn: look first.
    turned = img.getexif().get(EXIF_ORIENTATION, 1) not in (None, 1)
    upright = (ImageOps.exif_transpose(img) or img) if turned else img
    out = resize(to_rgb(upright), rules.image_size, rules.resize_mode, rules.resize_only_if_bigger)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=rules.encode_quality)
    return buf.getvalue()


@dataclass(frozen=True)
class Thumbnail:
    """A small JPEG of an image for the report, and its size in pixels."""

    data: bytes
    width: int
    height: int


# What a report thumbnail may cost: the pixels decoded for it (a bomb stays a header read), its
# encoded size (re-encoded at lower qualities until it fits, else no thumbnail).
THUMBNAIL_MAX_PIXELS = 50_000_000
THUMBNAIL_QUALITIES = (75, 55, 35)


def thumbnail(data: bytes | None, max_side: int, max_bytes: int) -> Thumbnail | None:
    """``data`` shrunk to at most ``max_side`` pixels a side, upright, as a JPEG of at most
    ``max_bytes``; None when there are no bytes, Pillow cannot decode them or they do not fit.
    Never raises."""
    if not data:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0 or width * height > THUMBNAIL_MAX_PIXELS:
                    return None
                img.draft("RGB", (max_side, max_side))  # JPEG: decode at a fraction of the size
                turned = img.getexif().get(EXIF_ORIENTATION, 1) not in (None, 1)
                upright = (ImageOps.exif_transpose(img) or img) if turned else img
                small = to_rgb(upright)
                small.thumbnail((max_side, max_side), Image.Resampling.BOX)
                for quality in THUMBNAIL_QUALITIES:
                    buf = io.BytesIO()
                    small.save(buf, format="JPEG", quality=quality)
                    if buf.tell() <= max_bytes:
                        return Thumbnail(buf.getvalue(), small.width, small.height)
        except Exception:  # hostile bytes: the report shows the row as text
            return None
    return None
