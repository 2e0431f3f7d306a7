"""Unpacking build archives with GNU tar under fakeroot, as a school server does: real
archives made here, in every compression a build can use, unpacked by the real tools.

These cases were written for the portal's own tar reader, which GNU tar has replaced. Each
keeps its archive; where GNU tar's verdict differs from the old reader's, a comment says so.
A refusal quotes the tool's own words, so the tests check for those words.
"""

import bz2
import errno
import fcntl
import gzip
import hashlib
import io
import lzma
import os
import random
import shutil
import subprocess
import tarfile

import pytest

from releases import unpack
from releases.manifest import ManifestEntry
from releases.reasons import Refused
from releases.unpack import ScratchUnavailable, sweep_scratch, unpack_archive

from ..manifest import read_manifest

BIG = 1 << 40
COMPRESSIONS = ["bz2", "xz", "lzma"]


# --- Making archives ------------------------------------------------------------------------


def entry(name, type_=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0, gid=0):
    return (name, type_, data, mode, link, uid, gid)


def tar_bytes(*entries, fmt=tarfile.PAX_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, type_, data, mode, link, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.type = type_
            info.mode = mode
            info.linkname = link
            info.uid, info.gid = uid, gid
            info.mtime = 1_700_000_000
            if type_ in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


def simple_tar(*names):
    return tar_bytes(*(entry(name, data=name.encode()) for name in names or ["etc/hostname"]))


def compress(data, compression):
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=0)
    return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0)


def tool(command, data):
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout


def sparse_tar(tmp_path, sizes):
    """An uncompressed tar made by `tar -S`: one sparse file per size, each a hole with a
    few bytes at its start."""
    source = tmp_path / "sparse"
    source.mkdir()
    names = []
    for number, size in enumerate(sizes):
        name = f"disk{number}.img"
        with open(source / name, "wb") as fh:
            fh.write(b"data")
            fh.truncate(size)
        names.append(name)
    return tool(["tar", "-C", source, "-S", "-cf", "-", *names], b"")


def write(tmp_path, data, compression="bz2"):
    path = tmp_path / f"py801-2-tree.tar.{compression}"
    path.write_bytes(data)
    return path


def scan(path, compression="bz2", **options):
    options = {"max_unpacked_bytes": BIG, "max_members": 1_000_000, **options}
    return unpack_archive(path, compression, scratch_dir=path.parent / "scratch", **options)


def rejection(path, compression="bz2", **options):
    with pytest.raises(Refused) as caught:
        scan(path, compression, **options)
    return caught.value.code, caught.value.params


def tar_says(path, compression="bz2", **options):
    """The line GNU tar failed with (exit status 2, its usual one for a bad archive)."""
    code, params = rejection(path, compression, **options)
    assert (code, params["status"]) == ("archive_tar_failed", "2")
    assert params["line"].startswith("tar: ")
    return params["line"]


def decompressor_says(path, compression, **options):
    """The line the decompressor failed with, checked to be that program's own."""
    code, params = rejection(path, compression, **options)
    label = unpack.decompressor(compression, parallel=options.get("parallel", True)).label
    assert (code, params["tool"]) == ("archive_decompress_failed", label)
    assert params["line"].startswith(f"{label}:")
    return params["line"]


def random_bytes(size, seed=8):
    return random.Random(seed).randbytes(size)


def listing(folder):
    return sorted(path.name for path in folder.iterdir())


PRISTINE_TREE = (
    entry("./", tarfile.DIRTYPE, mode=0o755),
    entry("./versions/", tarfile.DIRTYPE, mode=0o755),
    entry("./versions/pristine/", tarfile.DIRTYPE, mode=0o755),
    entry("./versions/pristine/os801/", tarfile.DIRTYPE, mode=0o755),
    entry("./versions/pristine/os801/hello.txt", data=b"hello\n"),
    entry("./versions/pristine/os801/su", data=b"#!/bin/sh\n", mode=0o4755),
    entry("./versions/pristine/os801/link", tarfile.SYMTYPE, mode=0o777, link="hello.txt"),
    entry(
        "./versions/pristine/os801/again",
        tarfile.LNKTYPE,
        link="./versions/pristine/os801/hello.txt",
    ),
)
# Device nodes: refused unless the deployment allows them (ARCHIVE_ALLOW_DEVICE_NODES).
DEVICES = (
    entry("./versions/pristine/os801/null", tarfile.CHRTYPE, mode=0o666),
    entry("./versions/pristine/os801/sda", tarfile.BLKTYPE, mode=0o660),
    entry("./versions/pristine/os801/initctl", tarfile.FIFOTYPE, mode=0o600),
)
HELLO = hashlib.sha256(b"hello\n").hexdigest()
SU = hashlib.sha256(b"#!/bin/sh\n").hexdigest()


# --- A good archive -------------------------------------------------------------------------


