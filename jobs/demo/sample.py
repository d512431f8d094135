"""The built-in sample used by `winnow demo` / `make demo`: generated, never downloaded.

Synthetic scenes described in plain English ("a small red circle above a blue
square on a wooden table") and drawn as images, mixed with rows that each COYO
text rule or image rule should reject (the ``expect`` column names the reason),
laid out as two crawl dumps (``dump=<name>/`` folders) of parquet. The URLs
point at 127.0.0.1, where ``serve_images`` serves the images during the demo.
"""

from __future__ import annotations

import io
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from schemas import reasons
from udfs.image import phash_bytes
from udfs.text_rules import TextConfig

COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "rectangle")
SIZES = ("small", "large", "tiny", "big")
RELATIONS = ("above", "below", "next to", "to the left of", "to the right of")
BACKGROUNDS = ("a grey background", "a sandy beach", "a wooden table", "a white wall", "green grass")

# One kind of bad row per rule, each with the reason the demo should report.
BAD_ROWS = (
    ("text-too-short", "red"),
    ("text-too-short", "a cat"),
    ("text-too-long", "a red circle on a white wall " * 40),
    ("text-too-few-words", "red circle"),
    ("text-too-many-words", "a cat " * 130),  # 260 words in 780 characters
    ("text-nsfw-word", "a porn magazine next to a red circle"),
    ("text-wrong-language", "ein kleiner roter Kreis über einem blauen Quadrat auf einem Holztisch"),
    ("text-wrong-language", "un petit cercle rouge au-dessus d'un carré bleu sur une table en bois"),
    ("text-wrong-language", "un pequeño círculo rojo encima de un cuadrado azul sobre una mesa de madera"),
    # Chinese has no spaces: one "word", so the word-count rule fires before CLD3.
    ("text-too-few-words", "一个红色的圆圈在蓝色方块的上面"),
    ("text-no-noun", "very quickly and very quietly"),
    ("missing-caption", ""),
    ("missing-caption", None),
    ("missing-url", "a small green triangle next to a yellow star"),
)
# Rows with a good caption whose image each image rule (or the fetcher) should reject.
BAD_IMAGES = (
    "http-4xx",  # no such file on the server
    "image-low-resolution",  # 150 x 150
    "image-aspect-ratio",  # 960 x 240
    "image-undecodable",  # an HTML page served as .jpg
    "image-file-too-small",  # a 240 x 240 JPEG of one flat colour: about 2 KB
    "robots-optout",  # served with X-Robots-Tag: noai
    "ssrf-refused",  # a URL on 127.0.0.2, which the demo does not allow
    "score-nsfw",  # nsfw_score_gantman = 0.93: never fetched (the NSFW rule, before fetching)
)
# Their captions: plain English that every text rule keeps (CLD3 is sure of each), so
# the row reaches the image stage; each appears at most text.max_occurrences times (copies), never too often.
BAD_IMAGE_CAPTIONS = (
    "a photograph of a wooden chair standing next to an open window in a sunny kitchen",
    "a small brown dog sleeping on a blue blanket in front of the fireplace at home",
    "an old red bicycle leaning against a brick wall on a quiet street in the city",
    "a bowl of fresh green apples on the kitchen table beside a glass of cold water",
    "two children playing football on the green grass of a park in the afternoon",
    "a white sailing boat on the calm blue sea under a clear sky in the summer",
    "a yellow taxi waiting at the traffic lights on a busy road in the evening",
    "a cup of hot coffee and a newspaper on a wooden table near the window",
)
SPAM = "click here to see the best deals on red circles today"  # more than text.max_occurrences copies


