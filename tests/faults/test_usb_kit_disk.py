"""A USB kit written onto a stick that is too small or read-only, for real: a small tmpfs
stands in for the stick (we run as root). `usb_kit` exits non-zero with the reason and the
stick is left exactly as it was."""

import random
import shutil
import subprocess

import pytest
from django.core.management import CommandError, call_command

from releases import usbkit
from releases.models import AuditEvent

from ..factories import compress, tar_bytes


@pytest.fixture
def big_build(published):
    """A build whose archive is 3 MB of incompressible data."""
    data = tar_bytes({"boot/initrd.img": random.Random(12).randbytes(3 << 20)})
    return published(tarball=compress(data, "xz"), compression="xz")


def test_a_stick_too_small_is_refused_before_anything_is_written(big_build, tmpfs):
    stick = tmpfs("stick", size="2m")

    with pytest.raises(CommandError, match=r"Not enough free space on .*stick: \d+ bytes needed"):
        call_command("usb_kit", big_build.name, str(stick))

    assert list(stick.iterdir()) == []
    assert not AuditEvent.objects.filter(action="usb_kit").exists()


def test_a_stick_that_fills_up_mid_write_is_left_as_it_was(big_build, tmpfs, monkeypatch):
    """The free-space check passes (something else takes the space after it, here: it is
    told a lie), so the kernel's own ENOSPC comes in the middle of the archive."""
    stick = tmpfs("stick", size="2m")
    (stick / "notes.txt").write_text("the school's own file\n")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(
        usbkit.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=1 << 40)
    )

    with pytest.raises(CommandError, match="Not enough free space"):
        call_command("usb_kit", big_build.name, str(stick))

    assert sorted(p.name for p in stick.iterdir()) == ["notes.txt"]


def test_a_read_only_stick_is_refused(published, tmpfs):
    build = published()
    stick = tmpfs("stick", size="8m")
    subprocess.run(["mount", "-o", "remount,ro", str(stick)], check=True, timeout=30)

    with pytest.raises(CommandError, match=r"Cannot write to .*stick: Read-only file system"):
        call_command("usb_kit", build.name, str(stick))

    assert list(stick.iterdir()) == []
