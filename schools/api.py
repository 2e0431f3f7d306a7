"""`POST /api/schools/checkin/`: a school server reports what it holds."""

import json

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services
from .checkin import MAX_BODY_BYTES, CheckinInvalid, parse_checkin
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
