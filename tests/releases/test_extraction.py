"""The archive summary, tested like a library: rows of the unpacked tree in, the build page's
summary out.

GNU tar decides what a build unpacks to and the walk reads it back (test_unpack.py runs both
for real); here each row is written by hand, in the walk's order (served tree first, its
root leading), to pin what the summary makes of it.
"""

import pytest

from releases.extraction import SHOWN, Summary, display, shown
from releases.manifest import ManifestEntry

SERVED = "versions/pristine/21021"
P = SERVED + "/"
# What the walk lists after the served tree: the folders it came in.
FRAME = [("versions", "d"), ("versions/pristine", "d")]


def row(path, kind="f", mode=None):
    if mode is None:
        mode = {"d": 0o755, "l": 0o777}.get(kind, 0o644)
    return ManifestEntry(path, kind, mode, 0, "", "")


def summarize(rows, served=SERVED):
    summary = Summary()
    for spec in rows:
        summary.add(row(*spec))
    return summary.finish(served)


def served_tree(*rows):
    """Rows as the walk lists a build under versions/pristine/21021: its root, the given
    rows (paths relative to it), then the frame around it."""
    return [(SERVED, "d"), *((P + path, *rest) for path, *rest in rows), *FRAME]


# --- What is served and what is thrown away -------------------------------------------------


def test_it_counts_the_tree_under_versions_pristine_as_served():
    summary = summarize(served_tree(("etc", "d"), ("etc/issue", "f")))

    assert summary["served"] == SERVED
    assert summary["served_entries"] == 3  # the tree's root, etc and etc/issue
    assert (summary["outside_count"], summary["outside"]) == (0, [])


def test_it_lists_what_the_school_server_throws_away_beside_the_served_tree():
    rows = [
        *served_tree(("bin", "d")),
        ("home", "d"),
        ("home/olpc", "d"),
        ("security/key", "f"),
        ("versions/contents/21021", "f"),
    ]

    summary = summarize(rows)

    assert summary["outside_count"] == 4
    assert summary["outside"] == ["home", "home/olpc", "security/key", "versions/contents/21021"]


def test_it_counts_dot_entries_beside_the_pristine_id_as_thrown_away():
    """The school server picks the first entry `ls` lists, which leaves dot entries out: GNU
    tar unpacks them, the unpack accepts them, and they are thrown away with the rest."""
    summary = summarize([*served_tree(("etc", "d")), ("versions/pristine/.keep", "f")])

    assert summary["served"] == SERVED
    assert summary["outside"] == ["versions/pristine/.keep"]


def test_it_serves_the_root_when_there_is_no_versions_pristine():
    rows = [("etc", "d"), ("etc/issue", "f"), ("versions", "d"), ("versions/contents/x", "f")]

    summary = summarize(rows, served="")

    assert summary["served"] == ""
    assert summary["served_entries"] == 2
    # Without versions/pristine, all of versions/ is thrown away, the folder included.
    assert summary["outside"] == ["versions", "versions/contents/x"]


def test_it_refuses_to_finish_with_another_served_tree_than_the_walk_listed_first():
    """The walk's first row and the session's pristine decision must agree, or every path
    in the summary would be relative to the wrong tree."""
    with pytest.raises(ValueError, match="21021"):
        summarize(served_tree(("etc", "d")), served="")
    with pytest.raises(ValueError, match="99999"):
        summarize(served_tree(("etc", "d")), served="versions/pristine/99999")
    with pytest.raises(ValueError, match="21021"):
        summarize([("etc", "d")], served=SERVED)


# --- Setuid and setgid ----------------------------------------------------------------------


def test_it_lists_setuid_and_setgid_files_with_their_modes():
    summary = summarize(
        served_tree(
            ("usr/bin/su", "f", 0o4755),
            ("usr/bin/wall", "f", 0o2555),
            ("usr/bin/ls", "f", 0o755),
        )
    )

    assert summary["setuid_count"] == 2
    assert summary["setuid"] == [["usr/bin/su", 0o4755], ["usr/bin/wall", 0o2555]]


def test_it_counts_every_hard_link_of_a_setuid_file():
    """A hard link row carries its file's mode: each name of a setuid file runs setuid."""
    summary = summarize(served_tree(("bin/su", "f", 0o4755), ("bin/su-again", "h", 0o4755)))

    assert summary["setuid_count"] == 2
    assert summary["setuid"] == [["bin/su", 0o4755], ["bin/su-again", 0o4755]]


