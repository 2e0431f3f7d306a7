"""Tar archives written byte by byte, the way an adversary would write them.

Python's `tarfile` cannot write the headers that matter here (a size field with a leading
NUL, a prefix field under the GNU magic, two long names in a row, a bad checksum), and a
test that makes its archives with the parser it checks never meets a header the two read
differently (issue 19). So this module builds every 512-byte header field by field, from
values that are either numbers (encoded the way GNU tar writes them) or raw bytes (placed
as given, so any encoding can be tried), and leaves every judgement to GNU tar.

Pure: values in, bytes out; deterministic. The layout (POSIX ustar, GNU and PAX):

    offset  size  field            offset  size  field
         0   100  name                257     6  magic
       100     8  mode                263     2  version
       108     8  uid                 265    32  uname
       116     8  gid                 297    32  gname
       124    12  size                329     8  devmajor
       136    12  mtime               337     8  devminor
       148     8  chksum              345   155  prefix (ustar) / atime, ctime, offset,
       156     1  typeflag                         sparse map, isextended, realsize (GNU)
       157   100  linkname            500    12  (padding)
"""

from __future__ import annotations

import bz2
import lzma
from dataclasses import dataclass, replace

BLOCK = 512
# GNU tar writes (and reads) in records of 20 blocks.
RECORD = 20 * BLOCK

USTAR_MAGIC = b"ustar\x00"
USTAR_VERSION = b"00"
# The old GNU format: "ustar  \0" across magic and version; the prefix field's bytes are
# then atime, ctime and the sparse map, and GNU tar ignores them as a prefix.
GNU_MAGIC = b"ustar "
GNU_VERSION = b" \x00"
LONGLINK = b"././@LongLink"
MTIME = 1_700_000_000

FIELDS = (
    ("name", 0, 100),
    ("mode", 100, 8),
    ("uid", 108, 8),
    ("gid", 116, 8),
    ("size", 124, 12),
    ("mtime", 136, 12),
    ("chksum", 148, 8),
    ("typeflag", 156, 1),
    ("linkname", 157, 100),
    ("magic", 257, 6),
    ("version", 263, 2),
    ("uname", 265, 32),
    ("gname", 297, 32),
    ("devmajor", 329, 8),
    ("devminor", 337, 8),
    ("prefix", 345, 155),
)
WIDTH = {name: width for name, _offset, width in FIELDS}
NUMERIC = ("mode", "uid", "gid", "size", "mtime", "devmajor", "devminor")
CHECKSUMS = (
    "standard",  # 6 octal digits, NUL, space (what GNU tar and POSIX write)
    "seven",  # 7 octal digits, NUL
    "space",  # 6 octal digits, space, space
    "eight",  # 8 octal digits, no terminator
    "leading-spaces",  # blanks, then the digits, NUL
    "leading-nul",  # NUL, then 6 digits, space
    "signed",  # the sum of the bytes as signed chars (old Sun tar)
    "wrong",  # off by one
    "zero",  # all zero digits
    "blank",  # eight spaces (the value the field has while summing)
)


# --- Numeric fields ------------------------------------------------------------------------


def octal(value: int, width: int, *, end: bytes = b"\x00", digits: int | None = None) -> bytes:
    """`value` in octal, zero-padded to fill the field with `end` after it (GNU's layout:
    width - 1 digits and a NUL). Negative values get a minus sign, which GNU tar refuses."""
    if digits is None:
        digits = width - len(end)
    text = ("-" if value < 0 else "") + format(abs(value), "o").rjust(digits, "0")
    return text.encode() + end


def base256(value: int, width: int) -> bytes:
    """GNU's binary encoding: first byte 0x80 (0xff for a negative value), then the value in
    two's complement, big-endian, in the remaining bytes; truncated if it does not fit."""
    body = value % (1 << (8 * width))
    raw = body.to_bytes(width, "big")
    return bytes([0xFF if value < 0 else 0x80 | raw[0]]) + raw[1:]


_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def base64(value: int, width: int) -> bytes:
    """GNU tar 1.13.6-1.13.11's obsolete base-64: a sign ('+' or '-'), then six-bit digits."""
    digits = []
    magnitude = abs(value)
    while magnitude:
        digits.append(_BASE64[magnitude & 63])
        magnitude >>= 6
    body = bytes(reversed(digits)) or b"A"
    return (b"-" if value < 0 else b"+") + body.rjust(width - 1, b"A")[: width - 1]


def fit(raw: bytes, width: int) -> bytes:
    """Raw bytes for a field: NUL-padded, cut if longer."""
    return raw[:width].ljust(width, b"\x00")


def encode_value(value, width: int) -> bytes:
    if isinstance(value, int):
        if 0 <= value < 8 ** (width - 1):
            return octal(value, width)
        return base256(value, width)
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return fit(value, width)


def as_bytes(text) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")
    return text


# --- Headers -------------------------------------------------------------------------------


