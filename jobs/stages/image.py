"""Image stage: obtain each pair's image, apply the COYO image rules, compute its pHash.

Reads the previous stage's accepted pairs; writes the same rows with
``width``, ``height``, ``image_bytes_size``, ``image_format`` and
``image_phash`` added (and ``image``, the resized JPEG, with
``image.keep_bytes``), or a reject with one reason code per failure
(``schemas.reasons``: fetch failures such as ``timeout`` or ``ssrf-refused``,
then the image rules). Its config is ``[fetch]`` (``udfs.fetch.FetchConfig``)
and ``[image]`` (``udfs.image.ImageConfig``). Run it through the pipeline:

    spark-submit jobs/pipeline.py --input pairs.parquet --output out/ --stages text,image

Where the bytes come from: the ``url`` column, fetched over HTTP(S) by
``udfs.fetch`` (or read from local files when ``fetch.local_root`` /
``fetch.allow_file_urls`` allow it), or the ``image_input`` column that the
img2dataset input formats fill, in which case nothing is fetched.

NSFW score columns already in the input (every ``nsfw_score_*`` column) meet
COYO's NSFW rule (``score.max_nsfw_score``, reason ``score-nsfw``; the one rule
of ``udfs.score_filters``) in SQL first, so rows COYO drops are never fetched.
URL rows are then grouped into host-affine units (``jobs.units``): a host's
rows in one unit, a host with more than ``fetch.host_split_rows`` rows split
over several, at most ``fetch.max_tasks_per_host`` of them fetched at a time
across the cluster. Each unit is one task running one ``mapInArrow`` over a
thread pool (``fetch.threads``, at most ``fetch.max_per_host`` per host), and
is committed when it ends, so a killed run resumes inside the stage. Rows with
their bytes (img2dataset inputs) are spread over ``image.partitions`` tasks by
a hash of the id instead: nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from jobs.stage import Rule, Stage, accepted_rows, rejected_rows
from jobs.units import Unit, fetch_units, host_share, plan_units
from schemas import reasons
from schemas.tables import IMAGE_BYTES, IMAGE_INPUT, IMAGE_MEASURES, IMAGE_STORED, IMAGE_VERDICT, col_ref
from udfs.fetch import FetchConfig
from udfs.image import ImageConfig
from udfs.image_udfs import image_mapper
from udfs.score_filters import nsfw_rules, with_rule_reasons

STAGE = reasons.IMAGE


def with_image_verdicts(
    pairs: DataFrame,
    fetch: FetchConfig,
    image: ImageConfig,
    max_nsfw_score: float,
    work: str | None = None,
    progress_seconds: float = 60.0,
) -> DataFrame:
    """Every input row once, with ``reason`` (null = accepted), ``detail`` and the image columns.

    The input's ``nsfw_score_*`` columns meet COYO's NSFW rule (``score.max_nsfw_score``,
    ``udfs.score_filters``) first: the rows it rejects are never fetched. With ``work`` (the stage's
    work folder in a run) URLs are fetched in host-affine units (``jobs.units``: the per-host task
    bound, a commit per unit, resume); without it, and for rows that carry their bytes (nothing is
    fetched), the rows are spread over ``image.partitions`` tasks by a hash of the id, in one job.
    """
    from_bytes = IMAGE_INPUT in pairs.columns
    original = original_size(pairs) if from_bytes else None
    scored = with_rule_reasons(pairs, nsfw_rules(pairs.columns, max_nsfw_score))
    to_check = scored.filter(F.col("reason").isNull()).drop("reason", "detail")
    if original is not None:
        to_check = to_check.withColumns({ORIGINAL[0]: original[0], ORIGINAL[1]: original[1]})
    partitions = image.partitions or 3 * pairs.sparkSession.sparkContext.defaultParallelism
    passed = [f for f in to_check.schema.fields if f.name != IMAGE_INPUT]
    verdict = list(IMAGE_VERDICT.fields) + (IMAGE_STORED[:2] if original is not None else [])
    mapper = image_mapper(
        fetch, image, "url", IMAGE_INPUT if from_bytes else None, image.batch_size, ORIGINAL if original else None
    )
    if work is not None and not from_bytes:
        plan = plan_units(to_check, work, "url", fetch.host_split_rows, partitions)
        budget, need = host_share(fetch.threads, fetch.max_per_host, fetch.max_tasks_per_host)
        # a split host's unit fetches its one host with its share of the budget; a packed unit, max_per_host each
        one_host = image_mapper(replace(fetch, max_per_host=need), image, "url", None, image.batch_size, None)

        def mapper_for(unit: Unit) -> Callable:
            return one_host if unit.host else mapper

        out = StructType(passed + verdict)
        checked = fetch_units(pairs.sparkSession, plan, work, mapper_for, out, budget, need, progress_seconds)
    else:
        checked = to_check.repartition(partitions, "id").mapInArrow(mapper, StructType(passed + verdict))
    if original is not None:
        # null where the source recorded no original size (the stored image was judged as it is)
        resized = (F.col("stored_width") != F.col("width")) | (F.col("stored_height") != F.col("height"))
        kind = F.when(resized, F.lit("resized")).when(F.col("stored_width").isNotNull(), F.lit("same-size"))
        checked = checked.drop(*ORIGINAL).withColumn("image_stored", kind)
    flagged = scored.filter(F.col("reason").isNotNull())
    if from_bytes:
        flagged = flagged.drop(IMAGE_INPUT)
    for f in IMAGE_VERDICT.fields + (IMAGE_STORED if original is not None else []):
        if f.name not in ("reason", "detail"):
            flagged = flagged.withColumn(f.name, F.lit(None).cast(f.dataType))
    annotated = checked.unionByName(flagged)
    return annotated if image.keep_bytes else annotated.drop(IMAGE_BYTES.name)


# The original image's size as the mapper reads it (working columns, dropped after).
ORIGINAL = ("_original_width", "_original_height")


def original_size(pairs: DataFrame) -> tuple[Column, Column] | None:
    """img2dataset's record of the original image's size: its parquet's ``original_width`` /
    ``original_height`` columns, or the same fields of each webdataset sample's ``.json``."""
    names = ("original_width", "original_height")
    if set(names) <= set(pairs.columns):
        return col_ref(names[0]).cast("int"), col_ref(names[1]).cast("int")
    if "json" in pairs.columns:
        return tuple(F.get_json_object("json", f"$.{c}").cast("int") for c in names)  # type: ignore[return-value]
    return None


