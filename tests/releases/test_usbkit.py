"""The USB kit as a library (`releases.usbkit`): the manifest against the real `sha1sum *`,
the tar stream against the real GNU tar and `sha1sum -c` (as the school server's USB script
checks a stick), its length against the bytes streamed, and writing a folder, with the disk
failing at the one place bytes are written."""

import errno
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from releases import usbkit
from releases.reasons import Refused

C_LOCALE = {**os.environ, "LC_ALL": "C"}


def kit_files(folder: Path, contents: dict[str, bytes]) -> list[usbkit.KitFile]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in contents.items():
        (folder / name).write_bytes(data)
        files.append(usbkit.KitFile(name, folder / name, len(data), hashlib.sha1(data).hexdigest()))
    return files


BUILD = {
    "py801-2-tree.tar.bz2": os.urandom(70_000),
    "py801-2-tree.tar.bz2.md5": b"0123456789abcdef0123456789abcdef  py801-2-tree.tar.bz2\n",
    "py801-2.contents": b'{"files": []}\n',
    "py801-2.name": b"py801-2\n",
}


@pytest.fixture
def kit(tmp_path):
    return usbkit.make_kit(kit_files(tmp_path / "published", BUILD), mtime=1_700_000_000)


def extract(stream: bytes, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=stream, check=True)
    return into / usbkit.FOLDER


def sha1sum_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sha1sum", "-c", usbkit.MANIFEST], cwd=folder, capture_output=True, text=True
    )


def sha1sum_star(folder: Path) -> bytes:
    """`sha1sum *` run by the shell in `folder`, in the C locale."""
    return subprocess.run(
        ["sh", "-c", "sha1sum *"], cwd=folder, env=C_LOCALE, capture_output=True, check=True
    ).stdout


def test_the_manifest_is_what_sha1sum_star_prints_in_the_c_locale(tmp_path):
    # Upper case, dots, dashes and underscores: where the C order differs from others.
    names = ["b-tree.tar.xz", "B.name", "a_1.contents", "a.contents", "a-b", "Z9", "0.md5"]
    folder = tmp_path / "kit"
    files = kit_files(folder, {name: name.encode() * 3 for name in names})

    expected = sha1sum_star(folder)

    assert usbkit.make_kit(files).manifest == expected
    assert usbkit.manifest_bytes(reversed(files)) == expected


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 10240, 70_001])
def test_the_length_is_known_before_streaming_and_is_the_length_streamed(tmp_path, size):
    files = kit_files(tmp_path / "p", {"x-tree.tar.xz": os.urandom(size), "x.name": b"x\n"})
    kit = usbkit.make_kit(files, signature=b"s" * size)

    streamed = b"".join(usbkit.tar_stream(kit, chunk_size=4096))

    assert len(streamed) == usbkit.tar_length(kit)
    assert len(streamed) % usbkit.RECORD == 0


def test_gnu_tar_extracts_the_folder_and_sha1sum_checks_it(kit, tmp_path):
    streamed = b"".join(usbkit.tar_stream(kit, chunk_size=1000))

    folder = extract(streamed, tmp_path / "stick")

    check = sha1sum_check(folder)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == sorted(f"{name}: OK" for name in BUILD)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*BUILD, usbkit.MANIFEST])
    for name, data in BUILD.items():
        assert (folder / name).read_bytes() == data
    # Exactly `sha1sum *` of what the stick holds, the manifest itself aside.
    lines = sha1sum_star(folder).splitlines(keepends=True)
    listed = b"".join(line for line in lines if not line.endswith(b"  manifest.sha1\n"))
    assert listed == (folder / usbkit.MANIFEST).read_bytes()


def test_the_manifest_comes_first_and_every_member_is_owned_by_root(kit):
    with tarfile.open(fileobj=io.BytesIO(b"".join(usbkit.tar_stream(kit)))) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == [
        "xs-xobuilds",
        "xs-xobuilds/manifest.sha1",
        *(f"xs-xobuilds/{name}" for name in usbkit.c_sorted(BUILD)),
    ]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 1_700_000_000)}
    assert members[0].isdir() and all(m.isfile() for m in members[1:])


def test_the_stream_is_the_same_bytes_every_time(kit):
    assert b"".join(usbkit.tar_stream(kit)) == b"".join(usbkit.tar_stream(kit, chunk_size=7))


def test_a_file_that_changed_fails_the_stream_before_its_last_bytes(kit, tmp_path):
    archive = tmp_path / "published" / "py801-2-tree.tar.bz2"
    damaged = bytearray(BUILD[archive.name])
    damaged[-1] ^= 1
    archive.write_bytes(bytes(damaged))

    sent = bytearray()
    with pytest.raises(usbkit.KitChanged):
        for chunk in usbkit.tar_stream(kit, chunk_size=4096):
            sent += chunk

    assert len(sent) < usbkit.tar_length(kit)
    assert bytes(damaged[-4096:]) not in sent  # its last chunk never went out


