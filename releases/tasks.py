"""Celery tasks: a thin interface to `services`, `deploy` and `recheck`. They take ids,
re-fetch, and let the service's conditional claim decide whether there is anything to do, so
a redelivered message is harmless."""

from datetime import timedelta
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError
from django.utils import timezone

from . import deploy, notify, recheck, resumable, services, unpack, uploads

TRANSIENT = (DatabaseError, InterfaceError, OSError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 5, "retry_backoff_max": 120, "max_retries": 5}


@shared_task(**RETRY)
def validate_build(build_id: int) -> bool:
    return services.build_validate(build_id=build_id)


@shared_task(**RETRY)
def publish_build(build_id: int) -> bool:
    return services.build_publish(build_id=build_id)


@shared_task(**RETRY)
def remove_build_files(build_id: int) -> bool:
    return recheck.build_remove_files(build_id=build_id)


@shared_task
def sweep(now=None) -> dict:
    """Every minute (beat): work a lost message or a killed worker left behind."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SWEEPER_STALE_AFTER)
    return {
        **services.sweep_stuck_builds(now=now),
        "deploy": deploy.sweep_deployments(stale=stale),
        "recall": recheck.sweep_recalls(stale=stale),
        "abandoned_uploads": uploads.remove_abandoned(
            Path(settings.UPLOAD_TEMP_DIR), now=now.timestamp()
        ),
        "expired_resumable_uploads": resumable.sweep_resumable(now=now),
        # A worker killed mid-validation leaves an unpacked tree; nobody holds its lock.
        "validation_scratch": unpack.sweep_scratch(
            settings.VALIDATION_SCRATCH_DIR, older_than=settings.SWEEPER_STALE_AFTER
        ),
    }


@shared_task(**RETRY)
def apply_deployments() -> int | None:
    deployment = deploy.apply_deployments()
    return deployment.pk if deployment else None


# SMTP errors are OSErrors (smtplib.SMTPException is one): retried; the claim was given back.
@shared_task(**RETRY)
def notify_build(build_id: int) -> int:
    return notify.build_notify(build_id=build_id)


@shared_task(**RETRY)
def notify_sweep() -> dict:
    """Every few minutes (beat): mail what is still unsent, and coverage reached."""
    return notify.sweep()
