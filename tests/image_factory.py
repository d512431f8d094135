"""Images made by the tests: deterministic, generated with Pillow, never downloaded.

Each function returns encoded bytes. ``seed`` changes the content so pHashes differ.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import numpy as np
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


# --- more kinds: modes, containers, and bytes that are not a usable image ---------------------------------------------
# Every generator is deterministic for a given seed and, unless its point is to be small, gives a file of at least
# 5 KiB (the noise in ``scene`` keeps the encoders from squeezing it below the COYO minimum).

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC over type + payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def pad_png(data: bytes, size: int) -> bytes:
    """``data`` (a PNG) grown to exactly ``size`` bytes by an ancillary chunk before IEND.

    Decoders skip unknown ancillary chunks (lower-case first letter), so pixels, dimensions and pHash are unchanged;
    only the byte count moves. A chunk costs 12 bytes of framing, so ``size`` must be at least ``len(data) + 12``."""
    extra = size - len(data) - 12
    if extra < 0:
        raise ValueError(f"cannot pad a {len(data)}-byte PNG to {size} bytes (a chunk needs 12)")
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + png_chunk(b"wnPd", b"\0" * extra) + data[iend:]


def smallest_png(width: int, height: int) -> bytes:
    """A flat PNG of the given size: a few hundred bytes, for the file-size rule."""
    return encode(Image.new("RGB", (width, height), (90, 140, 200)), "PNG", optimize=True)


def gray_jpeg(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90) -> bytes:
    return encode(scene(width, height, seed, mode="L"), "JPEG", quality=quality)


def progressive_jpeg(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90) -> bytes:
    return encode(scene(width, height, seed), "JPEG", quality=quality, progressive=True, optimize=True)


def cmyk_jpeg(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90) -> bytes:
    return encode(scene(width, height, seed, mode="CMYK"), "JPEG", quality=quality)


def exif_rotated_jpeg(width: int = 400, height: int = 300, seed: int = 0, orientation: int = 6) -> bytes:
    """Stored ``width`` x ``height``; orientation 6 (rotate 90 clockwise to display) shows it as height x width."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(scene(width, height, seed), "JPEG", quality=90, exif=exif.tobytes())


