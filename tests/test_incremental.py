"""Scheduled runs over dump=<name>/ folders, stage checkpoints with fingerprints, the per-dump commit.

Local mode; the stages are text and dedup on a source pHash column (no network), so each run
takes seconds. tests/test_faults.py kills real processes on the standalone cluster.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import pipeline, storage
from jobs.stages import dedup, ingest, text

pytestmark = pytest.mark.spark

SCENES = [
    "a red bicycle leaning against a brick wall",
    "two dogs playing with a ball in the park",
    "a bowl of fresh strawberries on a wooden table",
    "an old lighthouse on a rocky coast at sunset",
    "a child flying a kite on the beach",
    "a cup of coffee next to an open book",
    "a snowy mountain above a quiet lake",
    "a cat sleeping on a blue sofa",
    "a vintage car parked in front of a shop",
    "a field of sunflowers under a clear sky",
    "a wooden boat tied to a small pier",
    "a plate of pasta with tomato sauce",
]
ARGS = ["--stages", "text,dedup", "--set", "dedup.phash_col=source_phash"]


def rows_of(dump: str, n: int, first: int) -> list[dict]:
    """``n`` distinct pairs (pHash and caption unique across dumps for distinct ``first``)."""
    return [
        {
            "url": f"https://img.example/{dump}/{i}.jpg",
            "caption": f"{SCENES[i % len(SCENES)]} number {i}",
            "source_phash": f"{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}",
        }
        for i in range(first, first + n)
    ]


def write_dump(root: Path, dump: str, rows: list[dict]) -> None:
    folder = root / f"dump={dump}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def write_crawl(root: Path, *dumps: list[dict]) -> Path:
    """``root`` with ``dump=d1/``, ``dump=d2/``, ... holding ``dumps`` in order."""
    for n, rows in enumerate(dumps, 1):
        write_dump(root, f"d{n}", rows)
    return root


@pytest.fixture
def dumps(tmp_path):
    """(dump 1 rows, dump 2 rows): dump 2 repeats 5 of dump 1's pairs at other URLs."""
    first = rows_of("d1", 30, 0)
    copies = [dict(r, url=r["url"].replace("/d1/", "/mirror/")) for r in first[:5]]
    second = rows_of("d2", 25, 1000) + copies
    return first, second


def rows(spark, folder: Path) -> list[str]:
    return sorted(map(repr, spark.read.parquet(str(folder)).collect()))


def by_id(spark, folder: Path) -> dict[int, str]:
    return {r["id"]: r["reason"] for r in spark.read.parquet(str(folder)).select("id", "reason").collect()}


