"""Score stage: rules on image-text scores (CLIP similarity, NSFW, aesthetic, watermark), from models or the input.

The scores come from models (``udfs.scorers``) over the image stage's kept
images (``image.keep_bytes = true``; the config refuses models without it),
or from the input's own columns (COYO ships ``clip_similarity_vitb32``,
``nsfw_score_*``, ``aesthetic_score_laion_v2``, ``watermark_score``; LAION
``similarity``). Without a model the stage needs no image stage and fetches
nothing: ``--stages text,score --set score.similarity_column=clip_similarity_vitb32
--set score.min_similarity=0.28``. A model writes one float column per score
(``clip_similarity_<name>``, ``nsfw_score_<name>``, ``aesthetic_score_<name>``,
``watermark_score``, or a plug-in's columns; an input column of the same name
is carried as ``source_<name>``). The rules (``udfs.score_filters``), in order,
each row getting the first it fails:

- ``score-failed``: no or undecodable image bytes, a scorer raised on the
  row, or a NaN / infinite score (``detail`` says which);
- ``score-nsfw``: an ``nsfw_score_*`` column at or above ``score.max_nsfw_score`` (COYO's rule;
  the image stage applies the same rule to the input's columns before fetching);
- ``score-watermark``: the watermark column at or above ``score.max_watermark`` (off by default);
- ``score-low-aesthetic``: the aesthetic column below ``score.min_aesthetic`` (off by default);
- ``score-low-similarity``: similarity below ``score.min_similarity`` (LAION-5B's rule; off by default);
- ``score-below-quantile``: similarity below the ``1 - score.top_fraction``
  quantile over all scored rows of the run (DataComp's "top p%"), from
  ``DataFrame.approxQuantile`` with ``score.quantile_relative_error``; the
  cut-off is computed once per run, and reported in funnel.json.

A null score is no score (no rule rejects it); NaN fails every rule.

``ScoreConfig`` is the stage's ``[score]`` config section.

    spark-submit jobs/pipeline.py --input pairs.parquet --output out/ --stages text,image,score \\
        --set image.keep_bytes=true --set score.nsfw_model=hdfs:///models/nsfw.onnx

The scorers (``udfs.scorers``) are named in ``[score]``, shipped (URIs, with
``SparkContext.addFile``), built and probed once on the driver before any data
is read (``prepare_scorers``), then built once per Python worker and run in one
``mapInArrow`` over batches of ``score.batch_size`` rows. With
``score.gpu_amount > 0`` that ``mapInArrow`` carries a Spark resource profile
(stage-level scheduling): its tasks ask for GPUs, and each binds the GPU its
task was given (``TaskContext.resources()["gpu"]``) while the other stages stay
as they are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from jobs.errors import WinnowError, require
from jobs.stage import Rule, Stage, accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import IMAGE_BYTES, col_ref
from udfs import scorers
from udfs.score_filters import ScoreRule, nsfw_columns, nsfw_rules, with_rule_reasons
from udfs.scorers import (
    ModelFile,
    OnnxClassifierSpec,
    OnnxClipSpec,
    OpenClipSpec,
    PluginSpec,
    ScorerError,
    ScorerSpec,
    is_uri,
)

log = logging.getLogger("winnow")

STAGE = reasons.SCORE
IMAGE_COL = IMAGE_BYTES.name


class ScoreError(WinnowError):
    """The score stage cannot start: a model file is missing or broken, a scorer breaks its contract."""


@dataclass(frozen=True)
class ScoreConfig:
    """``[score]``: model scores over the kept images (needs the image stage with image.keep_bytes =
    true; udfs/scorers.py has the contract), then filters on them. Model paths: a plain path is read in
    place on every node, a URI (hdfs://, s3a://, file://) is shipped to the executors with addFile."""

    clip_name: str = "vitb32"
    """CLIP image-text similarity is written as clip_similarity_<clip_name> (COYO's naming)."""
    clip_image_model: str = ""
    """The CLIP image encoder, exported to ONNX."""
    clip_text_model: str = ""
    """The CLIP text encoder, exported to ONNX."""
    clip_tokenizer: str = ""
    """A HuggingFace tokenizer.json, or a tokenizer plug-in "package.module:callable"."""
    clip_normalize: str = "clip"
    """The image encoder's input normalisation: clip | imagenet | none."""
    clip_context_length: int = 77
    """Token ids per caption when the text model leaves the length open (CLIP's)."""
    open_clip_model: str = ""
    """Or open_clip (PyTorch, not a dependency): an architecture name ..."""
    open_clip_checkpoint: str = ""
    """... and a local checkpoint file (nothing is downloaded)."""
    nsfw_name: str = "onnx"
    """An ONNX image classifier's score is written as nsfw_score_<nsfw_name>."""
    nsfw_model: str = ""
    """The NSFW classifier (ONNX)."""
    nsfw_normalize: str = "clip"
    """Its input normalisation: clip | imagenet | none."""
    aesthetic_name: str = "onnx"
    """The aesthetic score is written as aesthetic_score_<aesthetic_name>."""
    aesthetic_model: str = ""
    """The aesthetic predictor (ONNX)."""
    aesthetic_normalize: str = "clip"
    """Its input normalisation: clip | imagenet | none."""
    watermark_model: str = ""
    """The watermark classifier (ONNX), written as watermark_score."""
    watermark_normalize: str = "imagenet"
    """Its input normalisation: clip | imagenet | none."""
    plugin: str = ""
    """A scorer plug-in "package.module:factory", called with plugin_options."""
    plugin_options: tuple[str, ...] = ()
    """"key=value" strings passed to the plug-in's factory as keyword arguments."""
    provider: str = "cpu"
    """ONNX Runtime provider: cpu, or cuda (onnxruntime-gpu; the task's GPU from its resources)."""
    threads: int = 1
    """ONNX Runtime intra-op threads per task (one task per core already)."""
    batch_size: int = 32
    """Rows per Arrow batch into the scorers."""
    gpu_amount: float = 0.0
    """GPUs per score task (Spark stage-level scheduling); 0 = no resource profile."""
    gpu_executor_amount: int = 0
    """With gpu_amount > 0: ask for executors with this many GPUs each (needs dynamic allocation);
    0 = run on the job's executors."""
    gpu_discovery_script: str = ""
    """The GPU executors' discovery script (Spark's getGpusResources.sh)."""
    max_nsfw_score: float = 0.5
    """COYO drops a row whose NSFW score is at or above this: every nsfw_score_* column, the input's
    (checked by the image stage before fetching) and the models'."""
    min_similarity: float = -1.0
    """Drop rows whose similarity is below this (LAION-5B English: 0.28 with ViT-B/32); -1 = off."""
    top_fraction: float = 1.0
    """Keep the top fraction of the scored rows by similarity (DataComp's CLIP score filter); 1 = off."""
    quantile_relative_error: float = 0.001
    """approxQuantile's relative error for the top_fraction cut-off."""
    similarity_column: str = ""
    """The similarity column the filters read: a model's or the input's (COYO's clip_similarity_vitb32,
    LAION's similarity); "" = the CLIP scorer's, else the input's only clip_similarity_* column."""
    min_aesthetic: float = 0.0
    """Drop rows whose aesthetic score is below this (LAION-Aesthetics: 4.5, 5, 6 on its 1-10 scale); 0 = off."""
    aesthetic_column: str = ""
    """The aesthetic column min_aesthetic reads; "" = the aesthetic model's, else the input's only
    aesthetic_score_* column (COYO: aesthetic_score_laion_v2)."""
    max_watermark: float = 1.0
    """Drop rows whose watermark probability is at or above this (LAION-5B: 0.8); 1 = off."""
    watermark_column: str = "watermark_score"
    """The watermark column max_watermark reads (COYO's and the watermark model's name)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        for key in ("clip_name", "nsfw_name", "aesthetic_name"):
            if re.fullmatch(r"[a-z0-9_]+", getattr(self, key)) is None:
                yield key, f"{getattr(self, key)!r} is not a column-name suffix (lower-case letters, digits, _)"
        for key in ("clip_normalize", "nsfw_normalize", "aesthetic_normalize", "watermark_normalize"):
            if getattr(self, key) not in scorers.NORMALIZATIONS:
                yield key, f"{getattr(self, key)!r} is not one of {', '.join(scorers.NORMALIZATIONS)}"
        if self.provider not in scorers.PROVIDERS:
            yield "provider", f"{self.provider!r} is not one of {', '.join(scorers.PROVIDERS)}"
        clip = (self.clip_image_model, self.clip_text_model, self.clip_tokenizer)
        if any(clip) and not all(clip):
            yield (
                "clip_image_model",
                (
                    "CLIP similarity needs all three of score.clip_image_model, score.clip_text_model and "
                    "score.clip_tokenizer"
                ),
            )
        if self.clip_image_model and self.open_clip_model:
            yield (
                "open_clip_model",
                ("set either the ONNX CLIP encoders (score.clip_image_model ...) or score.open_clip_model, not both"),
            )
        if bool(self.open_clip_model) != bool(self.open_clip_checkpoint):
            yield (
                "open_clip_checkpoint",
                (
                    "score.open_clip_model and score.open_clip_checkpoint go together (a local checkpoint: "
                    "nothing is downloaded)"
                ),
            )
        if self.plugin and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.plugin) is None:
            yield "plugin", f"{self.plugin!r} must look like 'package.module:callable'"
        for item in self.plugin_options:
            if re.fullmatch(r"[A-Za-z_]\w*=.*", item) is None:
                yield "plugin_options", f"{item!r} is not key=value"
        if self.clip_context_length < 1:
            yield "clip_context_length", "must be at least 1"
        if self.threads < 1:
            yield "threads", "must be at least 1"
        if self.batch_size < 1:
            yield "batch_size", "must be at least 1"
        if not (0.0 <= self.gpu_amount and math.isfinite(self.gpu_amount)):
            yield "gpu_amount", "must be 0 (off) or above"
        if self.gpu_executor_amount < 0:
            yield "gpu_executor_amount", "must not be negative"
        if self.gpu_executor_amount and self.gpu_amount <= 0:
            yield "gpu_executor_amount", "needs score.gpu_amount > 0 (GPUs per score task)"
        if self.gpu_executor_amount and not self.gpu_discovery_script:
            yield (
                "gpu_discovery_script",
                ("GPU executors need a discovery script (Spark's examples/src/main/scripts/getGpusResources.sh)"),
            )
        if not 0.0 <= self.max_nsfw_score <= 1.0:
            yield "max_nsfw_score", "must be within [0, 1]"
        if not -1.0 <= self.min_similarity <= 1.0:
            yield "min_similarity", "must be within [-1, 1] (-1 = off)"
        if not 0.0 < self.top_fraction <= 1.0:
            yield "top_fraction", "must be within (0, 1] (1 = off)"
        if not 0.0 <= self.quantile_relative_error <= 1.0:
            yield "quantile_relative_error", "must be within [0, 1]"
        if not 0.0 <= self.min_aesthetic <= 10.0:
            yield "min_aesthetic", "must be within [0, 10] (0 = off; aesthetic predictors score 1 to 10)"
        if not 0.0 <= self.max_watermark <= 1.0:
            yield "max_watermark", "must be within [0, 1] (1 = off)"
        for key in ("similarity_column", "aesthetic_column", "watermark_column"):
            value = getattr(self, key)
            if value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is None:
                yield key, f"{value!r} is not a column name (letters, digits, _)"
        if not self.watermark_column:
            yield "watermark_column", "must name a column"

    @property
    def has_models(self) -> bool:
        """Whether a model or plug-in scores the images (else the rules read the input's columns only)."""
        models = (self.clip_image_model, self.open_clip_model, self.nsfw_model, self.aesthetic_model)
        return any((*models, self.watermark_model, self.plugin))


@dataclass(frozen=True)
class Scoring:
    """What the driver resolved before reading data: the specs, their columns, and the columns the
    rules read (set from the pairs' columns by ``with_rule_columns``)."""

    specs: tuple[ScorerSpec, ...]
    columns: tuple[str, ...]
    batch_size: int
    gpu: bool
    similarity_column: str | None = None
    aesthetic_column: str | None = None
    watermark_column: str | None = None
    nsfw_columns: tuple[str, ...] = ()


def scorer_specs(cfg: ScoreConfig) -> tuple[ScorerSpec, ...]:
    """The scorers ``[score]`` names, in a fixed order: CLIP, NSFW, aesthetic, watermark, plug-in."""
    specs: list[ScorerSpec] = []
    common = {"provider": cfg.provider, "threads": cfg.threads}
    if cfg.clip_image_model:
        specs.append(
            OnnxClipSpec(
                cfg.clip_name,
                ModelFile("score.clip_image_model", cfg.clip_image_model),
                ModelFile("score.clip_text_model", cfg.clip_text_model),
                ModelFile("score.clip_tokenizer", cfg.clip_tokenizer),
                cfg.clip_normalize,
                cfg.clip_context_length,
                **common,
            )
        )
    if cfg.open_clip_model:
        specs.append(
            OpenClipSpec(
                cfg.clip_name, cfg.open_clip_model, ModelFile("score.open_clip_checkpoint", cfg.open_clip_checkpoint)
            )
        )
    for key, column, normalize in (
        ("nsfw_model", f"nsfw_score_{cfg.nsfw_name}", cfg.nsfw_normalize),
        ("aesthetic_model", f"aesthetic_score_{cfg.aesthetic_name}", cfg.aesthetic_normalize),
        ("watermark_model", "watermark_score", cfg.watermark_normalize),
    ):
        if getattr(cfg, key):
            specs.append(OnnxClassifierSpec(column, ModelFile(f"score.{key}", getattr(cfg, key)), normalize, **common))
    if cfg.plugin:
        options = tuple(tuple(item.split("=", 1)) for item in cfg.plugin_options)
        specs.append(PluginSpec(cfg.plugin, options))  # type: ignore[arg-type]
    return tuple(specs)


def ship_model_files(spark: SparkSession, specs: tuple[ScorerSpec, ...]) -> None:
    """addFile every URI model file (executors then read it with SparkFiles.get); check the plain paths here."""
    seen: dict[str, str] = {}
    for spec in specs:
        for f in spec.files():
            if not is_uri(f.path):
                f.checked()
                continue
            if seen.get(f.name, f.path) != f.path:
                raise ScoreError(
                    f"{f.key}: {f.path} and {seen[f.name]} have the same file name {f.name!r}: "
                    "addFile ships files by name, rename one"
                )
            seen[f.name] = f.path
            try:
                spark.sparkContext.addFile(f.path)
            except Exception as exc:  # Py4JJavaError: no such file, no file system for the scheme
                first = str(exc).strip().splitlines()[0][:300]
                raise ScoreError(f"{f.key}: cannot ship {f.path} to the executors ({first})") from None


def prepare_scorers(spark: SparkSession, cfg: ScoreConfig) -> Scoring:
    """Ship, build and probe every configured scorer on the driver; a ScoreError before any data is read."""
    if cfg.gpu_amount > 0 and spark.sparkContext.master.startswith("local"):
        raise ScoreError(
            "score.gpu_amount: Spark runs resource profiles (stage-level scheduling) on standalone, YARN and "
            "Kubernetes, not in local mode; on one machine use score.gpu_amount = 0 with score.provider = cuda"
        )
    specs = scorer_specs(cfg)
    columns: list[str] = []
    try:
        ship_model_files(spark, specs)
        for spec in specs:
            got = scorers.probe(spec)
            log.info("score: %s gives %s", spec.label, ", ".join(got))
            columns += got
    except ScorerError as exc:
        raise ScoreError(str(exc)) from None
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ScoreError(f"score: more than one scorer writes {', '.join(duplicated)}")
    return Scoring(specs, tuple(columns), cfg.batch_size, cfg.gpu_amount > 0)


def _one_column(named: str, prefix: str, model_columns: list[str], input_columns: list[str]) -> str | None:
    """``named`` if set, else the models' only ``prefix*`` column, else the input's only one."""
    if named:
        return named
    for columns in (model_columns, input_columns):
        found = [c for c in columns if c.startswith(prefix)]
        if found:
            return found[0] if len(found) == 1 else None
    return None


def with_rule_columns(scoring: Scoring, cfg: ScoreConfig, input_columns: list[str]) -> Scoring:
    """``scoring`` with the columns each rule reads, from the models' and the pairs' columns.

    A rule that is on and whose column is neither scored nor in the input is a
    ScoreError (before any data is read, from ``check_source``), as is a stage
    with no model and no input column to filter.
    """
    models = list(scoring.columns)
    inputs = [c for c in input_columns if c not in models]
    have = set(models) | set(inputs)
    similarity = _one_column(cfg.similarity_column, "clip_similarity_", models, inputs)
    aesthetic = _one_column(cfg.aesthetic_column, "aesthetic_score_", models, inputs)
    wanted = [
        ("score.similarity_column", similarity, cfg.min_similarity > -1.0 or cfg.top_fraction < 1.0),
        ("score.aesthetic_column", aesthetic, cfg.min_aesthetic > 0.0),
        ("score.watermark_column", cfg.watermark_column, cfg.max_watermark < 1.0),
    ]
    for key, column, on in wanted:
        if on and column not in have:
            what = f"{column!r} is neither scored nor in the input" if column else "no column is named or found"
            raise ScoreError(f"{key}: {what}; the pairs have {', '.join(sorted(have)) or 'no columns'}")
    nsfw = tuple(nsfw_columns([*models, *inputs]))
    found = bool(nsfw) or any(on for _, _, on in wanted)
    if not scoring.specs and not found:
        raise ScoreError(
            "score: no scorer is configured (score.clip_image_model, score.open_clip_model, score.nsfw_model, "
            "score.aesthetic_model, score.watermark_model, score.plugin) and no rule has an input column to read "
            "(nsfw_score_*, or score.min_similarity / top_fraction / min_aesthetic / max_watermark on a column)"
        )
    return dataclasses.replace(
        scoring,
        similarity_column=similarity if similarity in have else None,
        aesthetic_column=aesthetic if aesthetic in have else None,
        watermark_column=cfg.watermark_column if cfg.watermark_column in have else None,
        nsfw_columns=nsfw,
    )


def gpu_profile(cfg: ScoreConfig):  # -> pyspark.resource.ResourceProfile | None
    """The score ``mapInArrow``'s resource profile: GPUs per task (and GPU executors), or None on CPU."""
    if cfg.gpu_amount <= 0:
        return None
    from pyspark.resource import ExecutorResourceRequests, ResourceProfileBuilder, TaskResourceRequests

    builder = ResourceProfileBuilder().require(TaskResourceRequests().cpus(1).resource("gpu", cfg.gpu_amount))
    if cfg.gpu_executor_amount:
        executor = ExecutorResourceRequests().resource("gpu", cfg.gpu_executor_amount, cfg.gpu_discovery_script)
        builder = builder.require(executor)
    return builder.build


# --- on the executors -----------------------------------------------------------------------------------------------


def task_gpu() -> int | None:
    """The first GPU address Spark gave this task, or None (no GPU resource)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpu = ctx.resources().get("gpu") if ctx is not None else None
    return int(gpu.addresses[0]) if gpu is not None and gpu.addresses else None


def score_mapper(scoring: Scoring) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A function for ``DataFrame.mapInArrow``: every row in, the same row plus its scores, reason and detail out."""
    columns = list(scoring.columns)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        device = task_gpu() if scoring.gpu else None
        # Module-level accessor: the models live in the worker and are built once per worker.
        loaded = [(spec.label, scorers.get_scorer(spec, device)) for spec in scoring.specs]
        for batch in batches:
            for start in range(0, batch.num_rows, scoring.batch_size):
                part = batch.slice(start, scoring.batch_size)
                if part.num_rows == 0:
                    continue
                got = scorers.score_batch(
                    loaded, part.column(IMAGE_COL).to_pylist(), part.column("caption").to_pylist()
                )
                arrays = [pa.array(got.values[c], type=pa.float64(), from_pandas=True) for c in columns]
                failed = [None if why is None else reasons.SCORE_FAILED for why in got.failures]
                arrays += [pa.array(failed, type=pa.string()), pa.array(got.failures, type=pa.string())]
                yield pa.RecordBatch.from_arrays(
                    part.columns + arrays, names=part.schema.names + columns + ["reason", "detail"]
                )

    return run


# --- Spark ----------------------------------------------------------------------------------------------------------


def with_scores(pairs: DataFrame, scoring: Scoring, cfg: ScoreConfig) -> DataFrame:
    """Every row once with its score columns and ``reason`` / ``detail`` (``score-failed`` or null).

    Without a model, the rows as they are, with no reason yet: the rules read the input's columns.
    """
    if not scoring.specs:
        return pairs.withColumns({"reason": F.lit(None).cast(StringType()), "detail": F.lit(None).cast(StringType())})
    for c in scoring.columns:
        if c in pairs.columns:  # a source's own score column, when a model writes one of the same name
            pairs = pairs.withColumnRenamed(c, f"source_{c}")
    schema = StructType(
        pairs.schema.fields
        + [StructField(c, DoubleType(), True) for c in scoring.columns]
        + [StructField("reason", StringType(), True), StructField("detail", StringType(), True)]
    )
    profile = gpu_profile(cfg)
    mapper = score_mapper(scoring)
    return pairs.mapInArrow(mapper, schema, profile=profile) if profile else pairs.mapInArrow(mapper, schema)


def similarity_cutoff(scored: DataFrame, scoring: Scoring, cfg: ScoreConfig) -> float | None:
    """The similarity a row must reach to be in the top ``score.top_fraction`` (None when off or nothing scored).

    ``approxQuantile`` over the rows that were scored (nulls and NaN are ignored),
    one pass over the (persisted) scores. ``scored`` may be the scores or the stage's
    verdicts: the rows taken are those that are not score-failed, the same in both.
    """
    column = scoring.similarity_column
    if cfg.top_fraction >= 1.0 or column is None:
        return None
    was_scored = F.coalesce(F.col("reason") != F.lit(reasons.SCORE_FAILED), F.lit(True))
    ok = scored.filter(was_scored).select(col_ref(column).cast(DoubleType()).alias("similarity"))
    got = ok.approxQuantile("similarity", [1.0 - cfg.top_fraction], cfg.quantile_relative_error)
    return got[0] if got else None  # [] when no row was scored


def score_rules(scoring: Scoring, cfg: ScoreConfig, cutoff: float | None) -> list[ScoreRule]:
    """The rules in the order they are applied: NSFW, watermark, aesthetic, similarity, top fraction."""
    rules = nsfw_rules(scoring.nsfw_columns, cfg.max_nsfw_score)
    if scoring.watermark_column is not None and cfg.max_watermark < 1.0:
        rules.append(ScoreRule(reasons.SCORE_WATERMARK, scoring.watermark_column, cfg.max_watermark, ceiling=True))
    if scoring.aesthetic_column is not None and cfg.min_aesthetic > 0.0:
        rules.append(ScoreRule(reasons.SCORE_LOW_AESTHETIC, scoring.aesthetic_column, cfg.min_aesthetic, ceiling=False))
    sim = scoring.similarity_column
    if sim is not None and cfg.min_similarity > -1.0:
        rules.append(ScoreRule(reasons.SCORE_LOW_SIMILARITY, sim, cfg.min_similarity, ceiling=False))
    if sim is not None and cutoff is not None:
        note = f"(top {cfg.top_fraction:g})"
        rule = ScoreRule(reasons.SCORE_BELOW_QUANTILE, sim, cutoff, ceiling=False, note=note, shown=f"{cutoff:.4f}")
        rules.append(rule)
    return rules


def with_score_verdicts(scored: DataFrame, scoring: Scoring, cfg: ScoreConfig, cutoff: float | None) -> DataFrame:
    """The rules as SQL on the score columns, after ``score-failed``; the first rule a row fails is its reason."""
    return with_rule_reasons(scored, score_rules(scoring, cfg, cutoff))


def split_score(annotated: DataFrame, scoring: Scoring, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted, rejected) from the one annotated frame; accepted rows gain the score columns."""
    renamed = [f"source_{c}" if c in scoring.columns else c for c in input_columns]
    added = [c for c in annotated.columns if c not in renamed and c not in ("reason", "detail")]
    schema = StructType(
        [StructField(annotated.schema[c].name, annotated.schema[c].dataType, True) for c in renamed + added]
    )
    return accepted_rows(annotated, schema, []), rejected_rows(annotated, STAGE, renamed)


class ScoreStage(Stage):
    """Model scores over the kept images, then the filters on them."""

    name = STAGE
    sections = {"score": ScoreConfig}
    rules = (
        Rule(
            "a row whose image cannot be scored (or scores NaN) is rejected",
            "winnow",
            (),
            reasons.SCORE_FAILED,
            "udfs/scorers.py:score_batch",
            "tests/test_score_stage.py::test_unscorable_rows_are_score_failed",
        ),
        Rule(
            "every nsfw_score_* column below `score.max_nsfw_score`: the input's (by the image stage, before "
            "fetching) and the models'",
            "COYO-700M",
            ("score.max_nsfw_score",),
            reasons.SCORE_NSFW,
            "udfs/score_filters.py:nsfw_rules",
            "tests/test_score_stage.py::test_nsfw_filter_is_coyos",
        ),
        Rule(
            "watermark probability below `score.max_watermark` (1 = off), the input's or the model's",
            "LAION-5B",
            ("score.max_watermark", "score.watermark_column"),
            reasons.SCORE_WATERMARK,
            "jobs/stages/score.py:score_rules",
            "tests/test_score_columns.py::test_rules_on_input_columns_at_their_boundaries",
        ),
        Rule(
            "aesthetic score at least `score.min_aesthetic` (0 = off), the input's or the model's",
            "LAION-Aesthetics",
            ("score.min_aesthetic", "score.aesthetic_column"),
            reasons.SCORE_LOW_AESTHETIC,
            "jobs/stages/score.py:score_rules",
            "tests/test_score_columns.py::test_rules_on_input_columns_at_their_boundaries",
        ),
        Rule(
            "CLIP similarity at least `score.min_similarity` (-1 = off), the input's or the model's",
            "LAION-5B",
            ("score.min_similarity", "score.similarity_column"),
            reasons.SCORE_LOW_SIMILARITY,
            "jobs/stages/score.py:score_rules",
            "tests/test_score_stage.py::test_min_similarity",
        ),
        Rule(
            "in the top `score.top_fraction` of the scored rows by CLIP similarity (1 = off)",
            "DataComp",
            ("score.top_fraction", "score.quantile_relative_error", "score.similarity_column"),
            reasons.SCORE_BELOW_QUANTILE,
            "jobs/stages/score.py:similarity_cutoff",
            "tests/test_score_stage.py::test_top_fraction",
        ),
    )

    def needs(self) -> dict[str, str]:
        if not self.cfg.score.has_models:  # the rules read the input's own score columns
            return {}
        return {"image": "its models score the images the image stage keeps (image.keep_bytes = true)"}

    def validate(self) -> None:
        require(
            not self.cfg.score.has_models or ("image" in self.cfg.run.stages and self.cfg.image.keep_bytes),
            "image.keep_bytes",
            "the score stage's models read the kept images: run the image stage with image.keep_bytes = true "
            "(--stages text,image,score --set image.keep_bytes=true)",
        )

    def preflight(self) -> None:
        # Model files are shipped, loaded and probed here: a missing, corrupt or wrongly shaped model
        # stops the job before any data is read.
        self.scoring = prepare_scorers(self.ctx.spark, self.cfg.score)
        self.cutoff: float | None = None
        self._cutoff_known = False

    def check_source(self, source: DataFrame) -> None:
        # A rule whose column is neither scored nor in the input stops the job before any stage runs.
        with_rule_columns(self.scoring, self.cfg.score, source.columns)

    @property
    def description(self) -> str:
        return "score: " + (", ".join(self.scoring.columns) or "rules on the input's score columns")

    def spark_conf(self) -> dict[str, str]:
        # Arrow batches of score.batch_size rows: each carries images, and the scorers take them as they come.
        return {"spark.sql.execution.arrow.maxRecordsPerBatch": str(self.cfg.score.batch_size)}

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        self.scoring = with_rule_columns(self.scoring, self.cfg.score, frame.columns)
        scored = self.ctx.persist(with_scores(frame, self.scoring, self.cfg.score))
        self.cutoff, self._cutoff_known = similarity_cutoff(scored, self.scoring, self.cfg.score), True
        return with_score_verdicts(scored, self.scoring, self.cfg.score, self.cutoff)

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        if not self._cutoff_known:  # resumed from its checkpoint: the same rows give the same cut-off
            self.scoring = with_rule_columns(self.scoring, self.cfg.score, frame.columns)
            self.cutoff, self._cutoff_known = similarity_cutoff(annotated, self.scoring, self.cfg.score), True
        return split_score(annotated, self.scoring, frame.columns)

    def report(self) -> dict[str, Any]:
        read = {
            "similarity": self.scoring.similarity_column,
            "aesthetic": self.scoring.aesthetic_column,
            "watermark": self.scoring.watermark_column,
            "nsfw": list(self.scoring.nsfw_columns),
        }
        return {"score": {"columns": list(self.scoring.columns), "rules_read": read, "similarity_cutoff": self.cutoff}}
