"""The extraction model, tested like a library: members in, refusal or served tree out.

What GNU tar really does with each of these archives is checked against the real tar in
test_differential.py; here each rule is pinned with the reason it gives.
"""

import pytest
from django.utils import translation

from releases.extraction import SHOWN, ExtractionModel
from releases.reasons import Refused, render

PRISTINE = [("versions", "d"), ("versions/pristine", "d"), ("versions/pristine/21021", "d")]
P = "versions/pristine/21021/"


def replay(members, *, allow_device_nodes=False):
    model = ExtractionModel(allow_device_nodes=allow_device_nodes)
    for member in members:
        path, kind, *rest = member
        link = rest[0] if rest else ""
        mode = rest[1] if len(rest) > 1 else (0o755 if kind == "d" else 0o644)
        model.add(path, kind, mode=mode, link=link)
    return model.finish()


def refusal(members, **options):
    with pytest.raises(Refused) as caught:
        replay(members, **options)
    return caught.value.code, caught.value.params


def test_it_serves_the_single_entry_under_versions_pristine():
    served = replay([*PRISTINE, (P + "etc", "d"), (P + "etc/issue", "f")])

    assert served.pristine_id == "21021"
    assert served.summary["served"] == "versions/pristine/21021"
    assert served.summary["served_entries"] == 3  # the tree's root, etc and etc/issue


def test_it_serves_the_root_when_there_is_no_versions_pristine():
    served = replay([("etc/issue", "f"), ("versions/contents/x", "f")])

    assert served.pristine_id == ""
    assert served.summary["served"] == ""
    assert served.summary["outside"] == ["versions/contents/x"]


def test_it_lists_what_the_school_server_throws_away():
    served = replay([*PRISTINE, (P + "bin", "d"), ("home/olpc", "d"), ("security/key", "f")])

    assert served.summary["outside_count"] == 2
    assert served.summary["outside"] == ["home/olpc", "security/key"]


def test_it_accepts_parents_that_tar_creates_itself():
    served = replay([(P + "usr/share/doc/README", "f")])

    assert served.pristine_id == "21021"


def test_it_accepts_absolute_symlink_targets_and_setuid_programs():
    """An OS tree becomes a laptop's root: /etc/localtime -> /usr/share/... is normal."""
    served = replay(
        [
            *PRISTINE,
            (P + "etc/localtime", "l", "/usr/share/zoneinfo/UTC"),
            (P + "usr/bin/su", "f", "", 0o4755),
            (P + "usr/bin/wall", "f", "", 0o2555),
        ]
    )

    assert served.summary["setuid_count"] == 2
    assert served.summary["setuid"] == [["usr/bin/su", 0o4755], ["usr/bin/wall", 0o2555]]


def test_it_lists_world_writable_entries_but_not_sticky_directories():
    served = replay(
        [
            *PRISTINE,
            (P + "tmp", "d", "", 0o1777),
            (P + "var/spool", "d", "", 0o777),
            (P + "etc/open", "f", "", 0o666),
        ]
    )

    assert served.summary["world_writable"] == ["var/spool", "etc/open"]
    assert served.summary["world_writable_count"] == 2


def test_it_takes_a_repeated_directorys_last_mode():
    served = replay([*PRISTINE, (P + "var", "d", "", 0o777), (P + "var", "d", "", 0o755)])

    assert served.summary["world_writable"] == []


def test_it_bounds_the_lists_but_not_the_counts():
    many = [(P + f"bin/s{n}", "f", "", 0o4755) for n in range(SHOWN + 10)]

    served = replay([*PRISTINE, *many])

    assert served.summary["setuid_count"] == SHOWN + 10
    assert len(served.summary["setuid"]) == SHOWN


def test_it_refuses_a_member_under_a_file():
    assert refusal([*PRISTINE, (P + "etc", "f"), (P + "etc/passwd", "f")]) == (
        "archive_under_non_directory",
        {"path": P + "etc/passwd", "parent": P + "etc", "kind": "f"},
    )


def test_it_refuses_a_member_written_through_a_symlink():
    code, params = refusal([*PRISTINE, (P + "tmp", "l", "/tmp"), (P + "tmp/evil", "f")])

    assert code == "archive_under_non_directory"
    assert (params["parent"], params["kind"]) == (P + "tmp", "l")


def test_it_refuses_a_member_under_a_hard_link():
    members = [*PRISTINE, (P + "a", "f"), (P + "b", "h", P + "a"), (P + "b/c", "f")]

    assert refusal(members)[1]["kind"] == "h"


