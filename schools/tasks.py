from celery import shared_task
from django.db import DatabaseError

from . import notify, services


@shared_task
def follow_rsyncd_log() -> int:
    """Read what the mothership's rsyncd log gained since last time (RSYNCD_LOG)."""
    return services.rsync_log_follow()


@shared_task(autoretry_for=(DatabaseError, OSError), retry_backoff=30, max_retries=3)
def servers_digest() -> int:
    """Often (beat); mails the coordinators' daily digest once it is due (`notify`)."""
    return notify.servers_digest()
