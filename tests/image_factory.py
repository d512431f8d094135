"""Images made by the tests: deterministic, generated with Pillow, never downloaded.

Each function returns encoded bytes. ``seed`` changes the content so pHashes differ.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def scene(width: int, height: int, seed: int = 0, mode: str = "RGB", noise: float = 0.15) -> Image.Image:
    """A background with a few coloured shapes and some noise: distinct pHashes, files of a
    realistic size (a flat PNG would be smaller than the 5 KiB rule)."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (width, height), tuple(rnd.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rnd.randrange(width), rnd.randrange(height)
        x1, y1 = x0 + rnd.randrange(1, max(2, width // 2)), y0 + rnd.randrange(1, max(2, height // 2))
        colour = tuple(rnd.randrange(256) for _ in range(3))
        if rnd.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    if noise:
        grain = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
        img = Image.blend(img, grain, noise)
    return img.convert(mode) if mode != "RGB" else img


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg_bytes(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90) -> bytes:
    return encode(scene(width, height, seed), "JPEG", quality=quality)


def png_bytes(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    return encode(scene(width, height, seed), "PNG")
