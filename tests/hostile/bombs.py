"""Small files that claim to be huge: the archives that once cost a worker gigabytes.

Built in a fraction of a second: the repeated part is compressed once and its compressed
stream repeated, since bzip2 reads concatenated streams as one.
"""

import bz2
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
