"""A build's update impact: its diff against another build, for the build and promotion
pages, `GET /api/builds/<new>/diff/<old>/`, `manage.py build_diff` and the promotion gate.

Reads only. `builddiff` does the work on the stored manifests; this module picks the build
to compare with and fills in the settings. Manifests never change once written, so a diff
is cached under both archives' sha256 (and the settings it used).
"""

from django.conf import settings
from django.core.cache import cache

from portal.humanize import percent

from . import builddiff
from .models import Build, BuildManifest, BuildStatus, OfferedEntry
from .reasons import Refused

# The builds a diff may be made against: those whose files school servers have had.
COMPARABLE_STATUSES = (BuildStatus.PUBLISHED, BuildStatus.OFFERED, BuildStatus.WITHDRAWN)
CACHE_SECONDS = 24 * 3600
# How many builds the build page's selector lists.
CHOICES = 100


def diff_baseline(build: Build) -> Build | None:
    """What the laptops would update from: the build of the last offered entry (the newest
    oatslite offers), or with none offered the newest build published before this one."""
    entry = (
        OfferedEntry.objects.active()
        .filter(build__manifest__isnull=False)
        .exclude(build=build)
        .select_related("build")
        .order_by("-position", "-id")
        .first()
    )
    if entry is not None:
        return entry.build
    earlier = Build.objects.filter(
        status__in=COMPARABLE_STATUSES, manifest__isnull=False, published_at__isnull=False
    ).exclude(pk=build.pk)
    if build.published_at:
        earlier = earlier.filter(published_at__lt=build.published_at)
    return earlier.order_by("-published_at", "-id").first()


def has_manifest(build: Build) -> bool:
    return BuildManifest.objects.filter(build=build).exists()


def diff_choices(build: Build):
    """The other builds with a manifest, newest first, for the build page's selector."""
    return (
        Build.objects.filter(manifest__isnull=False)
        .exclude(pk=build.pk)
        .order_by("-created_at", "-id")
        .only("name")[:CHOICES]
    )


def compare_builds(*, old: Build, new: Build) -> dict:
    """The diff from `old` to `new` as JSON data (README.md, "Build diff JSON"); Refused when
    either has no manifest (it never passed validation)."""
    key = (
        f"builddiff:1:{old.sha256}:{new.sha256}:"
        f"{settings.XO_UPDATE_OVERHEAD_BYTES}:{settings.LARGE_UPDATE_SHARE}"
    )
    data = cache.get(key)
    if data is None:
        manifests = {
            row.build_id: bytes(row.data)
            for row in BuildManifest.objects.filter(build__in=[old.pk, new.pk])
        }
        for build in (old, new):
            if build.pk not in manifests:
                raise Refused("diff_no_manifest", name=build.name)
        data = builddiff.diff_manifests(
            _served(old, manifests[old.pk]),
            _served(new, manifests[new.pk]),
            overhead_bytes=settings.XO_UPDATE_OVERHEAD_BYTES,
            large_share=settings.LARGE_UPDATE_SHARE,
        ).as_dict()
        cache.set(key, data, CACHE_SECONDS)
    return {"old": old.name, "new": new.name, **data}


def _served(build: Build, data: bytes):
    return builddiff.served_in_path_order(data, (build.archive_summary or {}).get("served", ""))


def impact_refusal(diff: dict | None) -> Refused | None:
    """Why promoting with this diff needs a written reason, or None: privileged changes
    first, then a large update."""
    if diff is None or not diff["needs_reason"]:
        return None
    if diff["privileged"]["count"]:
        return Refused(
            "promote_privileged_reason_required",
            against=diff["old"],
            count=diff["privileged"]["count"],
        )
    return Refused(
        "promote_large_reason_required",
        against=diff["old"],
        share=percent(diff["changed_share"]),
        limit=percent(diff["large_update_share"]),
    )


def promotion_diff(build: Build) -> dict | None:
    """The diff the promotion gate judges: against `diff_baseline`; None without one (the
    first build a deployment offers has nothing to compare with) or for a build validated
    before manifests were kept."""
    if not has_manifest(build):
        return None
    baseline = diff_baseline(build)
    if baseline is None:
        return None
    return compare_builds(old=baseline, new=build)
