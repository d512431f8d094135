"""Local-mode Spark tests of the image stage (jobs.stages.image) against the hostile server.

One DataFrame row per misbehaviour route of tests/hostile_server.py, plus a
null URL and a carried column; the stage runs once per module (requests run
concurrently inside each task) and each row's verdict is asserted on its own.
"""

from __future__ import annotations

import io
import math
import uuid

import imagehash
import pytest
from hostile_server import images, serve
from PIL import Image
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from jobs.config import load_config
from jobs.stages.image import split_image, with_image_verdicts
from schemas import reasons
from schemas.tables import IMAGE_MEASURES, REJECT

pytestmark = [pytest.mark.spark, pytest.mark.timeout(120)]

INPUT = StructType(
    [
        StructField("id", LongType()),
        StructField("url", StringType()),
        StructField("caption", StringType()),
        StructField("dump", StringType()),
        StructField("source_note", StringType()),
    ]
)

SETS = [
    "fetch.allow_networks=127.0.0.1/32",
    "fetch.timeout=2",
    "fetch.connect_timeout=1",
    "fetch.retries=1",
    "fetch.backoff=0.05",
    "fetch.max_bytes=5000000",
    "image.partitions=4",
]

ACCEPTED = None  # the expected reason of an accepted row

# name -> (path on the server or a special URL, expected reason, image served when accepted)
# "{canary}" is the canary server's base URL, "{refused}" a port that refuses connections.
CASES = {
    "good-jpeg": ("/img/good.jpg", ACCEPTED, "good.jpg"),
    "good-png": ("/img/good.png", ACCEPTED, "good.png"),
    "wrong-content-type": ("/img/good.jpg?ct=text/plain", ACCEPTED, "good.jpg"),
    "cmyk-jpeg": ("/img/cmyk.jpg", ACCEPTED, "cmyk.jpg"),
    "16-bit-png": ("/img/gray16.png", ACCEPTED, "gray16.png"),
    "palette-png": ("/img/palette.png", ACCEPTED, "palette.png"),
    "palette-alpha-png": ("/img/palette-alpha.png", ACCEPTED, "palette-alpha.png"),
    "animated-gif": ("/img/animated.gif", ACCEPTED, "animated.gif"),
    "animated-webp": ("/img/animated.webp", ACCEPTED, "animated.webp"),
    "exif-rotated-jpeg": ("/img/exif-rotated.jpg", ACCEPTED, "exif-rotated.jpg"),
    "webp": ("/img/photo.webp", ACCEPTED, "photo.webp"),
    "truncated-image": ("/img/truncated.jpg", reasons.UNDECODABLE, None),
    "zero-byte-200": ("/img/empty", reasons.FILE_TOO_SMALL, None),
    "html-200": ("/img/page.html", reasons.UNDECODABLE, None),
    "404": ("/status/404", reasons.HTTP_4XX, None),
    "410": ("/status/410", reasons.HTTP_4XX, None),
    "403": ("/status/403", reasons.HTTP_4XX, None),
    "429-then-ok": ("/flaky/429?retry_after=1", ACCEPTED, "good.jpg"),
    "429-retry-after-hour": ("/status/429?retry_after=3600", reasons.HTTP_4XX, None),
    "503-then-ok": ("/flaky/503", ACCEPTED, "good.jpg"),
    "500-always": ("/status/500", reasons.HTTP_5XX, None),
    "redirect-loop": ("/loop/a", reasons.TOO_MANY_REDIRECTS, None),
    "redirect-chain-10": ("/chain/10", reasons.TOO_MANY_REDIRECTS, None),
    "redirect-chain-3": ("/chain/3", ACCEPTED, "good.jpg"),
    "redirect-to-canary": ("/redirect?to={canary}/img/good.jpg", reasons.SSRF_REFUSED, None),
    "redirect-to-metadata": ("/redirect?to=http://169.254.169.254/latest/meta-data/", reasons.SSRF_REFUSED, None),
    "redirect-to-file": ("/redirect?to=file:///etc/passwd", reasons.UNSUPPORTED_SCHEME, None),
    "redirect-to-ftp": ("/redirect?to=ftp://127.0.0.1/x.jpg", reasons.UNSUPPORTED_SCHEME, None),
    "trickle": ("/trickle", reasons.TIMEOUT, None),
    "endless": ("/endless", reasons.TOO_LARGE, None),
    "lying-length": ("/lying-length", reasons.TRUNCATED, None),
    "10gb-length": ("/huge-length", reasons.TOO_LARGE, None),
    "bomb-30000": ("/img/bomb.png", reasons.TOO_MANY_PIXELS, None),
    "bomb-10000": ("/img/bomb100m.png", reasons.TOO_MANY_PIXELS, None),
    "robots-noai": ("/robots?tag=noai", reasons.ROBOTS_OPTOUT, None),
    "robots-noimageai": ("/robots?tag=noimageai", reasons.ROBOTS_OPTOUT, None),
    "robots-otherbot": ("/robots?tag=otherbot:+noai", ACCEPTED, "good.jpg"),
    "robots-winnow": ("/robots?tag=winnow:+noai", reasons.ROBOTS_OPTOUT, None),
    "silent": ("/silent", reasons.TIMEOUT, None),
    "refused": ("{refused}", reasons.CONNECT, None),
    "low-resolution": ("/img/small.png", reasons.LOW_RESOLUTION, None),
    "aspect-ratio": ("/img/wide.jpg", reasons.ASPECT_RATIO, None),
    "tiny-file": ("/img/tiny.jpg", reasons.FILE_TOO_SMALL, None),
    "literal-private": ("http://10.0.0.1/x.jpg", reasons.SSRF_REFUSED, None),
    "ftp-url": ("ftp://127.0.0.1/x.jpg", reasons.UNSUPPORTED_SCHEME, None),
    "garbage-url": ("http://127.0.0.1:99999/x.jpg", reasons.URL_INVALID, None),
    "null-url": (None, reasons.URL_INVALID, None),
}
DETAIL_HAS = {"404": "404", "410": "410", "403": "403", "429-retry-after-hour": "429", "500-always": "500"}


