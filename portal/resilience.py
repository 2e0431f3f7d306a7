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
    # Only outages get here (is_outage); faults of a query or the schema stay 500s.
    log.warning(
        "database unavailable for %s %s: %s", request.method, request.path, str(error).strip()
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


# PostgreSQL's SQLSTATEs for "the server is not there": class 08 (connection exception)
# and the shutdown family of class 57.
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_outage(error) -> bool:
    """Whether a database error means the database cannot be reached (answer 503 and let
    the client retry), rather than a fault of the query or the schema: a missing table, a
    deadlock or a statement timeout stay ordinary 500s, with their report to the admins."""
    if not isinstance(error, DATABASE_ERRORS):
        return False
    cause = error.__cause__ or error
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    if "sqlite" in type(cause).__module__:
        # SQLite has no server: only a busy database or an unreadable file is an outage.
        text = str(error).lower()
        return "locked" in text or "unable to open" in text
    # No SQLSTATE from a server: the client library could not reach it (refused, reset,
    # closed, timed out).
    return True


@receiver(got_request_exception)
def _remember_database_error(sender, request=None, **kwargs):
    error = sys.exc_info()[1]
    if request is not None and is_outage(error):
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
            if not is_outage(error):
                raise
            return database_unavailable(request, error)
        return None

    def process_exception(self, request, exception):
        if is_outage(exception):
            return database_unavailable(request, exception)
        return None
