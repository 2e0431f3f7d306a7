"""Services for promotion: what updates.cfg offers, and deploying it to oatslite.

The database says what is offered (active `OfferedEntry` rows); every request (promote,
withdraw, stop everything, roll back, import) changes those rows and queues a `Deployment`.
`apply_deployments` (queue mothership, one at a time under a file lock) renders the file
from the database, writes it atomically, restarts oatslite and checks it, and on any failure
puts the previous file back, restarts again and undoes the requests it was applying.
"""

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from portal import commands, roles
from schools.selectors import build_coverage

from . import updates_cfg
from .models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentStatus,
    OatsliteState,
    OfferedEntry,
)
from .reasons import BuildRejected, render
from .services import audit

log = logging.getLogger(__name__)
DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "oatslite" / "entry.cfg"


class PromotionRefused(BuildRejected):
    """A promotion, withdrawal or rollback that the rules do not allow."""


# --- Reading the desired state --------------------------------------------------------------


def entry_template() -> str:
    path = Path(settings.OATSLITE_ENTRY_TEMPLATE or DEFAULT_TEMPLATE_PATH)
    return updates_cfg.check_template(path.read_text(encoding="utf-8"))


def _as_entry(row: OfferedEntry) -> updates_cfg.Entry:
    return updates_cfg.Entry(
        section=row.section,
        name=row.name,
        priority=row.priority,
        update_path=row.update_path,
        text=row.text or None,
    )


def render_current(extra: list[OfferedEntry] = (), without: set[int] = frozenset()) -> str:
    """The updates.cfg the database implies, optionally with a change not saved yet."""
    rows = [row for row in OfferedEntry.objects.active() if row.pk not in without]
    rows += list(extra)
    return updates_cfg.render(
        OatsliteState.get().preamble, [_as_entry(row) for row in rows], entry_template()
    )


def read_deployed_file() -> str | None:
    path = Path(settings.OATSLITE_UPDATES_CFG)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


@dataclass
class PromotionPreview:
    """What the approver sees before confirming."""

    build: Build
    current: str
    proposed: str
    diff: str
    coverage: object
    needs_reason: bool
    problem: str = ""


def promotion_preview(*, build: Build, priority: str) -> PromotionPreview:
    coverage = build_coverage(build)
    current = read_deployed_file() or ""
    try:
        proposed = render_current(extra=[_new_entry(build, priority)])
        updates_cfg.validate(proposed)
        problem = ""
    except updates_cfg.ConfigProblem as exc:
        proposed, problem = current, render("config_invalid", {"error": str(exc)})
    return PromotionPreview(
        build=build,
        current=current,
        proposed=proposed,
        diff=updates_cfg.unified_diff(current, proposed),
        coverage=coverage,
        needs_reason=_below_minimum(coverage),
        problem=problem,
    )


def _below_minimum(coverage) -> bool:
    return coverage.share is None or coverage.share < settings.PROMOTION_MIN_COVERAGE


def _new_entry(build: Build, priority: str) -> OfferedEntry:
    return OfferedEntry(
        section=build.contents_hash,
        build=build,
        name=build.name,
        priority=priority,
        update_path=settings.SCHOOLSERVER_UPDATE_URL.replace("{name}", build.name),
    )


# --- Requests ---------------------------------------------------------------------------------


def _require_approver(user):
    if not roles.has_role(user, roles.APPROVERS):
        raise PromotionRefused("promote_not_approver")


def _set_build_status(build_id, to, *, actor, code, params=None):
    build = Build.objects.select_for_update().get(pk=build_id)
    # A retired build's files are gone: no undo or import may offer it again.
    if build.status in (to, BuildStatus.RETIRED):
        return
    Build.objects.filter(pk=build_id).update(
        status=to, status_code=code, status_params=params or {}
    )
    audit(
        build=build,
        actor=actor,
        action="status",
        code=code,
        params=params,
        from_status=build.status,
        to_status=to,
    )


def _queue(*, action, actor, build=None, reason="", activated=(), deactivated=(), force=False):
    deployment = Deployment.objects.create(
        action=action,
        build=build,
        requested_by=actor,
        reason=reason,
        force=force,
        changes={"activated": list(activated), "deactivated": list(deactivated)},
    )
    from .tasks import apply_deployments

    # robust: a broker outage must not undo the request; the sweeper sends it later.
    transaction.on_commit(apply_deployments.delay, robust=True)
    return deployment


