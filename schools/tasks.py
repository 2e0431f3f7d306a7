from celery import shared_task

from . import services


@shared_task
def follow_rsyncd_log() -> int:
    """Read what the mothership's rsyncd log gained since last time (RSYNCD_LOG)."""
    return services.rsync_log_follow()
