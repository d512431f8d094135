"""img2dataset outputs as inputs (parquet with image bytes, WebDataset tars) and the WebDataset export.

Pure tests of ``udfs.wds`` first (no Spark), then local-mode Spark tests that
read tiny img2dataset outputs made here through ``jobs.stages.ingest`` and export
DataFrames with an ``image`` column through ``jobs.export``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_factory import jpeg_bytes
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from jobs import cli, export
from jobs.stage import count_stage
from jobs.stages.ingest import (
    IngestConfig,
    IngestError,
    read_source,
    resolve_format,
    source_rows,
    split_pairs,
    with_pair_columns,
)
from schemas import reasons
from schemas.tables import CHUNK_SPAN, EXPORTED_SHARD, IMAGE_INPUT, SPAN, WEBDATASET_SAMPLE
from udfs import wds

IMG = {i: jpeg_bytes(320, 240, seed=i) for i in range(8)}


# --- helpers -----------------------------------------------------------------


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of (name, data) members, as tarfile writes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def i2d_meta(key: str, url: str, caption: str | None, status: str = "success", **extra) -> dict:
    """The .json img2dataset writes beside each image (its downloader's metadata)."""
    meta = {
        "url": url,
        "caption": caption,
        "key": key,
        "status": status,
        "error_message": None if status == "success" else "HTTP Error 404: Not Found",
        "width": 320,
        "height": 240,
        "original_width": 640,
        "original_height": 480,
        "exif": "{}",
        "sha256": "00" * 32,
    }
    meta.update(extra)
    return meta


def i2d_members(key: str, image: bytes | None, caption: str | None, meta: dict | None) -> list[tuple[str, bytes]]:
    members = []
    if image is not None:
        members.append((f"{key}.jpg", image))
    if caption is not None:
        members.append((f"{key}.txt", caption.encode("utf-8")))
    if meta is not None:
        members.append((f"{key}.json", json.dumps(meta, indent=4).encode("utf-8")))
    return members


def ingest(spark, path, fmt="auto", **cfg):
    """(accepted rows, rejected rows, ingest counts) read through jobs.stages.ingest, conservation checked."""
    config = IngestConfig(**cfg)
    resolved = resolve_format(str(path), fmt if fmt != "auto" else config.input_format)
    raw = read_source(spark, str(path), resolved, config)
    annotated = with_pair_columns(raw, resolved, config)
    counts = count_stage("ingest", source_rows(spark, str(path), resolved, config), annotated)
    accepted, rejected = split_pairs(annotated)
    assert counts.accepted == accepted.count() and counts.rejected == rejected.count()
    return accepted.collect(), rejected.collect(), counts


def url_hash(spark, url: str) -> int:
    return spark.range(1).select(F.xxhash64(F.lit(url)).alias("h")).first()["h"]


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: data}} of a tar, in member order, with the tarfile module."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- udfs.wds: reading -------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("000010005.jpg", ("000010005", "jpg")),
        ("a/b/000010005.seg.PNG", ("a/b/000010005", "seg.png")),
        ("noextension", None),
        (".hidden", None),
        ("dir/.jpg", None),
    ],
)
def test_split_member_name_follows_webdataset_keys(name, expected):
    assert wds.split_member_name(name) == expected


def test_read_shard_groups_members_by_key():
    data = tar_bytes(
        i2d_members("000000000", IMG[0], "a red bike", i2d_meta("000000000", "http://x/0", "a red bike"))
        + i2d_members("000000001", IMG[1], "a blue car", i2d_meta("000000001", "http://x/1", "a blue car"))
        + [("000000002.png", IMG[2]), ("000000002.txt", b"png only"), ("000000002.cls", b"3")]
    )
    samples = wds.read_shard(data)
    assert [s.key for s in samples] == ["000000000", "000000001", "000000002"]
    first = samples[0]
    assert (first.url, first.caption, first.status, first.error_message, first.error) == (
        "http://x/0",
        "a red bike",
        "success",
        None,
        None,
    )
    assert bytes(first.image) == IMG[0]
    assert json.loads(first.json)["original_width"] == 640
    third = samples[2]
    assert bytes(third.image) == IMG[2] and third.caption == "png only" and third.url is None


