"""Unit tests of udfs/image.py (no Spark): the COYO image rules at their thresholds and in their order, every
image kind the web serves (modes, containers, animations, EXIF, bombs, non-images), pHash identity with
``imagehash.phash``, the fast pHash's measured agreement, and the kept bytes against img2dataset's resize modes.

img2dataset's resizer (``img2dataset/resizer.py``) is the reference for ``keep_bytes``:
- keep_ratio: the *smaller* side becomes ``image_size`` (albumentations ``smallest_max_size``, Python ``round``);
- center_crop: the same, then the centre ``image_size`` x ``image_size``;
- resize_only_if_bigger: resize (and crop) only when min(width, height) > image_size, else the image is only
  re-encoded (the crop is inside the resize branch);
- no: re-encoded, size unchanged; alpha is matted onto white.
winnow differs on purpose in one point: it applies the EXIF orientation first (cv2 IMREAD_UNCHANGED does not).
"""

from __future__ import annotations

import functools
import io
import random
import time
import tracemalloc
import warnings

import imagehash
import numpy as np
import pytest
from image_factory import (
    animated_gif,
    animated_webp,
    bilevel_png,
    bmp_bytes,
    bomb_png,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    first_frame,
    gray16_png,
    gray_jpeg,
    html_page,
    jpeg_bytes,
    la_png,
    pad_png,
    palette_png,
    png_bytes,
    progressive_jpeg,
    random_bytes,
    rgba_png,
    scene,
    smallest_png,
    svg_image,
    tiff_bytes,
    truncated,
    truncated_jpeg,
    varied_image,
    webp_bytes,
)
from PIL import Image

from jobs.config import load_config
from schemas import reasons
from udfs.image import ImageConfig, ImageVerdict, inspect_image, phash_bytes

RULES = ImageConfig()


def reference_phash(data: bytes) -> str:
    """What the design promises: the common implementation, on what Pillow opens."""
    return str(imagehash.phash(Image.open(io.BytesIO(data))))


def assert_accepted(verdict: ImageVerdict, width: int, height: int, fmt: str, data: bytes) -> None:
    assert (verdict.reason, verdict.detail) == (None, None)
    assert (verdict.width, verdict.height) == (width, height)
    assert verdict.image_format == fmt
    assert verdict.image_bytes_size == len(data)
    assert verdict.image_phash == reference_phash(data)
    assert verdict.image is None  # keep_bytes is off by default


