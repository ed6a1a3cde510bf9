"""Streaming splitter: the bytes of one archive object -> the JSON events in it, pure.

Formats, detected as the bytes come (no need to know in advance, and mixtures work):
- NDJSON: one object per line (what the worker's Firehose sink writes);
- JSON objects concatenated with no delimiter (Firehose's default when producers add none);
- JSON arrays of objects (a whole object, or several arrays one after the other);
- any of these GZIP-compressed (by the magic bytes; concatenated gzip members too).

Objects are streamed chunk by chunk; only the event being scanned is buffered (at most `max_event`
bytes; a larger one is reported `too_large` up to the end of its line and skipped without being kept).
Anything that is not an object is reported as a `Malformed` stretch with its byte offset (in the
uncompressed data) and the scan goes on at the next line, or else the next `{`. Pieces come out in
strictly increasing offset order, which the resume file relies on.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from replay.errors import CompressionError

GZIP_MAGIC = b"\x1f\x8b"
MIB = 1024 * 1024
DEFAULT_MAX_EVENT = 8 * MIB  # a candidate event larger than this is reported (`too_large`), not buffered further
INFLATE_STEP = MIB  # gzip output per step, so a small object that inflates hugely is still streamed

# Reasons of malformed stretches (stable: the summary counts by them).
NOT_JSON = "not_json"  # bytes that are not a JSON object (junk, a broken object, a bare value)
TRUNCATED = "truncated"  # the data ends inside an object or array
TOO_LARGE = "too_large"  # an object larger than the splitter's cap
BAD_COMPRESSION = "bad_compression"  # gzip magic bytes, but the stream is corrupt or cut short

# One JSON string (no raw newline inside), or one structural byte, a newline or a quote that does not
# start a complete string (unterminated here, or cut by the end of the buffer).
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[{}\[\]\n"]')
_QUOTE, _LBRACE, _RBRACE, _LBRACKET, _RBRACKET, _NL, _COMMA = b'"{}[]\n,'
_SPACE = b" \t\r\n"
_SPACE_COMMA = b" \t\r\n,"


@dataclass(frozen=True, slots=True)
class Event:
    offset: int  # of the event's first byte in the (uncompressed) object
    data: bytes  # the event's own JSON text, exactly as stored
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    offset: int
    length: int
    reason: str
    preview: bytes  # the first bytes of the stretch

    def describe(self, key: str) -> str:
        return f"{key} at byte {self.offset} ({self.length} bytes, {self.reason}): {self.preview[:60]!r}"


Piece = Event | Malformed


def gunzip(chunks: Iterable[bytes], step: int = INFLATE_STEP) -> Iterator[bytes]:
    """Inflate gzip data as it streams (every member of a multi-member file). Raises CompressionError."""
    inflater: Any = None
    for chunk in chunks:
        data = chunk
        while data:
            if inflater is None or inflater.eof:
                if inflater is not None and not data.strip(b"\x00"):
                    break  # zero padding after the last member
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            yield from _inflate(inflater, data, step)
            while not inflater.eof and not inflater.unconsumed_tail:
                # All input taken; output the step cap held back comes with empty input.
                out = _inflate_once(inflater, b"", step)
                if not out:
                    break
                yield out
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if inflater is not None and not inflater.eof:
        raise CompressionError("the gzip stream ends early (truncated object)")


def _inflate(inflater: Any, data: bytes, step: int) -> Iterator[bytes]:
    out = _inflate_once(inflater, data, step)
    if out:
        yield out


def _inflate_once(inflater: Any, data: bytes, step: int) -> bytes:
    try:
        return bytes(inflater.decompress(data, step))
    except zlib.error as exc:
        raise CompressionError(str(exc)) from None


def split_chunks(chunks: Iterable[bytes], max_event: int = DEFAULT_MAX_EVENT) -> Iterator[Piece]:
    """Every event and malformed stretch of one object, given its raw bytes in chunks of any size."""
    source = iter(chunks)
    head = b""
    for chunk in source:  # enough bytes to see the gzip magic
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    body: Iterable[bytes] = _chain(head, source)
    if head[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        body = gunzip(body)
    splitter = Splitter(max_event)
    try:
        for chunk in body:
            yield from splitter.feed(chunk)
    except CompressionError as exc:
        at = splitter.total
        # What was buffered is reported as usual; an unclosed array is implied by the broken stream.
        yield from (p for p in splitter.close() if not (isinstance(p, Malformed) and p.offset >= at))
        yield Malformed(at, 0, BAD_COMPRESSION, str(exc).encode()[:80])
        return
    yield from splitter.close()


def split_bytes(data: bytes, max_event: int = DEFAULT_MAX_EVENT) -> list[Piece]:
    return list(split_chunks([data], max_event))


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


class Splitter:
    """Feed bytes, get pieces. State survives across chunks; `close()` at the end of the object."""

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        if max_event < 2:
            raise ValueError("max_event must be at least 2 bytes")
        self.max_event = max_event
        self.buf = b""
        self.base = 0  # absolute offset of buf[0]
        self.pos = 0  # next index of buf to scan
        self.gap = 0  # index where the bytes between top-level tokens began
        self.cand = -1  # index where the object being scanned began
        self.depth = 0
        self.cand_newline = False  # the object being scanned spans lines
        self.junk = -1  # index where a malformed stretch at top level began
        self.in_array = False
        self.skip_from = -1  # absolute offset of an object over the cap whose line is being skipped
        self.skip_preview = b""
        self.line_mode: bool | None = None  # the first object fit on one line and a newline followed it
        self.pending_mode: bool | None = None  # line mode as the first object suggests, until the next token
        self.eof = False

    @property
    def total(self) -> int:
        """Bytes fed so far."""
        return self.base + len(self.buf)

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        if chunk:
            self.buf += chunk
            yield from self._scan()
            self._compact()

    def close(self) -> Iterator[Piece]:
        self.eof = True
        yield from self._scan()
        end = len(self.buf)
        if self.cand >= 0:  # only possible when _scan could not resync: report the rest
            yield self._bad(self.cand, end, TRUNCATED)
            self.cand = -1
        self._gap_check(end)
        if self.junk >= 0:
            yield self._bad(self.junk, end, NOT_JSON)
            self.junk = -1
        if self.in_array:
            self.in_array = False
            yield Malformed(self.base + end, 0, TRUNCATED, b"array not closed")

    # -- scanning -------------------------------------------------------------------------------

    def _scan(self) -> Iterator[Piece]:
        while True:
            if self.skip_from >= 0:
                nl = self.buf.find(b"\n", self.pos)
                if nl < 0 and not self.eof:
                    self.pos = self.gap = len(self.buf)  # nothing of it is kept
                    return
                end = nl if nl >= 0 else len(self.buf)
                yield Malformed(self.skip_from, self.base + end - self.skip_from, TOO_LARGE, self.skip_preview)
                self.skip_from = -1
                self.pos = self.gap = end
            stop = yield from self._scan_once()
            if stop:
                return

    def _scan_once(self) -> Generator[Piece, None, bool]:
        """Scan tokens from self.pos; returns True when more data is needed (or the end is reached)."""
        buf = self.buf
        if self.cand < 0 and self.junk < 0 and not self.in_array and self.line_mode:
            fast = yield from self._fast_lines()
            if fast:
                return True
        for match in _TOKEN.finditer(buf, self.pos):
            i = match.start()
            c = buf[i]
            if self.cand >= 0:  # inside an object
                if c == _QUOTE:
                    if match.end() - i >= 2:
                        continue
                    nl = buf.find(b"\n", i)
                    if nl < 0 and not self.eof:
                        if len(buf) - self.cand > self.max_event:
                            yield from self._resync(TOO_LARGE)
                            return False
                        self.pos = i
                        return True  # the string may go on in the next chunk
                    yield from self._resync(TRUNCATED if nl < 0 else NOT_JSON)
                    return False
                if c in (_LBRACE, _LBRACKET):
                    self.depth += 1
                elif c in (_RBRACE, _RBRACKET):
                    self.depth -= 1
                    if self.depth == 0:
                        yield self._finish(i + 1)
                        self.pos = self.gap = i + 1
                        return False  # line mode may have changed: back to the fast path
                elif c == _NL:
                    self.cand_newline = True
                    if self.line_mode:  # NDJSON: a line that starts an object ends a broken one
                        if i + 1 >= len(buf) and not self.eof:
                            self.pos = i
                            return True
                        if buf[i + 1 : i + 2] == b"{":
                            yield from self._resync(NOT_JSON)
                            return False
                if i - self.cand > self.max_event:
                    yield from self._resync(TOO_LARGE)
                    return False
                continue
            # top level: between objects
            if self.pending_mode is not None:
                self.line_mode, self.pending_mode = self.pending_mode and c == _NL, None
            self._gap_check(i)
            opens = c in (_NL, _LBRACE) or (c == _LBRACKET and not self.in_array) or (c == _RBRACKET and self.in_array)
            if opens:
                if self.junk >= 0:
                    yield self._bad(self.junk, i, NOT_JSON)
                    self.junk = -1
                if c == _LBRACE:
                    self.cand, self.depth, self.cand_newline = i, 1, False
                elif c == _LBRACKET:
                    self.in_array = True
                elif c == _RBRACKET:
                    self.in_array = False
            elif c == _QUOTE and match.end() - i == 1:  # a string that does not end on this line (yet)
                nl = buf.find(b"\n", i)
                if nl < 0 and not self.eof and len(buf) - i <= self.max_event:
                    self.pos = self.gap = i
                    return True
                if self.junk < 0:
                    self.junk = i
                if nl < 0:
                    brace = buf.find(b"{", i + 1)
                    nl = brace if brace >= 0 else len(buf)
                self.pos = self.gap = nl
                return False
            elif self.junk < 0:  # a string, brace or bracket out of place
                self.junk = i
            self.pos = self.gap = match.end()
        # no more tokens in the buffer
        if self.cand >= 0:
            if len(buf) - self.cand > self.max_event:
                yield from self._resync(TOO_LARGE)
                return False
            if self.eof:
                yield from self._resync(TRUNCATED)
                return False
        self.pos = len(buf)
        return True

    def _fast_lines(self) -> Generator[Piece, None, bool]:
        """NDJSON fast path: a whole line that is one JSON object needs no token scan.

        Returns True when the buffer is used up (more data needed), False to go on with the scanner."""
        buf = self.buf
        while True:
            start = self.gap  # bytes from here to pos are not checked yet
            nl = buf.find(b"\n", start)
            if nl < 0:
                if not self.eof:
                    return len(buf) - start <= self.max_event  # else let the scanner deal with it
                nl = len(buf)
            line = buf[start:nl]
            stripped = line.strip(_SPACE)
            if not stripped:
                if nl >= len(buf):
                    self.pos = self.gap = len(buf)
                    return True
                self.pos = self.gap = nl + 1
                continue
            if stripped[:1] != b"{" or stripped[-1:] != b"}":
                return False
            try:
                obj = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                return False
            if not isinstance(obj, dict):
                return False
            offset = start + (len(line) - len(line.lstrip(_SPACE)))
            yield Event(self.base + offset, stripped, obj)
            if nl >= len(buf):
                self.pos = self.gap = len(buf)
                return True
            self.pos = self.gap = nl + 1

    def _finish(self, end: int) -> Piece:
        start, self.cand, self.depth = self.cand, -1, 0
        if end - start > self.max_event:
            return self._bad(start, end, TOO_LARGE)
        text = self.buf[start:end]
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._bad(start, end, NOT_JSON)
        if not isinstance(obj, dict):  # cannot happen for text starting with "{"; kept for safety
            return self._bad(start, end, NOT_JSON)
        if self.line_mode is None:
            self.pending_mode = not self.cand_newline
        elif self.cand_newline:
            self.line_mode = False  # objects span lines after all (pretty-printed)
        return Event(self.base + start, text, obj)

    def _resync(self, reason: str) -> Iterator[Piece]:
        """The object being scanned is broken: report it up to the next line (or `{`) and scan on there."""
        start = self.cand
        if reason == TOO_LARGE:  # skip the rest of its line without keeping it, then report it
            self.skip_from, self.skip_preview = self.base + start, self.buf[start : start + 80]
            self.cand, self.depth = -1, 0
            self.pos = self.gap = start + 1
            return
        limit = min(len(self.buf), start + self.max_event + 1)
        nl = self.buf.find(b"\n", start + 1, limit)
        if nl >= 0:
            resume = nl
        else:
            brace = self.buf.find(b"{", start + 1, limit)
            if brace >= 0:
                resume = brace
            elif self.eof:
                resume = limit
            else:  # wait for more data before deciding (cannot happen: callers resync only when sure)
                resume = len(self.buf)
        self.cand, self.depth = -1, 0
        self.pos = self.gap = resume
        yield self._bad(start, resume, reason)

    def _gap_check(self, end: int) -> None:
        """Bytes between top-level tokens may only be blanks (and commas inside an array)."""
        if self.junk >= 0 or end <= self.gap:
            return
        allowed = _SPACE_COMMA if self.in_array else _SPACE
        gap = self.buf[self.gap : end]
        stripped = gap.lstrip(allowed)
        if stripped:
            self.junk = self.gap + (len(gap) - len(stripped))

    def _bad(self, start: int, end: int, reason: str) -> Malformed:
        return Malformed(self.base + start, end - start, reason, self.buf[start : min(end, start + 80)])

    def _compact(self) -> None:
        keep = min(x for x in (self.pos, self.gap, self.cand, self.junk) if x >= 0)
        if keep > 0 and (keep >= len(self.buf) // 2 or keep > MIB):
            self.buf = self.buf[keep:]
            self.base += keep
            self.pos -= keep
            self.gap -= keep
            if self.cand >= 0:
                self.cand -= keep
            if self.junk >= 0:
                self.junk -= keep
