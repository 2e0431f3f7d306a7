"""Scan a build tarball in one streaming pass, without ever extracting it.

Builds are multi-GB files from outside, so the scan keeps memory flat, bounds how much it
decompresses before trusting anything (extension headers included: a name is never read
into memory before its size is known to be sane), and turns every way the file can be
broken into a specific `Refused`. Each member is replayed on `extraction`'s model of
what GNU tar leaves on the school server's disk. Pure I/O: no ORM and no settings; limits
are arguments.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
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

from releases import extraction
from releases.reasons import Refused

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
# A PAX or GNU long-name header bigger than this is refused before it is read: names are
# at most 4095 bytes, and real PAX headers hold a few records.
MAX_EXTENSION_BYTES = 64 * 1024
# Extension headers in a row before one member (PAX local + global + GNU name + GNU link
# is the most a real archive uses); tarfile would otherwise recurse once per header.
MAX_EXTENSION_CHAIN = 4

# The member kinds GNU tar extracts as the school server expects; anything else is refused.
_TYPES = {
    tarfile.REGTYPE: "f",
    tarfile.AREGTYPE: "f",
    tarfile.DIRTYPE: "d",
    tarfile.SYMTYPE: "l",
    tarfile.LNKTYPE: "h",
    tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b",
    tarfile.FIFOTYPE: "p",
}
# Kind codes of `reasons.KINDS`.
_OTHER_TYPES = {
    tarfile.CONTTYPE: "contiguous",
    tarfile.GNUTYPE_SPARSE: "sparse",
    b"V": "volume",
    b"M": "multivolume",
    b"D": "dumpdir",
}
_EXTENSIONS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)

XZ_MAGIC = b"\xfd7zXZ\x00"
_OTHER_FORMATS = (
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (XZ_MAGIC, "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"PK\x03\x04", "a zip file"),
)


# Slots: the build diff may hold a whole manifest of these while it sorts one.
@dataclass(frozen=True, slots=True)
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
    # What the served tree carries that matters for security (see `extraction.Served`).
    summary: dict


def scan_archive(
    path,
    compression: str,
    *,
    max_unpacked_bytes: int,
    max_members: int,
    allow_device_nodes: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveScan:
    """Read the whole archive once; raise Refused on the first problem found."""
    if compression not in _FORMATS:
        raise ValueError(f"unknown compression {compression!r}")
    with open(path, "rb") as fh:
        total = os.fstat(fh.fileno()).st_size
        producer = _Decompressor(fh, compression, max_unpacked_bytes)
        pipe = _Pipe(producer.queue, progress, total)
        producer.start()
        try:
            model = extraction.ExtractionModel(allow_device_nodes=allow_device_nodes)
            return _scan_tar(pipe, compression, max_members, model)
        finally:
            producer.stop()


# --- Decompression -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    label: str
    new: Callable[[], object]
    # Bytes needed to recognise the start of a stream.
    magic_len: int
    # The xz format allows NUL padding between and after streams, in multiples of 4 bytes.
    padded: bool
    # Whether a second stream may follow the first (`bzip2 -d` and `xz -d` read them all).
    multistream: bool


_FORMATS = {
    "bz2": _Format("bzip2", bz2.BZ2Decompressor, 4, padded=False, multistream=True),
    "xz": _Format(
        "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), 6, padded=True, multistream=True
    ),
    # The school server unpacks .tar.lzma with `lzma -cd`: the legacy format only (xz data
    # fails with "File format not recognized"), one stream, and nothing after it, not even
    # zeros ("Compressed data is corrupt"). Legacy files have no magic; liblzma checks the
    # header.
    "lzma": _Format(
        "lzma",
        lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
        6,
        padded=False,
        multistream=False,
    ),
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
        # NUL bytes since the end of the last xz stream.
        self._padding = 0

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
            stripped = data.lstrip(b"\0")
            self._padding += len(data) - len(stripped)
            data = stripped
            if not data:
                return b""
        if self._streams and not self._format.multistream:
            raise self._wrong_start(data)
        if len(data) < self._format.magic_len:
            self._pending = data
            return b""
        if not self._looks_right(data):
            raise self._wrong_start(data)
        self._check_padding()
        self._current = self._format.new()
        self._streams += 1
        return data

    def _check_padding(self):
        if self._padding % 4:
            offset = self._read - self._padding
            raise self._corrupt(
                f"{self._padding} bytes of stream padding at byte {offset}: xz requires a "
                "multiple of 4"
            )
        self._padding = 0

    def _looks_right(self, data: bytes) -> bool:
        if self._compression == "bz2":
            return data[:3] == b"BZh" and len(data) > 3 and data[3] in b"123456789"
        if self._compression == "xz":
            return data.startswith(XZ_MAGIC)
        return _sniff(data) is None

    def _could_start(self, data: bytes) -> bool:
        """Whether bytes too short to recognise could be the cut-off start of a stream."""
        if self._compression == "bz2":
            return b"BZh".startswith(data[:3]) and (len(data) < 4 or data[3] in b"123456789")
        if self._compression == "xz":
            return XZ_MAGIC.startswith(data)
        return True

    def _wrong_start(self, data: bytes) -> Refused:
        if self._streams:
            offset = self._read - len(data)
            return self._corrupt(f"unexpected data after the compressed stream at byte {offset}")
        kind = _sniff(data)
        if self._compression == "lzma" and kind == "xz data":
            return Refused("archive_lzma_is_xz")
        problem = f"this is not {self._format.label} data"
        return self._corrupt(f"{problem}; it looks like {kind}" if kind else problem)

    def _finish(self):
        if self._pending and not self._could_start(self._pending):
            raise self._wrong_start(self._pending)
        if self._pending or self._current is not None or not self._streams:
            raise Refused("archive_truncated", compression=self._compression)
        self._check_padding()

    def _room(self) -> int:
        # Never produce more than one byte past the limit: that byte proves the overflow.
        return min(OUT_SIZE, self._limit - self._unpacked + 1)

    def _emit(self, out: bytes):
        if not out:
            return
        self._unpacked += len(out)
        if self._unpacked > self._limit:
            raise Refused("archive_too_big", limit=self._limit)
        self._put(out)

    def _corrupt(self, error: str) -> Refused:
        return Refused("archive_corrupt", compression=self._compression, error=error)


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


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header reader, refusing what would cost unbounded memory before reading it.

    tarfile reads a GNU long name or a PAX header whole, and an old GNU sparse member's
    chain of map blocks one by one, before returning the member: a 1 GiB long name cost the
    worker 4 GB. The size of an extension is in its own header, so it is checked first.
    """

    def _proc_member(self, tar):
        if self.type in _EXTENSIONS:
            if self.size > MAX_EXTENSION_BYTES:
                raise Refused(
                    "archive_header_too_big",
                    size=self.size,
                    limit=MAX_EXTENSION_BYTES,
                    offset=self.offset,
                )
            tar.extension_chain += 1
            if tar.extension_chain > MAX_EXTENSION_CHAIN:
                raise Refused(
                    "archive_header_chain", path=_shown(self.name), limit=MAX_EXTENSION_CHAIN
                )
        else:
            tar.extension_chain = 0
        if self.type == tarfile.GNUTYPE_SPARSE:
            _structs, _extended, real_size = self._sparse_structs
            raise Refused("archive_sparse", path=_shown(self.name), size=real_size)
        return super()._proc_member(tar)

    # PAX sparse files (GNU formats 0.0, 0.1 and 1.0) announce themselves in the PAX header.
    def _refuse_pax_sparse(self, next, pax_headers, *_rest):
        size = pax_headers.get("GNU.sparse.realsize") or pax_headers.get("GNU.sparse.size")
        name = pax_headers.get("GNU.sparse.name") or pax_headers.get("path") or next.name
        raise Refused("archive_sparse", path=_shown(name), size=size or "?")

    _proc_gnusparse_00 = _refuse_pax_sparse
    _proc_gnusparse_01 = _refuse_pax_sparse
    _proc_gnusparse_10 = _refuse_pax_sparse


