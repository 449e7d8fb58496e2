"""A STOW-RS request body streamed to disk: each part of the multipart/related body goes to its own file in the
store's `incoming/` folder as the bytes arrive (python-multipart's streaming parser), so that the node's memory
does not grow with the size or the number of uploads. The files are the sender's data until stored: readable by
this user only, deleted when the request ends, and removed at start when a crash left them (`Store.recover`)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

from python_multipart.multipart import MultipartParser, MultipartState

BLOCK = 1 << 20  # bytes read from the socket at a time


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type (ValueError when there is none)."""
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("the Content-Type has no boundary")
    return boundary.encode("latin-1")


def iter_chunked(stream, limit: int) -> Iterator[bytes]:
    """A body in HTTP/1.1 chunked transfer coding (what Orthanc's DICOMweb client sends), in blocks of at most
    BLOCK bytes; ValueError when it ends before its last chunk or passes `limit` bytes."""
    total = 0
    while True:
        line = stream.readline(1024)
        if not line:
            raise ValueError("the body ends before its last chunk")  # the sender went away mid-upload
        field = line.split(b";")[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", field):
            raise ValueError(f"a chunk size that is not hexadecimal ({field[:20]!r})")
        size = int(field, 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        total += size
        if total > limit:
            raise ValueError(f"body over {limit} bytes")
        while size:
            block = stream.read(min(size, BLOCK))
            if not block:
                raise ValueError("the body ends inside a chunk")
            size -= len(block)
            yield block
        stream.readline(1024)


def iter_length(stream, length: int) -> Iterator[bytes]:
    """A body of `length` bytes in blocks; ValueError when it ends sooner."""
    left = length
    while left:
        block = stream.read(min(left, BLOCK))
        if not block:
            raise ValueError(f"the body ends after {length - left} of {length} bytes")
        left -= len(block)
        yield block


class SpooledParts:
    """The parts of one multipart body, each in a file of `folder`; `feed` the body's blocks, then `parts()`.
    Use as a context manager: the files are deleted on exit."""

    def __init__(self, folder: Path, boundary: bytes) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[tuple[str, Path]] = []
        self._out = None
        self._field, self._value, self._headers = bytearray(), bytearray(), {}
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._on_field, "on_header_value": self._on_value,
            "on_header_end": self._header_end, "on_headers_finished": self._open, "on_part_data": self._data,
            "on_part_end": self._close})

    def __enter__(self) -> "SpooledParts":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._close()
        except OSError:
            pass  # the disk is full: the part is being deleted anyway
        finally:
            for _, path in self.files:
                path.unlink(missing_ok=True)

    def feed(self, block: bytes) -> None:
        self._parser.write(block)

    def parts(self) -> list[tuple[str, Path]]:
        """(content type, file) of each part; ValueError when the body did not end with its closing boundary
        (a body cut short must not be stored as if whole) or had no part."""
        if self._parser.state != MultipartState.END:
            raise ValueError("the body ends before its closing boundary")
        if not self.files:
            raise ValueError("the body has no part")
        return list(self.files)

    # -- parser callbacks --------------------------------------------------------------------------------------

    def _begin(self) -> None:
        self._headers = {}

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).decode("latin-1").strip().lower()] = bytes(self._value).decode("latin-1")
        self._field, self._value = bytearray(), bytearray()

    def _open(self) -> None:
        kind = self._headers.get("content-type", "").split(";")[0].strip().lower()
        path = self.folder / f".part-{uuid.uuid4().hex}.tmp"
        self._out = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        self.files.append((kind, path))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._out.write(data[start:end])

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