RGB = {
    "red": (220, 30, 30),
    "blue": (30, 60, 220),
    "green": (30, 160, 60),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND_RGB = {
    "a grey background": (128, 128, 128),
    "a sandy beach": (225, 200, 150),
    "a wooden table": (140, 95, 55),
    "a white wall": (235, 235, 228),
    "green grass": (70, 140, 60),
}
IMAGE_SIZE = (384, 288)


@dataclass(frozen=True)
class Scene:
    """Two shapes in a relation on a background: the caption and the image come from this."""

    size: str
    color: str
    shape: str
    relation: str
    other_color: str
    other_shape: str
    background: str

    @property
    def caption(self) -> str:
        return (
            f"a {self.size} {self.color} {self.shape} {self.relation} "
            f"a {self.other_color} {self.other_shape} on {self.background}"
        )

    def boxes(self) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Pixel boxes (x_min, y_min, x_max, y_max) of the first and the second shape."""
        w, h = IMAGE_SIZE
        first = {"small": 50, "tiny": 36, "large": 110, "big": 100}[self.size]
        second = 80
        if self.relation in ("above", "below"):
            top, bottom = (first, second) if self.relation == "above" else (second, first)
            a = ((w - top) // 2, 20, (w + top) // 2, 20 + top)
            b = ((w - bottom) // 2, h - 20 - bottom, (w + bottom) // 2, h - 20)
            return (a, b) if self.relation == "above" else (b, a)
        left, right = (first, second) if self.relation != "to the right of" else (second, first)
        a = (30, (h - left) // 2, 30 + left, (h + left) // 2)
        b = (w - 30 - right, (h - right) // 2, w - 30, (h + right) // 2)
        return (a, b) if self.relation != "to the right of" else (b, a)


def random_scene(rnd: random.Random) -> Scene:
    return Scene(
        rnd.choice(SIZES),
        rnd.choice(COLORS),
        rnd.choice(SHAPES),
        rnd.choice(RELATIONS),
        rnd.choice(COLORS),
        rnd.choice(SHAPES),
        rnd.choice(BACKGROUNDS),
    )


def scene_caption(rnd: random.Random) -> str:
    """One English description of a two-shape scene."""
    return random_scene(rnd).caption


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "star":
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        draw.regular_polygon((cx, cy, r), 5, fill=fill)  # a pentagon stands in for a star
        draw.polygon([(cx, y0), (cx + r * 0.3, cy), (cx - r * 0.3, cy)], fill=fill)
    elif shape == "rectangle":
        draw.rectangle((x0, y0 + (y1 - y0) // 4, x1, y1 - (y1 - y0) // 4), fill=fill)
    else:
        draw.rectangle(box, fill=fill)


def draw_scene(scene: Scene, seed: int) -> bytes:
    """The scene as a JPEG with a little sensor-like grain (real photos are never flat)."""
    rnd = random.Random(seed)
    img = Image.new("RGB", IMAGE_SIZE, BACKGROUND_RGB[scene.background])
    draw = ImageDraw.Draw(img)
    first, second = scene.boxes()
    _draw_shape(draw, scene.shape, first, RGB[scene.color])
    _draw_shape(draw, scene.other_shape, second, RGB[scene.other_color])
    grain = Image.frombytes("RGB", IMAGE_SIZE, rnd.randbytes(IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3))
    return _jpeg(Image.blend(img, grain, 0.08))


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bad_image(kind: str, seed: int) -> bytes | None:
    """The file behind a BAD_IMAGES row (None: nothing is served)."""
    rnd = random.Random(seed)
    noisy = lambda size: Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))  # noqa: E731
    if kind == "image-low-resolution":
        return _jpeg(noisy((150, 150)))
    if kind == "image-aspect-ratio":
        return _jpeg(noisy((960, 240)))
    if kind == "image-undecodable":
        return b"<!doctype html><html><body>" + b"<p>not an image</p>" * 400 + b"</body></html>"
    if kind == "image-file-too-small":
        return _jpeg(Image.new("RGB", (240, 240), (200, 40, 40)))
    if kind == "robots-optout":
        return _jpeg(noisy((320, 240)))
    return None


def sample_rows(n: int, seed: int = 0, base_url: str = "http://127.0.0.1:8765") -> list[dict]:
    """``n`` rows (n >= 100): about 90% scenes, the rest the bad rows above, shuffled.

    Each row's ``image`` says what ``write_sample`` draws for it: a scene, a
    bad image kind, or nothing.
    """
    rnd = random.Random(seed)
    rows: list[dict] = []
    most = TextConfig().max_occurrences
    copies = min(most, max(1, n // 200))  # at most text.max_occurrences copies each: not "too frequent"
    for kind, caption in BAD_ROWS * copies:
        url = None if kind == "missing-url" else "placeholder"
        rows.append({"url": url, "caption": caption, "expect": kind})
    for kind, caption in zip(BAD_IMAGES, BAD_IMAGE_CAPTIONS, strict=True):
        rows += [{"url": "placeholder", "caption": caption, "expect": kind, "image": kind} for _ in range(copies)]
    rows += [{"url": "placeholder", "caption": SPAM, "expect": "text-too-frequent"} for _ in range(most + 2)]
    # Scenes with messy whitespace, tabs and zero-width spaces normalise to clean text.
    for _ in range(copies):
        rows.append(
            {"url": "placeholder", "caption": "  a big\tblue\u200b star\n\nnext to a red circle  ", "expect": ""}
        )
    while len(rows) < n:
        scene = random_scene(rnd)
        rows.append({"url": "placeholder", "caption": scene.caption, "expect": "", "scene": scene})
    rnd.shuffle(rows)
    rows = rows[:n]
    _plant_duplicates(rows, copies)
    for i, row in enumerate(rows):
        row["key"] = f"{i:06d}"
        row["nsfw_score_gantman"] = 0.93 if row.get("image") == "score-nsfw" else round(rnd.uniform(0, 0.3), 3)
        if row["url"] is None:
            continue
        name = f"{i:06d}.jpg"
        if row.get("image") == "robots-optout":
            name = f"optout-{name}"
        elif row.get("image") == "ssrf-refused":
            row["url"] = f"http://127.0.0.2:{base_url.rsplit(':', 1)[-1].split('/')[0]}/sample/{name}"
            continue
        row["url"] = f"{base_url}/sample/{name}"
    return rows


def _plant_duplicates(rows: list[dict], copies: int) -> None:
    """Scene rows of the first dump become originals of exact copies in the second dump
    (same image, same caption: ``duplicate-pair``, the earlier dump wins), and others
    become images of the demo's eval-set blocklist (``eval-overlap``)."""
    half = len(rows) // 2
    first = [i for i in range(half) if rows[i]["expect"] == "" and "scene" in rows[i]]
    second = [i for i in range(half, len(rows)) if rows[i]["expect"] == "" and "scene" in rows[i]]
    for j, (orig, copy) in enumerate(zip(first[:copies], second, strict=False)):
        caption = f"a framed photograph of a lighthouse on a rocky coast, print number {j + 1}"
        rows[orig]["caption"] = rows[copy]["caption"] = caption
        rows[copy].update(expect=reasons.DUPLICATE_PAIR, scene=rows[orig]["scene"], same_image_as=orig)
    for j, i in enumerate(first[copies : 2 * copies]):
        rows[i].update(caption=f"an old map of the harbour with sailing ships, plate number {j + 1}", eval=True)
        rows[i]["expect"] = reasons.EVAL_OVERLAP


SAMPLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("expect", pa.string()),
        ("nsfw_score_gantman", pa.float64()),
    ]
)


