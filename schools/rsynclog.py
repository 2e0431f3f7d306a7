"""Read the mothership's rsyncd log: which client fetched which build file, and when.

rsyncd with `transfer logging = yes` writes one line per file, in its default
`log format = %o %h [%a] %m (%u) %f %l`, either to its own log file or through syslog. This
module parses those lines and follows the growing file across rotation. No ORM and no
settings (the time zone, year and limits are arguments); its only I/O is `read_new_lines`
reading the log. Which client is which school server is for schools.services to say.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

# The same rule as releases.models.NAME_PATTERN, repeated so this module stays free of Django.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
TARBALL_EXTENSIONS = r"(?:bz2|xz|lzma)"
# Only the four names a school server itself picks up count as build files: the tarball
# (bz2, xz or lzma), its .md5, <name>.contents and <name>.name.
BUILD_FILES = [
    (re.compile(rf"({NAME})-tree\.tar\.{TARBALL_EXTENSIONS}"), "tarball"),
    (re.compile(rf"({NAME})-tree\.tar\.{TARBALL_EXTENSIONS}\.md5"), "md5"),
    (re.compile(rf"({NAME})\.contents"), "contents"),
    (re.compile(rf"({NAME})\.name"), "name"),
]

# Digit counts are bounded so a garbled line can never reach int()'s length limit and raise.
NATIVE_PREFIX = re.compile(
    r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2}) "
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2}) \[(?P<pid>\d{1,10})\] (?P<message>.*)"
)
# Traditional syslog ("Nov  6 03:02:11 host rsyncd[123]: ") has no year. The tag is
# configurable (rsyncd's `syslog tag`), so any tag with a pid is accepted.
SYSLOG_PREFIX = re.compile(
    r"(?P<month>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) "
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2}) "
    r"\S+ [^\s\[\]]+\[(?P<pid>\d{1,10})\]: (?P<message>.*)"
)
# rsyslog's RFC 3339 file format (Debian's default since bookworm):
# "2026-11-26T03:02:11.123456+01:00 host rsyncd[123]: ".
RFC3339_PREFIX = re.compile(
    r"(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})?) "
    r"\S+ [^\s\[\]]+\[(?P<pid>\d{1,10})\]: (?P<message>.*)"
)
# %o %h [%a] %m (%u) %f %l. The size is anchored at the end so file names may hold spaces;
# module and user names cannot hold parentheses, so the first " (...) " ends the module.
TRANSFER = re.compile(
    r"(?P<operation>send|recv) (?P<host>\S+) \[(?P<address>[^\]\s]+)\] "
    r"(?P<module>[^()]+?) \((?P<user>[^()]*)\) (?P<path>.+) (?P<size>\d{1,20})"
)
MONTHS = {
    name: number
    for number, name in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
        start=1,
    )
}


@dataclass(frozen=True)
class Transfer:
    """One file rsyncd sent to (or received from) a client."""

    at: datetime
    pid: int
    operation: str
    host: str
    address: str
    module: str
    user: str
    path: str
    size: int
    build_name: str | None
    kind: str | None


@dataclass
class Position:
    """Where reading a log file stopped: which file (by inode) and the byte offset in it."""

    inode: int
    offset: int


def build_file(path: str) -> tuple[str, str] | None:
    """The (build name, kind) a file belongs to, from its basename; None if it is not one of
    a build's four files. Hidden names (rsync's temporary files) never match."""
    basename = path.rsplit("/", 1)[-1]
    for pattern, kind in BUILD_FILES:
        match = pattern.fullmatch(basename)
        if match:
            return match[1], kind
    return None


def parse_line(line: str | bytes, *, tz: tzinfo, year: int | None = None) -> Transfer | None:
    """The transfer a log line records, or None for any other line, however broken.

    `tz` is the mothership's local zone, which rsyncd and syslog write times in. `year` is for
    syslog lines, which carry none; without it the current year in `tz` is assumed.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    # After a crash a log file can hold a run of NULs where unwritten blocks were; the lines
    # appended after it are still good.
    line = line.rstrip("\r\n").lstrip("\x00")
    stamped = _split_prefix(line, tz, year)
    if stamped is None:
        return None
    at, pid, message = stamped
    match = TRANSFER.fullmatch(message)
    if match is None:
        return None
    path = match["path"]
    build_name, kind = build_file(path) or (None, None)
    return Transfer(
        at=at,
        pid=pid,
        operation=match["operation"],
        host=match["host"].lower(),
        address=match["address"],
        module=match["module"],
        user=match["user"],
        path=path,
        size=int(match["size"]),
        build_name=build_name,
        kind=kind,
    )


def _split_prefix(line: str, tz: tzinfo, year: int | None) -> tuple[datetime, int, str] | None:
    """(time, pid, message) from any of the prefixes the log can have; None if none fits."""
    try:
        if match := NATIVE_PREFIX.fullmatch(line):
            at = _local(tz, match, int(match["year"]), int(match["month"]))
        elif match := SYSLOG_PREFIX.fullmatch(line):
            month = MONTHS.get(match["month"])
            if month is None:
                return None
            at = _local(tz, match, year if year is not None else datetime.now(tz).year, month)
        elif match := RFC3339_PREFIX.fullmatch(line):
            at = datetime.fromisoformat(match["stamp"])
            at = at.replace(tzinfo=tz) if at.tzinfo is None else at.astimezone(tz)
        else:
            return None
    except (ValueError, OverflowError):
        # Digits in the right places but no such date, e.g. month 13 or 29 February 2027.
        return None
    return at, int(match["pid"]), match["message"]


def _local(tz: tzinfo, match: re.Match[str], year: int, month: int) -> datetime:
    # In the hour repeated when clocks go back the wall time is ambiguous; fold=0 takes the
    # first occurrence, off by at most an hour, which sync status tolerates.
    return datetime(
        year,
        month,
        int(match["day"]),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"]),
        tzinfo=tz,
    )


def read_new_lines(
    path: str | os.PathLike[str],
    position: Position | None,
    *,
    max_bytes: int = 16 * 1024 * 1024,
) -> tuple[list[bytes], Position | None]:
    """The complete lines added to the log at `path` since `position`, and where to go on.

    A final line without its newline is left for the next call, so it is read whole. A file
    with another inode (rotated) or shorter than the offset (truncated) is read from the
    start. At most `max_bytes` are read per call; call again until the offset stops moving. A
    missing file (between rotation and rsyncd's next write) gives ([], position) unchanged.
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    try:
        with open(path, "rb") as log:
            # fstat of the open file, not stat of the path, so inode and content belong to the
            # same file even if the log is rotated in between.
            status = os.fstat(log.fileno())
            same_file = position is not None and position.inode == status.st_ino
            offset = position.offset if same_file and status.st_size >= position.offset else 0
            log.seek(offset)
            chunk = log.read(max_bytes)
    except FileNotFoundError:
        return [], position
    end = chunk.rfind(b"\n")
    if end == -1:
        if len(chunk) == max_bytes:
            # One line longer than the whole budget is no rsyncd line (crash garbage); skip
            # it rather than rereading it forever. Its tail comes back as a garbled line.
            return [], Position(status.st_ino, offset + len(chunk))
        return [], Position(status.st_ino, offset)
    return chunk[:end].split(b"\n"), Position(status.st_ino, offset + end + 1)
