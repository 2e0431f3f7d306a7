"""The XO helper: a one-time link, bound to one build, with which an XO computes the build's
contents hash with its own bitfrost and sends it back.

The link serves a script (`xo/xo-contents-hash`, for the XO's Python 2.6+ or 3) filled in for
the build, the build's `.contents` file, and takes the hash the script posts. It is usable
until XO_HELPER_TTL has passed or a hash was taken with it.

Callers authorise making a link (`access`: whoever may edit the build). The token is the
only authority of the XO's requests; only its SHA-256 is kept, and the hash posted with it
is recorded as entered by the user who made the link.
"""

import hashlib
import json
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from . import services
from .audit import AuditAction, audit
from .models import HASH_EDITABLE_STATUSES, Build, BuildStatus, XoHelper
from .reasons import Refused

SCRIPT = Path(__file__).resolve().parent / "xo" / "xo-contents-hash"
# The script's settings, replaced by their values as Python literals.
PLACEHOLDERS = ("BUILD", "CONTENTS_URL", "CONTENTS_SHA256", "HASH_URL", "BUILD_PAGE", "MESSAGES")


def script_messages() -> dict:
    """What the script says, in the active language (the script formats them)."""
    return {
        "no_bitfrost": _(
            "bitfrost.contents.utils cannot be imported: run this on an XO, with its own python."
        ),
        "downloading": _("Downloading %(file)s …"),
        "download_failed": _(
            "Could not download %(file)s: %(error)s. Check the network and run this again."
        ),
        "damaged": _(
            "The downloaded %(file)s has SHA-256 %(got)s, not %(expected)s: it was damaged on "
            "the way. Run this again."
        ),
        "computing": _("Computing the contents hash with bitfrost …"),
        "hash_failed": _(
            "bitfrost could not compute the hash (%(error)s): this XO's software may be "
            "damaged; try another XO."
        ),
        "computed": _("Contents hash of %(build)s: %(value)s"),
        "not_sent": _(
            "The portal did not take it (%(error)s). Paste this hash on the build's page "
            "instead (%(page)s):"
        ),
    }


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def helper_create(*, build: Build, acting_user, now=None) -> tuple[XoHelper, str]:
    """A new link for `build`, and its token (shown once). Refused for a build whose hash can
    no longer change, or that failed validation (its .contents may be what is wrong)."""
    if build.status == BuildStatus.INVALID:
        raise Refused("xo_helper_invalid_build")
    if build.status not in HASH_EDITABLE_STATUSES:
        raise Refused("hash_not_editable")
    now = now or timezone.now()
    token = secrets.token_urlsafe(12)  # 96 bits, short enough to type on an XO
    with transaction.atomic():
        helper = XoHelper.objects.create(
            build=build,
            created_by=acting_user,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.XO_HELPER_TTL),
            token_hash=_token_hash(token),
        )
        audit(
            action=AuditAction.XO_HELPER,
            actor=acting_user,
            build=build,
            code="xo_helper_created",
            params={"expires": helper.expires_at.isoformat()},
        )
    return helper, token


def helper_find(token: str, *, now=None) -> XoHelper:
    """The usable link with `token`, with its build; Refused("xo_helper_gone") otherwise."""
    helper = XoHelper.objects.select_related("build").filter(token_hash=_token_hash(token)).first()
    if helper is None or not helper.usable(now):
        raise Refused("xo_helper_gone")
    return helper


def helper_script(helper: XoHelper, *, urls: dict) -> str:
    """The script filled in for `helper`'s build; `urls` gives CONTENTS_URL, HASH_URL and
    BUILD_PAGE as absolute URLs."""
    values = {
        "BUILD": helper.build.name,
        "CONTENTS_SHA256": helper.build.contents_sha256,
        "MESSAGES": script_messages(),
        **urls,
    }
    text = SCRIPT.read_text(encoding="utf-8")
    for name in PLACEHOLDERS:
        # ASCII JSON is a valid Python literal (the script reads its strings as unicode on
        # Python 2 too: unicode_literals), whatever the language of the messages.
        value = values[name] if name == "MESSAGES" else str(values[name])
        text = text.replace(f'"@{name}@"', json.dumps(value, ensure_ascii=True))
    return text


def helper_submit(*, token: str, value: str, now=None) -> Build:
    """Record the hash an XO posted with `token`, as entered by the link's creator, and use
    the link up. A refused hash (malformed, or not the one the command computed) leaves the
    link usable, so the XO can try again."""
    now = now or timezone.now()
    with transaction.atomic():
        helper = (
            XoHelper.objects.select_for_update()
            .select_related("build", "created_by")
            .filter(token_hash=_token_hash(token))
            .first()
        )
        if helper is None or not helper.usable(now):
            raise Refused("xo_helper_gone")
        build = services.build_set_contents_hash(
            build=helper.build, acting_user=helper.created_by, value=value, via_xo_helper=True
        )
        XoHelper.objects.filter(pk=helper.pk).update(used_at=now)
    return build
