"""Access checks every view calls: a role, or an API token."""

from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from . import roles
from .models import ApiToken


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
