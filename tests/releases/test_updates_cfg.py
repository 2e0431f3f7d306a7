"""The updates.cfg renderer and parser: pure functions, checked byte for byte."""

import pytest

from releases.updates_cfg import (
    DEFAULT_TEMPLATE,
    ConfigProblem,
    Entry,
    check_template,
    parse,
    render,
    unified_diff,
    validate,
)

HAND_WRITTEN = """\
# oatslite updates, edited by hand until 2026
[global]
check_interval = 86400

[4f2a9c1e]
name = py801-2
priority = normal
update_path = rsync://schoolserver/build-py801-2

; an older entry someone annotated
[deadbeef]
name=py700-1
priority = high
update_path = rsync://schoolserver/build-py700-1
extra_key = kept as it is
"""


def entry(section, name, priority="normal"):
    return Entry(
        section=section,
        name=name,
        priority=priority,
        update_path=f"rsync://schoolserver/build-{name}",
    )


def test_it_renders_the_default_entry_exactly():
    assert render("", [entry("abc123", "py802-1")]) == (
        "[abc123]\n"
        "name = py802-1\n"
        "priority = normal\n"
        "update_path = rsync://schoolserver/build-py802-1\n"
    )


def test_it_renders_entries_in_the_order_given_separated_by_one_blank_line():
    text = render("", [entry("aaa", "py1"), entry("bbb", "py2"), entry("ccc", "py3")])
    assert [line for line in text.splitlines() if line.startswith("[")] == [
        "[aaa]",
        "[bbb]",
        "[ccc]",
    ]
    assert "\n\n[bbb]\n" in text
    assert "\n\n\n" not in text


def test_it_is_deterministic():
    entries = [entry("aaa", "py1"), entry("bbb", "py2")]
    assert render("# x\n", entries).encode() == render("# x\n", list(entries)).encode()


def test_it_keeps_the_preamble_verbatim():
    preamble = "# comment\n[global]\nkey = value\n"
    text = render(preamble, [entry("aaa", "py1")])
    assert text.startswith(preamble + "\n[aaa]\n")


def test_it_uses_a_replacement_template():
    template = "[{hash}]\nname = {name}\nupdate_path = {update_path}\nforce = yes\n"
    assert render("", [entry("aaa", "py1")], template) == (
        "[aaa]\nname = py1\nupdate_path = rsync://schoolserver/build-py1\nforce = yes\n"
    )


def test_it_renders_an_imported_entry_unchanged_between_templated_ones():
    legacy = Entry(section="old", name="x", text="[old]\nname=x\n  ; odd spacing kept\n\n")
    text = render("", [entry("aaa", "py1"), legacy, entry("bbb", "py2")])
    assert "[old]\nname=x\n  ; odd spacing kept\n\n[bbb]\n" in text


def test_parsing_then_rendering_gives_back_the_hand_written_file_byte_for_byte():
    parsed = parse(HAND_WRITTEN)
    assert render(parsed.preamble, parsed.entries) == HAND_WRITTEN


def test_it_parses_sections_keys_and_order():
    parsed = parse(HAND_WRITTEN)
    assert parsed.preamble == "# oatslite updates, edited by hand until 2026\n"
    assert [(e.section, e.name, e.priority) for e in parsed.entries] == [
        ("global", "", ""),
        ("4f2a9c1e", "py801-2", "normal"),
        ("deadbeef", "py700-1", "high"),
    ]


def test_a_new_entry_goes_below_every_imported_one():
    parsed = parse(HAND_WRITTEN)
    text = render(parsed.preamble, [*parsed.entries, entry("cafe1234", "py900-1")])
    assert text.startswith(HAND_WRITTEN)
    assert text.endswith(
        "\n\n[cafe1234]\nname = py900-1\npriority = normal\n"
        "update_path = rsync://schoolserver/build-py900-1\n"
    )


def test_validate_refuses_duplicate_sections():
    with pytest.raises(ConfigProblem):
        validate(render("", [entry("aaa", "py1"), entry("aaa", "py2")]))


def test_validate_accepts_what_the_renderer_makes():
    validate(render("# hi\n", [entry("aaa", "py1"), entry("bbb", "py2")]))


def test_check_template_refuses_unknown_fields():
    with pytest.raises(ConfigProblem, match="unknown fields"):
        check_template("[{hash}]\nname = {build}\n")


def test_check_template_refuses_a_template_without_a_section():
    with pytest.raises(ConfigProblem):
        check_template("name = {name}\n")


def test_check_template_accepts_the_default():
    assert check_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE


def test_the_diff_shows_the_added_lines():
    diff = unified_diff("a\n", "a\nb\n")
    assert "+b\n" in diff
    assert diff.startswith("--- updates.cfg (now)\n+++ updates.cfg (new)\n")
