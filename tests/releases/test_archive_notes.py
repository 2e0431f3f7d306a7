"""What the build carries, on the build page and in the API's build JSON."""

import tarfile

import pytest
from django.test import Client
from django.urls import reverse

from portal.services import api_token_create

from ..factories import compress, tar_bytes

P = "versions/pristine/21021/"


def member(name, mode, type_=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.mode = type_, mode
    return info, None


@pytest.fixture
def carrying(published):
    """A published build with a setuid program, a world-writable folder, a sticky /tmp and
    a home folder beside the served tree."""
    extra = [
        member(P + "usr", 0o755, tarfile.DIRTYPE),
        member(P + "usr/bin", 0o755, tarfile.DIRTYPE),
        member(P + "usr/bin/su", 0o4755),
        member(P + "tmp", 0o1777, tarfile.DIRTYPE),
        member(P + "var", 0o755, tarfile.DIRTYPE),
        member(P + "var/drop", 0o777, tarfile.DIRTYPE),
        member("home", 0o755, tarfile.DIRTYPE),
        member("home/olpc", 0o755, tarfile.DIRTYPE),
    ]
    return published(tarball=compress(tar_bytes({"etc/issue": b"OLPC\n"}, extra=extra), "bz2"))


def test_the_build_page_lists_what_matters_for_security(carrying, cast):
    client = Client()
    client.force_login(cast.dave)
    client.cookies["django_language"] = "en"

    page = client.get(reverse("releases:build_detail", args=[carrying.name])).content.decode()

    assert "What the build carries" in page
    assert "<code>/usr/bin/su</code> 4755" in page
    assert "<code>/var/drop</code>" in page and "<code>/tmp</code>" not in page
    assert "2 entries outside the served tree, which school servers throw away" in page
    assert "<code>home/olpc</code>" in page


def test_the_api_carries_the_same_as_counts_and_lists(carrying, cast):
    _token, key = api_token_create(user=cast.alice)
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")

    data = client.get(f"/api/builds/{carrying.name}/").json()

    assert data["archive"] == {
        "served": "versions/pristine/21021",
        # The root, etc and etc/issue, usr, usr/bin and su, tmp, var and var/drop: tar makes
        # etc itself, a real folder the school server serves.
        "served_entries": 9,
        "setuid_count": 1,
        "setuid": [["usr/bin/su", 0o4755]],
        "world_writable_count": 1,
        "world_writable": ["var/drop"],
        "device_count": 0,
        "devices": [],
        "unreadable_count": 0,
        "unreadable": [],
        "outside_count": 2,
        "outside": ["home", "home/olpc"],
    }
    assert data["recheck"] is None