def split_image(annotated: DataFrame, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted, rejected) from the one annotated frame; rejects keep the stage's input columns."""
    columns = [c for c in input_columns if c != IMAGE_INPUT]
    added = IMAGE_MEASURES + ([IMAGE_BYTES] if IMAGE_BYTES.name in annotated.columns else [])
    added += [f for f in IMAGE_STORED if f.name in annotated.columns]
    schema_fields = [annotated.schema[c] for c in columns] + added
    accepted = accepted_rows(annotated, StructType([StructField(f.name, f.dataType, True) for f in schema_fields]), [])
    return accepted, rejected_rows(annotated, STAGE, columns)


class ImageStage(Stage):
    """Each pair's image fetched (or taken from the source row), the COYO image rules, its pHash."""

    name = STAGE
    sections = {"fetch": FetchConfig, "image": ImageConfig}
    rules = (
        Rule(
            "http(s) only; every address a hop connects to must be public, IPv6 forms of IPv4 addresses "
            "(NAT64, 6to4, Teredo, mapped) included, unless in `fetch.allow_networks`",
            "winnow",
            ("fetch.allow_networks",),
            reasons.SSRF_REFUSED,
            "udfs/fetch.py:AddressGuard.permits",
            "tests/test_fetch.py::test_literal_private_addresses_are_refused_without_traffic",
        ),
        Rule(
            "one deadline per attempt, `fetch.timeout`: DNS, connect, TLS, status line, headers, redirects, body",
            "winnow",
            ("fetch.timeout",),
            reasons.TIMEOUT,
            "udfs/fetch.py:Fetcher._attempt",
            "tests/test_fetch.py::test_trickled_status_line_and_headers_end_at_the_deadline",
        ),
        Rule(
            "at most `fetch.max_bytes` bytes, declared or streamed",
            "winnow",
            ("fetch.max_bytes",),
            reasons.TOO_LARGE,
            "udfs/fetch.py:Fetcher._body",
            "tests/test_fetch.py::test_endless_body_hits_the_byte_cap",
        ),
        Rule(
            "at most `fetch.max_redirects` redirects, no loop",
            "winnow",
            ("fetch.max_redirects",),
            reasons.TOO_MANY_REDIRECTS,
            "udfs/fetch.py:Fetcher._attempt",
            "tests/test_fetch.py::test_redirect_cap_is_exact",
        ),
        Rule(
            "429 / 5xx retried `fetch.retries` times, honouring Retry-After up to `fetch.max_retry_after`",
            "winnow",
            ("fetch.retries", "fetch.max_retry_after"),
            reasons.HTTP_5XX,
            "udfs/fetch.py:Fetcher._fetch_http",
            "tests/test_fetch.py::test_500_always_is_http_5xx_after_every_retry",
        ),
        Rule(
            "X-Robots-Tag opt-outs (`fetch.robots_optout_tokens`) are honoured",
            "winnow",
            ("fetch.robots_optout_tokens",),
            reasons.ROBOTS_OPTOUT,
            "udfs/fetch.py:robots_optout",
            "tests/test_fetch.py::test_robots_optout",
        ),
        Rule(
            "at least `image.min_bytes` bytes (COYO: 5 KB, read as KiB)",
            "COYO-700M",
            ("image.min_bytes",),
            reasons.FILE_TOO_SMALL,
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_file_size_boundary_5119_rejected_5120_accepted",
        ),
        Rule(
            "width x height <= `image.max_pixels`, read from the header (decompression bombs)",
            "winnow",
            ("image.max_pixels",),
            reasons.TOO_MANY_PIXELS,
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_bomb_is_refused_without_decoding",
        ),
        Rule(
            "min(width, height) >= `image.min_side`",
            "COYO-700M",
            ("image.min_side",),
            reasons.LOW_RESOLUTION,
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_min_side_199_is_low_resolution",
        ),
        Rule(
            "long side / short side <= `image.max_aspect_ratio`",
            "COYO-700M",
            ("image.max_aspect_ratio",),
            reasons.ASPECT_RATIO,
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_aspect_ratio_just_above_3_is_rejected",
        ),
        Rule(
            "Pillow can decode it",
            "COYO-700M",
            (),
            reasons.UNDECODABLE,
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_kind_is_rejected_with_its_reason",
        ),
        Rule(
            "image_phash = str(imagehash.phash(image)), 16 hex digits",
            "COYO-700M",
            ("image.phash",),
            "",
            "udfs/image.py:inspect_image",
            "tests/test_image_rules.py::test_phash_is_imagehash_phash_bit_for_bit_on_300_varied_images",
        ),
    )
    description = "image: fetch, COYO image rules, pHash"

    def spark_conf(self) -> dict[str, str]:
        # Small Arrow batches: image rows may carry bytes (img2dataset inputs, kept images).
        return {"spark.sql.execution.arrow.maxRecordsPerBatch": str(self.cfg.image.batch_size)}

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        cfg = self.cfg
        return with_image_verdicts(
            frame, cfg.fetch, cfg.image, cfg.score.max_nsfw_score, self.ctx.work, cfg.run.progress_seconds
        )

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        return split_image(annotated, frame.columns)