def test_it_refuses_a_hard_link_to_a_later_member():
    assert refusal([*PRISTINE, (P + "b", "h", P + "a"), (P + "a", "f")]) == (
        "archive_hardlink_target",
        {"path": P + "b", "target": P + "a", "problem": "missing"},
    )


def test_it_refuses_a_hard_link_to_a_directory():
    code, params = refusal([*PRISTINE, (P + "b", "h", P.rstrip("/"))])

    assert (code, params["problem"]) == ("archive_hardlink_target", "d")


def test_it_refuses_a_hard_link_to_a_folder_tar_made_itself():
    code, params = refusal([(P + "etc/issue", "f"), (P + "x", "h", P + "etc")])

    assert (code, params["problem"]) == ("archive_hardlink_target", "d")


def test_it_accepts_a_hard_link_to_an_earlier_file_or_hard_link():
    members = [*PRISTINE, (P + "a", "f"), (P + "b", "h", P + "a"), (P + "c", "h", P + "b")]

    assert replay(members).pristine_id == "21021"


def test_it_refuses_a_repeated_file_and_says_which_copy_wins():
    code, params = refusal([*PRISTINE, (P + "etc/passwd", "f"), (P + "etc/passwd", "f")])

    assert code == "archive_duplicate"
    assert params == {"path": P + "etc/passwd", "first": "f", "second": "f"}
    with translation.override("en"):
        message = render(code, params)
    assert "(first as a file, then as a file): GNU tar would keep only the later" in message


def test_it_refuses_a_file_replacing_a_folder_tar_made_itself():
    code, params = refusal([(P + "etc/issue", "f"), (P + "etc", "f")])

    assert (code, params["first"], params["second"]) == ("archive_duplicate", "d", "f")


def test_it_accepts_a_repeated_directory():
    assert replay([*PRISTINE, *PRISTINE]).pristine_id == "21021"


@pytest.mark.parametrize("kind", ["c", "b", "p"])
def test_it_refuses_device_nodes_unless_allowed(kind):
    members = [*PRISTINE, (P + "dev/node", kind)]

    assert refusal(members) == ("archive_device_node", {"path": P + "dev/node", "kind": kind})
    served = replay(members, allow_device_nodes=True)
    assert served.summary["devices"] == [["dev/node", kind]]


def test_it_refuses_a_symlink_as_the_served_tree():
    """The school server's `[ -d ]` follows it, then `mv -T` moves what it points to."""
    members = [("versions", "d"), ("versions/pristine", "d"), (P.rstrip("/"), "l", "/")]

    assert refusal(members) == (
        "archive_served_not_directory",
        {"path": "versions/pristine/21021", "kind": "l"},
    )


def test_it_refuses_a_file_as_the_served_tree():
    members = [("versions/pristine/README", "f")]

    assert refusal(members)[0] == "archive_served_not_directory"


@pytest.mark.parametrize("path", ["versions", "versions/pristine"])
def test_it_refuses_versions_that_are_not_directories(path):
    assert refusal([(path, "l", "/")]) == (
        "archive_versions_not_directory",
        {"path": path, "kind": "l"},
    )


@pytest.mark.parametrize("entry", [".hidden", "with space", "tab\there", "new\nline"])
def test_it_refuses_a_served_entry_the_school_servers_ls_would_not_find(entry):
    members = [(f"versions/pristine/{entry}", "d")]

    assert refusal(members) == ("archive_pristine_name", {"entry": entry})


def test_it_refuses_several_entries_under_versions_pristine():
    members = [(P + "a", "f"), ("versions/pristine/99999/b", "f")]

    assert refusal(members) == (
        "archive_several_pristine",
        {"count": 2, "entries": "21021, 99999"},
    )


def test_it_refuses_an_empty_symlink_target():
    assert refusal([*PRISTINE, (P + "x", "l", "")])[0] == "archive_symlink_empty"


def test_it_refuses_a_symlink_target_the_kernel_cannot_store():
    assert refusal([*PRISTINE, (P + "x", "l", "y" * 4096)])[0] == "archive_name_too_long"


def test_it_renders_kinds_in_the_readers_language():
    with translation.override("es"):
        message = render("archive_under_non_directory", {"path": "a/b", "parent": "a", "kind": "l"})

    assert "enlace simbólico" in message


def test_it_accepts_a_symlink_target_with_a_long_component():
    """symlink() stores the target as it is; only a path it is looked up as is bounded."""
    served = replay([*PRISTINE, (P + "x", "l", "y" * 300)])

    assert served.pristine_id == "21021"
