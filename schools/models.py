import hashlib
import hmac
import secrets

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from releases import reasons


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SchoolServerQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def by_token(self, key: str):
        """The server whose report token this is (active or not), or None."""
        if not key or len(key) > 200:
            return None
        digest = hash_token(key)
        server = self.filter(token_hash=digest).first()
        if server is None or not hmac.compare_digest(server.token_hash, digest):
            return None
        return server


class SchoolServer(models.Model):
    """One school's server (XS), which rsyncs builds from the mothership every day."""

    name = models.CharField(_("name"), max_length=100)
    hostname = models.CharField(
        _("hostname"),
        max_length=255,
        unique=True,
        help_text=_("What “schoolserver” resolves to inside the school, e.g. xs-caacupe-1.local."),
    )
    school = models.CharField(_("school"), max_length=200)
    department = models.CharField(_("department or region"), max_length=100, blank=True)
    contact = models.CharField(_("contact"), max_length=200, blank=True)
    notes = models.TextField(_("notes"), blank=True)
    address = models.GenericIPAddressField(
        _("IP address"),
        null=True,
        blank=True,
        help_text=_("The address it connects to the mothership from (matches rsyncd log lines)."),
    )
    active = models.BooleanField(
        _("active"), default=True, help_text=_("Inactive servers do not count for coverage.")
    )
    token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    token_prefix = models.CharField(max_length=8, blank=True, editable=False)
    token_created_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The latest report, kept on the row so dashboards read one table.
    last_report_at = models.DateTimeField(_("last report"), null=True, blank=True, db_index=True)
    last_report_source = models.CharField(max_length=10, blank=True)
    last_refresh_status = models.IntegerField(null=True, blank=True)
    disk_free_bytes = models.BigIntegerField(null=True, blank=True)
    client_version = models.CharField(max_length=50, blank=True)
    clock_skew_seconds = models.IntegerField(
        null=True, blank=True, help_text=_("Its clock minus ours when it last reported.")
    )
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    # The same problems as [code, params] pairs (releases.reasons), which pages render in the
    # reader's language with what to do; `last_error` keeps them in English for the CSV
    # export and the admin.
    problems = models.JSONField(default=list, blank=True)

    # Inventario (docs/inventario.md): the school's `places.id` there, set by
    # `import_school_servers --inventario`, which finds the server by it first, so a host
    # name changed in Inventario renames this row instead of adding another.
    inventario_place_id = models.PositiveIntegerField(
        _("Inventario place"),
        null=True,
        blank=True,
        unique=True,
        editable=False,
        help_text=_("The school's place id in Inventario, set by its import."),
    )

    objects = SchoolServerQuerySet.as_manager()

    class Meta:
        verbose_name = _("school server")
        verbose_name_plural = _("school servers")
        ordering = ["department", "school", "hostname"]
        # The overview's order: a page of it reads a page of this index, not a sort of
        # every server.
        indexes = [
            models.Index(fields=["department", "school", "hostname"], name="schoolserver_listing")
        ]

    def __str__(self):
        return self.hostname

    def save(self, *args, **kwargs):
        self.hostname = self.normal_hostname(self.hostname)
        super().save(*args, **kwargs)

    @property
    def problem_messages(self) -> list[str]:
        """What the last report says is wrong, in the reader's language, with what to do
        (a report from before `problems` existed has only its English `last_error`)."""
        if not self.problems:
            return [self.last_error] if self.last_error else []
        return [reasons.render(code, params) for code, params in self.problems]

    @staticmethod
    def normal_hostname(hostname: str) -> str:
        # Host names are case-insensitive; reports and log lines arrive lower-cased.
        return hostname.strip().lower()

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(30)


class SyncStatus(models.TextChoices):
    UNKNOWN = "unknown", _("Unknown")
    DOWNLOADING = "downloading", _("Downloading")
    PRESENT = "present", _("Present")
    VERIFIED = "verified", _("Verified")
    FAILED = "failed", _("Failed")


HELD_STATUSES = (SyncStatus.PRESENT, SyncStatus.VERIFIED)


