"""A build's manifest: one row per entry of the unpacked tree, stored gzip-compressed.

Pure: rows in, bytes out (and back in `builddiff.read_manifest`). Each line is one compact
JSON array `[path, type, mode, size, sha256, link, uid, gid]`; manifests written before the
owners were recorded have six fields and read back with uid and gid None. Paths are relative
to the archive's root; a name that is not UTF-8 is kept as a JSON surrogate escape, so the
bytes round-trip.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass


# Slots: the build diff may hold a whole manifest of these while it sorts one.
@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: str
    # f file, d folder, l symlink, h a further name of an inode listed earlier (`link` names
    # its first path; mode, size and sha256 are the file's, and size is -1 when the inode is
    # a symlink or a device, not a file), c/b/p device nodes and FIFOs.
    type: str
    mode: int
    size: int
    sha256: str
    link: str
    # None in manifests written before owners were recorded.
    uid: int | None = None
    gid: int | None = None


class ManifestWriter:
    """gzip of one compact JSON array per line, compressed as it grows."""

    BATCH = 1024

    def __init__(self):
        # wbits=31 writes a gzip header with mtime 0, so equal trees give equal bytes.
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._lines: list[str] = []
        self._parts: list[bytes] = []

    def add(self, entry: ManifestEntry):
        row = [
            entry.path,
            entry.type,
            entry.mode,
            entry.size,
            entry.sha256,
            entry.link,
            entry.uid,
            entry.gid,
        ]
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


def names_a_file(entry: ManifestEntry) -> bool:
    """Whether the entry is a regular file, under its first name or a further one."""
    return entry.type == "f" or (entry.type == "h" and entry.size >= 0)