def visible_files(out: Path) -> list[str]:
    """Every file and folder under ``out`` except checksums, relative."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.name.endswith(".crc"))


def test_two_dumps_in_two_runs_equal_one_run_and_a_third_run_does_nothing(spark, tmp_path, dumps, capsys):
    first, second = dumps
    # One run over both dumps.
    both = write_crawl(tmp_path / "both", first, second)
    once = tmp_path / "once"
    assert pipeline.main(["--input", str(both), "--output", str(once), *ARGS]) == 0

    # The schedule: dump 1 arrives, a run; dump 2 arrives, a run.
    crawl = tmp_path / "crawl"
    write_dump(crawl, "d1", first)
    twice = tmp_path / "twice"
    assert pipeline.main(["--input", str(crawl), "--output", str(twice), "--incremental", *ARGS]) == 0
    assert json.loads((twice / "report" / "funnel.json").read_text())["dumps"] == ["d1"]
    write_dump(crawl, "d2", second)
    capsys.readouterr()
    assert pipeline.main(["--input", str(crawl), "--output", str(twice), "--incremental", *ARGS]) == 0
    report = json.loads((twice / "report" / "funnel.json").read_text())
    assert report["dumps"] == ["d2"] and report["rows_in"] == len(second)  # dump 1 was not read again

    assert rows(spark, twice / "accepted") == rows(spark, once / "accepted")
    assert len(rows(spark, once / "accepted")) == 55
    # The same rows rejected; dump 2's copies of dump 1 pairs are history duplicates when dump 1
    # was committed first, pair duplicates within one run.
    one, two = by_id(spark, once / "rejected"), by_id(spark, twice / "rejected")
    assert one.keys() == two.keys() and len(two) == 5
    assert set(two.values()) == {"history-duplicate"} and set(one.values()) == {"duplicate-pair"}
    for folder in ("accepted", "history"):
        assert rows(spark, twice / folder / "dump=d1") == rows(spark, once / folder / "dump=d1")
    assert not (once / "rejected" / "dump=d1").exists() and not (twice / "rejected" / "dump=d1").exists()
    markers = sorted(p.name for p in (twice / "_commits").glob("dump=*.json"))
    assert markers == ["dump=d1.json", "dump=d2.json"]
    marker = json.loads((twice / "_commits" / "dump=d2.json").read_text())
    assert marker["stages"]["dedup"] == {"accepted": 25, "rejected": 5}

    # A third run with nothing new changes nothing.
    before = {p: (twice / p).stat().st_mtime_ns for p in visible_files(twice)}
    capsys.readouterr()
    assert pipeline.main(["--input", str(crawl), "--output", str(twice), "--incremental", *ARGS]) == 0
    assert "nothing new: all 2 dumps" in capsys.readouterr().out
    assert {p: (twice / p).stat().st_mtime_ns for p in visible_files(twice)} == before
    # Checkpoints of committed dumps are gone (run.keep_checkpoints = false).
    assert not list((twice / "_checkpoints").rglob("*.parquet"))


def test_incremental_needs_dump_folders(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    pq.write_table(pa.Table.from_pylist(rows_of("x", 3, 0)), flat / "part.parquet")
    assert pipeline.main(["--input", str(flat), "--output", str(tmp_path / "o"), "--incremental", *ARGS]) == 2
    assert "--incremental needs dump=<name>/ folders directly under" in capsys.readouterr().err


def run_counting(monkeypatch, input_path: Path, out: Path, *extra: str) -> dict[str, int]:
    """Run the pipeline and count how often each stage's compute function was called."""
    calls = {"ingest": 0, "text": 0, "dedup": 0}
    for stage, module, name in (
        ("ingest", ingest, "with_pair_columns"),
        ("text", text, "with_text_verdicts"),
        ("dedup", dedup, "with_dedup_verdicts"),
    ):
        real = getattr(module, name)

        def counted(*args, _real=real, _stage=stage, **kwargs):
            calls[_stage] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    code = pipeline.main(["--input", str(input_path), "--output", str(out), *ARGS, *extra])
    monkeypatch.undo()
    assert code == 0
    return calls


