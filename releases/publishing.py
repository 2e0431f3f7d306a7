"""Place a build's four files in the puppet content folder, atomically and never overwriting.

School servers rsync that folder daily and act on whatever they find there: a file shows up
under its final name only complete and fsynced, `.name` shows up last, and a file that is
already there is never replaced. Pure file I/O: no ORM, no settings; every path and limit is
an argument.
"""

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .files import fsync_dir as _fsync_dir
from .files import fsync_file as _fsync_file
from .files import os_errno as _errno
from .reasons import Refused

CHUNK_SIZE = 1024 * 1024
SPACE_MARGIN = 1024 * 1024

Progress = Callable[[int, int], None]

# Errors meaning "this pair of paths cannot share an inode", as opposed to a real failure.
_NO_HARD_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def file_md5(path: Path | str, progress: Progress | None = None) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks; `progress(done, total)` after each."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        done = 0
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def md5_file_bytes(md5: str, tarball_name: str) -> bytes:
    """What `<archive>.md5` holds: one `md5sum` line, as the school server checks it."""
    return f"{md5}  {tarball_name}\n".encode()


def name_file_bytes(name: str) -> bytes:
    """What `<name>.name` holds: the build's name and a newline."""
    return f"{name}\n".encode()


def publish_files(
    *,
    dest_dir: Path,
    name: str,
    tarball: Path,
    tarball_name: str,
    md5: str,
    contents: Path,
    contents_name: str,
    progress: Progress | None = None,
    stale_temps_after: float = 300,
) -> list[str]:
    """Place the build's files in `dest_dir` and return their basenames, in this order:

    1. `tarball_name`, hard-linked from `tarball` (copied if that is impossible), its MD5
       checked against `md5` before it gets its final name;
    2. `contents_name`, copied from `contents`;
    3. `<tarball_name>.md5`, our own md5sum line for it;
    4. `<name>.name`, last, because its arrival is what makes school servers take the build.

    A file already there with identical content is left alone and counted as placed, so
    publishing the same build again succeeds without changing anything. Any failure raises
    `Refused` (a `publish_*` code) after removing every file this call placed.
    """
    dest_dir, tarball, contents = Path(dest_dir), Path(tarball), Path(contents)
    md5_name = f"{tarball_name}.md5"
    name_name = f"{name}.name"
    names = [tarball_name, contents_name, md5_name, name_name]
    for basename in names:
        _check_basename(basename)
    expected = md5.lower()
    if len(expected) != 32 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"not an MD5 hex digest: {md5!r}")
    md5_data = md5_file_bytes(md5, tarball_name)
    name_data = name_file_bytes(name)

    tarball_st = _source_stat(tarball, tarball_name)
    contents_st = _source_stat(contents, contents_name)
    placement = _Placement(dest_dir)

    def tarball_identity(path: Path) -> str | None:
        return _tarball_identity(path, tarball_st, expected, progress)

    small_files = [
        (contents_name, contents_st.st_size, lambda p: _same_as_file(p, contents)),
        (md5_name, len(md5_data), lambda p: _same_as_bytes(p, md5_data)),
        (name_name, len(name_data), lambda p: _same_as_bytes(p, name_data)),
    ]

    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest_dir, names, stale_temps_after)

        # All four names are checked before anything is written, so a conflict leaves the
        # folder exactly as it was; the cheap comparisons go first.
        found: set[str] = set()
        for basename, _size, identical in small_files:
            path = dest_dir / basename
            if os.path.lexists(path):
                if not identical(path):
                    raise Refused("publish_conflict", file=basename)
                found.add(basename)
        tarball_path = dest_dir / tarball_name
        tarball_verified = False
        if os.path.lexists(tarball_path):
            identity = tarball_identity(tarball_path)
            if identity is None:
                raise Refused("publish_conflict", file=tarball_name)
            found.add(tarball_name)
            tarball_verified = identity == "md5"

        if len(found) < len(names):
            needed = SPACE_MARGIN + sum(size for n, size, _ in small_files if n not in found)
            if tarball_name not in found and not _same_filesystem(tarball_st, os.stat(dest_dir)):
                needed += tarball_st.st_size
            free = shutil.disk_usage(dest_dir).free
            if needed > free:
                raise Refused("publish_no_space", needed=needed, free=free)

        if tarball_name not in found:
            tmp = placement.temp_path(tarball_name)
            _link_or_copy(tarball, tmp, tarball_name)
            # Verified under the temporary name (the same inode the final name will get), so
            # a damaged archive never appears under a name school servers would check.
            _verify_md5(tmp, expected, progress)
            placement.commit(tmp, tarball_name, lambda p: tarball_identity(p) is not None)
        elif not tarball_verified:
            # Same inode as the store copy: identical, but nobody has checked it in place yet.
            _verify_md5(tarball_path, expected, progress)

        for basename, _size, identical in small_files:
            if basename in found:
                continue
            tmp = placement.temp_path(basename)
            if basename == contents_name:
                _copy(contents, tmp, contents_name)
            else:
                _write_new(tmp, [md5_data if basename == md5_name else name_data])
            placement.commit(tmp, basename, identical)
    except OSError as exc:
        # Free space is measured before the cleanup frees what this call wrote, so the
        # reason describes the disk as it was when the write failed.
        rejection = _rejection(exc, dest_dir, tarball_st.st_size + contents_st.st_size)
        placement.rollback()
        raise rejection from exc
    except BaseException:
        placement.rollback()
        raise
    return names


