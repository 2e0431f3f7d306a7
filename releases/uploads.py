"""Receiving build files: streamed to disk with their checksums computed on the way in.

`HashingUploadHandler` replaces Django's upload handlers for the upload form and the API:
each file goes straight into `UPLOAD_TEMP_DIR` (same filesystem as the build store, so it
is later renamed, not copied) while md5 and sha256 are updated chunk by chunk. Memory stays
flat whatever the size, and nothing reads the file a second time.
"""

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload

FIELDS = ("tarball", "md5", "contents")
CHUNK = 1024 * 1024
# Chunks in flight per lane: bounds memory to a few MiB whatever the upload size.
LANE_DEPTH = 8
WRITEBACK_EVERY = 32 * 1024 * 1024
# Direct writes go a whole aligned buffer at a time (a multiple of any disk's block size).
DIRECT_BUFFER = 1024 * 1024
MD5_FILE_LIMIT = 64 * 1024
ABANDONED_UPLOAD_AFTER = 3600


def field_limits() -> dict[str, int]:
    return {
        "tarball": settings.MAX_BUILD_BYTES,
        "md5": MD5_FILE_LIMIT,
        "contents": settings.MAX_CONTENTS_BYTES,
    }


def request_size_limit() -> int:
    # The three files plus generous room for the multipart framing and small fields.
    return sum(field_limits().values()) + 1024 * 1024


