"""What GNU tar leaves on a school server's disk, member by member, and what it then serves.

The school server unpacks a build with `tar --numeric-owner -xp` under fakeroot into an empty
folder, then serves the first entry of `versions/pristine/` (or the archive's root when there
is none). Any error of tar aborts the server's whole refresh, so every build on it stops. This
model replays the members in archive order, keeping path → kind as tar would have it on disk,
and refuses each member tar would fail on, or whose result is not what was checked:

- a member under a path that is not a directory (a file, a symlink, a hard link or a device):
  tar fails with "Not a directory", or follows a symlink the archive itself planted;
- a hard link whose target is not an earlier file: tar links to what is on disk *at that
  moment*, so a forward, missing or directory target fails;
- a non-directory path that appears twice: tar keeps the later copy, so the earlier one,
  which the portal hashed, is not what laptops get;
- a name or link target the kernel refuses (a component over 255 bytes, a path over 4095);
- device nodes and FIFOs, unless the deployment says its images carry them;
- `versions`, `versions/pristine` or the served entry not being a real directory (a symlink
  there would make the school server serve, or move, whatever it points to).

It also sorts what the served tree carries that matters for security (setuid and setgid
files, world-writable entries, device nodes), files without an owner-read bit (the school
server's unprivileged rsync cannot read them back), and what the school server throws away.

Pure: no ORM, no I/O, no settings. One `add()` per member, then `finish()`. Memory grows with
the number of members (one dict entry each, bounded by MAX_ARCHIVE_MEMBERS), never with the
size of their data. Accepting is conservative: every archive it accepts, GNU tar unpacks
cleanly; it refuses a few that tar would take but where tar's result depends on its order of
operations (tests/releases/test_differential.py checks the first half against the real tar).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from releases.reasons import Refused

PRISTINE = "versions/pristine"
PRISTINE_PREFIX = PRISTINE + "/"
# Linux: NAME_MAX is 255 bytes a component; a path handed to a system call must fit in
# PATH_MAX (4096) with its terminating NUL. tar passes member names relative to its folder.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095
# How many paths of each kind of note the build page lists; the counts are always whole.
SHOWN = 50
SHOWN_PRISTINE_ENTRIES = 5

FILE, DIR, SYMLINK, HARDLINK = "f", "d", "l", "h"
DEVICES = ("c", "b", "p")
# A directory tar made itself, for a member whose parents the archive does not list.
_IMPLICIT = "D"
# A name the school server's `ls | sort | head -n1` and `[ -d ]` take as it is.
_PLAIN_ENTRY = re.compile(r"[^.\s\x00-\x1f\x7f][^\s\x00-\x1f\x7f]*")


def byte_length(text: str) -> int:
    # tarfile decodes names with surrogateescape, so this is the length of the raw bytes.
    return len(text.encode("utf-8", "surrogateescape"))


def check_name(path: str, *, components: bool = True):
    """Refuse a member name or link target the kernel would refuse to create.

    A symlink's target is only stored, never looked up while unpacking, so only its whole
    length is bounded (`components=False`)."""
    if "\0" in path:
        raise Refused("archive_name_invalid", path=path.replace("\0", "\\0"))
    length = byte_length(path)
    if length > MAX_PATH_BYTES:
        raise Refused(
            "archive_name_too_long",
            path=shorten(path),
            length=length,
            limit=MAX_PATH_BYTES,
        )
    for part in path.split("/") if components else ():
        if byte_length(part) > MAX_COMPONENT_BYTES:
            raise Refused(
                "archive_component_too_long",
                path=shorten(path),
                limit=MAX_COMPONENT_BYTES,
            )


def shorten(text: str, keep: int = 120) -> str:
    return text if len(text) <= keep else text[:keep] + "…"


@dataclass
class _Notes:
    """Entries of one candidate served tree that matter for security, bounded lists."""

    setuid: list = field(default_factory=list)
    setuid_count: int = 0
    world_writable: dict = field(default_factory=dict)  # path → None, in archive order
    devices: list = field(default_factory=list)
    device_count: int = 0
    unreadable: list = field(default_factory=list)
    unreadable_count: int = 0
    entries: int = 0

    def add(self, path: str, kind: str, mode: int):
        self.entries += 1
        if kind == FILE and mode & 0o6000:
            self.setuid_count += 1
            if len(self.setuid) < SHOWN:
                self.setuid.append([path, mode & 0o7777])
        if kind == FILE and not mode & 0o400:
            # The school server unpacks and serves as an unprivileged user under fakeroot,
            # which keeps real modes: its rsync cannot read a file without owner read.
            self.unreadable_count += 1
            if len(self.unreadable) < SHOWN:
                self.unreadable.append([path, mode & 0o7777])
        if kind in DEVICES:
            self.device_count += 1
            if len(self.devices) < SHOWN:
                self.devices.append([path, kind])
        # A repeated directory takes its last mode, as tar leaves it.
        self.world_writable.pop(path, None)
        if kind in (FILE, DIR) and mode & 0o002 and not (kind == DIR and mode & 0o1000):
            self.world_writable[path] = None


@dataclass(frozen=True)
class Served:
    """The tree a school server serves, and what the archive carries beside it."""

    pristine_id: str
    # For the build page and the API: counts, and the first SHOWN paths of each list.
    summary: dict


class ExtractionModel:
    def __init__(self, *, allow_device_nodes: bool = False):
        self._allow_devices = allow_device_nodes
        self._disk: dict[str, str] = {}
        self._pristine_ids: set[str] = set()
        # Notes for the two trees the school server might serve; `finish` picks one.
        self._pristine_notes = _Notes()
        self._root_notes = _Notes()
        self._outside_count = 0
        self._outside: list[str] = []
        self._root_outside_count = 0
        self._root_outside: list[str] = []
        self._last_parent = ""

    def add(self, path: str, kind: str, *, mode: int = 0o644, link: str = ""):
        """Replay one member (a normalised relative path); raise Refused if tar fails."""
        disk = self._disk
        if kind in DEVICES and not self._allow_devices:
            raise Refused("archive_device_node", path=path, kind=kind)
        if path == ".":
            if kind != DIR:
                raise Refused("archive_root_not_directory", kind=kind)
            return
        self._check_parents(path)
        before = disk.get(path)
        if before is not None and before != _IMPLICIT and (before != DIR or kind != DIR):
            raise Refused("archive_duplicate", path=path, first=before, second=kind)
        if before == _IMPLICIT and kind != DIR:
            # tar made this folder for an earlier member; the file would replace it or fail.
            raise Refused("archive_duplicate", path=path, first=DIR, second=kind)
        if kind == HARDLINK:
            target = disk.get(link)
            if target is None or target in (DIR, _IMPLICIT):
                raise Refused(
                    "archive_hardlink_target",
                    path=path,
                    target=link,
                    problem=DIR if target else "missing",
                )
            if target == SYMLINK:
                raise Refused("archive_hardlink_target", path=path, target=link, problem=target)
        elif kind == SYMLINK:
            if not link:
                raise Refused("archive_symlink_empty", path=path)
            check_name(link, components=False)
        disk[path] = kind
        self._note(path, kind, mode)

    def _check_parents(self, path: str):
        parent, _, _ = path.rpartition("/")
        # Archives list a folder's members together: most members share the last one's parent.
        if not parent or parent == self._last_parent:
            return
        disk = self._disk
        prefix = ""
        for part in parent.split("/"):
            prefix = f"{prefix}/{part}" if prefix else part
            kind = disk.get(prefix)
            if kind is None:
                disk[prefix] = _IMPLICIT
            elif kind not in (DIR, _IMPLICIT):
                raise Refused("archive_under_non_directory", path=path, parent=prefix, kind=kind)
        self._last_parent = parent

    def _note(self, path: str, kind: str, mode: int):
        if path.startswith(PRISTINE_PREFIX):
            entry, _, rest = path[len(PRISTINE_PREFIX) :].partition("/")
            self._pristine_ids.add(entry)
            self._pristine_notes.add(rest or ".", kind, mode)
            return
        if path in ("versions", PRISTINE):
            return
        if path.startswith("versions/"):
            # Thrown away whichever tree is served.
            self._outside_count += 1
            self._root_outside_count += 1
            if len(self._outside) < SHOWN:
                self._outside.append(path)
            if len(self._root_outside) < SHOWN:
                self._root_outside.append(path)
            return
        self._root_notes.add(path, kind, mode)
        self._outside_count += 1
        if len(self._outside) < SHOWN:
            self._outside.append(path)

    def finish(self) -> Served:
        """Pick the served tree the way the school server does, and refuse an unusable one."""
        disk = self._disk
        versions = disk.get("versions")
        if versions is not None and versions not in (DIR, _IMPLICIT):
            raise Refused("archive_versions_not_directory", path="versions", kind=versions)
        pristine = disk.get(PRISTINE)
        if pristine is None:
            return Served("", self._summary("", self._root_notes, self._root_outside))
        if pristine not in (DIR, _IMPLICIT):
            raise Refused("archive_versions_not_directory", path=PRISTINE, kind=pristine)
        ids = self._pristine_ids
        if not ids:
            raise Refused("archive_empty_pristine")
        if len(ids) > 1:
            names = sorted(ids)
            shown = names[:SHOWN_PRISTINE_ENTRIES]
            if len(names) > SHOWN_PRISTINE_ENTRIES:
                shown.append("…")
            raise Refused("archive_several_pristine", count=len(names), entries=", ".join(shown))
        (entry,) = ids
        if not _PLAIN_ENTRY.fullmatch(entry):
            raise Refused("archive_pristine_name", entry=entry)
        served = disk[f"{PRISTINE_PREFIX}{entry}"]
        if served not in (DIR, _IMPLICIT):
            raise Refused(
                "archive_served_not_directory",
                path=f"{PRISTINE_PREFIX}{entry}",
                kind=served,
            )
        notes = self._pristine_notes
        return Served(entry, self._summary(entry, notes, self._outside, self._outside_count))

    def _summary(self, entry, notes: _Notes, outside: list, outside_count: int | None = None):
        if outside_count is None:
            outside_count = self._root_outside_count
        world_writable = list(notes.world_writable)
        return {
            "served": f"{PRISTINE_PREFIX}{entry}" if entry else "",
            "served_entries": notes.entries,
            "setuid_count": notes.setuid_count,
            "setuid": notes.setuid,
            "world_writable_count": len(world_writable),
            "world_writable": world_writable[:SHOWN],
            "device_count": notes.device_count,
            "devices": notes.devices,
            "unreadable_count": notes.unreadable_count,
            "unreadable": notes.unreadable,
            "outside_count": outside_count,
            "outside": outside[:SHOWN],
        }
