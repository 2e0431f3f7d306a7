"""The build diff as a library: manifests in, impact out, in one merge pass."""

import gzip
import json
import random
import tracemalloc

import pytest

from releases.builddiff import (
    diff_manifests,
    directory_of,
    path_key,
    read_manifest,
    served_in_path_order,
    served_only,
)
from releases.manifest import ManifestEntry

SHA = {letter: letter * 64 for letter in "abcdef"}


def f(path, size=100, sha="a", mode=0o644):
    return ManifestEntry(path, "f", mode, size, SHA[sha], "")


def d(path, mode=0o755):
    return ManifestEntry(path, "d", mode, 0, "", "")


def link(path, target):
    return ManifestEntry(path, "l", 0o777, 0, "", target)


def stored(entries) -> bytes:
    """A manifest as validation stores it (`archive._ManifestWriter`)."""
    lines = "".join(
        json.dumps([e.path, e.type, e.mode, e.size, e.sha256, e.link], separators=(",", ":")) + "\n"
        for e in entries
    )
    return gzip.compress(lines.encode(), mtime=0)


def diff(old, new, **kwargs):
    kwargs.setdefault("overhead_bytes", 0)
    order = lambda entries: sorted(entries, key=lambda e: path_key(e.path))  # noqa: E731
    return diff_manifests(order(old), order(new), **kwargs).as_dict()


BASE = [d("."), d("etc"), f("etc/issue", 10), d("usr"), d("usr/lib"), f("usr/lib/a.so", 1000)]


def test_identical_trees_change_nothing():
    result = diff(BASE, BASE)
    assert result["unchanged"] == len(BASE)
    assert result["added"]["count"] == result["removed"]["count"] == result["changed"]["count"] == 0
    assert result["laptop_cost_bytes"] == 0
    assert result["needs_reason"] is False


def test_it_counts_added_removed_and_changed_entries_with_their_bytes():
    new = [*BASE[:2], f("etc/issue", 12, "b"), *BASE[3:], f("usr/lib/b.so", 500)]
    result = diff([*BASE, f("etc/motd", 7)], new)
    assert (result["added"]["count"], result["added"]["bytes"]) == (1, 500)
    assert (result["removed"]["count"], result["removed"]["bytes"]) == (1, 7)
    assert (result["changed"]["count"], result["changed"]["bytes"]) == (1, 12)
    assert result["changed"]["content"] == 1
    assert result["changed"]["entries"][0]["what"] == ["content"]
    assert result["school_server_transfer_bytes"] == 512
    assert result["served_bytes"] == 10 + 2 + 1000 + 500


def test_the_laptop_cost_adds_the_update_overhead():
    new = [*BASE, f("usr/lib/b.so", 500)]
    assert diff(BASE, new, overhead_bytes=16 << 20)["laptop_cost_bytes"] == 500 + (16 << 20)


def test_a_mode_only_change_costs_the_laptop_a_copy_but_moves_no_data():
    new = [*BASE[:5], f("usr/lib/a.so", 1000, mode=0o755)]
    result = diff(BASE, new)
    assert result["changed"]["entries"][0]["what"] == ["mode"]
    assert result["changed"]["entries"][0]["old_mode"] == "0644"
    assert result["changed"]["entries"][0]["mode"] == "0755"
    assert result["laptop_cost_bytes"] == 1000
    assert result["school_server_transfer_bytes"] == 0


def test_a_retargeted_symlink_is_a_link_change_that_costs_nothing():
    old = [*BASE, link("usr/lib/current", "a.so")]
    new = [*BASE, link("usr/lib/current", "b.so")]
    result = diff(old, new)
    assert result["changed"]["link"] == 1
    row = result["changed"]["entries"][0]
    assert (row["old_link"], row["link"], row["what"]) == ("a.so", "b.so", ["link"])
    assert result["laptop_cost_bytes"] == 0


def test_a_file_that_becomes_a_symlink_is_a_kind_change():
    result = diff(BASE, [*BASE[:5], link("usr/lib/a.so", "b.so")])
    assert result["changed"]["kind"] == 1
    assert result["changed"]["entries"][0]["what"] == ["kind"]


