"""WebDataset tar shards: read one into samples, write one from samples. No Spark here.

A shard is a plain (uncompressed) tar whose members are grouped into samples
by key, the WebDataset convention: ``dir/000010005.jpg`` has key
``dir/000010005`` and extension ``jpg`` (the key ends at the first dot of the
file name). img2dataset writes per sample ``<key>.jpg`` (or ``.png`` /
``.webp``, its encode format), ``<key>.txt`` (the caption) and ``<key>.json``
(url, caption, key, status, error_message, width, height, ...).

Reading (``read_shard``) is all or nothing per tar: a tar that cannot be
parsed to its end (bad header, data cut short, garbage after the last member,
no end-of-archive blocks)
gives exactly one record with ``error`` set and no samples, so a half-written
shard is reported, not half-ingested. Within a readable tar, a sample whose
``.txt`` is not UTF-8 or whose ``.json`` is not a JSON object gets ``error``
too; every other key is one record, with ``image`` None when the key has no
image member and ``caption`` None when it has neither a ``.txt`` nor a
``caption`` string in its ``.json``.

``shard_expander`` is the ``mapInArrow`` body that turns binaryFile rows
(path, content, partition columns) into those records; ``shard_writer`` is
the one that writes sorted export rows into tars (``jobs.export``).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
from PIL import Image

# Image members looked for, in this order of preference, when a key has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# What ingest gets per sample (schemas.tables.WEBDATASET_SAMPLE is the same in Spark types).
SAMPLE_FIELDS = (
    ("shard_path", pa.string()),
    ("key", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("json", pa.string()),
    ("image_input", pa.binary()),
    ("read_error", pa.string()),
)
SAMPLE_SCHEMA = pa.schema(SAMPLE_FIELDS)

# Per shard written by shard_writer (schemas.tables.EXPORTED_SHARD).
EXPORTED_SHARD_SCHEMA = pa.schema(
    [("dump", pa.string()), ("shard", pa.int64()), ("samples", pa.int64()), ("bytes", pa.int64())]
)

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ShardSample:
    """One sample of a shard (or, with ``error`` and no key, a shard that cannot be read)."""

    key: str | None
    url: str | None = None
    caption: str | None = None
    status: str | None = None
    error_message: str | None = None
    json: str | None = None
    image: Buffer | None = None
    error: str | None = None


class _ViewFile:
    """A read-only, seekable file over a buffer, without copying it (tarfile only reads headers)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = self._view[self._pos : end].tobytes()
        self._pos = max(self._pos, end)
        return data

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = base + pos
        return self._pos

    def tell(self) -> int:
        return self._pos


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a member name, WebDataset style; None if it has no extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _members(view: memoryview) -> list[tuple[str, str, int, int]]:
    """(key, extension, data offset, size) of every regular file; raises on any damage."""
    found = []
    with tarfile.open(fileobj=_ViewFile(view), mode="r:") as tar:  # type: ignore[call-overload]
        while (info := tar.next()) is not None:
            if info.offset_data + info.size > len(view):
                raise tarfile.ReadError(f"member {info.name!r} is cut short")
            parts = split_member_name(info.name)
            if info.isreg() and parts is not None:
                found.append((*parts, info.offset_data, info.size))
        # tarfile stops quietly at a bad header after the first member, or at the end
        # of a file cut on a member boundary: what follows the last member must be the
        # end-of-archive zero blocks every tar writer adds on closing.
        rest = view[tar.offset :]
        if len(rest) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"no end-of-archive blocks after byte {tar.offset}: the tar is cut short")
        if any(rest.tobytes()):
            raise tarfile.ReadError(f"unreadable data at byte {tar.offset} of {len(view)}")
    return found