def test_it_writes_one_json_line_per_entry_in_the_manifest(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE, *DEVICES)))

    manifest = gzip.decompress(scan(path, allow_device_nodes=True).manifest)

    # The rows are the unpacked tree as walked, not the archive's members in order: the
    # served tree first, each folder sorted, then the folders around it; no row for the
    # root; owners as tar set them. So "again", walked first, is the file, and
    # "hello.txt" (the name the archive gave first) is the further name.
    assert manifest == (
        b'["versions/pristine/os801","d",493,0,"","",0,0]\n'
        b'["versions/pristine/os801/again","f",420,6,"' + HELLO.encode() + b'","",0,0]\n'
        b'["versions/pristine/os801/hello.txt","h",420,6,"' + HELLO.encode() + b'",'
        b'"versions/pristine/os801/again",0,0]\n'
        b'["versions/pristine/os801/initctl","p",384,0,"","",0,0]\n'
        b'["versions/pristine/os801/link","l",511,0,"","hello.txt",0,0]\n'
        b'["versions/pristine/os801/null","c",438,0,"","",0,0]\n'
        b'["versions/pristine/os801/sda","b",432,0,"","",0,0]\n'
        b'["versions/pristine/os801/su","f",2541,10,"' + SU.encode() + b'","",0,0]\n'
        b'["versions","d",493,0,"","",0,0]\n'
        b'["versions/pristine","d",493,0,"","",0,0]\n'
    )


def test_it_reads_the_manifest_back_as_entries(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE, *DEVICES)))

    entries = list(read_manifest(scan(path, allow_device_nodes=True).manifest))

    # Every member but the root "./", which the walk does not list.
    assert len(entries) == len(PRISTINE_TREE) + len(DEVICES) - 1
    assert entries[2] == ManifestEntry(
        "versions/pristine/os801/hello.txt",
        "h",
        0o644,
        6,
        HELLO,
        "versions/pristine/os801/again",
        0,
        0,
    )
    assert entries[4] == ManifestEntry(
        "versions/pristine/os801/link", "l", 0o777, 0, "", "hello.txt", 0, 0
    )


def test_it_gives_the_same_manifest_bytes_for_the_same_tree(tmp_path):
    first = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE)), "bz2")
    second = write(tmp_path, compress(tar_bytes(*PRISTINE_TREE), "xz"), "xz")

    assert scan(first, "bz2").manifest == scan(second, "xz").manifest


def test_it_counts_the_members_and_the_unpacked_bytes(tmp_path):
    data = tar_bytes(*PRISTINE_TREE)
    path = write(tmp_path, bz2.compress(data))

    result = scan(path)

    assert (result.members, result.unpacked_size) == (8, len(data))


def test_it_hashes_a_file_larger_than_one_read(tmp_path):
    payload = random_bytes(3 * 1024 * 1024 + 17)
    path = write(tmp_path, compress(tar_bytes(entry("big.bin", data=payload)), "xz"), "xz")

    [big] = read_manifest(scan(path, "xz").manifest)

    assert (big.size, big.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())


