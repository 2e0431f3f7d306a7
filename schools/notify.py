"""The coordinators' daily digest of silent and lost school servers (sent by
`portal.notifications`): once a day after NOTIFY_DIGEST_HOUR, keyed by the local date, and
nothing at all on a day when every server reports."""

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal import roles
from portal.models import NotificationKind
from portal.notifications import Message, absolute_url, notify, sent_to, users_with_role

from .selectors import servers_with_state, state_counts

# A national deployment may have hundreds silent on a bad day: the mail lists this many
# and links to the full list.
LISTED = 200
STATES = ("lost", "silent")


def servers_digest(*, now=None) -> int:
    """Mail today's digest to the coordinators if it is due and not sent yet; returns how
    many mails went out."""
    now = timezone.localtime(now or timezone.now())
    key = now.date().isoformat()
    if now.hour < settings.NOTIFY_DIGEST_HOUR:
        return 0
    coordinators = list(users_with_role(roles.COORDINATORS))
    # Checked first, so the runs after today's digest cost one query more, not a listing.
    if {c.pk for c in coordinators} <= sent_to(NotificationKind.SERVERS_DIGEST, key):
        return 0
    every = servers_with_state(now=now)
    counts = {state: n for state, n in state_counts(every).items() if state in STATES}
    if not any(counts.values()):
        return 0
    listed = list(
        every.filter(state__in=STATES).order_by("state", "department", "school", "hostname")[
            :LISTED
        ]
    )
    overview = reverse("schools:overview")
    return notify(
        kind=NotificationKind.SERVERS_DIGEST,
        key=key,
        users=coordinators,
        message=Message(
            _("School servers not reporting: %(silent)s silent, %(lost)s lost"),
            "notifications/servers_digest.txt",
            {
                **counts,
                "servers": listed,
                "more": sum(counts.values()) - len(listed),
                "date": now.date(),
                "silent_link": absolute_url(f"{overview}?state=silent"),
                "lost_link": absolute_url(f"{overview}?state=lost"),
            },
        ),
    )
