"""The update impact of real builds: uploaded, validated and published like any other, then
compared through `impact`, the API and `manage.py build_diff`."""

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from releases import impact, offers
from releases.reasons import Refused

from ..factories import compress, tree_tar

TREE = {
    "etc": ("dir", 0o755),
    "etc/issue": b"OLPC OS\n",
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "usr": ("dir", 0o755),
    "usr/bin": ("dir", 0o755),
    "usr/bin/sugar": ("file", 0o755, b"#!/bin/sh\n" * 200),
    "usr/lib": ("dir", 0o755),
    "usr/lib/libsugar.so.1": b"\x7fELF" + b"s" * 40_000,
    "usr/lib/libsugar.so": ("symlink", "libsugar.so.1"),
    "usr/share": ("dir", 0o755),
    "usr/share/sugar": ("dir", 0o755),
    "usr/share/sugar/activities": ("dir", 0o755),
    "usr/share/sugar/activities/Write": ("dir", 0o755),
    "usr/share/sugar/activities/Write/activity.py": b"print('write')\n" * 100,
    "usr/share/sugar/activities/Write/icon.svg": b"<svg/>" * 100,
}


@pytest.fixture
def build_of(published):
    """A published build of `entries` (TREE changed by `changes`; None removes a path).
    Diffs are cached by the archives' sha256, which repeat from test to test: cleared."""
    cache.clear()

    def _build_of(name, changes=None, *, pristine="21021"):
        entries = dict(TREE)
        for path, spec in (changes or {}).items():
            if spec is None:
                entries.pop(path)
            else:
                entries[path] = spec
        return published(name, tarball=compress(tree_tar(entries, pristine=pristine), "bz2"))

    return _build_of


def test_one_changed_file(build_of):
    old, new = build_of("py801-1"), build_of("py801-2", {"etc/issue": b"OLPC OS 2\n"})
    diff = impact.compare_builds(old=old, new=new)
    assert (diff["old"], diff["new"]) == ("py801-1", "py801-2")
    assert diff["changed"]["count"] == diff["changed"]["content"] == 1
    assert diff["changed"]["entries"][0]["path"] == "etc/issue"
    assert diff["added"]["count"] == diff["removed"]["count"] == 0
    assert diff["school_server_transfer_bytes"] == len(b"OLPC OS 2\n")
    assert diff["laptop_cost_bytes"] == len(b"OLPC OS 2\n") + 16 * 1024**2
    assert diff["needs_reason"] is False


def test_a_renamed_tree_is_removed_and_added_and_a_new_pristine_id_changes_nothing(build_of):
    old = build_of("py801-1")
    renamed = {
        path.replace("activities/Write", "activities/Escribir"): spec
        for path, spec in TREE.items()
        if "activities/Write" in path
    }
    moved = {path: None for path in TREE if "activities/Write" in path} | renamed
    new = build_of("py802-1", moved, pristine="22022")
    diff = impact.compare_builds(old=old, new=new)
    assert diff["removed"]["count"] == diff["added"]["count"] == 3
    assert {row["path"] for row in diff["added"]["entries"]} == set(renamed)
    assert diff["changed"]["count"] == 0
    assert diff["top_directories"][0]["path"] == "usr/share"


def test_a_mode_only_change(build_of):
    old = build_of("py801-1")
    new = build_of("py801-2", {"usr/bin/sugar": ("file", 0o750, b"#!/bin/sh\n" * 200)})
    diff = impact.compare_builds(old=old, new=new)
    (row,) = diff["changed"]["entries"]
    assert (row["path"], row["what"], row["old_mode"], row["mode"]) == (
        "usr/bin/sugar",
        ["mode"],
        "0755",
        "0750",
    )
    assert diff["school_server_transfer_bytes"] == 0
    assert diff["privileged"]["count"] == 0


def test_a_setuid_file_added(build_of):
    old = build_of("py801-1")
    new = build_of("py801-2", {"usr/bin/pkexec": ("file", 0o4755, b"\x7fELF" + b"p" * 100)})
    diff = impact.compare_builds(old=old, new=new)
    assert diff["privileged"]["count"] == 1
    row = diff["privileged"]["entries"][0]
    assert (row["path"], row["change"], row["mode"], row["reasons"]) == (
        "usr/bin/pkexec",
        "added",
        "4755",
        ["setuid"],
    )
    assert diff["needs_reason"] is True


def test_a_retargeted_symlink(build_of):
    old = build_of("py801-1")
    new = build_of(
        "py801-2",
        {"usr/lib/libsugar.so.2": b"\x7fELF2", "usr/lib/libsugar.so": ("symlink", "libsugar.so.2")},
    )
    diff = impact.compare_builds(old=old, new=new)
    assert diff["changed"]["link"] == 1
    row = diff["changed"]["entries"][0]
    assert (row["old_link"], row["link"]) == ("libsugar.so.1", "libsugar.so.2")
    assert diff["added"]["count"] == 1


# --- Which build the pages compare with --------------------------------------------------


