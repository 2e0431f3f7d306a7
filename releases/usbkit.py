"""A build's USB kit: the folder `xs-xobuilds/` that a school server off the network takes
from the root of a USB stick, as one tar stream or written into a mounted folder.

The school server's USB path wants the build's four published files and `manifest.sha1` as
`sha1sum *` writes it inside that folder: `<40 hex>  <name>` lines in the C locale's order
of `*`, the manifest not listed in itself; optionally `manifest.sha1.sig`. The tar stream
puts the manifest (and signature) first and its length is plain arithmetic, so a
multi-GB kit goes out in constant memory with its Content-Length known before the first
byte; that is why every SHA-1 must be known before streaming starts (`usb.kit_for` keeps
the archive's on the build). Pure file I/O: no ORM, no settings.
"""

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .files import fsync_dir
from .files import os_errno as _errno
from .reasons import Refused

FOLDER = "xs-xobuilds"
MANIFEST = "manifest.sha1"
SIGNATURE = "manifest.sha1.sig"
CHUNK_SIZE = 1024 * 1024
BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default record: the stream ends on a multiple of it
# Free space asked beyond the bytes themselves: FAT sticks round every file up to a
# cluster (up to 64 KiB), and the folder entry needs room too.
SPACE_MARGIN = 1024 * 1024
CLUSTER = 64 * 1024

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class KitFile:
    """One published file: where to read it, and what it must be."""

    name: str
    path: Path
    size: int
    sha1: str


@dataclass(frozen=True)
class Kit:
    files: tuple[KitFile, ...]  # in the order of `sha1sum *` (C locale)
    manifest: bytes
    signature: bytes | None = None
    mtime: int = 0  # of every tar member, so one build's kit is the same bytes every time

    @property
    def extras(self) -> list[tuple[str, bytes]]:
        """The files the kit adds to the published ones, as (name, bytes)."""
        extras = [(MANIFEST, self.manifest)]
        if self.signature is not None:
            extras.append((SIGNATURE, self.signature))
        return extras

    @property
    def names(self) -> list[str]:
        return [name for name, _data in self.extras] + [item.name for item in self.files]


class KitChanged(RuntimeError):
    """A published file stopped matching the kit while it was being streamed. Raised before
    the file's last chunk goes out, so the download fails instead of ending well."""


def c_sorted(names) -> list[str]:
    """The order of the shell's `*` in the C locale: by bytes."""
    return sorted(names, key=lambda name: name.encode())


def manifest_bytes(files) -> bytes:
    """What `sha1sum *` prints for `files` (the names need no escaping: see `make_kit`)."""
    by_name = {item.name: item for item in files}
    return "".join(f"{by_name[name].sha1}  {name}\n" for name in c_sorted(by_name)).encode()