@dataclass
class Header:
    """One 512-byte header. Numbers are written as GNU tar would (octal, or base-256 when
    too large); bytes are placed as given. `chksum` is a style from CHECKSUMS or raw bytes.
    `gnu_extra`, when set, is written over bytes 345-500 (the old GNU format's atime, ctime,
    offset, sparse map, isextended and realsize) instead of the prefix."""

    name: bytes | str = b""
    mode: int | bytes = 0o644
    uid: int | bytes = 0
    gid: int | bytes = 0
    size: int | bytes = 0
    mtime: int | bytes = MTIME
    chksum: str | bytes = "standard"
    typeflag: bytes = b"0"
    linkname: bytes | str = b""
    magic: bytes = USTAR_MAGIC
    version: bytes = USTAR_VERSION
    uname: bytes | str = b"root"
    gname: bytes | str = b"root"
    devmajor: int | bytes = 0
    devminor: int | bytes = 0
    prefix: bytes | str = b""
    gnu_extra: bytes | None = None
    # Bytes 500-512, padding in every format.
    tail: bytes = b""

    def encode(self) -> bytes:
        block = bytearray(BLOCK)
        for name, offset, width in FIELDS:
            if name == "chksum":
                value = b" " * 8
            elif name in NUMERIC:
                value = encode_value(getattr(self, name), width)
            else:
                value = fit(as_bytes(getattr(self, name)), width)
            block[offset : offset + width] = value
        if self.gnu_extra is not None:
            block[345:500] = fit(self.gnu_extra, 155)
        block[500:512] = fit(self.tail, 12)
        block[148:156] = checksum_field(bytes(block), self.chksum)
        return bytes(block)


def checksum_field(block: bytes, style) -> bytes:
    """The checksum field for a header whose chksum bytes are spaces, in a given style."""
    if isinstance(style, bytes):
        return fit(style, 8)
    unsigned = sum(block)
    signed = sum(b - 256 if b > 127 else b for b in block)
    if style == "standard":
        return octal(unsigned, 8, end=b"\x00 ", digits=6)
    if style == "seven":
        return octal(unsigned, 8, end=b"\x00", digits=7)
    if style == "space":
        return octal(unsigned, 8, end=b"  ", digits=6)
    if style == "eight":
        return octal(unsigned, 8, end=b"", digits=8)
    if style == "leading-spaces":
        return b"  " + octal(unsigned, 6, end=b"\x00", digits=5)
    if style == "leading-nul":
        return b"\x00" + octal(unsigned, 7, end=b" ", digits=6)
    if style == "signed":
        return octal(signed, 8, end=b"\x00 ", digits=6)
    if style == "wrong":
        return octal(unsigned + 1, 8, end=b"\x00 ", digits=6)
    if style == "zero":
        return b"000000\x00 "
    if style == "blank":
        return b" " * 8
    raise ValueError(f"unknown checksum style {style!r}")


def pad(data: bytes, fill: bytes = b"\x00") -> bytes:
    """Data blocks: `data` padded to a whole number of blocks with `fill` (one byte)."""
    rest = -len(data) % BLOCK
    return data + fill * rest


def entry(header: Header, data: bytes = b"", *, fill: bytes = b"\x00") -> bytes:
    """A header and its data blocks; the size field is the caller's (it may lie)."""
    return header.encode() + pad(data, fill)


def end(blocks: int = 2) -> bytes:
    """The end-of-archive marker: two zero blocks (GNU tar takes one, with a warning)."""
    return bytes(BLOCK * blocks)


def to_record(data: bytes) -> bytes:
    """Zero-padded to a whole record, as GNU tar writes archives."""
    return data + bytes(-len(data) % RECORD)


# --- Names ---------------------------------------------------------------------------------


