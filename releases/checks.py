"""The small checks on a build's side files: its .md5, its .contents and its contents hash.

Each failure is a `Refused` carrying a code from `releases.reasons`, except a contents
hash command that cannot run at all: that is the host's fault, not the build's.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
from collections.abc import Iterator

from portal import commands
from releases import jsonscan
from releases.reasons import Refused, render

BOM = b"\xef\xbb\xbf"
# GNU md5sum writes "\" before the hash when it had to escape the file name.
_MD5_LINE = re.compile(
    r"(?P<escaped>\\?)(?P<hash>[0-9A-Fa-f]{32})(?:(?P<sep> \*|  | )(?P<name>.*))?"
)
# BSD `md5` and `md5sum --tag` write "MD5 (name) = hash"; `md5sum -c` accepts it too.
_MD5_TAGGED = re.compile(r"MD5 \((?P<name>.+)\) = (?P<hash>[0-9A-Fa-f]{32})")
_HEX_WORD = re.compile(r"[0-9A-Fa-f]+")

CONTENTS_HASH_RE = re.compile(r"\A[A-Za-z0-9+/=_.:-]{8,128}\Z")
# Longest value echoed back in a hash_invalid message: it may be a whole command's output.
SHOWN_VALUE = 200
SHOWN_STDERR = 500
# A .contents file is read this much at a time; its check needs a few times this in memory.
CONTENTS_CHUNK = 1024 * 1024


def parse_md5_file(data: bytes, tarball_name: str) -> tuple[str, bool]:
    """Return (lowercase md5, bare) where bare means the file held only the hash."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("md5_bad_encoding") from None
    if "\0" in text:
        raise Refused("md5_bad_encoding")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise Refused("md5_format", problem="the file is empty")
    if len(lines) > 1:
        raise Refused("md5_several_lines", count=len(lines))
    line = lines[0]

    if match := _MD5_TAGGED.fullmatch(line):
        name = match["name"]
    elif match := _MD5_LINE.fullmatch(line):
        if match["sep"] is None:
            return match["hash"].lower(), True
        name = match["name"]
        if match["escaped"]:
            name = _unescape(name)
    else:
        raise Refused("md5_format", problem=_md5_problem(line))

    declared = name.strip()
    if not declared:
        raise Refused("md5_format", problem="the file name after the checksum is missing")
    if os.path.basename(declared) != tarball_name:
        raise Refused("md5_wrong_file", declared=declared, file=tarball_name)
    return match["hash"].lower(), False


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), name)


def _md5_problem(line: str) -> str:
    """Say what is wrong with a line that is not md5sum output, as precisely as we can."""
    first = line.split(None, 1)[0]
    if _HEX_WORD.fullmatch(first):
        if len(first) == 32:
            return "the checksum must be followed by two spaces and the file name"
        known = {40: " (a SHA-1 checksum?)", 64: " (a SHA-256 checksum?)"}
        return (
            f"the checksum has {len(first)} hexadecimal digits instead of 32"
            f"{known.get(len(first), '')}"
        )
    return "the line does not start with a 32-digit hexadecimal checksum"


def check_contents(path, *, max_bytes: int, chunk_bytes: int = CONTENTS_CHUNK) -> str:
    """Check the .contents file is non-empty UTF-8 JSON within the limit; return its sha256.

    The file is read, hashed, decoded and checked a chunk at a time, so a file near the
    limit costs a few chunks of memory (json.loads of one once took a worker to 5 GB). The
    size and encoding refusals win over a JSON one, as when the file was read whole: after
    a JSON error the rest of the file is still read (not parsed).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        pieces = _utf8_pieces(fh, digest, max_bytes=max_bytes, chunk_bytes=chunk_bytes)
        try:
            jsonscan.validate(pieces)
        except jsonscan.NotJSON as exc:
            error = str(exc)
        else:
            return digest.hexdigest()
        for _piece in pieces:
            pass
    raise Refused("contents_not_json", error=error)


def _utf8_pieces(fh, digest, *, max_bytes: int, chunk_bytes: int) -> Iterator[str]:
    """Yield the file as text, a chunk at a time, feeding `digest` on the way.

    Size comes before encoding, as when the file was read whole: after bad UTF-8 the rest
    is still read, not decoded, in case it is too big."""
    seen = 0
    undecoded = b""  # a UTF-8 sequence cut by the chunk boundary
    bad_byte = None
    # One byte past the limit is enough to know it is too big, without reading it all.
    while data := fh.read(min(chunk_bytes, max_bytes + 1 - seen)):
        seen += len(data)
        if seen > max_bytes:
            raise Refused("contents_too_big", limit=max_bytes)
        if bad_byte is not None:
            continue
        digest.update(data)
        if undecoded:
            data = undecoded + data
        try:
            text, used = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError as exc:
            bad_byte = seen - len(data) + exc.start
            continue
        undecoded = data[used:]
        if text:
            yield text
    if not seen:
        raise Refused("contents_empty")
    if bad_byte is None and undecoded:
        try:
            codecs.utf_8_decode(undecoded, "strict", True)
        except UnicodeDecodeError as exc:
            bad_byte = seen - len(undecoded) + exc.start
    if bad_byte is not None:
        raise Refused("contents_not_utf8", position=bad_byte)


def normalise_contents_hash(value: str) -> str:
    stripped = value.strip()
    if not CONTENTS_HASH_RE.match(stripped):
        shown = stripped if len(stripped) <= SHOWN_VALUE else stripped[:SHOWN_VALUE] + "…"
        raise Refused("hash_invalid", value=shown)
    return stripped


class HashCommandUnavailable(Exception):
    """The contents hash command could not run here: the host's fault, not the build's."""

    code = "hash_command_unavailable"

    def __init__(self, error: str):
        self.params = {"error": error}
        super().__init__(error)

    @property
    def message(self) -> str:
        return render(self.code, self.params)

    def __str__(self):
        return self.message


def run_contents_hash_command(argv_template: list[str], path, *, timeout: int) -> str:
    """Run the configured command on a .contents file and return the hash it prints."""
    if not argv_template:
        raise HashCommandUnavailable("no command is configured")
    argv = [arg.replace("{path}", os.fspath(path)) for arg in argv_template]
    result = commands.run(argv, timeout=timeout)
    if result.status is None:
        raise HashCommandUnavailable(result.problem)
    if not result.ok:
        error = result.stderr[-SHOWN_STDERR:].strip()
        raise Refused("hash_command_failed", status=result.status, stderr=error)
    output = result.stdout.strip()
    if not output:
        raise Refused("hash_command_empty")
    return normalise_contents_hash(output.splitlines()[0])
