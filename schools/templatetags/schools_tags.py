from django import template
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def shown(value) -> str:
    """A server's field value as the import preview shows it: yes/no, (empty), or “text”
    (quoted, so leading and trailing spaces and an empty text can be seen)."""
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if value in (None, ""):
        return _("(empty)")
    return f"“{value}”"