def unpublish_files(
    *, dest_dir: Path, name: str, tarball_name: str, contents_name: str
) -> list[str]:
    """Remove a build's files, `.name` first so school servers stop taking it before the rest
    goes; files already gone are skipped. Returns the basenames actually removed."""
    dest_dir = Path(dest_dir)
    removed = []
    try:
        for basename in (f"{name}.name", f"{tarball_name}.md5", tarball_name, contents_name):
            _check_basename(basename)
            try:
                os.unlink(dest_dir / basename)
            except FileNotFoundError:
                continue
            removed.append(basename)
            if len(removed) == 1:
                # Make the retirement durable before the files it announces disappear.
                _fsync_dir(dest_dir)
        if removed:
            _fsync_dir(dest_dir)
    except OSError as exc:
        raise _rejection(exc, dest_dir, 0) from exc
    return removed


class _Placement:
    """What one publication has put on disk, so a failure can take back exactly that."""

    def __init__(self, dest_dir: Path):
        self.dest_dir = dest_dir
        self.placed: list[Path] = []
        self.temps: set[Path] = set()

    def temp_path(self, basename: str) -> Path:
        # Hidden and ending in random hex: no school-server pattern (-tree.tar.*, .md5,
        # .name, .contents) can match it.
        path = self.dest_dir / f".{basename}.tmp-{secrets.token_hex(8)}"
        self.temps.add(path)
        return path

    def commit(self, tmp: Path, basename: str, identical: Callable[[Path], bool]) -> None:
        final = self.dest_dir / basename
        try:
            # link() fails if the name exists, unlike rename(): another writer's file that
            # appeared since the up-front check is never replaced.
            os.link(tmp, final)
        except FileExistsError:
            if not identical(final):
                raise Refused("publish_conflict", file=basename) from None
        else:
            self.placed.append(final)
        finally:
            self.discard(tmp)
        _fsync_dir(self.dest_dir)

    def discard(self, tmp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        self.temps.discard(tmp)

    def rollback(self) -> None:
        # Best effort: the original error is what the caller needs to see.
        for path in [*self.temps, *reversed(self.placed)]:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.temps.clear()
        self.placed.clear()
        with contextlib.suppress(OSError):
            _fsync_dir(self.dest_dir)


def _remove_stale_temps(dest_dir: Path, names: list[str], stale_after: float) -> None:
    """Remove temporary files an earlier attempt at this build left behind (its worker was
    killed mid-copy): exactly our own temporary names for this build's files, and only
    those nobody has written to for `stale_after` seconds (the sweeper's
    SWEEPER_STALE_AFTER). A publisher that is merely slow (the sweeper may have re-queued
    its build) is still writing its file, so it is left alone; a full-size stale copy would
    otherwise stay there for good."""
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(basename) for basename in names) + r")\.tmp-[0-9a-f]{16}"
    )
    stale_before = time.time() - stale_after
    for entry in os.scandir(dest_dir):
        if pattern.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < stale_before:
                    os.unlink(entry.path)


