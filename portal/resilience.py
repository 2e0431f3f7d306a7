"""Answer cleanly while the database is away (restarted, failing over, unreachable): a short
503 with Retry-After instead of a 500 page, so school servers and browsers simply try again.

Listed in MIDDLEWARE before the session and auth middleware. A database error is caught
where it surfaces: loading the user before the view (`process_view`), in the view
(`process_exception`), or anywhere else in the chain (remembered from the
`got_request_exception` signal and turned from a 500 into a 503 on the way out).
"""

import logging
import sys

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _

log = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5


def database_unavailable(request, error) -> HttpResponse:
    # With its traceback: the same errors also mean a missing table or a deadlock, which
    # must not pass for an outage unseen.
    log.error(
        "database unavailable for %s %s: %s",
        request.method,
        request.path,
        str(error).strip(),
        exc_info=error,
    )
    message = _("The database is unavailable; try again in a moment.")
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith(("/api/", "/healthz")) or "json" in request.headers.get(
        "Accept", ""
    ):
        return JsonResponse({"error": message}, status=503, headers=headers)
    return HttpResponse(
        message, status=503, content_type="text/plain; charset=utf-8", headers=headers
    )


@receiver(got_request_exception)
def _remember_database_error(sender, request=None, **kwargs):
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DATABASE_ERRORS):
        request.database_error = error


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        error = getattr(request, "database_error", None)
        if error is not None and response.status_code == 500:
            return database_unavailable(request, error)
        return response

    def process_view(self, request, view, args, kwargs):
        # The login check after this needs the session and the user: load them here, where
        # a failure can still be answered cleanly.
        user = getattr(request, "user", None)
        if user is None:
            return None
        try:
            user.is_authenticated  # noqa: B018 - evaluates the lazy user
        except DATABASE_ERRORS as error:
            return database_unavailable(request, error)
        return None

    def process_exception(self, request, exception):
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable(request, exception)
        return None
