import pytest
from django.test import Client

from portal.services import api_token_create
from releases.models import Build

from ..factories import PASSWORD, write_build

URL = "/api/builds/"


@pytest.fixture
def api(cast):
    """A client that sends alice's token, as a build machine would; CSRF is enforced."""
    _token, key = api_token_create(user=cast.alice, name="builder")
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {key}")


def post_files(client, folder, name="py801-2", **files):
    tarball, md5, contents = write_build(folder, name, **files)
    with open(tarball, "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        return client.post(URL, {"tarball": t, "md5": m, "contents": c})


def test_it_creates_a_build_from_a_token_upload(api, tmp_path, cast):
    response = post_files(api, tmp_path)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "py801-2"
    assert body["status"] == "uploaded"
    assert body["uploaded_by"] == "alice"
    assert Build.objects.get().uploaded_by == cast.alice


def test_it_refuses_an_upload_without_a_token(client, tmp_path, db):
    response = post_files(client, tmp_path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert not Build.objects.exists()


def test_it_refuses_an_unknown_token(tmp_path, db):
    client = Client(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = post_files(client, tmp_path)
    assert response.status_code == 401
    assert not Build.objects.exists()


def test_it_refuses_a_token_of_someone_who_may_not_upload(tmp_path, cast):
    _token, key = api_token_create(user=cast.dave)
    response = post_files(Client(HTTP_AUTHORIZATION=f"Token {key}"), tmp_path)
    assert response.status_code == 403
    assert not Build.objects.exists()


def test_it_refuses_an_upload_with_a_browser_session_alone(client, tmp_path, cast):
    client.login(username="alice", password=PASSWORD)
    response = post_files(client, tmp_path)
    assert response.status_code == 401


def test_it_refuses_a_json_body(api, db):
    response = api.post(URL, {"tarball": "x"}, content_type="application/json")
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]


def test_it_explains_a_checksum_mismatch(api, tmp_path):
    response = post_files(api, tmp_path, md5_text="0" * 32 + "  py801-2-tree.tar.bz2\n")
    assert response.status_code == 400
    assert "md5" in response.json()["errors"]
    assert not Build.objects.exists()


def test_it_lists_and_shows_builds(api, tmp_path):
    post_files(api, tmp_path)
    listing = api.get(URL)
    assert [b["name"] for b in listing.json()["builds"]] == ["py801-2"]
    detail = api.get(f"{URL}py801-2/").json()
    for key in (
        "name",
        "status",
        "status_detail",
        "md5",
        "sha256",
        "size",
        "contents_hash",
        "uploaded_by",
        "created_at",
        "published_at",
    ):
        assert key in detail


def test_it_answers_404_as_json_for_an_unknown_build(api):
    response = api.get(f"{URL}nope/")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_a_coordinator_may_read_builds_with_a_session(client, cast):
    client.login(username="dave", password=PASSWORD)
    assert client.get(URL).status_code == 200


def test_someone_without_a_role_may_not_read_builds(client, cast):
    client.login(username="eve", password=PASSWORD)
    assert client.get(URL).status_code == 403


def test_a_revoked_token_no_longer_works(cast, tmp_path):
    from django.utils import timezone

    token, key = api_token_create(user=cast.alice)
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get(URL).status_code == 401


def test_tokens_are_stored_hashed(cast):
    token, key = api_token_create(user=cast.alice)
    assert key not in token.key_hash
    assert token.prefix == key[:8]


def test_a_client_that_hangs_up_mid_file_leaves_nothing_behind(live_server, transactional_db, cast):
    """A build machine whose connection drops in the middle of the tarball: the staged part
    is removed and the writer's threads end (a real socket, reset by the client)."""
    import socket
    import struct
    import threading
    import time
    from pathlib import Path
    from urllib.parse import urlsplit

    from django.conf import settings

    _token, key = api_token_create(user=cast.alice, name="builder")
    boundary = "hangup"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="tarball"; filename="py803-1-tree.tar.bz2"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 64 * 1024 * 1024
    address = urlsplit(live_server.url)
    threads_before = threading.active_count()
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {URL} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Authorization: Token {key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + head
            + b"B" * (4 * 1024 * 1024)
        )
        uploads = Path(settings.UPLOAD_TEMP_DIR)
        deadline = time.monotonic() + 20
        while not list(uploads.glob(".upload-*")):  # the server is writing the tarball
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        # Close with a reset (SO_LINGER 0), as a dropped link looks to the server.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 20
    while list(uploads.glob(".upload-*")) or threading.active_count() > threads_before + 1:
        assert time.monotonic() < deadline, (
            f"left behind: {list(uploads.glob('.upload-*'))}, "
            f"{threading.active_count() - threads_before} more threads"
        )
        time.sleep(0.05)
    assert not Build.objects.exists()
