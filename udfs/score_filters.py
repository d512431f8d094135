"""The score rules as Spark SQL over score columns: one threshold per column, the first rule a row fails.

A score column may come from the input (COYO ships ``clip_similarity_vitb32``,
``nsfw_score_opennsfw2``, ``nsfw_score_gantman``, ``aesthetic_score_laion_v2``
and ``watermark_score``; LAION ships ``similarity``) or from a model of the
score stage; the rules do not care which. Two kinds:

- a ceiling (NSFW, watermark): a row whose score is at or above the threshold
  is rejected;
- a floor (similarity, aesthetic, the top-fraction cut-off): a row whose score
  is below the threshold is rejected.

A null score is no score: no rule rejects it. NaN is rejected by every rule
(a score that cannot be compared proves nothing in the row's favour). Values
are read as doubles, so a CSV's string column works as well.

The NSFW rule lives here once: the image stage applies it to the input's
``nsfw_score_*`` columns before fetching (rows COYO drops are never
fetched), the score stage to every ``nsfw_score_*`` column it has, the
models' included, both with ``score.max_nsfw_score`` and reason ``score-nsfw``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas import reasons
from schemas.tables import col_ref

NSFW_PREFIX = "nsfw_score_"


@dataclass(frozen=True)
class ScoreRule:
    """Reject ``code`` when ``column`` is at or above (``ceiling``) or below (a floor) ``threshold``."""

    code: str
    column: str
    threshold: float
    ceiling: bool
    note: str = ""  # appended to the detail, e.g. "(top 0.3)"
    shown: str = ""  # the threshold as the detail writes it; "" = "%g"

    def value(self) -> Column:
        return col_ref(self.column).cast("double")

    def hit(self) -> Column:
        v = self.value()
        fails = v >= F.lit(self.threshold) if self.ceiling else v < F.lit(self.threshold)
        # Spark orders NaN above every number: a ceiling already catches it, a floor must ask.
        return F.coalesce(fails | F.isnan(v), F.lit(False))

    def detail(self) -> Column:
        op = ">=" if self.ceiling else "<"
        suffix = f" {self.note}" if self.note else ""
        shown = self.shown or f"{self.threshold:g}"
        return F.format_string(f"{self.column}=%.4f {op} {shown}{suffix}", self.value())


def nsfw_columns(columns: Iterable[str]) -> list[str]:
    """The NSFW score columns among ``columns`` (COYO's naming: ``nsfw_score_<model>``)."""
    return [c for c in columns if c.startswith(NSFW_PREFIX)]


def nsfw_rules(columns: Iterable[str], max_score: float) -> list[ScoreRule]:
    """COYO's NSFW rule on every ``nsfw_score_*`` column of ``columns``: a score at or above ``max_score`` rejects."""
    return [ScoreRule(reasons.SCORE_NSFW, c, max_score, ceiling=True) for c in nsfw_columns(columns)]


def with_rule_reasons(frame: DataFrame, rules: Sequence[ScoreRule]) -> DataFrame:
    """``frame`` with ``reason`` / ``detail`` set by the first rule each row fails.

    A row that already has a reason (``reason`` not null) keeps it and its
    detail; ``frame`` without those columns starts with none.
    """
    if "reason" not in frame.columns:
        frame = frame.withColumns({"reason": F.lit(None).cast("string"), "detail": F.lit(None).cast("string")})
    chain_reason = F.when(F.col("reason").isNotNull(), F.col("reason"))
    chain_detail = F.when(F.col("reason").isNotNull(), F.col("detail"))
    for rule in rules:
        chain_reason = chain_reason.when(rule.hit(), F.lit(rule.code))
        chain_detail = chain_detail.when(rule.hit(), rule.detail())
    # Both from the frame's own reason: one withColumns, not two chained withColumn.
    return frame.withColumns({"reason": chain_reason, "detail": chain_detail})
