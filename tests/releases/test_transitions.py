"""The state table: `audit.build_transition` makes exactly the changes `BUILD_TRANSITIONS`
lists, each with its audit row, and refuses every other pair without touching anything."""

import itertools

import pytest
from django.db.models import F

from releases.audit import AuditAction, TransitionNotAllowed, build_transition
from releases.models import BUILD_TRANSITIONS, AuditEvent, Build, BuildStatus

PAIRS = list(itertools.product(BuildStatus, BuildStatus))
ALLOWED = [(a, b) for a, b in PAIRS if b in BUILD_TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in PAIRS if a != b and b not in BUILD_TRANSITIONS[a]]


def a_build(cast, status):
    build = Build.objects.create(
        name=f"b-{status}",
        compression="bz2",
        original_filename=f"b-{status}-tree.tar.bz2",
        size=1,
        md5="0" * 32,
        sha256="0" * 64,
        contents_size=1,
        contents_sha256="0" * 64,
        store_dir=f"b-{status}",
        uploaded_by=cast.alice,
    )
    Build.objects.filter(pk=build.pk).update(status=status)
    return build


def test_the_table_names_every_state_and_only_states():
    assert set(BUILD_TRANSITIONS) == set(BuildStatus)
    assert all(set(targets) <= set(BuildStatus) for targets in BUILD_TRANSITIONS.values())
    # Nothing leaves the end states; a build enters as uploaded and nothing goes back to it
    # but a hand-back from validation.
    assert BUILD_TRANSITIONS[BuildStatus.RETIRED] == set()
    assert BUILD_TRANSITIONS[BuildStatus.INVALID] == set()
    into_uploaded = {a for a, b in ALLOWED if b == BuildStatus.UPLOADED}
    assert into_uploaded == {BuildStatus.VALIDATING}


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=lambda s: str(s))
def test_an_allowed_change_is_made_with_its_audit_row(cast, source, target):
    build = a_build(cast, source)
    moved = build_transition(
        build.pk,
        from_statuses=[source],
        to=target,
        actor=cast.root,
        code="requeued",
        params={"seconds": 1},
        attempts=F("attempts") + 1,
    )
    assert moved is not None and moved.status == target
    assert (moved.status_code, moved.status_params, moved.attempts) == (
        "requeued",
        {"seconds": 1},
        1,
    )
    event = AuditEvent.objects.get(build=build)
    assert (event.action, event.from_status, event.to_status) == (
        AuditAction.STATUS,
        source,
        target,
    )
    assert (event.actor, event.code, event.params) == (cast.root, "requeued", {"seconds": 1})


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=lambda s: str(s))
def test_a_change_the_table_lacks_is_refused_and_changes_nothing(cast, source, target):
    build = a_build(cast, source)
    with pytest.raises(TransitionNotAllowed):
        build_transition(build.pk, from_statuses=[source], to=target, code="x")
    build.refresh_from_db()
    assert (build.status, build.status_code) == (source, "")
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(("source", "target"), ALLOWED[:3], ids=lambda s: str(s))
def test_a_build_found_elsewhere_is_left_alone(cast, source, target):
    """Someone else got there first: no change, no audit row, None."""
    build = a_build(cast, target)
    assert build_transition(build.pk, from_statuses=[source], to=target) is None
    build.refresh_from_db()
    assert build.status == target
    assert not AuditEvent.objects.exists()


def test_asking_for_the_state_it_is_in_changes_nothing(cast):
    build = a_build(cast, BuildStatus.OFFERED)
    from_statuses = [BuildStatus.OFFERED, BuildStatus.WITHDRAWN]
    assert build_transition(build.pk, from_statuses=from_statuses, to=BuildStatus.OFFERED) is None
    assert not AuditEvent.objects.exists()


def test_an_unknown_build_is_none(db):
    assert build_transition(10**9, from_statuses=[BuildStatus.UPLOADED], to="validating") is None
