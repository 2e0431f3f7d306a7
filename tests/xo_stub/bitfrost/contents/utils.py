"""Stand-in for bitfrost.contents.utils on an XO (see tests/xo_stub/README.md)."""

import hashlib
import os


class UnifiedContents(object):
    def __init__(self, path):
        self.path = path

    def contents_hash(self):
        if os.environ.get("XO_STUB_FAIL"):
            raise ValueError("stand-in bitfrost told to fail")
        handle = open(self.path, "rb")
        try:
            return hashlib.sha256(handle.read()).hexdigest()
        finally:
            handle.close()
