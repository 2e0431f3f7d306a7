"""`/metrics` for Prometheus: what the database and the broker say at scrape time.

Each app registers the function that yields its metric families (`register`, from its
AppConfig.ready), so the portal serves them without knowing the apps. Everything is read
from the database or the broker on each scrape, never from a process's memory: gunicorn and
Celery run many processes, and a counter in one of them would say nothing about the others.
"""

import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .celery import app as celery_app
from .security import client_ip

log = logging.getLogger(__name__)

_SOURCES = []


def register(source) -> None:
    """`source()` yields prometheus_client metric families; registered once per app."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def queue_names() -> list[str]:
    routes = getattr(settings, "CELERY_TASK_ROUTES", {})
    return sorted(
        {settings.CELERY_TASK_DEFAULT_QUEUE} | {route["queue"] for route in routes.values()}
    )


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each queue: LLEN on Redis, files in the folder for the
    filesystem broker. None when the broker does not answer."""
    names = queue_names()
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            if conn.transport.driver_type == "filesystem":
                folder = conn.transport_options.get("data_folder_in", "")
                files = os.listdir(folder) if os.path.isdir(folder) else []
                # kombu names each message "<time>_<uuid>.<queue>.msg".
                return {
                    name: sum(1 for f in files if f.partition(".")[2] == f"{name}.msg")
                    for name in names
                }
            client = conn.default_channel.client
            return {name: int(client.llen(name)) for name in names}
    except Exception as exc:
        log.warning("metrics: the broker did not answer: %s", exc)
        return None


class _Collector:
    def collect(self):
        broker = queue_lengths()
        up = GaugeMetricFamily("xo_broker_up", "1 when the broker answered this scrape.")
        up.add_metric([], 1 if broker is not None else 0)
        yield up
        if broker is not None:
            queues = GaugeMetricFamily(
                "xo_queue_length", "Messages waiting in each Celery queue.", labels=["queue"]
            )
            for name, length in broker.items():
                queues.add_metric([name], length)
            yield queues
        for source in _SOURCES:
            yield from source()


def allowed(request) -> bool:
    """A bearer token equal to METRICS_TOKEN, or an address in METRICS_ALLOWED_IPS. With
    neither configured, nobody (monitoring data is not for the whole network)."""
    if settings.METRICS_TOKEN:
        scheme, _sep, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            key.strip().encode(), settings.METRICS_TOKEN.encode()
        ):
            return True
    if settings.METRICS_ALLOWED_IPS:
        address = client_ip(request)
        if address is not None:
            ip = ipaddress.ip_address(address)
            return any(ip in network for network in settings.METRICS_ALLOWED_IPS)
    return False


@login_not_required
@never_cache
@require_GET
def metrics(request):
    if not allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain; charset=utf-8")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    # The classic text format: every Prometheus version reads it, and our names need
    # nothing newer.
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
