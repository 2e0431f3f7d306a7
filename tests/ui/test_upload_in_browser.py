"""The upload form in a real browser, in Spanish: the upload progress bar moves, the build
page follows validation live, and the final state appears without reloading."""

import io
import os
import tarfile
import uuid

import pytest

from releases.models import Build, BuildStatus

from ..factories import PASSWORD, compress, make_user, write_build

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def big_tarball() -> bytes:
    # Random bytes do not compress: about 24 MB on the wire, so the browser reports
    # upload progress several times even on loopback.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index in range(3):
            data = os.urandom(8 * 1024 * 1024)
            info = tarfile.TarInfo(f"versions/pristine/21021/blob{index}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return compress(buffer.getvalue(), "xz")


def log_in(page, live_server, username):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    # Signing in lands on the home page, "what needs me".
    page.wait_for_url(f"{live_server.url}/")


def test_an_uploader_sends_a_build_and_watches_it_get_published(
    page, live_server, start_worker, tmp_path, settings
):
    make_user("ana", "uploaders")
    name = f"ui-{uuid.uuid4().hex[:8]}"
    tar_path, md5_path, contents_path = write_build(
        tmp_path / "in", name, compression="xz", tarball=big_tarball()
    )
    log_in(page, live_server, "ana")

    page.goto(f"{live_server.url}/upload/")
    assert page.locator("h1").inner_text() == "Subir una compilación"
    # The bar's value at each progress event, reported through the console so that it
    # survives the redirect to the build page.
    seen = []
    page.on(
        "console",
        lambda message: (
            message.text.startswith("upload-progress ")
            and seen.append(int(message.text.split()[1]))
        ),
    )
    # The archive goes in chunks (fetch), the small files with htmx: the bar is watched,
    # whoever moves it.
    page.add_init_script(
        """let last = -1;
        setInterval(() => {
          const bar = document.querySelector('#upload-progress-bar');
          if (bar && !bar.closest('[hidden]') && bar.value !== last) {
            last = bar.value;
            console.log('upload-progress ' + bar.value);
          }
        }, 20);"""
    )
    page.reload()
    # Loopback is too fast for the browser to report progress more than once; a school's
    # link is not. Throttle the upload to 8 MB/s (about 3 s for this build).
    page.context.new_cdp_session(page).send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": 8 * 1024 * 1024,
        },
    )
    page.set_input_files("#id_tarball", str(tar_path))
    page.set_input_files("#id_md5", str(md5_path))
    page.set_input_files("#id_contents", str(contents_path))
    page.click("form#upload-form button[type=submit]")

    # The upload ends in a redirect to the build page, where no worker runs yet.
    page.wait_for_url(f"{live_server.url}/builds/{name}/")
    assert page.locator("#build-state").inner_text() == "Subida"
    assert "En cola, esperando su turno" in page.locator(".progress-block").inner_text()
    assert "comenzó la validación" in page.locator("#live-messages").inner_text()
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    start_worker()
    page.wait_for_selector("#build-state:has-text('Publicada')", timeout=60_000)
    assert navigations == []  # the page followed the build by polling, not reloading
    build = Build.objects.get(name=name)
    assert build.status == BuildStatus.PUBLISHED
    assert page.locator("#build-state").inner_text() == "Publicada"
    assert "Historial" in page.content()
    # "Validation has started" is overtaken by the state it led to: the poll cleared it.
    assert page.locator("#live-messages li").count() == 0

    assert len(seen) >= 2 and seen[-1] == 100 and min(seen) < 100, seen
    page.screenshot(path=str(tmp_path / "build-page.png"), full_page=True)
    for suffix in ("-tree.tar.xz", "-tree.tar.xz.md5", ".contents", ".name"):
        (settings.PUPPETCONTENT_OS_DIR / f"{name}{suffix}").unlink(missing_ok=True)


def test_a_checksum_mismatch_is_explained_in_spanish_beside_the_field(
    page, live_server, transactional_db, tmp_path
):
    make_user("ana", "uploaders")
    tar_path, md5_path, contents_path = write_build(
        tmp_path / "in", "py900-1", md5_text=f"{'a' * 32}  py900-1-tree.tar.bz2\n"
    )
    log_in(page, live_server, "ana")
    page.goto(f"{live_server.url}/upload/")
    page.set_input_files("#id_tarball", str(tar_path))
    page.set_input_files("#id_md5", str(md5_path))
    page.set_input_files("#id_contents", str(contents_path))
    page.click("form#upload-form button[type=submit]")
    error = page.locator("p.error[data-field=md5]")
    error.wait_for()
    assert "no coincide" in error.inner_text()
    assert not Build.objects.exists()