def test_it_reports_progress_as_compressed_bytes_read_of_the_whole(tmp_path):
    data = tar_bytes(entry("noise.bin", data=random_bytes(3 * 1024 * 1024)))
    path = write(tmp_path, compress(data, "xz"), "xz")
    calls = []

    scan(path, "xz", progress=lambda done, total: calls.append((done, total)))

    # The decompressor's read position, sampled every half second from the start: there
    # is no longer a last call at (size, size), as the old reader made.
    size = path.stat().st_size
    assert calls
    assert {total for _, total in calls} == {size}
    assert all(0 <= done <= size for done, _ in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_it_unpacks_an_archive_made_by_gnu_tar_and_bzip2(tmp_path):
    tree = tmp_path / "tree"
    (tree / "versions/pristine/os801/etc").mkdir(parents=True)
    (tree / "versions/pristine/os801/etc/hostname").write_text("xo\n")
    (tree / "versions/pristine/os801/lib").symlink_to("/usr/lib")
    archive = tmp_path / "py801-2-tree.tar.bz2"
    subprocess.run(["tar", "-C", tree, "-cjf", archive, "."], check=True)

    result = scan(archive)

    paths = [e.path for e in read_manifest(result.manifest)]
    assert result.pristine_id == "os801"
    assert "versions/pristine/os801/etc/hostname" in paths
    assert not [p for p in paths if p.startswith("./")]


def test_it_unpacks_an_xz_archive_made_by_the_xz_tool(tmp_path):
    path = write(tmp_path, tool(["xz", "-c"], simple_tar("a", "b")), "xz")

    assert scan(path, "xz").members == 2


def test_it_unpacks_an_lzma_archive_made_by_the_lzma_tool(tmp_path):
    path = write(tmp_path, tool(["lzma", "-z", "-c"], simple_tar("a", "b")), "lzma")

    assert scan(path, "lzma").members == 2


def test_it_unpacks_a_legacy_lzma_alone_archive(tmp_path):
    data = lzma.compress(simple_tar("a", "b"), format=lzma.FORMAT_ALONE)
    path = write(tmp_path, data, "lzma")

    assert scan(path, "lzma").members == 2


def test_it_refuses_xz_data_in_a_file_named_lzma(tmp_path):
    """The school server unpacks .tar.lzma with `lzma -cd`, which fails on xz data."""
    path = write(tmp_path, compress(simple_tar("a", "b"), "xz"), "lzma")

    assert rejection(path, "lzma") == ("archive_lzma_is_xz", {})


def test_it_reads_every_stream_of_a_multistream_bz2_archive(tmp_path):
    data = simple_tar("a", "b", "c")
    halves = tool(["bzip2", "-c"], data[:700]) + tool(["bzip2", "-c"], data[700:])
    path = write(tmp_path, halves)

    result = scan(path)

    assert (result.members, result.unpacked_size) == (3, len(data))


def test_it_reads_concatenated_xz_streams(tmp_path):
    data = simple_tar("a", "b", "c")
    path = write(tmp_path, tool(["xz", "-c"], data[:700]) + tool(["xz", "-c"], data[700:]), "xz")

    assert scan(path, "xz").members == 3


def test_it_accepts_null_padding_after_an_xz_stream(tmp_path):
    path = write(tmp_path, compress(simple_tar("a"), "xz") + bytes(8), "xz")

    assert scan(path, "xz").members == 1


@pytest.mark.parametrize("zeros", [1, 2, 3, 5])
def test_it_refuses_xz_padding_that_is_not_a_multiple_of_four_bytes(tmp_path, zeros):
    data = compress(simple_tar("a"), "xz")
    path = write(tmp_path, data + bytes(zeros), "xz")

    assert "Compressed data is corrupt" in decompressor_says(path, "xz")


def test_it_refuses_zero_padding_after_a_legacy_lzma_stream(tmp_path):
    data = compress(simple_tar("a"), "lzma")
    path = write(tmp_path, data + bytes(8), "lzma")

    assert "Compressed data is corrupt" in decompressor_says(path, "lzma")


def test_it_refuses_two_legacy_lzma_streams(tmp_path):
    """`lzma -cd` reads only the first .lzma stream and then reports corrupt data."""
    data = simple_tar("a", "b", "c")
    first = compress(data[:700], "lzma")
    path = write(tmp_path, first + compress(data[700:], "lzma"), "lzma")

    assert "Compressed data is corrupt" in decompressor_says(path, "lzma")


def test_it_accepts_absolute_and_climbing_symlink_targets(tmp_path):
    data = tar_bytes(
        entry("lib", tarfile.SYMTYPE, link="/usr/lib"),
        entry("etc/localtime", tarfile.SYMTYPE, link="../usr/share/zoneinfo/UTC"),
    )
    path = write(tmp_path, bz2.compress(data))

    links = {e.path: e.link for e in read_manifest(scan(path).manifest) if e.type == "l"}

    assert links == {"lib": "/usr/lib", "etc/localtime": "../usr/share/zoneinfo/UTC"}


def test_it_accepts_exactly_the_member_limit(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("a", "b", "c")))

    assert scan(path, max_members=3).members == 3


def test_it_accepts_an_archive_that_unpacks_to_exactly_the_limit(tmp_path):
    data = simple_tar("a")
    path = write(tmp_path, bz2.compress(data))

    assert scan(path, max_unpacked_bytes=len(data)).unpacked_size == len(data)


def test_it_gives_folders_tar_makes_itself_the_school_servers_mode(tmp_path):
    """tar makes the folders an archive does not list with the unpacking user's umask:
    the school server's 022, so 0755, not the worker's own."""
    path = write(tmp_path, bz2.compress(simple_tar("opt/implicit/file")))

    modes = {e.path: e.mode for e in read_manifest(scan(path).manifest)}

    assert modes == {"opt": 0o755, "opt/implicit": 0o755, "opt/implicit/file": 0o644}


# --- The pristine tree ----------------------------------------------------------------------


def test_it_takes_the_single_entry_under_versions_pristine_as_the_pristine_id(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE)))

    assert scan(path).pristine_id == "os801"


def test_it_finds_the_pristine_id_without_directory_entries(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/pristine/os802/etc/issue")))

    assert scan(path).pristine_id == "os802"


def test_it_gives_no_pristine_id_for_a_plain_root_tree(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("etc/issue", "versions/other/x")))

    assert scan(path).pristine_id == ""


