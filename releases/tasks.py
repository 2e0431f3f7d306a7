"""Celery tasks: a thin interface to `services`. They take ids, re-fetch, and let the
service's conditional claim decide whether there is anything to do, so a redelivered
message is harmless."""

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from . import promotion, recheck, services

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
def sweep_stuck_builds() -> dict:
    return services.sweep_stuck_builds()


@shared_task(**RETRY)
def apply_deployments() -> int | None:
    deployment = promotion.apply_deployments()
    return deployment.pk if deployment else None
