"""The build pipeline: upload → validation → publication, and the sweep that restarts it.

Views, the API, tasks and management commands call these functions; they assume an
authorised caller (`access`). Each state change is `audit.build_transition` (a conditional
UPDATE, so a redelivered task or a double click does nothing, with its audit row in the same
transaction); follow-up work is enqueued only after commit. What is offered to laptops is
`offers` and `deploy`; builds that older checks let through are `recheck`.
"""

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import checks, publishing, unpack
from .audit import AuditAction, audit, build_transition
from .files import fsync_dir
from .models import (
    HASH_EDITABLE_STATUSES,
    NAME_PATTERN,
    Build,
    BuildManifest,
    BuildStatus,
    HashSource,
    Phase,
)
from .notify import enqueue_build_notify
from .reasons import Refused
from .uploads import StagedFile

log = logging.getLogger(__name__)

TARBALL_RE = re.compile(r"^(?P<prefix>.+)-tree\.tar\.(?P<ext>bz2|xz|lzma)$")
PROGRESS_INTERVAL = 1.0
PUBLISHED_FILE_MODE = 0o644


# --- Helpers ---------------------------------------------------------------------------------


def _claim(build_id, from_status, to_status, phase):
    """Take a build for a worker with one conditional UPDATE, so that a message delivered
    twice, or to two workers, starts the work once. Returns the build, or None."""
    # With its audit event, or not at all: a database lost in between must not leave a
    # claim nobody can see in the build's history.
    return build_transition(
        build_id,
        from_statuses=[from_status],
        to=to_status,
        attempts=F("attempts") + 1,
        progress_phase=phase,
        progress_at=timezone.now(),
    )


def _enqueue_validation(build_id):
    from .tasks import validate_build

    # robust: a broker outage must not undo an accepted upload; the sweeper sends it later.
    transaction.on_commit(lambda: validate_build.delay(build_id), robust=True)


def _enqueue_publication(build_id):
    from .tasks import publish_build

    transaction.on_commit(lambda: publish_build.delay(build_id), robust=True)


class Progress:
    """Writes a working build's progress at most about once a second."""

    def __init__(self, build_id, phase, total):
        self.build_id = build_id
        self.phase = phase
        self.total = total
        self.last = 0.0
        self.report(0, force=True)

    def report(self, done, total=None, *, force=False):
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        Build.objects.filter(pk=self.build_id).update(
            progress_phase=self.phase,
            progress_done=done,
            progress_total=total if total is not None else self.total,
            progress_at=timezone.now(),
        )

    def __call__(self, done, total=None):
        self.report(done, total)


# --- Upload ----------------------------------------------------------------------------------


def build_name_check(name: str) -> str:
    """The name, if it is well-formed and has never been used; raises Refused."""
    if not re.fullmatch(NAME_PATTERN, name or ""):
        raise Refused("name_invalid", name=name)
    if Build.objects.name_taken(name):
        raise Refused("name_taken", name=name)
    return name


