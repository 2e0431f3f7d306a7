"""Publishing a build's four files into the puppet content folder, with real files on disk."""

import errno
import hashlib
import os
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from releases import publishing
from releases.reasons import Refused

NAME = "py801-2"
TARBALL = "py801-2-tree.tar.bz2"
CONTENTS = "py801-2.contents"
ALL_FILES = [TARBALL, CONTENTS, f"{TARBALL}.md5", f"{NAME}.name"]
MiB = 1024 * 1024

Usage = namedtuple("Usage", "total used free")


class Build:
    def __init__(self, root: Path, tarball_bytes: bytes):
        store = root / "store"
        store.mkdir()
        self.dest = root / "puppetcontent" / "os"
        self.tarball = store / "tarball.bin"
        self.tarball.write_bytes(tarball_bytes)
        self.tarball_bytes = tarball_bytes
        self.contents = store / "contents.json"
        self.contents_bytes = b'{"files": ["versions/pristine/1/etc/passwd"]}\n'
        self.contents.write_bytes(self.contents_bytes)
        self.md5 = hashlib.md5(tarball_bytes).hexdigest()

    def publish(self, **overrides):
        kwargs = {
            "dest_dir": self.dest,
            "name": NAME,
            "tarball": self.tarball,
            "tarball_name": TARBALL,
            "md5": self.md5,
            "contents": self.contents,
            "contents_name": CONTENTS,
        }
        kwargs.update(overrides)
        return publishing.publish_files(**kwargs)

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.dest)) if self.dest.exists() else []


@pytest.fixture
def build(tmp_path):
    return Build(tmp_path, os.urandom(3 * MiB + 123))


@pytest.fixture
def real_link():
    return os.link


@pytest.fixture
def links(monkeypatch, real_link):
    """Record every os.link call the module makes, as (source, destination) paths."""
    calls = []

    def link(src, dst, *args, **kwargs):
        calls.append((Path(src), Path(dst)))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(publishing.os, "link", link)
    return calls


def force_copy(monkeypatch, build, real_link):
    """Make the store→temp hard link fail as it would across filesystems."""

    def link(src, dst, *args, **kwargs):
        if Path(src) == build.tarball:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(publishing.os, "link", link)


def fail_writes(monkeypatch, error_number, *, after=0, when=None):
    """Let `after` writes through, then fail every write whose file `when` accepts."""
    real_write = publishing._write
    state = {"writes": 0}

    def write(fd, data):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if when is None or when(path):
            if state["writes"] >= after:
                raise OSError(error_number, os.strerror(error_number), path)
            state["writes"] += 1
        return real_write(fd, data)

    monkeypatch.setattr(publishing, "_write", write)


def test_it_places_the_four_files_byte_for_byte(build):
    placed = build.publish()

    assert placed == ALL_FILES
    assert build.listing() == sorted(ALL_FILES)
    assert (build.dest / TARBALL).read_bytes() == build.tarball_bytes
    assert (build.dest / CONTENTS).read_bytes() == build.contents_bytes
    assert (build.dest / f"{NAME}.name").read_bytes() == b"py801-2\n"


def test_it_writes_the_md5_file_in_md5sum_format(build):
    build.publish()

    md5_line = (build.dest / f"{TARBALL}.md5").read_bytes()
    assert md5_line == f"{build.md5}  {TARBALL}\n".encode()
    assert md5_line.decode().split() == [
        hashlib.md5((build.dest / TARBALL).read_bytes()).hexdigest(),
        TARBALL,
    ]


def test_it_creates_the_destination_folder_when_missing(build):
    assert not build.dest.exists()

    build.publish()

    assert build.dest.is_dir()


def test_the_tarball_is_a_hard_link_of_the_store_file_on_the_same_filesystem(build):
    build.publish()

    assert (build.dest / TARBALL).stat().st_ino == build.tarball.stat().st_ino
    assert build.tarball.stat().st_nlink == 2


