import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

TOKEN_PREFIX_LENGTH = 8


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def authenticate(self, key: str):
        """The active token whose key this is, or None; only the key's hash is stored."""
        if not key or len(key) > 200:
            return None
        digest = hash_token(key)
        token = (
            self.select_related("user")
            .filter(key_hash=digest, user__is_active=True, revoked_at__isnull=True)
            .first()
        )
        # The lookup is by hash; comparing again in constant time costs nothing.
        if token is None or not hmac.compare_digest(token.key_hash, digest):
            return None
        return token


class ApiToken(models.Model):
    """A key for build machines and scripts: `Authorization: Token <key>`."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(_("name"), max_length=100, blank=True)
    prefix = models.CharField(
        _("prefix"), max_length=TOKEN_PREFIX_LENGTH, help_text=_("First characters of the key.")
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.user} {self.prefix}…"

    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(30)


class LoginAttemptQuerySet(models.QuerySet):
    def since(self, moment):
        return self.filter(at__gte=moment)

    def counts(self, *, username: str, ip: str | None, since) -> tuple[int, int]:
        """How many attempts in the window name this user from this address, and how many
        came from this address. (Counting a user name from every address would let anyone
        keep any account locked.)"""
        recent = self.since(since)
        by_user = recent.filter(username=username, ip=ip).count()
        by_ip = recent.filter(ip=ip).count() if ip else 0
        return by_user, by_ip


class LoginAttempt(models.Model):
    """A password check that did not succeed (or is under way), for login throttling.

    Rows live in the database, not a per-process cache, so every gunicorn worker sees the
    same counts; a successful login deletes its user's rows, and rows older than the window
    are pruned when new ones are written."""

    username = models.CharField(max_length=150, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = LoginAttemptQuerySet.as_manager()

    class Meta:
        verbose_name = _("failed login")
        verbose_name_plural = _("failed logins")

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.ip or ''}"


class LoginLockout(models.Model):
    """A user name or an address reaching its failed-login limit: the portal's own record,
    kept after the attempts that caused it are pruned."""

    at = models.DateTimeField(_("when"), default=timezone.now, db_index=True)
    username = models.CharField(_("user name"), max_length=150)
    ip = models.GenericIPAddressField(_("address"), null=True, blank=True)
    # Which limits were reached: "username" (this name from this address), "ip" (this
    # address for any name).
    keys = models.JSONField(_("limits reached"), default=list)

    class Meta:
        verbose_name = _("login lockout")
        verbose_name_plural = _("login lockouts")
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.ip or ''}"


class NotificationKind(models.TextChoices):
    """What the portal e-mails about. Each app decides when its own events happen
    (`releases.notify`, `schools.notify`); who may receive each kind is `KIND_ROLES`."""

    BUILD_INVALID = "build_invalid", _("A build I uploaded turned out invalid")
    WAITING_HASH = "waiting_hash", _("A published build waits for its contents hash")
    WAITING_PROMOTION = "waiting_promotion", _("A published build waits for promotion")
    COVERAGE_REACHED = (
        "coverage_reached",
        _("A published build reached the coverage needed to promote it"),
    )
    DEPLOYMENT_FAILED = "deployment_failed", _("A deployment of updates.cfg failed")
    EMERGENCY_STOP = "emergency_stop", _("Someone stopped offering every update")
    SERVERS_DIGEST = "servers_digest", _("Every morning, the silent and lost school servers")


class NotificationOptOut(models.Model):
    """A kind of notification a user turned off on their profile page (on is the default,
    so a new kind reaches everyone it concerns)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_opt_outs"
    )
    kind = models.CharField(max_length=40, choices=NotificationKind.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind"], name="one_opt_out_per_kind"),
        ]

    def __str__(self):
        return f"{self.user} {self.kind}"


class SentNotification(models.Model):
    """One e-mail about one event to one user, claimed before it is sent: the unique key
    is what makes a redelivered task, a second worker or the sweep send nothing twice."""

    kind = models.CharField(max_length=40, choices=NotificationKind.choices)
    # What the event is about: "build:12", "deployment:7", a date for the digest.
    key = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "key", "user"], name="one_notification_per_event_and_user"
            ),
        ]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.key} {self.user_id}"
