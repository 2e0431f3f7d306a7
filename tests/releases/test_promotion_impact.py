"""The update impact gate: promoting a build with privileged changes or a large update needs
a written reason, audited like the coverage gate's; in the service and on the page."""

from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from releases import offers
from releases.audit import AuditAction
from releases.models import AuditEvent, BuildStatus, OfferedEntry
from releases.reasons import Refused
from schools.models import SchoolServer, SyncState

from ..factories import compress, english_client, tree_tar

TREE = {
    "etc/issue": b"OLPC OS\n",
    "usr/lib/libsugar.so": b"\x7fELF" + b"s" * 4000,
    "usr/share/doc/README": b"readme\n" * 100,
}


@pytest.fixture
def offered(cast, published):
    """py801-1 offered to the laptops: what later builds are compared with."""
    cache.clear()
    build = published("py801-1", tarball=compress(tree_tar(TREE), "bz2"))
    offers.build_promote(build=build, acting_user=cast.carol, reason="the first one")
    return build


@pytest.fixture
def candidate(published, offered):
    """A published build changed from py801-1 by `changes`, held by every school server, so
    only the impact gate may ask for a reason."""

    def _candidate(changes, name="py801-2"):
        build = published(name, tarball=compress(tree_tar({**TREE, **changes}), "bz2"))
        xs = SchoolServer.objects.get_or_create(
            hostname="xs.local", defaults={"name": "xs", "school": "Escuela"}
        )[0]
        SchoolServer.objects.filter(pk=xs.pk).update(last_report_at=timezone.now())
        SyncState.objects.create(server=xs, build=build, build_name=build.name, status="verified")
        return build

    return _candidate


SETUID = {"usr/bin/pkexec": ("file", 0o4755, b"\x7fELF")}
LARGE = {"usr/lib/libsugar.so": b"\x7fELF" + b"t" * 4000}


def test_a_small_harmless_update_needs_no_reason(cast, candidate):
    build = candidate({"etc/issue": b"OLPC OS 2\n"})
    offers.build_promote(build=build, acting_user=cast.carol)
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED
    assert not AuditEvent.objects.filter(action=AuditAction.IMPACT_OVERRIDE).exists()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        (SETUID, "promote_privileged_reason_required"),
        ({"etc/passwd": b"root:x:0:0::/root:/bin/sh\n"}, "promote_privileged_reason_required"),
        (LARGE, "promote_large_reason_required"),
    ],
)
def test_it_refuses_a_privileged_or_large_update_without_a_reason(cast, candidate, changes, code):
    build = candidate(changes)
    with pytest.raises(Refused) as caught:
        offers.build_promote(build=build, acting_user=cast.carol, reason="   ")
    assert caught.value.code == code
    assert "py801-1" in caught.value.message
    build.refresh_from_db()
    assert build.status == BuildStatus.PUBLISHED
    assert not OfferedEntry.objects.filter(build=build).exists()


def test_a_written_reason_overrides_the_impact_gate_and_is_audited(cast, candidate):
    build = candidate(SETUID)
    offers.build_promote(build=build, acting_user=cast.carol, reason="pkexec for the new updater")
    event = AuditEvent.objects.get(build=build, action=AuditAction.IMPACT_OVERRIDE)
    assert event.actor == cast.carol and event.code == "impact_override"
    assert event.params["reason"] == "pkexec for the new updater"
    assert (event.params["against"], event.params["privileged"]) == ("py801-1", 1)
    assert "pkexec for the new updater" in event.message
    assert OfferedEntry.objects.get(build=build).reason == "pkexec for the new updater"


def test_the_first_build_offered_has_nothing_to_compare_with(cast, published):
    cache.clear()
    build = published("py700-1", tarball=compress(tree_tar({**TREE, **SETUID}), "bz2"))
    preview = offers.promotion_preview(build=build, acting_user=cast.carol, priority="normal")
    assert preview.impact is None and preview.impact_refusal is None


# --- The page ---------------------------------------------------------------------------------


def promote_page(build):
    return f"/builds/{build.name}/promote/"


def test_the_promotion_page_shows_the_impact_above_the_updates_cfg_diff(cast, candidate):
    build = candidate(SETUID)
    client = english_client()
    client.force_login(cast.carol)
    body = client.get(promote_page(build)).content.decode()
    assert body.index('id="impact"') < body.index('id="promote-diff"')
    assert 'id="impact-privileged"' in body and "/usr/bin/pkexec" in body
    assert 'id="impact-reason-needed"' in body
    assert 'id="impact-laptop"' in body and "16.0" in body


def test_confirming_without_a_reason_explains_the_impact_gate(cast, candidate):
    build = candidate(LARGE)
    client = english_client()
    client.force_login(cast.carol)
    response = client.post(promote_page(build), {"priority": "normal", "reason": ""})
    assert response.status_code == 400
    assert "large update" in response.content.decode()
    assert not OfferedEntry.objects.filter(build=build).exists()
    response = client.post(promote_page(build), {"priority": "normal", "reason": "ok"})
    assert response.status_code == 302
    assert OfferedEntry.objects.filter(build=build, active=True).exists()


def test_the_build_page_compares_with_the_offered_build_or_the_one_chosen(
    cast, candidate, published
):
    build = candidate(SETUID)
    other = published("py800-9", tarball=compress(tree_tar(TREE), "bz2"))
    client = english_client()
    client.force_login(cast.dave)
    body = client.get(f"/builds/{build.name}/").content.decode()
    assert "compared with py801-1" in body and "/usr/bin/pkexec" in body
    assert '<option value="py800-9">' in body
    chosen = client.get(f"/builds/{build.name}/?against={other.name}").content.decode()
    assert "compared with py800-9" in chosen
    unknown = client.get(f"/builds/{build.name}/?against=nope").content.decode()
    assert 'id="impact-problem"' in unknown


def test_the_gate_judges_against_what_laptops_have_when_the_promotion_locks(
    cast, candidate, published, monkeypatch
):
    """The diff is taken before the row lock; a build offered in between is compared with."""
    with_setuid = compress(tree_tar({**TREE, **SETUID}), "bz2")
    before = published("py801-0", tarball=with_setuid)
    offers.build_promote(build=before, acting_user=cast.carol, reason="has pkexec")
    build = candidate(SETUID)  # nothing privileged against py801-0
    plain = published("py801-3", tarball=compress(tree_tar(TREE), "bz2"))
    real = offers.impact.promotion_diff
    calls = []

    def offered_meanwhile(target):
        calls.append(target.name)
        diff = real(target)
        if len(calls) == 1:
            assert diff["old"] == "py801-0" and not diff["needs_reason"]
            offers.build_promote(build=plain, acting_user=cast.carol, reason="in between")
        return diff

    monkeypatch.setattr(offers.impact, "promotion_diff", offered_meanwhile)
    with pytest.raises(Refused) as caught:
        offers.build_promote(build=build, acting_user=cast.carol)
    assert caught.value.code == "promote_privileged_reason_required"
    assert "py801-3" in caught.value.message


def test_the_promote_command_asks_for_a_reason_too(cast, candidate):
    build = candidate(SETUID)
    with pytest.raises(CommandError, match="privileged"):
        call_command("promote", build.name, "--by", "carol")
    call_command("promote", build.name, "--by", "carol", "--reason", "pkexec", stdout=StringIO())
    assert AuditEvent.objects.filter(build=build, action=AuditAction.IMPACT_OVERRIDE).exists()