def test_it_copies_the_tarball_when_it_cannot_hard_link_across_filesystems(
    build, monkeypatch, real_link
):
    force_copy(monkeypatch, build, real_link)

    assert build.publish() == ALL_FILES

    published = build.dest / TARBALL
    assert published.stat().st_ino != build.tarball.stat().st_ino
    assert build.tarball.stat().st_nlink == 1
    assert published.read_bytes() == build.tarball_bytes
    assert build.listing() == sorted(ALL_FILES)


def test_every_file_goes_through_a_hidden_temporary_name_and_the_name_file_comes_last(build, links):
    build.publish()

    finals = [dst.name for _src, dst in links if not dst.name.startswith(".")]
    assert finals == ALL_FILES
    for src, dst in links:
        if dst.name.startswith("."):
            continue
        assert src.parent == build.dest
        assert src.name.startswith(f".{dst.name}.tmp-")
        assert not src.name.endswith((".md5", ".name", ".contents"))
        assert "-tree.tar." not in src.name.split(".tmp-")[-1]


def test_it_reports_md5_progress_per_chunk_of_the_placed_tarball(build):
    calls = []

    build.publish(progress=lambda done, total: calls.append((done, total)))

    size = len(build.tarball_bytes)
    assert calls == [(MiB, size), (2 * MiB, size), (3 * MiB, size), (size, size)]


def test_file_md5_streams_the_file(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(MiB + 5)
    path.write_bytes(data)
    calls = []

    assert publishing.file_md5(path, lambda d, t: calls.append((d, t))) == (
        hashlib.md5(data).hexdigest()
    )
    assert calls == [(MiB, MiB + 5), (MiB + 5, MiB + 5)]


def test_republishing_an_identical_build_is_a_no_op_that_succeeds(build, links):
    build.publish()
    before = {n: (build.dest / n).stat() for n in ALL_FILES}
    links.clear()

    assert build.publish() == ALL_FILES

    assert links == []
    assert build.listing() == sorted(ALL_FILES)
    for n in ALL_FILES:
        after = (build.dest / n).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[n].st_ino, before[n].st_mtime_ns)


def test_an_identical_copy_of_the_tarball_already_there_counts_as_published(build):
    build.dest.mkdir(parents=True)
    (build.dest / TARBALL).write_bytes(build.tarball_bytes)

    assert build.publish() == ALL_FILES

    assert (build.dest / TARBALL).stat().st_ino != build.tarball.stat().st_ino
    assert build.listing() == sorted(ALL_FILES)


def test_it_finishes_a_publication_that_stopped_half_way(build):
    build.publish()
    (build.dest / f"{NAME}.name").unlink()
    (build.dest / f"{TARBALL}.md5").unlink()

    assert build.publish() == ALL_FILES
    assert build.listing() == sorted(ALL_FILES)


@pytest.mark.parametrize(
    "existing",
    [
        pytest.param((TARBALL, b"another archive"), id="tarball-other-size"),
        pytest.param((TARBALL, None), id="tarball-same-size"),
        pytest.param((CONTENTS, b'{"files": []}\n'), id="contents"),
        pytest.param((f"{TARBALL}.md5", b"0" * 32 + b"  " + TARBALL.encode() + b"\n"), id="md5"),
        pytest.param((f"{NAME}.name", b"py801-3\n"), id="name"),
    ],
)
def test_a_different_file_under_any_of_the_four_names_is_a_conflict_and_nothing_is_placed(
    build, links, existing
):
    basename, data = existing
    if data is None:
        data = bytes(len(build.tarball_bytes))
    build.dest.mkdir(parents=True)
    (build.dest / basename).write_bytes(data)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_conflict"
    assert caught.value.params == {"file": basename}
    assert links == []
    assert build.listing() == [basename]
    assert (build.dest / basename).read_bytes() == data


def test_a_file_that_appears_between_the_check_and_the_link_is_never_overwritten(
    build, monkeypatch, real_link
):
    intruder = b"somebody else's name\n"

    def link(src, dst, *args, **kwargs):
        if Path(dst).name == f"{NAME}.name":
            Path(dst).write_bytes(intruder)
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(publishing.os, "link", link)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_conflict"
    assert caught.value.params == {"file": f"{NAME}.name"}
    assert build.listing() == [f"{NAME}.name"]
    assert (build.dest / f"{NAME}.name").read_bytes() == intruder


