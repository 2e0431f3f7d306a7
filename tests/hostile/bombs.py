"""Small files that claim to be huge: the archives that once cost a worker gigabytes.

Built in a fraction of a second where they can be: the repeated part is compressed once and
its compressed stream repeated, since bzip2 reads concatenated streams as one. The member
count bomb cannot repeat itself (each name differs), so it is written header by header.
"""

import bz2
import lzma
import tarfile

BLOCK = tarfile.BLOCKSIZE
CHUNK = 16 << 20


def long_name_archive(size: int) -> bytes:
    """A .tar.bz2 whose first header is a GNU long name of `size` bytes of "a"."""
    assert size % CHUNK == 0
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = size
    head = header.tobuf(tarfile.GNU_FORMAT)
    chunk = bz2.compress(b"a" * CHUNK, 1)
    first = bz2.compress(head + b"a" * (CHUNK - len(head)), 1)
    # The rest of the name, then a member it would name and the end of the archive.
    tail_member = tarfile.TarInfo("x").tobuf(tarfile.GNU_FORMAT)
    last = bz2.compress(b"a" * len(head) + tail_member + bytes(2 * BLOCK), 1)
    return first + chunk * (size // CHUNK - 1) + last


def sparse_tar(name: str, real_size: int) -> bytes:
    """An old-GNU sparse member of `real_size` bytes holding one 512-byte block at its end."""
    info = tarfile.TarInfo(name)
    info.size = BLOCK
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[156:157] = tarfile.GNUTYPE_SPARSE
    buf[386:398] = tarfile.itn(real_size - BLOCK, 12, tarfile.GNU_FORMAT)
    buf[398:410] = tarfile.itn(BLOCK, 12, tarfile.GNU_FORMAT)
    buf[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)
    buf[148:156] = b"        "
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf) + b"s" * BLOCK + bytes(2 * BLOCK)


def zeros_archive(name: str, size: int) -> bytes:
    """A .tar.bz2 holding one file of `size` zero bytes: a decompression bomb."""
    assert size % CHUNK == 0
    header = tarfile.TarInfo(name)
    header.size = size
    head = header.tobuf(tarfile.GNU_FORMAT)
    chunk = bz2.compress(bytes(CHUNK), 1)
    return bz2.compress(head, 1) + chunk * (size // CHUNK) + bz2.compress(bytes(2 * BLOCK), 1)


def member_count_archive(count: int, folder: str = "m") -> bytes:
    """A .tar.xz of `count` empty files in one folder, `m/0000000` on: a few MB that
    unpack to `count` inodes. Headers are stamped from one template, a batch at a time."""
    template = bytearray(tarfile.TarInfo(f"{folder}/{0:07d}").tobuf(tarfile.USTAR_FORMAT))
    start = len(folder) + 1
    template[148:156] = b" " * 8
    base = sum(template) - 7 * ord("0")
    compressor = lzma.LZMACompressor(preset=0)
    parts = []
    batch = 8192
    for first in range(0, count, batch):
        chunk = bytearray()
        for number in range(first, min(count, first + batch)):
            digits = b"%07d" % number
            template[start : start + 7] = digits
            template[148:155] = b"%06o\0" % (base + sum(digits))
            chunk += template
        parts.append(compressor.compress(bytes(chunk)))
    parts.append(compressor.compress(bytes(2 * BLOCK)))
    parts.append(compressor.flush())
    return b"".join(parts)
