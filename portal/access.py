"""Access checks every view calls: a role, or an API token (or, for machines, HTTP Basic)."""

import base64
import binascii
import hashlib
import hmac
import threading
import time
from functools import wraps

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from . import roles
from .auth import (
    login_attempt_start,
    login_failed,
    login_succeeded,
    normal_username,
    retry_after,
)
from .models import ApiToken
from .security import client_ip


def require_role(request, role: str) -> None:
    """Refuse with 403 unless the logged-in user holds `role` (login itself is enforced
    for every view by LoginRequiredMiddleware)."""
    if not roles.has_role(request.user, role):
        raise PermissionDenied


def token_from_header(request):
    header = request.headers.get("Authorization", "")
    scheme, _sep, key = header.partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return None
    return ApiToken.objects.authenticate(key.strip())


def _json_error(message, status, **headers):
    return JsonResponse({"error": message}, status=status, headers=headers)


def api_view(*, role: str, any_role: bool = False, token_only: bool = False):
    """For JSON endpoints: `Authorization: Token <key>`, or (unless `token_only`, which
    writes use, since they skip CSRF) a logged-in browser session. The user must hold
    `role`, or any staff role when `any_role`. Answers 401/403 as JSON, never a redirect."""

    def allowed(user):
        wanted = roles.ALL if any_role else (role,)
        return any(roles.has_role(user, name) for name in wanted)

    def decorator(view):
        @login_not_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if "Authorization" in request.headers:
                token = token_from_header(request)
                if token is None:
                    return _json_error(
                        _("Missing or unknown API token."), 401, **{"WWW-Authenticate": "Token"}
                    )
                request.user = token.user
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
            elif token_only or not request.user.is_authenticated:
                return _json_error(
                    _("Send an API token: Authorization: Token <key>."),
                    401,
                    **{"WWW-Authenticate": "Token"},
                )
            if not allowed(request.user):
                return _json_error(_("Your account may not do this."), 403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


# --- Machines: HTTP Basic or an API token ----------------------------------------------------

# A password check costs about half a second of CPU by design; a machine posting a report
# every second would spend its server on it. A verified `Authorization` header is
# remembered in this process for BASIC_CACHE_SECONDS, keyed by an HMAC of the header (the
# password is never kept), and holds only while the account is active and its password hash
# unchanged: a new password, or a deactivated account, is refused at once.
BASIC_CACHE_SECONDS = 300
BASIC_CACHE_SIZE = 1000
_basic_cache: dict[bytes, tuple[int, str, float]] = {}
_basic_lock = threading.Lock()


def _basic_key(header: str) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), header.encode(), hashlib.sha256).digest()


def _basic_user(request, header: str):
    """(user, None) for valid Basic credentials, else (None, a JSON error response)."""
    key = _basic_key(header)
    with _basic_lock:
        cached = _basic_cache.get(key)
    if cached is not None and cached[2] > time.monotonic():
        user = get_user_model().objects.filter(pk=cached[0], is_active=True).first()
        if user is not None and hmac.compare_digest(user.password, cached[1]):
            return user, None
    try:
        decoded = base64.b64decode(header.partition(" ")[2].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        return None, _basic_refusal(_("Send a user name and password (HTTP Basic)."))
    name, ip = normal_username(username), client_ip(request)
    attempt = login_attempt_start(username=name, ip=ip)
    if attempt is None:
        response = _json_error(_("Too many failed logins; try again later."), 429)
        response["Retry-After"] = str(retry_after(username=name, ip=ip))
        return None, response
    user = authenticate(request, username=username, password=password)
    if user is None:
        login_failed(attempt=attempt)
        return None, _basic_refusal(_("Wrong user name or password."))
    login_succeeded(username=name)
    with _basic_lock:
        if len(_basic_cache) >= BASIC_CACHE_SIZE:
            _basic_cache.clear()
        _basic_cache[key] = (user.pk, user.password, time.monotonic() + BASIC_CACHE_SECONDS)
    return user, None


def _basic_refusal(message):
    return _json_error(message, 401, **{"WWW-Authenticate": 'Basic realm="XO Release Portal"'})


def machine_view(*, role: str):
    """For machines posting data: HTTP Basic (as Inventario's senders do), or an API token
    (`Authorization: Token <key>` or `Bearer <key>`) of an account holding `role`. Never a
    session: these views skip CSRF. Answers 401/403/429 as JSON, never a redirect."""

    def decorator(view):
        @login_not_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme = header.partition(" ")[0].lower()
            if scheme == "basic":
                user, refusal = _basic_user(request, header)
                if refusal is not None:
                    return refusal
            elif scheme in ("token", "bearer"):
                token = ApiToken.objects.authenticate(header.partition(" ")[2].strip())
                if token is None:
                    return _basic_refusal(_("Missing or unknown API token."))
                user = token.user
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
            else:
                return _basic_refusal(
                    _("Send a user name and password (HTTP Basic) or an API token.")
                )
            if not roles.has_role(user, role):
                return _json_error(_("Your account may not do this."), 403)
            request.user = user
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
