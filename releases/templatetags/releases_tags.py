from django import template

from portal.humanize import percent

register = template.Library()


@register.filter
def errors_for(errors, field):
    """The messages for one field from a {field: [messages]} dict."""
    if not errors:
        return []
    return errors.get(field, [])


@register.filter(name="percent")
def percent_filter(share):
    """A share (0.8) as the reader's language writes a percentage."""
    return percent(share)


@register.filter
def get_item(mapping, key):
    return mapping.get(key, "") if mapping else ""
