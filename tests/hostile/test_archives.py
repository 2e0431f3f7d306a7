"""Broken archives: ACCEPTED at upload, then rejected by validation, never published.

Why these are not refused with a 4xx like the rest: a truncated or corrupt stream, a file
that is not a tar, a decompression bomb, an absolute or `..` member name, or a second tree
under versions/pristine/ can only be seen by unpacking the whole archive, and builds are
multi-GB files. The upload only streams and hashes the bytes; the validation task unpacks
the archive with GNU tar as a school server does (`releases.unpack`, issue 2). So the upload
answers 201, and the build then ends `invalid` with the specific reason: what tar or the
decompressor said, in their own words, or one of the portal's stricter rules. The same holds
for a contents hash that disagrees with the configured command, which validation runs.

Each row of BROKEN_CASES uploads through the API, runs validation synchronously (the task's
service, as a worker would), tries to publish, and asserts: `invalid` with the row's reason,
nothing in the puppet content folder, no updates.cfg write, no offered entry, no manifest,
and no change anywhere but the build's own row, its audit trail and its folder in the build
store.

ACCEPTED_CASES look hostile but GNU tar unpacks them on the school server all the same (a
sparse file, written at its apparent size; a repeated file, of which tar keeps the later
copy; a hard link to a symlink). They publish, and the emulated school server
(tests/schoolserver.py) serves exactly the manifest the portal recorded.
"""

import hashlib
import io
import random
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import translation

from portal.services import api_token_create
from releases import services, unpack
from releases.models import Build, BuildStatus, OfferedEntry

from .. import schoolserver
from ..factories import DEFAULT_TREE, compress, stage, tar_bytes, write_build
from ..manifest import read_manifest
from . import bombs, snapshot
from .test_builds import API_URL, Bad, upload_data

# Incompressible, so that cutting or damaging the middle of the stream hits real data.
TREE = dict(DEFAULT_TREE, **{"usr/lib/blob": random.Random(1).randbytes(50_000)})
# What a rejected build may change: its own row, its audit trail and its store folder.
OWN_TABLES = {"releases.build", "releases.auditevent"}
# The bzip2 decompressor validation runs on this host (lbzip2, pbzip2 or bzip2): each words
# its errors its own way, so the bz2 rows only name it.
BZIP2 = unpack.decompressor("bz2").label


