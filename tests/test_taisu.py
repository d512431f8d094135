"""TaiSu: the byte-range caption reader (pure) and the ingest of caption JSON + image tars (Spark)."""

from __future__ import annotations

import io
import json
import random
import tarfile

import pytest
from pyspark.sql import functions as F

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.stage import count_stage
from jobs.stages.ingest import IngestConfig, read_source, source_rows, split_pairs, with_pair_columns
from jobs.stages.taisu import TaiSuError
from schemas import reasons
from tests.image_factory import jpeg_bytes
from udfs.taisu import plan_ranges, read_range

# Captions built to fool a boundary search: "}," and quotes inside strings, escapes, CJK.
TRICKY = [
    '一只猫},"x": {"w": "坐在沙发上',
    'caption "quoted" }, "',
    'a\\b},\n"id": {"w": null}',
    "}, ",
    "},",
    '", "g": null}, "evil": {"w": "x"}',
    "蓝天白云下的草地",
]


def read_all(data: bytes, split: int, max_entry: int = 4096):
    out = []
    for start, end in plan_ranges(len(data), split):
        out += list(read_range(io.BytesIO(data), len(data), start, end, "captions.json", max_entry))
    return out


def random_object(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    return {
        f"{rng.randrange(10**12):012d}-{i}": {"w": rng.choice([None, *TRICKY]), "g": rng.choice([None, *TRICKY])}
        for i in range(n)
    }


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_every_split_size_reads_every_entry_once(indent, ascii_only):
    obj = random_object(300)
    data = json.dumps(obj, indent=indent, ensure_ascii=ascii_only).encode("utf-8")
    for split in (1, 2, 3, 7, 64, 999, len(data) - 1, len(data), 10 * len(data)):
        entries = read_all(data, split)
        assert [e.error for e in entries if e.error] == [], split
        assert len(entries) == len(obj), split
        assert {e.image_id: {"w": e.web, "g": e.generated} for e in entries} == obj


@pytest.mark.parametrize("split", [300_000, 1_100_000, 3_000_000])
def test_ranges_larger_than_the_read_block(split):
    # Several MiB: the reader's 1 MiB blocks are refilled and dropped while a range is read.
    rng = random.Random(3)
    obj = {
        f"{i:09d}": {"w": "一只可爱的小狗躺在绿色的草地上" * rng.randint(1, 3), "g": rng.choice([None, TRICKY[0]])}
        for i in range(40_000)
    }
    data = json.dumps(obj, ensure_ascii=False).encode()
    assert len(data) > 3 * (1 << 20)
    entries = read_all(data, split, max_entry=1 << 20)
    assert not [e for e in entries if e.error]
    assert [e.image_id for e in entries] == list(obj)


def test_bom_empty_object_and_a_file_that_is_not_an_object():
    assert read_all(b"\xef\xbb\xbf{}", 1) == []
    assert read_all(b"  {  }\n", 2) == []
    (e,) = read_all(b'["a", "b"]', 3)
    assert e.image_id is None and "not a JSON object" in e.error
    (e,) = read_all(b"", 10)
    assert "empty file" in e.error


def test_bad_entries_become_errors_and_reading_resumes():
    good = {"a": {"w": "猫", "g": None}, "d": {"w": None, "g": "狗"}, "f": {"w": "鸟", "g": None}}
    data = (
        b'{"a": {"w": "\xe7\x8c\xab", "g": null}, "b": "just a string", "l": [1, {"w": 2}], "c": {"w": 5, "g": null},'
        b' "d": {"w": null, "g": "\xe7\x8b\x97"}, "e": {"w": {"nested": 1}}, "f": {"w": "\xe9\xb8\x9f", "g": null}}'
    )
    for split in (1, 5, 17, len(data)):
        entries = read_all(data, split)
        ok = {e.image_id: {"w": e.web, "g": e.generated} for e in entries if not e.error}
        assert ok == good, split
        errors = [e for e in entries if e.error]
        by_id = {e.image_id: e.error for e in errors}
        assert "not an object" in by_id["b"] and "w is not a string" in by_id["c"]
        assert "a JSON list, not an object" in by_id["l"]
        # the nested object cannot be parsed: one error naming the bytes skipped, id unknown
        (skipped,) = [e for e in errors if e.image_id is None]
        assert "are not entries" in skipped.error and "bytes" in skipped.error


def test_an_entry_longer_than_the_cap_is_reported_not_read():
    obj = {"a": {"w": "x" * 5000, "g": None}, "b": {"w": "short", "g": None}}
    entries = read_all(json.dumps(obj).encode(), 100, max_entry=1024)
    assert {e.image_id for e in entries if not e.error} == {"b"}
    assert any("longer than 1024 bytes" in (e.error or "") for e in entries)


def test_truncated_file_reports_the_tail():
    data = json.dumps(random_object(20)).encode()[:-40]
    entries = read_all(data, 50)
    assert 15 <= sum(1 for e in entries if not e.error) < 20
    assert any(e.error for e in entries)


def test_content_after_the_closing_brace_is_reported():
    entries = read_all(b'{"a": {"w": "x", "g": null}} trailing', 4)
    assert [e.image_id for e in entries if not e.error] == ["a"]
    assert "after the closing brace" in entries[-1].error


# --- Spark: captions joined to images -----------------------------------------------------


def write_tar(path, members: dict[str, bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def taisu_folder(root, captions: dict, images: dict[str, bytes], parts: int = 2):
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    names = sorted(images)
    for p in range(parts):
        write_tar(root / f"part-{p:05d}.tar", {f"{k}.jpg": images[k] for k in names[p::parts]})
    return root


def ingest_taisu(spark, root, **cfg):
    config = IngestConfig(input_format="taisu", **cfg)
    raw = read_source(spark, str(root), "taisu", config)
    annotated = with_pair_columns(raw, "taisu", config).persist()
    counts = count_stage("ingest", source_rows(spark, str(root), "taisu", config), annotated)
    accepted, rejected = split_pairs(annotated)
    return accepted.collect(), rejected.collect(), counts


CAPTIONS = {
    "img1": {"w": "一只猫坐在红色的沙发上", "g": "沙发上的一只猫"},
    "img2": {"w": "美丽的风景照片", "g": None},
    "img3": {"w": None, "g": "一隻貓在草地上"},
    "img4": {"w": None, "g": None},
    "img5": {"w": "没有图片的描述", "g": "生成的描述"},  # no image
}
IMAGES = {k: jpeg_bytes(300, 240, seed=i) for i, k in enumerate(["img1", "img2", "img3", "img4", "img6"])}


@pytest.fixture(scope="module")
def taisu_root(tmp_path_factory):
    return taisu_folder(tmp_path_factory.mktemp("taisu"), CAPTIONS, IMAGES)


@pytest.mark.spark
@pytest.mark.parametrize(
    "policy,expected",
    [
        ("web", {("img1", "web"), ("img2", "web")}),
        ("generated", {("img1", "generated"), ("img3", "generated")}),
        ("web-then-generated", {("img1", "web"), ("img2", "web"), ("img3", "generated")}),
        ("both", {("img1", "web"), ("img1", "generated"), ("img2", "web"), ("img3", "generated")}),
    ],
)
def test_caption_policies(spark, taisu_root, policy, expected):
    accepted, rejected, counts = ingest_taisu(spark, taisu_root, taisu_captions=policy)
    assert {(r["image_id"], r["caption_kind"]) for r in accepted} == expected
    for r in accepted:
        kind = "w" if r["caption_kind"] == "web" else "g"
        assert r["caption"] == CAPTIONS[r["image_id"]][kind]
        assert r["image_input"] == IMAGES[r["image_id"]]
        assert r["url"].endswith(f"#{r['image_id']}")
    ids = [r["id"] for r in accepted]
    assert len(set(ids)) == len(ids)
    # the image without an entry, the entry without an image, the images without the asked caption
    by_reason: dict[str, set] = {}
    for r in rejected:
        by_reason.setdefault(r["reason"], set()).add(r["image_id"])
    assert by_reason[reasons.NO_IMAGE] == {"img5"}
    missing = {"img6", "img4"} | {"web": {"img3"}, "generated": {"img2"}}.get(policy, set())
    assert by_reason[reasons.MISSING_CAPTION] == missing
    assert counts.accepted + counts.rejected == counts.rows_in == len(accepted) + len(rejected)
    detail = {r["image_id"]: r["detail"] for r in rejected}
    assert detail["img6"] == "no caption entry for this image id"
    assert detail["img5"] == "no image member with this id in the tars"


@pytest.mark.spark
def test_ids_depend_on_image_and_caption_kind_only(spark, taisu_root):
    both, _, _ = ingest_taisu(spark, taisu_root, taisu_captions="both")
    web, _, _ = ingest_taisu(spark, taisu_root, taisu_captions="web-then-generated")
    ids = {(r["image_id"], r["caption_kind"]): r["id"] for r in both}
    assert all(ids[(r["image_id"], r["caption_kind"])] == r["id"] for r in web)
    expected = spark.range(1).select(F.xxhash64(F.lit("img3#generated")).alias("h")).first()["h"]
    assert ids[("img3", "generated")] == expected


@pytest.mark.spark
def test_split_caption_file_dumps_and_broken_inputs(spark, tmp_path):
    captions = {f"id{i:03d}": {"w": f"第{i}张图片里的小狗", "g": None} for i in range(60)}
    images = {k: jpeg_bytes(220, 220, seed=3) for k in captions}
    root = tmp_path / "in"
    taisu_folder(root / "dump=2022-01", captions, images, parts=3)
    # a second dump with a broken caption region and a tar that is not a tar
    bad = root / "dump=2022-02"
    bad.mkdir(parents=True)
    (bad / "captions.json").write_bytes(
        '{"x1": {"w": "一条小狗", "g": null}, "x2": [1, {"w": 2}], "x3": {"w": "一只小猫", "g": null}}'.encode()
    )
    write_tar(bad / "ok.tar", {"x1.jpg": images["id000"], "inner/folder/x3.jpg": images["id001"]})
    (bad / "broken.tar").write_bytes(b"this is not a tar file" * 40)
    accepted, rejected, counts = ingest_taisu(spark, root, taisu_split_bytes=1024, taisu_captions="web")
    assert sorted(r["image_id"] for r in accepted if r["dump"] == "2022-01") == sorted(captions)
    assert {r["image_id"] for r in accepted if r["dump"] == "2022-02"} == {"x1", "x3"}
    malformed = [r for r in rejected if r["reason"] == reasons.MALFORMED_RECORD]
    assert len(malformed) == 2 and all(r["dump"] == "2022-02" for r in malformed)
    assert any("broken.tar" in (r["detail"] or "") or "tar" in (r["detail"] or "") for r in malformed)
    assert any("captions.json" in (r["detail"] or "") for r in malformed)
    assert counts.dumps["2022-01"] == {"accepted": 60, "rejected": 0}
    assert counts.rows_in == len(accepted) + len(rejected)


@pytest.mark.spark
def test_a_folder_without_caption_files_is_a_clear_error(spark, tmp_path):
    write_tar(tmp_path / "a.tar", {"x.jpg": b"123"})
    with pytest.raises(TaiSuError, match=r"no caption file \(\*\.json\)"):
        read_source(spark, str(tmp_path), "taisu", IngestConfig(input_format="taisu"))


def test_config_checks_the_policy_and_sizes():
    assert load_config(sets=["ingest.taisu_captions=web"]).ingest.taisu_captions == "web"
    with pytest.raises(ConfigError, match="ingest.taisu_captions"):
        load_config(sets=["ingest.taisu_captions=web-only"])
    with pytest.raises(ConfigError, match="ingest.taisu_split_bytes"):
        load_config(sets=["ingest.taisu_split_bytes=10"])


@pytest.mark.spark
def test_taisu_through_the_pipeline_with_the_chinese_rules(spark, tmp_path):
    from jobs import pipeline

    captions = {
        "a1": {"w": "一只猫坐在红色的沙发上", "g": "沙发上的一只猫"},
        "a2": {"w": "非常漂亮而且很好看", "g": "一隻小狗在草地上奔跑"},  # web: no noun; generated: traditional
        "a3": {"w": "a photo of a dog", "g": None},  # English under the Chinese rules
        "a4": {"w": "一张很小的图片里的花", "g": None},  # its image is below 200 px
        "a5": {"w": "没有图片的描述文字", "g": None},
    }
    images = {
        "a1": jpeg_bytes(320, 240, seed=1),
        "a2": jpeg_bytes(300, 300, seed=2),
        "a3": jpeg_bytes(300, 300, seed=3),
        "a4": jpeg_bytes(120, 100, seed=4),
    }
    root = taisu_folder(tmp_path / "taisu", captions, images)
    out = tmp_path / "out"
    argv = ["--input", str(root), "--output", str(out), "--input-format", "taisu", "--language", "zh"]
    assert pipeline.main([*argv, "--stages", "text,image,dedup"]) == 0
    accepted = {(r["image_id"], r["caption_kind"]): r for r in spark.read.parquet(f"{out}/accepted").collect()}
    assert set(accepted) == {("a1", "web"), ("a1", "generated"), ("a2", "generated")}
    assert accepted[("a1", "web")]["image_phash"] == accepted[("a1", "generated")]["image_phash"]
    assert accepted[("a2", "generated")]["language"] == "zh" and accepted[("a1", "web")]["width"] == 320
    report = json.loads((out / "report" / "funnel.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["ingest"]["reasons"] == {reasons.NO_IMAGE: 1}
    assert stages["text"]["reasons"] == {reasons.NO_NOUN: 1, reasons.WRONG_LANGUAGE: 1}
    assert stages["image"]["reasons"] == {reasons.LOW_RESOLUTION: 1}
    for s in report["stages"]:
        assert s["rows_in"] == s["accepted"] + s["rejected"]
    assert report["config"]["text"]["language"] == "zh"


@pytest.mark.spark
def test_caption_files_and_tars_are_each_read_once(spark, taisu_root):
    # Unreadable regions and tars go through the same join (null id): no second read of either input.
    config = IngestConfig(input_format="taisu")
    frame = with_pair_columns(read_source(spark, str(taisu_root), "taisu", config), "taisu", config)
    assert frame._jdf.queryExecution().executedPlan().toString().count("MapInArrow") == 2
