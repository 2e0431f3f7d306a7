"""Scan a build tarball in one streaming pass, without ever extracting it.

Builds are multi-GB files from outside, so the scan keeps memory flat, bounds how much it
decompresses before trusting anything, and turns every way the file can be broken into a
specific `BuildRejected`. Pure I/O: no ORM and no settings; limits are arguments.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import queue
import tarfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from releases.reasons import BuildRejected

# Compressed bytes per read, and so per progress report.
READ_SIZE = 1 << 20
# Most a decompress call may yield. Bounded so a bomb never gets a big allocation, and large
# so the decompressing thread waits for the GIL rarely (once per chunk).
OUT_SIZE = 8 << 20
# tarfile's stream reader re-slices its whole buffer on every header read, so a huge buffer
# costs a copy per member; 64 KiB keeps headers cheap while data still moves in big pieces.
TAR_BUFSIZE = 1 << 16
HASH_READ = 1 << 20
# Decompressed chunks waiting between the threads; with OUT_SIZE this bounds memory.
QUEUE_DEPTH = 4
BLOCK = tarfile.BLOCKSIZE
PRISTINE = "versions/pristine"
PRISTINE_PREFIX = PRISTINE + "/"
SHOWN_PRISTINE_ENTRIES = 5

_TYPES = {
    tarfile.DIRTYPE: "d",
    tarfile.SYMTYPE: "l",
    tarfile.LNKTYPE: "h",
    tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b",
    tarfile.FIFOTYPE: "p",
}

XZ_MAGIC = b"\xfd7zXZ\x00"
_OTHER_FORMATS = (
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (XZ_MAGIC, "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"PK\x03\x04", "a zip file"),
)


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    type: str
    mode: int
    size: int
    sha256: str
    link: str


@dataclass(frozen=True)
class ArchiveScan:
    members: int
    unpacked_size: int
    pristine_id: str
    manifest: bytes


def scan_archive(
    path,
    compression: str,
    *,
    max_unpacked_bytes: int,
    max_members: int,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveScan:
    """Read the whole archive once; raise BuildRejected on the first problem found."""
    if compression not in _FORMATS:
        raise ValueError(f"unknown compression {compression!r}")
    with open(path, "rb") as fh:
        total = os.fstat(fh.fileno()).st_size
        producer = _Decompressor(fh, compression, max_unpacked_bytes)
        pipe = _Pipe(producer.queue, progress, total)
        producer.start()
        try:
            return _scan_tar(pipe, compression, max_members)
        finally:
            producer.stop()


def read_manifest(data: bytes) -> Iterator[ManifestEntry]:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
        for line in fh:
            path, type_, mode, size, sha256, link = json.loads(line)
            yield ManifestEntry(path, type_, mode, size, sha256, link)


# --- Decompression -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    label: str
    new: Callable[[], object]
    # Bytes needed to recognise the start of a stream.
    magic_len: int
    # The xz format allows NUL padding between and after streams.
    padded: bool


_FORMATS = {
    "bz2": _Format("bzip2", bz2.BZ2Decompressor, 4, padded=False),
    "xz": _Format("xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), 6, padded=True),
    # Legacy `lzma -z` files have no magic at all, so the first stream is left to liblzma.
    "lzma": _Format("lzma", lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO), 6, padded=True),
}

# Items on the queue besides data (bytes) and progress (int).
_END = object()


class _Stopped(Exception):
    pass


class _Decompressor(threading.Thread):
    """Reads and decompresses on its own thread.

    bz2/lzma release the GIL, so decompression (the real cost) overlaps with tar parsing and
    hashing on the scanning thread. Everything reaches the scanner in stream order through a
    bounded queue, errors included, so the first problem in the file is the one reported.
    """

    def __init__(self, fh, compression: str, limit: int):
        super().__init__(name="archive-decompress", daemon=True)
        self.queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._fh = fh
        self._compression = compression
        self._format = _FORMATS[compression]
        self._limit = limit
        self._halt = threading.Event()
        self._read = 0
        self._unpacked = 0
        self._current = None
        self._pending = b""
        self._streams = 0

    def run(self):
        try:
            while chunk := self._fh.read(READ_SIZE):
                self._read += len(chunk)
                self._feed(chunk)
                self._put(self._read)
            self._finish()
            self._put(_END)
        except _Stopped:
            pass
        except BaseException as exc:  # handed over to the scanning thread, which raises it
            with contextlib.suppress(_Stopped):
                self._put(exc)

    def stop(self):
        self._halt.set()
        while self.is_alive():
            # Emptying the queue unblocks a put, after which the thread sees the flag.
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            self.join(0.05)

    def _put(self, item):
        while True:
            if self._halt.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _feed(self, data: bytes):
        while data:
            if self._current is None:
                data = self._start_stream(data)
                if not data:
                    return
            stream = self._current
            try:
                self._emit(stream.decompress(data, self._room()))
                while not stream.eof and not stream.needs_input:
                    self._emit(stream.decompress(b"", self._room()))
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise self._corrupt(str(exc) or type(exc).__name__) from exc
            if stream.eof:
                data = stream.unused_data
                self._current = None
            else:
                data = b""

    def _start_stream(self, data: bytes) -> bytes:
        """Open the next stream, or keep the bytes until there are enough to recognise it."""
        data = self._pending + data
        self._pending = b""
        if self._streams and self._format.padded:
            data = data.lstrip(b"\0")
        if len(data) < self._format.magic_len:
            self._pending = data
            return b""
        if not self._looks_right(data):
            raise self._wrong_start(data)
        self._current = self._format.new()
        self._streams += 1
        return data

    def _looks_right(self, data: bytes) -> bool:
        if self._compression == "bz2":
            return data[:3] == b"BZh" and len(data) > 3 and data[3] in b"123456789"
        if self._compression == "xz" or self._streams:
            return data.startswith(XZ_MAGIC)
        return _sniff(data) in (None, "xz data")

    def _could_start(self, data: bytes) -> bool:
        """Whether bytes too short to recognise could be the cut-off start of a stream."""
        if self._compression == "bz2":
            return b"BZh".startswith(data[:3]) and (len(data) < 4 or data[3] in b"123456789")
        if self._compression == "xz" or self._streams:
            return XZ_MAGIC.startswith(data)
        return True

    def _wrong_start(self, data: bytes) -> BuildRejected:
        if self._streams:
            offset = self._read - len(data)
            return self._corrupt(f"unexpected data after the compressed stream at byte {offset}")
        problem = f"this is not {self._format.label} data"
        kind = _sniff(data)
        return self._corrupt(f"{problem}; it looks like {kind}" if kind else problem)

    def _finish(self):
        if self._pending and not self._could_start(self._pending):
            raise self._wrong_start(self._pending)
        if self._pending or self._current is not None or not self._streams:
            raise BuildRejected("archive_truncated", compression=self._compression)

    def _room(self) -> int:
        # Never produce more than one byte past the limit: that byte proves the overflow.
        return min(OUT_SIZE, self._limit - self._unpacked + 1)

    def _emit(self, out: bytes):
        if not out:
            return
        self._unpacked += len(out)
        if self._unpacked > self._limit:
            raise BuildRejected("archive_too_big", limit=self._limit)
        self._put(out)

    def _corrupt(self, error: str) -> BuildRejected:
        return BuildRejected("archive_corrupt", compression=self._compression, error=error)


def _sniff(data: bytes) -> str | None:
    for magic, kind in _OTHER_FORMATS:
        if data.startswith(magic):
            return kind
    if data[257:262] == b"ustar":
        return "an uncompressed tar file"
    return None


class _Pipe:
    """The decompressed stream as a file object for tarfile, on the scanning thread."""

    def __init__(self, source: queue.Queue, progress, total: int):
        self._source = source
        self._progress = progress
        self._total = total
        self._chunk = b""
        self._pos = 0
        self.delivered = 0
        self.done = False
        # Recently delivered bytes, to look at what tarfile buffered past the last member.
        self._tail: deque[tuple[int, bytes]] = deque()
        self._tail_size = 0

    def read(self, size: int = -1) -> bytes:
        if self._pos >= len(self._chunk) and not self._next_chunk():
            return b""
        chunk, pos = self._chunk, self._pos
        if size < 0:
            size = len(chunk) - pos
        piece = chunk if pos == 0 and size >= len(chunk) else chunk[pos : pos + size]
        self._pos = pos + len(piece)
        self._remember(piece)
        return piece

    def bytes_from(self, offset: int) -> Iterator[bytes]:
        """Everything from `offset` to the end of the stream, as delivered and still to come."""
        if self._tail and offset < self._tail[0][0]:
            raise RuntimeError("tar end is outside the retained tail")
        for start, piece in self._tail:
            if start + len(piece) > offset:
                yield piece[max(0, offset - start) :]
        while True:
            piece = self.read(OUT_SIZE)
            if not piece:
                return
            yield piece

    def _remember(self, piece: bytes):
        self._tail.append((self.delivered, piece))
        self.delivered += len(piece)
        self._tail_size += len(piece)
        while self._tail_size - len(self._tail[0][1]) >= 2 * TAR_BUFSIZE + 2 * BLOCK:
            self._tail_size -= len(self._tail.popleft()[1])

    def _next_chunk(self) -> bool:
        while not self.done:
            item = self._source.get()
            if isinstance(item, bytes):
                self._chunk, self._pos = item, 0
                return True
            if isinstance(item, int):
                if self._progress is not None:
                    self._progress(item, self._total)
            elif item is _END:
                self.done = True
            else:
                raise item
        return False


# --- Tar -----------------------------------------------------------------------------------


def _scan_tar(pipe: _Pipe, compression: str, max_members: int) -> ArchiveScan:
    manifest = _ManifestWriter()
    members = 0
    pristine_seen = False
    pristine_ids: set[str] = set()
    try:
        with tarfile.open(fileobj=pipe, mode="r|", bufsize=TAR_BUFSIZE) as tar:
            while (info := tar.next()) is not None:
                # A stream-mode TarFile otherwise keeps every TarInfo it has seen.
                tar.members.clear()
                members += 1
                if members > max_members:
                    raise BuildRejected("archive_too_many", limit=max_members)
                entry = _entry(tar, info)
                manifest.add(entry)
                if entry.path == PRISTINE:
                    pristine_seen = True
                elif entry.path.startswith(PRISTINE_PREFIX):
                    pristine_seen = True
                    pristine_ids.add(entry.path[len(PRISTINE_PREFIX) :].split("/", 1)[0])
            end = tar.offset
    except (tarfile.TarError, UnicodeError, ValueError) as exc:
        if pipe.done and pipe.delivered == 0:
            raise BuildRejected("archive_empty") from exc
        if pipe.done and members:
            raise BuildRejected("archive_truncated", compression=compression) from exc
        raise BuildRejected("archive_not_tar", error=str(exc) or type(exc).__name__) from exc
    _check_end(pipe, end, compression)
    if not members:
        raise BuildRejected("archive_empty")
    return ArchiveScan(
        members=members,
        unpacked_size=pipe.delivered,
        pristine_id=_pristine_id(pristine_seen, pristine_ids),
        manifest=manifest.finish(),
    )


def _entry(tar: tarfile.TarFile, info: tarfile.TarInfo) -> ManifestEntry:
    name = info.name
    if name.startswith("/"):
        raise BuildRejected("archive_absolute_path", path=name)
    if ".." in name.split("/"):
        raise BuildRejected("archive_parent_path", path=name)
    type_ = _TYPES.get(info.type, "f")
    link = ""
    sha256 = ""
    if type_ == "h":
        if info.linkname.startswith("/"):
            raise BuildRejected("archive_absolute_path", path=info.linkname)
        if ".." in info.linkname.split("/"):
            raise BuildRejected("archive_parent_path", path=info.linkname)
        link = _normalise(info.linkname)
    elif type_ == "l":
        link = info.linkname
    elif type_ == "f":
        sha256 = _hash_member(tar, info)
    return ManifestEntry(_normalise(name), type_, info.mode, info.size, sha256, link)


def _hash_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    stream = tar.fileobj
    if info.sparse is not None or stream.tell() != info.offset_data:
        member = tar.extractfile(info)
        while chunk := member.read(HASH_READ):
            digest.update(chunk)
        return digest.hexdigest()
    # Reading tarfile's own stream directly skips two copies per byte (BufferedReader and
    # _FileInFile); tarfile skips the block padding itself on the next header.
    remaining = info.size
    while remaining:
        chunk = stream.read(min(remaining, HASH_READ))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def _normalise(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", ".")) or "."


def _check_end(pipe: _Pipe, end: int, compression: str):
    """The tar must stop at an end-of-archive block followed only by zero padding.

    tarfile silently stops at a missing, short or garbled header once past the first
    member; those are a cut-off or damaged tar, not a complete one.
    """
    block = b""
    position = end
    for piece in pipe.bytes_from(end):
        if len(block) < BLOCK:
            take = BLOCK - len(block)
            block += piece[:take]
            piece = piece[take:]
            if len(block) == BLOCK and block.count(0) != BLOCK:
                raise BuildRejected("archive_not_tar", error=f"invalid tar header at byte {end}")
            position = end + len(block)
        if piece.count(0) != len(piece):
            offset = position + len(piece) - len(piece.lstrip(b"\0"))
            raise BuildRejected(
                "archive_not_tar",
                error=f"unexpected data after the end of the tar archive at byte {offset}",
            )
        position += len(piece)
    if len(block) < BLOCK:
        raise BuildRejected("archive_truncated", compression=compression)


def _pristine_id(seen: bool, ids: set[str]) -> str:
    if not seen:
        return ""
    if not ids:
        raise BuildRejected("archive_empty_pristine")
    if len(ids) > 1:
        names = sorted(ids)
        shown = names[:SHOWN_PRISTINE_ENTRIES]
        if len(names) > SHOWN_PRISTINE_ENTRIES:
            shown.append("…")
        raise BuildRejected("archive_several_pristine", count=len(names), entries=", ".join(shown))
    return ids.pop()


class _ManifestWriter:
    """gzip of one compact JSON array per line, compressed as it grows."""

    BATCH = 1024

    def __init__(self):
        # wbits=31 writes a gzip header with mtime 0, so equal trees give equal bytes.
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._lines: list[str] = []
        self._parts: list[bytes] = []

    def add(self, entry: ManifestEntry):
        row = [entry.path, entry.type, entry.mode, entry.size, entry.sha256, entry.link]
        self._lines.append(json.dumps(row, separators=(",", ":")))
        if len(self._lines) >= self.BATCH:
            self._flush()

    def finish(self) -> bytes:
        self._flush()
        self._parts.append(self._zip.flush())
        return b"".join(self._parts)

    def _flush(self):
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._parts.append(self._zip.compress(text.encode("ascii")))
            self._lines = []
