from . import roles as portal_roles


def roles(request):
    """Which roles the user holds, for navigation; the views check access themselves."""
    user = request.user
    return {
        "is_uploader": portal_roles.has_role(user, portal_roles.UPLOADERS),
        "is_approver": portal_roles.has_role(user, portal_roles.APPROVERS),
        "is_coordinator": portal_roles.has_role(user, portal_roles.COORDINATORS),
    }
