"""Builds the portal publishes, taken by an emulated school server from the publish folder.

Each build goes through the real pipeline (upload staging, validation, publication into
PUPPETCONTENT_OS_DIR). Then, as a school server does with what puppet synced: `md5sum
--status -c` from the publish folder, GNU tar under fakeroot, the pristine rule
(tests/schoolserver.py); and the tree it would serve must be exactly the manifest the
portal recorded (paths, kinds, modes, sizes, sha256, link targets, hard links).
"""

import io
import tarfile

import pytest
from django.conf import settings

from releases.models import BuildManifest

from .. import schoolserver
from ..factories import compress
from ..manifest import read_manifest

P = "versions/pristine/21021"


def member(name, kind="f", *, mode=0o644, data=b"", link=""):
    return name, kind, mode, data, link


# A tree like an OS image: setuid programs, absolute and climbing symlinks, hard links, a
# sticky /tmp, a read-only folder with files inside, and what real builds carry beside the
# served tree (home/, security/, versions/contents/).
OS_TREE = [
    member(".", "d", mode=0o755),
    member("versions", "d", mode=0o755),
    member("versions/pristine", "d", mode=0o755),
    member(P, "d", mode=0o755),
    member(f"{P}/etc", "d", mode=0o755),
    member(f"{P}/etc/issue", data=b"OLPC OS 13.2.10\n"),
    member(f"{P}/etc/localtime", "l", mode=0o777, link="/usr/share/zoneinfo/America/Asuncion"),
    member(f"{P}/usr/bin/su", mode=0o4755, data=b"\x7fELF su"),
    member(f"{P}/usr/bin/wall", mode=0o2555, data=b"\x7fELF wall"),
    member(f"{P}/usr/bin/sh", "l", mode=0o777, link="../../bin/bash"),
    member(f"{P}/bin/bash", mode=0o755, data=b"\x7fELF bash" * 100),
    member(f"{P}/bin/rbash", "h", link=f"{P}/bin/bash"),
    member(f"{P}/tmp", "d", mode=0o1777),
    member(f"{P}/usr/share/empty", "d", mode=0o555),
    member(f"{P}/usr/lib/ro", "d", mode=0o555),
    member(f"{P}/usr/lib/ro/libx.so", mode=0o644, data=b"lib"),
    member("home/olpc/.bashrc", data=b"# olpc\n"),
    member("security/develop.sig", data=b"sig"),
    member("versions/contents/21021", data=b"{}"),
]
# The same tree at the archive's root, as builds without versions/pristine/ have it.
ROOT_TREE = [
    (name[len(P) + 1 :], kind, mode, data, link[len(P) + 1 :] if kind == "h" else link)
    for name, kind, mode, data, link in OS_TREE
    if name.startswith(P + "/")
]


def tar_of(members) -> bytes:
    buffer = io.BytesIO()
    kinds = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}
    kinds |= {"c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, mode, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kinds[kind], mode, link
            if kind in "cb":
                info.devmajor, info.devminor = 4, 64
            info.size = len(data) if kind == "f" else 0
            tar.addfile(info, io.BytesIO(data) if kind == "f" else None)
    return buffer.getvalue()


def taken_by_school_server(build):
    folder = settings.PUPPETCONTENT_OS_DIR
    assert schoolserver.md5_check(folder, build.tarball_name)
    served = schoolserver.unpack(folder / build.tarball_name)
    assert served.ok, served.problem
    entries = list(read_manifest(BuildManifest.objects.get(build=build).data))
    return served, entries


@pytest.fixture(scope="module", autouse=True)
def tools():
    schoolserver.check_tools()


@pytest.mark.parametrize("compression", ["bz2", "xz", "lzma"])
def test_a_published_os_tree_is_served_exactly_as_recorded(published, compression):
    build = published(tarball=compress(tar_of(OS_TREE), compression), compression=compression)

    served, entries = taken_by_school_server(build)

    assert served.served == "versions/pristine/21021" == f"versions/pristine/{build.pristine_id}"
    assert schoolserver.compare_with_manifest(served, entries) == []
    assert served.tree["usr/bin/su"].mode == 0o4755
    assert served.tree["bin/rbash"].ino == served.tree["bin/bash"].ino
    assert "home" not in served.tree and "versions" not in served.tree
    # What GNU tar left beside the served tree, folders it made included.
    assert build.archive_summary["outside"] == [
        "home",
        "home/olpc",
        "home/olpc/.bashrc",
        "security",
        "security/develop.sig",
        "versions/contents",
        "versions/contents/21021",
    ]


def test_a_published_tree_without_versions_pristine_is_served_from_its_root(published):
    build = published(tarball=compress(tar_of(ROOT_TREE), "xz"), compression="xz")

    served, entries = taken_by_school_server(build)

    assert (served.served, build.pristine_id) == ("", "")
    assert schoolserver.compare_with_manifest(served, entries) == []


def test_device_nodes_a_deployment_allows_are_served_as_devices(published, settings):
    settings.ARCHIVE_ALLOW_DEVICE_NODES = True
    tree = [*OS_TREE, member(f"{P}/dev/sda", "b", mode=0o660), member(f"{P}/dev/tty", "c")]
    build = published(tarball=compress(tar_of(tree), "bz2"), compression="bz2")

    served, entries = taken_by_school_server(build)

    assert schoolserver.compare_with_manifest(served, entries) == []
    sda = served.tree["dev/sda"]
    assert (sda.type, sda.devmajor, sda.devminor) == ("b", 4, 64)
    assert build.archive_summary["devices"] == [["dev/sda", "b"], ["dev/tty", "c"]]