class SyncState(models.Model):
    """What one school server has of one build: the current state only."""

    server = models.ForeignKey(SchoolServer, on_delete=models.CASCADE, related_name="syncs")
    build = models.ForeignKey(
        "releases.Build",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="syncs",
        help_text=_("Empty when the server reports a build the portal does not know."),
    )
    build_name = models.CharField(_("build"), max_length=64)
    status = models.CharField(
        _("state"), max_length=12, choices=SyncStatus.choices, default=SyncStatus.UNKNOWN
    )
    md5 = models.CharField(max_length=32, blank=True)
    source = models.CharField(max_length=10, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    held_since = models.DateTimeField(
        null=True, blank=True, help_text=_("When it was first present or verified.")
    )

    class Meta:
        verbose_name = _("sync state")
        constraints = [
            models.UniqueConstraint(fields=["server", "build_name"], name="one_state_per_build")
        ]
        # Dashboards ask "does server S hold build B?" for thousands of servers at once:
        # answered from the first index alone (an index-only scan on PostgreSQL, which also
        # keeps `held_since` in it for the coverage chart).
        indexes = [
            models.Index(
                fields=["build", "status", "server"],
                include=["held_since"],
                name="syncstate_build_held",
            ),
            models.Index(fields=["server", "build", "status"]),
        ]

    def __str__(self):
        return f"{self.server_id}:{self.build_name}={self.status}"


class CheckIn(models.Model):
    """A report as received; a bounded history per server."""

    server = models.ForeignKey(SchoolServer, on_delete=models.CASCADE, related_name="checkins")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=10, default="checkin")
    body = models.JSONField(default=dict)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["server", "-received_at"])]

    def __str__(self):
        return f"{self.server_id} {self.received_at:%Y-%m-%d %H:%M}"


class RsyncLogPosition(models.Model):
    """Where the periodic rsyncd log reader stopped, per log file."""

    path = models.CharField(max_length=500, unique=True)
    inode = models.BigIntegerField(default=0)
    offset = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.path}@{self.offset}"


# --- Laptops ---------------------------------------------------------------------------------


class Laptop(models.Model):
    """One laptop's latest state, from its latest report (Inventario's connection events).

    The version is kept as the report's `vhash`, the contents hash heading an `updates.cfg`
    entry; which build that is, or "unknown version", is read at display time
    (`selectors.builds_by_vhash`), so a hash entered after the reports needs no rewrite.
    The school server is matched by the report's address (`services.laptop_servers_link`
    redoes it from the kept address)."""

    serial = models.CharField(_("serial number"), max_length=32, unique=True)
    vhash = models.CharField(_("version hash"), max_length=64, blank=True)
    address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    server = models.ForeignKey(
        SchoolServer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="laptops",
        db_index=False,  # laptop_server_seen starts with it
        help_text=_("The school server whose address the laptop reported from."),
    )
    free_space_kib = models.BigIntegerField(_("free space (KiB)"), null=True, blank=True)
    stolen = models.BooleanField(_("reported stolen"), default=False)
    # Their times (the report's connected_at), and ours.
    first_seen_at = models.DateTimeField(_("first seen"))
    last_seen_at = models.DateTimeField(_("last seen"))
    version_since = models.DateTimeField(_("on this version since"))
    received_at = models.DateTimeField(_("last report received"))

    class Meta:
        verbose_name = _("laptop")
        verbose_name_plural = _("laptops")
        indexes = [
            models.Index(fields=["vhash", "last_seen_at"]),
            models.Index(fields=["last_seen_at"]),
            # The dashboards' counts of a server's active laptops, by version and free
            # space, read from the index alone on PostgreSQL (an index-only scan).
            models.Index(
                fields=["server", "last_seen_at"],
                include=["vhash", "free_space_kib"],
                name="laptop_server_seen",
            ),
        ]

    def __str__(self):
        return self.serial


class LaptopVersionChange(models.Model):
    """A moment a laptop's version changed; the newest LAPTOP_HISTORY per laptop are kept."""

    laptop = models.ForeignKey(Laptop, on_delete=models.CASCADE, related_name="version_changes")
    at = models.DateTimeField(_("when"), help_text=_("The report's time (connected_at)."))
    received_at = models.DateTimeField()
    vhash = models.CharField(max_length=64, blank=True)
    previous_vhash = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["laptop", "-at"]),
            models.Index(fields=["vhash", "at"]),
        ]

    def __str__(self):
        return f"{self.laptop_id} {self.at:%Y-%m-%d} {self.previous_vhash[:8]}→{self.vhash[:8]}"


class LaptopDay(models.Model):
    """How many laptops reported on one day (TIME_ZONE) with one version from one school
    server, and how many reports they sent: the history the funnel draws, one row per
    (day, version, server) however many reports."""

    day = models.DateField()
    vhash = models.CharField(max_length=64, blank=True)
    # Not a foreign key: counts are history and outlive a server's row (0: no server).
    server_key = models.PositiveIntegerField(
        default=0, help_text=_("The matched school server's id, 0 when none matched.")
    )
    laptops = models.PositiveIntegerField(default=0)
    reports = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "vhash", "server_key"], name="one_count_per_day_version_server"
            )
        ]

    def __str__(self):
        return f"{self.day} {self.vhash[:8]} {self.server_key}: {self.laptops}"