def ustar_split(path: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for a path that does not fit the 100-byte name field, split at a slash
    the way POSIX allows; None when it cannot be split."""
    if len(path) <= 100:
        return b"", path
    for cut in range(len(path) - 1, 0, -1):
        leaf = len(path) - cut - 1
        if path[cut : cut + 1] == b"/" and cut <= 155 and 0 < leaf <= 100:
            return path[:cut], path[cut + 1 :]
    return None


def gnu_long(kind: bytes, name, *, nul: bool = True, size=None, **fields) -> bytes:
    """A GNU long name (kind b"L") or long link name (b"K") record for the header after it:
    a header named ././@LongLink whose data is the name, NUL-terminated unless `nul` is
    false. `size` overrides the size field (a lie, or an encoding)."""
    data = as_bytes(name) + (b"\x00" if nul else b"")
    header = Header(
        name=LONGLINK,
        mode=0,
        uid=0,
        gid=0,
        size=len(data) if size is None else size,
        mtime=0,
        typeflag=kind,
        magic=GNU_MAGIC,
        version=GNU_VERSION,
        uname=b"root",
        gname=b"root",
    )
    return entry(replace(header, **fields), data)


def pax_record(key, value, *, length: int | bytes | None = None, newline: bool = True) -> bytes:
    """One PAX record, `"<length> <key>=<value>\\n"`, whose length counts itself; `length`
    writes another number (or any bytes) instead."""
    body = b" " + as_bytes(key) + b"=" + as_bytes(value) + (b"\n" if newline else b"")
    if length is None:
        size = len(body) + 1
        while len(str(size)) + len(body) != size:
            size = len(str(size)) + len(body)
        length = size
    prefix = str(length).encode() if isinstance(length, int) else length
    return prefix + body


def pax_records(pairs) -> bytes:
    """Well-formed records for (key, value) pairs, in order (repeats allowed)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(pax_record(key, value) for key, value in items)


def pax(records: bytes, *, kind: bytes = b"x", name=b"PaxHeaders/member", size=None, **fields):
    """A PAX extended header (kind b"x", for the next member) or global header (b"g")
    carrying `records` as its data."""
    header = Header(
        name=name,
        mode=0o644,
        size=len(records) if size is None else size,
        typeflag=kind,
        uname=b"",
        gname=b"",
    )
    return entry(replace(header, **fields), records)


# --- Members -------------------------------------------------------------------------------

TYPEFLAGS = {
    "f": b"0",
    "h": b"1",
    "l": b"2",
    "c": b"3",
    "b": b"4",
    "d": b"5",
    "p": b"6",
    "C": b"7",
}


def member(
    path,
    kind: str = "f",
    data: bytes = b"",
    *,
    mode: int | bytes | None = None,
    link=b"",
    fmt: str = "gnu",
    uid: int = 0,
    gid: int = 0,
    **fields,
) -> bytes:
    """A well-formed member in one format: "gnu" (old GNU magic, GNU long names), "ustar"
    (POSIX magic, long paths split into the prefix field), "pax" (POSIX magic, path and
    link in a PAX header) or "v7" (no magic). `fields` override header fields."""
    path, link = as_bytes(path), as_bytes(link)
    if mode is None:
        mode = {"d": 0o755, "l": 0o777}.get(kind, 0o644)
    header = Header(
        name=path,
        mode=mode,
        uid=uid,
        gid=gid,
        size=len(data),
        typeflag=TYPEFLAGS.get(kind, kind.encode() if isinstance(kind, str) else kind),
        linkname=link,
    )
    before = b""
    if fmt == "gnu":
        header = replace(header, magic=GNU_MAGIC, version=GNU_VERSION)
        if len(path) > 100:
            before += gnu_long(b"L", path)
            header = replace(header, name=path[:100])
        if len(link) > 100:
            before += gnu_long(b"K", link)
            header = replace(header, linkname=link[:100])
    elif fmt == "ustar":
        split = ustar_split(path)
        if split is None:
            raise ValueError(f"{path!r} does not fit a ustar header")
        header = replace(header, prefix=split[0], name=split[1])
    elif fmt == "pax":
        pairs = [("path", path)]
        if link:
            pairs.append(("linkpath", link))
        before += pax(pax_records(pairs), name=b"PaxHeaders/" + path.rsplit(b"/", 1)[-1][:80])
        header = replace(header, name=path[:100], linkname=link[:100])
    elif fmt == "v7":
        header = replace(header, magic=b"", version=b"", uname=b"", gname=b"")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    header = replace(header, **fields)
    return before + entry(header, data)


def gnu_sparse(path, chunks: list[tuple[int, bytes]], realsize: int, **fields) -> bytes:
    """An old GNU sparse member (type S), as `tar -S` writes a small sparse file: the map
    (up to four offset/size pairs) in the header, the chunks' bytes as its data."""
    path = as_bytes(path)
    sparse = b"".join(
        octal(offset, 12) + octal(len(data), 12) for offset, data in chunks[:4]
    ).ljust(4 * 24, b"\x00")
    # atime 12, ctime 12, offset 12, longnames 4, unused 1, sparse 96, isextended 1, realsize 12
    extra = bytes(12 + 12 + 12 + 4 + 1) + sparse + b"\x00" + octal(realsize, 12)
    data = b"".join(data for _offset, data in chunks)
    header = Header(
        name=path,
        size=len(data),
        typeflag=b"S",
        magic=GNU_MAGIC,
        version=GNU_VERSION,
        gnu_extra=extra,
    )
    return entry(replace(header, **fields), data)


# --- Compression ---------------------------------------------------------------------------


def compress(data: bytes, how: str, *, after: bytes = b"", streams: int = 1) -> bytes:
    """`data` compressed as bzip2 ("bz2"), xz ("xz") or legacy lzma ("lzma"), in `streams`
    concatenated streams, followed by `after` (bytes the decompressor meets past the end)."""
    if streams > 1 and data:
        step = -(-len(data) // streams)
        parts = [data[i : i + step] for i in range(0, len(data), step)]
    else:
        parts = [data]
    out = b"".join(_compress_one(part, how) for part in parts)
    return out + after


def _compress_one(data: bytes, how: str) -> bytes:
    if how == "bz2":
        return bz2.compress(data, 1)
    if how == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=0)
    if how == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0)
    raise ValueError(f"unknown compression {how!r}")
