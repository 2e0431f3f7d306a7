"""The small checks on a build's side files: its .md5, its .contents and its contents hash.

Each failure is a `Refused` carrying a code from `releases.reasons`, except a contents
hash command that cannot run at all: that is the host's fault, not the build's.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import sys
from collections.abc import Iterator

import ijson

from portal import commands
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
# Deeper than this, Python's json module (which bitfrost reads .contents with) gives up.
MAX_JSON_DEPTH = 512
_OPENS = frozenset({"start_map", "start_array"})
_CLOSES = frozenset({"end_map", "end_array"})


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

    1. One pass reads, hashes and decodes it a chunk at a time: the size and encoding
       refusals come first, and memory stays a few chunks whatever the size. It also looks
       for what yajl would take but Python's json (which bitfrost reads it with) refuses, or
       what would crash ijson: a raw vertical tab or form feed (never valid JSON), and a
       run of more digits than Python converts (ijson's C parser can even segfault on one).
    2. A second pass parses it with ijson's C parser (yajl), a stream of events that keeps
       no document in memory (json.loads of a 200 MiB file once took a worker to 5 GB).
    """
    digest = hashlib.sha256()
    lexical = _LexicalScan()
    with open(path, "rb") as fh:
        for _text in _utf8_pieces(
            fh, digest, max_bytes=max_bytes, chunk_bytes=chunk_bytes, observe=lexical.feed
        ):
            pass
        if lexical.problem:
            raise Refused("contents_not_json", error=lexical.problem)
        fh.seek(0)
        try:
            depth = 0
            for event, _value in ijson.basic_parse(fh, buf_size=chunk_bytes):
                if event in _OPENS:
                    depth += 1
                    if depth > MAX_JSON_DEPTH:
                        raise Refused("contents_not_json", error="nested too deeply")
                elif event in _CLOSES:
                    depth -= 1
        except ijson.JSONError as exc:
            raise Refused("contents_not_json", error=_json_error(exc)) from None
        except UnicodeDecodeError:
            # yajl writes a lone low surrogate escape ("\udc00") as bytes ijson cannot
            # decode; json.loads would take it, but no real manifest has one.
            raise Refused("contents_not_json", error=LONE_SURROGATE) from None
    return digest.hexdigest()


LONE_SURROGATE = "lexical error: a lone low surrogate escape (\\udc00-\\udfff)"


class _LexicalScan:
    """Raw bytes yajl and Python's json disagree on, found chunk by chunk."""

    def __init__(self):
        self.problem = ""
        self.seen = 0
        self.digits = 0  # digits at the end of what was seen so far

    def feed(self, data: bytes):
        if not self.problem:
            if (bad := _BAD_WHITESPACE.search(data)) is not None:
                at = self.seen + bad.start()
                self.problem = f"lexical error: a vertical tab or form feed at byte {at}"
            elif self._longest_digit_run(data) > INT_DIGITS:
                self.problem = f"lexical error: a number of more than {INT_DIGITS} digits"
        self.seen += len(data)

    def _longest_digit_run(self, data: bytes) -> int:
        # The run that ended the previous chunk goes on with this chunk's leading digits.
        head = len(data) - len(data.lstrip(_DIGITS))
        longest = self.digits + head
        if head == len(data):
            self.digits = longest
            return longest
        self.digits = len(data) - len(data.rstrip(_DIGITS))
        return max(longest, *(len(run) for run in _DIGIT_RUN.findall(data)), 0)


INT_DIGITS = sys.int_info.default_max_str_digits
_BAD_WHITESPACE = re.compile(rb"[\x0b\x0c]")
_DIGITS = b"0123456789"
_DIGIT_RUN = re.compile(rb"[0-9]{%d,}" % (INT_DIGITS + 1))


def _json_error(exc: Exception) -> str:
    """yajl's message, first line only: the rest is a copy of the text around the error.
    ijson hands it over as bytes when that copy cuts a character in two."""
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    text = str(message).strip().splitlines()
    return text[0][:SHOWN_VALUE] if text else type(exc).__name__


def _utf8_pieces(fh, digest, *, max_bytes: int, chunk_bytes: int, observe=None) -> Iterator[str]:
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
        if observe is not None:
            observe(data)
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
