from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import reasons

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Compression(models.TextChoices):
    BZIP2 = "bz2", "bzip2"
    XZ = "xz", "xz"
    LZMA = "lzma", "lzma"


class BuildStatus(models.TextChoices):
    UPLOADED = "uploaded", _("Uploaded")
    VALIDATING = "validating", _("Validating")
    VALID = "valid", _("Valid")
    INVALID = "invalid", _("Invalid")
    PUBLISHING = "publishing", _("Publishing")
    PUBLISHED = "published", _("Published")
    PUBLISH_FAILED = "publish_failed", _("Publication failed")
    OFFERED = "offered", _("Offered")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    RETIRED = "retired", _("Retired")


# Every change of `Build.status` the portal makes, and nothing else (`audit.build_transition`
# refuses any other). A build enters as uploaded; retired is the end.
_S = BuildStatus
BUILD_TRANSITIONS = {
    # claimed by a validation worker
    _S.UPLOADED: {_S.VALIDATING},
    # checked; or handed back after a disk/database error or a lost worker
    _S.VALIDATING: {_S.VALID, _S.INVALID, _S.UPLOADED},
    # claimed by a publishing worker
    _S.VALID: {_S.PUBLISHING},
    # published; or failed; or handed back after a lost worker
    _S.PUBLISHING: {_S.PUBLISHED, _S.PUBLISH_FAILED, _S.VALID},
    # an uploader retries the publication
    _S.PUBLISH_FAILED: {_S.VALID},
    # promoted; or recalled (its files removed)
    _S.PUBLISHED: {_S.OFFERED, _S.RETIRED},
    # withdrawn (or stopped, rolled back, imported away); a failed first promotion undone;
    # recalled
    _S.OFFERED: {_S.WITHDRAWN, _S.PUBLISHED, _S.RETIRED},
    # promoted again (or rolled back, imported); a failed first promotion undone; recalled
    _S.WITHDRAWN: {_S.OFFERED, _S.PUBLISHED, _S.RETIRED},
    _S.INVALID: set(),
    _S.RETIRED: set(),
}
del _S

WORKING_STATUSES = (BuildStatus.UPLOADED, BuildStatus.VALIDATING, BuildStatus.PUBLISHING)
FINAL_PIPELINE_STATUSES = (
    BuildStatus.INVALID,
    BuildStatus.PUBLISHED,
    BuildStatus.PUBLISH_FAILED,
    BuildStatus.OFFERED,
    BuildStatus.WITHDRAWN,
    BuildStatus.RETIRED,
)
# The hash may be entered or corrected while nothing offers the build yet.
HASH_EDITABLE_STATUSES = (
    BuildStatus.UPLOADED,
    BuildStatus.VALIDATING,
    BuildStatus.VALID,
    BuildStatus.PUBLISHING,
    BuildStatus.PUBLISHED,
    BuildStatus.PUBLISH_FAILED,
)


class Phase(models.TextChoices):
    QUEUED = "queued", _("Waiting for a worker")
    CHECKSUM = "checksum", _("Checking the .md5 file")
    ARCHIVE = "archive", _("Reading the archive")
    CONTENTS = "contents", _("Checking the .contents file")
    CONTENTS_HASH = "contents_hash", _("Computing the contents hash")
    PUBLISHING = "publishing", _("Copying into the puppet content folder")
    VERIFYING = "verifying", _("Verifying the published checksum")
    DONE = "done", _("Done")


class HashSource(models.TextChoices):
    NONE = "", _("Not known yet")
    ENTERED = "entered", _("Entered by staff")
    COMMAND = "command", _("Computed by the contents hash command")
    BOTH = "both", _("Entered and confirmed by the command")


class BuildQuerySet(models.QuerySet):
    def with_people(self):
        return self.select_related("uploaded_by")

    def name_taken(self, name: str) -> bool:
        # Case-insensitively: school server folders and rsync modules may live on
        # case-insensitive tools, and "PY801-2" beside "py801-2" is a mistake anyway.
        return self.filter(name__iexact=name).exists()