def test_key_without_image_or_caption_and_json_caption_fallback():
    data = tar_bytes(
        i2d_members("k0", None, "no image here", i2d_meta("k0", "http://x/0", "no image here"))
        + i2d_members("k1", IMG[1], None, i2d_meta("k1", "http://x/1", None))
        + i2d_members("k2", IMG[2], None, i2d_meta("k2", "http://x/2", "caption from the json"))
    )
    by_key = {s.key: s for s in wds.read_shard(data)}
    assert by_key["k0"].image is None and by_key["k0"].caption == "no image here"
    assert by_key["k1"].caption is None and bytes(by_key["k1"].image) == IMG[1]
    assert by_key["k2"].caption == "caption from the json"


def test_image_extension_preference_and_choice():
    data = tar_bytes([("k.png", b"png"), ("k.jpg", b"jpg"), ("k.txt", b"c")])
    assert bytes(wds.read_shard(data)[0].image) == b"jpg"
    assert bytes(wds.read_shard(data, ("png",))[0].image) == b"png"
    assert wds.read_shard(data, ("webp",))[0].image is None


def test_bad_json_or_text_marks_only_that_sample():
    data = tar_bytes(
        [("a.jpg", IMG[0]), ("a.json", b"{not json"), ("b.jpg", IMG[1]), ("b.txt", b"\xff\xfe bad")]
        + [("c.jpg", IMG[2]), ("c.json", b"[1, 2]"), ("d.jpg", IMG[3]), ("d.txt", b"fine")]
    )
    errors = {s.key: s.error for s in wds.read_shard(data)}
    assert "a.json is not JSON" in errors["a"]
    assert "b.txt is not UTF-8" in errors["b"]
    assert "JSON list, not an object" in errors["c"]
    assert errors["d"] is None


