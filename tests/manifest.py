"""Reading back the manifest validation stores (gzip of one JSON array per entry, written by
`releases.manifest`): the tests compare it with what GNU tar unpacks."""

from collections.abc import Iterator

from releases.builddiff import read_manifest as _read
from releases.manifest import ManifestEntry


def read_manifest(data: bytes) -> Iterator[ManifestEntry]:
    return _read(data)
