"""The deployment engine: bring oatslite's updates.cfg in line with what the database offers.

`offers` records what should be offered and queues a `Deployment`; `apply_deployments` (queue
mothership, one at a time under a file lock) renders the file from the database, stops on a
hand edit (drift), writes it atomically, restarts oatslite and checks it, and on any failure
puts the previous file back, restarts again, undoes the requests it was applying and e-mails
the approvers (`notify`). A build's offered/withdrawn state follows its entries
(`builds_follow_entries`). It checks nobody's rights: it only carries out what authorised
callers of `offers` decided.
"""

import contextlib
import fcntl
import hashlib
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal import commands

from . import notify, updates_cfg
from .audit import build_transition
from .files import write_atomically
from .models import (
    BuildStatus,
    Deployment,
    DeploymentAction,
    DeploymentStatus,
    OatsliteState,
    OfferedEntry,
)
from .reasons import render

DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "oatslite" / "entry.cfg"


# --- What the database offers, as a file ----------------------------------------------------


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


def render_current(extra: list[OfferedEntry] = ()) -> str:
    """The updates.cfg the database implies, optionally with an entry not saved yet."""
    rows = [*OfferedEntry.objects.active(), *extra]
    return updates_cfg.render(
        OatsliteState.get().preamble, [_as_entry(row) for row in rows], entry_template()
    )


def read_deployed_file() -> str | None:
    path = Path(settings.OATSLITE_UPDATES_CFG)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def waiting_reason(entry_ids) -> str:
    """Why entries the database offers are not in updates.cfg yet ("" when they all are):
    stopped by a hand edit, or a deployment still to run."""
    last = Deployment.objects.last_deployed()
    if set(entry_ids) <= set(last.active_ids if last else ()):
        return ""
    latest = Deployment.objects.order_by("-id").first()
    if latest is not None and latest.status == DeploymentStatus.DRIFT:
        return render("offer_waiting_drift")
    return render("offer_waiting_deploy")


def undeployed_entry_ids() -> set[int]:
    """Active entries that the last successful deployment did not write."""
    last = Deployment.objects.last_deployed()
    active = set(OfferedEntry.objects.active().values_list("pk", flat=True))
    return active - set(last.active_ids if last else ())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builds_follow_entries(entry_ids, *, actor, code, params=None, undo=False):
    """A build is offered exactly when one of its entries is active: move the builds of
    `entry_ids` to match. A build no entry offers any more becomes withdrawn; after an `undo`
    (a failed deployment) one that was never deployed as offered is published again."""
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
    for build_id in sorted(build_ids):
        if build_id in offered:
            to, sources = BuildStatus.OFFERED, [BuildStatus.PUBLISHED, BuildStatus.WITHDRAWN]
        elif undo:
            ever_live = Deployment.objects.filter(
                status=DeploymentStatus.SUCCEEDED,
                build_id=build_id,
                action=DeploymentAction.PROMOTE,
            ).exists()
            to = BuildStatus.WITHDRAWN if ever_live else BuildStatus.PUBLISHED
            sources = [BuildStatus.OFFERED, BuildStatus.WITHDRAWN]
        else:
            to, sources = BuildStatus.WITHDRAWN, [BuildStatus.OFFERED]
        build_transition(
            build_id, from_statuses=sources, to=to, actor=actor, code=code, params=params
        )


# --- Applying ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        "sha256": sha256_text(desired),
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
        builds_follow_entries(
            touched, actor=None, code="deploy_undone", params={"deployment": lead.pk}, undo=True
        )
        _finish(claimed, lead, DeploymentStatus.FAILED, error=error, **fields)
        for deployment in claimed:
            if deployment.pk != lead.pk:
                Deployment.objects.filter(pk=deployment.pk).update(
                    status=DeploymentStatus.FAILED, error=error
                )
    notify.deployment_notify_on_commit(lead.pk)


def sweep_deployments(*, stale) -> int:
    """Send again a request nobody picked up (a lost message), or one a killed worker left
    running (its file lock died with it), if older than `stale`. Returns 1 if it did."""
    waiting = Deployment.objects.filter(
        status__in=[DeploymentStatus.PENDING, DeploymentStatus.RUNNING], requested_at__lt=stale
    )
    if not waiting.exists():
        return 0
    waiting.filter(status=DeploymentStatus.RUNNING).update(status=DeploymentStatus.PENDING)
    enqueue_apply()
    return 1


def enqueue_apply() -> None:
    """Apply the waiting requests once the caller's transaction commits. robust: a broker
    outage must not undo a request; the sweeper sends it later."""
    from .tasks import apply_deployments

    transaction.on_commit(apply_deployments.delay, robust=True)
