"""Resumable uploads: the build archive arrives in chunks, so a link that drops at 90 % of a
gigabyte goes on from the last chunk the portal holds (after a network drop, a browser
reload, or a restart of the portal) instead of starting over.

The protocol (the upload page's script and `releases/client/xo-upload` speak it; the views
are `views.upload_start` / `upload_chunk` and their `/api/uploads/` twins):

1. `upload_start`: the file's name and size (and the sha256 of its first chunk). An
   unfinished upload of the same user, name, size and first chunk is resumed; otherwise a
   new one starts. The answer says how many bytes the portal already holds.
2. `upload_append`: `PUT` one chunk at the offset the portal holds, with its sha256. The
   bytes are written and hashed into the running md5 and sha256 (their state is kept in
   the row: `releases.hashstate`), then the row moves on. The row is the truth: a chunk
   that was written but not recorded is cut off before the next one. Chunks are not
   fsynced one by one (that cost a third of the upload's time): the whole file is, once,
   in step 3, as a one-request upload's is. If the host goes down before the disk has a
   chunk the row counts, the file is shorter than the row says and the upload starts
   again; and publication re-reads the archive for its md5 in any case.
3. `upload_finish`: once every byte is held, the archive is a `StagedFile` with its
   checksums, taken by `services.build_create` exactly as a one-request upload is. A
   refused build (a wrong .md5, a name already used) leaves the upload to be used again.

Nothing here is audited: an upload is not a build until `build_create` makes it one.
"""

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .hashstate import ResumableHash
from .models import ResumableUpload
from .reasons import Refused
from .services import TARBALL_RE
from .uploads import CHUNK, StagedFile, _Lane, _Sink

SHA256_HEX = 64
FILENAME_MAX = 255  # Build.original_filename and ResumableUpload.filename
# An upload nobody has sent to for this long may be given up for a new one of its user's.
EVICT_IDLE_AFTER = 600


