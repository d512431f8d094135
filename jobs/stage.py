"""The Stage interface every stage implements, what a stage is given, and what all stages share.

A stage (one module in jobs/stages/, listed in ``jobs.stages.STAGES``) is

- its ``name`` (also the ``stage`` of its rejected rows) and the config
  ``sections`` it reads: TOML table -> the frozen dataclass whose fields are
  its defaults (beside the rules that use them);
- ``needs()``: the stages that must run before it, and ``validate()``: the
  checks across sections; both run when the config is loaded, before Spark;
- ``preflight()``: what it loads and checks before any data is read (models,
  word lists, blocklists, the Boxes table), and ``check_source()``: what it
  needs of the ingested pairs' columns, before any later stage runs;
- ``annotate(frame)``: every input row once, with ``reason`` (null = accepted)
  and ``detail``; ``split(annotated, frame)``: (accepted, rejected) from that
  one frame, so expensive UDFs run once per row;
- the parts it commits beyond accepted and rejected (dedup: the history;
  ground: the box verdicts), and what it adds to funnel.json.

The driver (jobs/pipeline.py) loops over the selected stages: it computes or
resumes each stage's annotated frame, checks rows in == accepted + rejected,
then commits every part and the report. Adding a stage is one module in
jobs/stages/ and one entry in ``STAGES`` (plus its reason codes in
schemas/reasons.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.errors import ConservationError
from jobs.storage import FileStore
from schemas.tables import REJECT, col_ref, conform


class Config:
    """A run's configuration: one frozen section object per TOML table, read as ``cfg.image.min_side``.

    jobs.config builds and checks it (the sections' defaults, then the TOML
    file, the flags and ``--set``); ``to_dict`` is what funnel.json and the
    checkpoint fingerprints record.
    """

    def __init__(self, sections: Mapping[str, Any]) -> None:
        self._sections = dict(sections)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("_sections", {})
        if name not in sections:
            raise AttributeError(f"no config section [{name}] (known: {', '.join(sections)})")
        return sections[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._sections == other._sections

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Config({self._sections!r})"

    def section_names(self) -> list[str]:
        return list(self._sections)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with ``changes`` to one section (not checked: jobs.config.load_config checks)."""
        return Config({**self._sections, section: dataclasses.replace(self._sections[section], **changes)})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _plain(dataclasses.asdict(section)) for name, section in self._sections.items()}


def _plain(table: dict[str, Any]) -> dict[str, Any]:
    """A section's values with tuples as lists, as TOML and JSON write them."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in table.items()}


@dataclass
class Context:
    """What a stage may use of its run: the session, the config, where the run reads and writes."""

    spark: SparkSession
    cfg: Config
    input_path: str
    output: str
    store: FileStore
    committed: dict[str, dict[str, Any]]  # dumps committed before this run -> their commit markers
    folders: list[str] | None = None  # --incremental: the dump=<name> folders the run reads
    dumps: list[str] | None = None  # the run's dumps, known once ingest ran
    cached: list[DataFrame] = field(default_factory=list)  # persisted frames, released after the report
    # The running stage's folder for work it commits as it goes (the image stage's units):
    # OUTPUT/_checkpoints/<stage>/_work/<fingerprint>/, found again by a re-run with the same
    # fingerprint, deleted once the run commits.
    work: str | None = None

    def persist(self, frame: DataFrame) -> DataFrame:
        """``frame`` kept in memory (spilling to disk) until the run's report is written."""
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        self.cached.append(frame)
        return frame


@dataclass(frozen=True)
class Rule:
    """One rule as a stage applies it: a row of docs/rules.md (the default comes from the config)."""

    rule: str  # what is checked, naming its config key in backticks
    source: str  # who published it (COYO-700M, GRIT, ...) or "winnow" for ours
    keys: tuple[str, ...]  # section.key of every value it reads
    reason: str  # the reject code of a row it fails (schemas.reasons)
    code: str  # where it is decided: "udfs/image.py:inspect_image"
    test: str  # a test that fails if it broke: "tests/test_image_rules.py::test_low_resolution"


