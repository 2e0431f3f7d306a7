"""`manage.py usb_kit NAME DEST`: the kit written onto a mounted folder, checked with the real
`sha1sum -c manifest.sha1` inside it; the refusals exit non-zero with the reason and leave
the destination as it was. The full and read-only disks are in tests/faults/."""

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from releases import usbkit
from releases.models import AuditEvent, Build, BuildStatus

from .test_usb_kit_view import SIGNER

UNMOUNTED = "--allow-unmounted"  # tmp_path is no mount point; tests/faults/ uses real ones


@pytest.fixture
def stick(tmp_path):
    path = tmp_path / "media" / "usb"
    path.mkdir(parents=True)
    return path


def sha1sum_check(folder):
    return subprocess.run(
        ["sha1sum", "-c", usbkit.MANIFEST], cwd=folder, capture_output=True, text=True
    )


def test_it_writes_a_kit_that_sha1sum_checks(cast, published, stick, capsys):
    build = published()

    call_command("usb_kit", build.name, str(stick), UNMOUNTED, "--by", "carol")

    folder = stick / usbkit.FOLDER
    check = sha1sum_check(folder)
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(check.stdout.splitlines()) == 4
    assert sorted(os.listdir(folder)) == sorted(
        [
            build.tarball_name,
            f"{build.tarball_name}.md5",
            build.contents_name,
            f"{build.name}.name",
            usbkit.MANIFEST,
        ]
    )
    out = capsys.readouterr().out
    assert f"USB kit of {build.name} written and read back: {folder}" in out
    event = AuditEvent.objects.get(action="usb_kit")
    assert (event.actor, event.build, event.code) == (cast.carol, build, "usbkit_written")
    assert event.params["folder"] == str(folder)
    assert event.params["via"] == "cli"


def test_without_by_the_kit_is_recorded_as_made_by_the_portal(published, stick):
    build = published()
    call_command("usb_kit", build.name, str(stick), UNMOUNTED)
    assert AuditEvent.objects.get(action="usb_kit").actor.username == "portal"


def test_writing_it_again_succeeds(published, stick):
    build = published()
    call_command("usb_kit", build.name, str(stick), UNMOUNTED)
    call_command("usb_kit", build.name, str(stick), UNMOUNTED)
    assert sha1sum_check(stick / usbkit.FOLDER).returncode == 0
    assert AuditEvent.objects.filter(action="usb_kit").count() == 2


def test_an_offered_build_can_be_carried_too(published, stick):
    build = published()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.OFFERED)
    call_command("usb_kit", build.name, str(stick), UNMOUNTED)
    assert sha1sum_check(stick / usbkit.FOLDER).returncode == 0


def test_a_build_that_is_not_published_is_refused(published, stick):
    build = published()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.RETIRED)

    with pytest.raises(CommandError, match=r"Only a published or offered build .* Retired"):
        call_command("usb_kit", build.name, str(stick), UNMOUNTED)

    assert os.listdir(stick) == []
    assert not AuditEvent.objects.filter(action="usb_kit").exists()


def test_an_unknown_build_is_refused(db, stick):
    with pytest.raises(CommandError, match="No build is named 'py000-0'"):
        call_command("usb_kit", "py000-0", str(stick), UNMOUNTED)


def test_only_uploaders_and_approvers_may_be_named_with_by(cast, published, stick):
    build = published()
    with pytest.raises(CommandError, match="dave is neither an uploader nor an approver"):
        call_command("usb_kit", build.name, str(stick), UNMOUNTED, "--by", "dave")
    assert os.listdir(stick) == []


def test_a_destination_that_is_not_mounted_is_refused(published, stick):
    build = published()
    with pytest.raises(CommandError, match=r"is not a folder \(is the USB stick mounted"):
        call_command("usb_kit", build.name, str(stick / "nothing"), UNMOUNTED)


def test_a_folder_where_no_stick_is_mounted_is_refused(published, stick):
    build = published()

    with pytest.raises(CommandError, match="is not a mount point: is the USB stick mounted"):
        call_command("usb_kit", build.name, str(stick))

    assert os.listdir(stick) == []


def test_a_stick_holding_another_kit_is_refused_and_left_alone(published, stick):
    old, new = published(), published()
    call_command("usb_kit", old.name, str(stick), UNMOUNTED)
    before = {p.name: p.read_bytes() for p in (stick / usbkit.FOLDER).iterdir()}

    with pytest.raises(CommandError, match="already holds files that are not this kit"):
        call_command("usb_kit", new.name, str(stick), UNMOUNTED)

    assert {p.name: p.read_bytes() for p in (stick / usbkit.FOLDER).iterdir()} == before


def test_the_sign_command_output_is_written_as_manifest_sha1_sig(
    published, stick, tmp_path, settings
):
    script = tmp_path / "sign.py"
    script.write_text(SIGNER)
    settings.USB_MANIFEST_SIGN_COMMAND = [sys.executable, str(script), "{path}"]
    build = published()

    call_command("usb_kit", build.name, str(stick), UNMOUNTED)

    folder = stick / usbkit.FOLDER
    signature = (folder / usbkit.SIGNATURE).read_bytes()
    assert signature.startswith(b"\x89SIG\xff")
    assert sha1sum_check(folder).returncode == 0


def test_a_sign_command_that_hangs_is_stopped_and_nothing_is_written(published, stick, settings):
    settings.USB_MANIFEST_SIGN_COMMAND = [
        sys.executable,
        "-c",
        "import time; time.sleep(30)",
        "{path}",
    ]
    settings.USB_MANIFEST_SIGN_TIMEOUT = 1
    build = published()

    with pytest.raises(CommandError, match=r"Signing manifest\.sha1 failed \(no answer after 1"):
        call_command("usb_kit", build.name, str(stick), UNMOUNTED)

    assert os.listdir(stick) == []


def test_it_exits_non_zero_with_the_reason_as_a_program(published, stick):
    """As staff run it: the status and the message, not a traceback."""
    build = published()
    Build.objects.filter(pk=build.pk).update(status=BuildStatus.WITHDRAWN)

    with pytest.raises(CommandError) as refused:
        call_command("usb_kit", build.name, str(stick), UNMOUNTED)

    assert refused.value.returncode == 1
    assert str(refused.value) == (
        "Only a published or offered build can be put on a USB stick; this one is Withdrawn."
    )