def _text(data: Buffer, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _sample(key: str, parts: dict[str, Buffer], image_extensions: tuple[str, ...]) -> ShardSample:
    image = next((parts[e] for e in image_extensions if e in parts), None)
    try:
        caption = _text(parts["txt"], f"{key}.txt") if "txt" in parts else None
        text = _text(parts["json"], f"{key}.json") if "json" in parts else None
        meta: dict[str, Any] = {}
        if text is not None:
            try:
                meta = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{key}.json is not JSON ({exc.msg} at line {exc.lineno})") from None
            if not isinstance(meta, dict):
                raise ValueError(f"{key}.json is a JSON {type(meta).__name__}, not an object")
    except ValueError as exc:
        return ShardSample(key, image=image, error=str(exc))

    def field(name: str) -> str | None:
        value = meta.get(name)
        return value if isinstance(value, str) else None

    if caption is None:
        caption = field("caption")
    return ShardSample(key, field("url"), caption, field("status"), field("error_message"), text, image)


def read_shard(data: Buffer, image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[ShardSample]:
    """The samples of one tar in order of first appearance, or one error record.

    Image bytes are slices of ``data`` (memoryviews when ``data`` is one), not copies.
    """
    view = memoryview(data).cast("B")
    try:
        members = _members(view)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        return [ShardSample(None, error=f"unreadable tar: {type(exc).__name__}: {exc}"[:1000])]
    grouped: dict[str, dict[str, Buffer]] = {}
    for key, ext, offset, size in members:
        grouped.setdefault(key, {}).setdefault(ext, view[offset : offset + size])  # a repeat: first wins
    return [_sample(key, parts, image_extensions) for key, parts in grouped.items()]


def open_source(path: str) -> Any:
    """A seekable binary file for ``path``: Python's open for local paths (``file:`` URIs too),
    pyarrow's file systems (HDFS with libhdfs, S3, ...) else."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return open(unquote(parsed.path), "rb")
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    return filesystem.open_input_file(inner)


def shard_keys(file: Any, size: int) -> list[str] | None:
    """The sample keys of a tar from its member headers alone (the reads seek over the data), in
    order of first appearance; None when ``read_shard`` would call the tar unreadable (a member cut
    short, no end-of-archive blocks, or data after them).

    The ingest stage counts the samples of the source with this, apart from the reader that
    expands them, so a reader that loses or repeats samples fails its conservation check.
    """
    keys: dict[str, None] = {}
    try:
        with tarfile.open(fileobj=file, mode="r:") as tar:
            while (info := tar.next()) is not None:
                if info.offset_data + info.size > size:
                    return None
                parts = split_member_name(info.name)
                if info.isreg() and parts is not None:
                    keys.setdefault(parts[0])
            end = tar.offset
        if size - end < tarfile.BLOCKSIZE:
            return None
        file.seek(end)
        while block := file.read(1 << 20):
            if any(block):
                return None
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return None
    return list(keys)


def keys_lister(passed: list[str]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function: (path, length, *passed) rows of tar files -> (path, key, *passed),
    one row per sample key of each tar, or one row with a null key for an unreadable tar."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            out: dict[str, list] = {"path": [], "key": [], **{name: [] for name in passed}}
            extra = {name: batch.column(name).to_pylist() for name in passed}
            for i, (path, length) in enumerate(
                zip(batch.column("path").to_pylist(), batch.column("length").to_pylist(), strict=True)
            ):
                try:
                    with open_source(path) as file:
                        keys = shard_keys(file, length)
                except OSError:
                    keys = None
                for key in keys if keys is not None else [None]:
                    out["path"].append(path)
                    out["key"].append(key)
                    for name in passed:
                        out[name].append(extra[name][i])
            if out["path"]:
                yield pa.RecordBatch.from_pydict(
                    out,
                    schema=pa.schema(
                        [("path", pa.string()), ("key", pa.string())] + [batch.schema.field(n) for n in passed]
                    ),
                )

    return run


def shard_expander(
    passed: list[str],
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    batch_rows: int = 256,
    batch_bytes: int = 64 << 20,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function: binaryFile rows (path, content, *passed) -> one row per sample.

    ``passed`` (partition columns such as ``dump``) are copied onto every
    sample of their file. Output batches hold at most ``batch_rows`` rows or
    about ``batch_bytes`` of image bytes.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            paths = batch.column("path").to_pylist()
            contents = batch.column("content")
            rows: list[tuple[str, ShardSample]] = []
            source: list[int] = []
            size = 0
            for i, path in enumerate(paths):
                content = contents[i]
                data = content.as_buffer() if content.is_valid else None
                samples = (
                    read_shard(data, image_extensions)
                    if data is not None
                    else [ShardSample(None, error="unreadable tar: no content")]
                )
                for s in samples:
                    rows.append((path, s))
                    source.append(i)
                    size += len(s.image) if s.image is not None else 0
                    if len(rows) >= batch_rows or size >= batch_bytes:
                        yield _sample_batch(rows, batch, source, passed)
                        rows, source, size = [], [], 0
            if rows:
                yield _sample_batch(rows, batch, source, passed)

    return run


def _sample_batch(
    rows: list[tuple[str, ShardSample]], batch: pa.RecordBatch, source: list[int], passed: list[str]
) -> pa.RecordBatch:
    values = {
        "shard_path": [p for p, _ in rows],
        "key": [s.key for _, s in rows],
        "url": [s.url for _, s in rows],
        "caption": [s.caption for _, s in rows],
        "status": [s.status for _, s in rows],
        "error_message": [s.error_message for _, s in rows],
        "json": [s.json for _, s in rows],
        "image_input": [s.image for _, s in rows],
        "read_error": [s.error for _, s in rows],
    }
    arrays = [pa.array(values[name], type=typ) for name, typ in SAMPLE_FIELDS]
    indices = pa.array(source, type=pa.int64())
    arrays += [batch.column(name).take(indices) for name in passed]
    names = [name for name, _ in SAMPLE_FIELDS] + passed
    return pa.RecordBatch.from_arrays(arrays, names=names)


# --- writing -----------------------------------------------------------------


@dataclass(frozen=True)
class ExportSample:
    """One sample to write: ``<key>.jpg`` (image), ``<key>.txt`` (caption), ``<key>.json`` (meta)."""

    key: str
    image: Buffer | None
    caption: str | None
    meta: dict[str, Any] | None


def _member(name: str, size: int) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same samples give the same bytes.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Write one tar at ``path``: into a hidden temporary file beside it, renamed on ``close``.

    The rename makes a shard appear whole or not at all, and a retried or
    speculative task that writes the same shard replaces it with the same bytes.
    """

    def __init__(self, path: str) -> None:
        folder, name = os.path.split(path)
        os.makedirs(folder or ".", exist_ok=True)
        self.path = path
        self.samples = 0
        self._tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close() / abort()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, sample: ExportSample) -> None:
        parts: list[tuple[str, bytes]] = []
        if sample.image is not None:
            parts.append(("jpg", bytes(sample.image)))
        if sample.caption is not None:
            parts.append(("txt", sample.caption.encode("utf-8")))
        if sample.meta is not None:
            parts.append(("json", json.dumps(sample.meta, ensure_ascii=False).encode("utf-8")))
        for ext, data in parts:
            self._tar.addfile(_member(f"{sample.key}.{ext}", len(data)), io.BytesIO(data))
        self.samples += 1

    def close(self) -> int:
        """Finish the tar, move it into place; returns its size in bytes."""
        self._tar.close()
        self._file.close()
        os.replace(self._tmp, self.path)
        return os.path.getsize(self.path)

    def abort(self) -> None:
        self._tar.close()
        self._file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def write_shard(path: str, rows: Iterable[ExportSample]) -> int:
    """Write ``rows`` as one tar at ``path``; returns the number of samples written."""
    writer = ShardWriter(path)
    try:
        for row in rows:
            writer.add(row)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.samples


# Spark's escaping of partition values in paths (ExternalCatalogUtils.escapePathName),
# so that dump=<name>/ folders read back as the same dump name.
_ESCAPED = set("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}


def escape_path_name(name: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in name)


# What a dump name keeps in shard names and sample keys. A dot would end a WebDataset key (the
# rest of the name is read as the extension), a slash would make a folder, and "_" separates
# the dump from the id: everything else is written as %XX (its UTF-8 bytes).
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def dump_token(dump: str) -> str:
    """The dump name as it appears in shard names and keys: ``2024-05`` stays, ``cc.v2`` is ``cc%2Ev2``."""
    return "".join(c if c in _TOKEN_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in dump)


def shard_file_name(dump: str, shard: int) -> str:
    """``2024-05_00042.tar``: the dump, then the shard number (five digits, more when needed), so the
    shards of all dumps can share one folder."""
    return f"{dump_token(dump)}_{shard:05d}.tar"


def sample_key(dump: str, pair_id: int, repeat: int = 0) -> str:
    """``2024-05_8137`` (dump, then the pair's id); the second row with that id in the dump is
    ``2024-05_8137_1``, and so on. Unique across dumps, and without a dot or a slash."""
    key = f"{dump_token(dump)}_{pair_id}"
    return f"{key}_{repeat}" if repeat else key


def grit_entries(entries: list | None) -> list | None:
    """GRIT's ``[start, end, x_min, y_min, x_max, y_max, score]`` with the span as integers (Kosmos-2
    slices the caption with them), the box and score as floats."""
    if entries is None:
        return None
    return [None if e is None else [int(e[0]), int(e[1]), *(float(v) for v in e[2:])] for e in entries]


def stored_size(image: Buffer | None) -> tuple[int | None, int | None]:
    """(width, height) of an encoded image from its header, or (None, None) when Pillow cannot tell."""
    if image is None:
        return None, None
    try:
        with Image.open(io.BytesIO(image)) as img:
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, None


# Columns of an export row that go into its .json as they are (absent ones are null); the
# grounding columns are rewritten by grit_entries.
META_COLUMNS = ("id", "url", "caption", "original_width", "original_height", "image_phash")
GRIT_COLUMNS = ("noun_chunks", "ref_exps")
SPAN_COLUMNS = ("noun_chunk_spans", "ref_exp_spans")


def sample_meta(row: dict[str, Any], key: str, extra_columns: tuple[str, ...]) -> dict[str, Any]:
    """The ``.json`` of one exported sample: img2dataset's fields (``width`` / ``height`` of the stored
    image, ``original_width`` / ``original_height``), the pair's ``id`` and ``dump``, and GRIT's
    ``noun_chunks`` / ``ref_exps`` when the row has them."""
    width, height = stored_size(row["image"])
    meta = {"url": row["url"], "caption": row["caption"], "key": key, "width": width, "height": height}
    meta.update({name: row.get(name) for name in META_COLUMNS})
    meta["dump"] = row["dump"]
    for name in extra_columns:
        meta[name] = grit_entries(row[name]) if name in GRIT_COLUMNS else row[name]
    return meta


def shard_writer(
    output: str, extra_columns: tuple[str, ...] = ()
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A ``mapInArrow`` function writing rows sorted by (dump, _shard, _pos) into tars.

    Input columns: ``dump``, ``_shard``, ``_pos`` (0-based rank in the dump),
    ``_repeat`` (how many rows of the dump with the same id come before this one),
    ``image`` and ``META_COLUMNS`` (absent ones null), plus ``extra_columns``
    (GRIT's, the span columns, ``caption_source``). Every row of a shard must reach
    the same task, in order: one open tar at a time. Out: one EXPORTED_SHARD_SCHEMA
    row per shard written.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        done: list[tuple[str, int, int, int]] = []
        writer: ShardWriter | None = None
        current: tuple[str, int] | None = None
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    where = (row["dump"], row["_shard"])
                    if where != current:
                        if writer is not None and current is not None:
                            done.append((*current, writer.samples, writer.close()))
                        current = where
                        folder = os.path.join(output, "dump=" + escape_path_name(row["dump"]))
                        writer = ShardWriter(os.path.join(folder, shard_file_name(*where)))
                    key = sample_key(row["dump"], row["id"], row["_repeat"])
                    meta = sample_meta(row, key, extra_columns)
                    writer.add(ExportSample(key, row["image"], row["caption"], meta))  # type: ignore[union-attr]
            if writer is not None and current is not None:
                done.append((*current, writer.samples, writer.close()))
                writer = None
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if done:
            columns = list(zip(*done, strict=True))
            yield pa.RecordBatch.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, EXPORTED_SHARD_SCHEMA, strict=True)],
                schema=EXPORTED_SHARD_SCHEMA,
            )

    return run