def reference_phash(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        return str(imagehash.phash(img))


@pytest.fixture(scope="module")
def server():
    with serve() as s:
        yield s


@pytest.fixture(scope="module")
def canary():
    with serve("127.0.0.2") as s:
        yield s


def case_url(spec: str | None, server, canary, k: str) -> str | None:
    if spec is None:
        return None
    if spec == "{refused}":
        return server.refused_url
    if not spec.startswith("/"):
        return spec
    spec = spec.replace("{canary}", canary.base)
    return server.base + spec + ("&" if "?" in spec else "?") + f"k={k}"


@pytest.fixture(scope="module")
def run(spark, server, canary):
    """The stage over one row per case, materialised once: (urls, annotated rows, accepted, rejected, input)."""
    k = uuid.uuid4().hex[:12]
    urls = {name: case_url(spec, server, canary, k) for name, (spec, _, _) in CASES.items()}
    rows = [(i, urls[name], f"caption {name}", "d1", name) for i, name in enumerate(CASES)]
    pairs = spark.createDataFrame(rows, INPUT).repartition(3)
    cfg = load_config(sets=SETS)
    annotated = with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score).cache()
    by_note = {r["source_note"]: r.asDict() for r in annotated.collect()}
    accepted, rejected = split_image(annotated, pairs.columns)
    yield {
        "urls": urls,
        "rows": by_note,
        "annotated": annotated,
        "accepted": accepted,
        "rejected": rejected,
        "pairs": pairs,
        "n": len(rows),
    }
    annotated.unpersist()


@pytest.mark.parametrize("name", list(CASES))
def test_each_misbehaviour_gets_its_reason(run, name):
    row = run["rows"][name]
    expected = CASES[name][1]
    assert row["reason"] == expected, f"{name}: expected {expected}, got {row['reason']} ({row['detail']})"
    if expected is not None:
        assert row["detail"], f"{name}: a reject needs a detail"
    if name in DETAIL_HAS:
        assert DETAIL_HAS[name] in row["detail"]