def make_kit(files, *, signature: bytes | None = None, mtime: int = 0) -> Kit:
    files = list(files)
    names = [item.name for item in files]
    for item in files:
        # `*` skips dot files and sha1sum escapes names with a backslash or newline; build
        # file names have neither, and ours must never shadow the manifest.
        if not _NAME.fullmatch(item.name) or item.name in (MANIFEST, SIGNATURE):
            raise ValueError(f"not a kit file name: {item.name!r}")
        if not re.fullmatch(r"[0-9a-f]{40}", item.sha1):
            raise ValueError(f"not a SHA-1 hex digest: {item.sha1!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"a name appears twice: {names}")
    ordered = tuple(sorted(files, key=lambda item: item.name.encode()))
    return Kit(files=ordered, manifest=manifest_bytes(ordered), signature=signature, mtime=mtime)


def file_digests(path: Path | str, *algorithms: str) -> tuple[int, dict[str, str]]:
    """Size and hex digests of a file, in one read."""
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            size += len(chunk)
            for digest in digests.values():
                digest.update(chunk)
    return size, {name: digest.hexdigest() for name, digest in digests.items()}


# --- The tar stream -------------------------------------------------------------------------


def _header(name: str, *, size: int = 0, directory: bool = False, mtime: int = 0) -> bytes:
    info = tarfile.TarInfo(f"{FOLDER}/{name}" if name else f"{FOLDER}/")
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = mtime
    info.uname = info.gname = "root"
    # GNU format: sizes of 8 GiB and more are written in base 256, which GNU tar reads.
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> int:
    return -size % BLOCK


def _members(kit: Kit) -> list[tuple[bytes, int, bytes | KitFile | None]]:
    """(header, data size, data) for each member, in stream order."""
    members = [(_header("", directory=True, mtime=kit.mtime), 0, None)]
    for name, data in kit.extras:
        members.append((_header(name, size=len(data), mtime=kit.mtime), len(data), data))
    for item in kit.files:
        members.append((_header(item.name, size=item.size, mtime=kit.mtime), item.size, item))
    return members


def _ending(length: int) -> int:
    """The two zero blocks that end an archive, padded to a whole record."""
    length += 2 * BLOCK
    return 2 * BLOCK + -length % RECORD


def tar_length(kit: Kit) -> int:
    """The exact length of `tar_stream(kit)`, without reading a file."""
    length = sum(len(header) + size + _padding(size) for header, size, _data in _members(kit))
    return length + _ending(length)


def tar_stream(kit: Kit, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The kit as an uncompressed tar, `xs-xobuilds/` and everything in it, in chunks of at
    most `chunk_size`: memory stays flat however big the archive. Each published file is
    checked against its size and SHA-1 as it goes (`KitChanged`)."""
    length = 0
    for header, size, data in _members(kit):
        yield header
        if isinstance(data, KitFile):
            yield from _checked_chunks(data, chunk_size)
        elif data:
            yield data
        if pad := _padding(size):
            yield bytes(pad)
        length += len(header) + size + pad
    yield bytes(_ending(length))


def _checked_chunks(item: KitFile, chunk_size: int) -> Iterator[bytes]:
    # One chunk is held back until the whole file is checked, so a file that changed never
    # yields a complete member.
    digest = hashlib.sha1(usedforsecurity=False)
    done = 0
    held = b""
    with open(item.path, "rb") as f:
        while done < item.size:
            chunk = f.read(min(chunk_size, item.size - done))
            if not chunk:
                break
            digest.update(chunk)
            done += len(chunk)
            if held:
                yield held
            held = chunk
        longer = f.read(1)
    if done != item.size or longer or digest.hexdigest() != item.sha1:
        raise KitChanged(f"{item.path} no longer matches the kit's manifest")
    if held:
        yield held


# --- Writing the folder ---------------------------------------------------------------------


def write_folder(kit: Kit, dest: Path) -> Path:
    """Write the kit into `dest/xs-xobuilds/` (`dest` is a mounted USB stick) and return
    that folder; every failure raises `Refused` (a `usbkit_*` code) after removing what this
    call wrote, leaving the stick as it was.

    1. `dest` must be a folder; `xs-xobuilds/` in it may hold nothing but this kit's files
       (left alone when identical, so writing the same kit again succeeds);
    2. the free space must hold what is missing;
    3. each file goes under a temporary name, is fsynced, dropped from the page cache and
       read back (its SHA-1 compared) before it gets its name;
    4. the published files first, the manifest last: a kit cut short has no manifest, so no
       school server takes it.
    """
    dest = Path(dest)
    if not dest.is_dir():
        raise Refused("usbkit_dest_missing", folder=str(dest))
    folder = dest / FOLDER
    placement = _Placement(folder)
    try:
        if os.path.lexists(folder) and not folder.is_dir():
            raise Refused("usbkit_conflict", folder=str(folder), files=FOLDER)
        if not folder.exists():
            folder.mkdir()
            placement.created_folder = True
        _remove_own_temps(folder, kit.names)
        present = _present(kit, folder)
        missing = [item for item in _writes(kit) if item[0] not in present]
        if missing:
            needed = SPACE_MARGIN + sum(_size(data) + CLUSTER for _name, data in missing)
            free = shutil.disk_usage(folder).free
            if needed > free:
                raise Refused("usbkit_no_space", folder=str(dest), needed=needed, free=free)
        for name, data in missing:
            placement.write(name, data)
    except OSError as exc:
        refusal = _refusal(exc, dest, kit)
        placement.rollback()
        raise refusal from exc
    except BaseException:
        placement.rollback()
        raise
    return folder


def _writes(kit: Kit) -> list[tuple[str, KitFile | bytes]]:
    extras = kit.extras
    return [(item.name, item) for item in kit.files] + extras[1:] + extras[:1]


def _size(data: KitFile | bytes) -> int:
    return data.size if isinstance(data, KitFile) else len(data)


def _sha1(data: KitFile | bytes) -> str:
    if isinstance(data, KitFile):
        return data.sha1
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _present(kit: Kit, folder: Path) -> set[str]:
    """The kit's files already in `folder`, identical; refuses anything else visible to `*`
    there (another build's files, a stale signature), since the manifest must describe the
    folder exactly."""
    wanted = dict(_writes(kit))
    present, conflicts = set(), []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name.encode()):
        if entry.name.startswith("."):
            continue  # `sha1sum *` does not see it, nor does the school server's copy
        data = wanted.get(entry.name)
        if data is not None and _identical(Path(entry.path), data):
            present.add(entry.name)
        else:
            conflicts.append(entry.name)
    if conflicts:
        raise Refused("usbkit_conflict", folder=str(folder), files=", ".join(conflicts))
    return present


def _identical(path: Path, data: KitFile | bytes) -> bool:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != _size(data):
        return False
    return file_digests(path, "sha1")[1]["sha1"] == _sha1(data)


def _remove_own_temps(folder: Path, names: list[str]) -> None:
    """Temporary files a killed earlier run left: exactly our names for this kit's files."""
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(name) for name in names) + r")\.tmp-[0-9a-f]{16}"
    )
    for entry in os.scandir(folder):
        if pattern.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


class _Placement:
    """What one write has put on the stick, so a failure takes back exactly that."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.created_folder = False
        self.placed: list[Path] = []
        self.temp: Path | None = None

    def write(self, name: str, data: KitFile | bytes) -> None:
        self.temp = self.folder / f".{name}.tmp-{secrets.token_hex(8)}"
        expected = _sha1(data)
        copied = _copy(data, self.temp)
        if copied != expected:
            raise Refused("usbkit_source_changed", file=name, actual=copied, expected=expected)
        written = _read_back(self.temp)
        if written != expected:
            raise Refused("usbkit_verify_failed", file=name, actual=written, expected=expected)
        final = self.folder / name
        # Nothing is there: `_present` refused any other file of this name.
        os.rename(self.temp, final)
        self.temp = None
        self.placed.append(final)
        fsync_dir(self.folder)

    def rollback(self) -> None:
        # Best effort: the original error is what the caller needs to see.
        for path in [*([self.temp] if self.temp else []), *reversed(self.placed)]:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()
        with contextlib.suppress(OSError):
            fsync_dir(self.folder if self.folder.exists() else self.folder.parent)


def _write(fd: int, data: bytes) -> None:
    """The one place bytes reach the stick (tests inject disk errors here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy(data: KitFile | bytes, tmp: Path) -> str:
    """Write `data` (a file's content, or bytes) to `tmp`, fsynced; the SHA-1 of what was
    read from the source."""
    digest = hashlib.sha1(usedforsecurity=False)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        if isinstance(data, KitFile):
            with open(data.path, "rb") as source:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    _write(fd, chunk)
        else:
            digest.update(data)
            _write(fd, data)
        os.fsync(fd)
        # Written and clean: dropping it from the page cache makes the read-back come from
        # the stick itself, where the device honours it.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _read_back(path: Path) -> str:
    return file_digests(path, "sha1")[1]["sha1"]


def _refusal(exc: OSError, dest: Path, kit: Kit) -> Refused:
    code = _errno(exc)
    error = exc.strerror or (os.strerror(code) if code is not None else str(exc))
    if exc.filename:
        error = f"{error}: {exc.filename}"
    if code in _OUT_OF_SPACE:
        try:
            free = shutil.disk_usage(dest).free
        except OSError:
            free = 0
        needed = sum(_size(data) for _name, data in _writes(kit))
        return Refused("usbkit_no_space", folder=str(dest), needed=needed, free=free)
    if code in _UNWRITABLE:
        return Refused("usbkit_dest_unwritable", folder=str(dest), error=error)
    return Refused("usbkit_io_error", error=error)