def test_the_baseline_is_the_newest_earlier_published_build_while_none_is_offered(build_of):
    first = build_of("py801-1")
    assert impact.diff_baseline(first) is None
    second = build_of("py801-2")
    third = build_of("py801-3")
    assert impact.diff_baseline(third) == second
    assert impact.diff_baseline(second) == first


def test_the_baseline_is_the_offered_build_when_there_is_one(build_of, cast):
    first = build_of("py801-1")
    offers.build_promote(build=first, acting_user=cast.carol, reason="first")
    build_of("py801-2")
    third = build_of("py801-3")
    assert impact.diff_baseline(third) == first
    # The offered build's own page compares with the one before it.
    assert impact.diff_baseline(first) is None


# --- The API and the command give the same data -------------------------------------------


def test_the_command_and_the_api_agree(client, cast, build_of):
    old = build_of("py801-1")
    new = build_of("py801-2", {"etc/passwd": b"root:x:0:0::/root:/bin/bash\n"})
    out = StringIO()
    call_command("build_diff", "py801-1", "py801-2", "--json", stdout=out)
    client.force_login(cast.dave)

    response = client.get(f"/api/builds/{new.name}/diff/{old.name}/")

    assert response.status_code == 200
    assert response.json() == json.loads(out.getvalue())
    assert response.json()["privileged"]["entries"][0]["reasons"] == ["sensitive"]


def test_the_command_prints_a_summary_with_privileged_changes_first(build_of):
    build_of("py801-1")
    build_of("py801-2", {"usr/bin/pkexec": ("file", 0o4755, b"x")})
    out = StringIO()
    call_command("build_diff", "py801-1", "py801-2", stdout=out)
    text = out.getvalue()
    assert "PRIVILEGED CHANGES: 1" in text
    assert text.index("usr/bin/pkexec") < text.index("Added:")


def test_the_command_names_a_missing_build(build_of):
    build_of("py801-1")
    with pytest.raises(CommandError, match="py999"):
        call_command("build_diff", "py801-1", "py999")


def test_the_api_answers_404_for_an_unknown_build_and_a_token_works(client, cast, build_of):
    from portal.services import api_token_create

    build_of("py801-1")
    _token, key = api_token_create(user=cast.alice, name="build machine")
    missing = client.get("/api/builds/py801-1/diff/py999/", HTTP_AUTHORIZATION=f"Token {key}")
    same = client.get("/api/builds/py801-1/diff/py801-1/", HTTP_AUTHORIZATION=f"Token {key}")
    assert missing.status_code == 404 and "py999" in missing.json()["error"]
    assert same.status_code == 200 and same.json()["changed"]["count"] == 0


def test_a_build_without_a_manifest_cannot_be_compared(build_of):
    old, new = build_of("py801-1"), build_of("py801-2")
    old.manifest.delete()
    with pytest.raises(Refused) as caught:
        impact.compare_builds(old=old, new=new)
    assert caught.value.code == "diff_no_manifest"


def test_two_real_40000_entry_builds(build_of, published):
    """Uploaded, validated and published like any build: 200 folders of 200 small files;
    the second changes one file in ten and adds a setuid one."""

    def entries(version):
        tree = {}
        for folder in range(200):
            base = f"usr/share/pkg{folder:03}"
            tree[base] = ("dir", 0o755)
            for i in range(199):
                changed = version and i % 10 == 0
                tree[f"{base}/f{i:03}"] = f"{folder}/{i}{'+' if changed else ''}".encode()
        if version:
            tree["usr/bin/pkexec"] = ("file", 0o4755, b"x")
        return tree

    old = published("py900-1", tarball=compress(tree_tar(entries(0)), "bz2"))
    new = published("py900-2", tarball=compress(tree_tar(entries(1)), "bz2"))
    assert new.member_count > 40_000
    diff = impact.compare_builds(old=old, new=new)
    # The root, usr, usr/share and usr/bin (folders tar made for members the archive does not
    # list, served all the same), 200 folders, 39,800 files, pkexec.
    assert diff["new_entries"] == 40_005
    assert diff["changed"]["count"] == diff["changed"]["content"] == 200 * 20
    # pkexec, and usr/bin, the folder tar makes for it.
    assert diff["added"]["count"] == 2 and diff["removed"]["count"] == 0
    assert diff["privileged"]["entries"][0]["path"] == "usr/bin/pkexec"
    assert len(diff["changed"]["entries"]) == 50
    assert len(json.dumps(diff)) < 30_000


def test_the_readme_names_every_field_of_the_json(build_of):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Update impact")[1].split("\n## ")[0]
    old = build_of("py801-1")
    new = build_of("py801-2", {"usr/bin/x": ("file", 0o4755, b"x"), "etc/issue": b"new\n"})
    diff = impact.compare_builds(old=old, new=new)
    fields = {*diff, *diff["added"], *diff["changed"], *diff["changed"]["entries"][0]}
    fields |= {*diff["privileged"]["entries"][0], *diff["top_directories"][0]}
    missing = sorted(name for name in fields if not re.search(rf"\b{name}\b", section))
    assert not missing