@pytest.mark.parametrize("name", [n for n, (_, reason, _) in CASES.items() if reason is ACCEPTED])
def test_accepted_rows_carry_the_image_measures(run, name):
    row = run["rows"][name]
    data = images()[CASES[name][2]][0]
    with Image.open(io.BytesIO(data)) as img:
        width, height, fmt = img.width, img.height, img.format.lower()
    assert (row["width"], row["height"]) == (width, height)
    assert row["image_format"] == fmt
    assert row["image_bytes_size"] == len(data)
    assert row["image_phash"] == reference_phash(data)
    assert "image" not in row, "image bytes are kept only with image.keep_bytes"


def test_every_row_once_and_conservation(run):
    annotated = run["annotated"]
    assert annotated.count() == run["n"]
    assert annotated.select("id").distinct().count() == run["n"]
    accepted, rejected = run["accepted"].count(), run["rejected"].count()
    assert accepted + rejected == run["n"]
    assert accepted == sum(1 for _, reason, _ in CASES.values() if reason is ACCEPTED)


def test_split_keeps_the_input_columns(run):
    pairs = run["pairs"]
    accepted, rejected = run["accepted"], run["rejected"]
    assert accepted.columns == pairs.columns + [f.name for f in IMAGE_MEASURES]
    assert rejected.columns[: len(REJECT.fields)] == REJECT.fieldNames()
    assert "source_note" in rejected.columns
    got = {r["source_note"]: r for r in rejected.collect()}
    want = {name for name, (_, reason, _) in CASES.items() if reason is not ACCEPTED}
    assert set(got) == want
    for name, r in got.items():
        assert (r["stage"], r["reason"], r["caption"], r["dump"]) == ("image", CASES[name][1], f"caption {name}", "d1")
        assert r["url"] == run["urls"][name]
    assert {r["source_note"] for r in accepted.collect()} == {n for n in CASES if n not in want}


def test_the_canary_saw_no_request(run, canary):
    assert canary.hits() == []


def test_retries_and_redirect_caps_as_seen_by_the_server(run, server):
    urls = run["urls"]
    assert server.count(urls["429-then-ok"]) == 2, "429 with Retry-After: 1, then one retry"
    assert server.count(urls["503-then-ok"]) == 2
    assert server.count(urls["500-always"]) == 2, "fetch.retries=1: two requests"
    assert server.count(urls["429-retry-after-hour"]) == 1, "Retry-After above the cap: no retry"
    assert server.count(urls["404"]) == 1
    k = urls["redirect-chain-10"].rsplit("k=", 1)[1]
    assert len([h for h in server.hits("/chain/", prefix=True) if h.path.endswith(k)]) == 6 + 4  # 10 -> 5, 3 -> 0


def test_the_stage_schema(run):
    schema = run["annotated"].schema
    for field in IMAGE_MEASURES:
        assert schema[field.name].dataType == field.dataType
    assert schema["reason"].dataType == StringType()
    assert schema["source_note"].dataType == StringType()


# --- NSFW score columns: refused before any request ------------------------------------------------------------------


def test_nsfw_scores_reject_without_fetching(spark, server):
    schema = StructType(INPUT.fields + [StructField("nsfw_score_gantman", DoubleType())])
    k = uuid.uuid4().hex[:12]
    scores = {"high": 0.9, "threshold": 0.5, "nan": math.nan, "below": 0.49, "null": None, "zero": 0.0}
    urls = {name: server.url("/img/good.jpg", k=f"{k}-{name}") for name in scores}
    rows = [(i, urls[n], f"caption {n}", "d1", n, s) for i, (n, s) in enumerate(scores.items())]
    pairs = spark.createDataFrame(rows, schema)
    cfg = load_config(sets=SETS)
    annotated = with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score).cache()
    got = {r["source_note"]: r for r in annotated.collect()}
    accepted, rejected = split_image(annotated, pairs.columns)
    assert accepted.count() + rejected.count() == len(rows)
    assert "nsfw_score_gantman" in accepted.columns and "nsfw_score_gantman" in rejected.columns
    annotated.unpersist()

    for name in ("high", "threshold", "nan"):
        assert got[name]["reason"] == reasons.SCORE_NSFW, name
        assert "nsfw_score_gantman" in got[name]["detail"]
        assert got[name]["width"] is None
        assert server.count(urls[name]) == 0, f"{name}: fetched although its NSFW score rejects it"
    for name in ("below", "null", "zero"):
        assert got[name]["reason"] is None, (name, got[name]["detail"])
        assert (got[name]["width"], got[name]["height"]) == (400, 300)
        assert server.count(urls[name]) == 1


