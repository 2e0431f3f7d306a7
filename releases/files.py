"""Durable file writes shared by the upload, publication and deployment code.

Pure file I/O: no ORM, no settings.
"""

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """Make a rename or unlink in `path` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str | None) -> None:
    """Replace `path` with `text` (None: remove it): temp file in the same folder, fsync,
    rename, fsync the folder. Readers see the old file or the new one, never a mix. The new
    file keeps the old one's mode (0644 when there was none)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    fsync_dir(folder)


def os_errno(exc: OSError) -> int | None:
    """The error number of `exc`; OSError(errno.ENOSPC) built with a single argument (as
    tests and some libraries raise it) leaves .errno unset."""
    if exc.errno is not None:
        return exc.errno
    if len(exc.args) == 1 and isinstance(exc.args[0], int):
        return exc.args[0]
    return None
