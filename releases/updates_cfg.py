"""oatslite's `updates.cfg`: parse a hand-written file, render the one the database implies.

Pure module: data in, text out; no ORM, no I/O. The output is byte-for-byte deterministic:
the preamble (comments and global settings before the first entry) verbatim, then the
entries in promotion order, oldest first, new ones always below. Imported entries keep
their exact text; entries the portal promotes are made from the entry template.
"""

import configparser
import difflib
import re
import string
from dataclasses import dataclass, field

DEFAULT_TEMPLATE = "[{hash}]\nname = {name}\npriority = {priority}\nupdate_path = {update_path}\n"
TEMPLATE_FIELDS = {"hash", "name", "priority", "update_path"}
SECTION_RE = re.compile(r"^\[(?P<section>[^\]\n]*)\]")
KEY_RE = re.compile(r"^(?P<key>[^\s=:;#][^=:]*?)\s*[=:]\s*(?P<value>.*)$")


class ConfigProblem(ValueError):
    """The rendered or imported text is not something oatslite could read."""


@dataclass(frozen=True)
class Entry:
    """One offered update. `text` is set for imported entries and rendered verbatim;
    otherwise the template is filled from the other fields."""

    section: str
    name: str = ""
    priority: str = ""
    update_path: str = ""
    text: str | None = None


@dataclass
class ParsedFile:
    preamble: str
    entries: list[Entry] = field(default_factory=list)


def check_template(template: str) -> str:
    """The template, if it only uses the known fields and makes one INI section."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise ConfigProblem(f"the entry template is malformed: {exc}") from exc
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ConfigProblem(
            f"the entry template uses unknown fields {sorted(unknown)}; "
            f"allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    sample = fill(template, Entry(section="0123abcd", name="x", priority="p", update_path="u"))
    if len(parse(sample).entries) != 1 or parse(sample).preamble:
        raise ConfigProblem(
            "the entry template must produce exactly one [section] and nothing else"
        )
    return template


def fill(template: str, entry: Entry) -> str:
    text = template.format(
        hash=entry.section, name=entry.name, priority=entry.priority, update_path=entry.update_path
    )
    return text if text.endswith("\n") else text + "\n"


def render(preamble: str, entries: list[Entry], template: str = DEFAULT_TEMPLATE) -> str:
    """The whole file. Imported text is kept as it was; a templated entry is separated from
    what comes before it by one blank line."""
    out = preamble
    for entry in entries:
        piece = entry.text if entry.text is not None else fill(template, entry)
        if entry.text is None and out:
            if not out.endswith("\n"):
                out += "\n"
            if not out.endswith("\n\n"):
                out += "\n"
        out += piece
    return out


def parse(text: str) -> ParsedFile:
    """Split a file into its preamble and entries, each entry's text running up to the next
    section header, so that `render(parse(t).preamble, parse(t).entries) == t`."""
    lines = text.splitlines(keepends=True)
    parsed = ParsedFile(preamble="")
    current: list[str] | None = None
    section = ""

    def close():
        if current is not None:
            parsed.entries.append(_entry(section, "".join(current)))

    for line in lines:
        match = SECTION_RE.match(line)
        if match:
            close()
            current = [line]
            section = match["section"].strip()
        elif current is None:
            parsed.preamble += line
        else:
            current.append(line)
    close()
    return parsed


def _entry(section: str, text: str) -> Entry:
    keys = {}
    for line in text.splitlines()[1:]:
        match = KEY_RE.match(line.strip())
        if match:
            keys[match["key"].strip().lower()] = match["value"].strip()
    return Entry(
        section=section,
        name=keys.get("name", ""),
        priority=keys.get("priority", ""),
        update_path=keys.get("update_path", ""),
        text=text,
    )


def validate(text: str) -> None:
    """Refuse what oatslite's INI reader would choke on (duplicate sections or keys, junk)."""
    reader = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        reader.read_string(text)
    except configparser.Error as exc:
        raise ConfigProblem(str(exc).splitlines()[0]) from exc


def unified_diff(old: str, new: str, old_label="updates.cfg (now)", new_label="updates.cfg (new)"):
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_label, new_label
        )
    )
