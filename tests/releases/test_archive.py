"""Scanning build tarballs: real archives made here, in every compression a build can use."""

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import subprocess
import tarfile

import pytest

from releases.archive import ManifestEntry, scan_archive
from releases.reasons import Refused

from ..manifest import read_manifest

BIG = 1 << 40
COMPRESSIONS = ["bz2", "xz", "lzma"]


# --- Making archives ------------------------------------------------------------------------


def entry(name, type_=tarfile.REGTYPE, data=b"", mode=0o644, link=""):
    return (name, type_, data, mode, link)


def tar_bytes(*entries, fmt=tarfile.PAX_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, type_, data, mode, link in entries:
            info = tarfile.TarInfo(name)
            info.type = type_
            info.mode = mode
            info.linkname = link
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


def write(tmp_path, data, compression="bz2"):
    path = tmp_path / f"py801-2-tree.tar.{compression}"
    path.write_bytes(data)
    return path


def scan(path, compression="bz2", **limits):
    limits = {"max_unpacked_bytes": BIG, "max_members": 1_000_000, **limits}
    return scan_archive(path, compression, **limits)


def rejection(path, compression="bz2", **limits):
    with pytest.raises(Refused) as caught:
        scan(path, compression, **limits)
    return caught.value.code, caught.value.params


def random_bytes(size, seed=8):
    return random.Random(seed).randbytes(size)


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

    assert manifest == (
        b'[".","d",493,0,"",""]\n'
        b'["versions","d",493,0,"",""]\n'
        b'["versions/pristine","d",493,0,"",""]\n'
        b'["versions/pristine/os801","d",493,0,"",""]\n'
        b'["versions/pristine/os801/hello.txt","f",420,6,"' + HELLO.encode() + b'",""]\n'
        b'["versions/pristine/os801/su","f",2541,10,"' + SU.encode() + b'",""]\n'
        b'["versions/pristine/os801/link","l",511,0,"","hello.txt"]\n'
        b'["versions/pristine/os801/again","h",420,0,"","versions/pristine/os801/hello.txt"]\n'
        b'["versions/pristine/os801/null","c",438,0,"",""]\n'
        b'["versions/pristine/os801/sda","b",432,0,"",""]\n'
        b'["versions/pristine/os801/initctl","p",384,0,"",""]\n'
    )


def test_it_reads_the_manifest_back_as_entries(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes(*PRISTINE_TREE, *DEVICES)))

    entries = list(read_manifest(scan(path, allow_device_nodes=True).manifest))

    assert len(entries) == len(PRISTINE_TREE) + len(DEVICES)
    assert entries[4] == ManifestEntry(
        "versions/pristine/os801/hello.txt", "f", 0o644, 6, HELLO, ""
    )
    assert entries[6] == ManifestEntry(
        "versions/pristine/os801/link", "l", 0o777, 0, "", "hello.txt"
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


def test_it_reports_progress_up_to_the_compressed_size(tmp_path):
    data = tar_bytes(entry("noise.bin", data=random_bytes(3 * 1024 * 1024)))
    path = write(tmp_path, compress(data, "xz"), "xz")
    calls = []

    scan_archive(
        path,
        "xz",
        max_unpacked_bytes=BIG,
        max_members=10,
        progress=lambda done, total: calls.append((done, total)),
    )

    size = path.stat().st_size
    assert len(calls) >= 3
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (size, size)


def test_it_scans_an_archive_made_by_gnu_tar_and_bzip2(tmp_path):
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


def test_it_scans_an_xz_archive_made_by_the_xz_tool(tmp_path):
    path = write(tmp_path, tool(["xz", "-c"], simple_tar("a", "b")), "xz")

    assert scan(path, "xz").members == 2


def test_it_scans_an_lzma_archive_made_by_the_lzma_tool(tmp_path):
    path = write(tmp_path, tool(["lzma", "-z", "-c"], simple_tar("a", "b")), "lzma")

    assert scan(path, "lzma").members == 2


def test_it_scans_a_legacy_lzma_alone_archive(tmp_path):
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
def test_it_rejects_xz_padding_that_is_not_a_multiple_of_four_bytes(tmp_path, zeros):
    """`xz -d` fails on such padding ("Compressed data is corrupt"): so must we."""
    data = compress(simple_tar("a"), "xz")
    path = write(tmp_path, data + bytes(zeros), "xz")

    code, params = rejection(path, "xz")

    assert code == "archive_corrupt"
    assert params["error"].startswith(f"{zeros} bytes of stream padding at byte {len(data)}")


def test_it_rejects_zero_padding_after_a_legacy_lzma_stream(tmp_path):
    data = compress(simple_tar("a"), "lzma")
    path = write(tmp_path, data + bytes(8), "lzma")

    assert rejection(path, "lzma")[0] == "archive_corrupt"


def test_it_rejects_two_legacy_lzma_streams(tmp_path):
    """`lzma -cd` reads only the first .lzma stream and then reports corrupt data."""
    data = simple_tar("a", "b", "c")
    first = compress(data[:700], "lzma")
    path = write(tmp_path, first + compress(data[700:], "lzma"), "lzma")

    assert rejection(path, "lzma") == (
        "archive_corrupt",
        {
            "compression": "lzma",
            "error": f"unexpected data after the compressed stream at byte {len(first)}",
        },
    )


def test_it_accepts_absolute_and_climbing_symlink_targets(tmp_path):
    data = tar_bytes(
        entry("lib", tarfile.SYMTYPE, link="/usr/lib"),
        entry("etc/localtime", tarfile.SYMTYPE, link="../usr/share/zoneinfo/UTC"),
    )
    path = write(tmp_path, bz2.compress(data))

    links = [e.link for e in read_manifest(scan(path).manifest)]

    assert links == ["/usr/lib", "../usr/share/zoneinfo/UTC"]


def test_it_accepts_exactly_the_member_limit(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("a", "b", "c")))

    assert scan(path, max_members=3).members == 3


