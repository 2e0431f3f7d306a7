from django import template

register = template.Library()


@register.filter
def errors_for(errors, field):
    """The messages for one field from a {field: [messages]} dict."""
    if not errors:
        return []
    return errors.get(field, [])


@register.filter
def get_item(mapping, key):
    return mapping.get(key, "") if mapping else ""
