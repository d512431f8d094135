"""`winnow blocklist`: eval-set pHash blocklists from image folders, img2dataset parquet and ready pHashes.

A few pure tests of the per-image verdict first (no Spark), then local-mode
Spark tests on inputs made here: a folder of varied images (formats, nested
folders, upper-case extensions, undecodable files, decompression bombs, a
duplicate, a hidden file), img2dataset-like parquet with null bytes, and
COYO-like parquet with ready (some invalid) pHashes. Every expected hash is
``str(imagehash.phash(Image.open(...)))`` computed here, not by winnow.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_factory import (
    animated_gif,
    bmp_bytes,
    bomb_png,
    cmyk_jpeg,
    exif_rotated_jpeg,
    gray16_png,
    gray_jpeg,
    html_page,
    jpeg_bytes,
    palette_png,
    png_bytes,
    random_bytes,
    tiff_bytes,
    truncated_jpeg,
    webp_bytes,
)
from PIL import Image
from pyspark.sql.types import StringType, StructField, StructType
from pyspark.testing import assertSchemaEqual

from jobs import blocklist
from schemas import reasons
from schemas.tables import BLOCKLIST
from udfs.image import phash_verdict

pytestmark = pytest.mark.timeout(180)

UNDECODABLE, BOMB, MISSING, INVALID = (
    reasons.UNDECODABLE,
    reasons.TOO_MANY_PIXELS,
    reasons.IMAGE_MISSING,
    reasons.PHASH_INVALID,
)

# Relative path -> bytes. Small sizes (>= 1 px is enough here: no COYO size rule applies to a blocklist).
GOOD = {
    "a.jpg": jpeg_bytes(320, 240, seed=1),
    "B.PNG": png_bytes(300, 200, seed=2),
    "sub/c.webp": webp_bytes(240, 320, seed=3),
    "sub/deeper/d.GIF": animated_gif(200, 160, seed=4, frames=2),
    "sub/deeper/e.JPEG": gray_jpeg(256, 256, seed=5),
    "f.bmp": bmp_bytes(120, 90, seed=6),
    "g.TIF": tiff_bytes(160, 120, seed=7),
    "palette.png": palette_png(180, 180, seed=8),
    "sub/cmyk.jpg": cmyk_jpeg(200, 200, seed=14),
    "rotated.jpg": exif_rotated_jpeg(240, 180, seed=15),  # hashed as stored, as imagehash does
    "gray16.png": gray16_png(200, 150, seed=16),
    "tiny.png": png_bytes(8, 5, seed=9),  # far below COYO's 200 px and 5 KiB: still blocked
    "wide.jpg": jpeg_bytes(900, 100, seed=10),  # aspect 9: still blocked
    # the same bytes twice: one row, the smaller source (sub/aa.jpg sorts before zz.jpg)
    "zz.jpg": jpeg_bytes(330, 250, seed=11),
    "sub/aa.jpg": jpeg_bytes(330, 250, seed=11),
}
BAD = {
    "broken.jpg": (random_bytes(4000, seed=1), UNDECODABLE),
    "page.png": (html_page(2000), UNDECODABLE),
    "cut.jpg": (truncated_jpeg(400, 300, seed=2), UNDECODABLE),
    "sub/bomb.png": (bomb_png(), BOMB),  # 20000 x 20000: Pillow itself refuses to open it
    "bomb10k.png": (bomb_png(10_000, 10_000), BOMB),  # 100 M pixels: refused by the image stage's limit
}
IGNORED = {"notes.txt": b"not an image", "meta.json": b"{}", "sub/readme.md": b"# hi"}
# Spark lists none of these (hidden names) or reads no row of it (0 bytes): counted apart, as skipped.
HIDDEN = {"_DSC0001.JPG": jpeg_bytes(200, 150, seed=12), ".cache/x.png": png_bytes(60, 40, seed=13)}
EMPTY = {"empty.jpeg": b""}


def phash_of(data: bytes) -> str:
    """The reference: imagehash on what Pillow opens, nothing of winnow's."""
    return str(imagehash.phash(Image.open(io.BytesIO(data))))


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def spark_path(path: Path) -> str:
    """A local file as binaryFile names it in ``path`` (and so in ``source``)."""
    return f"file:{path}"