def test_it_accepts_an_archive_that_unpacks_to_exactly_the_limit(tmp_path):
    data = simple_tar("a")
    path = write(tmp_path, bz2.compress(data))

    assert scan(path, max_unpacked_bytes=len(data)).unpacked_size == len(data)


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


def test_it_rejects_several_entries_under_versions_pristine(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/pristine/b/x", "versions/pristine/a")))

    assert rejection(path) == ("archive_several_pristine", {"count": 2, "entries": "a, b"})


def test_it_names_only_the_first_five_pristine_entries(tmp_path):
    names = [f"versions/pristine/os{n}/x" for n in (7, 3, 5, 1, 6, 2, 4)]
    path = write(tmp_path, bz2.compress(simple_tar(*names)))

    assert rejection(path) == (
        "archive_several_pristine",
        {"count": 7, "entries": "os1, os2, os3, os4, os5, …"},
    )


def test_it_rejects_an_empty_versions_pristine(tmp_path):
    data = tar_bytes(
        entry("versions/pristine/", tarfile.DIRTYPE, mode=0o755), entry("etc/issue", data=b"x")
    )
    path = write(tmp_path, bz2.compress(data))

    assert rejection(path) == ("archive_empty_pristine", {})


# --- Broken compression ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_it_rejects_an_archive_cut_in_half(tmp_path, compression):
    data = compress(
        tar_bytes(*PRISTINE_TREE, entry("noise", data=random_bytes(20_000))), compression
    )
    path = write(tmp_path, data[: len(data) // 2], compression)

    assert rejection(path, compression) == ("archive_truncated", {"compression": compression})


def test_it_rejects_an_empty_file(tmp_path):
    path = write(tmp_path, b"")

    assert rejection(path) == ("archive_truncated", {"compression": "bz2"})


def test_it_rejects_a_file_holding_only_the_start_of_a_bz2_header(tmp_path):
    path = write(tmp_path, b"BZ")

    assert rejection(path) == ("archive_truncated", {"compression": "bz2"})


def test_it_rejects_garbage_after_a_bz2_stream(tmp_path):
    data = bz2.compress(simple_tar("a"))
    path = write(tmp_path, data + b"garbage from a bad copy")

    assert rejection(path) == (
        "archive_corrupt",
        {
            "compression": "bz2",
            "error": f"unexpected data after the compressed stream at byte {len(data)}",
        },
    )


def test_it_rejects_a_few_stray_bytes_after_an_xz_stream(tmp_path):
    data = compress(simple_tar("a"), "xz")
    path = write(tmp_path, data + b"\n", "xz")

    assert rejection(path, "xz") == (
        "archive_corrupt",
        {
            "compression": "xz",
            "error": f"unexpected data after the compressed stream at byte {len(data)}",
        },
    )


def test_it_rejects_garbage_after_a_legacy_lzma_stream(tmp_path):
    data = compress(simple_tar("a"), "lzma")
    path = write(tmp_path, data + b"trailing junk", "lzma")

    assert rejection(path, "lzma") == (
        "archive_corrupt",
        {
            "compression": "lzma",
            "error": f"unexpected data after the compressed stream at byte {len(data)}",
        },
    )


def test_it_rejects_an_uncompressed_tar_named_bz2(tmp_path):
    path = write(tmp_path, simple_tar("a"))

    assert rejection(path) == (
        "archive_corrupt",
        {
            "compression": "bz2",
            "error": "this is not bzip2 data; it looks like an uncompressed tar file",
        },
    )


def test_it_rejects_gzip_data_named_xz(tmp_path):
    path = write(tmp_path, gzip.compress(simple_tar("a")), "xz")

    assert rejection(path, "xz") == (
        "archive_corrupt",
        {"compression": "xz", "error": "this is not xz data; it looks like gzip data"},
    )


def test_it_rejects_bz2_data_named_lzma(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("a")), "lzma")

    assert rejection(path, "lzma") == (
        "archive_corrupt",
        {"compression": "lzma", "error": "this is not lzma data; it looks like bzip2 data"},
    )


def test_it_rejects_text_named_lzma(tmp_path):
    path = write(tmp_path, b"This is not an archive, it is a note about one.\n" * 10, "lzma")

    assert rejection(path, "lzma") == (
        "archive_corrupt",
        {"compression": "lzma", "error": "Input format not supported by decoder"},
    )


def test_it_rejects_damaged_bz2_data(tmp_path):
    data = bytearray(bz2.compress(tar_bytes(*PRISTINE_TREE)))
    data[len(data) // 2] ^= 0xFF
    path = write(tmp_path, bytes(data))

    assert rejection(path) == (
        "archive_corrupt",
        {"compression": "bz2", "error": "Invalid data stream"},
    )


def test_it_rejects_damaged_xz_data(tmp_path):
    data = bytearray(compress(tar_bytes(*PRISTINE_TREE), "xz"))
    data[len(data) // 2] ^= 0xFF
    path = write(tmp_path, bytes(data), "xz")

    assert rejection(path, "xz") == (
        "archive_corrupt",
        {"compression": "xz", "error": "Corrupt input data"},
    )


def test_it_refuses_an_unknown_compression(tmp_path):
    path = write(tmp_path, gzip.compress(simple_tar("a")), "gz")

    with pytest.raises(ValueError, match="gz"):
        scan(path, "gz")


# --- Broken tar -----------------------------------------------------------------------------


def test_it_rejects_a_compressed_payload_that_is_not_tar(tmp_path):
    path = write(tmp_path, bz2.compress(b"Release notes for py801-2.\n" * 100))

    assert rejection(path) == ("archive_not_tar", {"error": "invalid header"})


def test_it_rejects_a_compressed_payload_shorter_than_a_tar_header(tmp_path):
    path = write(tmp_path, bz2.compress(b"tiny"))

    assert rejection(path) == ("archive_not_tar", {"error": "truncated header"})


def test_it_rejects_a_tar_with_no_members(tmp_path):
    path = write(tmp_path, bz2.compress(tar_bytes()))

    assert rejection(path) == ("archive_empty", {})


def test_it_rejects_a_compressed_empty_payload(tmp_path):
    path = write(tmp_path, bz2.compress(b""))

    assert rejection(path) == ("archive_empty", {})


def test_it_rejects_a_tar_cut_in_the_middle_of_a_member(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 5000), entry("b", data=b"y" * 5000))
    path = write(tmp_path, bz2.compress(data[:7000]))

    assert rejection(path) == ("archive_truncated", {"compression": "bz2"})


def test_it_rejects_a_tar_cut_inside_a_header(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 5000), entry("b", data=b"y"), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[: 512 + 5120 + 100]))

    assert rejection(path) == ("archive_truncated", {"compression": "bz2"})


def test_it_rejects_a_tar_without_its_end_of_archive_block(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[:1024]))

    assert rejection(path) == ("archive_truncated", {"compression": "bz2"})


