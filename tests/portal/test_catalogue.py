"""Every string the portal marks for translation has its Spanish: the catalogue is rebuilt
from the code with the real `makemessages` (as `make makemessages` does, on a copy of the
tree) and no entry may be missing, empty or fuzzy. Without this, a new message shows up in
English on a Spanish page and nobody notices."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent.parent
SOURCES = ("manage.py", "portal", "releases", "schools", "templates", "locale")


def entries(po: str):
    """(msgid, msgstr, flags) of each entry of a .po, the header aside; plural forms give
    their first msgstr."""
    for block in po.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith("#~")]
        flags = {f.strip() for line in lines if line.startswith("#,") for f in line[2:].split(",")}
        fields, current = {}, None
        for line in lines:
            if line.startswith("#"):
                continue
            if line.startswith('"'):
                fields[current] += json.loads(line)
                continue
            current, _, rest = line.partition(" ")
            fields[current] = json.loads(rest)
        msgid = fields.get("msgid")
        if msgid:
            yield msgid, fields.get("msgstr", fields.get("msgstr[0]", "")), flags


def test_the_parser_reads_flags_and_continued_lines():
    po = 'msgid ""\nmsgstr "header"\n\n#, fuzzy, python-format\nmsgid ""\n"a "\n"b"\nmsgstr "c"\n'
    assert list(entries(po)) == [("a b", "c", {"fuzzy", "python-format"})]


@pytest.mark.skipif(not shutil.which("xgettext"), reason="gettext is not installed")
def test_every_marked_string_has_its_spanish(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in SOURCES:
        source = BASE_DIR / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "es", "--no-obsolete", "--no-location"],
        cwd=tree,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_DEBUG": "true",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
        },
        check=True,
        capture_output=True,
    )
    rebuilt = (tree / "locale/es/LC_MESSAGES/django.po").read_text(encoding="utf-8")

    missing = [msgid for msgid, msgstr, flags in entries(rebuilt) if not msgstr or "fuzzy" in flags]

    assert not missing, (
        "Strings with no Spanish (run `make makemessages` and translate them in "
        "locale/es/LC_MESSAGES/django.po):\n" + "\n".join(missing)
    )