def build_create(
    *,
    acting_user,
    tarball: StagedFile,
    md5_file: StagedFile,
    contents: StagedFile,
    name: str = "",
    contents_hash: str = "",
    via: str = "web",
) -> Build:
    """Take the three staged files into the build store and queue validation.

    1. Cheap checks that need no reading of the archive: file names, name, sizes, the .md5
       file against the md5 computed while receiving. A failure raises Refused and
       changes nothing (the caller discards the staged files).
    2. Move (rename) the files into a fresh folder of the build store.
    3. Create the row and its audit event; validation is enqueued after commit.
    """
    match = TARBALL_RE.match(tarball.original_name)
    if not match:
        raise Refused("tarball_name", file=tarball.original_name)
    name = (name or "").strip() or match["prefix"]
    build_name_check(name)
    for field, staged in (("tarball", tarball), ("md5", md5_file), ("contents", contents)):
        if staged.size == 0:
            raise Refused("file_empty", field=field, file=staged.original_name)
    if contents_hash.strip():
        contents_hash = checks.normalise_contents_hash(contents_hash)
    tarball_name = f"{name}-tree.tar.{match['ext']}"
    # The .md5 file was written for the name the builder gave the archive.
    declared, bare = checks.parse_md5_file(md5_file.path.read_bytes(), tarball.original_name)
    if declared != tarball.md5:
        raise Refused("md5_mismatch", declared=declared, actual=tarball.md5)

    store_dir = f"{name}-{secrets.token_hex(4)}"
    folder = settings.BUILD_STORE_DIR / store_dir
    folder.mkdir(parents=True)
    moved = []  # (staged path, stored path): put back if the build is not made
    try:
        for staged, target in (
            (tarball, tarball_name),
            (md5_file, "uploaded.md5"),
            (contents, f"{name}.contents"),
        ):
            # Temporary files are private (0600); published files must be readable by
            # the rsync daemon that school servers pull from.
            os.chmod(staged.path, PUBLISHED_FILE_MODE)
            os.rename(staged.path, folder / target)
            moved.append((staged.path, folder / target))
        fsync_dir(folder)
        with transaction.atomic():
            build = Build.objects.create(
                name=name,
                compression=match["ext"],
                original_filename=tarball.original_name,
                size=tarball.size,
                md5=tarball.md5,
                sha256=tarball.sha256,
                declared_md5=declared,
                md5_file_bare=bare,
                contents_size=contents.size,
                contents_sha256=contents.sha256,
                entered_contents_hash=contents_hash,
                store_dir=store_dir,
                uploaded_by=acting_user,
                progress_total=tarball.size,
            )
            audit(
                build=build,
                actor=acting_user,
                action=AuditAction.UPLOAD,
                code="uploaded",
                params={"file": tarball.original_name, "size": tarball.size, "via": via},
                to_status=BuildStatus.UPLOADED,
            )
            if bare:
                audit(build=build, actor=acting_user, action=AuditAction.NOTE, code="md5_bare")
            _enqueue_validation(build.pk)
    except IntegrityError:
        _put_back(moved, folder)
        raise Refused("name_taken", name=name) from None
    except BaseException:
        _put_back(moved, folder)
        raise
    return build


def _put_back(moved, folder) -> None:
    """Undo build_create's moves: the staged files go back where the caller has them (it
    discards them, or, for a resumable upload, keeps the archive for the next try)."""
    for staged_path, stored in moved:
        with contextlib.suppress(OSError):
            os.rename(stored, staged_path)
            os.chmod(staged_path, 0o600)
    shutil.rmtree(folder, ignore_errors=True)


# --- Validation ------------------------------------------------------------------------------


def build_validate(*, build_id) -> bool:
    """Run every check on an uploaded build; a failure is a state, not an exception.

    1. Claim the build (uploaded → validating); if someone else has it, do nothing.
    2. Check the .md5 file again, read the whole archive as a stream (layout, limits,
       manifest), check the .contents file, and compute the contents hash if configured.
    3. valid (publication enqueued) or invalid with the reason.
    """
    build = _claim(build_id, BuildStatus.UPLOADED, BuildStatus.VALIDATING, Phase.CHECKSUM)
    if build is None:
        return False
    try:
        result = _run_checks(build)
    except (OSError, DatabaseError) as error:
        # Not the build's fault (a disk or database hiccup): hand it back for the retry.
        # With the database gone this fails too, and the sweeper hands it back later.
        build_transition(
            build_id,
            from_statuses=[BuildStatus.VALIDATING],
            to=BuildStatus.UPLOADED,
            code="interrupted",
            params={"error": str(error)[:200]},
            progress_phase=Phase.QUEUED,
        )
        raise
    except Refused as rejection:
        build_transition(
            build_id,
            from_statuses=[BuildStatus.VALIDATING],
            to=BuildStatus.INVALID,
            code=rejection.code,
            params=rejection.params,
            progress_phase=Phase.DONE,
            validated_at=timezone.now(),
        )
        return True
    except Exception as error:
        # A fault of the portal's own, met on this build: a final state with the reason,
        # never a build left `validating` with none. The traceback goes to the log.
        log.exception("validating build %s failed", build_id)
        build_transition(
            build_id,
            from_statuses=[BuildStatus.VALIDATING],
            to=BuildStatus.INVALID,
            code="validation_error",
            params={"error": f"{type(error).__name__}: {error}"[:300]},
            progress_phase=Phase.DONE,
            validated_at=timezone.now(),
        )
        return True
    scan, hash_fields = result
    with transaction.atomic():
        BuildManifest.objects.update_or_create(
            build=build, defaults={"data": scan.manifest, "entries": scan.members}
        )
        done = build_transition(
            build_id,
            from_statuses=[BuildStatus.VALIDATING],
            to=BuildStatus.VALID,
            code="valid",
            pristine_id=scan.pristine_id,
            archive_summary=scan.summary,
            member_count=scan.members,
            unpacked_size=scan.unpacked_size,
            validated_at=timezone.now(),
            progress_phase=Phase.QUEUED,
            progress_done=0,
            progress_total=build.size,
            progress_at=timezone.now(),
            attempts=0,
            **hash_fields,
        )
        if done:
            _enqueue_publication(build_id)
    return True


