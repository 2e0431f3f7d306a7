"""Every hostile archive and .contents file in the suite, with the worker's memory measured.

Issue 9's bound: a web worker and the Celery worker stay under 150 MB peak RSS on every
hostile input. Measured in a real Django process (tests/hostile/memory.py), on the very
functions the validation task and the upload call: `archive.scan_archive` and
`checks.check_contents`.
"""

import pytest

from . import bombs, memory
from .test_archives import BROKEN_CASES

LIMIT = 150 * 1024**2
ARCHIVE_LIMITS = {"max_unpacked_bytes": 64 * 1024**3, "max_members": 2_000_000}
# The ones that used to cost gigabytes, beside every broken archive of test_archives.
BOMBS = [
    ("gnu-long-name-of-a-gibibyte", "archive_header_too_big"),
    ("sparse-member-of-20-gib", "archive_sparse"),
]


def write_contents(path, head: bytes, repeated: bytes, tail: bytes, size: int):
    with open(path, "wb") as fh:
        fh.write(head)
        block = repeated * (1 << 20)
        written = len(head)
        while written + len(block) + len(tail) <= size:
            fh.write(block)
            written += len(block)
        fh.write(tail)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    calls, expected = [], []
    for case in BROKEN_CASES:
        if case.tarball is None:
            continue
        path = folder / f"{case.id}-tree.tar.{case.compression}"
        path.write_bytes(case.tarball)
        limits = dict(ARCHIVE_LIMITS)
        if "MAX_UNPACKED_BYTES" in case.limits:
            limits["max_unpacked_bytes"] = case.limits["MAX_UNPACKED_BYTES"]
        if "MAX_ARCHIVE_MEMBERS" in case.limits:
            limits["max_members"] = case.limits["MAX_ARCHIVE_MEMBERS"]
        calls.append(("releases.archive:scan_archive", [str(path), case.compression], limits))
        expected.append((f"worker: {case.id}", case.code))
    contents = {
        # 200 MiB of [[],[],...]: once 5.3 GB in the worker.
        "empty-arrays": (b"[", b"[],", b"[]]", "ok"),
        "one-long-string": (b'"', b"a", b'"', "ok"),
        "deep-nesting": (b"", b"[", b"", "contents_not_json"),
    }
    for label, (head, repeated, tail, outcome) in contents.items():
        path = folder / f"{label}.contents"
        write_contents(path, head, repeated, tail, 200 << 20)
        # The upload (in the web process) and the validation task call the same check.
        calls.append(("releases.checks:check_contents", [str(path)], {"max_bytes": 256 << 20}))
        expected.append((f"web and worker: .contents {label}", outcome))
    results = memory.peak_rss(calls, folder / "data")
    return list(zip(expected, results, strict=True))


def test_it_covers_the_bombs_that_once_cost_gigabytes(measured):
    labels = {label for (label, _code), _result in measured}
    assert {f"worker: {name}" for name, _code in BOMBS} <= labels
    assert len(bombs.long_name_archive(1 << 30)) < 200_000


def test_every_hostile_input_is_refused_or_checked_under_150_mb(measured):
    over = []
    for (label, code), (outcome, peak) in measured:
        print(f"{label:55} {outcome:28} {peak / 1024**2:6.1f} MB")
        assert outcome == code, label
        if peak >= LIMIT:
            over.append((label, peak))
    assert not over
