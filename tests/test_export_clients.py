"""The exports as the tools users run read them: Kosmos-2's GRIT scripts, the webdataset package,
winnow's own ingest, pyarrow, pandas, duckdb and HF datasets.

Accepted rows in three dumps (as ``winnow run`` writes them: parquet in ``dump=<name>/``, with GRIT's
columns and kept image bytes) are made here; ``winnow export-wds`` and ``winnow export-list`` run
on them through the CLI. Dump names with a dot and an underscore, ids shared across dumps and
repeated within one, a row without image bytes: what broke keys and ids before.
"""

from __future__ import annotations

import collections
import glob
import io
import json
import os
import tarfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset
from image_factory import jpeg_bytes
from PIL import Image
from pyspark.sql.types import ArrayType, BinaryType, DoubleType, IntegerType, LongType, StringType, StructField
from pyspark.sql.types import StructType as Struct
from webdataset.tariterators import base_plus_ext

from jobs import cli, export_list
from jobs.stages.ingest import IngestConfig, read_source, split_pairs, with_pair_columns
from udfs import wds

# GRIT's published example row, verbatim.
GRIT_CAPTION = "a wire hanger with a paper cover that reads we heart our customers"
GRIT_BOXES = [
    [0.019644069503434333, 0.31054004033406574, 0.9622142865754519, 0.9603442351023356, 0.79298526],
    [0.019422357885505368, 0.027634161214033764, 0.9593302408854166, 0.969467560450236, 0.67520964],
]
GRIT_CHUNKS = [[19.0, 32.0, *GRIT_BOXES[0]], [0.0, 13.0, *GRIT_BOXES[1]]]
GRIT_REFS = [[19.0, 66.0, *GRIT_BOXES[0]], [0.0, 66.0, *GRIT_BOXES[1]]]
PHRASES = {(19, 32): "a paper cover", (0, 13): "a wire hanger", (19, 66): GRIT_CAPTION[19:], (0, 66): GRIT_CAPTION}

# A second caption with one chunk, to see that each sample carries its own spans.
BIKE = "a red bike against a wall"
BIKE_CHUNKS = [[0.0, 10.0, 0.1, 0.2, 0.8, 0.9, 0.9]]
BIKE_REFS = [[0.0, 25.0, 0.1, 0.2, 0.8, 0.9, 0.9]]

ACCEPTED = Struct(
    [
        StructField("id", LongType()),
        StructField("url", StringType()),
        StructField("caption", StringType()),
        StructField("dump", StringType()),
        StructField("width", IntegerType()),  # the image the rules judged (the original)
        StructField("height", IntegerType()),
        StructField("image_phash", StringType()),
        StructField("noun_chunks", ArrayType(ArrayType(DoubleType(), False), False)),
        StructField("ref_exps", ArrayType(ArrayType(DoubleType(), False), False)),
        StructField("image", BinaryType()),  # the kept copy, smaller than the original
    ]
)


def accepted_rows() -> list[tuple]:
    grit = (GRIT_CAPTION, 640, 480, GRIT_CHUNKS, GRIT_REFS)
    bike = (BIKE, 480, 640, BIKE_CHUNKS, BIKE_REFS)
    rows = [
        # id 5 is in every dump; id 12 twice in 2024-05; a negative id
        (5, "http://a/5", *grit, jpeg_bytes(320, 240, seed=1)),
        (12, "http://a/12", *bike, jpeg_bytes(240, 320, seed=2)),
        (12, "http://a/12b", *grit, jpeg_bytes(320, 240, seed=3)),
        (-9, "http://a/-9", *bike, jpeg_bytes(240, 320, seed=4)),
        (5, "http://b/5", *grit, jpeg_bytes(320, 240, seed=5)),
        (7, "http://b/7", *bike, jpeg_bytes(240, 320, seed=6)),
        (5, "http://c/5", *grit, jpeg_bytes(320, 240, seed=7)),
        (8, "http://c/8", *bike, None),  # no kept bytes: listed, not exported
    ]
    dumps = ["2024-05"] * 4 + ["cc.v2"] * 2 + ["a_b"] * 2
    return [
        (pair_id, url, caption, dump, w, h, f"{i:016x}", chunks, refs, image)
        for i, ((pair_id, url, caption, w, h, chunks, refs, image), dump) in enumerate(zip(rows, dumps, strict=True))
    ]


EXPORTED = [r for r in accepted_rows() if r[9] is not None]


@pytest.fixture(scope="module")
def run_output(spark, tmp_path_factory) -> Path:
    """OUTPUT/accepted as a run writes it (parquet partitioned by dump)."""
    out = tmp_path_factory.mktemp("run")
    frame = spark.createDataFrame(accepted_rows(), ACCEPTED).repartition(2)
    frame.write.partitionBy("dump").parquet(str(out / "accepted"))
    return out