def test_checkpoints_resume_and_a_config_or_code_change_invalidates_its_stage(spark, tmp_path, dumps, monkeypatch):
    first, second = dumps
    crawl = write_crawl(tmp_path / "crawl", first, second)
    out = tmp_path / "out"
    keep = ("--set", "run.keep_checkpoints=true")
    assert run_counting(monkeypatch, crawl, out, *keep) == {"ingest": 1, "text": 1, "dedup": 1}
    reference = rows(spark, out / "accepted")
    # Same config, code and input: every stage comes from its checkpoint.
    assert run_counting(monkeypatch, crawl, out, *keep) == {"ingest": 0, "text": 0, "dedup": 0}
    assert rows(spark, out / "accepted") == reference
    # A dedup key changed: ingest and text resume, dedup runs again.
    calls = run_counting(monkeypatch, crawl, out, *keep, "--set", "dedup.pair_dedup=false")
    assert calls == {"ingest": 0, "text": 0, "dedup": 1}
    assert len(rows(spark, out / "accepted")) == 60  # the copies are kept now
    # A text key changed: text and everything after it run again.
    calls = run_counting(monkeypatch, crawl, out, *keep, "--set", "text.max_occurrences=5")
    assert calls == {"ingest": 0, "text": 1, "dedup": 1}
    assert rows(spark, out / "accepted") == reference
    # Another code version (any module of jobs, udfs, schemas or a library version): all stages.
    monkeypatch.setattr(pipeline, "code_version", lambda: "another version")
    calls = run_counting(monkeypatch, crawl, out, *keep, "--set", "text.max_occurrences=5")
    assert calls == {"ingest": 1, "text": 1, "dedup": 1}
    # An input file rewritten in place (same path, other content): from ingest on.
    write_dump(crawl, "d2", second[:-5])
    calls = run_counting(monkeypatch, crawl, out, *keep, "--set", "text.max_occurrences=5")
    assert calls == {"ingest": 1, "text": 1, "dedup": 1}
    assert len(rows(spark, out / "accepted")) == 55
    assert not (out / "rejected" / "dump=d2").exists()  # the re-run left no rejected rows of dump 2


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing after the raise runs, no handler catches it."""


@pytest.mark.parametrize("after", [0, 5, 10])
def test_a_run_killed_during_its_commit_is_completed_by_the_next(spark, tmp_path, dumps, monkeypatch, after):
    """Kill the run after ``after`` folder swaps of its commit (4 parts x 2 dumps, the parts' null
    partitions, then the report); the next run over the same input finishes that commit and gives
    the clean run's output."""
    first, second = dumps
    crawl = write_crawl(tmp_path / "crawl", first, second)
    clean = tmp_path / "clean"
    assert pipeline.main(["--input", str(crawl), "--output", str(clean), *ARGS]) == 0

    out = tmp_path / "out"
    real = storage.swap_partition
    done = []

    def dying(*args, **kwargs):
        if len(done) == after:
            raise Killed
        done.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "swap_partition", dying)
    with pytest.raises(Killed):
        pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS])
    monkeypatch.undo()
    assert list((out / "_commits").glob("_pending-*.json")), "the kill came before the intent was written"
    assert len(list((out / "_commits").glob("dump=*.json"))) == min(after // 4, 2)

    assert pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS]) == 0
    for part in ("accepted", "rejected", "history"):
        assert rows(spark, out / part) == rows(spark, clean / part)
    files = visible_files(out)
    assert not [f for f in files if "_staging" in f or "_temporary" in f or "spark-staging" in f or "_pending" in f]
    assert sorted(p.name for p in (out / "_commits").glob("dump=*.json")) == ["dump=d1.json", "dump=d2.json"]
    funnel = json.loads((out / "report" / "funnel.json").read_text())
    assert funnel["stages"] == json.loads((clean / "report" / "funnel.json").read_text())["stages"]


def test_a_run_killed_before_its_intent_leaves_the_old_output_and_no_staging(spark, tmp_path, dumps, monkeypatch):
    """Killed while writing the staged parts: readers still see the previous commit; the next run
    deletes the staging and commits its own."""
    first, second = dumps
    crawl = tmp_path / "crawl"
    write_dump(crawl, "d1", first)
    out = tmp_path / "out"
    assert pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS]) == 0
    committed = rows(spark, out / "accepted")

    write_dump(crawl, "d1", first[:20])
    real = storage.Committer.stage
    calls = []

    def dying(self, part_path, frame):
        calls.append(part_path)
        written = real(self, part_path, frame)
        if len(calls) == 2:
            raise Killed
        return written

    monkeypatch.setattr(storage.Committer, "stage", dying)
    with pytest.raises(Killed):
        pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS])
    monkeypatch.undo()
    assert (out / "rejected" / "_staging").exists() or (out / "accepted" / "_staging").exists()
    assert rows(spark, out / "accepted") == committed  # readers see the previous commit only

    # and a marker write killed between its temporary file and the rename
    (out / "_commits" / ".dump=d1.json.0123abcd.tmp").write_text('{"dump": "d')
    assert pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS]) == 0
    assert len(rows(spark, out / "accepted")) == 20
    assert not [f for f in visible_files(out) if "_staging" in f or f.endswith(".tmp")]
    shutil.rmtree(out)


def test_a_dump_re_run_without_dedup_loses_its_old_history(spark, tmp_path, dumps):
    """Each part is committed per dump even when the run does not write it: the history (what later
    dumps dedup against) must describe the dump's current output, not an older run's."""
    first, _ = dumps
    crawl = tmp_path / "crawl"
    write_dump(crawl, "d1", first)
    out = tmp_path / "out"
    assert pipeline.main(["--input", str(crawl), "--output", str(out), *ARGS]) == 0
    assert len(rows(spark, out / "history" / "dump=d1")) == 30
    assert pipeline.main(["--input", str(crawl), "--output", str(out), "--stages", "text"]) == 0
    assert not (out / "history" / "dump=d1").exists()
    assert len(rows(spark, out / "accepted")) == 30
