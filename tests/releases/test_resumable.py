"""Resumable uploads, the service: chunks in order, a chunk held twice, one out of place,
one damaged or cut off, a crash between the write and the row, resuming by name, size and
first chunk, the finished archive's checksums, and the sweeper."""

import fcntl
import hashlib
import io
import os
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from releases import resumable
from releases.models import ResumableUpload
from releases.reasons import Refused

NAME = "py801-2-tree.tar.bz2"
DATA = os.urandom(1_000_000) + bytes(range(256)) * 3000  # not a whole number of blocks
CHUNK = 300_001


def start(user, data=DATA, **kwargs):
    first = hashlib.sha256(data[:CHUNK]).hexdigest()
    return resumable.upload_start(
        acting_user=user,
        filename=kwargs.pop("filename", NAME),
        size=len(data),
        first_chunk_sha256=kwargs.pop("first", first),
        **kwargs,
    )


def send(user, upload, offset, data=DATA, *, length=None, digest=None, stream=None):
    piece = data[offset : offset + (length or CHUNK)]
    return resumable.upload_append(
        acting_user=user,
        upload_id=upload.pk,
        start=offset,
        total=len(data),
        length=len(piece),
        chunk_sha256=digest or hashlib.sha256(piece).hexdigest(),
        stream=stream or io.BytesIO(piece),
    )


def send_all(user, upload, data=DATA):
    while upload.received < len(data):
        upload = send(user, upload, upload.received, data)
    return upload


def refusal(call):
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


def test_it_takes_the_chunks_in_order_and_gives_the_checksums_of_the_whole(cast):
    upload = send_all(cast.alice, start(cast.alice))

    staged = resumable.upload_finish(upload=upload)

    assert staged.path.read_bytes() == DATA
    assert staged.md5 == hashlib.md5(DATA).hexdigest()
    assert staged.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (staged.original_name, staged.size) == (NAME, len(DATA))


def test_a_second_start_of_the_same_file_resumes_where_it_stopped(cast):
    first = send(cast.alice, start(cast.alice), 0)

    again = start(cast.alice)

    assert again.pk == first.pk and again.received == CHUNK


def test_another_file_of_the_same_name_and_size_starts_afresh(cast):
    first = send(cast.alice, start(cast.alice), 0)
    other = DATA[::-1]

    fresh = start(cast.alice, other)

    assert fresh.pk != first.pk and fresh.received == 0


def test_another_users_upload_is_neither_resumed_nor_reached(cast):
    upload = send(cast.alice, start(cast.alice), 0)
    cast.root.save()

    assert start(cast.root).pk != upload.pk
    assert refusal(lambda: send(cast.root, upload, CHUNK)).code == "upload_unknown"


def test_a_chunk_held_already_is_not_written_again(cast):
    upload = send(cast.alice, start(cast.alice), 0)
    before = upload.path.read_bytes()

    again = send(cast.alice, upload, 0, stream=io.BytesIO(b"never read"))

    assert again.received == CHUNK
    assert upload.path.read_bytes() == before


def test_a_chunk_past_what_is_held_is_refused_with_the_offset_to_send(cast):
    upload = send(cast.alice, start(cast.alice), 0)

    refused = refusal(lambda: send(cast.alice, upload, 2 * CHUNK))

    assert refused.code == "upload_offset" and refused.params == {"offset": CHUNK}


def test_a_damaged_chunk_is_cut_off_and_changes_nothing(cast):
    upload = send(cast.alice, start(cast.alice), 0)

    refused = refusal(lambda: send(cast.alice, upload, CHUNK, digest="0" * 64))

    assert refused.code == "upload_chunk_digest"
    upload.refresh_from_db()
    assert upload.received == CHUNK and os.path.getsize(upload.path) == CHUNK
    assert resumable.upload_finish(upload=send_all(cast.alice, upload)).md5 == (
        hashlib.md5(DATA).hexdigest()
    )


def test_a_chunk_cut_off_on_the_way_is_not_kept(cast):
    upload = send(cast.alice, start(cast.alice), 0)
    short = io.BytesIO(DATA[CHUNK : CHUNK + 1000])

    refused = refusal(lambda: send(cast.alice, upload, CHUNK, stream=short))

    assert refused.code == "upload_interrupted"
    assert os.path.getsize(upload.path) == CHUNK


def test_bytes_written_but_not_recorded_are_cut_off_before_the_next_chunk(cast):
    """A web process killed after writing a chunk and before moving the row on."""
    upload = send(cast.alice, start(cast.alice), 0)
    with open(upload.path, "ab") as handle:
        handle.write(b"half a chunk nobody recorded")

    upload = send_all(cast.alice, upload)

    assert resumable.upload_finish(upload=upload).path.read_bytes() == DATA


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"filename": "py801-2.tar.gz"}, "tarball_name"),
        ({"data": b""}, "file_empty"),
        ({"first": "xyz"}, "upload_digest_format"),
    ],
)
def test_a_bad_start_is_refused_and_creates_nothing(cast, kwargs, code):
    data = kwargs.pop("data", DATA)
    assert refusal(lambda: start(cast.alice, data, **kwargs)).code == code
    assert not ResumableUpload.objects.exists()


def test_an_archive_over_the_limit_is_refused_at_the_start(cast, settings):
    settings.MAX_BUILD_BYTES = len(DATA) - 1
    assert refusal(lambda: start(cast.alice)).code == "too_large"


