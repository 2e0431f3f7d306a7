"""Who may do what to a build: the one place the views (and the management commands, which
are the command line's views) ask.

The rule, for every module of this app: views and commands authorise; services assume an
authorised caller. A service still enforces the rules about the build itself (its state,
four-eyes: never the uploader's own promotion), because those hold whoever calls.
"""

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from portal import roles

from .models import Build, Deployment
from .reasons import Refused


def may_edit(user) -> bool:
    """Uploaders and approvers may correct a build (its contents hash, a retry)."""
    return roles.has_role(user, roles.UPLOADERS) or roles.has_role(user, roles.APPROVERS)


def may_approve(user) -> bool:
    """Approvers decide what is offered to the laptops (and recall builds)."""
    return roles.has_role(user, roles.APPROVERS)


def get_build_for_user(request, name, *, edit=False, approve=False, queryset=None) -> Build:
    """The build named `name` for this request: 404 if there is none, 403 if the request
    wants to `edit` it or `approve` (promote, withdraw, recall) and its user may not.
    Every staff role may see every build (login is enforced for every view)."""
    if approve and not may_approve(request.user):
        raise PermissionDenied
    if edit and not may_edit(request.user):
        raise PermissionDenied
    return get_object_or_404(Build.objects.all() if queryset is None else queryset, name=name)


def get_deployment_for_user(request, pk, *, approve=False, queryset=None) -> Deployment:
    """The deployment `pk` for this request: 404 if there is none, 403 if the request wants
    to `approve` (roll back to it) and its user may not."""
    if approve and not may_approve(request.user):
        raise PermissionDenied
    return get_object_or_404(Deployment.objects.all() if queryset is None else queryset, pk=pk)


def require_approver(user) -> None:
    """For the command line, where `--by` names the acting user: refuse unless an approver."""
    if not may_approve(user):
        raise Refused("promote_not_approver")