def test_a_size_of_8_gib_or_more_gets_a_header_that_tar_reads():
    size = 9 * 1024**3 + 5
    kit = usbkit.make_kit([usbkit.KitFile("big-tree.tar.xz", Path("/nonexistent"), size, "0" * 40)])
    header = usbkit._header("big-tree.tar.xz", size=size)

    assert len(header) == usbkit.BLOCK
    assert tarfile.TarInfo.frombuf(header, "utf-8", "strict").size == size
    assert usbkit.tar_length(kit) >= size + 4 * usbkit.BLOCK
    assert usbkit.tar_length(kit) % usbkit.RECORD == 0


def test_names_that_sha1sum_would_escape_or_the_shell_would_skip_are_refused(tmp_path):
    for name in (".hidden", "a b", "back\\slash", "manifest.sha1", "a/b"):
        with pytest.raises(ValueError):
            usbkit.make_kit([usbkit.KitFile(name, tmp_path, 0, "0" * 40)])


# --- Writing a folder -----------------------------------------------------------------------


def test_it_writes_the_folder_and_sha1sum_checks_it(kit, tmp_path):
    stick = tmp_path / "stick"
    stick.mkdir()

    folder = usbkit.write_folder(kit, stick)

    assert folder == stick / usbkit.FOLDER
    assert sha1sum_check(folder).returncode == 0
    assert sorted(os.listdir(folder)) == sorted([*BUILD, usbkit.MANIFEST])


def test_writing_the_same_kit_again_succeeds_and_changes_nothing(kit, tmp_path):
    folder = usbkit.write_folder(kit, tmp_path)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}

    assert usbkit.write_folder(kit, tmp_path) == folder

    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == before


def test_a_signature_is_written_beside_the_manifest_and_not_listed_in_it(tmp_path):
    files = kit_files(tmp_path / "published", BUILD)
    kit = usbkit.make_kit(files, signature=b"\x89binary\xffsignature")

    folder = usbkit.write_folder(kit, tmp_path)

    assert (folder / usbkit.SIGNATURE).read_bytes() == b"\x89binary\xffsignature"
    assert b"manifest" not in (folder / usbkit.MANIFEST).read_bytes()
    assert sha1sum_check(folder).returncode == 0


@pytest.mark.parametrize("other", ["py700-1.name", "manifest.sha1.sig", "py801-2.name"])
def test_a_folder_holding_other_files_is_refused_and_left_alone(kit, tmp_path, other):
    folder = tmp_path / usbkit.FOLDER
    folder.mkdir()
    (folder / other).write_bytes(b"another build\n")

    with pytest.raises(Refused) as refused:
        usbkit.write_folder(kit, tmp_path)

    assert refused.value.code == "usbkit_conflict"
    assert other in refused.value.params["files"]
    assert os.listdir(folder) == [other]


def test_a_destination_that_is_not_a_folder_is_refused(kit, tmp_path):
    with pytest.raises(Refused) as refused:
        usbkit.write_folder(kit, tmp_path / "not-mounted")
    assert refused.value.code == "usbkit_dest_missing"
    assert not (tmp_path / "not-mounted").exists()


def test_the_disk_filling_up_mid_write_takes_back_everything_written(kit, tmp_path, monkeypatch):
    real_write = usbkit._write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:  # the archive went in; the next file does not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(usbkit, "_write", write)

    with pytest.raises(Refused) as refused:
        usbkit.write_folder(kit, tmp_path)

    assert refused.value.code == "usbkit_no_space"
    assert not (tmp_path / usbkit.FOLDER).exists()  # the folder it made is gone too


def test_a_stick_returning_other_bytes_fails_the_kit(kit, tmp_path, monkeypatch):
    monkeypatch.setattr(usbkit, "_read_back", lambda path: "f" * 40)
    (tmp_path / usbkit.FOLDER).mkdir()

    with pytest.raises(Refused) as refused:
        usbkit.write_folder(kit, tmp_path)

    assert refused.value.code == "usbkit_verify_failed"
    assert refused.value.params["file"] == "py801-2-tree.tar.bz2"
    assert os.listdir(tmp_path / usbkit.FOLDER) == []  # a folder already there stays


def test_a_published_file_that_changed_is_not_copied(kit, tmp_path):
    (tmp_path / "published" / "py801-2.contents").write_bytes(b'{"files": [1]}\n')

    with pytest.raises(Refused) as refused:
        usbkit.write_folder(kit, tmp_path)

    assert refused.value.code == "usbkit_source_changed"
    assert not (tmp_path / usbkit.FOLDER).exists()


def test_temporary_files_of_a_killed_run_are_removed(kit, tmp_path):
    folder = tmp_path / usbkit.FOLDER
    folder.mkdir()
    (folder / ".py801-2.name.tmp-0123456789abcdef").write_bytes(b"half")
    (folder / ".Trashes").write_bytes(b"not ours")

    usbkit.write_folder(kit, tmp_path)

    assert sorted(os.listdir(folder)) == sorted([".Trashes", *BUILD, usbkit.MANIFEST])
