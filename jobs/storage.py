"""Files through Hadoop's FileSystem (local, HDFS, S3 alike), the lease that lets one run at a time
write an output, and the per-dump commit of the output.

The lease (``Lease``): ``OUTPUT/_lease.json`` is created with create-exclusive
semantics (``O_CREAT | O_EXCL`` on a local disk; ``create(overwrite=false)``,
atomic at the NameNode, on HDFS) and names its holder (host, pid, run id,
start). Its modification time is the holder's heartbeat, renewed by a thread
every ``run.lease_timeout / 10``; a second run finds it and stops, naming the
holder, before touching anything. A lease whose heartbeat is older than
``run.lease_timeout``, or whose holder ran on this host and its process is
gone, belongs to a killed run and is taken over. Object stores
(S3A, GCS) have neither an exclusive create nor a reliable modification time:
there the lease only guards against the common overlap (docs/operations.md).

The commit protocol (docs/operations.md, "The commit"): every run writes
its parts (accepted, rejected, history, boxes) under ``<part>/_staging/<run>/``
and its report under ``report/_staging/<run>/`` (Spark's file index skips
``_`` folders, so readers never see them), then records an intent,
``_commits/_pending-<run>.json``, listing what it staged. Only then, dump by
dump, it drops the dump's marker ``_commits/dump=<name>.json``, swaps each
part's ``dump=<name>/`` folder for the staged one (a rename, atomic on a
local disk and HDFS) and writes the marker again. The next run first rolls
any intent forward (every step is idempotent) and deletes staging that no
intent names (a run killed before it finished writing). So a kill at any
moment leaves either the old or the new version of each dump, and the next
run completes the new one; a dump is committed when its marker exists.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession

from jobs.errors import WinnowError

log = logging.getLogger("winnow")

LEASE = "_lease.json"
COMMITS = "_commits"
STAGING = "_staging"
PENDING = "_pending-"


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent starts."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class FileStore:
    """The few file operations the driver needs, on any Hadoop file system."""

    def __init__(self, spark: SparkSession):
        sc = spark.sparkContext
        self._jvm = sc._jvm
        self._conf = sc._jsc.hadoopConfiguration()
        self._utils = self._jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils

    def _fs(self, path: str):
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p, p.getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        p, fs = self._fs(path)
        return bool(fs.exists(p))

    def delete(self, path: str) -> None:
        p, fs = self._fs(path)
        if fs.exists(p):
            fs.delete(p, True)

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` (which must not exist: Hadoop would move src *into* it)."""
        s, fs = self._fs(src)
        d, _ = self._fs(dst)
        fs.mkdirs(d.getParent())
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def children(self, path: str) -> list[str]:
        """Names directly under ``path`` ([] when it does not exist)."""
        p, fs = self._fs(path)
        if not fs.exists(p) or not fs.getFileStatus(p).isDirectory():
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def files(self, path: str) -> list[tuple[str, int, int]]:
        """(path, bytes, modification time in ms) of every file under ``path``, recursively."""
        p, fs = self._fs(path)
        if not fs.exists(p):
            return []
        out = []
        found = fs.listFiles(p, True)
        while found.hasNext():
            status = found.next()
            out.append((str(status.getPath().toString()), int(status.getLen()), int(status.getModificationTime())))
        return sorted(out)

    def modified(self, path: str) -> float | None:
        """The modification time of ``path`` in seconds since the epoch, or None when it does not exist."""
        p, fs = self._fs(path)
        if not fs.exists(p):
            return None
        return int(fs.getFileStatus(p).getModificationTime()) / 1000.0

    def touch(self, path: str) -> None:
        """Set the modification time of ``path`` to now."""
        p, fs = self._fs(path)
        fs.setTimes(p, int(time.time() * 1000), -1)

    def create_new(self, path: str, text: str) -> bool:
        """Create ``path`` holding ``text`` unless it exists (False then): one of two racing creators wins.

        A local path is created with ``O_CREAT | O_EXCL``; any other with Hadoop's
        ``create(overwrite=false)``, which HDFS decides at the NameNode.
        """
        local = _local_path(path)
        if local is not None:
            os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
            try:
                fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            return True
        p, fs = self._fs(path)
        try:
            out = fs.create(p, False)
        except Exception as exc:  # Py4JJavaError around FileAlreadyExistsException
            if "FileAlreadyExists" in str(exc):
                return False
            raise
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return True

    def read_text(self, path: str) -> str | None:
        p, fs = self._fs(path)
        if not fs.exists(p):
            return None
        stream = fs.open(p)
        try:
            reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        """Write ``text`` to a hidden sibling, then rename it over ``path``: never half a file."""
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        p, fs = self._fs(tmp)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        self.delete(path)
        self.rename(tmp, path)

    def partition_dir(self, dump: str | None) -> str:
        """``dump=<name>`` as Spark's partitionBy names the folder (null: the default partition)."""
        if dump is None:
            return "dump=__HIVE_DEFAULT_PARTITION__"
        return "dump=" + str(self._utils.escapePathName(dump))

    def partition_value(self, folder: str) -> str | None:
        """The dump a ``dump=...`` folder name holds."""
        raw = folder[len("dump=") :]
        return None if raw == "__HIVE_DEFAULT_PARTITION__" else str(self._utils.unescapePathName(raw))