class _TarStream(tarfile.TarFile):
    tarinfo = _BoundedTarInfo
    extension_chain = 0


def _scan_tar(pipe: _Pipe, compression: str, max_members: int, model) -> ArchiveScan:
    manifest = _ManifestWriter()
    members = 0
    try:
        with _TarStream.open(fileobj=pipe, mode="r|", bufsize=TAR_BUFSIZE) as tar:
            while (info := tar.next()) is not None:
                # A stream-mode TarFile otherwise keeps every TarInfo it has seen.
                tar.members.clear()
                members += 1
                if members > max_members:
                    raise Refused("archive_too_many", limit=max_members)
                entry = _entry(tar, info)
                model.add(entry.path, entry.type, mode=entry.mode, link=entry.link)
                manifest.add(entry)
            end = tar.offset
    except (tarfile.TarError, UnicodeError, ValueError) as exc:
        if pipe.done and pipe.delivered == 0:
            raise Refused("archive_empty") from exc
        if pipe.done and members:
            raise Refused("archive_truncated", compression=compression) from exc
        raise Refused("archive_not_tar", error=str(exc) or type(exc).__name__) from exc
    _check_end(pipe, end, compression)
    if not members:
        raise Refused("archive_empty")
    served = model.finish()
    return ArchiveScan(
        members=members,
        unpacked_size=pipe.delivered,
        pristine_id=served.pristine_id,
        manifest=manifest.finish(),
        summary=served.summary,
    )


