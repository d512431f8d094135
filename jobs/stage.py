"""What every stage shares: split one annotated frame into accepted / rejected, count the funnel.

A stage annotates each input row with ``reason`` (null = accepted) and
``detail``; the driver persists that one frame, then takes both outputs and
the counts from it, so expensive UDFs run once per row, not once per output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from schemas.tables import REJECT, col_ref, conform


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

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": dict(sorted(self.reasons.items())),
            "dumps": dict(sorted(self.dumps.items())),
        }


class ConservationError(RuntimeError):
    """rows in != rows accepted + rows rejected: the job must not publish its output."""


def count_stage(stage: str, rows_in: int, annotated: DataFrame) -> StageCounts:
    """Count accepted and rejected-per-reason rows of ``annotated`` and check conservation.

    ``rows_in`` is counted on the stage's input independently, so a join that
    duplicates or loses rows inside the stage is caught here.
    """
    per_reason: dict[str, int] = {}
    dumps: dict[str, dict[str, int]] = {}
    accepted = 0
    for r in annotated.groupBy("dump", "reason").agg(F.count(F.lit(1)).alias("n")).collect():
        side = "accepted" if r["reason"] is None else "rejected"
        dump = dumps.setdefault(r["dump"], {"accepted": 0, "rejected": 0})
        dump[side] += r["n"]
        if r["reason"] is None:
            accepted += r["n"]
        else:
            per_reason[r["reason"]] = per_reason.get(r["reason"], 0) + r["n"]
    counts = StageCounts(stage, rows_in, accepted, sum(per_reason.values()), per_reason, dumps)
    if counts.accepted + counts.rejected != rows_in:
        raise ConservationError(
            f"stage {stage}: {rows_in} rows in but {counts.accepted} accepted + "
            f"{counts.rejected} rejected = {counts.accepted + counts.rejected}"
        )
    return counts
