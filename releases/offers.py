"""What updates.cfg should offer: promotion requests and the previews approvers confirm.

The database says what is offered (active `OfferedEntry` rows). Every request here (promote,
withdraw, stop everything, roll back, import a hand-written file, overwrite hand edits)
checks its rules, changes those rows and the builds' states, audits, and queues a
`Deployment` that `deploy.apply_deployments` carries out after commit.

Callers authorise (`access`: approvers only); these functions enforce the rules about the
build and the file (four-eyes, states, coverage, one entry per contents hash).
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from portal.humanize import percent
from schools.selectors import build_coverage

from . import deploy, impact, notify, updates_cfg
from .audit import AuditAction, audit, build_transition
from .deploy import builds_follow_entries, read_deployed_file, render_current
from .models import (
    Build,
    BuildStatus,
    Deployment,
    DeploymentAction,
    DeploymentStatus,
    OatsliteState,
    OfferedEntry,
)
from .reasons import Refused, render

# --- Previews ---------------------------------------------------------------------------------


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
    # Why this approver cannot promote this build at all (shown instead of the form).
    blocker: Refused | None = None
    # The diff against the build laptops would update from (`impact.promotion_diff`), and
    # why it needs a written reason if it does.
    impact: dict | None = None
    impact_refusal: Refused | None = None


def promotion_blocker(*, build: Build, acting_user) -> Refused | None:
    """Why `acting_user` cannot promote `build` whatever they fill in, or None: their own
    build (four-eyes), not published, flagged by the recheck, no contents hash. The build
    page shows it beside a disabled Promote button; `build_promote` raises it."""
    if acting_user.pk == build.uploaded_by_id and not settings.ALLOW_SELF_APPROVAL:
        return Refused("promote_own_build")
    if build.status not in (BuildStatus.PUBLISHED, BuildStatus.WITHDRAWN):
        return Refused("promote_not_published", status=build.get_status_display())
    if build.recheck_code:
        return Refused("promote_flagged", reason=build.recheck_detail)
    if not build.contents_hash:
        return Refused("promote_no_hash")
    return None


def _hash_clash(build: Build) -> Refused | None:
    clash = OfferedEntry.objects.active().filter(section=build.contents_hash).first()
    if clash:
        return Refused("promote_duplicate_hash", section=clash.section, name=clash.name)
    return None


def promotion_preview(*, build: Build, acting_user, priority: str) -> PromotionPreview:
    """The file as it would be, the coverage, and what blocks the promotion if anything
    does (then no file is rendered: a build without a hash has no section to show)."""
    coverage = build_coverage(build)
    current = read_deployed_file() or ""
    blocker = promotion_blocker(build=build, acting_user=acting_user) or _hash_clash(build)
    diff = impact.promotion_diff(build)
    impact_fields = {"impact": diff, "impact_refusal": impact.impact_refusal(diff)}
    if blocker is not None:
        return PromotionPreview(
            build=build,
            current=current,
            proposed=current,
            diff="",
            coverage=coverage,
            needs_reason=_below_minimum(coverage),
            blocker=blocker,
            **impact_fields,
        )
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
        **impact_fields,
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


def _queue(*, action, actor, build=None, reason="", activated=(), deactivated=(), force=False):
    deployment = Deployment.objects.create(
        action=action,
        build=build,
        requested_by=actor,
        reason=reason,
        force=force,
        changes={"activated": list(activated), "deactivated": list(deactivated)},
    )
    deploy.enqueue_apply()
    return deployment


def build_promote(*, build: Build, acting_user, priority: str = "", reason: str = "") -> Deployment:
    """Offer a published build to the laptops.

    1. Rules: approvers only; never the build's own uploader (unless ALLOW_SELF_APPROVAL,
       audited); published with a contents hash; an allowed priority; coverage at least
       PROMOTION_MIN_COVERAGE or a written reason; no privileged changes and no large
       update against the build laptops have (`impact`) or a written reason; a contents
       hash not already offered; and a resulting file that oatslite can read.
    2. Add the entry below every other one, mark the build offered, audit (each gate the
       reason overrode too), queue a deployment.
    """
    priority = priority or settings.OATSLITE_PRIORITIES[0]
    reason = (reason or "").strip()
    self_approval = acting_user.pk == build.uploaded_by_id
    # Diffing a large tree takes a moment: done before the row lock, and again inside only
    # if the build laptops would update from changed meanwhile.
    diff = impact.promotion_diff(build)
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build.pk)
        blocker = promotion_blocker(build=build, acting_user=acting_user)
        if blocker is not None:
            raise blocker
        if priority not in settings.OATSLITE_PRIORITIES:
            raise Refused(
                "promote_priority",
                priority=priority,
                allowed=", ".join(settings.OATSLITE_PRIORITIES),
            )
        coverage = build_coverage(build)
        if _below_minimum(coverage) and not reason:
            raise Refused(
                "promote_reason_required",
                coverage=coverage.percent_label,
                minimum=percent(settings.PROMOTION_MIN_COVERAGE),
            )
        baseline = impact.diff_baseline(build)
        if (baseline.name if baseline else None) != (diff["old"] if diff else None):
            diff = impact.promotion_diff(build)
        impact_gate = impact.impact_refusal(diff)
        if impact_gate is not None and not reason:
            raise impact_gate
        clash = _hash_clash(build)
        if clash is not None:
            raise clash
        entry = _new_entry(build, priority)
        try:
            updates_cfg.validate(render_current(extra=[entry]))
        except updates_cfg.ConfigProblem as exc:
            raise Refused("config_invalid", error=str(exc)) from None

        last = OfferedEntry.objects.aggregate(top=Max("position"))["top"] or 0
        entry.position = last + 1
        entry.promoted_by = acting_user
        entry.build_uploader_id = build.uploaded_by_id
        entry.self_approved = self_approval
        entry.coverage = coverage.share
        entry.reason = reason
        entry.save()
        build_transition(
            build.pk,
            from_statuses=[BuildStatus.PUBLISHED, BuildStatus.WITHDRAWN],
            to=BuildStatus.OFFERED,
            actor=acting_user,
            code="promoted",
            params={"priority": priority},
        )
        if self_approval:
            audit(
                build=build,
                actor=acting_user,
                action=AuditAction.SELF_APPROVAL,
                code="promoted_self",
            )
        if reason and _below_minimum(coverage):
            audit(
                build=build,
                actor=acting_user,
                action=AuditAction.COVERAGE_OVERRIDE,
                code="coverage_override",
                params={"reason": reason},
            )
        if reason and impact_gate is not None:
            audit(
                build=build,
                actor=acting_user,
                action=AuditAction.IMPACT_OVERRIDE,
                code="impact_override",
                params={
                    "reason": reason,
                    "against": diff["old"],
                    "privileged": diff["privileged"]["count"],
                    "share": percent(diff["changed_share"]),
                    "large_update": diff["large_update"],
                },
            )
        return _queue(
            action=DeploymentAction.PROMOTE,
            actor=acting_user,
            build=build,
            reason=reason,
            activated=[entry.pk],
        )


def build_withdraw(*, build: Build, acting_user, reason: str = "") -> Deployment:
    """Stop offering one build: its entry leaves updates.cfg. The console and the command
    line ask for the `reason`; it is kept on the deployment and in the build's history."""
    reason = (reason or "").strip()
    with transaction.atomic():
        entries = list(OfferedEntry.objects.select_for_update().filter(build=build, active=True))
        if not entries:
            raise Refused("withdraw_not_offered")
        ids = [entry.pk for entry in entries]
        OfferedEntry.objects.filter(pk__in=ids).update(active=False, withdrawn_at=timezone.now())
        build_transition(
            build.pk,
            from_statuses=[BuildStatus.OFFERED],
            to=BuildStatus.WITHDRAWN,
            actor=acting_user,
            code="withdrawn_because" if reason else "withdrawn",
            params={"reason": reason} if reason else None,
        )
        return _queue(
            action=DeploymentAction.WITHDRAW,
            actor=acting_user,
            build=build,
            reason=reason,
            deactivated=ids,
        )