def build_promote(*, build: Build, acting_user, priority: str = "", reason: str = "") -> Deployment:
    """Offer a published build to the laptops.

    1. Rules: approvers only; never the build's own uploader (unless ALLOW_SELF_APPROVAL,
       audited); published with a contents hash; an allowed priority; coverage at least
       PROMOTION_MIN_COVERAGE or a written reason; a contents hash not already offered;
       and a resulting file that oatslite can read.
    2. Add the entry below every other one, mark the build offered, audit, queue a deployment.
    """
    _require_approver(acting_user)
    priority = priority or settings.OATSLITE_PRIORITIES[0]
    reason = (reason or "").strip()
    self_approval = acting_user.pk == build.uploaded_by_id
    if self_approval and not settings.ALLOW_SELF_APPROVAL:
        raise PromotionRefused("promote_own_build")
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build.pk)
        if build.status not in (BuildStatus.PUBLISHED, BuildStatus.WITHDRAWN):
            raise PromotionRefused("promote_not_published", status=build.get_status_display())
        if build.recheck_code:
            raise PromotionRefused("promote_flagged", reason=build.recheck_detail)
        if not build.contents_hash:
            raise PromotionRefused("promote_no_hash")
        if priority not in settings.OATSLITE_PRIORITIES:
            raise PromotionRefused(
                "promote_priority",
                priority=priority,
                allowed=", ".join(settings.OATSLITE_PRIORITIES),
            )
        coverage = build_coverage(build)
        if _below_minimum(coverage) and not reason:
            raise PromotionRefused(
                "promote_reason_required",
                coverage=coverage.percent_label,
                minimum=f"{settings.PROMOTION_MIN_COVERAGE:.0%}",
            )
        clash = OfferedEntry.objects.active().filter(section=build.contents_hash).first()
        if clash:
            raise PromotionRefused("promote_duplicate_hash", section=clash.section, name=clash.name)
        entry = _new_entry(build, priority)
        try:
            updates_cfg.validate(render_current(extra=[entry]))
        except updates_cfg.ConfigProblem as exc:
            raise PromotionRefused("config_invalid", error=str(exc)) from None

        last = OfferedEntry.objects.aggregate(top=Max("position"))["top"] or 0
        entry.position = last + 1
        entry.promoted_by = acting_user
        entry.build_uploader_id = build.uploaded_by_id
        entry.self_approved = self_approval
        entry.coverage = coverage.share
        entry.reason = reason
        entry.save()
        _set_build_status(
            build.pk,
            BuildStatus.OFFERED,
            actor=acting_user,
            code="promoted",
            params={"priority": priority},
        )
        if self_approval:
            audit(build=build, actor=acting_user, action="self_approval", code="promoted_self")
        if reason and _below_minimum(coverage):
            audit(
                build=build,
                actor=acting_user,
                action="coverage_override",
                code="coverage_override",
                params={"reason": reason},
            )
        return _queue(
            action="promote", actor=acting_user, build=build, reason=reason, activated=[entry.pk]
        )


def build_withdraw(*, build: Build, acting_user) -> Deployment:
    """Stop offering one build: its entry leaves updates.cfg."""
    _require_approver(acting_user)
    with transaction.atomic():
        entries = list(OfferedEntry.objects.select_for_update().filter(build=build, active=True))
        if not entries:
            raise PromotionRefused("withdraw_not_offered")
        ids = [entry.pk for entry in entries]
        OfferedEntry.objects.filter(pk__in=ids).update(active=False, withdrawn_at=timezone.now())
        _set_build_status(build.pk, BuildStatus.WITHDRAWN, actor=acting_user, code="withdrawn")
        return _queue(action="withdraw", actor=acting_user, build=build, deactivated=ids)