@dataclass
class StagedFile:
    """A file on disk with what we learned while writing it."""

    path: Path
    original_name: str
    size: int
    md5: str
    sha256: str

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Lane(threading.Thread):
    """Applies `work` to every chunk handed to it, on its own thread. hashlib and file
    writes release the GIL, so md5, sha256 + write and the request parsing overlap on
    separate cores instead of running one after the other."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work = work
        self.chunks: queue.Queue = queue.Queue(LANE_DEPTH)
        self.error: BaseException | None = None

    def run(self):
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.work(chunk)
                except BaseException as exc:  # handed to the writer, which raises it
                    self.error = exc

    def put(self, chunk):
        self.chunks.put(chunk)

    def close(self):
        self.chunks.put(None)
        self.join()


class _Sink:
    """The staged file's descriptor, written with O_DIRECT where the filesystem allows it.

    Direct writes skip the page cache: no copy of every byte into it, no gigabyte of dirty
    pages for the final fsync to wait for, and a multi-GB upload does not push everything
    else out of memory. O_DIRECT needs whole, aligned blocks, so bytes are gathered into an
    aligned buffer (mmap memory is page aligned) and written a buffer at a time; the tail,
    and everything after any surprise (a filesystem refusing direct writes, a short write),
    is written the ordinary way, with writeback started every WRITEBACK_EVERY bytes so the
    final fsync does not wait for the whole file."""

    def __init__(self, fd: int):
        self.fd = fd
        self.written = 0
        self.flushed = 0
        self.buffer = None
        self.filled = 0
        direct = getattr(os, "O_DIRECT", 0)
        if direct:
            # The buffer first: the flag is only set once direct writes can be made.
            buffer = mmap.mmap(-1, DIRECT_BUFFER)
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | direct)
            except OSError:
                buffer.close()
            else:
                self.buffer = buffer

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.buffer is not None:
            take = min(len(view), DIRECT_BUFFER - self.filled)
            self.buffer[self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == DIRECT_BUFFER:
                self._write_buffer()  # may end direct writes: the rest is written below
        if view:
            self._write_all(view)

    def _write_buffer(self):
        try:
            done = os.write(self.fd, self.buffer)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            done = 0  # the filesystem took the flag but not the write: write it normally
        self.written += done
        if done != len(self.buffer):
            self._write_rest_ordinarily(done, self.filled)
        self.filled = 0

    def _stop_direct(self):
        """From here on, ordinary writes: keeps what is in the buffer to write next."""
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        buffer, self.buffer = self.buffer, None
        return buffer

    def _write_all(self, view: memoryview) -> None:
        while view:
            done = os.write(self.fd, view)
            view = view[done:]
            self.written += done
        if self.written - self.flushed >= WRITEBACK_EVERY:
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(
                    self.fd, self.flushed, self.written - self.flushed, os.POSIX_FADV_DONTNEED
                )
            self.flushed = self.written

    def _write_rest_ordinarily(self, start: int, end: int) -> None:
        """Ends direct writes, then writes buffer[start:end] the ordinary way."""
        buffer = self._stop_direct()
        try:
            self._write_all(memoryview(buffer)[start:end])
        finally:
            # After a failed write the traceback may still hold a view of it: then the
            # garbage collector unmaps it instead.
            with contextlib.suppress(BufferError):
                buffer.close()

    def finish(self, *, sync: bool = True) -> None:
        if self.buffer is not None:
            self._write_rest_ordinarily(0, self.filled)
        if sync:
            os.fsync(self.fd)

    def close(self) -> None:
        """Idempotent: an abort after a failed finish closes nothing twice."""
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HashingWriter:
    """Writes a temporary file in `folder` and hashes every byte written.

    Two lanes: md5 on one, sha256 and the write on the other (bounded queues: memory stays
    at a few MiB)."""

    def __init__(self, folder: Path, limit: int):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-")
        self.sink = _Sink(fd)
        self.path = Path(name)
        self.limit = limit
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.lanes = [_Lane(self.md5.update), _Lane(self._hash_and_write)]
        for lane in self.lanes:
            lane.start()

    def _hash_and_write(self, data: bytes):
        self.sha256.update(data)
        self.sink.write(data)

    def _raise_lane_error(self):
        for lane in self.lanes:
            if lane.error is not None:
                raise lane.error

    def write(self, data: bytes) -> bool:
        """False, with nothing written, once the limit would be passed."""
        if self.size + len(data) > self.limit:
            return False
        self._raise_lane_error()
        data = bytes(data)  # the caller may reuse its buffer
        for lane in self.lanes:
            lane.put(data)
        self.size += len(data)
        return True

    def _stop_lanes(self):
        for lane in self.lanes:
            lane.close()

    def finish(self, original_name: str) -> StagedFile:
        self._stop_lanes()
        try:
            self._raise_lane_error()
            self.sink.finish()
        except BaseException:
            self.sink.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            raise
        self.sink.close()
        return StagedFile(
            path=self.path,
            original_name=original_name,
            size=self.size,
            md5=self.md5.hexdigest(),
            sha256=self.sha256.hexdigest(),
        )

    def abort(self) -> None:
        self._stop_lanes()
        self.sink.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def stage_local_file(source: Path, original_name: str, limit: int) -> StagedFile:
    """Copy a file already on disk (the CLI import) into the upload folder, hashing it on the
    way; one read of the source, one write."""
    writer = HashingWriter(Path(settings.UPLOAD_TEMP_DIR), limit)
    try:
        with open(source, "rb") as handle:
            while chunk := handle.read(CHUNK):
                if not writer.write(chunk):
                    writer.abort()
                    raise OverflowError(original_name)
        return writer.finish(original_name)
    except BaseException:
        writer.abort()
        raise


class StagedUpload(UploadedFile):
    """What `request.FILES` holds for our fields: the staged file, already hashed."""

    def __init__(self, staged: StagedFile, content_type: str):
        super().__init__(
            file=None, name=staged.original_name, content_type=content_type, size=staged.size
        )
        self.staged = staged

    def temporary_file_path(self):
        return str(self.staged.path)

    def open(self, mode="rb"):
        self.file = open(self.staged.path, mode)  # noqa: SIM115 - closed by UploadedFile
        return self

    def close(self):
        if self.file is not None:
            self.file.close()


@dataclass(frozen=True)
class UploadProblem:
    """Why the upload handler stopped reading a request: `kind` is "too_large" (the field's
    file, or the whole request as "tarball", is over its limit) or "io_error" (the disk
    refused it; `error` says how)."""

    kind: str
    field: str
    error: str = ""

    @property
    def http_status(self) -> int:
        return 413 if self.kind == "too_large" else 507


class HashingUploadHandler(FileUploadHandler):
    """Streams the build's three files to disk and records a problem on the request
    (`request.upload_problem`) instead of raising, so the view can answer precisely."""

    chunk_size = CHUNK

    def __init__(self, request=None):
        super().__init__(request)
        self.writer = None
        self.limits = field_limits()
        request.upload_problem = None
        request.staged_files = []

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > request_size_limit():
            self.request.upload_problem = UploadProblem("too_large", "tarball")
            raise StopUpload(connection_reset=True)

    def new_file(self, field_name, file_name, content_type, content_length, *args, **kwargs):
        super().new_file(field_name, file_name, content_type, content_length, *args, **kwargs)
        if field_name not in self.limits:
            raise SkipFile
        self.writer = HashingWriter(Path(settings.UPLOAD_TEMP_DIR), self.limits[field_name])

    def _stop(self, problem):
        self.writer.abort()
        self.writer = None
        self.request.upload_problem = problem
        raise StopUpload(connection_reset=True)

    def receive_data_chunk(self, raw_data, start):
        try:
            accepted = self.writer.write(raw_data)
        except OSError as exc:  # disk full, I/O error: nothing kept, a clear message
            self._stop(UploadProblem("io_error", self.field_name, exc.strerror or str(exc)))
        if not accepted:
            self._stop(UploadProblem("too_large", self.field_name))
        return None

    def file_complete(self, file_size):
        try:
            staged = self.writer.finish(os.path.basename(self.file_name or ""))
        except OSError as exc:
            self.writer = None
            self.request.upload_problem = UploadProblem(
                "io_error", self.field_name, exc.strerror or str(exc)
            )
            raise StopUpload(connection_reset=True) from exc
        self.writer = None
        self.request.staged_files.append(staged)
        return StagedUpload(staged, self.content_type)

    def upload_interrupted(self):
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def remove_abandoned(folder: Path, *, now: float) -> int:
    """Remove staged files nobody has written to for ABANDONED_UPLOAD_AFTER seconds: what a
    web process killed in the middle of an upload left behind (a live upload writes at
    least every MiB). Returns how many were removed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(".upload-"):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > ABANDONED_UPLOAD_AFTER:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def discard_staged(request) -> None:
    """Remove whatever the handler staged and the service did not take."""
    for staged in getattr(request, "staged_files", []):
        staged.discard()


def error_field(code: str, params: dict) -> str:
    """Which form field a rejection belongs to, so the message appears beside it."""
    if code in ("file_empty", "file_missing"):
        return params.get("field", "__all__")
    if code in ("tarball_name", "too_large") or code.startswith("upload_"):
        return "tarball"
    for prefix, field in (
        ("name_", "name"),
        ("md5_", "md5"),
        ("hash_", "contents_hash"),
        ("contents_", "contents"),
    ):
        if code.startswith(prefix):
            return field
    return "__all__"
