"""Resumable uploads over HTTP: a build machine with a token (`/api/uploads/`) and the
upload page's session (`/upload/chunked/`, CSRF) send an archive in chunks, then make the
build from it; every refusal is a JSON answer with its reason."""

import base64
import hashlib
import json

import pytest
from django.test import Client

from portal.services import api_token_create
from releases.models import Build, ResumableUpload

from ..factories import english_client, write_build


def digest_header(piece: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(piece).digest()).decode() + ":"


def put(client, url, data, offset, length, **headers):
    piece = data[offset : offset + length]
    headers.setdefault(
        "HTTP_CONTENT_RANGE", f"bytes {offset}-{offset + len(piece) - 1}/{len(data)}"
    )
    headers.setdefault("HTTP_CONTENT_DIGEST", digest_header(piece))
    return client.put(url, piece, content_type="application/octet-stream", **headers)


@pytest.fixture
def builder(cast):
    _token, key = api_token_create(user=cast.alice, name="builder")
    return Client(HTTP_AUTHORIZATION=f"Token {key}", HTTP_ACCEPT_LANGUAGE="en")


@pytest.fixture
def files(tmp_path):
    tarball, md5, contents = write_build(
        tmp_path / "in", "py801-2", tarball=bytes(range(256)) * 400
    )
    return tarball, md5, contents


def start(client, url, tarball):
    body = {"filename": tarball.name, "size": tarball.stat().st_size}
    return client.post(url, json.dumps(body), content_type="application/json")


def test_a_build_machine_sends_the_archive_in_chunks_and_makes_the_build(builder, files):
    tarball, md5, contents = files
    data = tarball.read_bytes()
    started = start(builder, "/api/uploads/", tarball)
    assert started.status_code == 201
    url = started.json()["url"]
    for offset in range(0, len(data), 40_000):
        answer = put(builder, url, data, offset, 40_000)
        assert answer.status_code == 200, answer.json()
    assert answer.json()["complete"] is True

    with open(md5, "rb") as m, open(contents, "rb") as c:
        made = builder.post(
            "/api/builds/", {"tarball_upload": started.json()["id"], "md5": m, "contents": c}
        )

    assert made.status_code == 201, made.json()
    build = Build.objects.get(name="py801-2")
    assert (build.md5, build.sha256) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
    )
    assert (build.stored_tarball).read_bytes() == data
    assert not ResumableUpload.objects.exists()


def test_a_refused_build_keeps_its_upload_for_the_next_try(builder, files, tmp_path):
    tarball, _md5, contents = files
    data = tarball.read_bytes()
    url = start(builder, "/api/uploads/", tarball).json()["url"]
    put(builder, url, data, 0, len(data))
    wrong = tmp_path / "wrong.md5"
    wrong.write_text(f"{'a' * 32}  {tarball.name}\n")
    upload_id = ResumableUpload.objects.get().pk

    with open(wrong, "rb") as m, open(contents, "rb") as c:
        refused = builder.post(
            "/api/builds/", {"tarball_upload": upload_id, "md5": m, "contents": c}
        )

    assert refused.status_code == 400
    assert "Checksum mismatch" in refused.json()["errors"]["md5"][0]
    again = start(builder, "/api/uploads/", tarball)
    assert again.status_code == 200 and again.json()["complete"] is True


def test_a_chunk_out_of_place_answers_409_with_the_offset(builder, files):
    tarball = files[0]
    data = tarball.read_bytes()
    url = start(builder, "/api/uploads/", tarball).json()["url"]
    put(builder, url, data, 0, 1000)

    answer = put(builder, url, data, 5000, 1000)

    assert answer.status_code == 409
    assert answer.json()["offset"] == 1000
    assert builder.get(url).json()["received"] == 1000


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"HTTP_CONTENT_RANGE": "bytes=0-9"}, "Content-Range: bytes START-END/TOTAL"),
        ({"HTTP_CONTENT_DIGEST": "md5=:abc:"}, "Content-Digest: sha-256"),
        ({"HTTP_CONTENT_DIGEST": digest_header(b"other bytes")}, "arrived damaged"),
        ({"HTTP_CONTENT_RANGE": "bytes 0-999/7"}, "does not fit this upload"),
    ],
)
def test_a_bad_chunk_is_refused_with_its_reason_and_nothing_is_kept(builder, files, headers, said):
    tarball = files[0]
    url = start(builder, "/api/uploads/", tarball).json()["url"]

    answer = put(builder, url, tarball.read_bytes(), 0, 1000, **headers)

    assert answer.status_code == 400
    assert said in answer.json()["error"]
    assert ResumableUpload.objects.get().received == 0


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "Send a JSON object"),
        (b"[1]", "Send a JSON object"),
        (b'{"filename": "x-tree.tar.bz2", "size": "10"}', "“size” must be"),
        (b'{"filename": "x.zip", "size": 10}', "is not a build archive"),
    ],
)
def test_a_bad_start_is_refused_with_its_reason(builder, body, said):
    answer = builder.post("/api/uploads/", body, content_type="application/json")
    assert answer.status_code == 400
    assert said in answer.json()["error"]
    assert not ResumableUpload.objects.exists()