def kept(data: bytes, **rules) -> Image.Image:
    verdict = inspect_image(data, ImageConfig(keep_bytes=True, **rules))
    assert verdict.reason is None, verdict
    img = Image.open(io.BytesIO(verdict.image))
    assert img.format == "JPEG"
    img.load()  # decodable, completely
    assert img.mode == "RGB"
    return img


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0..255) of two images of one size, compared at 64 x 64 so JPEG's
    loss on the noisy test scenes averages out and only the picture counts (what is where, which way up)."""
    assert a.size == b.size
    small = [np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BOX), float) for img in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())


# --- configuration --------------------------------------------------------------------------------------------------


def test_rules_default_to_the_coyo_values_and_the_config_defaults():
    assert (RULES.min_bytes, RULES.min_side, RULES.max_aspect_ratio) == (5120, 200, 3.0)
    assert RULES.max_pixels == Image.MAX_IMAGE_PIXELS
    assert (RULES.phash, RULES.keep_bytes, RULES.resize_mode) == ("exact", False, "keep_ratio")


def test_the_image_section_is_what_the_rules_read():
    sets = ["image.min_bytes=1", "image.min_side=2", "image.max_aspect_ratio=4.5", "image.max_pixels=7"]
    sets += ["image.phash=fast", "image.keep_bytes=true", "image.image_size=64", "image.resize_mode=center_crop"]
    rules = load_config(sets=sets + ["image.resize_only_if_bigger=true", "image.encode_quality=80"]).image
    assert rules == ImageConfig(
        min_bytes=1,
        max_aspect_ratio=4.5,
        min_side=2,
        max_pixels=7,
        phash="fast",
        keep_bytes=True,
        image_size=64,
        resize_mode="center_crop",
        resize_only_if_bigger=True,
        encode_quality=80,
    )
    assert inspect_image(b"\x00" * 10, rules).reason == reasons.UNDECODABLE  # 10 bytes pass min_bytes 1


# --- each rule at its threshold -------------------------------------------------------------------------------------


def test_file_size_boundary_5119_rejected_5120_accepted():
    base = smallest_png(300, 200)
    assert len(base) < 1000  # a flat PNG: the padding chunk decides the size
    below, at = pad_png(base, 5119), pad_png(base, 5120)
    verdict = inspect_image(below, RULES)
    assert verdict.reason == reasons.FILE_TOO_SMALL
    assert verdict.image_bytes_size == 5119
    assert_accepted(inspect_image(at, RULES), 300, 200, "png", at)
    # the padding is an ancillary chunk: same pixels, same pHash
    assert reference_phash(at) == reference_phash(base)


def test_file_size_boundary_follows_min_bytes():
    data = pad_png(smallest_png(300, 200), 2000)
    assert inspect_image(data, ImageConfig(min_bytes=2001)).reason == reasons.FILE_TOO_SMALL
    assert inspect_image(data, ImageConfig(min_bytes=2000)).reason is None


@pytest.mark.parametrize(("width", "height"), [(199, 300), (300, 199), (199, 199)])
def test_min_side_199_is_low_resolution(width, height):
    data = png_bytes(width, height, seed=width + height)
    verdict = inspect_image(data, RULES)
    assert verdict.reason == reasons.LOW_RESOLUTION
    assert (verdict.width, verdict.height, verdict.image_format) == (width, height, "png")
    assert verdict.image_phash is None


@pytest.mark.parametrize(("width", "height"), [(200, 300), (300, 200), (200, 200)])
def test_min_side_200_is_accepted(width, height):
    data = png_bytes(width, height, seed=width + height)
    assert_accepted(inspect_image(data, RULES), width, height, "png", data)


@pytest.mark.parametrize(("width", "height"), [(600, 200), (200, 600)])
def test_aspect_ratio_exactly_3_is_accepted(width, height):
    data = jpeg_bytes(width, height, seed=3)
    assert_accepted(inspect_image(data, RULES), width, height, "jpeg", data)


@pytest.mark.parametrize(("width", "height"), [(601, 200), (200, 601)])
def test_aspect_ratio_just_above_3_is_rejected(width, height):
    verdict = inspect_image(jpeg_bytes(width, height, seed=3), RULES)
    assert verdict.reason == reasons.ASPECT_RATIO
    assert (verdict.width, verdict.height) == (width, height)


def test_aspect_ratio_follows_max_aspect_ratio():
    rules = ImageConfig(max_aspect_ratio=1.5)
    assert inspect_image(png_bytes(300, 200), rules).reason is None
    assert inspect_image(png_bytes(301, 200), rules).reason == reasons.ASPECT_RATIO


def test_max_pixels_boundary():
    rules = ImageConfig(max_pixels=400 * 300)
    data = png_bytes(400, 300)
    assert_accepted(inspect_image(data, rules), 400, 300, "png", data)
    verdict = inspect_image(png_bytes(401, 300), rules)
    assert verdict.reason == reasons.TOO_MANY_PIXELS
    assert (verdict.width, verdict.height) == (401, 300)
    assert "120300" in verdict.detail


# --- rule order: the first failing rule wins ------------------------------------------------------------------------


def test_small_file_wins_over_low_resolution():
    data = smallest_png(100, 100)
    assert len(data) < 5120
    assert inspect_image(data, RULES).reason == reasons.FILE_TOO_SMALL


def test_small_file_wins_over_undecodable():
    assert inspect_image(random_bytes(1000), RULES).reason == reasons.FILE_TOO_SMALL
    assert inspect_image(b"", RULES).reason == reasons.FILE_TOO_SMALL


def test_too_many_pixels_wins_over_low_resolution_and_aspect_ratio():
    rules = ImageConfig(max_pixels=30_000)
    assert inspect_image(png_bytes(250, 150), rules).reason == reasons.TOO_MANY_PIXELS  # also low-res
    assert inspect_image(png_bytes(800, 200), rules).reason == reasons.TOO_MANY_PIXELS  # also 4:1


def test_low_resolution_wins_over_aspect_ratio():
    assert inspect_image(png_bytes(150, 600), RULES).reason == reasons.LOW_RESOLUTION


def test_header_rules_win_over_a_failed_decode():
    # the size rules read the header; a truncated body is only found by the full decode, last
    low_res = truncated(encode(scene(180, 400, seed=1), "JPEG", quality=100))
    wide = truncated(encode(scene(1000, 300, seed=2), "JPEG", quality=100))
    assert min(len(low_res), len(wide)) >= 5120
    assert inspect_image(low_res, RULES).reason == reasons.LOW_RESOLUTION
    assert inspect_image(wide, RULES).reason == reasons.ASPECT_RATIO
    assert inspect_image(truncated_jpeg(), RULES).reason == reasons.UNDECODABLE


# --- every kind of input --------------------------------------------------------------------------------------------

ACCEPTED_KINDS = {
    "jpeg-cmyk": (cmyk_jpeg, 400, 300, "jpeg"),
    "jpeg-gray": (gray_jpeg, 400, 300, "jpeg"),
    "jpeg-progressive": (progressive_jpeg, 400, 300, "jpeg"),
    "jpeg-exif-orientation-6": (exif_rotated_jpeg, 400, 300, "jpeg"),  # as stored, not as displayed
    "png-I;16": (gray16_png, 400, 300, "png"),
    "png-P": (palette_png, 400, 300, "png"),
    "png-P-transparency": (functools.partial(palette_png, transparency=True), 400, 300, "png"),
    "png-RGBA": (rgba_png, 400, 300, "png"),
    "png-LA": (la_png, 400, 300, "png"),
    "png-1": (bilevel_png, 400, 300, "png"),
    "gif-animated": (animated_gif, 300, 250, "gif"),
    "webp-animated": (animated_webp, 300, 250, "webp"),
    "webp": (webp_bytes, 400, 300, "webp"),
    "bmp": (bmp_bytes, 400, 300, "bmp"),
    "tiff": (tiff_bytes, 400, 300, "tiff"),
}


@pytest.mark.parametrize("kind", sorted(ACCEPTED_KINDS))
def test_kind_is_accepted_with_its_size_and_format(kind):
    make, width, height, fmt = ACCEPTED_KINDS[kind]
    data = make()
    assert len(data) >= 5120
    assert_accepted(inspect_image(data, RULES), width, height, fmt, data)


@pytest.mark.parametrize("make", [animated_gif, animated_webp])
def test_animation_is_judged_by_its_first_frame(make):
    data = make()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    frames = []
    with Image.open(io.BytesIO(data)) as img:
        for i in range(img.n_frames):
            img.seek(i)
            frames.append(str(imagehash.phash(img.convert("RGB"))))
    assert len(set(frames)) == 3  # the frames differ, so the pHash tells which one was used
    assert inspect_image(data, RULES).image_phash == str(imagehash.phash(first_frame(data))) == frames[0]


REJECTED_KINDS = {
    "jpeg-truncated": (truncated_jpeg, reasons.UNDECODABLE),
    "png-truncated": (lambda: truncated(png_bytes(400, 300)), reasons.UNDECODABLE),
    "random-bytes": (random_bytes, reasons.UNDECODABLE),
    "html": (html_page, reasons.UNDECODABLE),
    "svg": (svg_image, reasons.UNDECODABLE),
    "bomb-20000x20000": (bomb_png, reasons.TOO_MANY_PIXELS),
    "bomb-10000x10000": (lambda: bomb_png(10_000, 10_000), reasons.TOO_MANY_PIXELS),
}


@pytest.mark.parametrize("kind", sorted(REJECTED_KINDS))
def test_kind_is_rejected_with_its_reason(kind):
    make, reason = REJECTED_KINDS[kind]
    data = make()
    assert len(data) >= 5120  # the file-size rule must not be what rejects it
    verdict = inspect_image(data, RULES)
    assert verdict.reason == reason
    assert verdict.detail
    assert verdict.image_bytes_size == len(data)
    assert verdict.image_phash is None and verdict.image is None


def test_truncated_image_keeps_its_header_measures():
    verdict = inspect_image(truncated_jpeg(800, 600), RULES)
    assert verdict.reason == reasons.UNDECODABLE
    assert (verdict.width, verdict.height, verdict.image_format) == (800, 600, "jpeg")


def test_pillow_warnings_do_not_leak():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inspect_image(bomb_png(10_000, 10_000), RULES)  # Pillow warns: DecompressionBombWarning
        inspect_image(palette_png(transparency=True), ImageConfig(keep_bytes=True))
    assert [str(w.message) for w in caught] == []


def test_inspect_never_raises_on_corrupted_bytes():
    sources = [jpeg_bytes(300, 200, 1), png_bytes(300, 200, 2), webp_bytes(300, 200, 3), animated_gif(220, 200, 4)]
    rnd = random.Random(7)
    seen = set()
    for n in range(160):
        data = bytearray(sources[n % len(sources)])
        for _ in range(rnd.randrange(1, 6)):
            data[rnd.randrange(min(len(data), 600))] = rnd.randrange(256)  # mostly headers and tables
        verdict = inspect_image(bytes(data), ImageConfig(keep_bytes=n % 2 == 0))
        assert verdict.reason is None or verdict.reason in reasons.IMAGE_RULE_REASONS
        seen.add(verdict.reason)
    assert reasons.UNDECODABLE in seen


# --- decompression bombs: refused from the header, never decoded ----------------------------------------------------


@pytest.mark.parametrize(("size", "rules"), [(20_000, RULES), (10_000, RULES), (3_000, ImageConfig(max_pixels=10**6))])
def test_bomb_is_refused_without_decoding(size, rules):
    data = bomb_png(size, size)  # built (and cached) before measuring
    assert len(data) < max(8192, size * size // 1000)
    before = Image.core.get_stats()
    tracemalloc.start()
    start = time.perf_counter()
    verdict = inspect_image(data, rules)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = Image.core.get_stats()
    assert verdict.reason == reasons.TOO_MANY_PIXELS
    assert elapsed < 0.5
    # Python-side buffers: far below the width*height bytes a decode would need
    assert peak < size * size // 100
    # Pillow's pixel memory is malloc'ed in C, invisible to tracemalloc: its arena counters show no image was made
    assert after["new_count"] == before["new_count"]
    assert after["allocated_blocks"] == before["allocated_blocks"]


def test_bomb_instrument_sees_a_real_decode():
    # the same measurement on an accepted 3000 x 3000 mode-1 image: Pillow does allocate its pixels
    before = Image.core.get_stats()
    assert inspect_image(bomb_png(3_000, 3_000), RULES).reason is None
    assert Image.core.get_stats()["new_count"] > before["new_count"]


# --- pHash identity -------------------------------------------------------------------------------------------------


@functools.cache
def varied_corpus(n: int = 306) -> tuple[tuple[str, bytes], ...]:
    return tuple(varied_image(i) for i in range(n))


def test_phash_is_imagehash_phash_bit_for_bit_on_300_varied_images():
    corpus = varied_corpus()
    assert len(corpus) >= 300
    kinds = {label.split()[0] for label, _ in corpus}
    assert len(kinds) >= 15
    mismatches, rejected = [], []
    for label, data in corpus:
        verdict = inspect_image(data, RULES)
        if verdict.reason is not None:
            rejected.append((label, verdict.reason, verdict.detail))
        elif verdict.image_phash != reference_phash(data):
            mismatches.append((label, verdict.image_phash, reference_phash(data)))
    assert rejected == []
    assert mismatches == []
    assert len({inspect_image(d, RULES).image_phash for _, d in corpus[:60]}) == 60  # distinct images, distinct hashes


def test_phash_bytes_matches_and_returns_none_on_garbage():
    for _, data in varied_corpus()[:34]:
        assert phash_bytes(data) == reference_phash(data)
    assert phash_bytes(random_bytes()) is None
    assert phash_bytes(svg_image()) is None
    assert phash_bytes(truncated_jpeg()) is None
    assert phash_bytes(b"") is None


def test_phash_is_16_hex_digits():
    value = inspect_image(jpeg_bytes(), RULES).image_phash
    assert len(value) == 16 and int(value, 16) >= 0


def test_phash_of_16_bit_png_is_imagehash_on_the_clipped_image():
    # imagehash converts with Image.convert("L"), which clips I;16 values above 255 instead of scaling them:
    # almost every pixel of a 16-bit image becomes white. Bit-for-bit identity keeps that behaviour.
    data = gray16_png()
    img = Image.open(io.BytesIO(data))
    assert img.mode == "I;16"
    assert np.asarray(img.convert("L")).mean() > 250
    assert inspect_image(data, RULES).image_phash == str(imagehash.phash(img))


# --- the fast pHash (JPEG draft decode): measured agreement ---------------------------------------------------------


def fast_corpus(n: int = 200) -> list[bytes]:
    """JPEGs (baseline, progressive, grey, CMYK) of many sizes; about half have a short side >= 512, where the
    draft decode shrinks them (below that only the decoded mode changes)."""
    out = []
    for i in range(n):
        rnd = random.Random(10_000 + i)
        short = rnd.randrange(200, 800)
        long = rnd.randrange(short, min(3 * short, 1100) + 1)
        width, height = (long, short) if rnd.random() < 0.5 else (short, long)
        make = (jpeg_bytes, progressive_jpeg, gray_jpeg, cmyk_jpeg)[i % 4]
        out.append(make(width, height, i) if make is not jpeg_bytes else make(width, height, i, rnd.randrange(60, 96)))
    return out


def test_fast_phash_agreement_with_exact(capsys):
    exact_rules, fast_rules = ImageConfig(), ImageConfig(phash="fast")
    distances, exact_time, fast_time = [], 0.0, 0.0
    for data in fast_corpus():
        start = time.perf_counter()
        exact = inspect_image(data, exact_rules)
        exact_time += time.perf_counter() - start
        start = time.perf_counter()
        fast = inspect_image(data, fast_rules)
        fast_time += time.perf_counter() - start
        assert exact.reason is None and fast.reason is None
        assert (fast.width, fast.height, fast.image_format) == (exact.width, exact.height, exact.image_format)
        distances.append(imagehash.hex_to_hash(exact.image_phash) - imagehash.hex_to_hash(fast.image_phash))
    n = len(distances)
    equal = sum(d == 0 for d in distances) / n
    near = sum(d <= 2 for d in distances) / n
    with capsys.disabled():
        print(
            f"\nfast pHash vs exact on {n} JPEGs: equal {equal:.1%}, Hamming <= 2 {near:.1%}, "
            f"max distance {max(distances)}, time fast/exact {fast_time / exact_time:.2f}"
        )
    # observed on this corpus: equal 91.5% (100% below 512 px a side except 1 progressive, ~80-90% above),
    # Hamming <= 2 100% (max 2); floors with margin
    assert equal >= 0.8
    assert near >= 0.97


def test_fast_phash_is_exact_for_other_formats():
    fast = ImageConfig(phash="fast")
    for data in (png_bytes(900, 700), webp_bytes(900, 700), tiff_bytes(600, 600)):
        assert inspect_image(data, fast).image_phash == reference_phash(data)


def test_fast_phash_keeps_full_size_measures_and_kept_bytes():
    data = jpeg_bytes(1600, 1200, seed=5)
    verdict = inspect_image(data, ImageConfig(phash="fast"))
    assert (verdict.width, verdict.height) == (1600, 1200)
    assert kept(data, phash="fast").size == (341, 256)


# --- keep_bytes: img2dataset's resize modes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (400, 300, (341, 256)),  # down: the smaller side becomes 256, 400 * 256 / 300 = 341.3
        (300, 400, (256, 341)),
        (600, 200, (768, 256)),  # up: without resize_only_if_bigger, small images are enlarged
        (256, 300, (256, 300)),  # already 256
        (1000, 999, (256, 256)),  # round(256.26)
    ],
)
def test_keep_ratio_makes_the_smaller_side_image_size(width, height, expected):
    assert kept(png_bytes(width, height, seed=1)).size == expected


def test_keep_ratio_content_is_the_whole_image():
    src = scene(400, 300, seed=11)
    out = kept(encode(src, "PNG"))
    assert mean_abs_diff(out, src.resize(out.size, Image.Resampling.LANCZOS)) < 3


@pytest.mark.parametrize(("width", "height"), [(400, 300), (300, 400), (600, 200), (256, 256)])
def test_center_crop_gives_a_square_of_the_centre(width, height):
    src = scene(width, height, seed=12)
    out = kept(encode(src, "PNG"), resize_mode="center_crop")
    assert out.size == (256, 256)
    scale = 256 / min(width, height)
    full = src.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    left, top = (full.width - 256) // 2, (full.height - 256) // 2
    assert mean_abs_diff(out, full.crop((left, top, left + 256, top + 256))) < 3
    if width != height:  # the centre, not a corner
        assert mean_abs_diff(out, full.crop((0, 0, 256, 256))) > 10


def test_resize_only_if_bigger_shrinks_big_images():
    assert kept(png_bytes(400, 300), resize_only_if_bigger=True).size == (341, 256)
    assert kept(png_bytes(400, 300), resize_mode="center_crop", resize_only_if_bigger=True).size == (256, 256)


@pytest.mark.parametrize(("width", "height"), [(300, 200), (256, 400)])
def test_resize_only_if_bigger_leaves_small_images_as_they_are(width, height):
    # img2dataset: no resize unless min(width, height) > image_size (256 x 400 is not bigger)
    assert kept(png_bytes(width, height), resize_only_if_bigger=True).size == (width, height)


@pytest.mark.parametrize(("width", "height"), [(300, 200), (256, 400)])
def test_resize_only_if_bigger_center_crop_leaves_small_images_uncropped(width, height):
    # img2dataset crops inside its resize branch: an image that is not resized is not cropped either
    data = png_bytes(width, height)
    assert kept(data, resize_mode="center_crop", resize_only_if_bigger=True).size == (width, height)


def test_resize_mode_no_keeps_the_size_and_reencodes_as_jpeg():
    data = png_bytes(640, 480)
    out = kept(data, resize_mode="no")
    assert out.size == (640, 480)
    assert mean_abs_diff(out, Image.open(io.BytesIO(data))) < 3


def test_image_size_is_configurable():
    assert kept(png_bytes(400, 300), image_size=64).size == (85, 64)
    assert kept(png_bytes(400, 300), image_size=64, resize_mode="center_crop").size == (64, 64)


def test_encode_quality_is_used():
    data = png_bytes(800, 600, seed=4)
    high = inspect_image(data, ImageConfig(keep_bytes=True, encode_quality=95)).image
    low = inspect_image(data, ImageConfig(keep_bytes=True, encode_quality=30)).image
    assert len(low) < len(high) * 0.6


def test_keep_bytes_does_not_change_the_measures():
    data = jpeg_bytes(400, 300, seed=9)
    plain, with_bytes = inspect_image(data, RULES), inspect_image(data, ImageConfig(keep_bytes=True))
    assert with_bytes.image is not None
    assert (plain.width, plain.height, plain.image_format, plain.image_bytes_size, plain.image_phash) == (
        with_bytes.width,
        with_bytes.height,
        with_bytes.image_format,
        with_bytes.image_bytes_size,
        with_bytes.image_phash,
    )


def test_exif_rotation_is_applied_to_the_kept_image_only():
    src = scene(400, 300, seed=13)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    data = encode(src, "JPEG", quality=95, exif=exif.tobytes())
    verdict = inspect_image(data, ImageConfig(keep_bytes=True))
    assert (verdict.width, verdict.height) == (400, 300)  # as stored
    assert verdict.image_phash == reference_phash(data)  # imagehash does not rotate either
    out = Image.open(io.BytesIO(verdict.image))
    assert out.size == (256, 341)  # portrait
    upright = src.transpose(Image.Transpose.ROTATE_270).resize(out.size, Image.Resampling.LANCZOS)
    wrong_way = src.transpose(Image.Transpose.ROTATE_90).resize(out.size, Image.Resampling.LANCZOS)
    assert mean_abs_diff(out, upright) < 3 < 20 < mean_abs_diff(out, wrong_way)


def test_exif_rotated_factory_image_is_kept_portrait():
    assert kept(exif_rotated_jpeg()).size == (256, 341)


def test_transparency_is_flattened_onto_white():
    img = scene(400, 300, seed=14, mode="RGBA")
    alpha = Image.new("L", (400, 300), 255)
    alpha.paste(0, (0, 0, 200, 300))  # left half fully transparent (its colour is black below)
    img.paste((0, 0, 0, 0), (0, 0, 200, 300))
    img.putalpha(alpha)
    out = np.asarray(kept(encode(img, "PNG"), resize_mode="no"), float)
    assert out[:, :190].mean() > 250  # white, not black
    assert out[:, 210:].mean() < 230


@pytest.mark.parametrize(
    "make",
    [cmyk_jpeg, gray_jpeg, gray16_png, palette_png, functools.partial(palette_png, transparency=True), rgba_png],
    ids=["cmyk", "gray", "I;16", "P", "P-tRNS", "RGBA"],
)
def test_kept_image_of_every_mode_is_rgb_jpeg(make):
    assert kept(make()).size == (341, 256)


def test_kept_16_bit_image_is_scaled_not_clipped():
    out = np.asarray(kept(gray16_png(), resize_mode="no"), float)
    assert 40 < out.mean() < 215  # the ramp covers the range: mid grey on average, not all white


@pytest.mark.parametrize("make", [animated_gif, animated_webp])
def test_kept_animation_is_its_first_frame(make):
    data = make()
    out = kept(data, resize_mode="no")
    assert mean_abs_diff(out, first_frame(data)) < 3
    with Image.open(io.BytesIO(data)) as img:
        img.seek(1)
        assert mean_abs_diff(out, img.convert("RGB")) > 30