def _local_path(path: str) -> str | None:
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return path if not parsed.scheme or len(parsed.scheme) == 1 else None  # "C:" is a drive


def _gone(holder: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and its process no longer exists (killed, not just slow)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's process: alive
    try:  # a killed process its parent has not reaped yet is a zombie: gone too
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class LeaseHeld(WinnowError):
    """Another run holds the output's lease; the message names it."""


@dataclass
class Lease:
    """One run's hold on an output (see the module docstring): ``take``, then ``release``."""

    store: FileStore
    output: str
    run_id: str
    timeout: float  # seconds without a heartbeat after which a lease is a killed run's
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _beat: threading.Thread | None = field(default=None, repr=False)
    _made_output: bool = field(default=False, repr=False)

    @property
    def path(self) -> str:
        return f"{self.output.rstrip('/')}/{LEASE}"

    def _holder(self) -> dict[str, Any]:
        text = self.store.read_text(self.path)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}  # a holder killed while writing its lease: staleness alone decides

    def take(self) -> str | None:
        """Hold the lease, or raise LeaseHeld naming its live holder; what was taken over, if anything."""
        me = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        text = json.dumps(me, indent=1, sort_keys=True) + "\n"
        taken_over = None
        self._made_output = not self.store.exists(self.output)
        if not self.store.create_new(self.path, text):
            holder, age = self._holder(), self._age()
            gone = _gone(holder)
            if age is not None and age <= self.timeout and not gone:
                raise LeaseHeld(self._describe(holder, age))
            # A killed run's lease; read it again right before deleting it (another run may just have
            # taken it over), then take it as a new holder would.
            if self._holder() == holder:
                self.store.delete(self.path)
            if not self.store.create_new(self.path, text):
                holder = self._holder()
                raise LeaseHeld(self._describe(holder, self._age() or 0.0))
            why = "whose process is gone" if gone else f"whose heartbeat stopped {age or 0:.0f} s ago"
            taken_over = f"took over the lease of {self._who(holder)}, {why}"
            log.warning("%s: %s", self.output, taken_over)
        self._beat = threading.Thread(target=self._heartbeat, name="winnow-lease", daemon=True)
        self._beat.start()
        return taken_over

    def _age(self) -> float | None:
        modified = self.store.modified(self.path)
        return None if modified is None else max(0.0, time.time() - modified)

    def _heartbeat(self) -> None:
        every = max(1.0, self.timeout / 10)
        while not self._stop.wait(every):
            try:
                self.store.touch(self.path)
            except Exception as exc:  # a failed heartbeat is logged; confirm() catches a lost lease
                log.warning("lease heartbeat on %s failed: %s", self.path, exc)

    def confirm(self) -> None:
        """Raise LeaseHeld unless this run still holds the lease (before it commits)."""
        holder = self._holder()
        if holder.get("run_id") != self.run_id:
            raise LeaseHeld(f"this run lost the lease of {self.output}: " + self._describe(holder, self._age() or 0.0))

    def release(self) -> None:
        """Stop the heartbeat and delete the lease, if it is still this run's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self._holder().get("run_id") == self.run_id:
            self.store.delete(self.path)
            if self._made_output and not self.store.children(self.output):
                self.store.delete(self.output)  # a run that stopped before writing leaves no folder

    def _who(self, holder: dict[str, Any]) -> str:
        if not holder:
            return "an unknown run (its lease is empty)"
        where = f"{holder.get('host')} (pid {holder.get('pid')}, started {holder.get('started')})"
        return f"run {holder.get('run_id')} on {where}"

    def _describe(self, holder: dict[str, Any], age: float) -> str:
        return (
            f"{self.output} is in use by {self._who(holder)}, last heartbeat {age:.0f} s ago; a killed run's lease "
            f"is taken over after run.lease_timeout ({self.timeout:g} s), or delete {self.path} if no run is left"
        )


def swap_partition(store: FileStore, part: str, staging: str, folder: str, staged: bool) -> None:
    """Make ``part/folder`` the staged version (or absent, when nothing was staged for it).

    Idempotent: when the staged folder is gone it was moved in by an earlier attempt.
    """
    src, dst = f"{staging}/{folder}", f"{part}/{folder}"
    if not staged:
        store.delete(dst)
        return
    if not store.exists(src):
        return
    if store.exists(dst):
        store.rename(dst, f"{staging}/_replaced/{folder}")
    store.rename(src, dst)


@dataclass
class Committer:
    """Stages a run's outputs and commits them dump by dump (see the module docstring)."""

    store: FileStore
    output: str
    run_id: str

    @property
    def commits(self) -> str:
        return f"{self.output}/{COMMITS}"

    def staging(self, part_path: str) -> str:
        return f"{part_path}/{STAGING}/{self.run_id}"

    def committed(self) -> dict[str, dict[str, Any]]:
        """The committed dumps and their markers."""
        out = {}
        for name in self.store.children(self.commits):
            if name.startswith("dump=") and name.endswith(".json"):
                text = self.store.read_text(f"{self.commits}/{name}")
                if text:
                    out[self.store.partition_value(name[: -len(".json")])] = json.loads(text)
        return out

    def recover(self, part_paths: list[str]) -> list[str]:
        """Roll every recorded intent forward, then delete staging no intent names; what was done."""
        done = []
        for name in self.store.children(self.commits):
            if name.startswith(".") and name.endswith(".tmp"):
                self.store.delete(f"{self.commits}/{name}")  # a marker write killed before its rename
                done.append(f"deleted {self.commits}/{name} (half a marker)")
            if name.startswith(PENDING) and name.endswith(".json"):
                intent = json.loads(self.store.read_text(f"{self.commits}/{name}") or "{}")
                if intent.get("run_id"):
                    apply_intent(self.store, self.output, intent)
                    done.append(f"finished the commit of run {intent['run_id']} ({len(intent['dumps'])} dumps)")
                self.store.delete(f"{self.commits}/{name}")
        for path in dict.fromkeys([*part_paths, f"{self.output}/report"]):
            for run in self.store.children(f"{path}/{STAGING}"):
                self.store.delete(f"{path}/{STAGING}/{run}")
                done.append(f"deleted {path}/{STAGING}/{run} (a run that stopped before its commit)")
        return done

    def stage(self, part_path: str, frame: DataFrame) -> list[str]:
        """Write ``frame`` partitioned by dump into the part's staging; the folders written."""
        target = self.staging(part_path)
        frame.write.mode("overwrite").partitionBy("dump").parquet(target)
        return [f for f in self.store.children(target) if f.startswith("dump=")]

    def stage_files(self, folder: str, files: dict[str, str]) -> None:
        for name, text in files.items():
            self.store.write_text(f"{self.staging(folder)}/{name}", text)

    def commit(
        self,
        parts: dict[str, tuple[str, list[str]]],
        dumps: dict[str, dict[str, Any]],
        files: tuple[str, list[str]] | None = None,
    ) -> None:
        """Record the intent, then swap every dump in and mark it.

        ``parts``: name -> (path, staged folders); ``dumps``: dump -> what its marker records;
        ``files``: (folder, names) staged with ``stage_files``, moved in after the dumps.
        """
        intent = {
            "run_id": self.run_id,
            "parts": {name: {"path": path, "staged": staged} for name, (path, staged) in parts.items()},
            "dumps": dumps,
            "files": {"path": files[0], "names": files[1]} if files else None,
        }
        pending = f"{self.commits}/{PENDING}{self.run_id}.json"
        self.store.write_text(pending, json.dumps(intent, indent=1, sort_keys=True) + "\n")
        apply_intent(self.store, self.output, intent)
        self.store.delete(pending)