def test_it_rejects_a_garbled_header_after_the_first_member(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data[:1024] + b"\x01" * 512 + bytes(1024)))

    assert rejection(path) == ("archive_not_tar", {"error": "invalid tar header at byte 1024"})


def test_it_rejects_data_after_the_end_of_the_tar(tmp_path):
    data = tar_bytes(entry("a", data=b"x" * 100), fmt=tarfile.GNU_FORMAT)
    path = write(tmp_path, bz2.compress(data + b"second tar"))

    assert rejection(path) == (
        "archive_not_tar",
        {"error": f"unexpected data after the end of the tar archive at byte {len(data)}"},
    )


def test_it_rejects_an_absolute_path(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("etc/issue", "/etc/passwd")))

    assert rejection(path) == ("archive_absolute_path", {"path": "/etc/passwd"})


def test_it_rejects_a_member_name_that_climbs_out(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("versions/../../etc/passwd")))

    assert rejection(path) == ("archive_parent_path", {"path": "versions/../../etc/passwd"})


def test_it_rejects_a_hardlink_whose_target_climbs_out(tmp_path):
    data = tar_bytes(entry("passwd", tarfile.LNKTYPE, link="../etc/passwd"))
    path = write(tmp_path, bz2.compress(data))

    assert rejection(path) == ("archive_parent_path", {"path": "../etc/passwd"})


def test_it_rejects_a_hardlink_with_an_absolute_target(tmp_path):
    data = tar_bytes(entry("passwd", tarfile.LNKTYPE, link="/etc/passwd"))
    path = write(tmp_path, bz2.compress(data))

    assert rejection(path) == ("archive_absolute_path", {"path": "/etc/passwd"})


def test_it_rejects_more_members_than_the_limit(tmp_path):
    path = write(tmp_path, bz2.compress(simple_tar("a", "b", "c")))

    assert rejection(path, max_members=2) == ("archive_too_many", {"limit": 2})


def test_it_rejects_an_archive_that_unpacks_past_the_limit(tmp_path):
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

    with pytest.raises(Refused) as caught:
        scan_archive(
            path,
            "bz2",
            max_unpacked_bytes=1024 * 1024,
            max_members=10,
            progress=lambda done, total: calls.append(done),
        )

    assert caught.value.code == "archive_too_big"
    assert max(calls, default=0) < os.path.getsize(path)