def _corruptions() -> dict[str, bytes]:
    good = tar_bytes(i2d_members("k0", IMG[0], "a cat", None) + i2d_members("k1", IMG[1], "a dog", None))
    first_data_end = 512 + (len(IMG[0]) + 511) // 512 * 512
    broken_header = bytearray(good)
    broken_header[first_data_end : first_data_end + 100] = b"x" * 100  # k0.txt's header
    return {
        "empty file": b"",
        "not a tar": b"this is an html error page, not a tar" * 40,
        "cut inside a member": good[: len(good) // 2],
        "cut on a member boundary": good[:first_data_end],
        "bad header mid-file": bytes(broken_header),
        "garbage after the members": good + b"y" * 1024,
    }


@pytest.mark.parametrize("case", sorted(_corruptions()))
def test_unreadable_tar_is_one_error_record(case):
    (record,) = wds.read_shard(_corruptions()[case])
    assert record.key is None and record.image is None
    assert record.error.startswith("unreadable tar: ")


def test_empty_but_valid_tar_has_no_samples():
    assert wds.read_shard(tar_bytes([])) == []


def test_shard_expander_without_spark():
    good = tar_bytes(i2d_members("k0", IMG[0], "a cat", i2d_meta("k0", "http://x/0", "a cat")))
    batch = pa.RecordBatch.from_pydict(
        {"path": ["file:/a.tar", "file:/b.tar"], "content": [good, b"junk"], "dump": ["d1", "d2"]},
        schema=pa.schema([("path", pa.string()), ("content", pa.binary()), ("dump", pa.string())]),
    )
    (out,) = list(wds.shard_expander(["dump"])(iter([batch])))
    rows = out.to_pylist()
    assert out.schema.names == [*wds.SAMPLE_SCHEMA.names, "dump"]
    assert [(r["shard_path"], r["key"], r["dump"]) for r in rows] == [
        ("file:/a.tar", "k0", "d1"),
        ("file:/b.tar", None, "d2"),
    ]
    assert rows[0]["image_input"] == IMG[0] and rows[1]["read_error"].startswith("unreadable tar")


def test_shard_expander_bounds_its_batches():
    members = []
    for i in range(5):
        members += i2d_members(f"k{i}", IMG[i], f"caption {i}", None)
    batch = pa.RecordBatch.from_pydict({"path": ["p"], "content": [tar_bytes(members)]})
    sizes = [b.num_rows for b in wds.shard_expander([], batch_rows=2)(iter([batch]))]
    assert sizes == [2, 2, 1]


def test_arrow_schemas_match_the_spark_schemas():
    assert to_arrow_schema(WEBDATASET_SAMPLE) == wds.SAMPLE_SCHEMA
    assert to_arrow_schema(EXPORTED_SHARD) == wds.EXPORTED_SHARD_SCHEMA


# --- udfs.wds: writing -------------------------------------------------------


def test_write_shard_round_trip_and_fixed_member_metadata(tmp_path):
    rows = [
        wds.ExportSample("000000000", IMG[0], "a red bike", {"id": 1, "url": "http://x/0"}),
        wds.ExportSample("000000001", IMG[1], "ein Fahrrad, grün", {"id": 2, "url": "http://x/1"}),
    ]
    path = tmp_path / "out" / "00000.tar"
    assert wds.write_shard(str(path), rows) == 2
    assert os.listdir(path.parent) == ["00000.tar"]  # no temporary file left
    got = read_tar(path)
    assert list(got) == ["000000000", "000000001"]
    assert got["000000001"]["jpg"] == IMG[1]
    assert got["000000001"]["txt"].decode("utf-8") == "ein Fahrrad, grün"
    assert json.loads(got["000000001"]["json"]) == {"id": 2, "url": "http://x/1"}
    with tarfile.open(path) as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in tar.getmembers()} == {
            (0, 0, 0, "", "", 0o644)
        }
    # the reader reads what the writer wrote, and the same rows give the same bytes
    assert [bytes(s.image) for s in wds.read_shard(path.read_bytes())] == [IMG[0], IMG[1]]
    again = tmp_path / "again.tar"
    wds.write_shard(str(again), rows)
    assert again.read_bytes() == path.read_bytes()


def test_write_shard_failure_leaves_nothing(tmp_path):
    def rows():
        yield wds.ExportSample("k0", IMG[0], "a cat", None)
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        wds.write_shard(str(tmp_path / "00000.tar"), rows())
    assert os.listdir(tmp_path) == []


def test_keys_and_names():
    assert wds.sample_key("2024-05", 8137) == "2024-05_8137" and wds.sample_key("a", -7, 2) == "a_-7_2"
    assert wds.shard_file_name("a", 7) == "a_00007.tar" and wds.shard_file_name("a", 123_456) == "a_123456.tar"


# --- Spark: img2dataset parquet ----------------------------------------------

I2D_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
        ("jpg", pa.binary()),
    ]
)


def i2d_parquet_row(key: str, url: str, caption: str | None, image: bytes | None) -> dict:
    failed = image is None
    return {
        "url": url,
        "caption": caption,
        "key": key,
        "status": "failed_to_download" if failed else "success",
        "error_message": "HTTP Error 404: Not Found" if failed else None,
        "width": None if failed else 320,
        "height": None if failed else 240,
        "original_width": None if failed else 640,
        "original_height": None if failed else 480,
        "exif": None if failed else "{}",
        "sha256": None if failed else hashlib.sha256(image).hexdigest(),
        "jpg": image,
    }


def write_i2d_parquet(folder: Path, rows: list[dict], schema: pa.Schema = I2D_SCHEMA, name: str = "00000") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{name}.parquet")
    # img2dataset's per-shard stats file: must not be read as parquet
    (folder / f"{name}_stats.json").write_text(json.dumps({"count": len(rows)}), encoding="utf-8")


