"""Differential test: the portal accepts an archive only if the school server takes it.

Hypothesis generates small archives shaped to hit every rule of `releases.extraction`: trees
with files, directories, symlinks (absolute, relative and `..` targets), hard links forward
and backward, repeated names, members under files and links, devices, names at and past the
kernel's limits, versions/pristine in every shape, and each compression under each file
extension. Each one goes through the portal's scan (`archive.scan_archive`, what validation
runs) and through the emulated school server (tests/schoolserver.py: GNU tar under fakeroot,
the pristine rule), and the property is

    portal accepts  ⇒  the school server unpacks it cleanly, serves a real directory, and
                       what it serves is exactly the manifest the portal recorded.

The converse does not hold on purpose: the portal also refuses archives tar would take but
where the result is not what was checked (a repeated file: tar keeps the later copy).

Counterexamples Hypothesis ever found are kept below as fixed cases (`FOUND`).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import tarfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from releases import archive
from releases.reasons import Refused

from .. import schoolserver
from ..manifest import read_manifest

# At least 500 generated archives a CI run (issue 9); `HYPOTHESIS_EXAMPLES` raises it.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "1000"))
LIMITS = {"max_unpacked_bytes": 1 << 30, "max_members": 10_000}
PRISTINE_ROOT = "versions/pristine/21021"

# Few names, so that paths collide, nest under each other and link to each other often.
COMPONENTS = ["a", "b", "etc", "bin", "usr", ".x"]
# Leaf names that rarely collide, so that most trees are ones a real build could be.
LEAVES = [f"n{number}" for number in range(16)]
LONG = {
    "component-255": "c" * 255,
    "component-256": "c" * 256,
}
EXTENSIONS = {"bz2": ".tar.bz2", "xz": ".tar.xz", "lzma": ".tar.lzma"}


@dataclass(frozen=True)
class Member:
    kind: str  # f d l h c b p
    path: str
    link: str = ""
    mode: int = 0o644
    data: bytes = b""


def _paths(prefixes, leaves=(*COMPONENTS, *LEAVES)):
    folders = st.lists(st.sampled_from(COMPONENTS), max_size=2)
    leaf = st.sampled_from(leaves)
    relative = st.tuples(folders, leaf).map(lambda pair: "/".join([*pair[0], pair[1]]))
    return st.tuples(st.sampled_from(prefixes), relative).map(
        lambda pair: f"{pair[0]}/{pair[1]}" if pair[0] else pair[1]
    )


PREFIXES = [*[PRISTINE_ROOT] * 10, "", "", "versions", "versions/pristine"]


@st.composite
def members(draw):
    """A list of members, each drawn with the earlier ones in view (for links and repeats)."""
    count = draw(st.integers(1, 9))
    out: list[Member] = []
    if draw(st.integers(0, 9)) < 7:
        # The skeleton real builds start with; without it tar makes the folders itself.
        out += [Member("d", p, mode=0o755) for p in ("versions", "versions/pristine")]
        out.append(Member("d", PRISTINE_ROOT, mode=draw(st.sampled_from([0o755, 0o700]))))
    for _ in range(count):
        earlier = [m.path for m in out]
        choice = draw(
            st.sampled_from(
                [
                    *["f"] * 6,
                    *["d"] * 4,
                    *["l"] * 3,
                    *["h"] * 2,
                    "repeat",
                    "special",
                    "long",
                    "device",
                ]
            )
        )
        # Files take leaf names folders never have; folders and links take any name.
        path = draw(_paths(PREFIXES, LEAVES if choice in ("f", "h", "device") else COMPONENTS))
        if choice == "repeat" and earlier:
            path = draw(st.sampled_from(earlier))
            choice = draw(st.sampled_from(["f", "d", "l"]))
        if choice == "f" or choice == "repeat":
            data = draw(st.binary(max_size=40))
            mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o666, 0o000, 0o400]))
            out.append(Member("f", path, mode=mode, data=data))
        elif choice == "d":
            mode = draw(st.sampled_from([0o755, 0o700, 0o555, 0o1777, 0o777, 0o000]))
            out.append(Member("d", path, mode=mode))
        elif choice == "l":
            target = draw(
                st.one_of(
                    st.sampled_from(["/", "/tmp", "/etc/passwd", "..", "../..", "a", "./b"]),
                    _paths(["", ".."]),
                    st.sampled_from(earlier or ["a"]),
                )
            )
            out.append(Member("l", path, link=target, mode=0o777))
        elif choice == "h":
            files = [m.path for m in out if m.kind == "f"]
            candidates = [*files, *files, *earlier, PRISTINE_ROOT + "/a", "a", PRISTINE_ROOT]
            target = draw(st.sampled_from(candidates))
            out.append(Member("h", path, link=target))
        elif choice == "device":
            out.append(Member(draw(st.sampled_from(["c", "b", "p"])), path, mode=0o600))
        elif choice == "special":
            special = draw(
                st.sampled_from(
                    [
                        Member("l", PRISTINE_ROOT, link="/"),
                        Member("l", PRISTINE_ROOT, link="."),
                        Member("l", "versions/pristine", link="/"),
                        Member("l", "versions", link="/tmp"),
                        Member("f", "versions"),
                        Member("f", "versions/pristine"),
                        Member("f", PRISTINE_ROOT),
                        Member("d", "versions/pristine/99999"),
                        Member("d", "versions/pristine/.hidden"),
                        Member("d", "versions/pristine/sp ace"),
                        Member("d", "."),
                        Member("l", PRISTINE_ROOT + "/up", link="../../../.."),
                    ]
                )
            )
            out.append(special)
        else:  # long names and link targets
            labels = [*LONG, "path-4095", "path-4096", "target-4095", "target-4096", "target-300"]
            label = draw(st.sampled_from(labels))
            if label in LONG:
                out.append(Member("f", f"{PRISTINE_ROOT}/{LONG[label]}"))
            elif label.startswith("target-"):
                size = int(label.split("-")[1])
                out.append(Member("l", f"{PRISTINE_ROOT}/t", link="y" * size))
            else:
                size = int(label.split("-")[1])
                stem = f"{PRISTINE_ROOT}/" + "/".join(["d" * 200] * 20)
                out.append(Member("f", (stem + "/" + "e" * 200)[:size]))
    return out


def tar_of(items: list[Member], fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for item in items:
            info = tarfile.TarInfo(item.path)
            info.mode = item.mode
            info.type = {
                "f": tarfile.REGTYPE,
                "d": tarfile.DIRTYPE,
                "l": tarfile.SYMTYPE,
                "h": tarfile.LNKTYPE,
                "c": tarfile.CHRTYPE,
                "b": tarfile.BLKTYPE,
                "p": tarfile.FIFOTYPE,
            }[item.kind]
            info.linkname = item.link
            if item.kind in "cb":
                info.devmajor, info.devminor = 1, 3
            info.size = len(item.data) if item.kind == "f" else 0
            tar.addfile(info, io.BytesIO(item.data) if item.kind == "f" else None)
    return buffer.getvalue()


def compressed(data: bytes, how: str) -> bytes:
    if how == "bz2":
        return bz2.compress(data, 1)
    if how == "xz":
        return lzma.compress(data, preset=0)
    if how == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0)
    if how == "xz+3zeros":
        return lzma.compress(data, preset=0) + bytes(3)
    if how == "xz+4zeros":
        return lzma.compress(data, preset=0) + bytes(4)
    if how == "lzma+zeros":
        return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0) + bytes(4)
    if how == "bz2x2":
        half = len(data) // 2 // 512 * 512
        return bz2.compress(data[:half], 1) + bz2.compress(data[half:], 1)
    if how == "lzma x2":
        half = len(data) // 2
        first = lzma.compress(data[:half], format=lzma.FORMAT_ALONE, preset=0)
        return first + lzma.compress(data[half:], format=lzma.FORMAT_ALONE, preset=0)
    raise AssertionError(how)


# Archives the portal accepted in this run, each checked against the school server.
ACCEPTED: list[str] = []
COMPRESSIONS = ["bz2", "xz", "lzma", "xz+3zeros", "xz+4zeros", "lzma+zeros", "bz2x2", "lzma x2"]
# Most archives are compressed as their name says, so the tree rules get exercised.
CONTAINERS = st.one_of(
    st.sampled_from([("bz2", "bz2"), ("xz", "xz"), ("lzma", "lzma"), ("bz2x2", "bz2")]),
    st.sampled_from([("xz+4zeros", "xz"), ("lzma", "xz")]),
    st.tuples(st.sampled_from(COMPRESSIONS), st.sampled_from(list(EXTENSIONS))),
)


def check(tmp_path, items, fmt, how, extension, allow_devices):
    """The property, for one archive; returns what each side said (for the fixed cases)."""
    path = tmp_path / f"py801-2-tree{EXTENSIONS[extension]}"
    path.write_bytes(compressed(tar_of(items, fmt), how))
    try:
        scan = archive.scan_archive(path, extension, allow_device_nodes=allow_devices, **LIMITS)
    except Refused as rejection:
        event(f"refused: {rejection.code}")
        return "refused", rejection.code
    event("accepted")
    ACCEPTED.append(path.name)
    served = schoolserver.unpack(path)
    assert served.ok, f"portal accepted, school server failed: {served.problem}"
    expected = f"versions/pristine/{scan.pristine_id}" if scan.pristine_id else ""
    assert served.served == expected
    entries = list(read_manifest(scan.manifest))
    if any(e.type == "f" and not e.mode & 0o400 for e in entries):
        # Unpacked, but the server's rsync user cannot read it back: listed on the build page.
        event("accepted with a file the server user cannot read")
    assert schoolserver.compare_with_manifest(served, entries, unreadable_ok=True) == []
    return "accepted", ""


@pytest.fixture(scope="module", autouse=True)
def tools():
    schoolserver.check_tools()


SKELETON = [Member("d", p, mode=0o755) for p in ("versions", "versions/pristine", PRISTINE_ROOT)]
# Counterexamples the generator found, kept as fixed cases (each once failed the property).
FOUND = [
    # A file without owner read: unpacked, but the unprivileged server user cannot read it
    # back (fakeroot keeps real modes); the build page lists such files.
    {
        "items": [*SKELETON, Member("f", PRISTINE_ROOT + "/a", mode=0o000)],
        "fmt": tarfile.PAX_FORMAT,
    },
    # A root-served file whose final chmod faked had not processed when the emulator stopped
    # it: now the emulator waits for faked, as the fakeroot script does.
    {
        "items": [Member("f", "a", mode=0o600), Member("f", "b", mode=0o644)],
        "fmt": tarfile.GNU_FORMAT,
    },
    # The shapes issue 9 found published: a symlink as the served tree, a file through a
    # symlink, a hard link to a missing target, xz data in a .tar.lzma.
    {"items": [*SKELETON[:2], Member("l", PRISTINE_ROOT, link="/")], "fmt": tarfile.GNU_FORMAT},
    {
        "items": [
            *SKELETON,
            Member("l", PRISTINE_ROOT + "/t", link="/tmp"),
            Member("f", PRISTINE_ROOT + "/t/x"),
        ],
        "fmt": tarfile.GNU_FORMAT,
    },
    {
        "items": [*SKELETON, Member("h", PRISTINE_ROOT + "/b", link=PRISTINE_ROOT + "/a")],
        "fmt": tarfile.GNU_FORMAT,
    },
]


def with_found(test):
    for case in FOUND:
        test = example(container=("bz2", "bz2"), allow_devices=False, **case)(test)
    return example(
        items=[*SKELETON, Member("f", PRISTINE_ROOT + "/a")],
        fmt=tarfile.GNU_FORMAT,
        container=("xz", "lzma"),
        allow_devices=False,
    )(test)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=members(),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    container=CONTAINERS,
    allow_devices=st.booleans(),
)
@with_found
def test_the_portal_accepts_only_what_the_school_server_unpacks(
    tmp_path_factory, items, fmt, container, allow_devices
):
    how, extension = container
    folder = tmp_path_factory.mktemp("archive")
    check(folder, items, fmt, how, extension, allow_devices)


def test_it_checked_enough_accepted_archives_against_the_school_server():
    """The property is only as good as the share of archives the portal accepts: a
    generator that drifted into producing only refusals would check nothing."""
    if EXAMPLES < 500:
        pytest.skip("a short run (HYPOTHESIS_EXAMPLES below 500)")
    # About one in five is accepted (1,000 examples: 180-220 accepted, each unpacked).
    assert len(ACCEPTED) >= EXAMPLES // 10
