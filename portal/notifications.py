"""E-mail about events, once per event and user, to those who did not turn its kind off.

Each app decides when its events happen and whom they concern (`releases.notify`,
`schools.notify`); this module only picks the recipients who want it, claims each mail in
`SentNotification` and sends it, in the deployment's language, with links to the portal.
"""

import logging
import smtplib
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import translation

from . import roles
from .models import NotificationKind, NotificationOptOut, SentNotification

log = logging.getLogger(__name__)

# Who each kind may concern: the profile page offers a user the kinds of their roles.
# A build's uploader hears about their own build (invalid, waiting for its hash) whatever
# their roles are now.
KIND_ROLES = {
    NotificationKind.BUILD_INVALID: (roles.UPLOADERS,),
    NotificationKind.WAITING_HASH: (roles.UPLOADERS, roles.APPROVERS),
    NotificationKind.WAITING_PROMOTION: (roles.APPROVERS,),
    NotificationKind.COVERAGE_REACHED: (roles.APPROVERS,),
    NotificationKind.DEPLOYMENT_FAILED: (roles.APPROVERS,),
    NotificationKind.EMERGENCY_STOP: (roles.APPROVERS,),
    NotificationKind.SERVERS_DIGEST: (roles.COORDINATORS,),
}


@dataclass(frozen=True)
class Message:
    """A mail to render for each recipient: `subject` is a lazy translation with
    %-placeholders filled from `context`; `template` is a plain-text template. A callable
    in `context` is called while rendering, in the mail's language (a percentage)."""

    subject: str
    template: str
    context: dict = field(default_factory=dict)


def absolute_url(path: str) -> str:
    return settings.PORTAL_BASE_URL + path


def users_with_role(*names):
    """Active users with an e-mail address holding any of `names` (superusers hold all)."""
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .exclude(email="")
        .filter(Q(is_superuser=True) | Q(groups__name__in=names))
        .distinct()
        .order_by("pk")
    )


def kinds_for(user) -> list[NotificationKind]:
    """The kinds that may concern `user`, in the order they are listed."""
    return [
        kind
        for kind, names in KIND_ROLES.items()
        if any(roles.has_role(user, name) for name in names)
    ]


def turned_off(user) -> set[str]:
    return set(NotificationOptOut.objects.filter(user=user).values_list("kind", flat=True))


def already_sent(kind: NotificationKind, keys) -> set[str]:
    """Which of `keys` someone was already told about (the sweep skips them cheaply)."""
    return set(
        SentNotification.objects.filter(kind=kind, key__in=list(keys)).values_list("key", flat=True)
    )


def sent_to(kind: NotificationKind, key: str) -> set[int]:
    """The users already told about event `key`."""
    return set(
        SentNotification.objects.filter(kind=kind, key=key).values_list("user_id", flat=True)
    )


def notify(*, kind: NotificationKind, key: str, users, message: Message) -> int:
    """E-mail `message` about event `key` to each of `users` who can and wants to get it,
    unless they already got it. Returns how many were sent.

    1. Keep active users with an address who did not turn `kind` off and were not told.
    2. For each, claim (kind, key, user) with an INSERT the unique constraint guards: a
       second task, worker or sweep finds it taken and sends nothing.
    3. Send. If sending fails, give the claim back (so a retry or the sweep sends it
       later) and go on with the others; raise NotificationsFailed at the end. An address
       the mail server refuses keeps its claim: trying again would be refused again.
    """
    users = {user.pk: user for user in users if user.is_active and user.email}
    if not users:
        log.info("%s %s concerns no active user with an e-mail address", kind, key)
        return 0
    off = set(
        NotificationOptOut.objects.filter(kind=kind, user_id__in=users).values_list(
            "user_id", flat=True
        )
    )
    # Those already told are skipped here too: the sweep sees the same events every few
    # minutes, and one query beats a failed INSERT per user and event.
    skip = off | sent_to(kind, key)
    sent, failed = 0, []
    for user in (users[pk] for pk in sorted(users.keys() - skip)):
        try:
            with transaction.atomic():
                claim = SentNotification.objects.create(kind=kind, key=key, user=user)
        except IntegrityError:
            continue
        try:
            subject, body = render(message, user)
            send_mail(subject, body, None, [user.email], fail_silently=False)
        except smtplib.SMTPRecipientsRefused:
            log.warning(
                "%s %s: the mail server refused %s (user %s); not retried",
                kind,
                key,
                user.email,
                user.pk,
            )
            continue
        except Exception:
            SentNotification.objects.filter(pk=claim.pk).delete()
            log.exception("%s %s: mail to user %s failed; it is tried again", kind, key, user.pk)
            failed.append(user.pk)
            continue
        sent += 1
    if failed:
        raise NotificationsFailed(f"{kind} {key}: not sent to users {failed}")
    return sent


class NotificationsFailed(OSError):
    """Some mails of an event could not be sent (their claims were given back); an OSError,
    so the task's bounded retry and the sweep try them again."""


def render(message: Message, user) -> tuple[str, str]:
    """Subject and body in the deployment's language (the reader's choice in the menu is
    a cookie of their browser, unknown here)."""
    with translation.override(settings.LANGUAGE_CODE):
        values = {k: v() if callable(v) else v for k, v in message.context.items()}
        subject = str(message.subject) % values
        context = {**values, "user": user, "base_url": settings.PORTAL_BASE_URL}
        body = render_to_string(message.template, context)
    # A header cannot hold a line break.
    return f"[XO] {' '.join(subject.split())}", body
