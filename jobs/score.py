"""Score stage: model scores over the kept images (CLIP similarity, NSFW, aesthetic, watermark), then filters.

Reads the image stage's accepted pairs, which carry the resized JPEG in
``image`` (``image.keep_bytes = true``; the config refuses the stage
without it). Writes the same rows with one float column per score
(``clip_similarity_<name>``, ``nsfw_score_<name>``, ``aesthetic_score_<name>``,
``watermark_score``, or a plug-in's columns; a source column of the same name
is carried as ``source_<name>``), or a reject:

- ``score-failed``: no or undecodable image bytes, a scorer raised on the
  row, or a NaN / infinite score (``detail`` says which);
- ``score-nsfw``: an ``nsfw_score_*`` column at or above ``score.max_nsfw_score`` (COYO: 0.5);
- ``score-low-similarity``: similarity below ``score.min_similarity`` (LAION: 0.28 for ViT-B/32);
- ``score-below-quantile``: similarity below the ``1 - score.top_fraction``
  quantile over all scored rows of the run (DataComp's "top p%"), from
  ``DataFrame.approxQuantile`` with ``score.quantile_relative_error``.

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

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from jobs.config import ScoreConfig
from jobs.stage import accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import IMAGE_BYTES, col_ref
from udfs import scorers
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


class ScoreError(RuntimeError):
    """The score stage cannot start: a model file is missing or broken, a scorer breaks its contract."""


@dataclass(frozen=True)
class Scoring:
    """What the driver resolved before reading data: the specs, their columns, the similarity column."""

    specs: tuple[ScorerSpec, ...]
    columns: tuple[str, ...]
    similarity_column: str | None
    batch_size: int
    gpu: bool


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
    similarity = cfg.similarity_column or None
    if similarity is None:
        found = [c for c in columns if c.startswith("clip_similarity_")]
        similarity = found[0] if len(found) == 1 else None
    filtering = cfg.min_similarity > -1.0 or cfg.top_fraction < 1.0
    if filtering and similarity not in columns:
        raise ScoreError(
            f"score.similarity_column: the similarity filters need one clip_similarity_* column; the scorers give "
            f"{', '.join(columns)}"
        )
    return Scoring(specs, tuple(columns), similarity, cfg.batch_size, cfg.gpu_amount > 0)


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
    """Every row once with its score columns and ``reason`` / ``detail`` (``score-failed`` or null)."""
    for c in scoring.columns:
        if c in pairs.columns:  # a source's own score column (COYO ships clip_similarity_vitb32)
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
    one pass over the (persisted) scores.
    """
    if cfg.top_fraction >= 1.0 or scoring.similarity_column is None:
        return None
    ok = scored.filter(F.col("reason").isNull()).select(scoring.similarity_column)
    got = ok.approxQuantile(scoring.similarity_column, [1.0 - cfg.top_fraction], cfg.quantile_relative_error)
    return got[0] if got else None  # [] when no row was scored


def with_score_verdicts(scored: DataFrame, scoring: Scoring, cfg: ScoreConfig, cutoff: float | None) -> DataFrame:
    """The filters as SQL on the score columns, after ``score-failed``; the first rule a row fails is its reason."""
    rules: list[tuple[str, Column, Column]] = []
    for c in (c for c in scoring.columns if c.startswith("nsfw_score_")):
        v = col_ref(c)
        rules.append((reasons.SCORE_NSFW, v >= F.lit(cfg.max_nsfw_score), F.format_string(f"{c}=%.4f", v)))
    sim = scoring.similarity_column
    if sim is not None and cfg.min_similarity > -1.0:
        v = col_ref(sim)
        detail = F.format_string(f"{sim}=%.4f < {cfg.min_similarity:g}", v)
        rules.append((reasons.SCORE_LOW_SIMILARITY, v < F.lit(cfg.min_similarity), detail))
    if sim is not None and cutoff is not None:
        v = col_ref(sim)
        detail = F.format_string(f"{sim}=%.4f < {cutoff:.4f} (top {cfg.top_fraction:g})", v)
        rules.append((reasons.SCORE_BELOW_QUANTILE, v < F.lit(cutoff), detail))
    # score-failed came from the mapper; a CASE chain keeps the first rule each other row fails.
    chain_reason = F.when(F.col("reason").isNotNull(), F.col("reason"))
    chain_detail = F.when(F.col("reason").isNotNull(), F.col("detail"))
    for code, hit, why in rules:
        chain_reason = chain_reason.when(hit, F.lit(code))
        chain_detail = chain_detail.when(hit, why)
    # Both from the scored frame's own reason: one withColumns, not two chained withColumn.
    return scored.withColumns({"reason": chain_reason, "detail": chain_detail})


def split_score(annotated: DataFrame, scoring: Scoring, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted, rejected) from the one annotated frame; accepted rows gain the score columns."""
    renamed = [f"source_{c}" if c in scoring.columns else c for c in input_columns]
    added = [c for c in annotated.columns if c not in renamed and c not in ("reason", "detail")]
    schema = StructType(
        [StructField(annotated.schema[c].name, annotated.schema[c].dataType, True) for c in renamed + added]
    )
    return accepted_rows(annotated, schema, []), rejected_rows(annotated, STAGE, renamed)