class Build(models.Model):
    """One OS build, from upload to retirement; its status changes only through
    `audit.build_transition` (see BUILD_TRANSITIONS)."""

    name = models.CharField(_("name"), max_length=64, unique=True)
    compression = models.CharField(_("compression"), max_length=4, choices=Compression.choices)
    original_filename = models.CharField(
        _("uploaded file name"), max_length=255, help_text=_("The name its .md5 file refers to.")
    )
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=BuildStatus.choices,
        default=BuildStatus.UPLOADED,
        db_index=True,
    )
    # Why the build is in its state, as a message code and its parameters so that it can
    # be shown in the reader's language (see `reasons`).
    status_code = models.CharField(max_length=50, blank=True)
    status_params = models.JSONField(default=dict, blank=True)

    size = models.BigIntegerField(_("size in bytes"))
    md5 = models.CharField(_("MD5"), max_length=32, help_text=_("Computed while uploading."))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    # The archive's SHA-1, for USB kits' manifest.sha1 (`usb.kit_for`): one read of a
    # multi-GB file, so it is computed (its MD5 checked in the same read) for the first kit
    # and kept; empty until then.
    tarball_sha1 = models.CharField(max_length=40, blank=True, editable=False)
    declared_md5 = models.CharField(
        _("declared MD5"), max_length=32, blank=True, help_text=_("From the uploaded .md5 file.")
    )
    md5_file_bare = models.BooleanField(
        default=False, help_text=_("The uploaded .md5 file held only a hash, without a file name.")
    )
    contents_size = models.BigIntegerField(_(".contents size"))
    contents_sha256 = models.CharField(_(".contents SHA-256"), max_length=64)
    entered_contents_hash = models.CharField(max_length=128, blank=True)
    contents_hash = models.CharField(_("contents hash"), max_length=128, blank=True)
    contents_hash_source = models.CharField(
        max_length=10, choices=HashSource.choices, default=HashSource.NONE, blank=True
    )
    contents_hash_note = models.CharField(max_length=50, blank=True)

    pristine_id = models.CharField(max_length=255, blank=True)
    member_count = models.BigIntegerField(null=True, blank=True)
    unpacked_size = models.BigIntegerField(null=True, blank=True)
    # What the served tree carries that matters for security, from the archive scan:
    # counts and the first paths of setuid/setgid files, world-writable entries, device
    # nodes and entries the school server throws away (`extraction.Summary`).
    archive_summary = models.JSONField(default=dict, blank=True)
    # The last `recheck_builds` verdict on a build validated by older checks: empty while
    # it passes, else why it would break school servers (a `reasons` code and parameters).
    recheck_code = models.CharField(max_length=50, blank=True)
    recheck_params = models.JSONField(default=dict, blank=True)
    rechecked_at = models.DateTimeField(null=True, blank=True)
    # When an approver recalled it; the sweeper re-sends the removal until it is retired.
    recalled_at = models.DateTimeField(null=True, blank=True)

    store_dir = models.CharField(max_length=200, editable=False)

    progress_phase = models.CharField(max_length=20, choices=Phase.choices, default=Phase.QUEUED)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    progress_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)

    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="uploaded_builds",
        verbose_name=_("uploaded by"),
    )
    created_at = models.DateTimeField(_("uploaded at"), default=timezone.now, db_index=True)
    validated_at = models.DateTimeField(_("validated at"), null=True, blank=True)
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)

    objects = BuildQuerySet.as_manager()

    class Meta:
        verbose_name = _("build")
        verbose_name_plural = _("builds")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                models.functions.Lower("name"), name="build_name_unique_ignoring_case"
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def tarball_name(self) -> str:
        return f"{self.name}-tree.tar.{self.compression}"

    @property
    def contents_name(self) -> str:
        return f"{self.name}.contents"

    @property
    def store_path(self) -> Path:
        return Path(settings.BUILD_STORE_DIR) / self.store_dir

    @property
    def stored_tarball(self) -> Path:
        return self.store_path / self.tarball_name

    @property
    def stored_md5_file(self) -> Path:
        return self.store_path / "uploaded.md5"

    @property
    def stored_contents(self) -> Path:
        return self.store_path / self.contents_name

    @property
    def status_detail(self) -> str:
        return reasons.render(self.status_code, self.status_params)

    @property
    def recheck_detail(self) -> str:
        """Why today's checks say this published build would break school servers."""
        return reasons.render(self.recheck_code, self.recheck_params)

    @property
    def archive_notes(self) -> dict:
        """The archive summary with modes in octal, as the build page shows them."""
        notes = dict(self.archive_summary)
        for key in ("setuid", "unreadable"):
            notes[key] = [(path, f"{mode:04o}") for path, mode in notes.get(key, [])]
        return notes

    @property
    def is_working(self) -> bool:
        return self.status in WORKING_STATUSES

    @property
    def progress_percent(self) -> int:
        if self.progress_total <= 0:
            return 0
        return min(100, int(100 * self.progress_done / self.progress_total))


