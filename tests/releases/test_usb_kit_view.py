"""Downloading a build's USB kit from its page: who may, what the tar holds (extracted with
the real GNU tar and checked with `sha1sum -c manifest.sha1` inside the folder, as the
school server's USB script does), its announced length, the audit row, the refusals."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from releases import usbkit
from releases.models import AuditEvent, Build, BuildStatus

from ..factories import english_client

SIGNER = """\
import hashlib, sys
data = open(sys.argv[1], "rb").read()
sys.stdout.buffer.write(b"\\x89SIG\\xff" + hashlib.sha1(data).hexdigest().encode())
"""


def kit_url(build):
    return reverse("releases:build_usb_kit", args=[build.name])


def download(user, build):
    client = english_client()
    client.force_login(user)
    return client.get(kit_url(build))


def streamed(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


def extract(data: bytes, into: Path) -> Path:
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=data, check=True)
    return into / usbkit.FOLDER


def published_path(name: str) -> Path:
    return Path(settings.PUPPETCONTENT_OS_DIR) / name


@pytest.mark.parametrize("who", ["alice", "carol", "root"])
def test_uploaders_and_approvers_download_a_kit_that_sha1sum_checks(cast, published, tmp_path, who):
    build = published()

    response = download(getattr(cast, who), build)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == f'attachment; filename="{build.name}-usb-kit.tar"'
    assert response["X-Accel-Buffering"] == "no"  # streamed through nginx, not spooled
    data = streamed(response)
    assert int(response["Content-Length"]) == len(data)
    folder = extract(data, tmp_path / "stick")
    check = subprocess.run(
        ["sha1sum", "-c", usbkit.MANIFEST], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = [build.tarball_name, f"{build.tarball_name}.md5", build.contents_name]
    names.append(f"{build.name}.name")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, usbkit.MANIFEST])
    for name in names:
        assert (folder / name).read_bytes() == published_path(name).read_bytes()


@pytest.mark.parametrize(("who", "status"), [("dave", 403), ("eve", 403)])
def test_other_roles_are_refused(cast, published, who, status):
    build = published()
    assert download(getattr(cast, who), build).status_code == status
    assert not AuditEvent.objects.filter(action="usb_kit").exists()


def test_anonymous_is_sent_to_log_in(published):
    response = english_client().get(kit_url(published()))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_each_download_is_audited_with_who_and_which_build(cast, published):
    build = published()

    response = download(cast.carol, build)

    event = AuditEvent.objects.get(action="usb_kit")
    assert (event.actor, event.build, event.code) == (cast.carol, build, "usbkit_downloaded")
    assert event.params == {"via": "web", "size": int(response["Content-Length"])}
    assert event.message == f"USB kit downloaded ({response['Content-Length']} bytes)."


def test_the_archive_sha1_is_computed_once_and_kept_on_the_build(cast, published):
    build = published()
    assert build.tarball_sha1 == ""

    streamed(download(cast.alice, build))

    build.refresh_from_db()
    data = published_path(build.tarball_name).read_bytes()
    assert build.tarball_sha1 == hashlib.sha1(data).hexdigest()


def test_an_archive_that_differs_from_the_kept_sha1_breaks_the_download(cast, published):
    """The kept SHA-1 is what the manifest says: a published file that no longer matches it
    never reaches the end of the stream, so no stick gets a kit the school would refuse."""
    build = published()
    Build.objects.filter(pk=build.pk).update(tarball_sha1="0" * 40)
    response = download(cast.alice, build)

    with pytest.raises(usbkit.KitChanged):
        streamed(response)


@pytest.mark.parametrize("status", [BuildStatus.WITHDRAWN, BuildStatus.RETIRED])
def test_a_build_that_is_not_published_or_offered_is_refused_clearly(cast, published, status):
    build = published()
    Build.objects.filter(pk=build.pk).update(status=status)
    client = english_client()
    client.force_login(cast.alice)

    response = client.get(kit_url(build), follow=True)

    assert response.redirect_chain == [(reverse("releases:build_detail", args=[build.name]), 302)]
    label = BuildStatus(status).label
    assert (
        f"Only a published or offered build can be put on a USB stick; this one is {label}."
        in response.content.decode()
    )
    assert not AuditEvent.objects.filter(action="usb_kit").exists()


def test_a_build_flagged_by_recheck_is_refused(cast, published):
    build = published()
    Build.objects.filter(pk=build.pk).update(recheck_code="archive_empty")
    client = english_client()
    client.force_login(cast.alice)

    response = client.get(kit_url(build), follow=True)

    assert "it cannot be put on a USB stick" in response.content.decode()


def test_a_published_archive_whose_md5_is_wrong_is_not_put_in_a_kit(cast, published):
    build = published()
    path = published_path(build.tarball_name)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.unlink()  # a copy of its own, not the store's inode
    path.write_bytes(bytes(data))
    client = english_client()
    client.force_login(cast.alice)

    response = client.get(kit_url(build), follow=True)

    assert "it was not put in a kit" in response.content.decode()
    build.refresh_from_db()
    assert build.tarball_sha1 == ""


def test_the_sign_command_output_goes_in_as_manifest_sha1_sig(cast, published, tmp_path, settings):
    script = tmp_path / "sign.py"
    script.write_text(SIGNER)
    settings.USB_MANIFEST_SIGN_COMMAND = [sys.executable, str(script), "{path}"]
    build = published()

    response = download(cast.alice, build)

    data = streamed(response)
    assert int(response["Content-Length"]) == len(data)
    folder = extract(data, tmp_path / "stick")
    manifest = (folder / usbkit.MANIFEST).read_bytes()
    signature = b"\x89SIG\xff" + hashlib.sha1(manifest).hexdigest().encode()
    assert (folder / usbkit.SIGNATURE).read_bytes() == signature
    assert subprocess.run(["sha1sum", "-c", usbkit.MANIFEST], cwd=folder).returncode == 0


def test_a_failing_sign_command_makes_no_kit(cast, published, settings):
    settings.USB_MANIFEST_SIGN_COMMAND = ["false", "{path}"]
    build = published()
    client = english_client()
    client.force_login(cast.alice)

    response = client.get(kit_url(build), follow=True)

    assert "Signing manifest.sha1 failed (exit status 1" in response.content.decode()
    assert not AuditEvent.objects.filter(action="usb_kit").exists()


def test_the_build_page_offers_the_kit_to_those_who_may_download_it(cast, published):
    build = published()
    page = reverse("releases:build_detail", args=[build.name])
    for user, shown in ((cast.alice, True), (cast.carol, True), (cast.dave, False)):
        client = english_client()
        client.force_login(user)
        body = client.get(page).content.decode()
        assert ('id="usb-kit-download"' in body) == shown, user
        assert (f"python manage.py usb_kit {build.name} /media/usb" in body) == shown


def test_the_kit_section_speaks_spanish_by_default(cast, published):
    build = published()
    client = Client()  # no language chosen: the deployment's, Spanish
    client.force_login(cast.alice)

    body = client.get(reverse("releases:build_detail", args=[build.name])).content.decode()

    assert "Kit USB" in body
    assert "Descargar el kit USB (.tar)" in body


@pytest.mark.parametrize("which", ["md5", "contents", "name"])
def test_a_small_published_file_that_is_not_what_was_published_is_refused(cast, published, which):
    build = published()
    name = {
        "md5": f"{build.tarball_name}.md5",
        "contents": build.contents_name,
        "name": f"{build.name}.name",
    }[which]
    path = published_path(name)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x20  # same size, other bytes
    path.unlink()
    path.write_bytes(bytes(data))
    client = english_client()
    client.force_login(cast.alice)

    response = client.get(kit_url(build), follow=True)

    assert f"The published file {name} is missing or differs from what was published" in (
        response.content.decode()
    )
    assert not AuditEvent.objects.filter(action="usb_kit").exists()