@pytest.mark.spark
def test_img2dataset_parquet_bytes_become_image_input(spark, tmp_path):
    write_i2d_parquet(
        tmp_path / "in" / "dump=2024-01",
        [
            i2d_parquet_row("000000000", "http://x/0", "a red bike on a wall", IMG[0]),
            i2d_parquet_row("000000001", "http://x/1", "a blue car in the snow", IMG[1]),
            i2d_parquet_row("000000002", "http://x/2", "a photo that never came", None),
            i2d_parquet_row("000000003", "http://x/3", None, IMG[3]),
        ],
    )
    write_i2d_parquet(
        tmp_path / "in" / "dump=2024-02", [i2d_parquet_row("000000000", "http://y/0", "a green tree", IMG[4])]
    )
    accepted, rejected, counts = ingest(spark, tmp_path / "in", fmt="img2dataset-parquet")
    assert counts.rows_in == 5
    rows = {r["url"]: r for r in accepted}
    assert set(rows) == {"http://x/0", "http://x/1", "http://x/2", "http://y/0"}
    bike = rows["http://x/0"]
    assert bike["id"] == url_hash(spark, "http://x/0")  # default id: the URL's hash, as for generic lists
    assert (bike["caption"], bike["dump"], bike["key"], bike["status"]) == (
        "a red bike on a wall",
        "2024-01",
        "000000000",
        "success",
    )
    assert bike[IMAGE_INPUT] == IMG[0] and rows["http://y/0"][IMAGE_INPUT] == IMG[4]
    # img2dataset's sizes do not clash with the image stage's width / height
    assert (bike["source_width"], bike["source_height"], bike["original_width"]) == (320, 240, 640)
    columns = set(accepted[0].asDict())
    assert {"width", "height", "jpg"}.isdisjoint(columns)
    assert {"sha256", "exif", "error_message"} <= columns
    # a failed download is a pair without bytes: the image stage rejects it as image-missing
    failed = rows["http://x/2"]
    assert (failed["status"], failed[IMAGE_INPUT], failed["error_message"]) == (
        "failed_to_download",
        None,
        "HTTP Error 404: Not Found",
    )
    (no_caption,) = rejected
    assert (no_caption["reason"], no_caption["key"], no_caption["url"]) == (
        reasons.MISSING_CAPTION,
        "000000003",
        "http://x/3",
    )
    assert IMAGE_INPUT in no_caption.asDict() and no_caption[IMAGE_INPUT] == IMG[3]


@pytest.mark.spark
def test_img2dataset_parquet_id_from_key_and_other_encode_formats(spark, tmp_path):
    schema = pa.schema([f if f.name != "jpg" else pa.field("webp", pa.binary()) for f in I2D_SCHEMA])
    row = i2d_parquet_row("000000007", "http://x/7", "a bird on a branch", IMG[7])
    row["webp"] = row.pop("jpg")
    write_i2d_parquet(tmp_path / "webp", [row], schema)
    accepted, _, _ = ingest(spark, tmp_path / "webp", fmt="img2dataset-parquet", id_col="key")
    (got,) = accepted
    assert got["id"] == url_hash(spark, "000000007") and got["key"] == "000000007"
    assert got[IMAGE_INPUT] == IMG[7] and "webp" not in got.asDict()


@pytest.mark.spark
def test_img2dataset_parquet_image_column_errors(spark, tmp_path):
    write_i2d_parquet(
        tmp_path / "none",
        [{"url": "http://x/1", "caption": "a cat"}],
        pa.schema([("url", pa.string()), ("caption", pa.string())]),
    )
    with pytest.raises(IngestError, match="one image column named jpg, png or webp, found none.*ingest.image_col"):
        ingest(spark, tmp_path / "none", fmt="img2dataset-parquet")
    two = pa.schema([("url", pa.string()), ("caption", pa.string()), ("jpg", pa.binary()), ("png", pa.binary())])
    write_i2d_parquet(tmp_path / "two", [{"url": "http://x/1", "caption": "a cat", "jpg": b"j", "png": b"p"}], two)
    with pytest.raises(IngestError, match=r"found several \(jpg, png\)"):
        ingest(spark, tmp_path / "two", fmt="img2dataset-parquet")
    accepted, _, _ = ingest(spark, tmp_path / "two", fmt="img2dataset-parquet", image_col="png")
    assert accepted[0][IMAGE_INPUT] == b"p" and accepted[0]["jpg"] == b"j"
    with pytest.raises(IngestError, match="not binary"):
        ingest(spark, tmp_path / "two", fmt="img2dataset-parquet", image_col="caption")