def offers_stop_all(*, acting_user, reason: str = "") -> Deployment:
    """Emergency: offer nothing at all. One approver is enough; it is audited and every
    approver is told by e-mail."""
    with transaction.atomic():
        entries = list(OfferedEntry.objects.select_for_update().filter(active=True))
        ids = [entry.pk for entry in entries]
        OfferedEntry.objects.filter(pk__in=ids).update(active=False, withdrawn_at=timezone.now())
        for build_id in {entry.build_id for entry in entries if entry.build_id}:
            build_transition(
                build_id,
                from_statuses=[BuildStatus.OFFERED],
                to=BuildStatus.WITHDRAWN,
                actor=acting_user,
                code="stopped_all",
            )
        audit(actor=acting_user, action=AuditAction.STOP_ALL, code="stopped_all")
        deployment = _queue(
            action=DeploymentAction.STOP_ALL, actor=acting_user, reason=reason, deactivated=ids
        )
        notify.deployment_notify_on_commit(deployment.pk)
        return deployment


def deployment_rollback(*, deployment: Deployment, acting_user, reason: str = "") -> Deployment:
    """Go back to what an earlier successful deployment offered, through the same path. The
    console asks for the `reason`; the new deployment keeps it and what it restores."""
    if deployment.status != DeploymentStatus.SUCCEEDED:
        raise Refused("rollback_not_deployed")
    last = Deployment.objects.last_deployed()
    if last is not None and last.pk == deployment.pk:
        raise Refused("rollback_on_disk", deployment=deployment.pk)
    with transaction.atomic():
        wanted = set(deployment.active_ids)
        current = set(OfferedEntry.objects.filter(active=True).values_list("pk", flat=True))
        activate, deactivate = wanted - current, current - wanted
        now = timezone.now()
        OfferedEntry.objects.filter(pk__in=deactivate).update(active=False, withdrawn_at=now)
        OfferedEntry.objects.filter(pk__in=activate).update(active=True, withdrawn_at=None)
        builds_follow_entries(
            activate | deactivate,
            actor=acting_user,
            code="rolled_back",
            params={"deployment": deployment.pk},
        )
        return _queue(
            action=DeploymentAction.ROLLBACK,
            actor=acting_user,
            reason=(reason or "").strip() or f"#{deployment.pk}",
            activated=sorted(activate),
            deactivated=sorted(deactivate),
        )