def manifest_of(output: Path, name: str) -> dict:
    return json.loads((output / f"name={name}" / blocklist.MANIFEST).read_text(encoding="utf-8"))


def blocked(spark, output: Path) -> dict[str, dict[str, str]]:
    """name -> {image_phash: source}, read back the way the dedup stage reads it."""
    return _by_name(r.asDict() for r in spark.read.parquet(str(output)).collect())


def blocked_files(output: Path) -> dict[str, dict[str, str]]:
    """The same with pyarrow (hive partitions, ``_``-files ignored): no Spark job."""
    return _by_name(pq.read_table(output, partitioning="hive").to_pylist())


def _by_name(rows) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["name"], {})[r["image_phash"]] = r["source"]
    return out


def phash_table(folder: Path, rows: list[dict], name: str = "part-0") -> None:
    """COYO-like parquet: id, url, image_phash (string)."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.int64()), ("url", pa.string()), ("image_phash", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{name}.parquet")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-images")
    write_files(root, GOOD)
    write_files(root, {rel: data for rel, (data, _) in BAD.items()})
    write_files(root, IGNORED)
    write_files(root, HIDDEN)
    write_files(root, EMPTY)
    return root


# --- pure: no Spark ------------------------------------------------------------------------------------------------


def test_verdict_equals_imagehash_and_names_the_reason():
    for rel, data in GOOD.items():
        assert phash_verdict(data) == (phash_of(data), None, None), rel
    for rel, (data, reason) in BAD.items():
        phash, got, detail = phash_verdict(data)
        assert (phash, got) == (None, reason), rel
        assert detail
    assert phash_verdict(None)[1] == MISSING


def test_name_and_glob():
    for ok in ("coco", "cc3m-val", "ImageNet_1k.v2"):
        blocklist.check_name(ok)
    for bad in ("", "co/co", "a b", "../x", "coco=1", "é"):
        with pytest.raises(blocklist.BlocklistError, match="--name"):
            blocklist.check_name(bad)
    assert "[jJ][pP][eE][gG]" in blocklist.image_glob() and "[tT][iI][fF][fF]" in blocklist.image_glob()


# --- Spark ---------------------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_folder_hashes_equal_imagehash_and_bad_files_are_counted(spark, folder, tmp_path, capsys):
    out = tmp_path / "blocklists"
    assert blocklist.main(["--images", str(folder), "--name", "coco", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(GOOD) + len(BAD)} files read" in printed and f"{len(GOOD) - 1} distinct hashes" in printed
    assert f"{UNDECODABLE}" in printed and "skipped:  1 image files (empty-file" in printed
    assert f"{out}/name=coco/" in printed

    table = spark.read.parquet(str(out))
    expected_schema = StructType(BLOCKLIST.fields + [StructField("name", StringType())])
    assertSchemaEqual(table.schema, expected_schema, ignoreNullable=True)
    collected = [r.asDict() for r in table.collect()]
    rows = _by_name(collected)["coco"]
    # every image read whatever its format, case or depth, and hashed as imagehash hashes it;
    # the two copies of one image are one row with the smaller source
    expected = {phash_of(data): spark_path(folder / rel) for rel, data in GOOD.items() if rel != "zz.jpg"}
    assert rows == expected and len(collected) == len(GOOD) - 1
    assert rows[phash_of(GOOD["zz.jpg"])] == spark_path(folder / "sub/aa.jpg")

    manifest = manifest_of(out, "coco")
    assert (manifest["kind"], manifest["read_unit"], manifest["input"]) == ("files", "files", str(folder))
    assert manifest["read"] == manifest["hashed"] + manifest["rejected_total"] == len(GOOD) + len(BAD)
    assert (manifest["hashed"], manifest["distinct_hashes"], manifest["duplicates"]) == (len(GOOD), len(GOOD) - 1, 1)
    assert manifest["rejected"] == {BOMB: 2, UNDECODABLE: 3, INVALID: 0, MISSING: 0}
    # every bad file is an example of its own reason (fewer than 20 each), sorted by source, with a detail
    for reason in (BOMB, UNDECODABLE):
        sources = [e["source"] for e in manifest["examples"][reason]]
        assert sources == sorted(spark_path(folder / rel) for rel, (_, r) in BAD.items() if r == reason)
        assert all(e["detail"] for e in manifest["examples"][reason])
    # Spark reads neither hidden names nor 0-byte files: counted apart, never silently
    assert manifest["skipped"] == {"hidden-name": len(HIDDEN), "empty-file": len(EMPTY)}
    assert sorted(Path(p).name for p in manifest["skipped_examples"]["hidden-name"]) == ["_DSC0001.JPG", "x.png"]
    assert [Path(p).name for p in manifest["skipped_examples"]["empty-file"]] == ["empty.jpeg"]


@pytest.mark.spark
def test_img2dataset_parquet_with_null_bytes(spark, tmp_path):
    images = {f"{i:09d}": jpeg_bytes(200 + 10 * i, 150, seed=100 + i) for i in range(5)}
    images["000000005"] = images["000000001"]  # a duplicate: key ...001 is the smaller source
    rows = [{"key": k, "url": f"http://x/{k}.jpg", "status": "success", "jpg": v} for k, v in images.items()]
    rows += [{"key": "000000006", "url": "http://x/6.jpg", "status": "failed_to_download", "jpg": None}]
    rows += [{"key": None, "url": "http://x/7.jpg", "status": "success", "jpg": b"garbage" * 100}]
    schema = pa.schema([("key", pa.string()), ("url", pa.string()), ("status", pa.string()), ("jpg", pa.binary())])
    shards = tmp_path / "i2d"
    shards.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), shards / "00000.parquet")
    (shards / "00000_stats.json").write_text('{"count": 8}', encoding="utf-8")  # not parquet: must be skipped

    out = tmp_path / "out"
    manifest = blocklist.build_blocklist(spark, str(shards), str(out), "cc3m")  # auto: image-parquet
    assert (manifest["kind"], manifest["column"], manifest["read_unit"]) == ("image-parquet", "jpg", "rows")
    assert manifest["read"] == 8 == manifest["hashed"] + manifest["rejected_total"]
    assert manifest["rejected"] == {BOMB: 0, UNDECODABLE: 1, INVALID: 0, MISSING: 1}
    assert manifest["examples"][MISSING] == [{"source": "000000006", "detail": "the row has no image bytes"}]
    assert manifest["examples"][UNDECODABLE][0]["source"] == "http://x/7.jpg"  # no key: the url
    expected = {phash_of(v): k for k, v in sorted(images.items(), reverse=True)}  # smallest key wins
    assert blocked_files(out) == {"cc3m": expected}
    assert manifest["distinct_hashes"] == 5

    # Hugging Face style: `image` is struct<bytes, path>, no key or url: the source is <file>#<row>
    hf = tmp_path / "hf"
    hf.mkdir()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {"label": [3, 4], "image": pa.array([{"bytes": images["000000002"], "path": "x.jpg"}, None], type=struct)}
    )
    pq.write_table(table, hf / "train-00000.parquet")
    got = {r["source"]: r for r in blocklist.blocklist_hashes(spark, str(hf), name="imagenet").collect()}
    path = (hf / "train-00000.parquet").as_uri().replace("file:///", "file:/")
    assert got[f"{path}#0"]["image_phash"] == phash_of(images["000000002"])
    assert got[f"{path}#1"]["reason"] == MISSING
    assert {r["name"] for r in got.values()} == {"imagenet"}


@pytest.mark.spark
def test_phash_parquet_invalid_values_rerun_and_a_second_name(spark, tmp_path, capsys):
    good = [phash_of(jpeg_bytes(220, 220, seed=200 + i)) for i in range(3)]
    coyo = tmp_path / "coyo"
    phash_table(
        coyo,
        [
            {"id": 1, "url": "http://b/1", "image_phash": good[0]},
            {"id": 2, "url": "http://a/2", "image_phash": good[0].upper()},  # same hash, smaller url: kept
            {"id": 3, "url": "http://c/3", "image_phash": good[1]},
            {"id": 4, "url": "http://c/4", "image_phash": "xyz"},
            {"id": 5, "url": "http://c/5", "image_phash": good[2][:15]},
            {"id": 6, "url": "http://c/6", "image_phash": good[2] + "0"},
            {"id": 7, "url": "http://c/7", "image_phash": good[2] + "\n"},
            {"id": 8, "url": "http://c/8", "image_phash": None},
        ],
    )
    out = tmp_path / "blocklists"
    assert blocklist.main(["--images", str(coyo), "--name", "coyo-eval", "--output", str(out)]) == 0
    assert "8 rows read" in capsys.readouterr().out
    manifest = manifest_of(out, "coyo-eval")
    assert (manifest["kind"], manifest["column"]) == ("phash-parquet", "image_phash")
    assert manifest["read"] == 8 == manifest["hashed"] + manifest["rejected_total"]
    assert manifest["rejected"] == {BOMB: 0, UNDECODABLE: 0, INVALID: 5, MISSING: 0}
    assert [e["source"] for e in manifest["examples"][INVALID]] == [f"http://c/{i}" for i in range(4, 9)]
    assert blocked_files(out) == {"coyo-eval": {good[0]: "http://a/2", good[1]: "http://c/3"}}

    # a second name sits beside the first; re-running a name replaces it and only it
    other = tmp_path / "other"
    phash_table(other, [{"id": 9, "url": "http://o/9", "image_phash": good[2]}])
    assert blocklist.main(["--images", str(other), "--name", "flickr30k", "--output", str(out)]) == 0
    assert blocklist.main(["--images", str(other), "--name", "coyo-eval", "--output", str(out)]) == 0
    assert blocked_files(out) == {"coyo-eval": {good[2]: "http://o/9"}, "flickr30k": {good[2]: "http://o/9"}}
    assert manifest_of(out, "coyo-eval")["read"] == 1
    # ... even by an empty blocklist: nothing of the earlier runs survives, and Spark still reads OUTPUT
    nothing = tmp_path / "nothing"
    phash_table(nothing, [{"id": 10, "url": "http://n/10", "image_phash": "nope"}])
    assert blocklist.main(["--images", str(nothing), "--name", "coyo-eval", "--output", str(out)]) == 0
    assert blocked(spark, out) == {"flickr30k": {good[2]: "http://o/9"}}
    manifest = manifest_of(out, "coyo-eval")
    assert (manifest["read"], manifest["rejected"][INVALID], manifest["distinct_hashes"]) == (1, 1, 0)


@pytest.mark.spark
def test_bad_arguments_exit_2_with_one_line(spark, folder, tmp_path, capsys):
    from jobs import cli

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here", encoding="utf-8")
    plain = tmp_path / "plain"
    phash_table(plain, [{"id": 1, "url": "http://p/1", "image_phash": None}])
    plain_no_cols = tmp_path / "plain2"
    plain_no_cols.mkdir()
    pq.write_table(pa.table({"id": [1], "caption": ["x"]}), plain_no_cols / "p.parquet")
    bad_type = tmp_path / "bad-type"
    bad_type.mkdir()
    pq.write_table(pa.table({"image_phash": [123], "image": ["not bytes"]}), bad_type / "p.parquet")
    out = tmp_path / "out"
    cases = [
        (["--images", str(folder), "--name", "co/co"], "--name 'co/co'"),
        (["--images", str(tmp_path / "missing"), "--name", "x"], "--images"),
        (["--images", str(empty), "--name", "x"], "no image files"),
        (["--images", str(folder), "--name", "x", "--kind", "zip"], "--kind zip"),
        (["--images", str(plain_no_cols), "--name", "x"], "no image column"),
        (["--images", str(plain), "--name", "x", "--image-col", "jpg"], "--image-col jpg"),
        (["--images", str(plain), "--name", "x", "--phash-col", "phash"], "--phash-col phash"),
        (["--images", str(bad_type), "--name", "x", "--kind", "phash-parquet"], "not a string"),
        (["--images", str(bad_type), "--name", "x", "--kind", "image-parquet"], "not image bytes"),
        (["--images", str(folder), "--name", "x", "--kind", "image-parquet"], "no .parquet files"),
        (["--images", str(folder), "--name", "x", "--output", str(folder / "bl")], "--output"),
    ]
    for argv, message in cases:
        argv = argv if "--output" in argv else [*argv, "--output", str(out)]
        assert cli.main(["blocklist", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("winnow: error: ") and "\n" not in err and message in err, (argv, err)
    assert not out.exists() and not (folder / "bl").exists()