def test_it_refuses_several_entries_under_versions_pristine(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/pristine/b/x", "versions/pristine/a")))

    assert rejection(path) == ("archive_several_pristine", {"count": 2, "entries": "a, b"})


def test_it_names_only_the_first_five_pristine_entries(tmp_path):
    names = [f"versions/pristine/os{n}/x" for n in (7, 3, 5, 1, 6, 2, 4)]
    path = write(tmp_path, bz2.compress(simple_tar(*names)))

    # Changed: no "…" after the five any more; the count says there are more.
    assert rejection(path) == (
        "archive_several_pristine",
        {"count": 7, "entries": "os1, os2, os3, os4, os5"},
    )


def test_it_refuses_an_empty_versions_pristine(tmp_path):
    data = tar_bytes(
        entry("versions/pristine/", tarfile.DIRTYPE, mode=0o755), entry("etc/issue", data=b"x")
    )
    path = write(tmp_path, bz2.compress(data))

    assert rejection(path) == ("archive_empty_pristine", {})


def test_it_accepts_a_dot_entry_beside_the_pristine_id_and_throws_it_away(tmp_path):
    """Changed: the old reader counted it as a second entry. The school server's `ls`
    leaves dot entries out, so it serves the id and throws the dot entry away."""
    path = write(
        tmp_path,
        bz2.compress(simple_tar("versions/pristine/os801/etc/issue", "versions/pristine/.keep")),
    )

    result = scan(path)

    assert result.pristine_id == "os801"
    assert result.summary["outside"] == ["versions/pristine/.keep"]


def test_it_refuses_a_versions_pristine_holding_only_a_dot_entry(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/pristine/.keep")))

    assert rejection(path) == ("archive_empty_pristine", {})


def test_it_accepts_names_that_are_not_utf8_and_shows_them_as_escapes(tmp_path):
    """GNU tar takes a name as bytes. The manifest keeps them (as surrogate escapes, so
    they round-trip); the pristine id and the summary, shown and stored elsewhere, have
    \\xNN instead."""
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape"
    ) as tar:
        for name in ("versions", "versions/pristine", "versions/pristine/os\udce9"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("versions/pristine/os\udce9/caf\udce9")
        info.size, info.mode = 1, 0o4755
        tar.addfile(info, io.BytesIO(b"x"))
    path = write(tmp_path, bz2.compress(out.getvalue()))

    result = scan(path)

    paths = [e.path for e in read_manifest(result.manifest)]
    assert "versions/pristine/os\udce9/caf\udce9" in paths
    assert result.pristine_id == "os\\xe9"
    assert result.summary["served"] == "versions/pristine/os\\xe9"
    assert result.summary["setuid"] == [["caf\\xe9", 0o4755]]


# --- Broken compression ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "parallel", "words"),
    [
        ("bz2", False, "Compressed file ends unexpectedly"),
        ("xz", True, "Unexpected end of input"),
        ("lzma", True, "Unexpected end of input"),
    ],
)
def test_it_refuses_an_archive_cut_in_half(tmp_path, compression, parallel, words):
    data = compress(
        tar_bytes(*PRISTINE_TREE, entry("noise", data=random_bytes(20_000))), compression
    )
    path = write(tmp_path, data[: len(data) // 2], compression)

    assert words in decompressor_says(path, compression, parallel=parallel)


@pytest.mark.parametrize("data", [b"", b"BZ"], ids=["empty", "start-of-header"])
def test_it_refuses_a_file_too_short_to_hold_bz2_data(tmp_path, data):
    path = write(tmp_path, data)

    line = decompressor_says(path, "bz2", parallel=False)

    assert "Compressed file ends unexpectedly" in line


def test_it_accepts_garbage_after_a_bz2_stream_as_the_school_servers_bzip2_does(tmp_path):
    """Changed: the old reader refused it. bzip2 ignores it with a warning the README lists
    as harmless (the parallel lbzip2 says nothing); the warning is kept in the summary."""
    data = bz2.compress(simple_tar("a"))
    path = write(tmp_path, data + b"garbage from a bad copy")

    serial = scan(path, parallel=False)

    assert serial.members == 1
    assert serial.summary["tar_warnings"] == ["bzip2: (stdin): trailing garbage after EOF ignored"]
    assert scan(path, parallel=True).manifest == serial.manifest


def test_it_refuses_a_few_stray_bytes_after_an_xz_stream(tmp_path):
    data = compress(simple_tar("a"), "xz")
    path = write(tmp_path, data + b"\n", "xz")

    # xz reads them as the start of a second stream.
    assert "Unexpected end of input" in decompressor_says(path, "xz")


def test_it_refuses_garbage_after_a_legacy_lzma_stream(tmp_path):
    data = compress(simple_tar("a"), "lzma")
    path = write(tmp_path, data + b"trailing junk", "lzma")

    assert "Compressed data is corrupt" in decompressor_says(path, "lzma")


def test_it_refuses_an_uncompressed_tar_named_bz2(tmp_path):
    path = write(tmp_path, simple_tar("a"))

    assert "is not a bzip2 file" in decompressor_says(path, "bz2", parallel=False)


def test_it_refuses_gzip_data_named_xz(tmp_path):
    path = write(tmp_path, gzip.compress(simple_tar("a")), "xz")

    assert "File format not recognized" in decompressor_says(path, "xz")


def test_it_refuses_bz2_data_named_lzma(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("a")), "lzma")

    assert "File format not recognized" in decompressor_says(path, "lzma")


def test_it_refuses_text_named_lzma(tmp_path):
    path = write(tmp_path, b"This is not an archive, it is a note about one.\n" * 10, "lzma")

    assert "File format not recognized" in decompressor_says(path, "lzma")


def test_it_refuses_damaged_bz2_data(tmp_path):
    data = bytearray(bz2.compress(tar_bytes(*PRISTINE_TREE)))
    data[len(data) // 2] ^= 0xFF
    path = write(tmp_path, bytes(data))

    assert "Data integrity error" in decompressor_says(path, "bz2", parallel=False)


def test_it_refuses_damaged_xz_data(tmp_path):
    data = bytearray(compress(tar_bytes(*PRISTINE_TREE), "xz"))
    data[len(data) // 2] ^= 0xFF
    path = write(tmp_path, bytes(data), "xz")

    assert "Compressed data is corrupt" in decompressor_says(path, "xz")


@pytest.mark.parametrize(
    "broken",
    [
        b"",
        b"BZ",
        simple_tar("a"),
        bytes(bytearray(bz2.compress(tar_bytes(*PRISTINE_TREE)))[:200]),
    ],
    ids=["empty", "start-of-header", "uncompressed", "cut"],
)
def test_the_parallel_bz2_decompressor_refuses_what_bzip2_refuses(tmp_path, broken):
    path = write(tmp_path, broken)

    decompressor_says(path, "bz2", parallel=False)
    decompressor_says(path, "bz2", parallel=True)


def test_it_refuses_an_unknown_compression(tmp_path):
    path = write(tmp_path, gzip.compress(simple_tar("a")), "gz")

    with pytest.raises(ValueError, match="gz"):
        scan(path, "gz")


# --- Broken tar -----------------------------------------------------------------------------


def test_it_refuses_a_compressed_payload_that_is_not_tar(tmp_path):
    path = write(tmp_path, bz2.compress(b"Release notes for py801-2.\n" * 100))

    assert tar_says(path) == "tar: This does not look like a tar archive"


def test_it_refuses_a_compressed_payload_shorter_than_a_tar_header(tmp_path):
    path = write(tmp_path, bz2.compress(b"tiny"))

    assert tar_says(path) == "tar: This does not look like a tar archive"


def test_it_refuses_a_tar_with_no_members(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes()))

    assert rejection(path) == ("archive_empty", {})


def test_it_refuses_a_compressed_empty_payload(tmp_path):
    path = write(tmp_path, bz2.compress(b""))

    # Changed: tar says so itself; the old reader called it an empty archive.
    assert tar_says(path) == "tar: This does not look like a tar archive"


def test_it_refuses_a_tar_cut_in_the_middle_of_a_member(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 5000), entry("b", data=b"y" * 5000))
    path = write(tmp_path, bz2.compress(data[:7000]))

    assert tar_says(path) == "tar: Unexpected EOF in archive"


def test_it_accepts_a_tar_cut_inside_a_header_as_gnu_tar_does(tmp_path):
    """Changed: the old reader refused it as truncated. GNU tar takes the short last block
    as the end of the archive, silently, and so would the school server."""
    data = tar_bytes(entry("a", data=b"x" * 5000), entry("b", data=b"y"), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[: 512 + 5120 + 100]))

    result = scan(path)

    assert [e.path for e in read_manifest(result.manifest)] == ["a"]


def test_it_accepts_a_tar_without_its_end_of_archive_blocks_as_gnu_tar_does(tmp_path):
    """Changed: the old reader refused it as truncated; GNU tar does not ask for them."""
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[:1024]))

    assert scan(path).members == 1