@pytest.fixture(scope="module")
def shards(run_output, tmp_path_factory) -> Path:
    """`winnow export-wds` of the accepted rows, two samples per shard."""
    out = tmp_path_factory.mktemp("shards")
    argv = ["export-wds", "--input", str(run_output / "accepted"), "--output", str(out), "--shard-size", "2"]
    assert cli.main(argv) == 0
    return out


def all_tars(folder: Path) -> list[str]:
    return sorted(glob.glob(str(folder / "dump=*" / "*.tar")))


# --- pure: names -------------------------------------------------------------


def test_dump_tokens_keep_keys_whole():
    assert wds.dump_token("2024-05") == "2024-05"
    assert wds.dump_token("cc.v2") == "cc%2Ev2" and wds.dump_token("a_b") == "a%5Fb"
    assert wds.dump_token("x/y z") == "x%2Fy%20z" and wds.dump_token("é") == "%C3%A9"
    # webdataset's own rule splits the member name at the first dot: the key must come back whole
    for dump in ("2024-05", "cc.v2", "a_b", "v1.2.3", "é"):
        key = wds.sample_key(dump, -42, 1)
        assert base_plus_ext(f"{key}.json") == (key, "json")
        assert "/" not in key and "." not in key
    # distinct (dump, id, repeat) never share a key, even where "_" could be read two ways
    triples = [("a", 1, 2), ("a_1", 2, 0), ("a", 12, 0), ("a_12", 0, 0), ("a", -1, 0), ("a-", 1, 0)]
    assert len({wds.sample_key(*t) for t in triples}) == len(triples)
    assert len({wds.shard_file_name(d, 0) for d in ("a_b", "a-b", "a.b", "a%5Fb")}) == 4


def test_grit_entries_make_spans_integers():
    got = wds.grit_entries(GRIT_CHUNKS)
    assert got == [[19, 32, *GRIT_BOXES[0]], [0, 13, *GRIT_BOXES[1]]]
    assert all(type(e[0]) is int and type(e[1]) is int for e in got)
    assert all(type(v) is float for e in got for v in e[2:])
    assert wds.grit_entries(None) is None and wds.grit_entries([]) == []


def test_stored_size_reads_the_header():
    assert wds.stored_size(jpeg_bytes(300, 210)) == (300, 210)
    assert wds.stored_size(b"not an image") == (None, None) and wds.stored_size(None) == (None, None)


# --- Spark: export-wds as Kosmos-2's scripts and webdataset read it ------------


@pytest.mark.spark
def test_kosmos2_reads_the_shards_extracted_into_one_folder(shards, tmp_path):
    # prepare_grit.py lists one folder of <key>.json / <key>.jpg; extract every dump's shards into it
    flat = tmp_path / "grit"
    flat.mkdir()
    for tar in all_tars(shards):
        with tarfile.open(tar) as t:
            t.extractall(flat, filter="data")
    names = sorted(os.listdir(flat))
    jsons = [n for n in names if n.endswith(".json")]
    assert len(jsons) == len(EXPORTED)  # nothing overwritten by a key of another dump
    by_url = {r[1]: r for r in EXPORTED}
    for name in jsons:
        data = json.loads((flat / name).read_text())
        source = by_url[data["url"]]
        with Image.open(flat / name.replace(".json", ".jpg")) as img:
            stored = img.size
        # img2dataset's meaning: width/height of the stored image, original_* of the original
        assert (data["width"], data["height"]) == stored == Image.open(io.BytesIO(source[9])).size
        assert (data["original_width"], data["original_height"]) == (source[4], source[5]) != stored
        caption = data["caption"]
        assert caption == source[2] == (flat / name.replace(".json", ".txt")).read_text()
        assert len(data["noun_chunks"]) == len(data["ref_exps"]) == len(source[7])
        # the loader and visualize_grit.py slice the caption with the span ends, box scaled to pixels
        for field in ("noun_chunks", "ref_exps"):
            for start, end, x1, y1, x2, y2, score in data[field]:
                assert type(start) is int and type(end) is int
                assert all(type(v) is float for v in (x1, y1, x2, y2, score))
                phrase = caption[start:end]
                if caption == GRIT_CAPTION:
                    assert phrase == PHRASES[(start, end)]
                assert phrase and 0 <= int(x1 * stored[0]) < int(x2 * stored[0]) <= stored[0]
        assert [e[2:] for e in data["ref_exps"]] == [e[2:] for e in source[8]]