BLOCKLIST_SCHEMA = pa.schema([("image_phash", pa.string()), ("source", pa.string())])


def write_sample(
    folder: str | Path,
    n: int = 2000,
    seed: int = 0,
    images: str | Path | None = None,
    base_url: str = "http://127.0.0.1:8765",
    blocklist: str | Path | None = None,
) -> Path:
    """Write the sample as ``folder/dump=2026-01/`` and ``folder/dump=2026-02/`` parquet; return ``folder``.

    With ``images``, also draw every row's image into that folder (what
    ``serve_images`` serves under ``base_url/sample/``); with ``blocklist`` as
    well, write the pHashes of the rows planted as ``eval-overlap`` there as an
    eval-set blocklist named ``demo-eval`` (the layout of ``winnow blocklist``).
    """
    folder = Path(folder)
    rows = sample_rows(n, seed, base_url)
    blocked: list[dict] = []
    if images is not None:
        target = Path(images)
        target.mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(rows):
            if row["url"] is None or not row["url"].startswith(base_url):
                continue
            if "image" in row:
                data = bad_image(row["image"], i)
            else:  # scenes, and rows the text rules reject (their image is never fetched)
                scene = row.get("scene") or random_scene(random.Random(i))
                data = draw_scene(scene, seed * 1_000_003 + row.get("same_image_as", i))
            if data is not None:
                (target / row["url"].rsplit("/", 1)[-1]).write_bytes(data)
            if row.get("eval"):
                blocked.append({"image_phash": phash_bytes(data), "source": row["url"]})
    if blocklist is not None:
        if images is None:
            raise ValueError("a blocklist needs the images: pass images= as well")
        target = Path(blocklist) / "name=demo-eval"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(blocked, schema=BLOCKLIST_SCHEMA), target / "part-0.parquet")
    half = len(rows) // 2
    for dump, part in (("2026-01", rows[:half]), ("2026-02", rows[half:])):
        target = folder / f"dump={dump}"
        target.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([{k: r.get(k) for k in SAMPLE_SCHEMA.names} for r in part], schema=SAMPLE_SCHEMA)
        pq.write_table(table, target / "part-0.parquet")
    return folder


@contextmanager
def serve_images(folder: str | Path, port: int = 0) -> Iterator[str]:
    """Serve ``folder`` at ``http://127.0.0.1:<port>/sample/`` while the block runs; yield the base URL.

    Files named ``optout-*`` are sent with ``X-Robots-Tag: noai``, as a site
    that opts out of AI training would.
    """
    root = Path(folder)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.removeprefix("/sample/")
            path = root / name
            if "/" in name or not name or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            if name.startswith("optout-"):
                self.send_header("X-Robots-Tag", "noai")
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            # A fetcher that refuses a body (robots-optout) hangs up mid-response: expected, not news.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="winnow-demo-images", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
