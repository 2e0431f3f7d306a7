"""Builds that older checks let through: today's archive checks on them, and their recall.

Validation learns new rules (issue 9: what GNU tar on the school server fails on). A build
published before a rule existed may break every school server that takes it, so
`build_recheck` runs today's archive scan on its stored archive and records the verdict on
the build, changing nothing else. Taking such a build away is an approver's decision:
`build_recall` withdraws it from updates.cfg and queues `build_remove_files`, which takes its
files out of the puppet content folder (`.name` first, so school servers stop picking it up
before the rest goes) and retires it. Nothing is ever removed automatically.

Callers authorise (`access`: only approvers recall); these functions assume they did.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import offers, publishing
from .audit import AuditAction, audit, build_transition
from .models import Build, BuildStatus
from .reasons import Refused
from .services import scan_stored_archive

# Builds whose files are in the puppet content folder, so school servers unpack them.
RECHECKED_STATUSES = (BuildStatus.PUBLISHED, BuildStatus.OFFERED, BuildStatus.WITHDRAWN)
RECALLABLE_STATUSES = RECHECKED_STATUSES


def build_recheck(*, build: Build) -> Refused | None:
    """Scan a build's stored archive with today's checks; return the problem, or None.

    1. Read the stored archive exactly as validation does (nothing on disk changes).
    2. Record the verdict: `recheck_code`/`recheck_params` (empty when it passes), the time,
       and the archive summary when the build has none yet (validated before it existed).
    3. Audit the verdict when it differs from the last one, so the history says when a build
       was found to break school servers (and when a fixed rule cleared it).
    """
    try:
        scan = scan_stored_archive(build)
    except FileNotFoundError:
        problem = Refused("publish_source_missing", file=build.tarball_name)
    except Refused as rejection:
        problem = rejection
    else:
        problem = None
    code, params = (problem.code, problem.params) if problem else ("", {})
    with transaction.atomic():
        row = Build.objects.select_for_update().get(pk=build.pk)
        fields = {"recheck_code": code, "recheck_params": params, "rechecked_at": timezone.now()}
        if problem is None and not row.archive_summary:
            fields["archive_summary"] = scan.summary
        Build.objects.filter(pk=build.pk).update(**fields)
        if (row.recheck_code, row.recheck_params) != (code, params):
            audit(
                build=row,
                actor=None,
                action=AuditAction.RECHECK,
                code="recheck_failed" if problem else "recheck_passed",
                params={"reason_code": code, "reason_params": params} if problem else {},
            )
    return problem


def build_recall(*, build: Build, acting_user, reason: str) -> None:
    """Take a build that would break school servers away from them (callers let only
    approvers do this).

    1. Only a build the recheck flagged, whose files are published; a written reason.
    2. If offered, withdraw it (updates.cfg is redeployed as for any withdrawal).
    3. Audit the recall and queue the removal of its files on the mothership queue.
    """
    reason = (reason or "").strip()
    if not reason:
        raise Refused("recall_reason_required")
    with transaction.atomic():
        row = Build.objects.select_for_update().get(pk=build.pk)
        if not row.recheck_code:
            raise Refused("recall_not_flagged")
        if row.status not in RECALLABLE_STATUSES:
            raise Refused("recall_not_published", status=row.get_status_display())
        if row.status == BuildStatus.OFFERED:
            offers.build_withdraw(build=row, acting_user=acting_user, reason=reason)
        Build.objects.filter(pk=row.pk).update(recalled_at=timezone.now())
        params = {"reason": reason}
        audit(
            build=row, actor=acting_user, action=AuditAction.RECALL, code="recalled", params=params
        )
        from .tasks import remove_build_files

        transaction.on_commit(lambda: remove_build_files.delay(row.pk), robust=True)


def build_remove_files(*, build_id) -> bool:
    """Remove a recalled build's files from the puppet content folder and retire it.

    Safe to run twice: files already gone are skipped, and a retired build stays retired.
    Returns True when this call retired the build.
    """
    build = Build.objects.filter(pk=build_id).first()
    if build is None or build.status not in RECALLABLE_STATUSES:
        return False
    removed = publishing.unpublish_files(
        dest_dir=settings.PUPPETCONTENT_OS_DIR,
        name=build.name,
        tarball_name=build.tarball_name,
        contents_name=build.contents_name,
    )
    retired = build_transition(
        build_id,
        from_statuses=list(RECALLABLE_STATUSES),
        to=BuildStatus.RETIRED,
        code="retired_recalled",
        params={"files": ", ".join(removed) or "-"},
    )
    return retired is not None


def sweep_recalls(*, stale) -> int:
    """Send again the removal of recalled builds whose files are still published (the
    message was lost) if recalled before `stale`. Returns how many."""
    from .tasks import remove_build_files

    recalled = Build.objects.filter(
        recalled_at__lt=stale, status__in=RECALLABLE_STATUSES
    ).values_list("pk", flat=True)
    for build_id in recalled:
        transaction.on_commit(lambda b=build_id: remove_build_files.delay(b), robust=True)
    return len(recalled)
