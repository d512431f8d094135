"""Benchmark: winnow's image stage against img2dataset, both fetching from one loopback server.

``--images`` N (default 3,000) distinct JPEGs (640x480 .. 1024x768, quality
85, ~40-140 KB, Pillow scenes from seeded shapes, colour fields and grain) are
generated once and cached under ``build/bench-images/``. A separate process
serves them from memory on 127.0.0.1 (ThreadingHTTPServer, HTTP/1.1
keep-alive, listen backlog 1024) and counts the requests, so each run is
checked to have fetched every image exactly once. Both sides read the same
URL list (parquet: id, url, caption, dump) and run on the same 2 cores:

- winnow: ``jobs.stages.image.with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score)`` on
  ONE ``local[2]`` session (started once; its start-up is reported apart),
  config ``fetch.allow_networks=127.0.0.1/32``, read from the URL list and
  written to parquet, in each ``--variants`` configuration, every one in every
  round: ``exact`` is the stage as specified (fetch, COYO checks, exact pHash;
  no image kept), ``exact-keep`` also keeps the image resized to 256
  keep_ratio and JPEG-encoded as img2dataset does (``image.keep_bytes``), and
  ``fast-keep`` does that with ``image.phash=fast``. Python workers are warmed
  before each timed run (their start-up is reported apart).
- img2dataset 1.47.0 (its own venv, ``build/img2dataset-venv``, made on first
  use from ``bench/img2dataset-requirements.txt``), as a subprocess: 2
  processes, 64 threads each (``--i2d-threads``; its default of 256 measured
  ~20% slower here), 4 shards (``--i2d-shards``: its default of 10,000 rows a
  shard would give one shard, one busy process), parquet output with the
  image bytes, ``--image_size 256 --resize_mode keep_ratio``, no wandb,
  ``--incremental_mode incremental`` on an emptied folder, no X-Robots-Tag
  check, no EXIF and no sha256 (winnow computes neither: the baseline does the
  least work that still fetches, decodes, resizes and writes). Its start-up
  (interpreter, imports, the spawned logger and pool processes) is the wall
  time of the same command on a 1-URL list, measured every round and
  subtracted as the median.

The two sides alternate (the first side swaps every run), ``--runs`` (default
3) times; the medians give images / s / core (images / wall s / 2 cores) and
the ratio winnow / img2dataset, start-ups apart and both cold. The CPU floor
is measured in one process on the same bytes already in memory, ``--runs``
rounds, medians: ``udfs.image.inspect_image`` (decode, COYO checks, pHash;
then with the stage's rules, which add the resize and JPEG encode), bare
``str(imagehash.phash(Image.open(...)))``, and img2dataset's own ``Resizer``
(cv2 decode, resize, encode; in its venv). Results go to
``bench/results/image.json``.

    .venv/bin/python bench/bench_image.py [--images 3000] [--runs 3] [--skip-img2dataset]
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchlib import (
    BUILD,
    CORES,
    MASTER,
    REPO,
    BenchArgs,
    alternate,
    interleave,
    load_average,
    per_core,
    publish,
    ratio,
    rounded,
    run_main,
    start_spark,
    timings,
    warm_workers,
)

IMAGES_DIR = BUILD / "bench-images"
WORK_DIR = BUILD / "bench-image-work"
I2D_VENV = BUILD / "img2dataset-venv"
I2D_REQUIREMENTS = REPO / "bench" / "img2dataset-requirements.txt"
I2D_PYTHON = os.environ.get("WINNOW_BENCH_PYTHON311", "python3.11")
# benchlib.CORES: local[2] for winnow, and img2dataset's --processes_count.
IMAGE_SIZE = 256
# winnow configurations timed (--set overrides on top of fetch.allow_networks=127.0.0.1/32):
# the stage as the issue defines it (fetch, COYO checks, exact pHash), then with the
# resized image kept like img2dataset's output, exact and fast pHash.
VARIANTS = {
    "exact": [],
    "exact-keep": ["image.keep_bytes=true"],
    "fast-keep": ["image.keep_bytes=true", "image.phash=fast"],
}
RESIZE_MODE = "keep_ratio"
# Bumped when the generator changes, so a stale cache is not reused.
IMAGES_VERSION = "v1"
# Realistic web photo sizes (landscape; a quarter are turned to portrait).
SIZES = ((640, 480), (720, 540), (800, 533), (800, 600), (900, 600), (960, 720), (1024, 683), (1024, 768))

log = logging.getLogger("winnow.bench.image")


# --- images -------------------------------------------------------------------------------------------------------


def make_jpeg(seed: int) -> bytes:
    """One deterministic photo-like JPEG: a smooth colour field, shapes and grain, quality 85."""
    import numpy as np
    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    width, height = rnd.choice(SIZES)
    if rnd.random() < 0.25:
        width, height = height, width
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rnd.randrange(8, 20)):
        x0, y0 = rnd.randrange(width), rnd.randrange(height)
        x1, y1 = x0 + rnd.randrange(10, width // 2), y0 + rnd.randrange(10, height // 2)
        colour = tuple(rnd.randrange(256) for _ in range(3))
        (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    # Sensor-like grain: what keeps the files at web-photo sizes instead of a few KB.
    grain = rng.normal(0.0, rnd.uniform(2.0, 6.0), (height, width, 1))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _write_jpeg(path: Path, seed: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(make_jpeg(seed))
    tmp.replace(path)


def ensure_images(n: int) -> list[Path]:
    """``n`` JPEGs under build/bench-images/<version>/, generated (on 2 processes) where missing."""
    folder = IMAGES_DIR / IMAGES_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        log.info("generating %d of %d images in %s", len(missing), n, folder)
        started = time.perf_counter()
        with ProcessPoolExecutor(CORES, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_jpeg, [paths[i] for i in missing], missing, chunksize=32))
        log.info("generated %d images in %.1f s", len(missing), time.perf_counter() - started)
    return paths


# --- the loopback image server ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # img2dataset opens a connection per image from up to 2 x thread_count threads;
    # the default backlog of 5 would drop SYNs and stall it on retransmits.
    request_queue_size = 1024


class _ImageHandler(BaseHTTPRequestHandler):
    """GET /img/<i>.jpg -> image i; GET /count -> requests for images so far (text)."""

    protocol_version = "HTTP/1.1"  # keep-alive for clients that want it (winnow's requests session)
    images: list[bytes] = []
    served = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/count":
            body, kind = str(type(self).served).encode(), "text/plain"
        else:
            name = self.path.rsplit("/", 1)[-1].removesuffix(".jpg")
            if not (self.path.startswith("/img/") and name.isdigit() and int(name) < len(self.images)):
                self.send_error(404)
                return
            body, kind = self.images[int(name)], "image/jpeg"
            with self.lock:
                type(self).served += 1
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


def serve_images(paths: list[str], conn: Connection) -> None:
    """Server process: load the images into memory, report the port, serve until the parent goes away."""
    _ImageHandler.images = [Path(p).read_bytes() for p in paths]
    server = _Server(("127.0.0.1", 0), _ImageHandler)
    conn.send(server.server_address[1])
    conn.close()
    parent = os.getppid()

    def watchdog() -> None:
        # Stop by itself when the bench is gone, even if it was killed.
        while os.getppid() == parent:
            time.sleep(1.0)
        server.shutdown()

    threading.Thread(target=watchdog, daemon=True).start()
    server.serve_forever(poll_interval=0.5)


class ImageServer:
    """The server process, started and stopped by the bench."""

    def __init__(self, paths: list[Path]):
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=serve_images, args=([str(p) for p in paths], send), name="bench-image-server", daemon=True
        )
        self.process.start()
        send.close()
        if not receive.poll(120):
            self.process.terminate()
            raise RuntimeError("the image server did not start within 120 s")
        self.port = receive.recv()
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, i: int) -> str:
        return f"{self.base}/img/{i}.jpg"

    def served(self) -> int:
        with urllib.request.urlopen(f"{self.base}/count", timeout=10) as r:
            return int(r.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def write_url_list(path: Path, server: ImageServer, ids: range) -> Path:
    """The canonical pair table (id, url, caption, dump) as one parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "url": [server.url(i) for i in ids],
            "caption": [f"a photo of shapes number {i}" for i in ids],
            "dump": ["bench"] * len(ids),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --- img2dataset ----------------------------------------------------------------------------------------------------