class BuildManifest(models.Model):
    """The tree inside the tarball, recorded while validating: gzip of JSON lines.

    Each line is `[path, type, mode, size, sha256, link, uid, gid]`, read from the tree GNU
    tar unpacked (see `manifest.ManifestEntry`); older builds' lines have no owners.
    """

    build = models.OneToOneField(Build, on_delete=models.CASCADE, related_name="manifest")
    data = models.BinaryField()
    entries = models.BigIntegerField()

    def __str__(self):
        return f"manifest of build {self.build_id}"


class AuditEvent(models.Model):
    """Who changed what, and when: one row per state change, written with the change."""

    at = models.DateTimeField(_("when"), default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("who"),
        help_text=_("Empty when a worker did it on its own."),
    )
    build = models.ForeignKey(
        Build, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    action = models.CharField(_("action"), max_length=40)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    code = models.CharField(max_length=50, blank=True)
    params = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.build_id or ''}"

    @property
    def message(self) -> str:
        return reasons.render(self.code, self.params)

    def status_label(self, value: str) -> str:
        return BuildStatus(value).label if value else ""

    @property
    def from_label(self):
        return self.status_label(self.from_status)

    @property
    def to_label(self):
        return self.status_label(self.to_status)


class OfferedEntryQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True).order_by("position", "id")