def test_it_refuses_a_garbled_header_after_the_first_member(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[:1024] + b"\x01" * 512 + bytes(1024)))

    assert tar_says(path) == "tar: Skipping to next header"


def test_it_accepts_data_after_the_end_of_the_tar_as_gnu_tar_does(tmp_path):
    """Changed: the old reader refused it. GNU tar stops reading at the end-of-archive
    blocks and never sees what follows."""
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data + b"second tar"))

    assert scan(path).members == 1


def test_it_refuses_an_absolute_path_with_tars_warning(tmp_path):
    """tar unpacks /etc/passwd as etc/passwd inside its folder and exits 0, but warns: the
    archive is not what its builder meant."""
    path = write(tmp_path, bz2.compress(simple_tar("etc/issue", "/etc/passwd")))

    assert rejection(path) == (
        "archive_tar_warning",
        {"line": "tar: Removing leading `/' from member names"},
    )


def test_it_refuses_a_member_name_that_climbs_out(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/../../etc/passwd")))

    # tar's first line; the next says "Member name contains '..'".
    assert tar_says(path) == "tar: Removing leading `versions/../../' from member names"


def test_it_refuses_a_hardlink_whose_target_climbs_out(tmp_path):
    data = tar_bytes(entry("passwd", tarfile.LNKTYPE, link="../etc/passwd"))
    path = write(tmp_path, bz2.compress(data))

    assert tar_says(path) == "tar: Removing leading `../' from hard link targets"


def test_it_refuses_a_hardlink_with_an_absolute_target(tmp_path):
    data = tar_bytes(entry("passwd", tarfile.LNKTYPE, link="/etc/passwd"))
    path = write(tmp_path, bz2.compress(data))

    assert tar_says(path) == "tar: Removing leading `/' from hard link targets"


# --- Limits ---------------------------------------------------------------------------------


def test_it_refuses_more_members_than_the_limit_as_tar_lists_them(tmp_path):
    many = tar_bytes(*(entry(f"f{number:05}", data=b"x") for number in range(3000)))
    path = write(tmp_path, bz2.compress(many))

    assert rejection(path, max_members=10) == ("archive_too_many", {"limit": 10})


def test_it_counts_the_folders_tar_makes_itself_against_the_member_limit(tmp_path):
    """One member, six entries on disk: the walk counts what is there."""
    path = write(tmp_path, bz2.compress(simple_tar("a/b/c/d/e/f")))

    assert rejection(path, max_members=3) == ("archive_too_many", {"limit": 3})


# Once crashed: a limit met after a tool had exited ended the session with ChildProcessError
# (Popen.kill() reaped the tool, then the session waited for it again).
@pytest.mark.parametrize(
    ("limits", "code"),
    [({"max_members": 2}, "archive_too_many"), ({"max_unpacked_bytes": 10239}, "archive_too_big")],
    ids=["members", "bytes"],
)
def test_it_refuses_a_small_archive_past_a_limit(tmp_path, limits, code):
    path = write(tmp_path, bz2.compress(simple_tar("a", "b", "c")))

    assert rejection(path, **limits)[0] == code


def test_it_refuses_an_archive_that_unpacks_past_the_limit(tmp_path):
    bomb = bz2.compress(tar_bytes(entry("zeros", data=bytes(16 * 1024 * 1024))))
    path = write(tmp_path, bomb)

    assert rejection(path, max_unpacked_bytes=1024 * 1024) == (
        "archive_too_big",
        {"limit": 1024 * 1024},
    )


def test_it_stops_reading_once_the_unpacked_limit_is_passed(tmp_path):
    bomb = bz2.compress(tar_bytes(entry("zeros", data=bytes(16 * 1024 * 1024))))
    rest = bz2.compress(random_bytes(4 * 1024 * 1024), compresslevel=1)
    path = write(tmp_path, bomb + rest)
    calls = []

    code, _params = rejection(
        path,
        max_unpacked_bytes=1024 * 1024,
        progress=lambda done, total: calls.append(done),
    )

    assert code == "archive_too_big"
    assert max(calls, default=0) < os.path.getsize(path)


def test_it_counts_a_sparse_files_apparent_size_against_the_limit(tmp_path):
    """Two holes of 10 MiB, each under the 16 MiB limit, in a tar of a few KiB: the byte
    counter lets them through, the walk adds up what the school server would store."""
    path = write(tmp_path, bz2.compress(sparse_tar(tmp_path, [10 << 20, 10 << 20])))

    assert rejection(path, max_unpacked_bytes=16 << 20) == ("archive_too_big", {"limit": 16 << 20})


def test_it_accepts_a_sparse_file_within_the_limit_at_its_full_size(tmp_path):
    """Changed: the old reader refused sparse members. GNU tar unpacks them at their full
    size, and that is what the manifest records."""
    path = write(tmp_path, bz2.compress(sparse_tar(tmp_path, [10 << 20])))

    [disk] = read_manifest(scan(path, max_unpacked_bytes=16 << 20).manifest)

    assert disk.size == 10 << 20
    assert disk.sha256 == hashlib.sha256(b"data" + bytes((10 << 20) - 4)).hexdigest()


def test_it_refuses_one_sparse_file_larger_than_the_limit_as_too_big(tmp_path):
    """tar itself stops at the file-size limit (SIGXFSZ) before the walk could count it;
    that is the portal's limit, not tar failing on the archive."""
    path = write(tmp_path, bz2.compress(sparse_tar(tmp_path, [64 << 20])))

    assert rejection(path, max_unpacked_bytes=16 << 20) == ("archive_too_big", {"limit": 16 << 20})


# --- Devices, hard links and owners ---------------------------------------------------------


def test_it_refuses_device_nodes_unless_the_deployment_allows_them(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE, *DEVICES)))

    # The walk meets them in sorted order: initctl first.
    assert rejection(path) == (
        "archive_device_node",
        {"path": "versions/pristine/os801/initctl", "kind": "p"},
    )
    assert scan(path, allow_device_nodes=True).summary["device_count"] == 3