def i2d_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NO_ALBUMENTATIONS_UPDATE="1",  # albumentations otherwise asks PyPI for a newer version at import
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        PYTHONWARNINGS="ignore",
    )
    for key in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def ensure_img2dataset() -> Path:
    """build/img2dataset-venv with the pinned requirements; rebuilt when the requirements change."""
    stamp = I2D_VENV / ".requirements-sha256"
    want = hashlib.sha256(I2D_REQUIREMENTS.read_bytes()).hexdigest()
    exe = I2D_VENV / "bin" / "img2dataset"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return exe
    log.info("installing img2dataset into %s (one-off)", I2D_VENV)
    if I2D_VENV.exists():
        shutil.rmtree(I2D_VENV)
    subprocess.run([I2D_PYTHON, "-m", "venv", str(I2D_VENV)], check=True)
    pip = [str(I2D_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(I2D_REQUIREMENTS)], check=True)
    subprocess.run(
        [str(I2D_VENV / "bin" / "python"), "-c", "import img2dataset, cv2, albumentations"],
        check=True,
        env=i2d_env(),
    )
    stamp.write_text(want + "\n")
    return exe


def img2dataset_command(
    exe: Path, url_list: Path, output: Path, threads: int, per_shard: int, output_format: str
) -> list[str]:
    return [
        str(exe),
        "--url_list",
        str(url_list),
        "--input_format",
        "parquet",
        "--url_col",
        "url",
        "--caption_col",
        "caption",
        "--output_format",
        output_format,
        "--output_folder",
        str(output),
        "--processes_count",
        str(CORES),
        "--thread_count",
        str(threads),
        "--number_sample_per_shard",
        str(per_shard),
        "--image_size",
        str(IMAGE_SIZE),
        "--resize_mode",
        RESIZE_MODE,
        # Like winnow's resize: JPEG quality 95 (img2dataset's default too).
        "--encode_quality",
        "95",
        "--encode_format",
        "jpg",
        "--timeout",
        "10",
        "--retries",
        "0",
        "--enable_wandb",
        "False",
        # incremental (the default) on an emptied folder: nothing to skip, nothing to
        # glob but the folder itself. "overwrite" is broken in 1.47.0 on local disk:
        # it deletes the _tmp folder it has just made and the run fails.
        "--incremental_mode",
        "incremental",
        "--extract_exif",
        "False",
        "--compute_hash",
        "None",
        "--disallowed_header_directives",
        "[]",
    ]


