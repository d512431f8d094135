"""TaiSu's caption file, read in byte ranges so one huge JSON object splits over many tasks.

TaiSu publishes its captions as ONE JSON object, ``{image_id: {"w": web
caption or null, "g": generated caption or null}, ...}``, 166M entries in one
file: no line structure to split on, and far too big to parse whole. A task
reads the byte range ``[start, end)`` of the file and owns the entries whose
separating comma lies in it (the first entry belongs to the range holding the
opening brace):

- it starts at the first *boundary* at or after ``start``: a comma preceded by
  ``}`` (whitespace aside) and followed by a complete entry: a JSON string,
  ``:``, an object without nested objects, then ``,`` or the closing ``}``. A ``,"``
  inside a caption cannot pass: inside a JSON string every ``"`` is escaped,
  so a quote after ``},`` there is the caption's closing quote, and what
  follows it (``, "g": ...`` or ``}``) is not ``string : {``;
- it reads entries until the comma after one is a boundary at or after
  ``end``; the next range starts at exactly that comma.

The range between those two boundaries is parsed in one ``json.loads`` (C
speed: about 25 MB/s per core against 7 MB/s entry by entry, measured on 51 MB
of generated captions); only when that fails does the reader go entry by
entry. An entry that does not parse (a value that is not an object, a nested object,
bad JSON, more than ``max_entry_bytes``) becomes a ``CaptionEntry`` with
``error`` set, and the reader resynchronises at the next entry boundary;
the bytes skipped are named in that error, so nothing is lost silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

# A JSON string (UTF-8 bytes: continuation bytes are never '"' or '\').
_STRING = rb'"(?:[^"\\]|\\.)*"'
_OBJECT = rb'\{(?:[^{}"]|' + _STRING + rb")*\}"
_VALUE = rb"(?:" + _OBJECT + rb"|" + _STRING + rb"|[^,{}\[\]\"]+|\[[^\]]*\])"
# key, value, then the separator (',' or the closing '}').
_ENTRY = re.compile(rb"\s*(" + _STRING + rb")\s*:\s*(" + _VALUE + rb")\s*([,}])", re.S)
# An entry whose value is an object: what a range may start at.
_OBJECT_ENTRY = re.compile(rb"\s*(" + _STRING + rb")\s*:\s*(" + _OBJECT + rb")\s*([,}])", re.S)
_BOUNDARY = re.compile(rb",\s*\"")
_SPACE = b" \t\r\n"
DEFAULT_MAX_ENTRY_BYTES = 1 << 20
_BLOCK = 1 << 20


@dataclass
class CaptionEntry:
    """One image id's captions, or a reading error (``image_id`` None when the id is unknown)."""

    image_id: str | None
    web: str | None = None
    generated: str | None = None
    error: str | None = None


class _Buffer:
    """A forward-only window on a seekable file, refilled in blocks."""

    def __init__(self, fh: BinaryIO, start: int, size: int) -> None:
        self.fh, self.size = fh, size
        self.base = max(start, 0)
        fh.seek(self.base)
        self.data = fh.read(min(_BLOCK, size - self.base))

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def ensure(self, pos: int, need: int) -> None:
        """Hold the bytes [pos, pos + need) (or up to the end of the file); drop those before pos."""
        if pos > self.base + _BLOCK:
            self.data = self.data[pos - self.base :]
            self.base = pos
        while self.end < min(pos + need, self.size):
            self.fh.seek(self.end)  # another window may have read from the same file
            self.data += self.fh.read(max(_BLOCK, pos + need - self.end))


def _preceded_by_brace(buf: _Buffer, comma: int) -> bool:
    i = comma - buf.base - 1
    while i >= 0 and buf.data[i] in _SPACE:
        i -= 1
    return i >= 0 and buf.data[i] == ord("}")


def _is_boundary(buf: _Buffer, comma: int, max_entry: int) -> bool:
    """Is the comma at ``comma`` between two entries: ``}`` before it, an object-valued entry after?"""
    buf.ensure(comma, max_entry)
    return _preceded_by_brace(buf, comma) and _OBJECT_ENTRY.match(buf.data, comma + 1 - buf.base) is not None


def _next_boundary(buf: _Buffer, pos: int, limit: int, max_entry: int) -> int | None:
    """The position of the first entry whose separating comma is in [pos, limit), else None."""
    while True:
        buf.ensure(pos, max_entry)
        found = _BOUNDARY.search(buf.data, pos - buf.base)
        if found is None:
            if buf.end >= buf.size:
                return None
            pos = max(pos, buf.end - 16)  # a comma and its spaces may straddle the refill
            buf.ensure(pos, max_entry + _BLOCK)
            continue
        comma = buf.base + found.start()
        if comma >= limit:
            return None
        if _is_boundary(buf, comma, max_entry):
            return comma + 1
        pos = comma + 1


def _first_entry(buf: _Buffer, name: str) -> tuple[int | None, CaptionEntry | None]:
    """(position after the opening brace, or an error entry when the file is not a JSON object)."""
    data = buf.data
    i = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while i < len(data) and data[i] in _SPACE:
        i += 1
    if i >= len(data) or data[i] != ord("{"):
        return None, CaptionEntry(None, error=f"{name}: not a JSON object (byte {i})")
    return i + 1, None


def _parse(key: bytes, value: bytes, name: str) -> CaptionEntry:
    image_id = json.loads(key)
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return CaptionEntry(image_id, error=f"{name}: entry {image_id!r}: value is not JSON ({exc})")
    if not isinstance(parsed, dict):
        kind = type(parsed).__name__
        return CaptionEntry(image_id, error=f"{name}: entry {image_id!r}: value is a JSON {kind}, not an object")
    web, generated = parsed.get("w"), parsed.get("g")
    bad = [k for k, v in (("w", web), ("g", generated)) if v is not None and not isinstance(v, str)]
    if bad:
        return CaptionEntry(image_id, error=f"{name}: entry {image_id!r}: {', '.join(bad)} is not a string or null")
    return CaptionEntry(image_id, web, generated)


