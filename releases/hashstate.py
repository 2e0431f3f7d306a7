"""md5 and sha256 whose state can be saved between requests: a resumable upload hashes each
chunk as it arrives, in whichever web process takes it, and the checksums of the whole file
come out at the end without reading it again.

hashlib cannot export its state, so this drives OpenSSL's own MD5 and SHA-256 (the
libcrypto Python's hashlib is built on, present wherever Python's ssl module is). Their
contexts are plain C structs of fixed layout (`openssl/md5.h`, `openssl/sha.h`), saved as
bytes. Calls through ctypes release the GIL, as hashlib's do, so the upload lanes still
overlap. Pure: no Django, no I/O beyond loading the library.
"""

import ctypes
import ctypes.util
import functools
from ctypes import c_uint32


class _MD5(ctypes.Structure):
    _fields_ = [
        ("abcd", c_uint32 * 4),
        ("nl", c_uint32),
        ("nh", c_uint32),
        ("data", c_uint32 * 16),
        ("num", c_uint32),
    ]


class _SHA256(ctypes.Structure):
    _fields_ = [
        ("h", c_uint32 * 8),
        ("nl", c_uint32),
        ("nh", c_uint32),
        ("data", c_uint32 * 16),
        ("num", c_uint32),
        ("md_len", c_uint32),
    ]


# name: (context struct, function prefix, digest size)
ALGORITHMS = {"md5": (_MD5, "MD5", 16), "sha256": (_SHA256, "SHA256", 32)}


class HashStateUnavailable(RuntimeError):
    """libcrypto could not be loaded: resumable uploads cannot run on this host."""


@functools.cache
def _library():
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for _struct, prefix, _size in ALGORITHMS.values():
            for suffix, argtypes in (
                ("_Init", [ctypes.c_void_p]),
                ("_Update", [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]),
                ("_Final", [ctypes.c_char_p, ctypes.c_void_p]),
            ):
                function = getattr(lib, prefix + suffix)
                function.argtypes = argtypes
                function.restype = ctypes.c_int
        return lib
    raise HashStateUnavailable("libcrypto (OpenSSL) was not found")


class ResumableHash:
    """`update` and `hexdigest` like hashlib's, plus `state()` bytes and `from_state`."""

    def __init__(self, name: str, state: bytes | None = None):
        struct, prefix, self.digest_size = ALGORITHMS[name]
        self.name = name
        self._functions = {
            part: getattr(_library(), f"{prefix}_{part}") for part in ("Init", "Update", "Final")
        }
        if state is None:
            self._ctx = struct()
            if self._functions["Init"](ctypes.byref(self._ctx)) != 1:
                raise HashStateUnavailable(f"{prefix}_Init failed")
        else:
            if len(state) != ctypes.sizeof(struct):
                raise ValueError(f"a saved {name} state has {ctypes.sizeof(struct)} bytes")
            self._ctx = struct.from_buffer_copy(state)

    @classmethod
    def from_state(cls, name: str, state: bytes) -> "ResumableHash":
        return cls(name, bytes(state))

    def update(self, data) -> None:
        data = bytes(data)
        self._functions["Update"](ctypes.byref(self._ctx), data, len(data))

    def state(self) -> bytes:
        return bytes(self._ctx)

    def hexdigest(self) -> str:
        """The digest of everything so far; the hash may still be updated after it."""
        ctx = type(self._ctx).from_buffer_copy(bytes(self._ctx))
        out = ctypes.create_string_buffer(self.digest_size)
        self._functions["Final"](out, ctypes.byref(ctx))
        return out.raw.hex()