def test_the_top_directories_carry_the_most_changed_bytes():
    new = [*BASE, f("usr/lib/x/big", 5000), f("usr/share/doc/y", 300), f("vmlinuz", 800)]
    top = diff(BASE, new)["top_directories"]
    assert [(row["path"], row["bytes"]) for row in top] == [
        ("usr/lib", 5000),
        (".", 800),
        ("usr/share", 300),
    ]
    assert directory_of("usr/lib/python3/x.py") == "usr/lib"


@pytest.mark.parametrize(
    ("old", "new", "reasons"),
    [
        ([f("bin/su", mode=0o755)], [f("bin/su", mode=0o4755)], ["setuid"]),
        ([], [f("bin/newgrp", mode=0o2755)], ["setuid"]),
        ([], [d("srv/drop", 0o777)], ["world_writable"]),
        ([], [f("etc/motd", mode=0o666)], ["world_writable"]),
        ([], [ManifestEntry("dev/sda", "b", 0o660, 0, "", "")], ["device"]),
        ([f("etc/passwd")], [f("etc/passwd", sha="b")], ["sensitive"]),
        ([], [f("etc/sudoers.d/staff")], ["sensitive"]),
        ([], [f("etc/cron.daily/job", mode=0o755)], ["sensitive"]),
        ([], [f("root/.ssh/authorized_keys", mode=0o600)], ["sensitive"]),
        ([f("etc/group")], [], ["sensitive"]),
    ],
)
def test_privileged_changes_are_listed_and_need_a_reason(old, new, reasons):
    result = diff([*BASE, *old], [*BASE, *new])
    assert result["privileged"]["count"] == 1
    assert result["privileged"]["entries"][0]["reasons"] == reasons
    assert result["needs_reason"] is True


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([f("bin/su", mode=0o4755)], [f("bin/su", mode=0o4755)]),  # unchanged setuid
        ([f("bin/su", mode=0o4755)], [f("bin/su", mode=0o755)]),  # privilege taken away
        ([f("bin/su", mode=0o4755)], []),
        ([], [d("tmp", 0o1777)]),  # sticky, as /tmp should be
        ([], [f("etc/passwdqc.conf")]),
    ],
)
def test_what_takes_privilege_away_or_is_harmless_is_not_privileged(old, new):
    assert diff([*BASE, *old], [*BASE, *new])["privileged"]["count"] == 0


def test_setuid_entries_come_first_among_the_privileged():
    new = [*BASE, d("srv", 0o777), f("etc/shadow", mode=0o600), f("bin/x", mode=0o4755)]
    rows = diff(BASE, new)["privileged"]["entries"]
    assert [row["reasons"][0] for row in rows] == ["setuid", "sensitive", "world_writable"]


def test_a_large_update_needs_a_reason_above_the_share():
    new = [*BASE[:5], f("usr/lib/a.so", 1000, "b")]  # 1000 of 1010 bytes changed
    result = diff(BASE, new, large_share=0.5)
    assert result["changed_share"] == pytest.approx(1000 / 1010, abs=1e-4)
    assert result["large_update"] is True and result["needs_reason"] is True
    assert diff(BASE, new, large_share=0.999)["large_update"] is False


def test_lists_are_bounded_but_counts_are_whole():
    new = [*BASE, d("many"), *(f(f"many/{i:05}", 1) for i in range(500))]
    result = diff(BASE, new, shown=10)
    assert result["added"]["count"] == 501
    assert len(result["added"]["entries"]) == 10
    assert len(json.dumps(result)) < 10_000


def test_it_refuses_a_stream_out_of_path_order():
    with pytest.raises(ValueError, match="not in path order"):
        diff_manifests(BASE, [f("b"), f("a")])


def test_a_directory_listed_twice_takes_its_last_mode_as_tar_does():
    new = [*BASE[:3], d("usr", 0o700), d("usr", 0o755), *BASE[4:]]
    result = diff_manifests(BASE, new).as_dict()
    assert result["changed"]["count"] == 0 and result["unchanged"] == len(BASE)


def test_path_order_is_component_by_component_like_tar_sort_name():
    paths = ["a.b", "a/b", "a", ".", "a/b/c", "a-b"]
    assert sorted(paths, key=path_key) == [".", "a", "a/b", "a/b/c", "a-b", "a.b"]


