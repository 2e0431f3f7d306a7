"""USB kits of published builds, for schools whose server has no usable link to the
mothership: downloaded from the build page as one tar stream, or written onto a mounted
stick by `manage.py usb_kit`. Both are audited (who, when, which build, where to).

Callers authorise (`access.may_edit`); these services enforce what holds whoever calls: only
a build whose files are in the puppet content folder, as published, and that today's checks
do not flag, goes on a stick. The kit itself (manifest, tar stream, writing a folder) is
`usbkit`.
"""

import hashlib
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from portal import commands

from . import publishing, usbkit
from .audit import AuditAction, audit
from .models import Build, BuildStatus
from .reasons import Refused

KIT_STATUSES = (BuildStatus.PUBLISHED, BuildStatus.OFFERED)


def kit_for(build: Build) -> usbkit.Kit:
    """The kit of `build`, ready to stream or write.

    1. Refused unless the build is published or offered and not flagged by recheck_builds;
    2. its four published files must be there, the archive at the build's size;
    3. the archive's SHA-1 comes from the build; the first kit computes it, checking the
       MD5 in the same read, and keeps it (the small files are hashed every time);
    4. with USB_MANIFEST_SIGN_COMMAND set, the manifest is signed.
    """
    if build.status not in KIT_STATUSES:
        raise Refused("usbkit_not_published", status=build.get_status_display())
    if build.recheck_code:
        raise Refused("usbkit_flagged", reason=build.recheck_detail)
    folder = Path(settings.PUPPETCONTENT_OS_DIR)
    files = []
    for name, expected in _published(build).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected["size"]:
            raise Refused("usbkit_file_missing", file=name)
        if name == build.tarball_name:
            sha1 = build.tarball_sha1 or _archive_sha1(build, path)
        else:
            # Small files: hashed every time, and compared with what the build says they are.
            size, digests = usbkit.file_digests(path, "sha1", "sha256")
            if size != expected["size"] or digests["sha256"] != expected["sha256"]:
                raise Refused("usbkit_file_missing", file=name)
            sha1 = digests["sha1"]
        files.append(usbkit.KitFile(name, path, expected["size"], sha1))
    kit = usbkit.make_kit(files, mtime=_moment(build))
    if settings.USB_MANIFEST_SIGN_COMMAND:
        kit = usbkit.make_kit(files, signature=_signature(kit.manifest), mtime=kit.mtime)
    return kit


def kit_download(*, build: Build, acting_user) -> usbkit.Kit:
    """The kit to stream to `acting_user`'s browser, audited as they start downloading it."""
    kit = kit_for(build)
    audit(
        action=AuditAction.USB_KIT,
        actor=acting_user,
        build=build,
        code="usbkit_downloaded",
        params={"via": "web", "size": usbkit.tar_length(kit)},
    )
    return kit


def kit_write(*, build: Build, acting_user, dest: Path) -> Path:
    """Write the kit into `dest/xs-xobuilds/` (see `usbkit.write_folder`), audited once every
    file was read back and found right. Returns that folder."""
    kit = kit_for(build)
    folder = usbkit.write_folder(kit, Path(dest))
    audit(
        action=AuditAction.USB_KIT,
        actor=acting_user,
        build=build,
        code="usbkit_written",
        params={"via": "cli", "folder": str(folder.resolve()), "files": kit.names},
    )
    return folder


def _moment(build: Build) -> int:
    # Every member carries the publication time, so one build's kit is the same bytes twice.
    return int(build.published_at.timestamp()) if build.published_at else 0


def _published(build: Build) -> dict[str, dict]:
    """The four files as `publishing.publish_files` writes them: size, and SHA-256 where the
    build knows it (the archive's MD5 is checked apart, `_archive_sha1`)."""
    md5_line = publishing.md5_file_bytes(build.md5, build.tarball_name)
    name_line = publishing.name_file_bytes(build.name)
    return {
        build.tarball_name: {"size": build.size},
        f"{build.tarball_name}.md5": _known(md5_line),
        build.contents_name: {"size": build.contents_size, "sha256": build.contents_sha256},
        f"{build.name}.name": _known(name_line),
    }


def _known(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _archive_sha1(build: Build, path: Path) -> str:
    size, digests = usbkit.file_digests(path, "md5", "sha1")
    if size != build.size or digests["md5"] != build.md5:
        raise Refused("usbkit_archive_md5", actual=digests["md5"], expected=build.md5)
    # A derived value of immutable content, not a state change: no audit row. Conditional,
    # so two first kits at once store the same value once.
    with transaction.atomic():
        Build.objects.filter(pk=build.pk, tarball_sha1="").update(tarball_sha1=digests["sha1"])
    build.tarball_sha1 = digests["sha1"]
    return digests["sha1"]


def _signature(manifest: bytes) -> bytes:
    """The sign command's output for `manifest`, given as a file named manifest.sha1 in a
    private folder, before anything is written anywhere."""
    with tempfile.TemporaryDirectory(prefix="usbkit-") as scratch:
        path = Path(scratch) / usbkit.MANIFEST
        path.write_bytes(manifest)
        argv = [arg.replace("{path}", str(path)) for arg in settings.USB_MANIFEST_SIGN_COMMAND]
        result = commands.run(argv, timeout=settings.USB_MANIFEST_SIGN_TIMEOUT)
    if not result.ok:
        stderr = " ".join(result.stderr.split())[:500]
        problem = result.problem or f"exit status {result.status}: {stderr}"
        raise Refused("usbkit_sign_failed", problem=problem)
    if not result.stdout_bytes:
        raise Refused("usbkit_sign_failed", problem="it printed nothing")
    return result.stdout_bytes