def test_a_user_has_a_bounded_number_of_unfinished_uploads(cast, settings):
    settings.UPLOAD_RESUME_MAX_OPEN = 2
    start(cast.alice, DATA[:-1])
    start(cast.alice, DATA[:-2])

    refused = refusal(lambda: start(cast.alice, DATA[:-3]))

    assert refused.code == "upload_too_many"


@pytest.mark.parametrize(
    ("offset", "length", "total"),
    [(0, len(DATA) + 1, len(DATA)), (len(DATA), 1, len(DATA)), (0, 10, len(DATA) + 1)],
)
def test_a_chunk_outside_the_file_is_refused(cast, offset, length, total):
    upload = start(cast.alice)
    refused = refusal(
        lambda: resumable.upload_append(
            acting_user=cast.alice,
            upload_id=upload.pk,
            start=offset,
            total=total,
            length=length,
            chunk_sha256="0" * 64,
            stream=io.BytesIO(b""),
        )
    )
    assert refused.code == "upload_range"


def test_a_chunk_over_the_chunk_limit_is_refused(cast, settings):
    settings.UPLOAD_CHUNK_MAX_BYTES = CHUNK - 1
    refused = refusal(lambda: send(cast.alice, start(cast.alice), 0))
    assert refused.code == "upload_chunk_too_large"


def test_an_unfinished_upload_cannot_become_a_build(cast):
    upload = send(cast.alice, start(cast.alice), 0)
    refused = refusal(lambda: resumable.upload_finish(upload=upload))
    assert refused.code == "upload_incomplete"


def test_an_upload_whose_file_went_missing_is_forgotten(cast):
    upload = send_all(cast.alice, start(cast.alice))
    os.unlink(upload.path)

    assert refusal(lambda: resumable.upload_finish(upload=upload)).code == "upload_lost"
    assert not ResumableUpload.objects.exists()


def test_the_sweeper_removes_what_nobody_added_to_for_the_ttl(cast, settings):
    old = send(cast.alice, start(cast.alice), 0)
    fresh = start(cast.alice, DATA[:-1])
    later = timezone.now() + timedelta(seconds=settings.UPLOAD_RESUME_TTL + 60)
    orphan = old.path.with_name(".resume-orphan")
    orphan.write_bytes(b"a start killed between its file and its row")
    os.utime(orphan, (0, 0))
    ResumableUpload.objects.filter(pk=fresh.pk).update(updated_at=later)

    removed = resumable.sweep_resumable(now=later)

    assert removed == 2
    assert list(ResumableUpload.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not old.path.exists() and not orphan.exists() and fresh.path.exists()


def test_resuming_renews_the_time_an_upload_is_kept(cast, settings):
    upload = send(cast.alice, start(cast.alice), 0)
    old = timezone.now() - timedelta(seconds=settings.UPLOAD_RESUME_TTL - 5)
    ResumableUpload.objects.filter(pk=upload.pk).update(updated_at=old)

    start(cast.alice)  # the user comes back just before it would expire

    assert resumable.sweep_resumable(now=timezone.now() + timedelta(seconds=10)) == 0
    assert ResumableUpload.objects.filter(pk=upload.pk).exists()


def test_the_sweeper_leaves_an_upload_alone_while_a_chunk_is_written(cast, settings):
    upload = send(cast.alice, start(cast.alice), 0)
    later = timezone.now() + timedelta(seconds=settings.UPLOAD_RESUME_TTL + 60)
    fd = os.open(upload.path, os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what upload_append holds while it writes
    try:
        assert resumable.sweep_resumable(now=later) == 0
    finally:
        os.close(fd)
    assert upload.path.exists()
    assert resumable.sweep_resumable(now=later) == 1


def test_a_start_at_the_limit_gives_up_the_users_idlest_upload(cast, settings):
    settings.UPLOAD_RESUME_MAX_OPEN = 2
    idle = start(cast.alice, DATA[:-1])
    busy = start(cast.alice, DATA[:-2])
    ResumableUpload.objects.filter(pk=idle.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )

    fresh = start(cast.alice, DATA[:-3])

    assert set(ResumableUpload.objects.values_list("pk", flat=True)) == {busy.pk, fresh.pk}
    assert not idle.path.exists()


def test_the_disk_must_hold_what_unfinished_uploads_still_need(cast, settings, monkeypatch):
    start(cast.alice)  # needs len(DATA) more bytes
    usage = shutil.disk_usage(settings.UPLOAD_TEMP_DIR)
    monkeypatch.setattr(
        resumable.shutil,
        "disk_usage",
        lambda path: usage._replace(free=len(DATA) + len(DATA) // 2),
    )

    refused = refusal(lambda: start(cast.root, DATA[::-1]))

    assert refused.code == "upload_no_space"
    assert refused.params["free"] == len(DATA) // 2


@pytest.mark.parametrize("filename", ["a" * 250 + "-tree.tar.bz2", "py\x00-tree.tar.bz2"])
def test_a_name_the_database_cannot_keep_is_refused(cast, filename):
    assert refusal(lambda: start(cast.alice, filename=filename)).code == "tarball_name"


def test_an_upload_whose_file_is_shorter_than_its_row_starts_again(cast):
    """The host went down before the disk had bytes the row counts (chunks are synced once,
    at the end): nothing after them can be trusted."""
    upload = send(cast.alice, start(cast.alice), 0)
    upload = send(cast.alice, upload, CHUNK)
    os.truncate(upload.path, CHUNK + 10)

    assert refusal(lambda: send(cast.alice, upload, 2 * CHUNK)).code == "upload_lost"
    assert not ResumableUpload.objects.exists()