# --- Stored manifests ---------------------------------------------------------------------

PRISTINE = "versions/pristine/21021"


def in_pristine(entries, pristine=PRISTINE):
    return [d("versions"), d("versions/pristine"), d(pristine)] + [
        ManifestEntry(f"{pristine}/{e.path}", e.type, e.mode, e.size, e.sha256, e.link)
        for e in entries
        if e.path != "."
    ]


def test_only_the_served_tree_counts_with_paths_relative_to_it():
    entries = [*in_pristine(BASE), f("versions/updates/x"), f("README")]
    paths = [e.path for e in served_only(entries, PRISTINE)]
    assert paths == [e.path for e in BASE]
    root = [e.path for e in served_only([f("a"), d("versions"), f("versions/x")], "")]
    assert root == ["a"]


def test_a_renamed_pristine_tree_compares_file_by_file():
    old = stored(in_pristine(BASE, "versions/pristine/py801"))
    new = stored(in_pristine([*BASE, f("usr/lib/b.so", 5)], "versions/pristine/py802"))
    result = diff_manifests(
        served_in_path_order(old, "versions/pristine/py801"),
        served_in_path_order(new, "versions/pristine/py802"),
    ).as_dict()
    assert result["added"]["count"] == 1 and result["removed"]["count"] == 0
    assert result["unchanged"] == len(BASE)


def test_a_hard_link_target_is_compared_relative_to_the_served_tree():
    def tree(pristine):
        entry = ManifestEntry(
            f"{pristine}/usr/lib/c.so", "h", 0o644, 0, "", f"{pristine}/usr/lib/a.so"
        )
        return stored([*in_pristine(BASE, pristine), entry])

    result = diff_manifests(
        served_in_path_order(tree("versions/pristine/one"), "versions/pristine/one"),
        served_in_path_order(tree("versions/pristine/two"), "versions/pristine/two"),
    ).as_dict()
    assert result["changed"]["count"] == 0


def test_a_stored_manifest_in_archive_order_is_read_back_in_path_order():
    shuffled = list(BASE)
    random.Random(4).shuffle(shuffled)
    data = stored(in_pristine(shuffled))
    assert [e.path for e in read_manifest(data)][3:] != [e.path for e in BASE][1:]
    ordered = [e.path for e in served_in_path_order(data, PRISTINE)]
    assert ordered == sorted(ordered, key=path_key)


def generated(count, *, seed, changed=0, shuffled=False):
    """A 40,000-entry tree: 200 folders of files; `changed` of them with new content."""
    entries = [d(".")]
    for folder in range(count // 200):
        entries.append(d(f"usr/lib/pkg{folder:04}"))
        for i in range(199):
            sha = "b" if folder * 199 + i < changed else "a"
            entries.append(f(f"usr/lib/pkg{folder:04}/file{i:03}.py", 1000 + i, sha))
    if shuffled:
        random.Random(seed).shuffle(entries)
    return entries


def test_two_40000_entry_manifests_diff_in_bounded_memory():
    old = stored(in_pristine(generated(40_000, seed=1, shuffled=True)))
    new = stored(in_pristine(generated(40_000, seed=2, changed=30_000)))
    tracemalloc.start()
    try:
        result = diff_manifests(
            served_in_path_order(old, PRISTINE), served_in_path_order(new, PRISTINE)
        ).as_dict()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["new_entries"] == result["old_entries"] == 40_001
    assert result["changed"]["count"] == result["changed"]["content"] == 30_000
    assert result["large_update"] is True
    assert len(result["changed"]["entries"]) == 50
    assert len(json.dumps(result)) < 30_000
    # The shuffled side is sorted in memory, the sorted one streams: well under 40 MB.
    assert peak < 40 * 1024**2, peak


def test_it_reads_a_name_holding_a_newline_and_refuses_a_cut_off_manifest():
    data = stored([d("."), f("odd\nname"), f("z")])
    assert [e.path for e in read_manifest(data)] == [".", "odd\nname", "z"]
    with pytest.raises(ValueError, match="cut off"):
        list(read_manifest(data[:-10]))