@pytest.mark.spark
def test_source_image_input_column_is_not_taken_for_ours(spark, tmp_path):
    path = tmp_path / "list.parquet"
    pq.write_table(pa.Table.from_pylist([{"url": "http://x/1", "caption": "a cat", "image_input": b"theirs"}]), path)
    accepted, _, _ = ingest(spark, path)
    assert IMAGE_INPUT not in accepted[0].asDict() and accepted[0]["source_image_input"] == b"theirs"


# --- Spark: webdataset -------------------------------------------------------


def write_wds_input(root: Path) -> None:
    """Two dumps of img2dataset-style shards, with its sidecar files, a corrupt tar and odd samples."""
    a = root / "dump=2024-01"
    a.mkdir(parents=True)
    (a / "00000.tar").write_bytes(
        tar_bytes(
            i2d_members("000000000", IMG[0], "a red bike", i2d_meta("000000000", "http://x/0", "a red bike"))
            + i2d_members("000000001", IMG[1], "a blue car", i2d_meta("000000001", "http://x/1", "a blue car"))
        )
    )
    # what img2dataset writes beside each tar: must not be read
    pq.write_table(pa.Table.from_pylist([{"key": "000000000", "status": "success"}]), a / "00000.parquet")
    (a / "00000_stats.json").write_text("{}", encoding="utf-8")
    b = root / "dump=2024-02"
    b.mkdir(parents=True)
    (b / "00000.tar").write_bytes(
        tar_bytes(
            i2d_members("000000000", IMG[2], "a green tree", i2d_meta("000000000", "http://y/0", "a green tree"))
            + i2d_members("000000001", IMG[3], None, i2d_meta("000000001", "http://y/1", None))  # no caption
            + i2d_members("000000002", None, "a lost image", i2d_meta("000000002", "http://y/2", "a lost image"))
            + [("000000003.jpg", IMG[4]), ("000000003.txt", b"a cat"), ("000000003.json", b"{broken")]
        )
    )
    (b / "00001.tar").write_bytes(_corruptions()["bad header mid-file"])


@pytest.mark.spark
def test_webdataset_tars_become_pairs(spark, tmp_path):
    write_wds_input(tmp_path / "in")
    assert resolve_format(str(tmp_path / "in"), "auto") == "webdataset"
    accepted, rejected, counts = ingest(spark, tmp_path / "in")
    # 2 + 4 samples + 1 row for the unreadable tar; the sidecar parquet / json are not rows
    assert counts.rows_in == 7 and counts.dumps == {
        "2024-01": {"accepted": 2, "rejected": 0},
        "2024-02": {"accepted": 2, "rejected": 3},
    }
    rows = {r["url"]: r for r in accepted}
    assert set(rows) == {"http://x/0", "http://x/1", "http://y/0", "http://y/2"}
    bike = rows["http://x/0"]
    assert bike["id"] == url_hash(spark, "http://x/0")
    assert (bike["caption"], bike["dump"], bike["key"], bike["status"], bike["error_message"]) == (
        "a red bike",
        "2024-01",
        "000000000",
        "success",
        None,
    )
    assert bike[IMAGE_INPUT] == IMG[0] and rows["http://y/0"][IMAGE_INPUT] == IMG[2]
    assert json.loads(bike["json"])["original_height"] == 480
    assert bike["shard_path"].endswith("dump=2024-01/00000.tar")
    assert "read_error" not in bike.asDict()
    # a key without an image is a pair without bytes (the image stage says image-missing)
    assert rows["http://y/2"][IMAGE_INPUT] is None
    got = sorted((r["reason"], r["key"] or "", (r["detail"] or "")[:16]) for r in rejected)
    assert got == [
        (reasons.MALFORMED_RECORD, "", "unreadable tar: "),
        (reasons.MALFORMED_RECORD, "000000003", "000000003.json i"),
        (reasons.MISSING_CAPTION, "000000001", ""),
    ]
    corrupt = next(r for r in rejected if r["key"] is None)
    assert corrupt["dump"] == "2024-02" and corrupt["id"] is not None  # traceable: a hash of its tar's name
    assert corrupt["shard_path"].endswith("dump=2024-02/00001.tar")