def _entry(tar: tarfile.TarFile, info: tarfile.TarInfo) -> ManifestEntry:
    name = info.name
    if name.startswith("/"):
        raise Refused("archive_absolute_path", path=_shown(name))
    if ".." in name.split("/"):
        raise Refused("archive_parent_path", path=_shown(name))
    extraction.check_name(name)
    type_ = _TYPES.get(info.type)
    if type_ is None:
        kind = _OTHER_TYPES.get(info.type, "unknown")
        shown_type = info.type.decode("latin-1") if info.type.isalnum() else repr(info.type)
        raise Refused("archive_member_kind", path=_shown(name), kind=kind, type=shown_type)
    if info.sparse is not None:
        raise Refused("archive_sparse", path=_shown(name), size=info.size)
    if type_ != "f" and info.size:
        raise Refused("archive_header_data", path=_shown(name), size=info.size)
    if type_ != "d" and name.endswith("/"):
        raise Refused("archive_header_slash", path=_shown(name))
    link = ""
    sha256 = ""
    if type_ == "h":
        if info.linkname.startswith("/"):
            raise Refused("archive_absolute_path", path=_shown(info.linkname))
        if ".." in info.linkname.split("/"):
            raise Refused("archive_parent_path", path=_shown(info.linkname))
        extraction.check_name(info.linkname)
        link = _normalise(info.linkname)
    elif type_ == "l":
        link = info.linkname
    elif type_ == "f":
        sha256 = _hash_member(tar, info)
    return ManifestEntry(_normalise(name), type_, info.mode, info.size, sha256, link)


def _shown(text: str) -> str:
    return extraction.shorten(text)


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
                raise Refused("archive_not_tar", error=f"invalid tar header at byte {end}")
            position = end + len(block)
        if piece.count(0) != len(piece):
            offset = position + len(piece) - len(piece.lstrip(b"\0"))
            raise Refused(
                "archive_not_tar",
                error=f"unexpected data after the end of the tar archive at byte {offset}",
            )
        position += len(piece)
    if len(block) < BLOCK:
        raise Refused("archive_truncated", compression=compression)


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