def updates_cfg_import(*, text: str, acting_user) -> Deployment:
    """Adopt a hand-written updates.cfg: its preamble and entries, in order, become what the
    database offers. Entries naming a build the portal knows are linked to it; the others
    are kept as legacy entries. Each keeps its exact text, so the file renders unchanged.

    The text is what oatslite runs now, so it is recorded as deployed without writing or
    restarting anything. Approvers' requests that never reached the file (a promotion or a
    withdrawal after the last deployment, stopped by the hand edit) are not dropped: they
    are kept over the imported file, named in the history, and deployed by a follow-up
    request (`DeploymentAction.REAPPLY`)."""
    parsed = updates_cfg.parse(text)
    updates_cfg.validate(text)
    with transaction.atomic():
        state = OatsliteState.get()
        state.preamble = parsed.preamble
        state.save(update_fields=["preamble"])
        last_deployed = Deployment.objects.last_deployed()
        on_disk = set(last_deployed.active_ids) if last_deployed else set()
        sections = {entry.section for entry in parsed.entries}
        active = list(OfferedEntry.objects.select_for_update().filter(active=True))
        # Promoted since the last deployment, and not in the file: the approver's still.
        kept = [
            row
            for row in active
            if row.build_id and row.pk not in on_disk and row.section not in sections
        ]
        # Withdrawn since the last deployment, but the file still offers it.
        withdrawn = {
            row.section: row
            for row in OfferedEntry.objects.filter(
                pk__in=on_disk, active=False, build__isnull=False
            )
            if row.section in sections
        }
        previous = {row.pk for row in active} - {row.pk for row in kept}
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
        # The kept promotions go below the imported entries, as new promotions always do.
        for offset, row in enumerate(kept, start=last + len(created) + 1):
            OfferedEntry.objects.filter(pk=row.pk).update(position=offset)
        again_withdrawn = [row.pk for row in created if row.section in withdrawn]
        builds_follow_entries(set(ids) | previous, actor=acting_user, code="imported")
        kept_names = sorted(row.name for row in kept)
        withdrawn_names = sorted(row.name for row in withdrawn.values())
        audit(
            actor=acting_user,
            action=AuditAction.IMPORT_CFG,
            code="imported",
            params={"kept": kept_names, "withdrawn": withdrawn_names},
        )
        deployment = Deployment.objects.create(
            action=DeploymentAction.IMPORT,
            requested_by=acting_user,
            changes={"activated": ids, "deactivated": sorted(previous)},
            status=DeploymentStatus.SUCCEEDED,
            content=text,
            sha256=deploy.sha256_text(text),
            previous_content=text,
            active_ids=ids,
            restart_skipped=True,
            finished_at=timezone.now(),
        )
        if kept or again_withdrawn:
            params = {
                "promoted": ", ".join(kept_names) or "-",
                "withdrawn": ", ".join(withdrawn_names) or "-",
            }
            OfferedEntry.objects.filter(pk__in=again_withdrawn).update(
                active=False, withdrawn_at=timezone.now()
            )
            builds_follow_entries(
                again_withdrawn, actor=acting_user, code="kept_over_import", params=params
            )
            for row in kept:
                audit(
                    build_id=row.build_id,
                    actor=acting_user,
                    action=AuditAction.NOTE,
                    code="kept_over_import",
                    params=params,
                )
            _queue(
                action=DeploymentAction.REAPPLY,
                actor=acting_user,
                reason=render("kept_over_import", params),
                activated=[row.pk for row in kept],
                deactivated=again_withdrawn,
            )
        return deployment


def overwrite_drift(*, acting_user) -> Deployment:
    """Write what the database says over a hand-edited file (the hand edits are lost; they
    stay visible in the drift record)."""
    with transaction.atomic():
        return _queue(action=DeploymentAction.OVERWRITE, actor=acting_user, force=True)
