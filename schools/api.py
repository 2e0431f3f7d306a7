"""`POST /api/schools/checkin/`: a school server reports what it holds.
`POST /api/laptops/report/`: laptops' reports, as Inventario takes them."""

import json

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from portal import roles
from portal.access import machine_view

from . import services
from .checkin import MAX_BODY_BYTES, CheckinInvalid, parse_checkin
from .laptop_reports import (
    MAX_BATCH_BYTES,
    MAX_FORM_BYTES,
    ReportInvalid,
    parse_batch,
    parse_form,
)
from .models import SchoolServer


def _error(message, status, **headers):
    return JsonResponse({"error": message}, status=status, headers=headers)


@login_not_required
@csrf_exempt
@require_POST
def checkin(request):
    """Authenticated by the server's own token (`Authorization: Bearer <token>`); the body
    is checked strictly and nothing is stored unless all of it is right. Answers are in
    English: they are read by the school server's administrator in its logs."""
    scheme, _sep, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return _error(
            "Send the server's token: Authorization: Bearer <token>.",
            401,
            **{"WWW-Authenticate": "Bearer"},
        )
    server = SchoolServer.objects.by_token(key.strip())
    if server is None:
        return _error("Unknown or revoked token.", 401, **{"WWW-Authenticate": "Bearer"})
    if not server.active:
        return _error(f"{server.hostname} is marked inactive in the portal.", 403)
    if request.content_type != "application/json":
        return _error("Send the report as application/json.", 415)
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return _error(f"The report must be at most {MAX_BODY_BYTES} bytes.", 413)
    body = request.body
    try:
        report = parse_checkin(body)
    except CheckinInvalid as problem:
        return _error(f"Invalid report: {problem}.", 400)
    if report["hostname"] != server.hostname:
        return _error(f"This token belongs to {server.hostname}, not {report['hostname']}.", 403)
    services.checkin_record(server=server, report=report, body=json.loads(body))
    return JsonResponse({"ok": True, "hostname": server.hostname, "builds": len(report["builds"])})


FORM = "application/x-www-form-urlencoded"


@csrf_exempt
@require_POST
@machine_view(role=roles.REPORTERS)
def laptop_report(request):
    """One report as Inventario's form (`POST /connection_events/report`, so oatslite or a
    relay posts here unchanged), or a batch as a JSON list of the same objects; by an
    account in the reporters group (HTTP Basic, or its API token). Nothing of a batch is
    stored unless every item is right. A repeat is answered 200 and changes nothing.
    Answers are in English, like the check-in's: they end up in the sender's logs."""
    now = timezone.now()
    if request.content_type not in (FORM, "application/json"):
        return _error(
            f"Send one report as {FORM} (Inventario's form) or a batch as an "
            "application/json list of reports.",
            415,
        )
    limit = MAX_FORM_BYTES if request.content_type == FORM else MAX_BATCH_BYTES
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > limit:
        return _error(f"The body must be at most {limit} bytes.", 413)
    try:
        if request.content_type == FORM:
            reports = [parse_form(request.body, now=now)]
        else:
            reports = parse_batch(request.body, now=now)
    except ReportInvalid as problem:
        return _error(f"Invalid report: {problem}.", 400)
    result = services.laptop_reports_record(reports=reports, received_at=now)
    return JsonResponse(
        {
            "ok": True,
            "received": result.received,
            "stored": result.stored,
            "repeats": result.repeats,
        }
    )
