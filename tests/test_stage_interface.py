"""The Stage interface: every registered stage keeps it, and a new stage is one class plus one entry.

The second test adds a toy stage to ``jobs.stages.STAGES`` (and nothing else):
its config section becomes keys the loader, ``--set`` and the reference know,
the driver runs it in its loop, checks its rows in == accepted + rejected,
and commits its rejects with the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import reference
from jobs import stages as registry
from jobs.config import known_stages, load_config, sections
from jobs.errors import ConfigError
from jobs.pipeline import run_pipeline
from jobs.stage import Stage, accepted_rows, rejected_rows
from schemas import reasons


def test_every_stage_keeps_the_interface():
    assert [s.name for s in registry.STAGES] == list(reasons.STAGES)  # the order rejects are reported in
    assert all(issubclass(s, Stage) for s in registry.STAGES)
    tables = [t for s in registry.STAGES for t in s.sections]
    assert len(tables) == len(set(tables)) and list(sections()) == [*tables, "run"]
    for stage in registry.STAGES:
        codes = set(reasons.REASONS[stage.name]) | set(reasons.BOX_REASONS)
        assert all(rule.reason in codes | {""} for rule in stage.rules), stage.name
        assert stage.annotate is not Stage.annotate and stage.split is not Stage.split, stage.name


@dataclass(frozen=True)
class ShoutConfig:
    """``[shout]``: a toy stage that rejects captions written in capitals."""

    min_lower: int = 1
    """Lower-case letters a caption needs."""

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.min_lower < 0:
            yield "min_lower", "must not be negative"


class ShoutStage(Stage):
    name = "shout"
    sections = {"shout": ShoutConfig}

    def needs(self) -> dict[str, str]:
        return {}

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        lower = F.length(F.regexp_replace("caption", "[^a-z]", ""))
        shouting = lower < F.lit(self.cfg.shout.min_lower)
        return frame.withColumns(
            {
                "reason": F.when(shouting, F.lit("shout-capitals")),
                "detail": F.when(shouting, F.concat(F.lit("lower-case letters: "), lower.cast("string"))),
            }
        )

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        return accepted_rows(annotated, frame.schema, []), rejected_rows(annotated, self.name, frame.columns)


@pytest.fixture
def with_shout(monkeypatch):
    monkeypatch.setattr(registry, "STAGES", (*registry.STAGES, ShoutStage))


def test_a_new_stage_brings_its_config_section(with_shout):
    assert "shout" in known_stages()
    assert load_config(sets=["run.stages=shout", "shout.min_lower=3"]).shout.min_lower == 3
    with pytest.raises(ConfigError, match=r"^shout\.min_lower: must not be negative"):
        load_config(sets=["shout.min_lower=-1"])
    assert "[shout]\n# Lower-case letters a caption needs.\nmin_lower = 1\n" in reference.defaults_toml()


@pytest.mark.spark
def test_a_new_stage_runs_in_the_loop_and_is_counted(spark, tmp_path, with_shout):
    rows = [
        {"url": "http://x/1", "caption": "a red bicycle against a brick wall"},
        {"url": "http://x/2", "caption": "BUY NOW CHEAP BICYCLES"},
        {"url": "http://x/3", "caption": "an old map of the harbour"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    cfg = load_config(sets=["run.stages=shout"])
    report = run_pipeline(spark, cfg, str(tmp_path / "pairs.parquet"), str(tmp_path / "out"))
    shout = report["stages"][-1]
    assert [s["stage"] for s in report["stages"]] == ["ingest", "shout"]
    assert (shout["rows_in"], shout["accepted"], shout["rejected"]) == (3, 2, 1)
    assert shout["reasons"] == {"shout-capitals": 1}
    rejected = spark.read.parquet(str(tmp_path / "out" / "rejected")).collect()
    assert [(r["stage"], r["reason"], r["caption"]) for r in rejected] == [
        ("shout", "shout-capitals", "BUY NOW CHEAP BICYCLES")
    ]
    assert json.loads((tmp_path / "out" / "report" / "funnel.json").read_text())["config"]["shout"] == {"min_lower": 1}