def test_it_does_not_count_setgid_folders_or_setuid_names_outside_the_served_tree():
    """A setgid folder only passes its group on to new files; what is thrown away is never
    run, even when it is another name of a setuid file that is served."""
    rows = [
        *served_tree(("var/mail", "d", 0o2775), ("bin/su", "f", 0o4755)),
        ("home/su", "f", 0o4755),
        ("home/su-again", "h", 0o4755),
    ]

    summary = summarize(rows)

    assert (summary["setuid_count"], summary["setuid"]) == (1, [["bin/su", 0o4755]])
    assert summary["outside"] == ["home/su", "home/su-again"]


# --- World-writable, unreadable, devices ----------------------------------------------------


def test_it_lists_world_writable_files_and_folders_but_not_sticky_folders():
    summary = summarize(
        served_tree(
            ("tmp", "d", 0o1777),
            ("var/spool", "d", 0o777),
            ("etc/open", "f", 0o666),
            ("etc/open-again", "h", 0o666),
            ("etc/link", "l", 0o777),
        )
    )

    assert summary["world_writable"] == ["var/spool", "etc/open", "etc/open-again"]
    assert summary["world_writable_count"] == 3


def test_it_lists_files_without_owner_read_and_folders_without_owner_read_and_search():
    """The school server's rsync runs unprivileged under fakeroot, which keeps real modes."""
    summary = summarize(
        served_tree(
            ("etc/shadow", "f", 0o000),
            ("etc/shadow-again", "h", 0o000),
            ("etc/write-only", "f", 0o200),
            ("etc/readable", "f", 0o400),
            ("srv/no-search", "d", 0o600),
            ("srv/no-read", "d", 0o300),
            ("srv/plain", "d", 0o500),
            ("etc/link", "l", 0o000),
        )
    )

    assert summary["unreadable"] == [
        ["etc/shadow", 0o000],
        ["etc/shadow-again", 0o000],
        ["etc/write-only", 0o200],
        ["srv/no-search", 0o600],
        ["srv/no-read", 0o300],
    ]
    assert summary["unreadable_count"] == 5


def test_it_lists_device_nodes_and_fifos_with_their_kind():
    summary = summarize(
        served_tree(("dev/null", "c", 0o666), ("dev/sda", "b", 0o660), ("dev/initctl", "p"))
    )

    assert summary["devices"] == [["dev/null", "c"], ["dev/sda", "b"], ["dev/initctl", "p"]]
    assert summary["device_count"] == 3
    # A character device's 0666 is how /dev/null should be, not a world-writable file.
    assert summary["world_writable"] == []


# --- Bounds and names -----------------------------------------------------------------------


def test_it_bounds_every_list_but_keeps_the_counts_whole():
    many = SHOWN + 10
    rows = [
        *served_tree(*((f"bin/s{n}", "f", 0o4777) for n in range(many))),
        *((f"home/h{n}", "f") for n in range(many)),
    ]

    summary = summarize(rows)

    for kind in ("setuid", "world_writable"):
        assert summary[f"{kind}_count"] == many
        assert len(summary[kind]) == SHOWN
    assert summary["outside_count"] == many
    assert summary["outside"] == [f"home/h{n}" for n in range(SHOWN)]


def test_it_shows_names_that_are_not_utf8_as_escapes():
    """The walk hands over such names as surrogate escapes; no database or page may meet
    them, so every path the summary gives is shown with \\xNN."""
    served = "versions/pristine/os\udce9"
    rows = [
        (served, "d"),
        (served + "/caf\udce9", "f", 0o4755),
        *FRAME,
        ("home/caf\udce9", "f"),
    ]

    summary = summarize(rows, served=served)

    assert summary["served"] == "versions/pristine/os\\xe9"
    assert summary["setuid"] == [["caf\\xe9", 0o4755]]
    assert summary["outside"] == ["home/caf\\xe9"]


def test_display_leaves_utf8_alone_and_escapes_only_the_bytes_that_are_not():
    assert display("café") == "café"
    assert display("caf\udce9 café") == "caf\\xe9 café"


def test_shown_makes_a_refusals_parameters_displayable_and_short():
    assert shown("a" * 200, 10) == "a" * 10 + "…"
    assert shown(["os\udce9", "os2"]) == "os\\xe9, os2"
    assert shown(7) == 7