def gray16_png(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    """16-bit grayscale PNG (opens as mode I;16): a diagonal ramp over the full 0..65535 range plus noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.int64)[None, :] * 65535 // max(1, width - 1)
    y = np.arange(height, dtype=np.int64)[:, None] * 997
    values = (x + y + rng.integers(0, 4096, (height, width))) % 65536
    return encode(Image.fromarray(values.astype(np.uint16)), "PNG", compress_level=1)


def palette_png(width: int = 400, height: int = 300, seed: int = 0, transparency: bool = False) -> bytes:
    """Mode P (adaptive palette); with ``transparency`` palette index 0 is transparent (a tRNS chunk)."""
    img = scene(width, height, seed).quantize(64, method=Image.Quantize.FASTOCTREE)
    return encode(img, "PNG", transparency=0) if transparency else encode(img, "PNG")


def rgba_png(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    """RGBA with a horizontal alpha ramp: fully transparent on the left, opaque on the right."""
    img = scene(width, height, seed)
    alpha = Image.linear_gradient("L").rotate(90).resize((width, height))
    img.putalpha(alpha)
    return encode(img, "PNG", compress_level=1)


def la_png(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    img = scene(width, height, seed, mode="L")
    return encode(Image.merge("LA", (img, Image.linear_gradient("L").resize((width, height)))), "PNG", compress_level=1)


def bilevel_png(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    """Mode 1 (one bit per pixel), dithered from a scene so it is not flat."""
    return encode(scene(width, height, seed, mode="1"), "PNG")


def _frames(width: int, height: int, seed: int, count: int) -> list[Image.Image]:
    # distinct seeds per frame: a decoder that used another frame would get another pHash
    return [scene(width, height, seed * 1000 + i) for i in range(count)]


def animated_gif(width: int = 300, height: int = 250, seed: int = 0, frames: int = 3) -> bytes:
    """Several different frames; the first one is the image (what Image.open shows)."""
    imgs = [f.quantize(255, method=Image.Quantize.FASTOCTREE) for f in _frames(width, height, seed, frames)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:], duration=100, loop=0)


def animated_webp(width: int = 300, height: int = 250, seed: int = 0, frames: int = 3) -> bytes:
    imgs = _frames(width, height, seed, frames)
    return encode(imgs[0], "WEBP", save_all=True, append_images=imgs[1:], duration=100, loop=0, quality=80)


def first_frame(data: bytes) -> Image.Image:
    """Frame 0 of an animation, decoded, as RGB."""
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        return img.convert("RGB")


def webp_bytes(width: int = 400, height: int = 300, seed: int = 0, quality: int = 80) -> bytes:
    return encode(scene(width, height, seed), "WEBP", quality=quality)


def bmp_bytes(width: int = 400, height: int = 300, seed: int = 0) -> bytes:
    return encode(scene(width, height, seed), "BMP")


def tiff_bytes(width: int = 400, height: int = 300, seed: int = 0, compression: str | None = "tiff_deflate") -> bytes:
    return encode(scene(width, height, seed), "TIFF", compression=compression)


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A decompression bomb: a small valid PNG whose header declares ``width`` x ``height`` (mode 1, all black).

    Written chunk by chunk with zlib so building it never holds the pixels (Pillow would need width*height bytes);
    padded to at least 6 KiB so the file-size rule is not what refuses it. 20000 x 20000 = 400 M pixels (~50 KB of
    file) is past 2 x Image.MAX_IMAGE_PIXELS, where Image.open itself raises DecompressionBombError;
    10000 x 10000 sits between Pillow's warning and its error."""
    return _bomb_png(width, height)


@functools.lru_cache(maxsize=8)
def _bomb_png(width: int, height: int) -> bytes:
    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    squeeze = zlib.compressobj(9)
    parts, done = [], 0
    while done < height:
        n = min(512, height - done)
        parts.append(squeeze.compress(row * n))
        done += n
    parts.append(squeeze.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale, no interlace
    data = PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")
    return data if len(data) >= 6144 else pad_png(data, 6144)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of ``data``: the header still parses, the pixel data ends early."""
    return data[: int(len(data) * keep)]


def truncated_jpeg(width: int = 800, height: int = 600, seed: int = 0) -> bytes:
    """A JPEG cut in half (still > 5 KiB): Pillow reads its size, then fails to decode the rest."""
    return truncated(jpeg_bytes(width, height, seed))


def random_bytes(size: int = 8192, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def html_page(size: int = 8192) -> bytes:
    """An HTML error page, what a server often sends instead of the image."""
    head = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>\n<h1>Not Found</h1>\n"
    para = b"<p>The requested URL was not found on this server. Please check the address and try again.</p>\n"
    body = head + para * (max(0, size - len(head)) // len(para) + 1)
    return body + b"</body></html>\n"


def svg_image(width: int = 400, height: int = 300, seed: int = 0, shapes: int = 120) -> bytes:
    """A vector image Pillow cannot open (no SVG plugin): undecodable for this pipeline."""
    rnd = random.Random(seed)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for _ in range(shapes):
        x, y, r = rnd.randrange(width), rnd.randrange(height), rnd.randrange(5, 60)
        out.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="#{rnd.randrange(1 << 24):06x}"/>')
    out.append("</svg>")
    return "\n".join(out).encode()


# Encoders for ``varied_image``: (label, function of (width, height, seed)). All give accepted images.
VARIED_KINDS = (
    ("jpeg", lambda w, h, s: jpeg_bytes(w, h, s, quality=60 + s % 35)),
    ("jpeg-gray", gray_jpeg),
    ("jpeg-progressive", progressive_jpeg),
    ("jpeg-cmyk", cmyk_jpeg),
    ("jpeg-exif6", exif_rotated_jpeg),
    ("png", png_bytes),
    ("png-P", palette_png),
    ("png-P-tRNS", lambda w, h, s: palette_png(w, h, s, transparency=True)),
    ("png-RGBA", rgba_png),
    ("png-LA", la_png),
    ("png-1", bilevel_png),
    ("png-I;16", gray16_png),
    ("webp", webp_bytes),
    ("webp-animated", lambda w, h, s: animated_webp(w, h, s, frames=2)),
    ("gif-animated", lambda w, h, s: animated_gif(w, h, s, frames=2)),
    ("bmp", bmp_bytes),
    ("tiff", tiff_bytes),
)


def varied_image(i: int) -> tuple[str, bytes]:
    """The ``i``-th of an endless, deterministic mix of kinds, sizes (200..560 a side, aspect <= 3) and seeds."""
    rnd = random.Random(i)
    label, make = VARIED_KINDS[i % len(VARIED_KINDS)]
    short = rnd.randrange(200, 380)
    long = rnd.randrange(short, min(3 * short, 560) + 1)
    width, height = (long, short) if rnd.random() < 0.5 else (short, long)
    return f"{label} {width}x{height} seed={i}", make(width, height, i)
