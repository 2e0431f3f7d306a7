"""Uploads that survive a slow link, in a real browser, in Spanish: the connection is cut at
about 60 % of the archive, the page is reloaded, and the upload goes on from the bytes the
portal holds (which are not sent again); the drop zone puts each dropped file in its place;
the files stay chosen after a refusal; the plain-HTTP SHA-256 agrees with hashlib."""

import hashlib
import os

import pytest
from playwright.sync_api import expect

from releases.models import Build, ResumableUpload

from ..factories import make_user, write_build
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser

CHUNK = 256 * 1024


def test_an_upload_cut_at_sixty_percent_goes_on_after_a_reload(
    page, live_server, transactional_db, tmp_path, settings
):
    settings.UPLOAD_CHUNK_BYTES = CHUNK
    make_user("ana", "uploaders")
    data = os.urandom(10 * CHUNK + 1234)
    tar_path, md5_path, contents_path = write_build(tmp_path / "in", "py910-1", tarball=data)
    cut_at = int(len(data) * 0.6)
    sent = []  # (start, bytes) of every chunk that reached the portal
    page.on(
        "request",
        lambda request: (
            request.method == "PUT"
            and sent.append(
                (
                    int(request.headers["content-range"].split()[1].split("-")[0]),
                    len(request.post_data_buffer or b""),
                )
            )
        ),
    )

    def cut_the_link(route):
        start = int(route.request.headers["content-range"].split()[1].split("-")[0])
        if start >= cut_at:
            route.abort("connectionreset")
        else:
            route.continue_()

    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/upload/")
    page.route("**/upload/chunked/*/", cut_the_link)
    page.set_input_files("#id_tarball", str(tar_path))
    page.set_input_files("#id_md5", str(md5_path))
    page.set_input_files("#id_contents", str(contents_path))
    page.click("form#upload-form button[type=submit]")

    text = page.locator(".upload-progress-text")
    page.locator(".upload-progress-text:has-text('Se perdió')").wait_for(timeout=30_000)
    held = ResumableUpload.objects.get().received
    assert cut_at <= held < cut_at + CHUNK
    assert "Lo que llegó se guarda" in text.inner_text()
    assert not Build.objects.exists()

    # The link comes back; the uploader reloads the page and chooses the same files.
    page.unroute("**/upload/chunked/*/")
    page.reload()
    sent.clear()
    page.set_input_files("#id_tarball", str(tar_path))
    page.set_input_files("#id_md5", str(md5_path))
    page.set_input_files("#id_contents", str(contents_path))
    page.click("form#upload-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/builds/py910-1/")

    assert sum(length for _start, length in sent) == len(data) - held
    assert min(start for start, _length in sent) == held
    build = Build.objects.get(name="py910-1")
    assert build.md5 == hashlib.md5(data).hexdigest()
    assert build.sha256 == hashlib.sha256(data).hexdigest()
    assert build.stored_tarball.read_bytes() == data
    assert not ResumableUpload.objects.exists()


def test_dropped_files_go_to_their_places_and_stay_after_a_refusal(
    page, live_server, transactional_db, tmp_path
):
    make_user("ana", "uploaders")
    tar_path, _md5_path, contents_path = write_build(tmp_path / "in", "py911-1")
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/upload/")
    files = {
        tar_path.name: tar_path.read_bytes(),
        f"{tar_path.name}.md5": f"{'a' * 32}  {tar_path.name}\n".encode(),  # a wrong one
        contents_path.name: contents_path.read_bytes(),
        "py911-1.name": b"py911-1\n",
        "notas.txt": b"something else",
    }
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, bytes] of Object.entries(files)) {
                transfer.items.add(new File([new Uint8Array(bytes)], name));
            }
            return transfer;
        }""",
        {name: list(content) for name, content in files.items()},
    )
    page.dispatch_event("#upload-dropzone", "drop", {"dataTransfer": transfer})

    chosen = "(id) => document.getElementById(id).files[0]?.name"
    expect(page.locator("#id_name")).to_have_value("py911-1")
    assert page.evaluate(chosen, "id_tarball") == tar_path.name
    assert page.evaluate(chosen, "id_md5") == f"{tar_path.name}.md5"
    assert page.evaluate(chosen, "id_contents") == contents_path.name
    assert "notas.txt → no es un archivo de compilación" in page.inner_text(".dropped")

    page.click("form#upload-form button[type=submit]")
    page.locator("p.error[data-field=md5]").wait_for()
    assert "no coincide" in page.inner_text("p.error[data-field=md5]")
    # The form came back with the reason: the files are still chosen, nothing to pick again.
    for field, name in (("id_tarball", tar_path.name), ("id_contents", contents_path.name)):
        assert page.evaluate(chosen, field) == name
    assert not Build.objects.exists()


def test_the_plain_http_sha256_agrees_with_hashlib(page, live_server, transactional_db):
    make_user("ana", "uploaders")
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/upload/")
    for text in ("", "abc", "x" * 55, "x" * 56, "x" * 64, "ñandutí " * 50):
        computed = page.evaluate("(text) => window.portalSha256Fallback(text)", text)
        assert computed == hashlib.sha256(text.encode()).hexdigest(), text