def test_a_concurrent_reader_never_sees_an_incomplete_file_under_a_final_name(
    build, monkeypatch, real_link
):
    force_copy(monkeypatch, build, real_link)
    real_write = publishing._write

    def slow_write(fd, data):
        time.sleep(0.01)
        return real_write(fd, data)

    monkeypatch.setattr(publishing, "_write", slow_write)
    expected = {
        TARBALL: build.tarball_bytes,
        CONTENTS: build.contents_bytes,
        f"{TARBALL}.md5": f"{build.md5}  {TARBALL}\n".encode(),
        f"{NAME}.name": b"py801-2\n",
    }
    build.dest.mkdir(parents=True)
    done = threading.Event()
    seen = {"temps": 0, "finals": set()}
    bad = []

    def reader():
        while not done.is_set():
            for entry in os.listdir(build.dest):
                if entry.startswith("."):
                    seen["temps"] += 1
                    continue
                try:
                    data = (build.dest / entry).read_bytes()
                except FileNotFoundError:
                    continue
                seen["finals"].add(entry)
                if data != expected.get(entry):
                    bad.append((entry, len(data)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        build.publish()
    finally:
        done.set()
        thread.join()

    assert bad == []
    assert seen["temps"] > 0, "the reader never ran while the copy was in progress"
    assert TARBALL in seen["finals"]


def test_disk_full_in_the_middle_of_the_copy_removes_everything_and_reports_no_space(
    build, monkeypatch, real_link
):
    force_copy(monkeypatch, build, real_link)
    fail_writes(monkeypatch, errno.ENOSPC, after=2)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_no_space"
    assert caught.value.params["needed"] == len(build.tarball_bytes) + len(build.contents_bytes)
    assert isinstance(caught.value.params["free"], int)
    assert build.listing() == []
    assert build.tarball.read_bytes() == build.tarball_bytes


def test_a_single_argument_enospc_is_still_recognised_as_disk_full(build, monkeypatch):
    def write(fd, data):
        raise OSError(errno.ENOSPC)

    monkeypatch.setattr(publishing, "_write", write)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_no_space"
    assert build.listing() == []


def test_an_io_error_removes_the_files_this_call_placed_and_reports_it(build, monkeypatch):
    fail_writes(monkeypatch, errno.EIO, when=lambda path: ".md5.tmp-" in path)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_io_error"
    error = caught.value.params["error"]
    assert error.startswith(os.strerror(errno.EIO) + ": ")
    assert f".{TARBALL}.md5.tmp-" in error
    assert build.listing() == []
    assert build.tarball.stat().st_nlink == 1


def test_a_failure_never_removes_files_that_were_there_before(build, monkeypatch):
    build.dest.mkdir(parents=True)
    (build.dest / CONTENTS).write_bytes(build.contents_bytes)
    fail_writes(monkeypatch, errno.EIO, when=lambda path: ".name.tmp-" in path)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_io_error"
    assert build.listing() == [CONTENTS]
    assert (build.dest / CONTENTS).read_bytes() == build.contents_bytes


def test_not_enough_free_space_is_refused_before_anything_is_written(build, monkeypatch, links):
    def no_write(fd, data):
        raise AssertionError("wrote before checking free space")

    monkeypatch.setattr(publishing, "_write", no_write)
    monkeypatch.setattr(publishing.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_no_space"
    needed = caught.value.params["needed"]
    assert caught.value.params == {"needed": needed, "free": 1000}
    assert needed < len(build.tarball_bytes)  # same filesystem: the tarball will be linked
    assert links == []
    assert build.listing() == []


def test_the_space_needed_includes_the_tarball_when_it_must_be_copied(build, monkeypatch):
    monkeypatch.setattr(publishing, "_same_filesystem", lambda a, b: False)
    monkeypatch.setattr(publishing.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))

    with pytest.raises(Refused) as caught:
        build.publish()

    small = len(build.contents_bytes) + len(f"{build.md5}  {TARBALL}\n") + len(f"{NAME}\n")
    assert caught.value.params["needed"] == len(build.tarball_bytes) + small + MiB
    assert build.listing() == []


def test_a_checksum_mismatch_in_place_removes_the_tarball_and_reports_both_sums(build):
    wrong = "0" * 32

    with pytest.raises(Refused) as caught:
        build.publish(md5=wrong)

    assert caught.value.code == "publish_md5_mismatch"
    assert caught.value.params == {"actual": build.md5, "expected": wrong}
    assert build.listing() == []
    assert build.tarball.stat().st_nlink == 1


def test_a_damaged_copy_is_caught_before_it_gets_its_final_name(build, monkeypatch, real_link):
    force_copy(monkeypatch, build, real_link)
    real_write = publishing._write

    def flip_a_byte(fd, data):
        return real_write(fd, bytes([data[0] ^ 1]) + data[1:] if len(data) == MiB else data)

    monkeypatch.setattr(publishing, "_write", flip_a_byte)

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_md5_mismatch"
    assert caught.value.params["expected"] == build.md5
    assert caught.value.params["actual"] != build.md5
    assert build.listing() == []


@pytest.mark.parametrize("missing", ["tarball", "contents"])
def test_a_missing_source_file_is_reported_by_its_published_name(build, missing):
    getattr(build, missing).unlink()

    with pytest.raises(Refused) as caught:
        build.publish()

    assert caught.value.code == "publish_source_missing"
    assert caught.value.params == {"file": TARBALL if missing == "tarball" else CONTENTS}
    assert build.listing() == []


def test_every_rejection_renders_its_message_without_missing_parameters(build):
    build.dest.mkdir(parents=True)
    (build.dest / CONTENTS).write_bytes(b"other")

    with pytest.raises(Refused) as caught:
        build.publish()

    assert CONTENTS in caught.value.message
    assert "%(" not in caught.value.message


def test_unpublish_removes_the_name_file_first_then_the_rest(build, monkeypatch):
    build.publish()
    real_unlink = os.unlink
    order = []

    def unlink(path, *args, **kwargs):
        order.append(Path(path).name)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(publishing.os, "unlink", unlink)

    removed = publishing.unpublish_files(
        dest_dir=build.dest, name=NAME, tarball_name=TARBALL, contents_name=CONTENTS
    )

    expected = [f"{NAME}.name", f"{TARBALL}.md5", TARBALL, CONTENTS]
    assert removed == expected
    assert order == expected
    assert build.listing() == []
    assert build.tarball.read_bytes() == build.tarball_bytes


def test_unpublish_skips_files_that_are_already_gone(build):
    build.publish()
    (build.dest / TARBALL).unlink()

    removed = publishing.unpublish_files(
        dest_dir=build.dest, name=NAME, tarball_name=TARBALL, contents_name=CONTENTS
    )

    assert removed == [f"{NAME}.name", f"{TARBALL}.md5", CONTENTS]
    assert (
        publishing.unpublish_files(
            dest_dir=build.dest, name=NAME, tarball_name=TARBALL, contents_name=CONTENTS
        )
        == []
    )


def test_it_removes_its_own_stale_temporary_files_and_nothing_else(build, settings):
    """What a killed attempt left: removed. A temporary file still being written (a slow
    publisher the sweeper re-queued), another build's, or a name that only starts alike:
    left alone."""
    build.dest.mkdir(parents=True)
    stale = build.dest / f".{TARBALL}.tmp-0123456789abcdef"
    fresh = build.dest / f".{CONTENTS}.tmp-fedcba9876543210"
    other_build = build.dest / ".py801-20-tree.tar.bz2.tmp-0123456789abcdef"
    lookalike = build.dest / f".{TARBALL}.tmp-0123456789abcdef.keep"
    long_ago = time.time() - settings.SWEEPER_STALE_AFTER - 60
    for path in (stale, fresh, other_build, lookalike):
        path.write_bytes(b"partial")
        if path is not fresh:
            os.utime(path, (long_ago, long_ago))

    build.publish()

    assert not stale.exists()
    assert fresh.exists() and other_build.exists() and lookalike.exists()
    assert set(ALL_FILES) <= set(build.listing())
