"""Numbers as the reader's language writes them: "80 %" in Spanish, "80%" in English."""

from django.utils.translation import get_language

NBSP = "\u00a0"


def percent(share: float | None) -> str:
    """A share between 0 and 1 as a whole percentage; "?" when unknown."""
    if share is None:
        return "?"
    number = round(share * 100)
    if (get_language() or "").startswith("es"):
        return f"{number}{NBSP}%"
    return f"{number}%"