def offers_stop_all(*, acting_user, reason: str = "") -> Deployment:
    """Emergency: offer nothing at all. One approver is enough; it is audited and every
    approver is told by e-mail."""
    _require_approver(acting_user)
    with transaction.atomic():
        entries = list(OfferedEntry.objects.select_for_update().filter(active=True))
        ids = [entry.pk for entry in entries]
        OfferedEntry.objects.filter(pk__in=ids).update(active=False, withdrawn_at=timezone.now())
        for build_id in {entry.build_id for entry in entries if entry.build_id}:
            _set_build_status(
                build_id, BuildStatus.WITHDRAWN, actor=acting_user, code="stopped_all"
            )
        audit(build=None, actor=acting_user, action="stop_all", code="stopped_all")
        deployment = _queue(action="stop_all", actor=acting_user, reason=reason, deactivated=ids)
        transaction.on_commit(
            lambda: mail_approvers(
                f"[XO portal] Emergency stop by {acting_user.get_username()}",
                f"{acting_user.get_username()} stopped offering every update "
                f"({len(ids)} entries).\n\nReason: {reason or '-'}\n",
            ),
            robust=True,
        )
        return deployment


def deployment_rollback(*, deployment: Deployment, acting_user) -> Deployment:
    """Go back to what an earlier successful deployment offered, through the same path."""
    _require_approver(acting_user)
    if deployment.status != DeploymentStatus.SUCCEEDED:
        raise PromotionRefused("rollback_not_deployed")
    with transaction.atomic():
        wanted = set(deployment.active_ids)
        current = set(OfferedEntry.objects.filter(active=True).values_list("pk", flat=True))
        activate, deactivate = wanted - current, current - wanted
        now = timezone.now()
        OfferedEntry.objects.filter(pk__in=deactivate).update(active=False, withdrawn_at=now)
        OfferedEntry.objects.filter(pk__in=activate).update(active=True, withdrawn_at=None)
        _sync_build_statuses(
            activate | deactivate,
            actor=acting_user,
            code="rolled_back",
            params={"deployment": deployment.pk},
        )
        return _queue(
            action="rollback",
            actor=acting_user,
            reason=f"#{deployment.pk}",
            activated=sorted(activate),
            deactivated=sorted(deactivate),
        )


def _sync_build_statuses(entry_ids, *, actor, code, params=None):
    """A build is offered exactly when one of its entries is active."""
    build_ids = set(
        OfferedEntry.objects.filter(pk__in=entry_ids, build__isnull=False).values_list(
            "build_id", flat=True
        )
    )
    offered = set(
        OfferedEntry.objects.filter(build_id__in=build_ids, active=True).values_list(
            "build_id", flat=True
        )
    )
    for build_id in build_ids:
        to = BuildStatus.OFFERED if build_id in offered else BuildStatus.WITHDRAWN
        status = Build.objects.filter(pk=build_id).values_list("status", flat=True).first()
        # Into offered from anything; out of offered only into withdrawn.
        if status != to and BuildStatus.OFFERED in (to, status):
            _set_build_status(build_id, to, actor=actor, code=code, params=params)


def updates_cfg_import(*, text: str, acting_user, deployed: bool = True) -> Deployment:
    """Adopt a hand-written updates.cfg: its preamble and entries, in order, become what the
    database offers. Entries naming a build the portal knows are linked to it; the others
    are kept as legacy entries. Each keeps its exact text, so the file renders unchanged.

    With `deployed`, the text is what oatslite runs now, so it is recorded as deployed
    without writing or restarting anything."""
    parsed = updates_cfg.parse(text)
    updates_cfg.validate(text)
    with transaction.atomic():
        state = OatsliteState.get()
        state.preamble = parsed.preamble
        state.save(update_fields=["preamble"])
        previous = set(OfferedEntry.objects.filter(active=True).values_list("pk", flat=True))
        OfferedEntry.objects.filter(pk__in=previous).update(
            active=False, withdrawn_at=timezone.now()
        )
        builds = {
            b.name: b for b in Build.objects.filter(name__in=[e.name for e in parsed.entries])
        }
        last = OfferedEntry.objects.aggregate(top=Max("position"))["top"] or 0
        created = []
        for offset, entry in enumerate(parsed.entries, start=1):
            build = builds.get(entry.name)
            created.append(
                OfferedEntry.objects.create(
                    section=entry.section,
                    build=build,
                    name=entry.name,
                    priority=entry.priority,
                    update_path=entry.update_path,
                    text=entry.text,
                    legacy=build is None,
                    position=last + offset,
                )
            )
        ids = [row.pk for row in created]
        _sync_build_statuses(set(ids) | previous, actor=acting_user, code="imported")
        audit(build=None, actor=acting_user, action="import_cfg", code="imported")
        deployment = Deployment.objects.create(
            action="import",
            requested_by=acting_user,
            changes={"activated": ids, "deactivated": sorted(previous)},
        )
        if deployed:
            Deployment.objects.filter(pk=deployment.pk).update(
                status=DeploymentStatus.SUCCEEDED,
                content=text,
                sha256=_sha256(text),
                previous_content=text,
                active_ids=ids,
                restart_skipped=True,
                finished_at=timezone.now(),
            )
        else:
            transaction.on_commit(_enqueue_apply, robust=True)
        deployment.refresh_from_db()
        return deployment