def read_range(
    fh: BinaryIO, size: int, start: int, end: int, name: str = "", max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
) -> Iterator[CaptionEntry]:
    """The entries the range ``[start, end)`` of a TaiSu caption file owns (module docstring)."""
    if size <= 0 or start >= size:
        if start == 0:
            yield CaptionEntry(None, error=f"{name}: empty file")
        return
    buf = _Buffer(fh, 0 if start == 0 else start - 1, size)
    if start == 0:
        pos, problem = _first_entry(buf, name)
        if problem is not None:
            yield problem
            return
        assert pos is not None
        buf.ensure(pos, max_entry_bytes)
        rest = buf.data[pos - buf.base :].lstrip(_SPACE)
        if rest.startswith(b"}"):
            return  # {}
    else:
        found = _next_boundary(buf, start, end, max_entry_bytes)
        if found is None:
            return
        pos = found
    fast = _whole_range(buf, pos, end, size, name, max_entry_bytes)
    if fast is not None:
        yield from fast
        return
    while True:
        buf.ensure(pos, max_entry_bytes)
        match = _ENTRY.match(buf.data, pos - buf.base)
        if match is None:
            resume = _next_boundary(buf, pos + 1, size, max_entry_bytes)
            stop = resume if resume is not None else size
            snippet = buf.data[pos - buf.base : pos - buf.base + 60].decode("utf-8", "replace")
            yield CaptionEntry(
                None,
                error=f"{name}: bytes {pos}..{stop} are not entries of a TaiSu caption object "
                f"(starting {snippet!r}); an entry longer than {max_entry_bytes} bytes is not read",
            )
            if resume is None or resume - 1 >= end:
                return
            pos = resume
            continue
        key, value, sep = match.group(1), match.group(2), match.group(3)
        if match.end() - match.start() > max_entry_bytes:
            # Read only because the block was there: bounded the same way whatever the buffering.
            yield CaptionEntry(
                json.loads(key), error=f"{name}: entry at byte {pos} is longer than {max_entry_bytes} bytes"
            )
        else:
            yield _parse(key, value, name)
        after = buf.base + match.end()
        if sep == b"}":
            buf.ensure(after, 64)
            tail = buf.data[after - buf.base :].strip(_SPACE)
            if tail or buf.end < size:
                yield CaptionEntry(None, error=f"{name}: content after the closing brace at byte {after}")
            return
        comma = after - 1
        if comma >= end and _is_boundary(buf, comma, max_entry_bytes):
            return
        pos = after


class _Object(list):
    """A JSON object as its (key, value) pairs: duplicate ids stay, and arrays stay plain lists."""


def _whole_range(
    buf: _Buffer, pos: int, end: int, size: int, name: str, max_entry_bytes: int
) -> list[CaptionEntry] | None:
    """The range's entries parsed in one ``json.loads`` (C speed, about 8x the entry-by-entry
    path), or None when anything in it is not a plain entry: the caller then reads entry by
    entry, which reports and skips exactly the bad parts."""
    # A window of its own: searching from ``end`` must not drop this range's bytes from ``buf``.
    probe = _Buffer(buf.fh, max(end, pos) - 1, size) if end < size else None
    stop_entry = _next_boundary(probe, max(end, pos), size, max_entry_bytes) if probe is not None else None
    if stop_entry is not None:
        stop = stop_entry - 1  # the comma
    else:
        buf.ensure(pos, size - pos)  # the last range: up to the closing brace
        tail = buf.data[pos - buf.base :].rstrip(_SPACE)
        if not tail.endswith(b"}"):
            return None
        stop = pos + len(tail) - 1
    buf.ensure(pos, stop - pos)
    chunk = buf.data[pos - buf.base : stop - buf.base]
    try:
        pairs = json.loads(b"{" + chunk + b"}", object_pairs_hook=_Object)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    entries = []
    for image_id, value in pairs:
        fields = dict(value) if isinstance(value, _Object) else None
        web = fields.get("w") if fields is not None else None
        generated = fields.get("g") if fields is not None else None
        plain = fields is not None and all(v is None or isinstance(v, str) for v in (web, generated))
        if not plain or any(isinstance(v, list) for v in fields.values()):
            return None  # a value that is not an object of strings: let the careful path say which
        # At most 6 bytes a character (\uXXXX): an entry that may pass the cap goes the careful way.
        if 6 * (len(image_id) + len(web or "") + len(generated or "")) + 64 > max_entry_bytes:
            return None
        entries.append(CaptionEntry(image_id, web, generated))
    return entries


def plan_ranges(size: int, split_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most ``split_bytes`` covering a file of ``size`` bytes (one for an empty file)."""
    if size <= 0:
        return [(0, 0)]
    return [(s, min(s + split_bytes, size)) for s in range(0, size, split_bytes)]


def read_file_range(
    opener: Callable[[], BinaryIO], size: int, start: int, end: int, name: str, max_entry_bytes: int
) -> list[CaptionEntry]:
    """``read_range`` over a file opened with ``opener``; an I/O error becomes one error entry."""
    try:
        with opener() as fh:
            return list(read_range(fh, size, start, end, name, max_entry_bytes))
    except OSError as exc:
        return [CaptionEntry(None, error=f"{name}: bytes {start}..{end} cannot be read ({exc})")]
