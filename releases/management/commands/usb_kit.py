import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import usb, usbkit
from releases.access import may_edit
from releases.reasons import Refused

from .import_build import system_user
from .promote import find_build, find_user


class Command(BaseCommand):
    help = (
        "Write a published build's USB kit into DEST/xs-xobuilds/ (DEST: a mounted USB stick): "
        "the four published files and manifest.sha1 (and manifest.sha1.sig when "
        "USB_MANIFEST_SIGN_COMMAND is set). Free space is checked first; every file is "
        "written under a temporary name, read back and compared before it gets its name. "
        "Exits 1 with the reason when the kit could not be written; the stick is left as it was."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="The build's name.")
        parser.add_argument("dest", type=Path, help="Where the stick is mounted.")
        parser.add_argument(
            "--by",
            default="",
            help="Who makes the kit, for the audit trail: an uploader or approver "
            "(default: the portal's system account).",
        )
        parser.add_argument(
            "--allow-unmounted",
            action="store_true",
            help="Write even when DEST is not a mount point (a kit prepared in a plain folder).",
        )

    @no_translations
    def handle(self, *args, name, dest, by, allow_unmounted, **options):
        user = self._user(by) if by else None
        build = find_build(name)
        if dest.is_dir() and not allow_unmounted and not os.path.ismount(dest):
            # An empty /media/usb with no stick in it would take a multi-GB kit onto the
            # mothership's own disk.
            raise CommandError(
                f"{dest} is not a mount point: is the USB stick mounted? "
                "(--allow-unmounted writes there anyway)"
            )
        self.stdout.write(f"Writing the USB kit of {build.name} into {dest / usbkit.FOLDER} …")
        try:
            folder = usb.kit_write(build=build, acting_user=user or system_user(), dest=dest)
        except Refused as refusal:
            raise CommandError(refusal.message) from None
        for entry in sorted(folder.iterdir(), key=lambda p: p.name.encode()):
            self.stdout.write(f"  {entry.stat().st_size:>14}  {entry.name}")
        self.stdout.write(
            self.style.SUCCESS(
                f"USB kit of {build.name} written and read back: {folder}. Check it with "
                f"“cd {folder} && sha1sum -c {usbkit.MANIFEST}”."
            )
        )

    def _user(self, username):
        user = find_user(username)
        if not may_edit(user):
            raise CommandError(f"{username} is neither an uploader nor an approver.")
        return user
