"""Every hostile archive and .contents file in the suite, with the memory it costs measured.

Issue 19's bound: a web worker and the Celery worker stay under 150 MB peak RSS on every
hostile input, and so does each program validation starts (fakeroot's script and daemon, the
unpack session, tar, the decompressor). Measured in a real Django process
(tests/hostile/memory.py), on the very functions the validation task and the upload call:
`unpack.unpack_archive` and `checks.check_contents`. `pytest -s` prints the table.

The member count bomb holds `HOSTILE_MEMBER_COUNT` empty files (200,000 by default: tar under
fakeroot makes about 5,000 a second, so the 500,000 of MAX_ARCHIVE_MEMBERS's default take
about two minutes; set HOSTILE_MEMBER_COUNT=500000 to measure that).
"""

import os

import pytest
from django.conf import settings

from releases import unpack

from ..factories import compress
from . import bombs, memory
from .test_archives import ACCEPTED_CASES, BROKEN_CASES

LIMIT = 150 * 1024**2
ARCHIVE_LIMITS = {"max_unpacked_bytes": 64 * 1024**3, "max_members": 500_000}
MEMBER_COUNT = int(os.environ.get("HOSTILE_MEMBER_COUNT", "200000"))
# The ones that once cost gigabytes, beside every archive of test_archives:
# (label, compression, archive, limits, outcome).
BOMBS = [
    # GNU tar at its apparent size, under the default limit: 20 GiB hashed, 512 bytes stored.
    (
        "sparse-member-of-20-gib",
        "bz2",
        lambda: compress(bombs.sparse_tar("etc/big", 20 << 30), "bz2"),
        {},
        "ok",
    ),
    (
        "decompression-bomb-of-4-gib",
        "bz2",
        lambda: bombs.zeros_archive("dev/zero", 4 << 30),
        {"max_unpacked_bytes": 1 << 30},
        "archive_too_big",
    ),
    (
        # Exactly the limit in files: tar takes them all, the walk counts their folder too.
        f"member-count-bomb-of-{MEMBER_COUNT}-files",
        "xz",
        lambda: bombs.member_count_archive(MEMBER_COUNT),
        {"max_members": MEMBER_COUNT},
        "archive_too_many",
    ),
]
FROM_TEST_ARCHIVES = ["gnu-long-name-of-a-gibibyte", "sparse-member-over-the-limit"]


def write_contents(path, head: bytes, repeated: bytes, tail: bytes, size: int):
    with open(path, "wb") as fh:
        fh.write(head)
        block = repeated * (1 << 20)
        written = len(head)
        while written + len(block) + len(tail) <= size:
            fh.write(block)
            written += len(block)
        fh.write(tail)


def archive_call(folder, label, compression, data, limits):
    path = folder / f"{label}-tree.tar.{compression}"
    path.write_bytes(data() if callable(data) else data)
    options = {**ARCHIVE_LIMITS, **limits, "scratch_dir": str(folder / "scratch")}
    return ("releases.unpack:unpack_archive", [str(path), compression], options)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    calls, expected = [], []
    for case in BROKEN_CASES:
        if case.tarball is None:
            continue
        limits = {}
        if "MAX_UNPACKED_BYTES" in case.limits:
            limits["max_unpacked_bytes"] = case.limits["MAX_UNPACKED_BYTES"]
        if "MAX_ARCHIVE_MEMBERS" in case.limits:
            limits["max_members"] = case.limits["MAX_ARCHIVE_MEMBERS"]
        calls.append(archive_call(folder, case.id, case.compression, case.tarball, limits))
        expected.append((f"worker: {case.id}", case.code))
    for case in ACCEPTED_CASES:
        calls.append(archive_call(folder, case.id, case.compression, case.tarball, {}))
        expected.append((f"worker: {case.id}", "ok"))
    for label, compression, data, limits, outcome in BOMBS:
        calls.append(archive_call(folder, label, compression, data, limits))
        expected.append((f"worker: {label}", outcome))
    contents = {
        # 200 MiB of [[],[],...]: once 5.3 GB in the worker. Streamed, whatever the size.
        "empty-arrays": (b"[", b"[],", b"[]]", "ok", 200 << 20),
        # ijson builds a string whole, at about 2.4 bytes a byte: the file limit
        # (MAX_CONTENTS_BYTES, 32 MiB by default) is what bounds this one.
        "one-long-string": (b'"', b"a", b'"', "ok", settings.MAX_CONTENTS_BYTES),
        "deep-nesting": (b"", b"[", b"", "contents_not_json", 200 << 20),
    }
    for label, (head, repeated, tail, outcome, size) in contents.items():
        path = folder / f"{label}.contents"
        write_contents(path, head, repeated, tail, size)
        # The upload (in the web process) and the validation task call the same check.
        limit = max(size, settings.MAX_CONTENTS_BYTES)
        calls.append(("releases.checks:check_contents", [str(path)], {"max_bytes": limit}))
        expected.append((f"web and worker: .contents {label}", outcome))
    results = memory.peak_rss(calls, folder / "data")
    return list(zip(expected, results, strict=True))


def megabytes(size: int) -> str:
    return f"{size / 1024**2:6.1f}"


def test_it_covers_the_bombs_that_once_cost_gigabytes(measured):
    labels = {label for (label, _code), _result in measured}
    names = [label for label, *_rest in BOMBS] + FROM_TEST_ARCHIVES
    assert {f"worker: {name}" for name in names} <= labels
    assert len(bombs.long_name_archive(1 << 30)) < 200_000
    assert len(bombs.zeros_archive("dev/zero", 4 << 30)) < 100_000


def test_every_hostile_input_is_refused_or_checked_under_150_mb(measured):
    """Each row: the worker's peak; the largest peak of anything it started (never below the
    worker's own RSS, see memory.py); each program's own: tar and the decompressor as
    `ArchiveScan.peak_rss` gives them for an accepted archive, and what came back to be
    reaped (faked; the session when it was killed). In MB."""
    tool = unpack.decompressor("bz2").label
    print(f"\n{'input':50} {'outcome':26} {'worker':>6} {'child':>6}  programs ({tool} for bz2)")
    over = []
    for (label, code), (outcome, worker, children, tools, _left) in measured:
        programs = " ".join(f"{name} {megabytes(peak).strip()}" for name, peak in tools.items())
        print(f"{label:50} {outcome[:26]:26} {megabytes(worker)} {megabytes(children)}  {programs}")
        assert outcome == code, label
        for who, peak in [("worker", worker), ("largest child", children), *tools.items()]:
            if peak >= LIMIT:
                over.append((label, who, peak))
    assert not over


def test_no_program_outlives_the_validation(measured):
    """fakeroot's daemon and the unpack session end with the call, refused or not: one left
    per validation would pile up in a long-running worker."""
    left = {label: names for (label, _code), (*_figures, names) in measured if names}
    assert left == {}