@pytest.mark.spark
def test_webdataset_reads_every_dump_with_unique_keys_and_the_accepted_ids(shards):
    tars = all_tars(shards)
    assert {os.path.basename(t) for t in tars} == {
        "2024-05_00000.tar",
        "2024-05_00001.tar",
        "cc%2Ev2_00000.tar",
        "a%5Fb_00000.tar",
    }
    samples = list(webdataset.WebDataset(tars, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == len(EXPORTED)
    metas = [json.loads(s["json"]) for s in samples]
    assert all(m["key"] == k for m, k in zip(metas, keys, strict=True))
    assert collections.Counter(m["id"] for m in metas) == collections.Counter(r[0] for r in EXPORTED)
    assert sorted((m["dump"], m["id"], m["url"]) for m in metas) == sorted((r[3], r[0], r[1]) for r in EXPORTED)
    assert {"2024-05_12", "2024-05_12_1", "cc%2Ev2_5", "a%5Fb_5", "2024-05_-9"} <= set(keys)
    for sample, meta in zip(samples, metas, strict=True):
        assert Image.open(io.BytesIO(sample["jpg"])).size == (meta["width"], meta["height"])
        assert sample["txt"].decode() == meta["caption"]


@pytest.mark.spark
def test_original_size_is_img2dataset_s_when_the_rows_carry_it(spark, tmp_path):
    # rows read from img2dataset output carry its original_width / original_height: those win over width / height
    schema = "id long, url string, caption string, dump string, width int, height int, original_width long, " + (
        "original_height long, image binary"
    )
    rows = [
        (1, "http://i/1", "a cat", "d", 256, 192, 1024, 768, jpeg_bytes(256, 192)),
        (2, "http://i/2", "a dog", "d", 300, 200, None, None, jpeg_bytes(300, 200)),
    ]
    frame = spark.createDataFrame(rows, schema)
    assert cli_export(frame, tmp_path) == 2
    (tar,) = all_tars(tmp_path / "wds")
    metas = {json.loads(s["json"])["id"]: json.loads(s["json"]) for s in webdataset.WebDataset(tar, shardshuffle=False)}
    sizes = {i: (m["width"], m["height"], m["original_width"], m["original_height"]) for i, m in metas.items()}
    assert sizes == {1: (256, 192, 1024, 768), 2: (300, 200, 300, 200)}


def cli_export(frame, folder: Path) -> int:
    """`winnow export-wds` over ``frame`` written as OUTPUT/accepted; the number of samples written."""
    frame.write.partitionBy("dump").parquet(str(folder / "accepted"))
    argv = ["export-wds", "--input", str(folder / "accepted"), "--output", str(folder / "wds")]
    assert cli.main(argv) == 0
    return sum(json.loads(Path(m).read_text())["samples"] for m in glob.glob(str(folder / "wds" / "dump=*" / "*.json")))


@pytest.mark.spark
def test_ingesting_the_export_keeps_every_id(spark, shards):
    cfg = IngestConfig()
    raw = read_source(spark, str(shards), "webdataset", cfg)
    accepted, rejected = split_pairs(with_pair_columns(raw, "webdataset", cfg))
    assert rejected.count() == 0
    got = collections.Counter((r["dump"], r["id"], r["url"]) for r in accepted.collect())
    assert got == collections.Counter((r[3], r[0], r[1]) for r in EXPORTED)


def write_tar(path: Path, samples: dict[str, dict]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, meta in samples.items():
            for ext, data in (("jpg", jpeg_bytes(300, 220, seed=len(key))), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.spark
def test_only_an_integral_json_id_is_the_pair_id(spark, tmp_path):
    ids = {"int": 77, "negative": -3, "string": "77", "fraction": 7.5, "float": 7.0, "bool": True, "huge": 2**70}
    samples = {name: {"url": f"http://x/{name}", "caption": "a cat", "id": value} for name, value in ids.items()}
    samples["none"] = {"url": "http://x/none", "caption": "a cat"}
    write_tar(tmp_path / "part.tar", samples)
    cfg = IngestConfig()
    raw = read_source(spark, str(tmp_path), "webdataset", cfg)
    accepted, _ = split_pairs(with_pair_columns(raw, "webdataset", cfg))
    got = {r["url"].rsplit("/", 1)[1]: r["id"] for r in accepted.collect()}
    hashes = {
        r["u"]: r["h"]
        for r in spark.createDataFrame([(f"http://x/{n}",) for n in samples], "u string")
        .selectExpr("u", "xxhash64(u) AS h")
        .collect()
    }
    assert got == {n: ids[n] if n in ("int", "negative") else hashes[f"http://x/{n}"] for n in samples}
    # --id-col still wins over the .json's id
    by_key = IngestConfig(id_col="key")
    raw = read_source(spark, str(tmp_path), "webdataset", by_key)
    rows = split_pairs(with_pair_columns(raw, "webdataset", by_key))[0].collect()
    assert 77 not in {r["id"] for r in rows} and "source_id" not in rows[0].asDict()


# --- Spark: export-list as pyarrow, pandas, duckdb and HF datasets read it ---


def triples(columns) -> list[tuple]:
    """(dump, id, url) of each row, from three columns of equal length."""
    return sorted(zip(*columns, strict=True))


@pytest.mark.spark
def test_export_list_is_read_with_its_dump_by_every_parquet_reader(run_output, tmp_path, capsys):
    out = tmp_path / "urls.parquet"
    argv = ["export-list", "--input", str(run_output / "accepted"), "--output", str(out)]
    assert cli.main(argv) == 0
    assert f"listed: {len(accepted_rows())} rows" in capsys.readouterr().out
    want = sorted((r[3], r[0], r[1]) for r in accepted_rows())
    # img2dataset's --url_list takes the *.parquet files directly in the folder
    files = sorted(glob.glob(str(out / "*.parquet")))
    assert files and not glob.glob(str(out / "dump=*"))

    table = pq.read_table(out)
    assert "image" not in table.column_names and {"id", "url", "caption", "dump", "noun_chunks"} <= set(
        table.column_names
    )
    assert triples(table.select(["dump", "id", "url"]).to_pydict().values()) == want
    frame = pd.read_parquet(out)
    assert triples([frame["dump"], frame["id"], frame["url"]]) == want
    # the files, in name order, hold the rows sorted by (dump, id, url)
    ordered = [(r["dump"], r["id"], r["url"]) for f in files for r in pq.read_table(f).to_pylist()]
    assert ordered == want
    counts = duckdb.sql(f"SELECT dump, count(*) FROM read_parquet('{out}/*.parquet') GROUP BY dump").fetchall()
    assert dict(counts) == collections.Counter(r[3] for r in accepted_rows())
    spans = duckdb.sql(f"SELECT noun_chunks[1][1] FROM read_parquet('{out}/*.parquet') WHERE url = 'http://a/5'")
    assert spans.fetchall() == [(19.0,)]


@pytest.mark.spark
def test_export_list_is_read_by_hf_datasets(run_output, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local parquet folder: nothing to fetch
    import datasets  # a declared test dependency (pyproject.toml): missing is a failure, not a skip

    out = tmp_path / "urls.parquet"
    assert export_list.main(["--input", str(run_output / "accepted"), "--output", str(out)]) == 0
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    assert "dump" in loaded.column_names
    assert triples([loaded["dump"], loaded["id"], loaded["url"]]) == sorted((r[3], r[0], r[1]) for r in accepted_rows())


@pytest.mark.spark
def test_export_list_columns_and_overwrite(run_output, tmp_path):
    out = tmp_path / "list"
    accepted = str(run_output / "accepted")
    assert export_list.main(["--input", accepted, "--output", str(out), "--columns", "url,caption"]) == 0
    assert pq.read_table(out).column_names == ["url", "caption", "dump"]
    # an existing output is kept unless --overwrite
    assert export_list.main(["--input", accepted, "--output", str(out)]) == 2
    assert pq.read_table(out).column_names == ["url", "caption", "dump"]
    assert export_list.main(["--input", accepted, "--output", str(out), "--overwrite", "--with-images"]) == 0
    table = pq.read_table(out)
    assert "image" in table.column_names and table.num_rows == len(accepted_rows())


@pytest.mark.spark
def test_export_list_refuses_bad_input_with_one_line(spark, run_output, tmp_path, capsys):
    plain = tmp_path / "plain"
    spark.createDataFrame([(1, "http://x", "a cat")], "id long, url string, caption string").write.parquet(str(plain))
    (tmp_path / "empty").mkdir()
    accepted = str(run_output / "accepted")
    cases = [
        ([str(tmp_path / "missing"), str(tmp_path / "o1")], "input not found"),
        ([str(plain), str(tmp_path / "o2")], "no dump=<name>/ folders; is it winnow's OUTPUT/accepted?"),
        ([str(run_output), str(tmp_path / "o3")], "is a run's output folder: give"),
        ([str(tmp_path / "empty"), str(tmp_path / "o4")], "is not a folder of parquet"),
        ([accepted, str(run_output)], "must not be one inside the other"),
        ([accepted, accepted + "/dump=a_b/list"], "must not be one inside the other"),
    ]
    for (source, target), message in cases:
        assert cli.main(["export-list", "--input", source, "--output", target]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert cli.main(["export-list", "--input", accepted, "--output", str(tmp_path / "o5"), "--columns", "nope"]) == 2
    assert "--columns: nope not in the input" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))
    assert sorted(p.name for p in (run_output / "accepted").iterdir() if p.name.startswith("dump=")) == [
        "dump=2024-05",
        "dump=a_b",
        "dump=cc.v2",
    ]