def test_it_records_owners_as_tar_set_them_by_number(tmp_path):
    """--numeric-owner: the uid and gid in the header, whatever names it gives."""
    data = tar_bytes(
        entry("home", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000),
        entry("home/olpc", data=b"x", uid=1000, gid=1001),
        entry("bin", tarfile.DIRTYPE, mode=0o755),
        entry("bin/wall", data=b"y", mode=0o2555, gid=5),
    )
    path = write(tmp_path, bz2.compress(data))

    owners = {e.path: (e.uid, e.gid) for e in read_manifest(scan(path).manifest)}

    assert owners == {
        "bin": (0, 0),
        "bin/wall": (0, 5),
        "home": (1000, 1000),
        "home/olpc": (1000, 1001),
    }


def test_it_lists_further_names_of_a_file_and_of_a_symlink_as_hard_links(tmp_path):
    """olpc-update's run farm has both. Changed: the old reader refused a hard link to a
    symlink; GNU tar makes it, a second name of the symlink itself."""
    data = tar_bytes(
        entry("bin", tarfile.DIRTYPE, mode=0o755),
        entry("bin/su", data=b"su", mode=0o4755),
        entry("bin/su-again", tarfile.LNKTYPE, link="bin/su"),
        entry("bin/python", tarfile.SYMTYPE, mode=0o777, link="python3"),
        entry("bin/python-again", tarfile.LNKTYPE, link="bin/python"),
    )
    path = write(tmp_path, bz2.compress(data))

    result = scan(path)

    rows = {e.path: e for e in read_manifest(result.manifest)}
    digest = hashlib.sha256(b"su").hexdigest()
    assert rows["bin/su-again"] == ManifestEntry(
        "bin/su-again", "h", 0o4755, 2, digest, "bin/su", 0, 0
    )
    assert rows["bin/python-again"] == ManifestEntry(
        "bin/python-again", "h", 0o777, -1, "", "bin/python", 0, 0
    )
    assert result.summary["setuid"] == [["bin/su", 0o4755], ["bin/su-again", 0o4755]]


