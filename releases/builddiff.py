"""What a build changes on the laptops compared with an older one: the update's impact.

Pure module: two manifests in, one `BuildDiff` out; no ORM, no I/O, no settings (the update
overhead and the large-update share are arguments). Only the served tree counts (what a
school server serves and an XO copies), with paths relative to it, so two builds whose
`versions/pristine/<id>` differ compare file by file rather than as two unrelated trees.

`diff_manifests` merges two streams of `ManifestEntry` in `path_key` order in one pass and
keeps only counters and bounded lists (`shown` entries a list, `TOP_DIRECTORIES` folders), so
a diff of 40,000 changes stays a few kilobytes. The stored manifest is in archive order,
which is the builder's directory order, not sorted: `served_in_path_order` checks the order
in a first streaming pass and sorts only when it must (see there).

What the numbers mean, for the approver:
- **laptop cost**: the bytes an XO stores a second time (`olpc-update` hard-links files that
  did not change into the new version; an added file, or one whose content, kind or mode
  changed, needs its own copy, since a hard link shares one inode and so one mode), plus the
  fixed `overhead_bytes` every update costs in NAND (the hard links themselves);
- **school-server transfer**: the bytes of added files and files with new content: what rsync
  moves (a mode-only change moves no data);
- **large update**: the laptop bytes above `large_share` of the new served tree's bytes. The
  deployment's notes say large updates "do not scale" on this update system: every XO keeps
  two OS versions in NAND, and a large update fills it and takes long on the school's link;
- **privileged changes**: entries that widen what can gain root or write where it should not,
  listed first and needing a written reason to promote (see `privileged_reasons`).
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from releases.extraction import display
from releases.manifest import ManifestEntry, names_a_file

PRISTINE_PREFIX = "versions/pristine/"
FILE, DIR, SYMLINK, HARDLINK = "f", "d", "l", "h"
DEVICES = ("c", "b", "p")
MiB = 1024 * 1024
DEFAULT_OVERHEAD_BYTES = 16 * MiB
DEFAULT_LARGE_SHARE = 0.5
# How many entries of each list are kept; the counts and bytes are always whole.
SHOWN = 50
TOP_DIRECTORIES = 10
# Changed bytes are summed per folder this many levels deep ("usr/lib", "usr/share").
DIRECTORY_DEPTH = 2
# Compressed bytes of a stored manifest inflated at a time (about 100 KiB of rows).
READ_SIZE = 16 * 1024

# Paths whose change alters who may log in or run as root, in the served tree.
SENSITIVE_FILES = ("etc/passwd", "etc/shadow", "etc/group", "root/.ssh")
SENSITIVE_PREFIXES = ("etc/sudoers", "etc/cron", "root/.ssh/")


def path_key(path: str) -> str:
    """The order both streams are merged in: component by component ("a", "a/b", "a.b"),
    which is GNU tar's `--sort=name` order, with the served tree's root first. A name never
    holds a NUL (`extraction.check_name`), so NUL stands for the separator."""
    return "" if path == "." else path.replace("/", "\0")


# --- Reading a stored manifest --------------------------------------------------------------


def read_manifest(data: bytes) -> Iterator[ManifestEntry]:
    """The entries of a stored manifest (`BuildManifest.data`), in archive order.

    Inflated READ_SIZE compressed bytes at a time, and each piece's whole lines parsed as one
    JSON array: a call per line cost most of a diff's time. JSON escapes a newline inside a
    string, so a raw newline only ever ends a row."""
    inflate = zlib.decompressobj(31)
    view = memoryview(data)
    pending = b""
    for start in range(0, len(data), READ_SIZE):
        pending += inflate.decompress(view[start : start + READ_SIZE])
        lines, _, pending = pending.rpartition(b"\n")
        if lines:
            yield from _rows(lines)
    pending += inflate.flush()
    if not inflate.eof:
        raise ValueError("the stored manifest is cut off")
    if pending.strip():
        yield from _rows(pending)


def _rows(lines: bytes) -> Iterator[ManifestEntry]:
    # Six fields before owners were recorded, eight since (`manifest`).
    for row in json.loads(b"[" + lines.replace(b"\n", b",") + b"]"):
        yield ManifestEntry(*row)


def served_only(entries: Iterable[ManifestEntry], served: str) -> Iterator[ManifestEntry]:
    """The entries of the served tree (`archive_summary["served"]`: `versions/pristine/<id>`,
    or "" for the archive's root), with paths relative to it ("." for its root).

    Everything else the school server throws away (`extraction`), so no laptop sees it."""
    if served:
        prefix = served + "/"
        for entry in entries:
            if entry.path == served:
                yield _moved(entry, ".")
            elif entry.path.startswith(prefix):
                yield _moved(entry, entry.path[len(prefix) :])
        return
    for entry in entries:
        if entry.path != "versions" and not entry.path.startswith("versions/"):
            yield entry


def _moved(entry: ManifestEntry, path: str) -> ManifestEntry:
    # A hard link names its target from the archive's root; relative to the served tree it
    # compares equal across two builds with different pristine ids.
    link = entry.link
    if entry.type == HARDLINK and link.startswith(PRISTINE_PREFIX):
        link = link.split("/", 3)[3] if link.count("/") >= 3 else "."
    return ManifestEntry(
        path, entry.type, entry.mode, entry.size, entry.sha256, link, entry.uid, entry.gid
    )


def served_in_path_order(data: bytes, served: str) -> Iterator[ManifestEntry]:
    """The served tree of a stored manifest, in `path_key` order.

    1. One streaming pass checks the order. A builder that runs `tar --sort=name` gives a
       sorted manifest, which is then read again as a stream: memory stays constant.
    2. Otherwise (tar's default directory order) the served entries are sorted by key in
       memory: linear in the member count, which MAX_ARCHIVE_MEMBERS bounds, about 500
       bytes an entry (20 MB for 42,000; bench/builddiff.py). The manifest itself reaches
       us whole from the database anyway, and an external merge sort would only pay off for
       manifests far larger than the portal keeps.
    Python's sort is stable, so a directory listed twice keeps archive order and the merge
    takes the later one, as tar leaves it.
    """
    if _is_sorted(served_only(read_manifest(data), served)):
        return served_only(read_manifest(data), served)
    rows = [(path_key(entry.path), entry) for entry in served_only(read_manifest(data), served)]
    rows.sort(key=lambda row: row[0])
    return (entry for _key, entry in rows)


def _is_sorted(entries: Iterable[ManifestEntry]) -> bool:
    last = None
    for entry in entries:
        key = path_key(entry.path)
        if last is not None and key < last:
            return False
        last = key
    return True


# --- The diff -------------------------------------------------------------------------------


def octal(mode: int | None) -> str | None:
    return None if mode is None else f"{mode & 0o7777:04o}"


def is_setuid(entry: ManifestEntry) -> bool:
    # A hard link is one more name of a setuid file: laptops get it setuid at that path too.
    return names_a_file(entry) and bool(entry.mode & 0o6000)


def is_world_writable(entry: ManifestEntry) -> bool:
    # A sticky world-writable folder (/tmp) is how it should be; `extraction` agrees.
    if entry.type == DIR:
        return bool(entry.mode & 0o002) and not entry.mode & 0o1000
    return names_a_file(entry) and bool(entry.mode & 0o002)


def is_sensitive(path: str) -> bool:
    return path in SENSITIVE_FILES or path.startswith(SENSITIVE_PREFIXES)


def privileged_reasons(entry: ManifestEntry, change: str) -> list[str]:
    """Why an added, changed or removed entry needs a second look, as codes: `setuid`
    (setuid or setgid), `world_writable`, `device`, `sensitive` (accounts, sudo, cron,
    root's ssh keys). Only a removal of a sensitive path counts: removing a setuid file
    takes privilege away."""
    found = []
    if change != "removed":
        if is_setuid(entry):
            found.append("setuid")
        if is_world_writable(entry):
            found.append("world_writable")
        if entry.type in DEVICES:
            found.append("device")
    if is_sensitive(entry.path):
        found.append("sensitive")
    return found


def changed_aspects(old: ManifestEntry, new: ManifestEntry) -> list[str]:
    """What differs between two entries at one path: `kind`, `content` (a file's sha256),
    `link` (a symlink's or hard link's target), `mode` (permission bits and setuid),
    `owner` (uid or gid, when both manifests recorded them)."""
    if old.type != new.type:
        return ["kind"]
    aspects = []
    if new.type == FILE and old.sha256 != new.sha256:
        aspects.append("content")
    if old.link != new.link:
        aspects.append("link")
    if old.mode & 0o7777 != new.mode & 0o7777:
        aspects.append("mode")
    known = None not in (old.uid, new.uid)
    if known and (old.uid, old.gid) != (new.uid, new.gid):
        aspects.append("owner")
    return aspects


@dataclass
class _Bucket:
    count: int = 0
    bytes: int = 0
    entries: list = field(default_factory=list)

    def add(self, size: int, row: dict, shown: int):
        self.count += 1
        self.bytes += size
        if len(self.entries) < shown:
            self.entries.append(row)


@dataclass
class BuildDiff:
    """The impact of going from one served tree to another; `as_dict` is the JSON the API,
    the command and the pages share (field names in README.md, "Build diff JSON")."""

    overhead_bytes: int
    large_share: float
    shown: int
    old_entries: int = 0
    new_entries: int = 0
    unchanged: int = 0
    served_bytes: int = 0
    transfer_bytes: int = 0
    added: _Bucket = field(default_factory=_Bucket)
    removed: _Bucket = field(default_factory=_Bucket)
    changed: _Bucket = field(default_factory=_Bucket)
    aspects: dict = field(default_factory=lambda: dict.fromkeys(ASPECTS, 0))
    privileged: _Bucket = field(default_factory=_Bucket)
    directories: dict = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        return self.added.bytes + self.changed.bytes

    @property
    def changed_share(self) -> float:
        if not self.served_bytes:
            return 1.0 if self.stored_bytes else 0.0
        return self.stored_bytes / self.served_bytes

    @property
    def large_update(self) -> bool:
        return self.changed_share > self.large_share

    def as_dict(self) -> dict:
        charged = ((path, sums) for path, sums in self.directories.items() if sums[0])
        top = heapq.nsmallest(TOP_DIRECTORIES, charged, key=lambda item: (-item[1][0], item[0]))
        return {
            "old_entries": self.old_entries,
            "new_entries": self.new_entries,
            "unchanged": self.unchanged,
            "added": _bucket(self.added),
            "removed": _bucket(self.removed),
            "changed": {**_bucket(self.changed), **self.aspects},
            "top_directories": [
                {"path": path, "bytes": size, "entries": count} for path, (size, count) in top
            ],
            "served_bytes": self.served_bytes,
            "changed_share": round(self.changed_share, 4),
            "large_update_share": self.large_share,
            "large_update": self.large_update,
            "school_server_transfer_bytes": self.transfer_bytes,
            "update_overhead_bytes": self.overhead_bytes,
            "laptop_cost_bytes": self.stored_bytes + self.overhead_bytes,
            "privileged": {
                "count": self.privileged.count,
                "entries": self.privileged.entries,
            },
            "needs_reason": bool(self.privileged.count) or self.large_update,
            "shown": self.shown,
        }

    # One call per path of the merge.

    def _added(self, entry: ManifestEntry):
        size = entry.size if entry.type == FILE else 0
        self.added.add(size, _row(entry), self.shown)
        self._charge(entry.path, size)
        self.transfer_bytes += size
        self._privileged(entry, "added")

    def _removed(self, entry: ManifestEntry):
        size = entry.size if entry.type == FILE else 0
        self.removed.add(size, _row(entry), self.shown)
        self._privileged(entry, "removed")

    def _compared(self, old: ManifestEntry, new: ManifestEntry):
        aspects = changed_aspects(old, new)
        if not aspects:
            self.unchanged += 1
            return
        for aspect in aspects:
            self.aspects[aspect] += 1
        stored = new.size if new.type == FILE and aspects != ["link"] else 0
        row = {
            "path": display(new.path),
            "what": aspects,
            "kind": new.type,
            "size": new.size if new.type == FILE else 0,
            "old_kind": old.type,
            "old_mode": octal(old.mode),
            "mode": octal(new.mode),
            "old_link": old.link,
            "link": new.link,
            "old_owner": owner(old),
            "owner": owner(new),
        }
        self.changed.add(stored, row, self.shown)
        self._charge(new.path, stored)
        if new.type == FILE and ("content" in aspects or "kind" in aspects):
            self.transfer_bytes += new.size
        self._privileged(new, "changed", old)

    def _privileged(self, entry: ManifestEntry, change: str, old: ManifestEntry | None = None):
        reasons = privileged_reasons(entry, change)
        if not reasons:
            return
        row = {**_row(entry), "change": change, "reasons": reasons}
        if old is not None:
            row["old_mode"] = octal(old.mode)
        self.privileged.add(0, row, self.shown)

    def _charge(self, path: str, size: int):
        folder = directory_of(path)
        total, count = self.directories.get(folder, (0, 0))
        self.directories[folder] = (total + size, count + 1)


ASPECTS = ("content", "mode", "kind", "link", "owner")


def _bucket(bucket: _Bucket) -> dict:
    return {"count": bucket.count, "bytes": bucket.bytes, "entries": bucket.entries}


def owner(entry: ManifestEntry) -> str:
    return "" if entry.uid is None else f"{entry.uid}:{entry.gid}"


def _row(entry: ManifestEntry) -> dict:
    return {
        "path": display(entry.path),
        "kind": entry.type,
        "size": entry.size if entry.type == FILE else 0,
        "mode": octal(entry.mode),
        "link": entry.link,
    }


def directory_of(path: str) -> str:
    """The folder, at most DIRECTORY_DEPTH levels deep, a path's bytes are summed under.

    The number of such folders is bounded by the tree's shape (a few hundred in an OS
    image), not by the number of changes."""
    parent = path.rpartition("/")[0]
    if not parent:
        return "."
    return "/".join(parent.split("/")[:DIRECTORY_DEPTH])


def _keyed(entries: Iterable[ManifestEntry], side: str) -> Iterator[tuple[str, ManifestEntry]]:
    """(key, entry) in order, a repeated path collapsed into its last entry (tar leaves a
    directory listed twice with its last mode); out of order is a caller's error."""
    previous = None
    for entry in entries:
        key = path_key(entry.path)
        if previous is not None:
            if key < previous[0]:
                raise ValueError(f"the {side} manifest is not in path order at {entry.path!r}")
            if key != previous[0]:
                yield previous
        previous = (key, entry)
    if previous is not None:
        yield previous


def diff_manifests(
    old: Iterable[ManifestEntry],
    new: Iterable[ManifestEntry],
    *,
    overhead_bytes: int = DEFAULT_OVERHEAD_BYTES,
    large_share: float = DEFAULT_LARGE_SHARE,
    shown: int = SHOWN,
) -> BuildDiff:
    """Merge two served trees, each in `path_key` order (`served_in_path_order`), in one
    pass: every path is added, removed, changed or unchanged."""
    result = BuildDiff(overhead_bytes=overhead_bytes, large_share=large_share, shown=shown)
    olds, news = _keyed(old, "old"), _keyed(new, "new")
    o, n = next(olds, None), next(news, None)
    while o is not None or n is not None:
        if n is None or (o is not None and o[0] < n[0]):
            result.old_entries += 1
            result._removed(o[1])
            o = next(olds, None)
            continue
        result.new_entries += 1
        if n[1].type == FILE:
            result.served_bytes += n[1].size
        if o is None or n[0] < o[0]:
            result._added(n[1])
        else:
            result.old_entries += 1
            result._compared(o[1], n[1])
            o = next(olds, None)
        n = next(news, None)
    # Privileged entries first among themselves too: the ones that grant root on top.
    result.privileged.entries.sort(key=lambda row: _SEVERITY.get(row["reasons"][0], 9))
    return result


_SEVERITY = {"setuid": 0, "sensitive": 1, "device": 2, "world_writable": 3}