class OfferedEntry(models.Model):
    """One entry of oatslite's updates.cfg. The active entries, in `position` order, are
    what the file should say; `updates_cfg.render` turns them into the file."""

    section = models.CharField(
        _("section"), max_length=200, help_text=_("The [header]: the build's contents hash.")
    )
    build = models.ForeignKey(
        Build, null=True, blank=True, on_delete=models.PROTECT, related_name="offers"
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    priority = models.CharField(_("priority"), max_length=50, blank=True)
    update_path = models.CharField(_("update path"), max_length=500, blank=True)
    # Imported entries keep their exact text; templated ones have none ("").
    text = models.TextField(blank=True)
    legacy = models.BooleanField(
        default=False,
        help_text=_("Imported from a hand-written file; the portal never saw its build."),
    )
    active = models.BooleanField(default=True, db_index=True)
    position = models.BigIntegerField(db_index=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A copy of the build's uploader, so the database itself can refuse self-approval.
    build_uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    self_approved = models.BooleanField(default=False)
    coverage = models.FloatField(null=True, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    objects = OfferedEntryQuerySet.as_manager()

    class Meta:
        verbose_name = _("offered entry")
        verbose_name_plural = _("offered entries")
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(self_approved=True)
                | models.Q(promoted_by__isnull=True)
                | models.Q(build_uploader__isnull=True)
                | ~models.Q(promoted_by=models.F("build_uploader")),
                name="offered_entry_four_eyes",
                violation_error_message=_("An approver cannot promote a build they uploaded."),
            ),
            models.UniqueConstraint(
                fields=["section"],
                condition=models.Q(active=True),
                name="offered_entry_one_active_per_section",
            ),
        ]

    def __str__(self):
        return f"[{self.section}] {self.name}"


class OatsliteState(models.Model):
    """The one row holding what the database knows of updates.cfg besides its entries."""

    preamble = models.TextField(
        blank=True, help_text=_("Text before the first entry, kept verbatim.")
    )

    class Meta:
        verbose_name = _("oatslite settings")

    def __str__(self):
        return "oatslite"

    @classmethod
    def get(cls):
        return cls.objects.get_or_create(pk=1)[0]


class DeploymentStatus(models.TextChoices):
    PENDING = "pending", _("Waiting")
    RUNNING = "running", _("Applying")
    SUCCEEDED = "succeeded", _("Deployed")
    FAILED = "failed", _("Failed, previous file restored")
    DRIFT = "drift", _("Stopped: the file was edited by hand")
    COALESCED = "coalesced", _("Applied together with a later request")


class DeploymentAction(models.TextChoices):
    PROMOTE = "promote", _("Promotion")
    WITHDRAW = "withdraw", _("Withdrawal")
    STOP_ALL = "stop_all", _("Emergency stop")
    ROLLBACK = "rollback", _("Rollback")
    OVERWRITE = "overwrite", _("Overwrite of hand edits")
    IMPORT = "import", _("Import of the hand-written file")
    REAPPLY = "reapply", _("Requests kept over an imported file")


class DeploymentQuerySet(models.QuerySet):
    def last_deployed(self):
        """The deployment whose content should be on disk now."""
        return (
            self.filter(status=DeploymentStatus.SUCCEEDED).order_by("-finished_at", "-id").first()
        )


class Deployment(models.Model):
    """One request to change updates.cfg, and what happened when it was applied."""

    action = models.CharField(_("action"), max_length=20, choices=DeploymentAction.choices)
    build = models.ForeignKey(
        Build, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    reason = models.TextField(blank=True)
    force = models.BooleanField(
        default=False, help_text=_("Overwrite a file that was edited by hand.")
    )
    # Entry ids this request activated and deactivated, so a failure can undo it.
    changes = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=DeploymentStatus.choices,
        default=DeploymentStatus.PENDING,
        db_index=True,
    )
    coalesced_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    content = models.TextField(blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    # None: there was no file (different from an empty one).
    previous_content = models.TextField(null=True, blank=True)  # noqa: DJ001
    diff = models.TextField(blank=True)
    active_ids = models.JSONField(default=list, blank=True)
    outputs = models.JSONField(default=list, blank=True)
    restart_skipped = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        verbose_name = _("deployment")
        verbose_name_plural = _("deployments")
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"#{self.pk} {self.action} {self.status}"

    @property
    def entry_changes(self) -> dict:
        """The names of the entries this request added to and removed from what is offered
        (what a rollback restored, what a withdrawal or a stop removed)."""
        ids = {
            "added": self.changes.get("activated", []),
            "removed": self.changes.get("deactivated", []),
        }
        wanted = [pk for group in ids.values() for pk in group]
        names = dict(OfferedEntry.objects.filter(pk__in=wanted).values_list("pk", "name"))
        return {key: [names.get(pk) or f"#{pk}" for pk in group] for key, group in ids.items()}

    @property
    def is_final(self) -> bool:
        return self.status not in (DeploymentStatus.PENDING, DeploymentStatus.RUNNING)


class XoHelper(models.Model):
    """A one-time link to the XO helper script for one build: an XO fetches the script with
    it, and the script posts the contents hash back with it. Only the token's SHA-256 is
    kept; the hash it posts is recorded as entered by `created_by`."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="xo_helpers")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    token_hash = models.CharField(max_length=64, unique=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("XO helper link")
        verbose_name_plural = _("XO helper links")
        ordering = ["-created_at"]

    def __str__(self):
        return f"XO helper for build {self.build_id}"

    def usable(self, now=None) -> bool:
        return self.used_at is None and (now or timezone.now()) < self.expires_at


class ResumableUpload(models.Model):
    """A build archive arriving in chunks (`releases.resumable`): how much of it the portal
    holds and the running checksums of those bytes, so an upload cut off at 90 % goes on from
    there instead of starting over. The bytes live in UPLOAD_TEMP_DIR as `.resume-<id>`."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="resumable_uploads"
    )
    filename = models.CharField(_("file name"), max_length=255)
    size = models.BigIntegerField(_("size in bytes"))
    received = models.BigIntegerField(_("bytes received"), default=0)
    md5_state = models.BinaryField()
    sha256_state = models.BinaryField()
    # The sha256 of the first chunk: tells two files of one name and size apart on resume.
    first_chunk_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self):
        return f"{self.filename} ({self.received}/{self.size})"

    @property
    def path(self) -> Path:
        return Path(settings.UPLOAD_TEMP_DIR) / f".resume-{self.id}"

    @property
    def complete(self) -> bool:
        return self.received == self.size