class Stage:
    """One step of the pipeline (see the module docstring); an instance serves one run."""

    name: ClassVar[str]
    sections: ClassVar[dict[str, type]] = {}
    rules: ClassVar[tuple[Rule, ...]] = ()

    def __init__(self, cfg: Config, ctx: Context | None = None) -> None:
        self.cfg = cfg
        self._ctx = ctx

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            raise RuntimeError(f"stage {self.name} has no run: construct it with a Context to run it")
        return self._ctx

    # --- when the config is loaded, before Spark starts ---

    def needs(self) -> dict[str, str]:
        """The stages that must run before this one under this config, each with why."""
        return {}

    def validate(self) -> None:
        """Checks across config sections (ConfigError naming the key); each section checks its own values."""

    # --- before the data ---

    def preflight(self) -> None:
        """Load and check what the stage needs before any data is read (models, lists, tables)."""

    def check_source(self, source: DataFrame) -> None:
        """Check the ingested pairs' columns (``source`` is not read) before any later stage runs."""

    # --- the stage ---

    @property
    def description(self) -> str:
        """What the Spark UI shows while the stage runs."""
        return self.name

    def spark_conf(self) -> dict[str, str]:
        """SQL settings while the stage runs (e.g. a smaller Arrow batch for rows with image bytes)."""
        return {}

    def fingerprint(self) -> Any:
        """What decides the stage's output beyond its config sections and winnow's code (JSON-able)."""
        return None

    def rows_read(self) -> int:
        """The first stage only (ingest): how many rows its source holds, counted apart from
        ``annotate``, so a reader that loses or repeats rows fails the conservation check."""
        raise NotImplementedError(f"stage {self.name} reads no source")

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        """Every row of ``frame`` (ingest: of the source) once, with ``reason`` and ``detail``."""
        raise NotImplementedError

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        """(accepted, rejected) of the annotated frame; ``frame`` is the stage's input."""
        raise NotImplementedError

    # --- what it commits and reports beyond accepted and rejected ---

    def part_paths(self) -> dict[str, str]:
        """Output parts the stage owns, name -> path: committed per dump on every run, written or not."""
        return {}

    def parts(self, accepted: DataFrame) -> dict[str, DataFrame]:
        """The frames of its parts this run writes (``accepted``: the run's final accepted pairs)."""
        return {}

    def report(self) -> dict[str, Any]:
        """What it adds to funnel.json (after ``parts``)."""
        return {}


def rejected_rows(annotated: DataFrame, stage: str, input_columns: list[str]) -> DataFrame:
    """Rows with a reason, as the REJECT schema followed by the stage's input columns."""
    rejected = annotated.filter(F.col("reason").isNotNull()).withColumn("stage", F.lit(stage))
    keep = list(dict.fromkeys(REJECT.fieldNames() + input_columns))
    return conform(rejected.select(*[col_ref(c) for c in keep]), REJECT)


def accepted_rows(annotated: DataFrame, schema: StructType, drop: list[str]) -> DataFrame:
    """Rows without a reason, ``schema`` first, without the stage's working columns."""
    accepted = annotated.filter(F.col("reason").isNull()).drop("reason", "detail", *drop)
    return conform(accepted, schema)


@dataclass
class StageCounts:
    """One line of the funnel."""

    stage: str
    rows_in: int
    accepted: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)
    # per dump: {"accepted": n, "rejected": n}
    dumps: dict[str, dict[str, int]] = field(default_factory=dict)
    # per dump: rejected per reason (the commit markers record it; the report draws it over time)
    dump_reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": dict(sorted(self.reasons.items())),
            "dumps": dict(sorted(self.dumps.items())),
        }


def count_stage(stage: str, rows_in: int, annotated: DataFrame) -> StageCounts:
    """Count accepted and rejected-per-reason rows of ``annotated`` and check conservation.

    ``rows_in`` is counted on the stage's input independently, so a join that
    duplicates or loses rows inside the stage is caught here.
    """
    per_reason: dict[str, int] = {}
    dumps: dict[str, dict[str, int]] = {}
    dump_reasons: dict[str, dict[str, int]] = {}
    accepted = 0
    for r in annotated.groupBy("dump", "reason").agg(F.count(F.lit(1)).alias("n")).collect():
        side = "accepted" if r["reason"] is None else "rejected"
        dump = dumps.setdefault(r["dump"], {"accepted": 0, "rejected": 0})
        dump[side] += r["n"]
        if r["reason"] is None:
            accepted += r["n"]
        else:
            per_reason[r["reason"]] = per_reason.get(r["reason"], 0) + r["n"]
            dump_reasons.setdefault(r["dump"], {})[r["reason"]] = r["n"]
    counts = StageCounts(stage, rows_in, accepted, sum(per_reason.values()), per_reason, dumps, dump_reasons)
    if counts.accepted + counts.rejected != rows_in:
        raise ConservationError(
            f"stage {stage}: {rows_in} rows in but {counts.accepted} accepted + "
            f"{counts.rejected} rejected = {counts.accepted + counts.rejected}"
        )
    return counts
