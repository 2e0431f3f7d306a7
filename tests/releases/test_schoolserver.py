"""The school server emulator: real tar, xz, bzip2, mv and fakeroot, as an XS runs them."""

import ast
import bz2
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from releases.manifest import ManifestEntry
from releases.unpack import unpack_archive
from tests import schoolserver
from tests.schoolserver import compare, compare_with_manifest, md5_check, unpack

from ..manifest import read_manifest

# Missing tools fail the whole module loudly instead of skipping it.
schoolserver.check_tools()

BUILD = "21021"
P = f"versions/pristine/{BUILD}"
MTIME = 1_700_000_000

TYPES = {
    "f": tarfile.REGTYPE,
    "d": tarfile.DIRTYPE,
    "l": tarfile.SYMTYPE,
    "h": tarfile.LNKTYPE,
    "c": tarfile.CHRTYPE,
    "b": tarfile.BLKTYPE,
    "p": tarfile.FIFOTYPE,
}


# --- Making archives ------------------------------------------------------------------------


def m(name, kind="f", data=b"", mode=None, link="", dev=(0, 0), owner=(0, 0)):
    if mode is None:
        mode = {"d": 0o755, "l": 0o777}.get(kind, 0o644)
    return {
        "name": name,
        "kind": kind,
        "data": data,
        "mode": mode,
        "link": link,
        "dev": dev,
        "owner": owner,
    }


