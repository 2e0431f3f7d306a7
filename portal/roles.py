"""The three staff roles, and the machines' one, as Django groups created by migrations.

A superuser counts as holding every role; the four-eyes rules in `releases` still apply.
"""

UPLOADERS = "uploaders"
APPROVERS = "approvers"
COORDINATORS = "coordinators"
ALL = (UPLOADERS, APPROVERS, COORDINATORS)
# Accounts that post laptop reports (oatslite, or a relay from Inventario): not staff, and
# not in ALL; they use HTTP Basic or an API token, never a session (`access.machine_view`).
REPORTERS = "reporters"


def has_role(user, role: str) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    # One query per request at most: the group names are cached on the user object.
    names = getattr(user, "_portal_roles", None)
    if names is None:
        names = set(user.groups.values_list("name", flat=True))
        user._portal_roles = names
    return role in names
