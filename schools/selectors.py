"""Named reads about school servers."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Coverage:
    """How far a build has spread. `share` is None while nothing reports sync state."""

    share: float | None
    active_servers: int
    missing: list = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.share is not None

    @property
    def percent_label(self) -> str:
        return "?" if self.share is None else f"{self.share:.0%}"


def build_coverage(build) -> Coverage:
    """Share of active school servers that report holding `build`.

    School servers do not report their sync state to the portal yet, so coverage is
    unknown: the promotion gate then asks for a written reason."""
    from .models import SchoolServer

    return Coverage(share=None, active_servers=SchoolServer.objects.active().count())
