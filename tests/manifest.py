"""Reading back the manifest validation stores (gzip of one JSON array per member, written by
`releases.archive`): the tests compare it with what GNU tar unpacks. The portal itself never
reads it back."""

import gzip
import io
import json
from collections.abc import Iterator

from releases.archive import ManifestEntry


def read_manifest(data: bytes) -> Iterator[ManifestEntry]:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
        for line in fh:
            path, type_, mode, size, sha256, link = json.loads(line)
            yield ManifestEntry(path, type_, mode, size, sha256, link)