def _run_checks(build):
    if not build.stored_tarball.is_file():
        raise Refused("publish_source_missing", file=build.tarball_name)
    progress = Progress(build.pk, Phase.CHECKSUM, build.size)
    declared, _bare = checks.parse_md5_file(
        build.stored_md5_file.read_bytes(), build.original_filename
    )
    if declared != build.md5:
        raise Refused("md5_mismatch", declared=declared, actual=build.md5)

    progress = Progress(build.pk, Phase.ARCHIVE, build.size)
    scan = scan_stored_archive(build, progress=progress)
    progress.report(build.size, force=True)
    if scan.contents_copy_sha256:
        # The schema of .contents is not public: a copy that differs is worth a look, no more.
        same = scan.contents_copy_sha256 == build.contents_sha256
        scan.summary["contents_copy"] = "same" if same else "different"

    Progress(build.pk, Phase.CONTENTS, build.contents_size)
    checks.check_contents(build.stored_contents, max_bytes=settings.MAX_CONTENTS_BYTES)
    return scan, _contents_hash_fields(build)


def scan_stored_archive(build, *, progress=None) -> unpack.ArchiveScan:
    """Unpack a build's stored archive as the school servers do, with the configured
    limits and tar, and describe what they would serve."""
    return unpack.unpack_archive(
        build.stored_tarball,
        build.compression,
        scratch_dir=settings.VALIDATION_SCRATCH_DIR,
        tar=settings.SCHOOL_SERVER_TAR,
        max_unpacked_bytes=settings.MAX_UNPACKED_BYTES,
        max_members=settings.MAX_ARCHIVE_MEMBERS,
        allow_device_nodes=settings.ARCHIVE_ALLOW_DEVICE_NODES,
        progress=progress,
    )


def _contents_hash_fields(build) -> dict:
    entered = build.entered_contents_hash
    if not settings.CONTENTS_HASH_COMMAND:
        if entered:
            return {"contents_hash": entered, "contents_hash_source": HashSource.ENTERED}
        return {}
    Progress(build.pk, Phase.CONTENTS_HASH, 0)
    try:
        computed = checks.run_contents_hash_command(
            settings.CONTENTS_HASH_COMMAND,
            build.stored_contents,
            timeout=settings.CONTENTS_HASH_TIMEOUT,
        )
    except checks.HashCommandUnavailable as problem:
        # Not the build's fault: keep what staff entered and say why nothing was computed.
        audit(
            build=build,
            actor=None,
            action=AuditAction.NOTE,
            code=problem.code,
            params=problem.params,
        )
        fields = {"contents_hash_note": problem.code}
        if entered:
            fields |= {"contents_hash": entered, "contents_hash_source": HashSource.ENTERED}
        return fields
    if entered and entered != computed:
        raise Refused("hash_mismatch", entered=entered, computed=computed)
    return {
        "contents_hash": computed,
        "contents_hash_source": HashSource.BOTH if entered else HashSource.COMMAND,
        "contents_hash_note": "",
    }


# --- Publication -----------------------------------------------------------------------------


def build_publish(*, build_id) -> bool:
    """Place a valid build's four files in the puppet content folder.

    1. Claim the build (valid → publishing); if someone else has it, do nothing.
    2. `publishing.publish_files`: temp names, fsync, no-overwrite links, md5 re-verified in
       place, `.name` last.
    3. published, or publish_failed with the reason (retry from the build page).
    """
    build = _claim(build_id, BuildStatus.VALID, BuildStatus.PUBLISHING, Phase.PUBLISHING)
    if build is None:
        return False
    progress = Progress(build.pk, Phase.VERIFYING, build.size)
    try:
        publishing.publish_files(
            dest_dir=settings.PUPPETCONTENT_OS_DIR,
            name=build.name,
            tarball=build.stored_tarball,
            tarball_name=build.tarball_name,
            md5=build.md5,
            contents=build.stored_contents,
            contents_name=build.contents_name,
            progress=progress,
            stale_temps_after=settings.SWEEPER_STALE_AFTER,
        )
    except Refused as failure:
        build_transition(
            build_id,
            from_statuses=[BuildStatus.PUBLISHING],
            to=BuildStatus.PUBLISH_FAILED,
            code=failure.code,
            params=failure.params,
            progress_phase=Phase.DONE,
        )
        return True
    build_transition(
        build_id,
        from_statuses=[BuildStatus.PUBLISHING],
        to=BuildStatus.PUBLISHED,
        code="published",
        params={"folder": str(settings.PUPPETCONTENT_OS_DIR)},
        published_at=timezone.now(),
        progress_phase=Phase.DONE,
        progress_done=build.size,
        attempts=0,
    )
    return True