def tar_bytes(members, fmt=tarfile.GNU_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for member in members:
            info = tarfile.TarInfo(member["name"])
            info.type = TYPES[member["kind"]]
            info.mode = member["mode"]
            info.linkname = member["link"]
            info.mtime = MTIME
            info.devmajor, info.devminor = member["dev"]
            info.uid, info.gid = member["owner"]
            if member["kind"] == "f":
                info.size = len(member["data"])
                tar.addfile(info, io.BytesIO(member["data"]))
            else:
                tar.addfile(info)
    return out.getvalue()


def compressed(data, suffix):
    if suffix == ".tar.bz2":
        return bz2.compress(data)
    if suffix == ".tar.xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


def write(tmp_path, members, suffix=".tar.bz2", name="os21021-tree"):
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(compressed(tar_bytes(members), suffix))
    return path


def normalise(name):
    return "/".join(part for part in name.split("/") if part not in ("", ".")) or "."


def manifest(members):
    """Rows for these members in archive order, as a manifest would list them (hard links
    as 'h' rows naming their target; `compare` replays them as tar would)."""
    rows = []
    for member in members:
        kind, data = member["kind"], member["data"]
        link = normalise(member["link"]) if kind == "h" else member["link"]
        sha = hashlib.sha256(data).hexdigest() if kind == "f" else ""
        size = len(data) if kind == "f" else 0
        rows.append(ManifestEntry(normalise(member["name"]), kind, member["mode"], size, sha, link))
    return rows


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def outside():
    """A folder outside the emulator's temp folder that the server user could write to."""
    folder = Path(tempfile.mkdtemp(prefix="xs-outside-", dir="/tmp"))
    folder.chmod(0o777)
    (folder / "build").mkdir()
    (folder / "build").chmod(0o777)
    (folder / "build" / "keep").write_bytes(b"keep")
    yield folder
    shutil.rmtree(folder)


def untouched(folder):
    return (
        sorted(os.listdir(folder)) == ["build"]
        and sorted(os.listdir(folder / "build")) == ["keep"]
        and (folder / "build" / "keep").read_bytes() == b"keep"
    )


# A build as the portal expects one: everything under versions/pristine/<id>/, with the
# metadata a school server must keep.
GOOD = [
    m("./", "d"),
    m("./versions/", "d"),
    m("./versions/pristine/", "d"),
    m(f"./{P}/", "d"),
    m(f"./{P}/bin/", "d"),
    m(f"./{P}/bin/su", data=b"\x7fELF su", mode=0o4755),
    m(f"./{P}/bin/sh", data=b"\x7fELF sh", mode=0o755),
    m(f"./{P}/bin/bash", "h", link=f"./{P}/bin/sh"),
    m(f"./{P}/tmp/", "d", mode=0o1777),
    m(f"./{P}/var/", "d"),
    m(f"./{P}/var/mail/", "d", mode=0o2775, owner=(0, 8)),
    m(f"./{P}/home/", "d"),
    m(f"./{P}/home/olpc/", "d", owner=(500, 500)),
    m(f"./{P}/home/olpc/.bashrc", data=b"# olpc", owner=(500, 500)),
    m(f"./{P}/usr/", "d", mode=0o555),
    m(f"./{P}/usr/README", data=b"read me", mode=0o444),
    m(f"./{P}/usr/COPYING", data=b"GPL"),
    m(f"./{P}/etc/", "d"),
    m(f"./{P}/etc/motd", data=b"Welcome to the XO\n"),
    m(f"./{P}/etc/motd.link", "l", link="motd"),
    m(f"./{P}/etc/shell", "l", link="../bin/sh"),
    m(f"./{P}/etc/localtime", "l", link="/usr/share/zoneinfo/UTC"),
    m(f"./{P}/etc/motd.hard", "h", link=f"{P}/etc/motd"),
    m(f"./{P}/etc/issue", data=b"old", mode=0o644),
    m(f"./{P}/etc/issue", data=b"new", mode=0o600),
    m(f"./{P}/opt/implicit/file", data=b"parents without members"),
    m("./versions/run", "l", link=f"pristine/{BUILD}"),
    m("./versions/updates/", "d"),
    m("./security/", "d"),
    m("./security/develop.sig", data=b"not served"),
]


# --- A good build --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar.bz2", ".tar.xz", ".tar.lzma"])
def test_it_serves_the_pristine_tree_of_a_good_build(tmp_path, suffix):
    unpacked = unpack(write(tmp_path, GOOD, suffix))

    assert unpacked.ok, unpacked.problem
    assert unpacked.problem == ""
    assert unpacked.served == P
    tree = unpacked.tree
    assert tree["."].type == "d"
    assert tree["bin/su"] == schoolserver.Entry(
        type="f",
        mode=0o4755,
        size=7,
        sha256=sha(b"\x7fELF su"),
        ino=tree["bin/su"].ino,
        nlink=1,
    )
    assert tree["tmp"].mode == 0o1777
    assert tree["var/mail"].mode == 0o2775
    # Owners as the archive says, though the server user made every file.
    assert (tree["var/mail"].uid, tree["var/mail"].gid) == (0, 8)
    assert (tree["home/olpc/.bashrc"].uid, tree["home/olpc/.bashrc"].gid) == (500, 500)
    assert tree["usr"].mode == 0o555
    assert tree["usr/README"].mode == 0o444
    assert tree["usr/COPYING"].sha256 == sha(b"GPL")
    assert tree["etc/motd.link"].type == "l"
    assert tree["etc/motd.link"].link == "motd"
    assert tree["etc/shell"].link == "../bin/sh"
    assert tree["etc/localtime"].link == "/usr/share/zoneinfo/UTC"
    # The last of a repeated member wins.
    assert tree["etc/issue"].sha256 == sha(b"new")
    assert tree["etc/issue"].mode == 0o600
    # Hard links are one inode.
    assert tree["etc/motd.hard"].type == "f"
    assert tree["etc/motd.hard"].ino == tree["etc/motd"].ino
    assert tree["etc/motd"].nlink == 2
    assert tree["bin/bash"].ino == tree["bin/sh"].ino
    assert tree["bin/bash"].sha256 == sha(b"\x7fELF sh")
    assert tree["bin/su"].ino != tree["bin/sh"].ino
    # Only the pristine tree is served; tar made the parents nobody listed.
    assert not any(path.startswith(("versions", "security")) for path in tree)
    assert tree["opt"].type == tree["opt/implicit"].type == "d"
    assert tree["opt/implicit/file"].sha256 == sha(b"parents without members")

    assert compare_with_manifest(unpacked, manifest(GOOD)) == []
    assert compare(unpacked, manifest(GOOD)).implicit_dirs == ["opt", "opt/implicit"]


@pytest.mark.parametrize("suffix", [".tar.bz2", ".tar.xz", ".tar.lzma"])
def test_it_agrees_with_the_manifest_the_portal_records(tmp_path, suffix):
    # The repeated etc/issue included: the portal reads back what tar kept, the later copy.
    path = write(tmp_path, GOOD, suffix)
    scan = unpack_archive(
        path,
        suffix.rsplit(".", 1)[1],
        scratch_dir=tmp_path / "scratch",
        max_unpacked_bytes=1 << 30,
        max_members=10_000,
    )

    assert scan.pristine_id == BUILD
    assert compare_with_manifest(unpack(path), read_manifest(scan.manifest)) == []


def test_it_reports_how_the_tree_differs_from_a_manifest(tmp_path):
    unpacked = unpack(write(tmp_path, GOOD))
    rows = manifest(GOOD)
    changed = []
    for row in rows:
        if row.path == f"{P}/bin/su":
            row = ManifestEntry(row.path, "f", 0o755, row.size, row.sha256, "")
        elif row.path == f"{P}/usr/COPYING":
            row = ManifestEntry(row.path, "f", row.mode, row.size, sha(b"BSD"), "")
        elif row.path == f"{P}/etc/motd.link":
            row = ManifestEntry(row.path, "l", row.mode, 0, "", "issue")
        elif row.path == f"{P}/etc/motd.hard":
            # As a separate file with the same content, not a hard link.
            row = ManifestEntry(row.path, "f", 0o644, 18, sha(b"Welcome to the XO\n"), "")
        elif row.path == f"{P}/tmp":
            continue
        changed.append(row)
    changed.append(ManifestEntry(f"{P}/etc/hostname", "f", 0o644, 3, sha(b"xo\n"), ""))

    differences = compare_with_manifest(unpacked, changed)

    assert differences == [
        "bin/su: mode 4755, manifest says 0755",
        "etc/hostname: missing (manifest has type 'f')",
        "etc/motd.link: symlink to 'motd', manifest says 'issue'",
        f"usr/COPYING: sha256 {sha(b'GPL')[:12]}…, manifest says {sha(b'BSD')[:12]}…",
        "tmp: served but not in the manifest (type 'd')",
        "etc/motd, etc/motd.hard: are hard links of one file, should not be",
    ]


def test_it_compares_nothing_when_the_server_could_not_unpack(tmp_path):
    unpacked = unpack(write(tmp_path, [m("a", "h", link="missing")]))

    assert compare_with_manifest(unpacked, []) == [
        f"the school server did not unpack it: {unpacked.problem}"
    ]


# --- What real tar refuses ------------------------------------------------------------------

LONG_PATH = "/".join(["c" * 100] * 40) + "/" + "d" * 56  # 4096 bytes
TAR_FAILURES = {
    "hard link to a missing file": (
        [m("a", "h", link="missing")],
        "tar: a: Cannot hard link to 'missing': No such file or directory",
    ),
    "hard link to a later file": (
        [m("a", "h", link="later"), m("later", data=b"x")],
        "tar: a: Cannot hard link to 'later': No such file or directory",
    ),
    "hard link to a directory": (
        [m("d", "d"), m("a", "h", link="d")],
        "tar: a: Cannot hard link to 'd': Operation not permitted",
    ),
    "member under a regular file": (
        [m("f", data=b"x"), m("f/g", data=b"y")],
        "tar: f/g: Cannot open: Not a directory",
    ),
    "member under a '..' symlink": (
        [m("s", "l", link=".."), m("s/evil", data=b"y")],
        "tar: s/evil: Cannot open: Not a directory",
    ),
    "member with '..' in its name": (
        [m("../evil", data=b"y")],
        "tar: ../evil: Member name contains '..'",
    ),
    "name component of 256 bytes": (
        [m("a" * 256, data=b"x")],
        f"tar: {'a' * 256}: Cannot open: File name too long",
    ),
    "path of 4096 bytes": (
        [m(LONG_PATH, data=b"x")],
        f"tar: {LONG_PATH}: Cannot open: File name too long",
    ),
    "symlink target of 4096 bytes": (
        [m("s", "l", link="t" * 4096)],
        f"tar: s: Cannot create symlink to '{'t' * 4096}': File name too long",
    ),
}


@pytest.mark.parametrize("case", TAR_FAILURES)
def test_it_fails_with_tars_message(tmp_path, case):
    members, message = TAR_FAILURES[case]

    unpacked = unpack(write(tmp_path, members))

    assert not unpacked.ok
    assert unpacked.failed_tool == "tar"
    assert message in unpacked.stderr
    assert "tar: Exiting with failure status due to previous errors" in unpacked.stderr
    assert unpacked.problem.startswith("tar exited with status 2: ")
    assert message in unpacked.problem
    assert not unpacked.lenient_ok
    assert unpacked.tree == {}


def test_it_never_extracts_through_an_absolute_symlink(tmp_path, outside):
    members = [m("s", "l", link=str(outside)), m("s/evil", data=b"y")]

    unpacked = unpack(write(tmp_path, members))

    assert not unpacked.ok
    assert "tar: s/evil: Cannot open: Not a directory" in unpacked.problem
    assert untouched(outside)


def test_it_keeps_paths_up_to_4095_bytes(tmp_path):
    path = LONG_PATH[:-1]

    unpacked = unpack(write(tmp_path, [m(path, data=b"deep"), m("s", "l", link="t" * 4095)]))

    assert unpacked.ok, unpacked.problem
    assert unpacked.tree[path].sha256 == sha(b"deep")
    assert unpacked.tree["s"].link == "t" * 4095


def test_it_strips_a_leading_slash_like_tar(tmp_path):
    unpacked = unpack(write(tmp_path, [m("/etc/evil", data=b"x")]))

    assert unpacked.ok, unpacked.problem
    assert "etc/evil" in unpacked.tree
    assert not os.path.exists("/etc/evil")


# --- What the decompressors refuse ----------------------------------------------------------


def test_it_fails_when_lzma_gets_xz_data(tmp_path):
    path = tmp_path / "os21021-tree.tar.lzma"
    path.write_bytes(lzma.compress(tar_bytes([m("a", data=b"x")]), format=lzma.FORMAT_XZ))

    unpacked = unpack(path)

    assert not unpacked.ok
    assert unpacked.failed_tool == "lzma"
    assert unpacked.stderr == "lzma: (stdin): File format not recognized\n"
    # tar then saw no data at all, so the real script fails too.
    assert "tar: This does not look like a tar archive" in unpacked.problem
    assert not unpacked.lenient_ok


@pytest.mark.parametrize(
    "tail",
    [
        lzma.compress(tar_bytes([m("b", data=b"y")]), format=lzma.FORMAT_ALONE),
        lzma.compress(tar_bytes([m("b", data=b"y")]), format=lzma.FORMAT_XZ),
        b"\0" * 4,
    ],
    ids=["second lzma stream", "xz stream", "NUL padding"],
)
def test_it_fails_when_lzma_finds_more_after_the_stream(tmp_path, tail):
    first = lzma.compress(tar_bytes([m("a", data=b"x")]), format=lzma.FORMAT_ALONE)
    path = tmp_path / "os21021-tree.tar.lzma"
    path.write_bytes(first + tail)

    unpacked = unpack(path)

    assert not unpacked.ok
    assert unpacked.failed_tool == "lzma"
    assert unpacked.problem == (
        "lzma exited with status 1: lzma: (stdin): Compressed data is corrupt"
    )
    # tar was happy with the first stream: the real script (no pipefail) would go on.
    assert unpacked.lenient_ok


def test_it_accepts_concatenated_xz_streams_but_tar_stops_at_the_first_end(tmp_path):
    data = b"".join(
        lzma.compress(tar_bytes([m(name, data=b"x")]), format=lzma.FORMAT_XZ) for name in "ab"
    )
    path = tmp_path / "os21021-tree.tar.xz"
    path.write_bytes(data)

    unpacked = unpack(path)

    assert unpacked.ok, unpacked.problem
    assert sorted(unpacked.tree) == [".", "a"]


def test_it_blames_bzip2_when_tar_reports_its_child_failed(tmp_path):
    path = tmp_path / "os21021-tree.tar.bz2"
    path.write_bytes(bz2.compress(tar_bytes([m("a", data=b"x")]))[:-10])

    unpacked = unpack(path)

    assert not unpacked.ok
    assert unpacked.failed_tool == "bzip2"
    assert "bzip2: Compressed file ends unexpectedly" in unpacked.stderr
    assert "tar: Child returned status 2" in unpacked.stderr


def test_it_refuses_an_unknown_format(tmp_path):
    path = tmp_path / "os21021-tree.tar.gz"
    path.write_bytes(b"\x1f\x8b")

    unpacked = unpack(path)

    assert (unpacked.ok, unpacked.problem, unpacked.served) == (False, "unknown file format", "")


def test_it_takes_the_format_from_the_given_name(tmp_path):
    path = tmp_path / "upload.part"
    path.write_bytes(compressed(tar_bytes([m("a", data=b"x")]), ".tar.xz"))

    assert unpack(path, name="os21021-tree.tar.xz").ok
    assert unpack(path, name="os21021-tree.tar.bz2").failed_tool == "bzip2"


# --- Choosing what to serve -----------------------------------------------------------------


def test_it_serves_the_root_without_versions_when_there_is_no_pristine_tree(tmp_path):
    members = [
        m("./", "d", mode=0o750),
        m("./boot/", "d"),
        m("./boot/vmlinuz", data=b"kernel"),
        m("./versions/", "d"),
        m("./versions/updates/", "d"),
        m("./versions/updates/x", data=b"x"),
    ]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.ok, unpacked.problem
    assert unpacked.served == ""
    assert sorted(unpacked.tree) == [".", "boot", "boot/vmlinuz"]
    # tar gives the temp folder the mode of the archive's own "./" member.
    assert unpacked.tree["."].mode == 0o750
    assert compare_with_manifest(unpacked, manifest(members)) == []


def test_it_serves_the_root_when_pristine_is_empty_or_not_a_directory(tmp_path):
    for members in (
        [m("versions/pristine/", "d"), m("a", data=b"x")],
        [m("versions/pristine", data=b"not a folder"), m("a", data=b"x")],
        [m("versions/pristine/.hidden/", "d"), m("a", data=b"x")],
        [m("versions/pristine/file", data=b"x"), m("a", data=b"x")],
    ):
        unpacked = unpack(write(tmp_path, members))

        assert unpacked.ok, unpacked.problem
        assert unpacked.served == ""
        assert sorted(unpacked.tree) == [".", "a"]
        # No "./" member: mktemp's mode, and an implicit root.
        assert unpacked.tree["."].mode == 0o700
        assert compare(unpacked, manifest(members)).implicit_dirs == ["."]


def test_it_serves_the_first_pristine_entry_in_c_order(tmp_path):
    members = [
        m("versions/pristine/.hidden/", "d"),
        m("versions/pristine/a1/", "d"),
        m("versions/pristine/a1/which", data=b"a1"),
        m("versions/pristine/B2/", "d"),
        m("versions/pristine/B2/which", data=b"B2"),
    ]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.served == "versions/pristine/B2"
    assert unpacked.tree["which"].sha256 == sha(b"B2")


def test_it_does_not_move_a_pristine_symlink_to_the_root(tmp_path):
    before = sorted(os.listdir("/"))
    members = [m("versions/pristine/", "d"), m(f"versions/pristine/{BUILD}", "l", link="/")]

    unpacked = unpack(write(tmp_path, members))

    assert not unpacked.ok
    assert unpacked.served == P
    assert unpacked.problem == (
        f"served entry {P} is not a real directory inside the temp folder: it is a symlink to '/'"
    )
    assert unpacked.tree == {}
    assert sorted(os.listdir("/")) == before


def test_it_does_not_move_anything_a_pristine_symlink_points_at(tmp_path, outside):
    for members, problem in (
        (
            [m(f"versions/pristine/{BUILD}", "l", link=str(outside / "build"))],
            f"it is a symlink to '{outside}/build'",
        ),
        (
            # The real script would `mv -T` the outside folder's first entry into place.
            [m("versions/", "d"), m("versions/pristine", "l", link=str(outside))],
            f"versions/pristine resolves to '{outside}', outside the temp folder",
        ),
        (
            [m("real/", "d"), m(f"versions/pristine/{BUILD}", "l", link="../../real")],
            "it is a symlink to '../../real'",
        ),
    ):
        unpacked = unpack(write(tmp_path, members))

        assert not unpacked.ok
        assert "is not a real directory inside the temp folder: " + problem in unpacked.problem
        assert unpacked.tree == {}
        assert untouched(outside)


def test_it_only_removes_a_versions_symlink_not_what_it_points_at(tmp_path, outside):
    # Neither gives a versions/pristine directory to serve, so the root is served and
    # `rm -fr TMP/versions` removes the symlink alone.
    versions_elsewhere = [m("versions", "l", link=str(outside / "build")), m("a", data=b"x")]
    pristine_a_file = [
        m("versions/", "d"),
        m("versions/pristine", "l", link=str(outside / "build" / "keep")),
        m("a", data=b"x"),
    ]
    for members in (versions_elsewhere, pristine_a_file):
        unpacked = unpack(write(tmp_path, members))

        assert unpacked.ok, unpacked.problem
        assert unpacked.served == ""
        assert sorted(unpacked.tree) == [".", "a"]
        assert untouched(outside)


def test_it_does_not_serve_the_root_when_versions_pristine_is_a_symlink_to_it(tmp_path):
    before = sorted(os.listdir("/"))

    unpacked = unpack(write(tmp_path, [m("versions/pristine", "l", link="/")]))

    assert not unpacked.ok
    assert "versions/pristine resolves to '/', outside the temp folder" in unpacked.problem
    assert unpacked.tree == {}
    assert sorted(os.listdir("/")) == before


# --- Metadata only fakeroot keeps -----------------------------------------------------------


def test_it_keeps_device_nodes_and_fifos_under_fakeroot(tmp_path):
    members = [
        m(f"{P}/", "d"),
        m(f"{P}/dev/", "d"),
        m(f"{P}/dev/null", "c", mode=0o666, dev=(1, 3)),
        m(f"{P}/dev/sda", "b", mode=0o660, dev=(8, 0)),
        m(f"{P}/dev/initctl", "p", mode=0o600),
    ]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.ok, unpacked.problem
    null, sda = unpacked.tree["dev/null"], unpacked.tree["dev/sda"]
    assert (null.type, null.devmajor, null.devminor, null.mode) == ("c", 1, 3, 0o666)
    assert (sda.type, sda.devmajor, sda.devminor, sda.mode) == ("b", 8, 0, 0o660)
    assert unpacked.tree["dev/initctl"].type == "p"
    assert compare_with_manifest(unpacked, manifest(members)) == []


def test_it_unpacks_a_0000_directory_with_a_file_inside(tmp_path):
    # As nobody: tar creates the directory writable, fills it, then sets 0000, which
    # fakeroot records while keeping the directory usable on disk. The server serves it.
    members = [m(f"{P}/", "d"), m(f"{P}/locked/", "d", mode=0), m(f"{P}/locked/f", data=b"in")]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.ok, unpacked.problem
    assert unpacked.tree["locked"].mode == 0
    assert unpacked.tree["locked/f"].sha256 == sha(b"in")
    assert compare_with_manifest(unpacked, manifest(members)) == []


def test_it_cannot_read_a_0000_file_as_the_server_user(tmp_path):
    # fakeroot keeps a file's real mode, so the unprivileged server (whose rsync would have
    # to read it) cannot; as root the emulator would not notice.
    members = [m(f"{P}/", "d"), m(f"{P}/secret", data=b"s", mode=0)]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.ok, unpacked.problem
    assert unpacked.tree["secret"].mode == 0
    assert unpacked.tree["secret"].error == "cannot read: Permission denied"
    assert compare_with_manifest(unpacked, manifest(members)) == [
        "secret: cannot read: Permission denied"
    ]


def test_it_keeps_a_hard_link_to_a_symlink_a_symlink(tmp_path):
    members = [m("s", "l", link="nowhere"), m("h", "h", link="s")]

    unpacked = unpack(write(tmp_path, members))

    assert unpacked.ok, unpacked.problem
    assert unpacked.tree["h"].type == "l"
    assert unpacked.tree["h"].ino == unpacked.tree["s"].ino
    assert compare_with_manifest(unpacked, manifest(members)) == []


# --- Against the fakeroot command itself --------------------------------------------------

# Runs a command as a child subreaper and reaps every orphan at once: fakeroot's script waits
# for its daemon, which it leaves orphaned, to be gone, so a slow reaper (some container inits)
# or none at all would keep it waiting.
SUBREAPER = r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
status = 1
while True:
    try:
        pid, how = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = os.waitstatus_to_exitcode(how)
sys.exit(status)
"""

DUMP = r"""
import os, stat, sys
root = sys.argv[1]
for folder, dirs, files in os.walk(root):
    for name in ["", *dirs, *files]:
        path = os.path.join(folder, name) if name else folder
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        kind = stat.filemode(st.st_mode)[0].replace("-", "f")
        dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        print(repr((rel, kind, stat.S_IMODE(st.st_mode), *dev)))
"""


def test_it_sees_what_the_fakeroot_command_sees(tmp_path):
    members = [
        m("./", "d", mode=0o755),
        m("bin/", "d"),
        m("bin/su", data=b"su", mode=0o4755),
        m("bin/ping", "h", link="bin/su"),
        m("tmp/", "d", mode=0o1777),
        m("ro/", "d", mode=0o555),
        m("ro/f", data=b"f", mode=0o444),
        m("locked/", "d", mode=0),
        m("locked/f", data=b"f"),
        m("dev/", "d"),
        m("dev/null", "c", mode=0o666, dev=(1, 3)),
        m("dev/sda", "b", mode=0o660, dev=(8, 0)),
        m("dev/fifo", "p", mode=0o620),
        m("link", "l", link="/nowhere"),
    ]
    archive = write(tmp_path, members)
    setup = schoolserver._setup()
    work = Path(tempfile.mkdtemp(prefix="xs-fakeroot-", dir="/tmp"))
    try:
        if setup.drop:
            os.chown(work, setup.drop["user"], setup.drop["group"])
        state, tree = work / "state", work / "tree"

        def as_server(*argv, **kwargs):
            return subprocess.run(
                [setup.python, "-I", "-S", "-c", SUBREAPER, *argv],
                cwd=work,
                env={"PATH": schoolserver.SEARCH_PATH, "LC_ALL": "C"},
                capture_output=True,
                timeout=60,
                check=True,
                **setup.drop,
                **kwargs,
            )

        as_server("mkdir", str(tree))
        as_server("touch", str(state))
        with open(archive, "rb") as fh:
            as_server(
                "fakeroot", "-i", str(state), "-s", str(state), "--",
                "tar", "-C", str(tree), "--numeric-owner", "-xpj", "-f", "-",
                stdin=fh,
            )  # fmt: skip
        dump = as_server(
            "fakeroot", "-i", str(state), "--", setup.python, "-I", "-S", "-c", DUMP, str(tree)
        )  # fmt: skip
    finally:
        shutil.rmtree(work)
    seen = {}
    for line in dump.stdout.decode().splitlines():
        path, kind, mode, major, minor = ast.literal_eval(line)
        seen[path] = (kind, mode, major, minor) if kind in "cb" else (kind, mode)

    unpacked = unpack(archive)

    assert unpacked.ok, unpacked.problem
    ours = {
        path: (e.type, e.mode, e.devmajor, e.devminor) if e.type in "cb" else (e.type, e.mode)
        for path, e in unpacked.tree.items()
    }
    assert ours == seen
    assert seen["dev/null"] == ("c", 0o666, 1, 3)
    assert seen["locked"] == ("d", 0)


# --- Running ------------------------------------------------------------------------------


@pytest.fixture
def server_tmp(monkeypatch):
    """A temp folder of the emulator's own, to see that it leaves nothing behind."""
    folder = Path(tempfile.mkdtemp(prefix="xs-tmp-", dir="/tmp"))
    folder.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder)