def apply_intent(store: FileStore, output: str, intent: dict[str, Any]) -> None:
    """Carry out a recorded commit (safe to repeat after a kill at any step)."""
    run_id = intent["run_id"]
    commits = f"{output}/{COMMITS}"
    parts = intent["parts"]
    for dump in sorted(intent["dumps"]):
        folder = store.partition_dir(dump)
        marker = f"{commits}/{folder}.json"
        current = json.loads(store.read_text(marker) or "{}")
        if current.get("run_id") == run_id:
            continue  # this dump was committed before the kill
        store.delete(marker)
        for part in parts.values():
            staging = f"{part['path']}/{STAGING}/{run_id}"
            swap_partition(store, part["path"], staging, folder, folder in part["staged"])
        record = {"dump": dump, "run_id": run_id, "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        store.write_text(marker, json.dumps({**record, **intent["dumps"][dump]}, indent=1, sort_keys=True) + "\n")
    # The folder of no dump (box verdicts without a pair: the null partition) belongs to the run.
    no_dump = store.partition_dir(None)
    for part in parts.values():
        staging = f"{part['path']}/{STAGING}/{run_id}"
        swap_partition(store, part["path"], staging, no_dump, no_dump in part["staged"])
    files = intent.get("files")
    if files:
        staging = f"{files['path']}/{STAGING}/{run_id}"
        for name in files["names"]:
            if store.exists(f"{staging}/{name}"):
                store.delete(f"{files['path']}/{name}")
                store.rename(f"{staging}/{name}", f"{files['path']}/{name}")
    for part in [*[p["path"] for p in parts.values()], *([files["path"]] if files else [])]:
        store.delete(f"{part}/{STAGING}/{run_id}")
        if not store.children(f"{part}/{STAGING}"):
            store.delete(f"{part}/{STAGING}")