def overwrite_drift(*, acting_user) -> Deployment:
    """Write what the database says over a hand-edited file (the hand edits are lost; they
    stay visible in the drift record)."""
    _require_approver(acting_user)
    with transaction.atomic():
        return _queue(action="overwrite", actor=acting_user, force=True)


def _enqueue_apply():
    from .tasks import apply_deployments

    apply_deployments.delay()


# --- Applying ---------------------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str | None) -> None:
    """Replace `path` with `text` (None: remove it): temp file in the same folder, fsync,
    rename, fsync the folder. Readers see the old file or the new one, never a mix."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _restart_and_check() -> tuple[list[dict], str]:
    """Run the restart and health-check commands; returns their records and, on failure,
    the reason code."""
    outputs = []
    if not settings.OATSLITE_RESTART_COMMAND:
        return outputs, ""
    timeout = settings.OATSLITE_COMMAND_TIMEOUT
    result = commands.run(settings.OATSLITE_RESTART_COMMAND, timeout=timeout)
    outputs.append({"step": "restart", **result.summary()})
    if not result.ok:
        return outputs, "deploy_restart_failed"
    if settings.OATSLITE_HEALTHCHECK_COMMAND:
        result = commands.run(settings.OATSLITE_HEALTHCHECK_COMMAND, timeout=timeout)
        outputs.append({"step": "health", **result.summary()})
        if not result.ok:
            return outputs, "deploy_health_failed"
    return outputs, ""


def _problem_text(outputs: list[dict]) -> str:
    last = outputs[-1]
    if last["problem"]:
        return last["problem"]
    tail = (last["stderr"] or last["stdout"]).strip().splitlines()
    return f"exit status {last['status']}" + (f": {tail[-1]}" if tail else "")


def apply_deployments() -> Deployment | None:
    """Bring updates.cfg in line with the database, one at a time.

    1. Under the lock, claim every waiting request; the last one leads, the others are
       coalesced into it (the file is rendered from the database, which has them all).
    2. Drift: if the file is not what the portal last deployed (or, before any
       deployment, not what it would write), stop and show the difference, unless a
       claimed request says to overwrite.
    3. Write atomically, keeping the previous content.
    4. Restart oatslite and run the health check. On failure: restore the previous file,
       restart again, record both, undo the claimed requests, e-mail the approvers.
    5. Record the outcome on every claimed request.
    """
    path = Path(settings.OATSLITE_UPDATES_CFG)
    with _file_lock(path):
        lead = _apply_locked(path)
    if lead is not None:
        lead.refresh_from_db()
    return lead


def _apply_locked(path: Path) -> Deployment | None:
    claimed = list(Deployment.objects.filter(status=DeploymentStatus.PENDING).order_by("id"))
    if not claimed:
        return None
    ids = [d.pk for d in claimed]
    Deployment.objects.filter(pk__in=ids).update(status=DeploymentStatus.RUNNING)
    lead = claimed[-1]
    force = any(d.force for d in claimed)

    disk = read_deployed_file()
    desired = render_current()
    active_ids = list(OfferedEntry.objects.active().values_list("pk", flat=True))
    last = Deployment.objects.last_deployed()
    expected = last.content if last else None
    drifted = disk is not None and disk != (expected if last else desired)
    fields = {
        "content": desired,
        "sha256": _sha256(desired),
        "previous_content": disk,
        "active_ids": active_ids,
    }
    if drifted and not force:
        _finish(
            claimed,
            lead,
            DeploymentStatus.DRIFT,
            diff=updates_cfg.unified_diff(
                expected or "",
                disk,
                "updates.cfg (deployed by the portal)",
                "updates.cfg (on disk now)",
            ),
            error=render("deploy_drift"),
            **fields,
        )
        return lead
    diff = updates_cfg.unified_diff(disk or "", desired)
    try:
        updates_cfg.validate(desired)
        write_atomically(path, desired)
    except (OSError, updates_cfg.ConfigProblem) as exc:
        error = render("deploy_write_failed", {"error": str(exc)})
        _fail(claimed, lead, diff=diff, error=error, outputs=[], **fields)
        return lead

    outputs, problem = _restart_and_check()
    if problem:
        error = render(problem, {"problem": _problem_text(outputs)})
        try:
            write_atomically(path, disk)
        except OSError as exc:
            error += " " + render("deploy_write_failed", {"error": str(exc)})
        again, _again_problem = _restart_and_check()
        outputs += [{**item, "step": f"{item['step']} (after restoring)"} for item in again]
        _fail(claimed, lead, diff=diff, error=error, outputs=outputs, **fields)
        return lead
    _finish(
        claimed,
        lead,
        DeploymentStatus.SUCCEEDED,
        diff=diff,
        outputs=outputs,
        restart_skipped=not settings.OATSLITE_RESTART_COMMAND,
        **fields,
    )
    return lead


def _finish(claimed, lead, status, **fields):
    now = timezone.now()
    with transaction.atomic():
        Deployment.objects.filter(pk=lead.pk).update(status=status, finished_at=now, **fields)
        others = [d.pk for d in claimed if d.pk != lead.pk]
        Deployment.objects.filter(pk__in=others).update(
            status=status if status == DeploymentStatus.DRIFT else DeploymentStatus.COALESCED,
            coalesced_into=lead,
            finished_at=now,
        )


def _fail(claimed, lead, *, error, **fields):
    """Record the failure and undo what the claimed requests changed, newest first."""
    with transaction.atomic():
        touched = set()
        for deployment in reversed(claimed):
            activated = deployment.changes.get("activated", [])
            deactivated = deployment.changes.get("deactivated", [])
            OfferedEntry.objects.filter(pk__in=activated).update(
                active=False, withdrawn_at=timezone.now()
            )
            OfferedEntry.objects.filter(pk__in=deactivated).update(active=True, withdrawn_at=None)
            touched |= set(activated) | set(deactivated)
        _undo_statuses(touched, lead)
        _finish(claimed, lead, DeploymentStatus.FAILED, error=error, **fields)
        for deployment in claimed:
            if deployment.pk != lead.pk:
                Deployment.objects.filter(pk=deployment.pk).update(
                    status=DeploymentStatus.FAILED, error=error
                )
    transaction.on_commit(
        lambda: mail_approvers(
            f"[XO portal] Deployment #{lead.pk} of updates.cfg failed", f"{error}\n"
        ),
        robust=True,
    )


def _undo_statuses(entry_ids, lead):
    """After an undo, a build whose promotion failed is published again; one whose
    withdrawal failed is offered again."""
    build_ids = set(
        OfferedEntry.objects.filter(pk__in=entry_ids, build__isnull=False).values_list(
            "build_id", flat=True
        )
    )
    offered = set(
        OfferedEntry.objects.filter(build_id__in=build_ids, active=True).values_list(
            "build_id", flat=True
        )
    )
    params = {"deployment": lead.pk}
    for build_id in build_ids:
        if build_id in offered:
            _set_build_status(
                build_id, BuildStatus.OFFERED, actor=None, code="deploy_undone", params=params
            )
        else:
            ever_live = Deployment.objects.filter(
                status=DeploymentStatus.SUCCEEDED, build_id=build_id, action="promote"
            ).exists()
            to = BuildStatus.WITHDRAWN if ever_live else BuildStatus.PUBLISHED
            _set_build_status(build_id, to, actor=None, code="deploy_undone", params=params)


def mail_approvers(subject: str, body: str) -> None:
    group = Group.objects.filter(name=roles.APPROVERS).first()
    recipients = (
        list(
            group.user_set.filter(is_active=True).exclude(email="").values_list("email", flat=True)
        )
        if group
        else []
    )
    if not recipients:
        log.warning("No approver has an e-mail address; not sent: %s", subject)
        return
    send_mail(subject, body, None, recipients, fail_silently=False)