def test_it_does_not_list_a_hard_link_to_a_symlink_as_world_writable(tmp_path):
    data = tar_bytes(
        entry("bin/python", tarfile.SYMTYPE, mode=0o777, link="python3"),
        entry("bin/python-again", tarfile.LNKTYPE, link="bin/python"),
    )
    path = write(tmp_path, bz2.compress(data))

    assert scan(path).summary["world_writable"] == []


@pytest.mark.parametrize("compression", ["bz2", "xz"])
def test_it_gives_identical_manifests_with_and_without_parallel_decompression(
    tmp_path, compression
):
    # Several bzip2 blocks (100 kB each at level 1), so the parallel decoder has work to split.
    files = [entry(f"usr/lib/part{n}", data=random_bytes(300_000, seed=n)) for n in range(4)]
    data = tar_bytes(*files)
    packed = bz2.compress(data, 1) if compression == "bz2" else compress(data, "xz")
    path = write(tmp_path, packed, compression)

    serial = scan(path, compression, parallel=False)
    parallel = scan(path, compression, parallel=True)

    assert serial.manifest == parallel.manifest
    assert (serial.members, serial.unpacked_size) == (parallel.members, parallel.unpacked_size)


# --- The scratch folder and the host --------------------------------------------------------


@pytest.mark.parametrize("outcome", ["accepted", "refused", "stopped at a limit"])
def test_it_leaves_the_scratch_folder_empty_whatever_happens(tmp_path, outcome):
    archives = {
        "accepted": bz2.compress(tar_bytes(*PRISTINE_TREE)),
        "refused": bz2.compress(b"Release notes for py801-2.\n" * 100),
        "stopped at a limit": bz2.compress(tar_bytes(entry("z", data=bytes(16 << 20)))),
    }
    path = write(tmp_path, archives[outcome])

    try:
        scan(path, max_unpacked_bytes=1 << 20)
        happened = "accepted"
    except Refused as refused:
        happened = "stopped at a limit" if refused.code == "archive_too_big" else "refused"

    assert happened == outcome
    assert listing(tmp_path / "scratch") == []


def test_sweep_scratch_removes_a_stale_folder_and_keeps_one_a_validation_holds(tmp_path):
    scratch = tmp_path / "scratch"
    stale = scratch / f"{unpack.SCRATCH_PREFIX}stale"
    (stale / "tree/etc").mkdir(parents=True)
    (stale / "tree/etc/issue").write_text("OLPC\n")
    busy = scratch / f"{unpack.SCRATCH_PREFIX}busy"
    (busy / "tree").mkdir(parents=True)

    # Held as `unpack._scratch` holds it for the whole unpack.
    with open(busy.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        too_recent = sweep_scratch(scratch, older_than=3600)
        removed = sweep_scratch(scratch, older_than=0)

    assert (too_recent, removed) == (0, 1)
    assert listing(scratch) == [busy.name, busy.with_suffix(".lock").name]


@pytest.mark.parametrize("tar", ["no-such-tar", "/nonexistent/bin/tar"])
def test_it_hands_back_the_work_when_tar_is_missing(tmp_path, tar):
    """Not the build's fault: validation is tried again once the host is fixed."""
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE)))

    with pytest.raises(ScratchUnavailable) as caught:
        scan(path, tar=tar)

    assert caught.value.errno == errno.ENOENT
    assert tar in str(caught.value)