def test_nsfw_threshold_follows_the_config(spark, server):
    schema = StructType(INPUT.fields + [StructField("nsfw_score_opennsfw2", DoubleType())])
    k = uuid.uuid4().hex[:12]
    rows = [(1, server.url("/img/good.jpg", k=k), "c", "d1", "x", 0.3)]
    cfg = load_config(sets=SETS + ["score.max_nsfw_score=0.25"])
    pairs = spark.createDataFrame(rows, schema)
    (row,) = with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score).collect()
    assert row["reason"] == reasons.SCORE_NSFW
    assert server.count(server.url("/img/good.jpg", k=k)) == 0


# --- keep_bytes: the resized image as a binary column ----------------------------------------------------------------


def test_keep_bytes_gives_a_resized_jpeg(spark, server):
    """resize_mode keep_ratio is img2dataset's: the SHORTER side becomes image_size (256), the ratio stays."""
    k = uuid.uuid4().hex[:12]
    rows = [
        (1, server.url("/img/good.jpg", k=k), "c", "d1", "landscape"),
        (2, server.url("/img/portrait.png", k=k), "c", "d1", "portrait"),
        (3, server.url("/status/404", k=k), "c", "d1", "missing"),
        (4, None, "c", "d1", "null"),
        (5, server.url("/img/exif-rotated.jpg", k=k), "c", "d1", "exif-rotated"),
        (6, server.url("/img/cmyk.jpg", k=k), "c", "d1", "cmyk"),
        (7, server.url("/img/gray16.png", k=k), "c", "d1", "gray16"),
        (8, server.url("/img/animated.gif", k=k), "c", "d1", "animated"),
        (9, server.url("/img/palette-alpha.png", k=k), "c", "d1", "palette-alpha"),
    ]
    pairs = spark.createDataFrame(rows, INPUT)
    cfg = load_config(sets=SETS + ["image.keep_bytes=true", "image.resize_mode=keep_ratio", "image.image_size=256"])
    annotated = with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score).cache()
    accepted, rejected = split_image(annotated, pairs.columns)
    assert accepted.columns == pairs.columns + [f.name for f in IMAGE_MEASURES] + ["image"]
    got = {r["source_note"]: r for r in accepted.collect()}
    assert set(got) == {"landscape", "portrait", "exif-rotated", "cmyk", "gray16", "animated", "palette-alpha"}
    assert rejected.count() == 2
    annotated.unpersist()

    expected = {
        "landscape": ((400, 300), (341, 256)),
        "portrait": ((300, 600), (256, 512)),
        # stored 400x300 with EXIF orientation 6: width / height as stored (COYO), kept image upright
        "exif-rotated": ((400, 300), (256, 341)),
        "cmyk": ((400, 300), (341, 256)),
        "gray16": ((400, 300), (341, 256)),
        "animated": ((300, 250), (307, 256)),  # the first frame
        "palette-alpha": ((400, 300), (341, 256)),
    }
    for name, (stored, resized) in expected.items():
        row = got[name]
        assert (row["width"], row["height"]) == stored, "width / height are the original's"
        with Image.open(io.BytesIO(row["image"])) as img:
            img.load()
            assert img.format == "JPEG"
            assert img.mode == "RGB", f"{name}: a training image is 8-bit RGB"
            assert img.size == resized, name