def test_it_removes_its_temp_folders(tmp_path, server_tmp):
    members = [*GOOD, m(f"{P}/locked/", "d", mode=0), m(f"{P}/locked/f", data=b"x", mode=0)]
    path = write(tmp_path, members)

    assert unpack(path).ok
    assert not unpack(write(tmp_path, [m("a", "h", link="missing")])).ok
    assert os.listdir(server_tmp) == []


def test_it_gives_up_after_the_timeout(tmp_path, server_tmp):
    unpacked = unpack(write(tmp_path, GOOD), timeout=0.001)

    assert not unpacked.ok
    assert unpacked.problem.startswith("timed out while running ")
    assert os.listdir(server_tmp) == []


def test_it_is_quick_enough_to_run_hundreds_of_times(tmp_path):
    path = write(tmp_path, GOOD, ".tar.xz")

    seconds = sorted(unpack(path).seconds for _ in range(5))

    assert seconds[2] < 1.0


def test_it_has_every_tool_it_needs():
    schoolserver.check_tools()


# --- md5 ----------------------------------------------------------------------------------


def test_it_checks_the_md5_file_like_the_publisher(tmp_path):
    tarball = write(tmp_path, GOOD)
    digest = hashlib.md5(tarball.read_bytes()).hexdigest()

    (tmp_path / f"{tarball.name}.md5").write_text(f"{digest}  {tarball.name}\n")
    assert md5_check(tmp_path, tarball.name)

    (tmp_path / f"{tarball.name}.md5").write_text(f"{'0' * 32}  {tarball.name}\n")
    assert not md5_check(tmp_path, tarball.name)

    (tmp_path / f"{tarball.name}.md5").unlink()
    assert not md5_check(tmp_path, tarball.name)