def test_the_api_takes_only_an_uploaders_token(cast, files):
    _token, key = api_token_create(user=cast.dave)
    coordinator = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert start(coordinator, "/api/uploads/", files[0]).status_code == 403
    assert start(Client(), "/api/uploads/", files[0]).status_code == 401
    session = english_client()
    session.force_login(cast.alice)
    assert start(session, "/api/uploads/", files[0]).status_code == 401  # a token, never a session


def test_the_page_flavour_needs_the_csrf_token(cast, files):
    client = english_client(enforce_csrf_checks=True)
    client.force_login(cast.alice)
    client.get("/upload/")
    refused = start(client, "/upload/chunked/", files[0])
    token = client.cookies["csrftoken"].value
    body = {"filename": files[0].name, "size": files[0].stat().st_size}

    started = client.post(
        "/upload/chunked/",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )

    assert refused.status_code == 403
    assert started.status_code == 201
    assert started.json()["url"] == f"/upload/chunked/{started.json()['id']}/"


def test_an_upload_can_be_given_up(builder, files):
    url = start(builder, "/api/uploads/", files[0]).json()["url"]
    path = ResumableUpload.objects.get().path

    assert builder.delete(url).status_code == 204
    assert not ResumableUpload.objects.exists() and not path.exists()
    assert builder.get(url).status_code == 404


def send_whole(builder, tarball) -> str:
    data = tarball.read_bytes()
    started = start(builder, "/api/uploads/", tarball).json()
    put(builder, started["url"], data, 0, len(data))
    return started["id"]


def make_build(builder, upload_id, md5, contents):
    with open(md5, "rb") as m, open(contents, "rb") as c:
        return builder.post("/api/builds/", {"tarball_upload": upload_id, "md5": m, "contents": c})


def test_an_upload_makes_one_build_only(builder, files):
    tarball, md5, contents = files
    upload_id = send_whole(builder, tarball)
    assert make_build(builder, upload_id, md5, contents).status_code == 201

    again = make_build(builder, upload_id, md5, contents)  # a second tab, a retried POST

    assert again.status_code == 400
    assert "no such upload" in again.json()["errors"]["tarball"][0]
    assert Build.objects.count() == 1


def test_a_build_that_fails_after_the_move_puts_the_archive_back(builder, files, monkeypatch):
    from releases import services

    tarball, md5, contents = files
    upload_id = send_whole(builder, tarball)
    path = ResumableUpload.objects.get().path

    def failing_fsync(folder):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(services, "fsync_dir", failing_fsync)
    with pytest.raises(OSError):
        make_build(builder, upload_id, md5, contents)
    monkeypatch.undo()

    assert path.read_bytes() == tarball.read_bytes()
    assert not Build.objects.exists()
    assert make_build(builder, upload_id, md5, contents).status_code == 201


def test_the_portals_own_disk_failing_is_a_json_answer_not_an_error_page(
    builder, files, settings, tmp_path, monkeypatch
):
    """An uploader's script reads JSON: a disk the portal cannot write (here its upload
    folder is a file; then a full disk mid-chunk) is answered 507 with the reason."""
    import errno

    from releases import resumable

    tarball = files[0]
    data = tarball.read_bytes()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    settings.UPLOAD_TEMP_DIR = blocked / "uploads"
    refused = start(builder, "/api/uploads/", tarball)
    assert refused.status_code == 507
    assert "could not store the upload" in refused.json()["error"]
    assert not ResumableUpload.objects.exists()

    settings.UPLOAD_TEMP_DIR = tmp_path / "uploads"
    url = start(builder, "/api/uploads/", tarball).json()["url"]

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resumable._ChunkWriter, "write", disk_full)
    answer = put(builder, url, data, 0, 40_000)
    assert answer.status_code == 507
    assert "No space left on device" in answer.json()["error"]
    assert builder.get(url).json()["received"] == 0
