from django import template
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

register = template.Library()


@register.filter
def stamp(moment) -> str:
    """A moment as YYYY-MM-DD HH:MM in the deployment's time zone, for a title on long
    lists: read the same in every language, and several times cheaper than the localized
    DATETIME_FORMAT a hundred times a page."""
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


@register.filter
def shown(value) -> str:
    """A server's field value as the import preview shows it: yes/no, (empty), or “text”
    (quoted, so leading and trailing spaces and an empty text can be seen)."""
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if value in (None, ""):
        return _("(empty)")
    return f"“{value}”"


@register.filter
def days_label(days) -> str:
    """Whole days to reach a share, or "not yet"."""
    if days is None:
        return _("not yet")
    return ngettext("%(days)s day", "%(days)s days", days) % {"days": days}


@register.filter
def get_target(days_to: dict, target) -> int | None:
    return days_to.get(float(target))