def build_retry_publication(*, build: Build, acting_user) -> Build:
    """Queue a failed publication again; refused unless the publication failed."""
    done = build_transition(
        build.pk,
        from_statuses=[BuildStatus.PUBLISH_FAILED],
        to=BuildStatus.VALID,
        actor=acting_user,
        code="retry",
        progress_phase=Phase.QUEUED,
        progress_done=0,
        progress_at=timezone.now(),
        attempts=0,
    )
    if done is None:
        raise Refused("retry_not_failed")
    _enqueue_publication(build.pk)
    return done


# --- Contents hash ---------------------------------------------------------------------------


def build_set_contents_hash(
    *, build: Build, acting_user, value: str, via_xo_helper: bool = False
) -> Build:
    """Record the contents hash computed on an XO (needed to promote, not to publish), typed
    in by `acting_user` or posted by an XO helper link they made."""
    value = checks.normalise_contents_hash(value)
    computed = build.contents_hash_source in (HashSource.COMMAND, HashSource.BOTH)
    if computed and value != build.contents_hash:
        raise Refused("hash_mismatch", entered=value, computed=build.contents_hash)
    with transaction.atomic():
        changed = Build.objects.filter(pk=build.pk, status__in=HASH_EDITABLE_STATUSES).update(
            contents_hash=value,
            contents_hash_source=HashSource.BOTH if computed else HashSource.ENTERED,
            entered_contents_hash=value,
        )
        if not changed:
            raise Refused("hash_not_editable")
        audit(
            build=build,
            actor=acting_user,
            action=AuditAction.CONTENTS_HASH,
            code="hash_set_xo_helper" if via_xo_helper else "hash_set",
            params={"value": value},
        )
        # A published build now waits for promotion: the approvers are told.
        enqueue_build_notify(build.pk)
    build.refresh_from_db()
    return build


# --- Sweeper ---------------------------------------------------------------------------------


def sweep_stuck_builds(*, now) -> dict:
    """Re-enqueue validation or publication that a broker outage or a killed worker left
    behind; give up after SWEEPER_MAX_ATTEMPTS tries so a build that kills its worker
    cannot loop forever. (`tasks.sweep` runs this with the other sweeps.)"""
    stale = now - timedelta(seconds=settings.SWEEPER_STALE_AFTER)
    limit = settings.SWEEPER_MAX_ATTEMPTS
    seconds = settings.SWEEPER_STALE_AFTER
    counts = {"validate": 0, "publish": 0, "abandoned": 0}

    # Waiting, and nobody took the message.
    for status, enqueue, key in (
        (BuildStatus.UPLOADED, _enqueue_validation, "validate"),
        (BuildStatus.VALID, _enqueue_publication, "publish"),
    ):
        waiting = Build.objects.filter(status=status, progress_at__lt=stale)
        for build_id in waiting.values_list("pk", flat=True):
            Build.objects.filter(pk=build_id).update(progress_at=now)
            enqueue(build_id)
            counts[key] += 1

    # Claimed by a worker that stopped reporting progress.
    stuck = Build.objects.filter(
        status__in=[BuildStatus.VALIDATING, BuildStatus.PUBLISHING], progress_at__lt=stale
    ).values_list("pk", "status", "attempts")
    for build_id, status, attempts in stuck:
        validating = status == BuildStatus.VALIDATING
        if attempts >= limit:
            build_transition(
                build_id,
                from_statuses=[status],
                to=BuildStatus.INVALID if validating else BuildStatus.PUBLISH_FAILED,
                code="validation_abandoned" if validating else "publish_abandoned",
                params={"attempts": attempts},
                progress_phase=Phase.DONE,
            )
            counts["abandoned"] += 1
            continue
        back = BuildStatus.UPLOADED if validating else BuildStatus.VALID
        if build_transition(
            build_id,
            from_statuses=[status],
            to=back,
            code="requeued",
            params={"seconds": seconds},
            progress_phase=Phase.QUEUED,
            progress_at=now,
        ):
            if validating:
                _enqueue_validation(build_id)
            else:
                _enqueue_publication(build_id)
            counts["validate" if validating else "publish"] += 1
    return counts
