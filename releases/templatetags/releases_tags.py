from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.filter
def errors_for(errors, field):
    """The messages for one field from a {field: [messages]} dict."""
    if not errors:
        return []
    return errors.get(field, [])


@register.filter
def bytes_label(value):
    """A size as staff read it (1.2 GB) with the exact count kept for the title."""
    if value is None:
        return ""
    return filesizeformat(value)


@register.filter
def get_item(mapping, key):
    return mapping.get(key, "") if mapping else ""
