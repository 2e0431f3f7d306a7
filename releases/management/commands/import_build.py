import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, no_translations
from django.db import transaction

from portal import roles
from releases import checks, services
from releases.models import FINAL_PIPELINE_STATUSES, Build, BuildStatus
from releases.reasons import Refused, render
from releases.uploads import MD5_FILE_LIMIT, stage_local_file

SYSTEM_USERNAME = "portal"
POLL_SECONDS = 1.0


def system_user():
    """The account recorded as uploader for builds imported from the shell."""
    user, created = get_user_model().objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"first_name": "Portal (system)"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class Command(BaseCommand):
    help = (
        "Import a build already on this machine's disk: PATH/<name>-tree.tar.bz2 (or .xz, "
        ".lzma) with its .md5 and <name>.contents beside it. The files are copied into the "
        "build store; the originals are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("tarball", type=Path)
        parser.add_argument(
            "--name", default="", help="Build name (default: the archive's prefix)."
        )
        parser.add_argument("--contents-hash", default="", help="The hash computed on an XO.")
        parser.add_argument(
            "--by",
            default="",
            help=f"Uploader's user name (default: {SYSTEM_USERNAME}, created if needed).",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Follow the build until it is published (exit 0) or fails (exit 1).",
        )
        parser.add_argument(
            "--timeout", type=int, default=0, help="With --wait: give up after this many seconds."
        )

    @no_translations
    def handle(self, *args, tarball, name, contents_hash, by, wait, timeout, **options):
        md5_path, contents_path = self._companions(tarball)
        # The system account is created on first use, and a refused import is no use.
        user = self._user(by) if by else None
        staged = []
        try:
            self.stdout.write(f"Reading {tarball} …")
            for path, limit in (
                (tarball, settings.MAX_BUILD_BYTES),
                (md5_path, MD5_FILE_LIMIT),
                (contents_path, settings.MAX_CONTENTS_BYTES),
            ):
                try:
                    staged.append(stage_local_file(path, path.name, limit))
                except OverflowError:
                    raise CommandError(
                        f"{path} is larger than the limit of {limit} bytes."
                    ) from None
                except OSError as exc:
                    raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
            checks.check_contents(staged[2].path, max_bytes=settings.MAX_CONTENTS_BYTES)
            with transaction.atomic():
                build = services.build_create(
                    acting_user=user or system_user(),
                    tarball=staged[0],
                    md5_file=staged[1],
                    contents=staged[2],
                    name=name,
                    contents_hash=contents_hash,
                    via="cli",
                )
        except Refused as rejection:
            raise CommandError(rejection.message) from None
        finally:
            for item in staged:
                item.discard()
        self.stdout.write(f"Build {build.name} uploaded (md5 {build.md5}); validation queued.")
        if wait:
            self._follow(build, timeout)

    def _user(self, username):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        if not roles.has_role(user, roles.UPLOADERS):
            raise CommandError(f"{username} is not in the uploaders group.")
        return user

    def _companions(self, tarball: Path):
        if not tarball.is_file():
            raise CommandError(f"{tarball} was not found.")
        match = services.TARBALL_RE.match(tarball.name)
        if not match:
            raise CommandError(render("tarball_name", {"file": tarball.name}))
        md5_path = tarball.with_name(tarball.name + ".md5")
        contents_path = tarball.with_name(match["prefix"] + ".contents")
        for path in (md5_path, contents_path):
            if not path.is_file():
                raise CommandError(f"{path} was not found beside the archive.")
        return md5_path, contents_path

    def _follow(self, build, timeout):
        started = time.monotonic()
        last = None
        while True:
            build = Build.objects.get(pk=build.pk)
            line = (
                f"{build.get_status_display()} · {build.get_progress_phase_display()} "
                f"{build.progress_percent}%"
            )
            if line != last:
                self.stdout.write(line)
                last = line
            if build.status in FINAL_PIPELINE_STATUSES:
                break
            if timeout and time.monotonic() - started > timeout:
                raise CommandError(
                    f"Gave up waiting after {timeout} s; the build is {build.status}."
                )
            time.sleep(POLL_SECONDS)
        if build.status in (BuildStatus.PUBLISHED, BuildStatus.OFFERED):
            self.stdout.write(self.style.SUCCESS(f"Build {build.name} is published."))
            return
        self.stderr.write(f"Build {build.name} is {build.status}: {build.status_detail}")
        sys.exit(1)