def _write(fd: int, data: bytes) -> None:
    """The one place bytes reach a published file (tests inject disk errors here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_new(path: Path, chunks: Iterable[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for chunk in chunks:
            _write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source: Path, tmp: Path, basename: str) -> None:
    try:
        f = open(source, "rb")  # noqa: SIM115 - opened apart to tell a missing source apart
    except FileNotFoundError:
        raise Refused("publish_source_missing", file=basename) from None
    with f:
        _write_new(tmp, iter(lambda: f.read(CHUNK_SIZE), b""))


def _link_or_copy(source: Path, tmp: Path, basename: str) -> None:
    try:
        os.link(source, tmp)
    except FileNotFoundError:
        if not source.exists():
            raise Refused("publish_source_missing", file=basename) from None
        raise
    except OSError as exc:
        if _errno(exc) not in _NO_HARD_LINK:
            raise
        _copy(source, tmp, basename)
    else:
        _fsync_file(tmp)


def _verify_md5(path: Path, expected: str, progress: Progress | None) -> None:
    actual = file_md5(path, progress)
    if actual != expected:
        raise Refused("publish_md5_mismatch", actual=actual, expected=expected)


def _tarball_identity(
    path: Path, source_st: os.stat_result, expected: str, progress: Progress | None
) -> str | None:
    """Whether `path` is the build's archive: "inode" (the store file itself), "md5" (an
    identical copy, now verified) or None (something else)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return None
    if (st.st_dev, st.st_ino) == (source_st.st_dev, source_st.st_ino):
        return "inode"
    if st.st_size == source_st.st_size and file_md5(path, progress) == expected:
        return "md5"
    return None


def _same_as_bytes(path: Path, data: bytes) -> bool:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
        return False
    with open(path, "rb") as f:
        return f.read(len(data) + 1) == data


def _same_as_file(path: Path, source: Path) -> bool:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != os.stat(source).st_size:
        return False
    with open(path, "rb") as a, open(source, "rb") as b:
        while True:
            chunk = a.read(CHUNK_SIZE)
            if chunk != b.read(CHUNK_SIZE):
                return False
            if not chunk:
                return True


def _same_filesystem(source_st: os.stat_result, dir_st: os.stat_result) -> bool:
    return source_st.st_dev == dir_st.st_dev


def _source_stat(path: Path, basename: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise Refused("publish_source_missing", file=basename) from None


def _check_basename(basename: str) -> None:
    # These names are joined onto the shared folder: a separator would write outside it.
    if not basename or basename in (".", "..") or "/" in basename or "\0" in basename:
        raise ValueError(f"not a file name: {basename!r}")


def _rejection(exc: OSError, dest_dir: Path, needed: int) -> Refused:
    code = _errno(exc)
    if code in _OUT_OF_SPACE:
        try:
            free = shutil.disk_usage(dest_dir).free
        except OSError:
            free = 0
        return Refused("publish_no_space", needed=needed, free=free)
    error = exc.strerror or (os.strerror(code) if code is not None else str(exc))
    if exc.filename:
        error = f"{error}: {exc.filename}"
    return Refused("publish_io_error", error=error)
