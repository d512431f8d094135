"""img2dataset inputs are judged on the originals: the COYO size rules read original_width /
original_height (parquet columns, or each sample's .json), not the resized copy img2dataset stored.

The inputs are made here in img2dataset's exact layout: with its defaults (image_size 256,
resize_mode border) every stored copy is a 256 x 256 JPEG whatever the original's shape, and
`width` / `height` say 256 x 256 while `original_width` / `original_height` keep the original's.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_factory import scene
from PIL import Image

from jobs import pipeline
from schemas import reasons

pytestmark = pytest.mark.spark

# key -> the original's size, and what the rules should say of it
ORIGINALS = {
    "000000000": ((1000, 300), reasons.ASPECT_RATIO),  # the copy is 256 x 256 and would pass
    "000000001": ((640, 180), reasons.LOW_RESOLUTION),  # min side 180 < 200
    "000000002": ((800, 600), None),
    "000000003": ((256, 256), None),  # stored at its own size
    "000000004": ((None, None), None),  # no size recorded: the stored copy is judged
}


def bordered_copy(width: int, height: int, seed: int) -> bytes:
    """What img2dataset stores by default: the image fitted into 256 x 256 on a black border, JPEG q95."""
    img = scene(width, height, seed=seed)
    img.thumbnail((256, 256))
    canvas = Image.new("RGB", (256, 256))
    canvas.paste(img, ((256 - img.width) // 2, (256 - img.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=95)
    return out.getvalue()


def sample(key: str, i: int) -> tuple[dict[str, Any], bytes]:
    (ow, oh), _ = ORIGINALS[key]
    data = bordered_copy(ow or 400, oh or 300, seed=i)
    meta = {
        "url": f"http://127.0.0.1:9/{key}.jpg",  # refused before any connect if it were fetched
        "caption": f"a photo number {i}",
        "key": key,
        "status": "success",
        "error_message": None,
        "width": 256,
        "height": 256,
        "original_width": ow,
        "original_height": oh,
        "exif": "{}",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return meta, data


def run(spark: Any, source: Path, out: Path, fmt: str) -> dict[str, Any]:
    argv = ["--input", str(source), "--output", str(out), "--input-format", fmt, "--stages", "image"]
    assert pipeline.main(argv) == 0
    accepted = [
        {**r.asDict(), "reason": None, "detail": None} for r in spark.read.parquet(str(out / "accepted")).collect()
    ]
    rejected = [r.asDict() for r in spark.read.parquet(str(out / "rejected")).collect()]
    return {r["key"]: r for r in accepted + rejected}


def check(got: dict[str, Any]) -> None:
    for key, (_, expected) in ORIGINALS.items():
        assert got[key]["reason"] == expected, (key, got[key]["reason"], got[key]["detail"])
    assert got["000000000"]["detail"] == "original 1000x300 (stored 256x256), ratio 3.333 (limit 3)"
    assert got["000000001"]["detail"] == "original 640x180 (stored 256x256) (minimum side 200)"
    big, same, unknown = got["000000002"], got["000000003"], got["000000004"]
    # width / height are the original's; the stored copy's size and kind in their own columns
    assert (big["width"], big["height"], big["stored_width"], big["stored_height"]) == (800, 600, 256, 256)
    assert big["image_stored"] == "resized"
    assert (same["width"], same["height"], same["image_stored"]) == (256, 256, "same-size")
    assert (unknown["width"], unknown["height"], unknown["image_stored"]) == (256, 256, None)
    assert unknown["stored_width"] is None


def test_img2dataset_parquet_is_judged_on_the_originals(spark: Any, tmp_path: Path) -> None:
    rows = []
    for i, key in enumerate(ORIGINALS):
        meta, data = sample(key, i)
        rows.append({**meta, "jpg": data})
    folder = tmp_path / "i2d"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    (folder / "00000_stats.json").write_text(json.dumps({"count": len(rows)}))
    check(run(spark, folder, tmp_path / "out", "img2dataset-parquet"))


def test_img2dataset_webdataset_is_judged_on_the_originals(spark: Any, tmp_path: Path) -> None:
    folder = tmp_path / "i2d"
    folder.mkdir()
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for i, key in enumerate(ORIGINALS):
            meta, data = sample(key, i)
            caption = meta.pop("caption")
            for name, payload in (
                (f"{key}.jpg", data),
                (f"{key}.txt", caption.encode()),
                (f"{key}.json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    check(run(spark, folder, tmp_path / "out", "webdataset"))
