"""Logging in, throttled against password guessing (LOGIN_FAILURE_* in the settings).

Attempts are rows in the database, so every gunicorn process counts the same failures.
"""

import logging
import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.utils import timezone
from django.utils.translation import ngettext

from .models import LoginAttempt, LoginLockout
from .security import client_ip

log = logging.getLogger(__name__)


def normal_username(raw: str) -> str:
    """The key failures are counted under: case and surrounding spaces do not make a new one."""
    return raw.strip().casefold()[: LoginAttempt._meta.get_field("username").max_length]


def _window_start(now):
    return now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW)


def login_attempt_start(*, username: str, ip: str | None) -> LoginAttempt | None:
    """Claim one password check for `username` from `ip`, or None when either is over its
    limit.

    1. Prune rows older than the window.
    2. Record the attempt first, then count: concurrent attempts in other processes see each
       other's rows, so no more than the limit are checked however many arrive at once.
    3. Over a limit: withdraw the row (a refused attempt checks no password, so it is not a
       failure) and refuse."""
    now = timezone.now()
    since = _window_start(now)
    LoginAttempt.objects.filter(at__lt=since).delete()
    attempt = LoginAttempt.objects.create(username=username, ip=ip, at=now)
    by_user, by_ip = LoginAttempt.objects.counts(username=username, ip=ip, since=since)
    if by_user > settings.LOGIN_FAILURE_LIMIT or by_ip > settings.LOGIN_FAILURE_IP_LIMIT:
        attempt.delete()
        return None
    return attempt


def login_failed(*, attempt: LoginAttempt) -> None:
    """The password was wrong: the attempt's row stays and counts. Reaching a limit is
    recorded once, as a `LoginLockout` (refusals after it are only logged, so a flood writes
    no rows)."""
    since = _window_start(timezone.now())
    by_user, by_ip = LoginAttempt.objects.counts(
        username=attempt.username, ip=attempt.ip, since=since
    )
    locked = []
    if by_user == settings.LOGIN_FAILURE_LIMIT:
        locked.append("username")
    if attempt.ip and by_ip == settings.LOGIN_FAILURE_IP_LIMIT:
        locked.append("ip")
    if locked:
        LoginLockout.objects.create(username=attempt.username, ip=attempt.ip, keys=locked)
        log.warning(
            "login locked for %s (%s) after too many failures from %s",
            attempt.username,
            ", ".join(locked),
            attempt.ip,
        )


def login_succeeded(*, username: str) -> None:
    """A success resets the user name's count (its rows from any address)."""
    LoginAttempt.objects.filter(username=username).delete()


def retry_after(*, username: str, ip: str | None) -> int:
    """Seconds until the oldest failure that keeps this login refused leaves the window."""
    now = timezone.now()
    recent = LoginAttempt.objects.since(_window_start(now)).order_by("-at")
    ends = []
    for rows, limit in (
        (recent.filter(username=username, ip=ip), settings.LOGIN_FAILURE_LIMIT),
        (recent.filter(ip=ip) if ip else recent.none(), settings.LOGIN_FAILURE_IP_LIMIT),
    ):
        # The limit-th newest row is the one whose expiry lets an attempt through again.
        blocking = list(rows.values_list("at", flat=True)[limit - 1 : limit])
        if blocking:
            ends.append(blocking[0] + timedelta(seconds=settings.LOGIN_FAILURE_WINDOW))
    if not ends:
        return 1
    return max(1, math.ceil((max(ends) - now).total_seconds()))


class LoginView(auth_views.LoginView):
    """Django's login, refusing with 429 and without checking the password once the user
    name or the client address has failed too often."""

    def post(self, request, *args, **kwargs):
        self.attempt = None
        username = normal_username(request.POST.get("username", ""))
        if not username or not request.POST.get("password"):
            # The form reports the missing field; no password is checked.
            return super().post(request, *args, **kwargs)
        ip = client_ip(request)
        self.attempt = login_attempt_start(username=username, ip=ip)
        if self.attempt is None:
            return self.refuse(request, username=username, ip=ip)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        if self.attempt is not None:
            login_succeeded(username=self.attempt.username)
        return super().form_valid(form)

    def form_invalid(self, form):
        if self.attempt is not None:
            login_failed(attempt=self.attempt)
        return super().form_invalid(form)

    def refuse(self, request, *, username, ip):
        seconds = retry_after(username=username, ip=ip)
        minutes = math.ceil(seconds / 60)
        log.warning("login refused for %s from %s: too many failures", username, ip)
        form = self.get_form_class()(
            request, initial={"username": request.POST.get("username", "")[:150]}
        )
        context = self.get_context_data(
            form=form,
            refusal=ngettext(
                "Too many failed logins. Try again in %(minutes)s minute.",
                "Too many failed logins. Try again in %(minutes)s minutes.",
                minutes,
            )
            % {"minutes": minutes},
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(seconds)
        return response
