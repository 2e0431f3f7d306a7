import os

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import notifications, services
from .celery import app as celery_app
from .forms import NotificationsForm

PING_TIMEOUT = 1.0


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return False, type(exc).__name__
    return True, connection.vendor


def _broker_ok() -> tuple[bool, str]:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            driver = conn.transport.driver_type
            if driver == "filesystem":
                # "Connecting" to the filesystem broker always works; a message can only be
                # sent if its folder is there and writable.
                folder = conn.transport_options.get("data_folder_out", "")
                if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                    return False, "the broker's folder is missing or not writable"
            return True, driver
    except Exception as exc:
        return False, type(exc).__name__


def _workers() -> list[str]:
    try:
        replies = celery_app.control.ping(timeout=PING_TIMEOUT) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """For monitoring: 200 when the database and broker answer, 503 otherwise. Workers
    are reported but do not fail the check (a worker restart should not page anyone)."""
    db_ok, db_info = _database_ok()
    broker_ok, broker_info = _broker_ok()
    workers = _workers() if broker_ok else []
    body = {
        "status": "ok" if db_ok and broker_ok else "error",
        "database": {"ok": db_ok, "detail": db_info},
        "broker": {"ok": broker_ok, "detail": broker_info},
        "workers": {"ok": bool(workers), "names": workers},
    }
    return JsonResponse(
        body, status=200 if db_ok and broker_ok else 503, json_dumps_params={"indent": 1}
    )


def profile(request):
    """The user's own page: which kinds of e-mail they get (all of their roles' kinds
    unless turned off here)."""
    kinds = notifications.kinds_for(request.user)
    off = notifications.turned_off(request.user)
    # Not `request.POST or None`: a form with every box unticked posts nothing at all.
    data = request.POST if request.method == "POST" else None
    form = NotificationsForm(data, kinds=kinds, off=off)
    if request.method == "POST" and form.is_valid():
        services.notification_kinds_set(
            acting_user=request.user, user=request.user, off=form.turned_off()
        )
        messages.success(request, _("Your notification choices are saved."))
        return redirect("profile")
    return render(request, "portal/profile.html", {"form": form})
