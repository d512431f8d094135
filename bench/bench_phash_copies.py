"""Measurement: how far the pHash of img2dataset's stored copy is from the original's, per common setting.

img2dataset stores a resized re-encode of each image (by default 256 px, resize_mode
border, JPEG quality 95), so an img2dataset input gives the image stage the copy, not
the original: its ``image_phash`` is the copy's. This runs img2dataset's own
``Resizer`` (img2dataset 1.47.0 in build/img2dataset-venv, as bench_image.py builds it)
over generated photo-like originals (bench_image.make_jpeg: 640x480 to 1600x1200,
both orientations) for each setting, and prints per setting the Hamming distance
between ``str(imagehash.phash(original))`` and the copy's: the share at 0 (exact
dedup and blocklists at distance 0 still match), at <= 2, 4 and 8 (near-duplicate and
blocklist distances), the median and the maximum.

    .venv/bin/python bench/bench_phash_copies.py [--rows 300]
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import benchlib
import imagehash
from bench_image import ensure_img2dataset, i2d_env, make_jpeg
from PIL import Image

SETTINGS = [
    (256, "border"),  # img2dataset's defaults
    (256, "keep_ratio"),
    (256, "center_crop"),
    (384, "keep_ratio"),
    (512, "keep_ratio"),
    (512, "no"),  # no resize, but still re-encoded at quality 95
]
THRESHOLDS = (0, 2, 4, 8)

RESIZE_SCRIPT = """
import io, json, sys
from img2dataset.resizer import Resizer
folder, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import os
names = sorted(os.listdir(folder))
for size, mode in settings:
    resizer = Resizer(image_size=size, resize_mode=mode, resize_only_if_bigger=False, encode_quality=95)
    target = os.path.join(out, f"{size}-{mode}")
    os.makedirs(target, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            img, *_, err = resizer(io.BytesIO(f.read()))
        assert err is None, err
        with open(os.path.join(target, name), "wb") as f:
            f.write(img)
"""


def phash(path: Path) -> imagehash.ImageHash:
    with Image.open(io.BytesIO(path.read_bytes())) as img:
        return imagehash.phash(img)


def main(argv: list[str] | None = None) -> int:
    args = benchlib.BenchArgs(__doc__, "bench_phash_copies", rows=300, quick_rows=60, rows_help="images").parse(argv)
    exe = ensure_img2dataset()
    root = benchlib.BUILD / f"phash-copies-{args.rows}"
    originals, copies = root / "originals", root / "copies"
    originals.mkdir(parents=True, exist_ok=True)
    for seed in range(args.rows):
        path = originals / f"{seed:06d}.jpg"
        if not path.exists():
            path.write_bytes(make_jpeg(seed))
    python = exe.parent / "python"
    todo = [[size, mode] for size, mode in SETTINGS]
    subprocess.run(
        [str(python), "-c", RESIZE_SCRIPT, str(originals), str(copies), json.dumps(todo)], check=True, env=i2d_env()
    )
    base = {p.name: phash(p) for p in sorted(originals.iterdir())}
    report: dict = {"images": args.rows, "img2dataset": "1.47.0", "encode_quality": 95, "settings": {}}
    for size, mode in SETTINGS:
        folder = copies / f"{size}-{mode}"
        distances = [int(base[name] - phash(folder / name)) for name in base]
        row = {f"share_at_most_{t}": round(sum(d <= t for d in distances) / len(distances), 3) for t in THRESHOLDS}
        row |= {"median": statistics.median(distances), "max": max(distances)}
        report["settings"][f"image_size={size} resize_mode={mode}"] = row
    benchlib.publish(report, benchlib.load_average(), args.output, lambda r: json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(benchlib.run_main(main, "bench_phash_copies"))