def upload_start(
    *, acting_user, filename: str, size: int, first_chunk_sha256: str = ""
) -> ResumableUpload:
    """The unfinished upload of this file to go on with, or a new one.

    1. The name must be a build archive's and the size within MAX_BUILD_BYTES.
    2. An upload of the same user, name and size whose first chunk has the same sha256 (or
       that holds nothing yet) is resumed.
    3. Otherwise a new one starts. At UPLOAD_RESUME_MAX_OPEN, the user's upload left alone
       longest (over EVICT_IDLE_AFTER) gives way, or the start is refused. The disk must
       have room for the whole file besides what every unfinished upload still needs.
    """
    filename = os.path.basename(filename or "")
    if (
        not TARBALL_RE.match(filename)
        or len(filename) > FILENAME_MAX
        or any(ord(c) < 32 or ord(c) == 127 for c in filename)
    ):
        raise Refused("tarball_name", file=filename[:FILENAME_MAX])
    if size <= 0:
        raise Refused("file_empty", field="tarball", file=filename)
    if size > settings.MAX_BUILD_BYTES:
        raise Refused("too_large", limit=settings.MAX_BUILD_BYTES)
    fingerprint = (first_chunk_sha256 or "").strip().lower()
    if fingerprint and not _is_sha256(fingerprint):
        raise Refused("upload_digest_format", value=fingerprint[:80])

    now = timezone.now()
    mine = ResumableUpload.objects.filter(user=acting_user)
    for upload in mine.filter(filename=filename, size=size).order_by("-received", "-updated_at"):
        if upload.received == 0 or not fingerprint or upload.first_chunk_sha256 == fingerprint:
            upload.updated_at = now  # resumed: a new UPLOAD_RESUME_TTL from now
            if fingerprint and not upload.first_chunk_sha256:
                upload.first_chunk_sha256 = fingerprint
            upload.save(update_fields=["updated_at", "first_chunk_sha256"])
            return upload

    if mine.count() >= settings.UPLOAD_RESUME_MAX_OPEN:
        # Starting another means giving up the one left alone longest, if nobody is sending
        # to it (a build machine may be uploading beside the browser).
        idle = mine.filter(updated_at__lt=now - timedelta(seconds=EVICT_IDLE_AFTER)).last()
        if idle is None:
            raise Refused("upload_too_many", limit=settings.UPLOAD_RESUME_MAX_OPEN)
        upload_discard(upload=idle)
    folder = Path(settings.UPLOAD_TEMP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    # The disk must hold this archive and what the other unfinished uploads still need.
    promised = sum(
        total - held
        for total, held in ResumableUpload.objects.filter(received__lt=F("size")).values_list(
            "size", "received"
        )
    )
    free = shutil.disk_usage(folder).free
    if free - promised < size:
        raise Refused("upload_no_space", size=size, free=max(free - promised, 0))
    upload = ResumableUpload(
        id=secrets.token_urlsafe(18),
        user=acting_user,
        filename=filename,
        size=size,
        md5_state=ResumableHash("md5").state(),
        sha256_state=ResumableHash("sha256").state(),
        first_chunk_sha256=fingerprint,
    )
    # The file first: a row always has its file (the sweeper removes a file left alone).
    fd = os.open(upload.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        upload.save(force_insert=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(upload.path)
        raise
    return upload


def upload_get(*, acting_user, upload_id: str) -> ResumableUpload:
    upload = ResumableUpload.objects.filter(pk=upload_id, user=acting_user).first()
    if upload is None:
        raise Refused("upload_unknown")
    return upload


def upload_claim(*, acting_user, upload_id: str) -> ResumableUpload:
    """For the caller's transaction that makes a build of the upload: the row locked (a
    second request for the same upload waits, then finds it gone) and its time renewed, so
    the sweeper leaves it alone meanwhile."""
    upload = (
        ResumableUpload.objects.select_for_update().filter(pk=upload_id, user=acting_user).first()
    )
    if upload is None:
        raise Refused("upload_unknown")
    upload.updated_at = timezone.now()
    upload.save(update_fields=["updated_at"])
    return upload


class _ChunkWriter:
    """Appends one chunk to the upload's file at `offset`: md5 on one lane, sha256, the
    chunk's own sha256 and the write on the other (as `uploads.HashingWriter` does)."""

    def __init__(self, fd: int, upload: ResumableUpload):
        self.md5 = ResumableHash.from_state("md5", upload.md5_state)
        self.sha256 = ResumableHash.from_state("sha256", upload.sha256_state)
        self.chunk = hashlib.sha256()
        self.sink = _Sink(fd)
        self.lanes = [_Lane(self.md5.update), _Lane(self._hash_and_write)]
        for lane in self.lanes:
            lane.start()

    def _hash_and_write(self, data):
        self.sha256.update(data)
        self.chunk.update(data)
        self.sink.write(data)

    def write(self, data: bytes) -> None:
        for lane in self.lanes:
            if lane.error is not None:
                raise lane.error
            lane.put(data)

    def finish(self) -> None:
        """Stops the lanes; raises what a lane met; fsyncs what was written."""
        for lane in self.lanes:
            lane.close()
        for lane in self.lanes:
            if lane.error is not None:
                raise lane.error
        self.sink.finish(sync=False)  # upload_finish syncs the whole file once

    def close(self) -> None:
        for lane in self.lanes:
            if lane.is_alive():
                lane.close()
        # The descriptor belongs to upload_append, which closes it (and its lock) itself.
        self.sink.fd = -1
        if self.sink.buffer is not None:
            self.sink.buffer.close()
            self.sink.buffer = None


def upload_append(
    *,
    acting_user,
    upload_id: str,
    start: int,
    total: int,
    length: int,
    chunk_sha256: str,
    stream,
) -> ResumableUpload:
    """Write `length` bytes read from `stream` at `start`, if they are the next ones.

    1. The chunk must fit the upload (`total` is its size) and be at most
       UPLOAD_CHUNK_MAX_BYTES. A chunk the portal already holds is not read again (a retry
       after a lost answer), and one past what it holds is refused with the offset to send.
    2. An exclusive lock on the file: one writer at a time per upload.
    3. The file is cut back to what the row says it holds, the chunk is written, hashed and
       fsynced; a chunk whose sha256 is not the one announced is cut off again.
    4. The row moves on only if it still holds what it held at 1 (conditional update).
    """
    upload = upload_get(acting_user=acting_user, upload_id=upload_id)
    if not _is_sha256(chunk_sha256):
        raise Refused("upload_digest_format", value=(chunk_sha256 or "")[:80])
    if total != upload.size or start < 0 or length <= 0 or start + length > upload.size:
        raise Refused(
            "upload_range", start=start, end=start + length - 1, total=total, size=upload.size
        )
    if length > settings.UPLOAD_CHUNK_MAX_BYTES:
        raise Refused("upload_chunk_too_large", limit=settings.UPLOAD_CHUNK_MAX_BYTES)
    if start + length <= upload.received:
        return upload  # already held: the client did not hear the answer the first time
    if start != upload.received:
        raise Refused("upload_offset", offset=upload.received)

    try:
        fd = os.open(upload.path, os.O_WRONLY)
    except FileNotFoundError:
        ResumableUpload.objects.filter(pk=upload.pk).delete()
        raise Refused("upload_lost") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused("upload_busy") from None
        try:
            upload.refresh_from_db()
        except ResumableUpload.DoesNotExist:
            raise Refused("upload_unknown") from None
        if start != upload.received:
            raise Refused("upload_offset", offset=upload.received)
        if os.fstat(fd).st_size < start:
            # Bytes the row counts are gone (the host went down before they reached the
            # disk): what is left cannot be trusted, so the upload starts again.
            upload_discard(upload=upload)
            raise Refused("upload_lost")
        os.ftruncate(fd, start)
        os.lseek(fd, start, os.SEEK_SET)
        _write_chunk(fd, upload, stream, length, chunk_sha256.lower())
    finally:
        os.close(fd)
    return upload


def _write_chunk(fd, upload, stream, length, expected):
    writer = _ChunkWriter(fd, upload)
    start = upload.received
    try:
        left = length
        while left:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise Refused("upload_interrupted", received=length - left, length=length)
            writer.write(data)
            left -= len(data)
        writer.finish()
        actual = writer.chunk.hexdigest()
        if actual != expected:
            raise Refused("upload_chunk_digest", expected=expected, actual=actual)
    except BaseException:
        _cut_back(fd, start)
        raise
    finally:
        writer.close()
    moved = {
        "received": start + length,
        "md5_state": writer.md5.state(),
        "sha256_state": writer.sha256.state(),
        "updated_at": timezone.now(),
    }
    if not ResumableUpload.objects.filter(pk=upload.pk, received=start).update(**moved):
        raise Refused("upload_unknown")  # removed by the sweeper (or by its user) meanwhile
    for name, value in moved.items():
        setattr(upload, name, value)


def _cut_back(fd: int, size: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)


def upload_finish(*, upload: ResumableUpload) -> StagedFile:
    """The whole archive as a staged file with its checksums, computed while it arrived."""
    if not upload.complete:
        raise Refused("upload_incomplete", received=upload.received, size=upload.size)
    try:
        on_disk = os.stat(upload.path).st_size
    except FileNotFoundError:
        on_disk = None
    if on_disk != upload.size:
        upload_discard(upload=upload)
        raise Refused("upload_lost")
    fd = os.open(upload.path, os.O_RDONLY)
    try:
        os.fsync(fd)  # on disk before it becomes a build, as a one-request upload is
    finally:
        os.close(fd)
    return StagedFile(
        path=upload.path,
        original_name=upload.filename,
        size=upload.size,
        md5=ResumableHash.from_state("md5", upload.md5_state).hexdigest(),
        sha256=ResumableHash.from_state("sha256", upload.sha256_state).hexdigest(),
    )


def upload_discard(*, upload: ResumableUpload) -> None:
    """Forget the upload and remove what it held (its file may already be a build's)."""
    ResumableUpload.objects.filter(pk=upload.pk).delete()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(upload.path)


def sweep_resumable(*, now) -> int:
    """Remove uploads nobody added to for UPLOAD_RESUME_TTL, and `.resume-` files that no
    row names (a start killed between the file and the row) once as old. Returns how many."""
    cutoff = now - timedelta(seconds=settings.UPLOAD_RESUME_TTL)
    removed = 0
    for upload in ResumableUpload.objects.filter(updated_at__lt=cutoff):
        removed += _discard_if_idle(upload, cutoff)
    known = {f".resume-{pk}" for pk in ResumableUpload.objects.values_list("pk", flat=True)}
    with contextlib.suppress(FileNotFoundError), os.scandir(settings.UPLOAD_TEMP_DIR) as entries:
        for entry in entries:
            if not entry.name.startswith(".resume-") or entry.name in known:
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff.timestamp():
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _discard_if_idle(upload: ResumableUpload, cutoff) -> int:
    """Remove an expired upload unless a chunk is being written to it (its lock is held) or
    it was resumed since it was selected. Returns 1 if removed."""
    try:
        fd = os.open(upload.path, os.O_WRONLY)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
        if not ResumableUpload.objects.filter(pk=upload.pk, updated_at__lt=cutoff).delete()[0]:
            return 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(upload.path)
        return 1
    finally:
        if fd is not None:
            os.close(fd)


def _is_sha256(value) -> bool:
    return (
        isinstance(value, str)
        and len(value) == SHA256_HEX
        and all(c in "0123456789abcdef" for c in value.lower())
    )
