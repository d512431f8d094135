"""A digest of a `winnow demo` output that is the same on every run of the same code.

The demo serves its images from a loopback server on a free port, so its URLs
(and the ids hashed from them) change from run to run. The digest therefore
names each row by the sample's own ``key`` column, writes the port as
``PORT`` and every id inside a ``detail`` as the key of that row; all other
values, the column names and their order are taken as they are (image bytes
as their sha256). Rows are sorted by that key, so the digest does not depend
on how Spark partitioned the output.

    python tests/demo_digest.py demo-output     # prints the counts and digests as JSON
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

PARTS = ("accepted", "rejected", "boxes", "history")
_PORT = re.compile(r"(127\.0\.0\.[0-9]+):[0-9]+")
_ID = re.compile(r"\bid (-?[0-9]+)")


def _read(folder: Path) -> list[dict[str, Any]]:
    return ds.dataset(str(folder), format="parquet", partitioning="hive").to_table().to_pylist()


def _columns(folder: Path) -> list[str]:
    return ds.dataset(str(folder), format="parquet", partitioning="hive").schema.names


def _plain(value: Any, keys: dict[int, str]) -> Any:
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        value = _PORT.sub(r"\1:PORT", value)
        return _ID.sub(lambda m: "id key:" + keys.get(int(m.group(1)), "?"), value)
    if isinstance(value, list):
        return [_plain(v, keys) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, keys) for k, v in value.items()}
    return value


def demo_digest(output: str | Path) -> dict[str, Any]:
    """Per part: its column names, row count and a sha256 of its rows; and the funnel's counts."""
    output = Path(output)
    rows = {part: _read(output / part) for part in PARTS}
    keys = {r["id"]: r["key"] for part in ("accepted", "rejected") for r in rows[part] if r["id"] is not None}
    digest: dict[str, Any] = {}
    for part in PARTS:
        plain = []
        for row in rows[part]:
            named = {k: _plain(v, keys) for k, v in row.items() if k != "id"}
            named["id"] = keys.get(row["id"], "?") if row["id"] is not None else None
            plain.append(json.dumps(named, sort_keys=True, default=str))
        text = "\n".join(sorted(plain))
        digest[part] = {
            "columns": _columns(output / part),
            "rows": len(plain),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    funnel = json.loads((output / "report" / "funnel.json").read_text())
    digest["funnel"] = {
        "stages": [
            {k: stage[k] for k in ("stage", "rows_in", "accepted", "rejected", "reasons", "dumps")}
            for stage in funnel["stages"]
        ],
        "boxes": funnel.get("boxes"),
        "rows_in": funnel["rows_in"],
        "accepted": funnel["accepted"],
        "rejected": funnel["rejected"],
    }
    return digest


if __name__ == "__main__":
    print(json.dumps(demo_digest(sys.argv[1] if len(sys.argv) > 1 else "demo-output"), indent=1))
