"""The audit trail, and the one function that changes a build's state.

Every action name an audit row can carry is an `AuditAction`. Every write of `Build.status`
is `build_transition`: a conditional UPDATE from the states the caller expects, checked
against `models.BUILD_TRANSITIONS`, with its audit row in the same transaction. A call that
finds the build elsewhere (someone else got there first) changes nothing and returns None.
"""

from django.db import models, transaction

from .models import BUILD_TRANSITIONS, AuditEvent, Build


class AuditAction(models.TextChoices):
    STATUS = "status"  # a build's state changed (from_status → to_status)
    UPLOAD = "upload"
    NOTE = "note"  # something worth knowing that changed no state
    CONTENTS_HASH = "contents_hash"
    XO_HELPER = "xo_helper"  # a one-time link for an XO to compute the contents hash
    SELF_APPROVAL = "self_approval"
    COVERAGE_OVERRIDE = "coverage_override"
    IMPACT_OVERRIDE = "impact_override"  # promoted with privileged changes or a large update
    STOP_ALL = "stop_all"
    IMPORT_CFG = "import_cfg"
    RECHECK = "recheck"
    RECALL = "recall"
    # School servers: what feeds the promotion gate or lets a server report.
    TOKEN_ROTATION = "token_rotation"  # noqa: S105 (an action name)
    SERVERS_IMPORT = "servers_import"
    SERVER_EDIT = "server_edit"
    USB_KIT = "usb_kit"  # a build's USB kit downloaded or written to a stick


def audit(
    *, action: AuditAction, actor=None, build=None, build_id=None, code="", params=None, **statuses
) -> AuditEvent:
    """One audit row (about `build`, or the build `build_id`, or none). `from_status` and
    `to_status` are for STATUS rows, which only `build_transition` writes."""
    return AuditEvent.objects.create(
        build_id=build.pk if build is not None else build_id,
        actor=actor,
        action=AuditAction(action),
        code=code,
        params=params or {},
        from_status=statuses.get("from_status", ""),
        to_status=statuses.get("to_status", ""),
    )


class TransitionNotAllowed(ValueError):
    """A programming error: the code asked for a change the state table does not have."""


def build_transition(build_id, *, from_statuses, to, actor=None, code="", params=None, **fields):
    """Move a build from one of `from_statuses` to `to`, with `fields`, atomically and
    audited. Returns the build as it is now, or None when it was in none of those states.

    A `from_statuses` entry equal to `to` is ignored (nothing to change)."""
    sources = [status for status in from_statuses if status != to]
    for source in sources:
        if to not in BUILD_TRANSITIONS.get(source, ()):
            raise TransitionNotAllowed(f"{source} → {to}")
    params = params or {}
    with transaction.atomic():
        row = (
            Build.objects.select_for_update()
            .filter(pk=build_id, status__in=sources)
            .only("pk", "status")
            .first()
        )
        if row is None:
            return None
        # Conditional on the state just read: without row locks (SQLite) two callers may
        # both read it, and only one of them may change it.
        changed = Build.objects.filter(pk=build_id, status=row.status).update(
            status=to, status_code=code, status_params=params, **fields
        )
        if changed != 1:
            return None
        audit(
            build=row,
            actor=actor,
            action=AuditAction.STATUS,
            code=code,
            params=params,
            from_status=row.status,
            to_status=to,
        )
        # Imported here: `notify` reads the audit trail, so it imports this module.
        from .notify import NOTIFIED_STATUSES, enqueue_build_notify

        if to in NOTIFIED_STATUSES:
            # Whom this concerns is told once it commits.
            enqueue_build_notify(build_id)
        return Build.objects.get(pk=build_id)