@pytest.mark.spark
def test_webdataset_single_tar_dump_flag_and_key_ids(spark, tmp_path):
    path = tmp_path / "00000.tar"
    path.write_bytes(
        tar_bytes(i2d_members("000000005", IMG[5], "a small boat", i2d_meta("000000005", "http://z/5", "a small boat")))
    )
    assert resolve_format(str(path), "auto") == "webdataset"
    accepted, _, _ = ingest(spark, path, dump="crawl-7", id_col="key")
    (row,) = accepted
    assert (row["dump"], row["id"], row[IMAGE_INPUT]) == ("crawl-7", url_hash(spark, "000000005"), IMG[5])


# --- Spark: export -----------------------------------------------------------

EXPORT_SCHEMA = StructType(
    [
        StructField("id", LongType()),
        StructField("url", StringType()),
        StructField("caption", StringType()),
        StructField("dump", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
        StructField("image_phash", StringType()),
        StructField("noun_chunk_spans", ArrayType(CHUNK_SPAN, False)),
        StructField("ref_exp_spans", ArrayType(SPAN, False)),
        StructField("image", BinaryType()),
    ]
)


def export_rows() -> list[tuple]:
    spans = [(2, 5, "bike", "NOUN")]
    refs = [(0, 5)]
    return [
        # dump a: 5 rows, ids out of order, one negative, one duplicated id
        (30, "http://a/30", "a red bike", "a", 320, 240, "ab" * 8, spans, refs, IMG[0]),
        (-7, "http://a/-7", "a blue car", "a", 320, 240, "cd" * 8, None, None, IMG[1]),
        (12, "http://a/12", "a green tree", "a", 320, 240, "ef" * 8, [], [], IMG[2]),
        (12, "http://a/12b", "a green tree again", "a", 320, 240, "01" * 8, [], [], IMG[3]),
        (99, "http://a/99", "a white boat", "a", 320, 240, "23" * 8, [], [], IMG[4]),
        # dump b/c: one row each; c's name needs escaping in a path
        (5, "http://b/5", "a small dog", "b", 320, 240, "45" * 8, [], [], IMG[5]),
        (6, "http://c/6", "a cat: black", "c:1=x", 320, 240, "67" * 8, [], [], IMG[6]),
        # no image bytes: counted, not exported
        (7, "http://b/7", "no bytes kept", "b", None, None, None, [], [], None),
    ]


@pytest.mark.spark
def test_export_round_trip_shard_size_and_determinism(spark, tmp_path):
    frame = spark.createDataFrame(export_rows(), EXPORT_SCHEMA).repartition(3)
    out = tmp_path / "wds"
    assert export.export_webdataset(frame, str(out), shard_size=2) == 7

    a = out / "dump=a"
    assert sorted(p.name for p in a.iterdir()) == [export.MANIFEST, "a_00000.tar", "a_00001.tar", "a_00002.tar"]
    shards = [read_tar(a / f"a_0000{i}.tar") for i in range(3)]
    assert [len(s) for s in shards] == [2, 2, 1]
    # sorted by id within the dump; keys are <dump>_<id>, a repeated id gets _1; members jpg, txt, json
    assert [list(s) for s in shards] == [["a_-7", "a_12"], ["a_12_1", "a_30"], ["a_99"]]
    order = [json.loads(sample["json"]) for s in shards for sample in s.values()]
    assert [(m["id"], m["url"]) for m in order] == [
        (-7, "http://a/-7"),
        (12, "http://a/12"),
        (12, "http://a/12b"),
        (30, "http://a/30"),
        (99, "http://a/99"),
    ]
    with tarfile.open(a / "a_00001.tar") as tar:
        assert tar.getnames() == ["a_12_1.jpg", "a_12_1.txt", "a_12_1.json", "a_30.jpg", "a_30.txt", "a_30.json"]
    by_url = {r[1]: r for r in export_rows()}
    for s in shards:
        for key, sample in s.items():
            meta = json.loads(sample["json"])
            source = by_url[meta["url"]]
            assert sample["jpg"] == source[9] and sample["txt"].decode() == source[2] == meta["caption"]
            assert (meta["key"], meta["dump"], meta["width"], meta["image_phash"]) == (key, "a", 320, source[6])
    bike = json.loads(shards[1]["a_30"]["json"])
    assert bike["noun_chunk_spans"] == [{"start": 2, "end": 5, "root_lemma": "bike", "root_pos": "NOUN"}]
    assert bike["ref_exp_spans"] == [{"start": 0, "end": 5}]

    manifest = json.loads((out / "dump=b" / export.MANIFEST).read_text())
    assert (manifest["samples"], manifest["rows_without_image"], manifest["shards"][0]["file"]) == (1, 1, "b_00000.tar")
    # the dump folder is escaped as Spark escapes partition values
    escaped = spark.sparkContext._jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils.escapePathName("c:1=x")
    assert wds.escape_path_name("c:1=x") == escaped and (out / f"dump={escaped}" / "c%3A1%3Dx_00000.tar").exists()

    # same input (partitioned differently) -> byte-identical shards; stale shards of a bigger export are gone
    first = digest(out)
    assert export.export_webdataset(frame.repartition(1), str(out), shard_size=5) == 7
    assert sorted(p.name for p in a.iterdir()) == [export.MANIFEST, "a_00000.tar"]
    assert export.export_webdataset(frame.coalesce(1), str(out), shard_size=2) == 7
    assert digest(out) == first

    # and the shards read back through ingest as webdataset, dumps included
    accepted, rejected, _ = ingest(spark, out, fmt="webdataset")
    assert not rejected
    got = sorted((r["dump"], r["url"], r["caption"], r[IMAGE_INPUT]) for r in accepted)
    want = sorted((r[3], r[1], r[2], r[9]) for r in export_rows() if r[9] is not None)
    assert got == want


@pytest.mark.spark
def test_export_refuses_without_image_column_or_to_a_url(spark, tmp_path):
    frame = spark.createDataFrame(export_rows(), EXPORT_SCHEMA)
    with pytest.raises(export.ExportError, match="no `image` column.*image.keep_bytes=true"):
        export.export_webdataset(frame.drop("image"), str(tmp_path / "x"), 10)
    with pytest.raises(export.ExportError, match="local or shared"):
        export.export_webdataset(frame, "s3://bucket/shards", 10)
    with pytest.raises(export.ExportError, match="at least 1"):
        export.export_webdataset(frame, str(tmp_path / "x"), 0)
    assert not (tmp_path / "x").exists()


@pytest.mark.spark
def test_export_wds_command(spark, tmp_path, capsys):
    accepted = tmp_path / "run" / "accepted"
    frame = spark.createDataFrame(export_rows(), EXPORT_SCHEMA)
    frame.write.partitionBy("dump").parquet(str(accepted))
    frame.drop("image").write.partitionBy("dump").parquet(str(tmp_path / "no-image"))
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    try:
        out = tmp_path / "shards"
        assert cli.main(["export-wds", "--input", str(accepted), "--output", str(out), "--shard-size", "3"]) == 0
        assert "exported: 7 samples" in capsys.readouterr().out
        assert sorted(p.name for p in (out / "dump=a").glob("*.tar")) == ["a_00000.tar", "a_00001.tar"]
        assert cli.main(["export-wds", "--input", str(tmp_path / "no-image"), "--output", str(out)]) == 2
        assert "image.keep_bytes=true" in capsys.readouterr().err
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)