def member(name, data=b"x", type_=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = 0o755 if type_ == tarfile.DIRTYPE else 0o644
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    return info, data if type_ == tarfile.REGTYPE else None


def link(name, target, type_=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = 0o777 if type_ == tarfile.SYMTYPE else 0o644
    info.linkname = target
    return info, None


def device(name, type_, major=1, minor=3):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = 0o666
    info.devmajor, info.devminor = major, minor
    return info, None


PRISTINE_DIR = "versions/pristine/21021"


def symlinked_pristine():
    """versions/pristine/<id> is a symlink to /: the school server would serve (and move!)
    its own root file system."""
    folders = [member(f, type_=tarfile.DIRTYPE) for f in ("versions", "versions/pristine")]
    return compress(tar_bytes({}, pristine=None, extra=[*folders, link(PRISTINE_DIR, "/")]), "bz2")


def truncated(compression):
    data = compress(tar_bytes(TREE), compression)
    return data[: len(data) // 2]


def corrupt(compression):
    data = bytearray(compress(tar_bytes(TREE), compression))
    middle = len(data) // 2
    for index in range(middle, middle + 64):
        data[index] ^= 0xFF
    return bytes(data)


def empty_tar():
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


@dataclass(frozen=True)
class Broken:
    id: str
    code: str
    expect: str  # a fragment of the English reason, quoting tar where tar decided
    tarball: bytes | None = None
    compression: str = "bz2"
    contents_hash: str = ""
    limits: dict = field(default_factory=dict)


def published_files():
    folder = django_settings.PUPPETCONTENT_OS_DIR
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def hash_command(script):
    return [sys.executable, "-c", script, "{path}"]


BROKEN_CASES = [
    *[
        Broken(f"truncated-{c}", "archive_decompress_failed", expect, truncated(c), c)
        for c, expect in (
            ("bz2", f"{BZIP2} cannot decompress the archive (exit status "),
            ("xz", "xz cannot decompress the archive (exit status 1): “xz: (stdin): Unexpected"),
            ("lzma", "(exit status 1): “lzma: (stdin): Unexpected end of input”"),
        )
    ],
    *[
        Broken(f"corrupt-{c}", "archive_decompress_failed", expect, corrupt(c), c)
        for c, expect in (
            ("bz2", f"{BZIP2} cannot decompress the archive (exit status "),
            ("xz", "(exit status 1): “xz: (stdin): Compressed data is corrupt”"),
            ("lzma", "(exit status 1): “lzma: (stdin): Compressed data is corrupt”"),
        )
    ],
    *[
        Broken(
            f"not-a-tar-{c}",
            "archive_tar_failed",
            "fails on this archive (exit status 2): “tar: This does not look like a tar archive”",
            compress(random.Random(2).randbytes(5000), c),
            c,
        )
        for c in ("bz2", "xz", "lzma")
    ],
    Broken(
        "gzip-named-bz2",
        "archive_decompress_failed",
        f"{BZIP2} cannot decompress the archive (exit status ",
        b"\x1f\x8b\x08\x00" + random.Random(3).randbytes(500),
    ),
    Broken(
        "plain-tar-named-xz",
        "archive_decompress_failed",
        "(exit status 1): “xz: (stdin): File format not recognized”",
        tar_bytes(TREE),
        "xz",
    ),
    Broken(
        "bomb-unpacked-size",
        "archive_too_big",
        "unpacks to more than 100000 bytes",
        compress(tar_bytes({"dev/zero": bytes(5_000_000)}), "xz"),
        "xz",
        limits={"MAX_UNPACKED_BYTES": 100_000},
    ),
    Broken(
        "bomb-member-count",
        "archive_too_many",
        "holds more than 20 entries",
        compress(tar_bytes({f"etc/f{n}": b"" for n in range(100)}), "bz2"),
        limits={"MAX_ARCHIVE_MEMBERS": 20},
    ),
    Broken(
        "absolute-member",
        "archive_tar_warning",
        "GNU tar unpacks this archive but warns: “tar: Removing leading `/' from member names”",
        compress(tar_bytes(TREE, extra=[member("/etc/shadow")]), "bz2"),
    ),
    Broken(
        # tar skips the member and exits 2; the reason quotes one of its two lines on it.
        "parent-member",
        "archive_tar_failed",
        "versions/pristine/21021/../../../",
        compress(
            tar_bytes(TREE, extra=[member("versions/pristine/21021/../../../etc/cron.d/evil")]),
            "bz2",
        ),
    ),
    Broken(
        "two-pristine-trees",
        "archive_several_pristine",
        "versions/pristine/ holds 2 entries (21021, 99999)",
        compress(tar_bytes(TREE, extra=[member("versions/pristine/99999/etc/issue")]), "bz2"),
    ),
    Broken(
        "empty-pristine",
        "archive_empty_pristine",
        "versions/pristine/ is present but empty.",
        compress(
            tar_bytes(
                {},
                pristine=None,
                extra=[
                    member("versions", type_=tarfile.DIRTYPE),
                    member("versions/pristine", type_=tarfile.DIRTYPE),
                ],
            ),
            "bz2",
        ),
    ),
    # What GNU tar on the school server fails on, or unpacks differently (issue 9).
    Broken(
        "xz-data-named-lzma",
        "archive_lzma_is_xz",
        "named .tar.lzma but holds xz data",
        compress(tar_bytes(TREE), "xz"),
        "lzma",
    ),
    Broken(
        "hard-link-to-a-missing-target",
        "archive_tar_failed",
        "“tar: versions/pristine/21021/bin/sh: Cannot hard link to 'versions/pristine/21021/"
        "bin/bash': No such file or directory”",
        compress(
            tar_bytes(
                TREE,
                extra=[link(f"{PRISTINE_DIR}/bin/sh", f"{PRISTINE_DIR}/bin/bash", tarfile.LNKTYPE)],
            ),
            "bz2",
        ),
    ),
    Broken(
        "pristine-symlink-to-root",
        "archive_served_not_directory",
        "“versions/pristine/21021” is a symbolic link, not a directory. School servers would "
        "serve (and move into place) whatever it points to.",
        symlinked_pristine(),
    ),
    Broken(
        "file-written-through-a-symlink-to-tmp",
        "archive_tar_failed",
        "“tar: versions/pristine/21021/tmp/evil: Cannot open: Not a directory”",
        compress(
            tar_bytes(
                TREE,
                extra=[link(f"{PRISTINE_DIR}/tmp", "/tmp"), member(f"{PRISTINE_DIR}/tmp/evil")],
            ),
            "bz2",
        ),
    ),
    *[
        Broken(
            f"device-{label}",
            "archive_device_node",
            f"“{PRISTINE_DIR}/dev/node” is {article}. Device nodes are refused",
            compress(tar_bytes(TREE, extra=[device(f"{PRISTINE_DIR}/dev/node", type_)]), "xz"),
            "xz",
        )
        for label, type_, article in (
            ("character", tarfile.CHRTYPE, "a character device"),
            ("block", tarfile.BLKTYPE, "a block device"),
            ("fifo", tarfile.FIFOTYPE, "a FIFO"),
        )
    ],
    Broken(
        # tar, held to a few hundred MB, runs out of memory reading the name: a school
        # server's tar would allocate the gibibyte, then fail to create the file.
        "gnu-long-name-of-a-gibibyte",
        "archive_tar_failed",
        "fails on this archive (exit status 2): “tar: memory exhausted”",
        bombs.long_name_archive(1 << 30),
    ),
    Broken(
        # 20 GiB at its apparent size, though the archive holds one block of it.
        "sparse-member-over-the-limit",
        "archive_too_big",
        "unpacks to more than 1073741824 bytes",
        compress(bombs.sparse_tar("etc/big", 20 << 30), "bz2"),
        limits={"MAX_UNPACKED_BYTES": 1 << 30},
    ),
    Broken(
        "no-members",
        "archive_empty",
        "The archive holds no files.",
        compress(empty_tar(), "xz"),
        "xz",
    ),
    Broken(
        "contents-hash-mismatch",
        "hash_mismatch",
        "The contents hash entered (enteredhash0001) differs from the one computed",
        contents_hash="enteredhash0001",
        limits={"CONTENTS_HASH_COMMAND": hash_command("print('computedhash0002')")},
    ),
    Broken(
        "contents-hash-command-fails",
        "hash_command_failed",
        "failed on this .contents file (exit status 3): not a manifest",
        limits={
            "CONTENTS_HASH_COMMAND": hash_command(
                "import sys; sys.stderr.write('not a manifest'); sys.exit(3)"
            )
        },
    ),
    Broken(
        "contents-hash-command-prints-garbage",
        "hash_invalid",
        "is not a contents hash",
        limits={"CONTENTS_HASH_COMMAND": hash_command("print('<not a hash>')")},
    ),
]


@pytest.mark.parametrize("case", BROKEN_CASES, ids=lambda case: case.id)
def test_a_broken_archive_is_accepted_then_ends_invalid_and_is_never_published(
    case, cast, settings, tmp_path
):
    for key, value in case.limits.items():
        setattr(settings, key, value)
    files = write_build(
        tmp_path / "in", "py801-2", compression=case.compression, tarball=case.tarball
    )
    _token, key = api_token_create(user=cast.alice)
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    before = snapshot.take()

    good = Bad("upload", (), contents_hash=case.contents_hash)
    response = client.post(API_URL, upload_data(files, good))
    assert response.status_code == 201, response.content
    build = Build.objects.get(name="py801-2")
    assert build.status == BuildStatus.UPLOADED

    assert services.build_validate(build_id=build.pk)
    assert not services.build_publish(build_id=build.pk)
    build.refresh_from_db()
    with translation.override("en"):
        assert (build.status, build.status_code) == (BuildStatus.INVALID, case.code)
        assert case.expect in build.status_detail

    after = snapshot.take()
    changed = {line.split(":")[0] for line in snapshot.differences(before, after)}
    store = django_settings.BUILD_STORE_DIR.relative_to(django_settings.PORTAL_DATA_DIR)
    assert changed <= OWN_TABLES | {"file added"}, snapshot.differences(before, after)
    added = set(after.files) - set(before.files)
    assert added and all(path.startswith(f"{store}/{build.store_dir}") for path in added)
    assert published_files() == []
    assert after.config == before.config
    assert not OfferedEntry.objects.exists()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Taken:
    """An archive GNU tar unpacks on the school server: it publishes."""

    id: str
    tarball: bytes
    serves: Callable[[dict], bool]  # what the served tree shows of it (path -> Entry)
    compression: str = "bz2"


ACCEPTED_CASES = [
    Taken(
        # A gibibyte at its apparent size (under MAX_UNPACKED_BYTES), a block of it on disk.
        "sparse-member-of-1-gib",
        compress(bombs.sparse_tar("etc/big", 1 << 30), "bz2"),
        lambda tree: tree["etc/big"].size == 1 << 30,
    ),
    Taken(
        # tar keeps the later copy, and the manifest is read from what tar left.
        "second-etc-passwd",
        compress(
            tar_bytes(
                {**TREE, "etc/passwd": b"root:x:0:0::/root:/bin/sh\n"},
                extra=[member(f"{PRISTINE_DIR}/etc/passwd", b"root::0:0::/root:/bin/sh\n")],
            ),
            "bz2",
        ),
        lambda tree: tree["etc/passwd"].sha256 == sha256(b"root::0:0::/root:/bin/sh\n"),
    ),
    Taken(
        # GNU tar links the symlink itself, as olpc-update's run farm has it.
        "hard-link-to-a-symlink",
        compress(
            tar_bytes(
                TREE,
                extra=[
                    link(f"{PRISTINE_DIR}/bin/sh", "bash"),
                    link(f"{PRISTINE_DIR}/bin/rsh", f"{PRISTINE_DIR}/bin/sh", tarfile.LNKTYPE),
                ],
            ),
            "bz2",
        ),
        lambda tree: tree["bin/rsh"].type == "l" and tree["bin/rsh"].ino == tree["bin/sh"].ino,
    ),
]


@pytest.mark.parametrize("case", ACCEPTED_CASES, ids=lambda case: case.id)
def test_an_archive_gnu_tar_takes_is_published_and_served_as_recorded(case, cast, tmp_path):
    schoolserver.check_tools()
    files = write_build(
        tmp_path / "in", "py801-2", compression=case.compression, tarball=case.tarball
    )
    _token, key = api_token_create(user=cast.alice)
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.post(API_URL, upload_data(files, Bad("upload", ())))
    assert response.status_code == 201, response.content
    build = Build.objects.get(name="py801-2")

    assert services.build_validate(build_id=build.pk)
    assert services.build_publish(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED, build.status_detail

    folder = django_settings.PUPPETCONTENT_OS_DIR
    assert schoolserver.md5_check(folder, build.tarball_name)
    served = schoolserver.unpack(folder / build.tarball_name)
    assert served.ok, served.problem
    assert served.served == (f"versions/pristine/{build.pristine_id}" if build.pristine_id else "")
    assert schoolserver.compare_with_manifest(served, read_manifest(build.manifest.data)) == []
    assert case.serves(served.tree)


def test_validation_still_rejects_contents_the_upload_did_not_check(cast, tmp_path):
    """The upload checks the .contents file, but a build staged any other way is checked
    again by validation: a number too long to convert once left it stuck in `validating`."""
    paths = write_build(tmp_path / "in", "py801-2", contents=b'{"size": ' + b"9" * 5000 + b"}")
    staged = [stage(path, django_settings.UPLOAD_TEMP_DIR) for path in paths]
    build = services.build_create(
        acting_user=cast.alice, tarball=staged[0], md5_file=staged[1], contents=staged[2]
    )
    assert services.build_validate(build_id=build.pk)
    build.refresh_from_db()
    assert (build.status, build.status_code) == (BuildStatus.INVALID, "contents_not_json")
    assert published_files() == []