def test_it_hands_back_the_work_when_the_scratch_disk_has_no_room(tmp_path):
    """A real check of the real disk: an archive file whose size (a hole, no blocks) is the
    disk's free space asks SCRATCH_FACTOR times as much."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = tmp_path / "py801-2-tree.tar.xz"
    try:
        with open(path, "wb") as fh:
            fh.truncate(shutil.disk_usage(scratch).free)
    except OSError as exc:
        pytest.skip(f"this file system cannot hold a file as large as its free space: {exc}")

    with pytest.raises(ScratchUnavailable) as caught:
        unpack_archive(path, "xz", scratch_dir=scratch, max_unpacked_bytes=1 << 62, max_members=10)

    assert caught.value.errno == errno.ENOSPC
    assert listing(scratch) == []
    path.unlink()  # pytest keeps the last runs' folders; a file this size alarms people


# --- Nothing is ever written outside the scratch folder -------------------------------------

# Members as (kind, name, link), the sentinel folder's absolute path written {outside}. The
# tree is unpacked in SCRATCH/validate-XXXX/tree, so from its top "../../.." is tmp_path.
SECRET = b"the school server's own file\n"
HOSTILE = {
    "absolute-symlink-then-through-it": [("l", "a", "{outside}"), ("f", "a/x", "")],
    "climbing-symlink-then-through-it": [("l", "a", "../../.."), ("f", "a/x", "")],
    "root-symlink-then-through-it": [("l", "a", "/"), ("f", "a{outside}/x", "")],
    "climbing-symlink-to-the-sentinel-then-through-it": [
        ("l", "a", "../../../outside"),
        ("f", "a/file", ""),
    ],
    "symlink-then-a-folder-over-it-then-through-it": [
        ("l", "a", "{outside}"),
        ("d", "a", ""),
        ("f", "a/x", ""),
    ],
    "climbing-symlink-then-a-folder-over-it": [("l", "a", ".."), ("d", "a", "")],
    "symlink-to-a-file-then-a-file-of-its-name": [("l", "a", "{outside}/file"), ("f", "a", "")],
    "symlink-to-a-file-then-a-hard-link-to-it": [("l", "a", "{outside}/file"), ("h", "b", "a")],
    "symlink-to-a-file-then-a-hard-link-over-it": [
        ("f", "b", ""),
        ("l", "a", "{outside}/file"),
        ("h", "a", "b"),
    ],
    "hard-link-to-etc-passwd": [("h", "passwd", "/etc/passwd")],
    "hard-link-to-the-sentinel-by-absolute-name": [("h", "p", "{outside}/file")],
    "hard-link-to-the-sentinel-by-climbing-name": [("h", "p", "../../../outside/file")],
    "hard-link-through-a-symlink": [("l", "a", "{outside}"), ("h", "p", "a/file")],
    "absolute-member-name": [("f", "{outside}/x", "")],
    "climbing-member-name": [("f", "../../../outside/x", "")],
}


def hostile_tar(members, outside):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, name, link in members:
            info = tarfile.TarInfo(name.format(outside=outside))
            info.linkname = link.format(outside=outside)
            info.mtime = 1_700_000_000
            if kind == "f":
                info.size = len(b"overwritten\n")
                tar.addfile(info, io.BytesIO(b"overwritten\n"))
                continue
            info.type = {"l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "d": tarfile.DIRTYPE}[kind]
            info.mode = 0o777 if kind in "ld" else 0o644
            tar.addfile(info)
    return out.getvalue()


def sha256_of(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def snapshot(folder, skip):
    """Every path under `folder` but `skip`, with what a write would change."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if os.path.join(root, name) != str(skip)]
        for name in [".", *dirs, *files]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            content = None
            if os.path.islink(path):
                content = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    content = fh.read()
            seen[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink, content)
    return seen


@pytest.mark.parametrize("name", HOSTILE)
def test_no_archive_makes_the_unpack_write_outside_its_scratch_folder(tmp_path, name):
    """Each archive is refused with GNU tar's words or unpacked wholly inside the scratch
    folder; the sentinel beside it is never written, and no row of the tree is one of its
    files. Whether tar refuses a symlink later replaced by a folder or a file depends on
    the file system reusing an inode (tar's check of its placeholder), so either outcome is
    allowed for every case."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_bytes(SECRET)
    scratch = tmp_path / "scratch"
    scratch.mkdir()  # before the snapshot: making it changes tmp_path itself
    path = write(tmp_path, bz2.compress(hostile_tar(HOSTILE[name], outside)))
    before = snapshot(tmp_path, skip=scratch)

    try:
        result = scan(path)
    except Refused as refused:
        assert refused.code in ("archive_tar_failed", "archive_tar_warning")
        assert refused.params["line"].startswith("tar: ")
    else:
        # A hard link would leave no trace outside once the scratch folder is gone, but its
        # row would carry the linked file's digest.
        digests = {e.sha256 for e in read_manifest(result.manifest)}
        foreign = {hashlib.sha256(SECRET).hexdigest(), sha256_of("/etc/passwd")}
        assert not digests & foreign

    assert snapshot(tmp_path, skip=scratch) == before
    assert listing(scratch) == []