def count_img2dataset_successes(output: Path, output_format: str) -> int:
    """Images img2dataset wrote with status success (from its parquet, or its .jpg files)."""
    if output_format == "files":
        return sum(1 for _ in output.glob("*/*.jpg"))
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    successes = 0
    for part in sorted(output.glob("*.parquet")):
        table = pq.read_table(part, columns=["status", "jpg"])
        ok = pc.equal(table["status"], "success")
        successes += pc.sum(pc.and_(ok, pc.is_valid(table["jpg"]))).as_py() or 0
    return successes


def shard_span(output: Path) -> float | None:
    """img2dataset's own view: first shard start to last shard end, from its *_stats.json files."""
    starts, ends = [], []
    for stats in output.glob("*_stats.json"):
        s = json.loads(stats.read_text())
        starts.append(s["start_time"])
        ends.append(s["end_time"])
    return max(ends) - min(starts) if starts else None


def run_img2dataset(
    exe: Path, url_list: Path, output: Path, expected: int, threads: int, per_shard: int, output_format: str
) -> tuple[float, float | None]:
    """Wall seconds of one img2dataset run (and its shard span); checks every image was written."""
    shutil.rmtree(output, ignore_errors=True)
    cmd = img2dataset_command(exe, url_list, output, threads, per_shard, output_format)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=i2d_env(), capture_output=True, text=True, cwd=str(WORK_DIR), timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"img2dataset failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    got = count_img2dataset_successes(output, output_format)
    if got != expected:
        raise RuntimeError(
            f"img2dataset wrote {got} of {expected} images; its output:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return seconds, shard_span(output)


I2D_FLOOR_SCRIPT = """
import io, json, sys, time
from img2dataset.resizer import Resizer
paths, limit, size, mode = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = [open(p, "rb").read() for p in paths]
resizer = Resizer(image_size=size, resize_mode=mode, resize_only_if_bigger=False, encode_quality=95)
resizer(io.BytesIO(data[0]))
started = time.perf_counter()
for i in range(limit):
    img, *_, err = resizer(io.BytesIO(data[i % len(data)]))
    assert err is None, err
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def img2dataset_floor(paths: list[Path], count: int) -> float:
    """Seconds for img2dataset's Resizer (cv2 decode + resize + JPEG encode) over ``count`` images, one process."""
    python = I2D_VENV / "bin" / "python"
    done = subprocess.run(
        [
            str(python),
            "-c",
            I2D_FLOOR_SCRIPT,
            json.dumps([str(p) for p in paths]),
            str(count),
            str(IMAGE_SIZE),
            RESIZE_MODE,
        ],
        env=i2d_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


# --- winnow ---------------------------------------------------------------------------------------------------------


def load_image_modules() -> None:
    """The image stage's modules, imported in a (worker) process before a timed run (benchlib.warm_workers).

    The img2dataset run in between can outlast Spark's one-minute idle timeout
    for Python workers, so they are warmed before every timed run: the timing
    holds the stage, not worker start-up, as img2dataset's start-up is subtracted too.
    """
    import imagehash  # noqa: F401
    import PIL.Image  # noqa: F401

    import udfs.fetch  # noqa: F401
    import udfs.image  # noqa: F401


def run_winnow(spark: Any, cfg: Any, url_list: Path, output: Path) -> float:
    """Wall seconds of the image stage: URL list parquet in, parquet with the image bytes out."""
    from jobs.stages.image import with_image_verdicts

    started = time.perf_counter()
    pairs = spark.read.parquet(str(url_list))
    verdicts = with_image_verdicts(pairs, cfg.fetch, cfg.image, cfg.score.max_nsfw_score)
    verdicts.write.mode("overwrite").parquet(str(output))
    return time.perf_counter() - started


def check_winnow_output(spark: Any, output: Path, expected: int, keep_bytes: bool) -> dict[str, int]:
    """Rows per reason ("accepted" for null) in the written output; every image must be accepted with a
    pHash, and with bytes when they are kept."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(output))
    counts = {
        r["reason"] or "accepted": r["n"] for r in df.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    done = F.length("image") > 0 if keep_bytes else F.length("image_phash") == 16
    with_bytes = df.where(F.col("reason").isNull() & done).count()
    if counts.get("accepted", 0) != expected or with_bytes != expected or sum(counts.values()) != expected:
        details = [
            r.asDict()
            for r in df.where(F.col("reason").isNotNull()).select("id", "reason", "detail").limit(5).collect()
        ]
        raise RuntimeError(
            f"winnow accepted {counts.get('accepted', 0)} of {expected} images ({with_bytes} with bytes); "
            f"reasons {counts}; first rejects {details}"
        )
    return counts


# --- CPU floor ------------------------------------------------------------------------------------------------------


def cpu_floor(datas: list[bytes], count: int, image_cfgs: list[Any]) -> dict[str, float]:
    """Seconds, one process, ``count`` images cycled from ``datas``: inspect_image and bare imagehash."""
    import imagehash
    from PIL import Image

    from udfs.image import ImageConfig, inspect_image

    def timed(fn: Any) -> float:
        fn(datas[0])  # first call: lazy imports, caches
        started = time.perf_counter()
        for i in range(count):
            fn(datas[i % len(datas)])
        return time.perf_counter() - started

    def check(verdict: Any) -> None:
        if getattr(verdict, "reason", None) is not None:
            raise RuntimeError(f"inspect_image rejected a bench image: {verdict}")

    default_rules = ImageConfig()
    out = {
        "inspect_image, ImageConfig() (decode + checks + pHash)": timed(
            lambda d: check(inspect_image(d, default_rules))
        ),
        "str(imagehash.phash(Image.open(...)))": timed(lambda d: str(imagehash.phash(Image.open(io.BytesIO(d))))),
    }
    for image_cfg in image_cfgs:
        stage_rules = image_cfg
        if stage_rules != default_rules:
            name = f"inspect_image, stage rules, phash {stage_rules.phash} (+ resize, JPEG encode)"
            out[name] = timed(lambda d, rules=stage_rules: check(inspect_image(d, rules)))
    return out


# --- report ---------------------------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """Start-ups apart, the sides' table, the ratios and the CPU floor; the load averages follow (publish)."""
    n = report["images"]
    winnows = report["winnow"]
    first = next(iter(winnows.values()))
    i = report.get("img2dataset")
    lines = [
        f"{n:,} images ({report['image_bytes_mean'] / 1024:.0f} KiB mean, {report['image_sizes']}), "
        f"loopback server in its own process; {report['runs']} run(s) per side, alternating, medians",
        f"JVM start-up (SparkSession getOrCreate, once): {first['jvm_startup_s']:.1f} s",
    ]
    for mode, w in winnows.items():
        lines.append(
            f"Python worker warm-up before each winnow run ({mode}): "
            f"{', '.join(f'{s:.1f}' for s in w['worker_warmup_s'])} s"
        )
    if i:
        lines.append(
            f"img2dataset start-up (same command, 1-URL list): {', '.join(f'{s:.1f}' for s in i['startup_s'])} s, "
            f"median {i['startup_s_median']:.1f} s (subtracted)"
        )
    lines += ["", f"{'side':<34} {'runs (wall s)':<20} {'median s':>9} {'images/s':>9} {'img/s/core':>11}"]
    for mode, w in winnows.items():
        lines += [
            f"{'winnow ' + mode:<34} {', '.join(f'{s:.1f}' for s in w['seconds']):<20} "
            f"{w['seconds_median']:>9.1f} {w['images_per_s']:>9.1f} {w['images_per_s_per_core']:>11.1f}",
            f"{'winnow ' + mode + ', cold':<34} {'(+ JVM, workers)':<20} {w['seconds_cold']:>9.1f} "
            f"{n / w['seconds_cold']:>9.1f} {w['images_per_s_per_core_cold']:>11.1f}",
        ]
    if i:
        lines += [
            f"{'img2dataset (with start-up)':<34} {', '.join(f'{s:.1f}' for s in i['seconds']):<20} "
            f"{i['seconds_median']:>9.1f} {i['images_per_s_gross']:>9.1f} {i['images_per_s_per_core_gross']:>11.1f}",
            f"{'img2dataset (- start-up)':<34} {'':<20} {i['seconds_net_median']:>9.1f} "
            f"{i['images_per_s']:>9.1f} {i['images_per_s_per_core']:>11.1f}",
            "",
        ]
        for mode in winnows:
            lines.append(
                f"ratio winnow ({mode}) / img2dataset, images/s/core, start-up apart: "
                f"{report['ratio'][mode]:.2f}; both cold: {report['ratio_cold'][mode]:.2f} (above 1: winnow is faster)"
            )
        lines += [
            f"img2dataset's own shard span (first shard start to last end): "
            f"{', '.join(f'{s:.1f}' for s in i['shard_span_s'] if s is not None)} s",
            f"img2dataset settings: {i['settings']}",
        ]
    for mode, w in winnows.items():
        lines.append(f"winnow settings: {w['settings']}")
        lines.append(f"winnow output reasons ({mode}, last run): {w['reasons']}")
    lines += [
        "",
        f"CPU floor, one process, {report['cpu_floor']['images']:,} images from memory, median of "
        f"{report['cpu_floor']['rounds']} round(s) (images/s = per core):",
    ]
    for name, v in report["cpu_floor"]["results"].items():
        lines.append(f"  {name:<72} {v['images_per_s']:>8.1f} images/s  ({v['ms_per_image']:.1f} ms/image)")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(__doc__, "image")
    parser.add_argument("--images", type=int, default=3000, help="distinct images served and fetched (default 3000)")
    parser.add_argument("--skip-img2dataset", action="store_true", help="winnow and the CPU floor only")
    parser.add_argument(
        "--i2d-threads", type=int, default=64, help="img2dataset --thread_count per process (default 64)"
    )
    parser.add_argument(
        "--i2d-shards",
        type=int,
        default=4,
        help="img2dataset shards (sets --number_sample_per_shard; default 4 = 2 per process: its "
        "default of 10,000 per shard would give one shard, one busy process)",
    )
    parser.add_argument("--i2d-output-format", choices=("parquet", "files"), default="parquet")
    parser.add_argument(
        "--floor-images", type=int, default=200, help="images per CPU-floor measurement and round (default 200)"
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], help="extra winnow config override section.key=value"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"winnow configurations to time, each --runs times (default {','.join(VARIANTS)}; "
        + "; ".join(f"{k}: {' '.join(v) or 'the defaults'}" for k, v in VARIANTS.items())
        + ")",
    )
    args = parser.parse(argv)
    if args.images < 1 or args.floor_images < 1 or args.i2d_threads < 1 or args.i2d_shards < 1:
        parser.error("--images, --floor-images, --i2d-threads and --i2d-shards must be at least 1")

    from jobs.config import RunConfig, load_config

    modes = [m.strip() for m in args.variants.split(",") if m.strip()]
    if not modes or len(set(modes)) != len(modes) or not set(modes) <= set(VARIANTS):
        parser.error(f"--variants must name each of {', '.join(VARIANTS)} at most once")
    sets = ["fetch.allow_networks=127.0.0.1/32", *args.sets]
    try:
        cfgs = {mode: load_config(sets=[*sets, *VARIANTS[mode]]) for mode in modes}
    except ValueError as exc:
        parser.error(str(exc))
    cfg = cfgs[modes[0]]
    if cfg.image.image_size != IMAGE_SIZE or cfg.image.resize_mode != RESIZE_MODE:
        parser.error(f"img2dataset is run with --image_size {IMAGE_SIZE} --resize_mode {RESIZE_MODE}: keep them")

    n = args.images
    per_shard = -(-n // args.i2d_shards)
    i2d_exe = None if args.skip_img2dataset else ensure_img2dataset()
    paths = ensure_images(n)
    datas = [p.read_bytes() for p in paths]
    load_start = load_average()

    shutil.rmtree(WORK_DIR, ignore_errors=True)
    WORK_DIR.mkdir(parents=True)
    server = ImageServer(paths)
    spark = None
    try:
        url_list = write_url_list(WORK_DIR / "urls" / "urls.parquet", server, range(n))
        one_url = write_url_list(WORK_DIR / "one-url" / "urls.parquet", server, range(1))
        spark, jvm_startup_s = start_spark(MASTER, "winnow-bench-image", 2 * CORES, RunConfig().arrow_batch_size)
        log.info("JVM start-up %.1f s; serving %d images on %s", jvm_startup_s, n, server.base)

        ws: dict[str, dict[str, Any]] = {mode: {"worker_warmup_s": []} for mode in modes}
        i: dict[str, Any] = {"startup_s": [], "shard_span_s": []}

        def winnow_run(run: int, mode: str) -> float:
            w = ws[mode]
            w["worker_warmup_s"].append(warm_workers(spark, CORES, load_image_modules))
            before = server.served()
            seconds = run_winnow(spark, cfgs[mode], url_list, WORK_DIR / "winnow-out")
            fetched = server.served() - before
            w["reasons"] = check_winnow_output(spark, WORK_DIR / "winnow-out", n, cfgs[mode].image.keep_bytes)
            if fetched != n:
                raise RuntimeError(f"winnow fetched {fetched} images for {n} URLs")
            log.info(
                "run %d/%d winnow (%s): %.1f s = %.1f images/s/core",
                run,
                args.runs,
                mode,
                seconds,
                per_core(n, seconds),
            )
            return seconds

        def img2dataset_run(run: int) -> float:
            assert i2d_exe is not None
            fmt, threads = args.i2d_output_format, args.i2d_threads
            startup, _ = run_img2dataset(i2d_exe, one_url, WORK_DIR / "i2d-one", 1, threads, per_shard, fmt)
            before = server.served()
            seconds, span = run_img2dataset(i2d_exe, url_list, WORK_DIR / "i2d-out", n, threads, per_shard, fmt)
            fetched = server.served() - before
            if fetched != n:
                raise RuntimeError(f"img2dataset fetched {fetched} images for {n} URLs")
            i["startup_s"].append(startup)
            i["shard_span_s"].append(span)
            log.info(
                "run %d/%d img2dataset: %.1f s (start-up %.1f s) = %.1f images/s/core net",
                run,
                args.runs,
                seconds,
                startup,
                per_core(n, max(seconds - startup, 1e-9)),
            )
            return seconds

        # The winnow variants, then img2dataset; reversed every other round (the first side swaps).
        sides: dict[str, Any] = {mode: functools.partial(winnow_run, mode=mode) for mode in modes}
        if not args.skip_img2dataset:
            sides["img2dataset"] = img2dataset_run
        run_seconds = interleave(args.runs, sides, alternate)

        # Rounds alternate like the timed runs: the floor drifts as much as the runs do.
        floor_runs: dict[str, list[float]] = {}
        for run in range(1, args.runs + 1):
            log.info("CPU floor round %d/%d over %d images", run, args.runs, args.floor_images)
            floor_s = cpu_floor(datas, args.floor_images, [c.image for c in cfgs.values()])
            if not args.skip_img2dataset:
                floor_s["img2dataset Resizer (cv2 decode, resize, encode)"] = img2dataset_floor(
                    paths[: args.floor_images], args.floor_images
                )
            for name, seconds in floor_s.items():
                floor_runs.setdefault(name, []).append(seconds)
    finally:
        if spark is not None:
            spark.stop()
        server.stop()
        shutil.rmtree(WORK_DIR, ignore_errors=True)

    def summary(mode: str) -> dict[str, Any]:
        w, c = ws[mode], cfgs[mode]
        w_med = statistics.median(run_seconds[mode])
        w_cold = jvm_startup_s + statistics.median(w["worker_warmup_s"]) + w_med
        return {
            "jvm_startup_s": round(jvm_startup_s, 3),
            "worker_warmup_s": rounded(w["worker_warmup_s"]),
            **timings(run_seconds[mode]),
            "images_per_s": round(n / w_med, 2),
            "images_per_s_per_core": round(per_core(n, w_med), 2),
            # A cold job for comparison with img2dataset's gross figure: JVM + workers + stage.
            "seconds_cold": round(w_cold, 3),
            "images_per_s_per_core_cold": round(per_core(n, w_cold), 2),
            "reasons": w["reasons"],
            "settings": {
                "master": MASTER,
                "sets": [*sets, *VARIANTS[mode]],
                "image.keep_bytes": c.image.keep_bytes,
                "fetch.threads": c.fetch.threads,
                "fetch.max_per_host": c.fetch.max_per_host,
                "image.phash": c.image.phash,
                "image.image_size": c.image.image_size,
                "image.resize_mode": c.image.resize_mode,
                "image.encode_quality": c.image.encode_quality,
                "image.batch_size": c.image.batch_size,
                "image.partitions": c.image.partitions,
                "output": "parquet with the image bytes" if c.image.keep_bytes else "parquet (measures, pHash)",
            },
        }

    report: dict[str, Any] = {
        "bench": "image",
        "images": n,
        "image_bytes_mean": round(statistics.fmean(len(d) for d in datas)),
        "image_sizes": "640x480..1024x768, JPEG q85",
        "cores": CORES,
        "runs": args.runs,
        "winnow": {mode: summary(mode) for mode in modes},
    }
    if not args.skip_img2dataset:
        start_med = statistics.median(i["startup_s"])
        i_med = statistics.median(run_seconds["img2dataset"])
        net_med = max(i_med - start_med, 1e-9)
        report["img2dataset"] = {
            "version": "1.47.0",
            **timings(i["startup_s"], "startup_s"),
            **timings(run_seconds["img2dataset"]),
            "seconds_net_median": round(net_med, 3),
            "shard_span_s": [round(s, 3) if s is not None else None for s in i["shard_span_s"]],
            "images_per_s_gross": round(n / i_med, 2),
            "images_per_s_per_core_gross": round(per_core(n, i_med), 2),
            "images_per_s": round(n / net_med, 2),
            "images_per_s_per_core": round(per_core(n, net_med), 2),
            "settings": {
                "processes_count": CORES,
                "thread_count": args.i2d_threads,
                "number_sample_per_shard": per_shard,
                "output_format": args.i2d_output_format,
                "image_size": IMAGE_SIZE,
                "resize_mode": RESIZE_MODE,
                "encode_quality": 95,
                "extract_exif": False,
                "compute_hash": None,
                "disallowed_header_directives": [],
                "incremental_mode": "incremental (output folder emptied first)",
                "retries": 0,
                "enable_wandb": False,
            },
        }
        i2d = report["img2dataset"]
        report["ratio"] = {
            mode: ratio(w["images_per_s_per_core"], i2d["images_per_s_per_core"])
            for mode, w in report["winnow"].items()
        }
        report["ratio_cold"] = {
            mode: ratio(w["images_per_s_per_core_cold"], i2d["images_per_s_per_core_gross"])
            for mode, w in report["winnow"].items()
        }
    report["cpu_floor"] = {
        "images": args.floor_images,
        "rounds": args.runs,
        "results": {
            name: {
                "seconds": rounded(runs),
                "images_per_s": round(args.floor_images / statistics.median(runs), 2),
                "ms_per_image": round(1000 * statistics.median(runs) / args.floor_images, 3),
            }
            for name, runs in floor_runs.items()
        },
    }
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_image"))
