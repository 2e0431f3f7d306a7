"""What the tree a school server serves carries that matters for security, and what it
throws away: the build page's archive summary.

GNU tar decides what a build unpacks to (`unpack`); this module only sorts the rows read
back from that tree. Rows arrive from the walk (`unpack_session`), served tree first; the
served tree is `versions/pristine/<id>` or, without `versions/pristine`, the archive's root
(`versions/` is then thrown away). Every name of a file counts, hard links included: a
setuid file hard-linked into the served tree from outside it is served setuid.

Pure: no ORM, no I/O, no settings. One `add()` per row, then `finish(served)`. Memory is
bounded (counts, and the first SHOWN paths of each list), whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from releases.manifest import names_a_file

PRISTINE = "versions/pristine"
PRISTINE_PREFIX = PRISTINE + "/"
# How many paths of each kind of note the build page lists; the counts are always whole.
SHOWN = 50

FILE, DIR, SYMLINK, HARDLINK = "f", "d", "l", "h"
DEVICES = ("c", "b", "p")


def display(text: str) -> str:
    """A name as it may be stored and shown: bytes that are not UTF-8 (kept as surrogate
    escapes while unpacking) become `\\xNN`, so no database or page ever meets them."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shorten(text: str, keep: int = 120) -> str:
    return text if len(text) <= keep else text[:keep] + "…"


def shown(value, keep: int = 120):
    """A refusal's parameter, displayable and short; lists and numbers pass through."""
    if isinstance(value, str):
        return shorten(display(value), keep)
    if isinstance(value, list):
        return ", ".join(shown(item, keep) for item in value)
    return value


@dataclass
class _Notes:
    """Entries of one tree that matter for security, as bounded lists."""

    setuid: list = field(default_factory=list)
    setuid_count: int = 0
    world_writable: list = field(default_factory=list)
    world_writable_count: int = 0
    devices: list = field(default_factory=list)
    device_count: int = 0
    unreadable: list = field(default_factory=list)
    unreadable_count: int = 0
    entries: int = 0

    def add(self, path: str, kind: str, mode: int, *, is_file: bool):
        self.entries += 1
        # A hard link is one more name of a file, with that file's mode (`is_file`).
        if is_file and mode & 0o6000:
            self.setuid_count += 1
            _keep(self.setuid, [path, mode & 0o7777])
        # The school server unpacks and serves as an unprivileged user under fakeroot, which
        # keeps real modes: its rsync cannot read a file without owner read, or a folder
        # without owner read and search.
        if (is_file and not mode & 0o400) or (kind == DIR and mode & 0o500 != 0o500):
            self.unreadable_count += 1
            _keep(self.unreadable, [path, mode & 0o7777])
        if kind in DEVICES:
            self.device_count += 1
            _keep(self.devices, [path, kind])
        # A sticky world-writable folder (/tmp) is how it should be.
        if (is_file or kind == DIR) and mode & 0o002 and not (kind == DIR and mode & 0o1000):
            self.world_writable_count += 1
            _keep(self.world_writable, path)


def _keep(bounded: list, item):
    if len(bounded) < SHOWN:
        bounded.append(item)


class Summary:
    """Sorts rows (`manifest.ManifestEntry`) into the served tree's notes and what is
    thrown away; `finish(served)` gives the build page's summary."""

    def __init__(self):
        self._served = ""
        self._notes = _Notes()
        self._outside: list[str] = []
        self._outside_count = 0
        self._started = False

    def add(self, entry):
        if not self._started:
            # The walk lists the served tree first, starting with its root.
            self._started = True
            if entry.path.startswith(PRISTINE_PREFIX) and entry.type == DIR:
                self._served = entry.path
        path = self._relative(entry.path)
        if path is None:
            if self._served and entry.path in ("versions", PRISTINE):
                return  # the frame the served tree comes in, not something thrown away
            self._outside_count += 1
            _keep(self._outside, display(entry.path))
        else:
            self._notes.add(display(path), entry.type, entry.mode, is_file=names_a_file(entry))

    def _relative(self, path: str) -> str | None:
        """The path within the served tree, or None when the school server throws it away."""
        served = self._served
        if served:
            if path == served:
                return "."
            if path.startswith(served + "/"):
                return path[len(served) + 1 :]
            return None
        if path == "versions" or path.startswith("versions/"):
            return None
        return path

    def finish(self, served: str) -> dict:
        if served != self._served:
            raise ValueError(f"the walk served {self._served!r}, the session said {served!r}")
        notes = self._notes
        return {
            "served": display(served),
            "served_entries": notes.entries,
            "setuid_count": notes.setuid_count,
            "setuid": notes.setuid,
            "world_writable_count": notes.world_writable_count,
            "world_writable": notes.world_writable,
            "device_count": notes.device_count,
            "devices": notes.devices,
            "unreadable_count": notes.unreadable_count,
            "unreadable": notes.unreadable,
            "outside_count": self._outside_count,
            "outside": self._outside,
        }
