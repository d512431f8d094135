"""Dedup stage: eval-set blocklists, (pHash, caption) pairs, history of earlier dumps, near-duplicates.

Reads the previous stage's accepted pairs (they need a 16-hex-digit pHash in
``dedup.phash_col``) and annotates every row with ``reason`` (null = kept) and
``detail``. The checks, in order, each on the rows the previous one kept:

1. ``phash-invalid``: no pHash, or not 16 lower-case hex digits;
2. ``eval-overlap``: the pHash is within ``dedup.blocklist_distance`` bits of a
   hash of an eval-set blocklist (``winnow blocklist`` builds them; exact by
   default, as COYO). ``detail`` names the blocklist, the distance and the hash;
3. ``duplicate-pair``: another row has the same pHash and the same caption
   (compared in lower case): one winner per group, the row of the earliest
   dump, then the smallest id. Winners come from an aggregation (map-side
   partial minimum), not a window, so one hash shared by millions of rows is
   summed in every task, not sorted in one; only groups with more than one row
   are joined back, and adaptive execution splits a skewed join partition;
4. ``history-duplicate``: an accepted pair of an earlier dump (the history
   table, see below) has the same pHash and caption;
5. ``near-duplicate`` (``dedup.near_duplicates``, off by default): images whose
   pHashes are within ``dedup.near_distance`` bits are grouped (connected
   components), one winner per group as in 3. Rows with equal hashes collapse
   to one node first; candidate pairs come from the banded join of
   ``udfs.hamming`` (equal band keys, confirmed by a popcount of the XOR), so
   the cost grows with the rows, not their square.

History: ``OUTPUT/history/`` (or ``dedup.history_path``), parquet partitioned
by ``dump`` (``schemas.tables.HISTORY``): ``phash`` (long), ``caption_hash``
(xxhash64 of the lower-case caption), ``id``. The pipeline commits a dump's history with its accepted
output (jobs.storage), and with the default path reads the history of
committed dumps only, so an interrupted run leaves no history for output that
does not exist. A run compares its dumps with the history of the other dumps
only, so re-running a dump changes nothing.

``DedupConfig`` is the stage's ``[dedup]`` config section.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from jobs.errors import WinnowError
from jobs.stage import Rule, Stage, accepted_rows, rejected_rows
from schemas import reasons
from schemas.tables import HISTORY, col_ref
from udfs.hamming import band_plan

STAGE = reasons.DEDUP
log = logging.getLogger("winnow")

# Working columns, dropped before the stage's outputs.
_H, _CK, _ORDER = "_dedup_phash", "_dedup_caption", "_dedup_order"
# Connected components stop here; near-duplicate groups are shallow, so reaching it means
# a hostile input (a chain of hashes one bit apart), and the job says so instead of looping.
MAX_COMPONENT_ROUNDS = 40


class DedupError(WinnowError):
    """The stage cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class DedupConfig:
    """``[dedup]``: eval-set blocklists, (pHash, caption) pairs, the history of earlier dumps, near-duplicates."""

    phash_col: str = "image_phash"
    """The pHash column: the image stage's, or a source's own (COYO's: source_image_phash)."""
    blocklists: tuple[str, ...] = ()
    """Eval-set blocklists (outputs of `winnow blocklist`)."""
    blocklist_distance: int = 0
    """A pair whose pHash is within this many bits of a blocklist hash is rejected (COYO: exact)."""
    pair_dedup: bool = True
    """(pHash, caption) exact dedup: the earliest dump, then the smallest id, wins (COYO)."""
    history: bool = True
    """Dedup against the accepted pairs of earlier dumps."""
    history_path: str = ""
    """Where the history is; "" = OUTPUT/history."""
    near_duplicates: bool = False
    """Near-duplicate images (pHash within near_distance), one winner per group."""
    near_distance: int = 4
    """Bits of Hamming distance within which two pHashes are near-duplicates."""
    band_key_bits: int = 20
    """Bits per band key of the banded Hamming join (udfs.hamming.band_plan)."""

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, why) of every impossible value."""
        if not self.phash_col.strip():
            yield "phash_col", "must name a column"
        for path in self.blocklists:
            if "://" not in path and not os.path.exists(path):
                yield "blocklists", f"not found: {path}"
        if not 1 <= self.band_key_bits <= 64:
            yield "band_key_bits", "must be within [1, 64]"
            return
        for key in ("blocklist_distance", "near_distance"):
            value = getattr(self, key)
            if not 0 <= value <= 32:
                yield key, "must be within [0, 32] bits"
                continue
            try:
                band_plan(value, self.band_key_bits)
            except ValueError as exc:
                yield key, str(exc)


def check_phash_column(columns: list[str] | set[str], phash_col: str) -> None:
    if phash_col not in columns:
        raise DedupError(
            f"dedup needs the pHash column {phash_col!r}: run the image stage before it "
            "(--stages text,image,dedup), or name a source column with --set dedup.phash_col=<column> "
            "(COYO's own: source_image_phash)"
        )


def phash_long(phash: Column) -> Column:
    """16 hex digits as the same 64 bits in a signed long (udfs.hamming.phash_to_int)."""
    high = F.conv(F.substring(phash, 1, 8), 16, 10).cast("long")
    low = F.conv(F.substring(phash, 9, 8), 16, 10).cast("long")
    return F.shiftleft(high, 32).bitwiseOR(low)


def phash_hex(value: Column) -> Column:
    """A signed-long pHash back to its 16 hex digits."""
    return F.lpad(F.lower(F.hex(value)), 16, "0")


def caption_key(caption: Column) -> Column:
    return F.lower(caption)


def _order() -> Column:
    """The winner order of a group: earliest dump, then smallest id."""
    return F.struct(F.col("dump").alias("dump"), F.col("id").alias("id"))


def _of(winner: str, what: str) -> Column:
    return F.concat(
        F.lit(f"{what} id "),
        F.col(f"{winner}.id").cast("string"),
        F.lit(" (dump "),
        F.coalesce(F.col(f"{winner}.dump"), F.lit("null")),
        F.lit(")"),
    )


def band_keys(frame: DataFrame, k: int, key_bits: int, hash_col: str) -> DataFrame:
    """``frame`` with one row per band key of ``hash_col`` (columns ``_band``, ``_key``)."""
    plan = band_plan(k, key_bits)
    keys = F.array(
        *[
            F.struct(F.lit(j).alias("_band"), F.col(hash_col).bitwiseAND(F.lit(mask)).alias("_key"))
            for j, mask in enumerate(plan.keys)
        ]
    )
    return frame.withColumn("_bk", F.explode(keys)).select("*", "_bk._band", "_bk._key").drop("_bk")


def near_pairs(hashes: DataFrame, k: int, key_bits: int = 20, hash_col: str = "phash") -> DataFrame:
    """Every pair ``(a, b)``, a < b, of DISTINCT values of ``hash_col`` within Hamming distance ``k``,
    with ``distance``: the banded join. Duplicate values must be collapsed by the caller."""
    nodes = band_keys(hashes.select(F.col(hash_col).alias("_h")), k, key_bits, "_h")
    left = nodes.select(F.col("_band"), F.col("_key"), F.col("_h").alias("a"))
    right = nodes.select(F.col("_band"), F.col("_key"), F.col("_h").alias("b"))
    # A sort-merge join: the planner underestimates what the explode makes of the rows and would
    # broadcast a side of millions of keys.
    candidates = left.join(right.hint("merge"), ["_band", "_key"]).where(F.col("a") < F.col("b"))
    distance = F.bit_count(F.col("a").bitwiseXOR(F.col("b")))
    found = candidates.select("a", "b", distance.alias("distance")).where(F.col("distance") <= k)
    # A pair equal in several band keys is found once per key.
    return found.dropDuplicates(["a", "b"])


def blocklist_matches(hashes: DataFrame, blocklist: DataFrame, k: int, key_bits: int = 20) -> DataFrame:
    """Per value of ``hashes.phash`` within ``k`` of a blocklist hash: the nearest match
    (``match`` struct of distance, name, blocked hash)."""
    if k == 0:
        joined = hashes.join(blocklist, hashes["phash"] == blocklist["blocked"]).withColumn("distance", F.lit(0))
    else:
        left = band_keys(hashes.select("phash"), k, key_bits, "phash")
        right = band_keys(blocklist, k, key_bits, "blocked")
        joined = left.join(right.hint("merge"), ["_band", "_key"]).withColumn(
            "distance", F.bit_count(F.col("phash").bitwiseXOR(F.col("blocked")))
        )
        joined = joined.where(F.col("distance") <= k)
    match = F.struct("distance", "name", "blocked")
    return joined.groupBy("phash").agg(F.min(match).alias("match"))


def read_blocklists(spark: SparkSession, paths: list[str]) -> DataFrame | None:
    """The blocklists as (blocked long, name); None when there are none."""
    frames = []
    for path in paths:
        try:
            frame = spark.read.parquet(path)
        except Exception as exc:  # AnalysisException: a path with no parquet
            raise DedupError(f"dedup.blocklists: cannot read {path}: {str(exc).splitlines()[0]}") from None
        if "image_phash" not in frame.columns or "name" not in frame.columns:
            raise DedupError(
                f"dedup.blocklists: {path} has no image_phash / name=<name> columns: build it with `winnow blocklist`"
            )
        valid = F.coalesce(F.col("image_phash").rlike("^[0-9a-f]{16}$"), F.lit(False))
        invalid = frame.where(~valid).count()
        if invalid:
            log.warning("dedup.blocklists: %s: %d rows without a 16-hex-digit image_phash are ignored", path, invalid)
        frames.append(frame.where(valid).select(phash_long(F.col("image_phash")).alias("blocked"), "name"))
    if not frames:
        return None
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out.dropDuplicates(["blocked", "name"])


def read_history(
    spark: SparkSession, path: str, exclude_dumps: set[str], only_dumps: list[str] | None = None
) -> DataFrame | None:
    """The history of dumps other than ``exclude_dumps`` (and, given ``only_dumps``, of those
    only: the committed ones); None when there is none yet."""
    if "://" not in path and not os.path.isdir(path):
        return None
    try:
        frame = spark.read.parquet(path)
    except Exception as exc:
        if "Unable to infer schema" in str(exc) or "PATH_NOT_FOUND" in str(exc):
            return None
        raise DedupError(f"dedup history {path}: {str(exc).splitlines()[0]}") from None
    missing = [f.name for f in HISTORY.fields if f.name not in frame.columns]
    if missing:
        raise DedupError(f"dedup history {path} lacks {', '.join(missing)}: is it winnow's history table?")
    if exclude_dumps:
        frame = frame.where(~F.col("dump").isin(sorted(exclude_dumps)))
    if only_dumps is not None:
        frame = frame.where(F.col("dump").isin(list(only_dumps)))
    return frame.select(*HISTORY.fieldNames())


def history_rows(accepted: DataFrame, phash_col: str) -> DataFrame:
    """What the history keeps of accepted pairs."""
    return accepted.select(
        phash_long(col_ref(phash_col)).alias("phash"),
        F.xxhash64(caption_key(F.col("caption"))).alias("caption_hash"),
        F.col("id"),
        F.col("dump"),
    )


def _mark(frame: DataFrame, hit: Column, reason: str, detail: Column) -> DataFrame:
    """Set ``reason`` / ``detail`` where ``hit`` holds on a row no earlier check rejected."""
    fresh = F.col("reason").isNull() & F.coalesce(hit, F.lit(False))
    return frame.withColumn("detail", F.when(fresh, detail).otherwise(F.col("detail"))).withColumn(
        "reason", F.when(fresh, F.lit(reason)).otherwise(F.col("reason"))
    )


def with_dedup_verdicts(
    pairs: DataFrame,
    cfg: DedupConfig,
    blocklist: DataFrame | None = None,
    history: DataFrame | None = None,
) -> DataFrame:
    """Every input row once, with ``reason`` (null = kept) and ``detail``.

    One frame runs through the checks; each check looks at the rows still
    kept (``reason`` null) only to find its groups, and left-joins its
    findings back, so the input is not split into branches that Spark would
    compute once each.
    """
    check_phash_column(pairs.columns, cfg.phash_col)
    columns = pairs.columns
    valid = col_ref(cfg.phash_col).rlike("^[0-9a-f]{16}$")
    shown = F.coalesce(F.substring(col_ref(cfg.phash_col), 1, 64), F.lit("null"))
    rows = (
        pairs.withColumn(_H, F.when(valid, phash_long(col_ref(cfg.phash_col))))
        .withColumn(_ORDER, _order())
        .withColumn(_CK, caption_key(F.col("caption")))
        .withColumn("reason", F.when(F.col(_H).isNull(), F.lit(reasons.PHASH_INVALID)))
        .withColumn("detail", F.when(F.col(_H).isNull(), F.concat(F.lit(f"{cfg.phash_col}="), shown)))
    )
    kept = F.col("reason").isNull()

    if blocklist is not None:
        hashes = rows.where(kept).select(F.col(_H).alias("phash")).distinct()
        matches = blocklist_matches(hashes, blocklist, cfg.blocklist_distance, cfg.band_key_bits)
        rows = rows.join(matches.withColumnRenamed("phash", _H), _H, "left")
        detail = F.concat(
            F.col("match.name"),
            F.lit(": distance "),
            F.col("match.distance").cast("string"),
            F.lit(" to "),
            phash_hex(F.col("match.blocked")),
        )
        rows = _mark(rows, F.col("match").isNotNull(), reasons.EVAL_OVERLAP, detail).drop("match")

    if cfg.pair_dedup:
        groups = (
            rows.where(kept)
            .groupBy(_H, _CK)
            .agg(F.min(_ORDER).alias("_winner"), F.count(F.lit(1)).alias("_n"))
            .where(F.col("_n") > 1)
            .drop("_n")
        )
        rows = rows.join(groups, [_H, _CK], "left")
        lost = F.col("_winner") != F.col(_ORDER)
        rows = _mark(rows, lost, reasons.DUPLICATE_PAIR, _of("_winner", "duplicate of")).drop("_winner")

    if history is not None:
        earlier = history.groupBy(F.col("phash").alias(_H), F.col("caption_hash").alias("_ch")).agg(
            F.min(F.struct("dump", "id")).alias("_winner")
        )
        rows = rows.withColumn("_ch", F.xxhash64(F.col(_CK))).join(earlier, [_H, "_ch"], "left")
        seen = F.col("_winner").isNotNull()
        rows = _mark(rows, seen, reasons.HISTORY_DUPLICATE, _of("_winner", "duplicate of accepted"))
        rows = rows.drop("_winner", "_ch")

    if cfg.near_duplicates:
        winners = near_duplicate_winners(rows.where(kept), cfg.near_distance, cfg.band_key_bits)
        rows = rows.join(winners, _H, "left")
        lost = F.col("_winner") != F.col(_ORDER)
        rows = _mark(rows, lost, reasons.NEAR_DUPLICATE, _of("_winner", "near-duplicate of")).drop("_winner")

    return rows.select(*columns, "reason", "detail")


def near_duplicate_winners(alive: DataFrame, k: int, key_bits: int) -> DataFrame:
    """(``_dedup_phash``, ``_winner``) for every hash of ``alive``: ``_winner`` is the earliest
    (dump, id) of its near-duplicate group (connected component of hashes within ``k`` bits),
    or of the rows sharing the hash when no other hash is that near."""
    best = alive.groupBy(_H).agg(F.min(_ORDER).alias("_best")).localCheckpoint()
    if k == 0:
        return best.select(_H, F.col("_best").alias("_winner"))
    edges = near_pairs(best.select(F.col(_H).alias("phash")), k, key_bits).select("a", "b")
    edges = edges.localCheckpoint()
    nodes = edges.select(F.col("a").alias(_H)).union(edges.select(F.col("b").alias(_H))).distinct()
    labels = nodes.join(best, _H).select(_H, F.col("_best").alias("_winner")).localCheckpoint()
    for _ in range(MAX_COMPONENT_ROUNDS):
        la = labels.select(F.col(_H).alias("a"), F.col("_winner").alias("_la"))
        lb = labels.select(F.col(_H).alias("b"), F.col("_winner").alias("_lb"))
        both = edges.join(la, "a").join(lb, "b")
        offers = both.select(F.col("a").alias(_H), F.col("_lb").alias("_winner")).union(
            both.select(F.col("b").alias(_H), F.col("_la").alias("_winner"))
        )
        updated = labels.union(offers).groupBy(_H).agg(F.min("_winner").alias("_winner")).localCheckpoint()
        changed = (
            updated.join(labels.withColumnRenamed("_winner", "_old"), _H)
            .where(F.col("_winner") != F.col("_old"))
            .limit(1)
            .count()
        )
        labels = updated
        if not changed:
            grouped = best.join(labels, _H, "left")
            return grouped.select(_H, F.coalesce(F.col("_winner"), F.col("_best")).alias("_winner"))
    raise DedupError(
        f"near-duplicate groups did not settle in {MAX_COMPONENT_ROUNDS} rounds (a chain of hashes each "
        f"within {k} bits of the next): lower dedup.near_distance"
    )


def split_dedup(annotated: DataFrame, input_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """(accepted, rejected) from the annotated frame: the stage adds no columns."""
    schema = StructType([StructField(f.name, f.dataType, True) for f in annotated.schema if f.name in input_columns])
    return accepted_rows(annotated, schema, []), rejected_rows(annotated, STAGE, input_columns)


class DedupStage(Stage):
    """Eval-set blocklists, then (pHash, caption) pairs, the history of earlier dumps, near-duplicates."""

    name = STAGE
    sections = {"dedup": DedupConfig}
    rules = (
        Rule(
            "a 16-hex-digit pHash in `dedup.phash_col`",
            "winnow",
            ("dedup.phash_col",),
            reasons.PHASH_INVALID,
            "jobs/stages/dedup.py:with_dedup_verdicts",
            "tests/test_dedup_stage.py::test_invalid_phashes_are_rejected_not_grouped",
        ),
        Rule(
            "pHash not within `dedup.blocklist_distance` bits of an eval-set blocklist hash (ImageNet, Flickr30K, "
            "COCO, ...)",
            "COYO-700M",
            ("dedup.blocklists", "dedup.blocklist_distance"),
            reasons.EVAL_OVERLAP,
            "jobs/stages/dedup.py:with_dedup_verdicts",
            "tests/test_dedup_stage.py::test_blocklist_exact_and_within_k",
        ),
        Rule(
            "one pair per (pHash, caption): the earliest dump, then the smallest id, wins",
            "COYO-700M",
            ("dedup.pair_dedup",),
            reasons.DUPLICATE_PAIR,
            "jobs/stages/dedup.py:with_dedup_verdicts",
            "tests/test_dedup_stage.py::test_pair_winner_is_the_earliest_dump_then_the_smallest_id",
        ),
        Rule(
            "no (pHash, caption) of an accepted pair of an earlier dump",
            "winnow",
            ("dedup.history",),
            reasons.HISTORY_DUPLICATE,
            "jobs/stages/dedup.py:with_dedup_verdicts",
            "tests/test_dedup_stage.py::test_history_rejects_copies_of_earlier_dumps_and_a_rerun_changes_nothing",
        ),
        Rule(
            "near-duplicate images (pHash within `dedup.near_distance`): one winner per group",
            "winnow",
            ("dedup.near_duplicates", "dedup.near_distance"),
            reasons.NEAR_DUPLICATE,
            "jobs/stages/dedup.py:near_duplicate_winners",
            "tests/test_near_duplicates.py::test_near_duplicate_stage_one_winner_per_group",
        ),
    )
    description = "dedup: eval blocklists, (pHash, caption) pairs, history, near-duplicates"

    def preflight(self) -> None:
        # Blocklists are read (and their layout checked) before any data is.
        self.blocklist = read_blocklists(self.ctx.spark, self.cfg.dedup.blocklists)

    def check_source(self, source: DataFrame) -> None:
        made = {"image_phash"} if "image" in self.cfg.run.stages else set()
        check_phash_column(set(source.columns) | made, self.cfg.dedup.phash_col)

    def part_paths(self) -> dict[str, str]:
        return {"history": self.cfg.dedup.history_path or f"{self.ctx.output}/history"}

    def _earlier(self) -> list[str] | None:
        """The committed dumps the history may hold (never the run's own); None for a shared history path."""
        if self.cfg.dedup.history_path:
            return None
        return sorted(set(self.ctx.committed) - set(self.ctx.dumps))

    def fingerprint(self) -> Any:
        ctx, earlier = self.ctx, self._earlier()
        if earlier is not None:
            return [(d, ctx.committed[d].get("run_id")) for d in earlier]
        # A shared history: its files, but for the run's own dumps (this run rewrites them).
        own = tuple(f"/{ctx.store.partition_dir(d)}/" for d in ctx.dumps)
        path = self.part_paths()["history"]
        return [f for f in ctx.store.files(path) if not any(o in f[0] for o in own) and "/_" not in f[0]]

    def annotate(self, frame: DataFrame | None) -> DataFrame:
        history = None
        if self.cfg.dedup.history:
            # Only committed dumps count as history, and never the run's own (a re-run changes nothing).
            path = self.part_paths()["history"]
            history = read_history(self.ctx.spark, path, set(self.ctx.dumps), self._earlier())
        return with_dedup_verdicts(frame, self.cfg.dedup, self.blocklist, history)

    def split(self, annotated: DataFrame, frame: DataFrame | None) -> tuple[DataFrame, DataFrame]:
        return split_dedup(annotated, frame.columns)

    def parts(self, accepted: DataFrame) -> dict[str, DataFrame]:
        if not self.cfg.dedup.history:
            return {}
        return {"history": history_rows(accepted, self.cfg.dedup.phash_col)}
