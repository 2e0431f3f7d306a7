import os

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from releases.models import Build, BuildStatus

from ..factories import PASSWORD, write_build

URL = reverse("releases:build_upload")


def leftover_uploads():
    folder = settings.UPLOAD_TEMP_DIR
    return os.listdir(folder) if folder.exists() else []


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def csrf_client():
    return Client(enforce_csrf_checks=True)


def post_build(client, folder, *, name="py801-2", extra=None, **files):
    tarball, md5, contents = write_build(folder, name, **files)
    # A real browser sends the token from the page: fetch it the same way.
    client.get(URL)
    token = client.cookies["csrftoken"].value
    with open(tarball, "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        data = {"tarball": t, "md5": m, "contents": c, **(extra or {})}
        return client.post(URL, data, HTTP_X_CSRFTOKEN=token)


def test_it_shows_the_upload_form_to_an_uploader(client, cast):
    response = login(client, cast.alice).get(URL)
    assert response.status_code == 200
    assert b'name="tarball"' in response.content


@pytest.mark.parametrize("who", ["carol", "dave", "eve"])
def test_it_refuses_the_upload_form_to_other_roles(client, cast, who):
    response = login(client, getattr(cast, who)).get(URL)
    assert response.status_code == 403


def test_it_sends_anonymous_visitors_to_the_login_page(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_accepts_an_upload_and_redirects_to_the_build_page(csrf_client, cast, tmp_path):
    response = post_build(login(csrf_client, cast.alice), tmp_path / "in")
    build = Build.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("releases:build_detail", args=[build.name])
    assert build.status == BuildStatus.UPLOADED
    assert build.uploaded_by == cast.alice
    # Staged files were moved into the store, not left behind.
    assert leftover_uploads() == []


def test_it_answers_htmx_with_a_client_redirect(csrf_client, cast, tmp_path):
    login(csrf_client, cast.alice)
    tarball, md5, contents = write_build(tmp_path / "in", "py801-3")
    csrf_client.get(URL)
    token = csrf_client.cookies["csrftoken"].value
    with open(tarball, "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        response = csrf_client.post(
            URL,
            {"tarball": t, "md5": m, "contents": c},
            HTTP_X_CSRFTOKEN=token,
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("releases:build_detail", args=["py801-3"])


def test_it_refuses_an_upload_without_the_csrf_token(csrf_client, cast, tmp_path):
    login(csrf_client, cast.alice)
    tarball, md5, contents = write_build(tmp_path / "in")
    with open(tarball, "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        response = csrf_client.post(URL, {"tarball": t, "md5": m, "contents": c})
    assert response.status_code == 403
    assert not Build.objects.exists()
    assert leftover_uploads() == []


def test_it_shows_a_specific_message_for_a_checksum_mismatch(csrf_client, cast, tmp_path):
    response = post_build(
        login(csrf_client, cast.alice),
        tmp_path / "in",
        md5_text=f"{'f' * 32}  py801-2-tree.tar.bz2\n",
    )
    assert response.status_code == 400
    assert "ffffffffffffffffffffffffffffffff" in response.content.decode()
    assert not Build.objects.exists()
    assert leftover_uploads() == []


def test_it_shows_the_message_in_english_when_asked(csrf_client, cast, tmp_path):
    login(csrf_client, cast.alice)
    csrf_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    response = post_build(csrf_client, tmp_path / "in", extra={"name": "bad name"})
    assert response.status_code == 400
    assert "Use 1 to 64 letters" in response.content.decode()


def test_it_shows_the_message_in_spanish_by_default(csrf_client, cast, tmp_path):
    response = post_build(
        login(csrf_client, cast.alice), tmp_path / "in", extra={"name": "bad name"}
    )
    assert response.status_code == 400
    assert "Use de 1 a 64 letras" in response.content.decode()


def test_it_refuses_an_archive_over_the_size_limit_while_streaming(
    csrf_client, cast, tmp_path, settings
):
    settings.MAX_BUILD_BYTES = 1000
    response = post_build(login(csrf_client, cast.alice), tmp_path / "in", tarball=os.urandom(5000))
    assert response.status_code == 400
    assert "1000" in response.content.decode()
    assert not Build.objects.exists()
    assert leftover_uploads() == []


def test_it_refuses_a_file_that_is_not_a_build_archive(csrf_client, cast, tmp_path):
    login(csrf_client, cast.alice)
    (tmp_path / "notes.txt").write_text("hello")
    _tarball, md5, contents = write_build(tmp_path / "in")
    csrf_client.get(URL)
    token = csrf_client.cookies["csrftoken"].value
    with open(tmp_path / "notes.txt", "rb") as t, open(md5, "rb") as m, open(contents, "rb") as c:
        response = csrf_client.post(
            URL, {"tarball": t, "md5": m, "contents": c}, HTTP_X_CSRFTOKEN=token
        )
    assert response.status_code == 400
    assert "notes.txt" in response.content.decode()
    assert not Build.objects.exists()


def test_it_reports_each_missing_file(csrf_client, cast):
    login(csrf_client, cast.alice)
    csrf_client.get(URL)
    token = csrf_client.cookies["csrftoken"].value
    response = csrf_client.post(URL, {"name": "py1"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 400
    assert response.content.decode().count('data-field="') == 3


def test_it_keeps_the_typed_name_and_hash_when_refusing(csrf_client, cast, tmp_path):
    response = post_build(
        login(csrf_client, cast.alice),
        tmp_path / "in",
        md5_text="0" * 32 + "  py801-2-tree.tar.bz2\n",
        extra={"name": "py801-2b", "contents_hash": "abcdef012345"},
    )
    body = response.content.decode()
    assert 'value="py801-2b"' in body
    assert 'value="abcdef012345"' in body


def test_a_full_disk_while_receiving_gives_a_clear_message_and_keeps_nothing(
    csrf_client, cast, tmp_path, monkeypatch
):
    import errno

    from releases import uploads

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads.HashingWriter, "_hash_and_write", disk_full)
    response = post_build(login(csrf_client, cast.alice), tmp_path / "in")
    assert response.status_code == 400
    assert "No space left on device" in response.content.decode()
    assert not Build.objects.exists()
    assert leftover_uploads() == []


def test_the_staged_file_has_the_bytes_and_hashes_of_a_large_upload(settings, tmp_path):
    import hashlib

    from releases.uploads import HashingWriter

    data = os.urandom(3 * 1024 * 1024 + 17)
    writer = HashingWriter(tmp_path / "up", limit=len(data))
    for start in range(0, len(data), 65536):
        assert writer.write(data[start : start + 65536])
    staged = writer.finish("x-tree.tar.bz2")
    assert staged.path.read_bytes() == data
    assert (staged.md5, staged.sha256, staged.size) == (
        hashlib.md5(data).hexdigest(),
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


def test_the_upload_skips_the_page_cache_where_the_filesystem_allows(tmp_path):
    import fcntl

    from releases.uploads import HashingWriter

    probe = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.fcntl(probe, fcntl.F_SETFL, fcntl.fcntl(probe, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        pytest.skip(f"{tmp_path} is on a filesystem without O_DIRECT")
    finally:
        os.close(probe)
    writer = HashingWriter(tmp_path / "up", limit=10)
    try:
        assert fcntl.fcntl(writer.sink.fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        writer.abort()


def test_a_filesystem_refusing_direct_writes_still_gets_every_byte(tmp_path, monkeypatch):
    """Some filesystems take O_DIRECT at open and refuse the write itself (EINVAL): the
    writer goes on with ordinary writes and loses nothing."""
    import errno
    import fcntl
    import hashlib

    from releases.uploads import HashingWriter

    real_write, refused = os.write, []

    def write(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    data = os.urandom(2 * 1024 * 1024 + 5)
    writer = HashingWriter(tmp_path / "up", limit=len(data))
    for start in range(0, len(data), 300_000):
        assert writer.write(data[start : start + 300_000])
    staged = writer.finish("x-tree.tar.bz2")
    assert refused == [1024 * 1024]  # one refusal, then ordinary writes
    assert staged.path.read_bytes() == data
    assert staged.md5 == hashlib.md5(data).hexdigest()
