"""What "nothing else changed" means, measured: every table, every file the portal owns and
oatslite's updates.cfg, before and after a bad input.

`take()` records each model's row count and a digest of all its rows, every file and folder
under PORTAL_DATA_DIR (uploads, build store, puppet content) and the bytes of updates.cfg;
`differences()` says in words what moved, so a failing row names the leak.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from django.apps import apps
from django.conf import settings

# Columns an accepted request changes by design, whatever its body: using a token records
# when it was last used (authentication, not the input).
IGNORED_COLUMNS = {"portal.apitoken": {"last_used_at"}}


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    tables: dict[str, str]
    files: dict[str, str]
    config: bytes | None


def _table_digest(model) -> tuple[int, str]:
    ignored = IGNORED_COLUMNS.get(model._meta.label_lower, set())
    digest = hashlib.sha256()
    count = 0
    for row in model._default_manager.order_by("pk").values():
        count += 1
        digest.update(repr(sorted((k, v) for k, v in row.items() if k not in ignored)).encode())
    return count, digest.hexdigest()


def _base_folders() -> set[Path]:
    """The folders the portal keeps whether or not anything is in them."""
    root = Path(settings.PORTAL_DATA_DIR)
    keep = {root}
    configured = (settings.UPLOAD_TEMP_DIR, settings.BUILD_STORE_DIR, settings.PUPPETCONTENT_OS_DIR)
    for folder in map(Path, configured):
        keep.add(folder)
        keep.update(parent for parent in folder.parents if root in parent.parents)
    return keep


def _files() -> dict[str, str]:
    root = Path(settings.PORTAL_DATA_DIR)
    keep = _base_folders()
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            path = Path(folder) / name
            if path not in keep:
                found[str(path.relative_to(root)) + "/"] = "folder"
        for name in names:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def take() -> Snapshot:
    counts, tables = {}, {}
    for model in apps.get_models():
        label = model._meta.label_lower
        counts[label], tables[label] = _table_digest(model)
    config = Path(settings.OATSLITE_UPDATES_CFG)
    return Snapshot(
        counts=counts,
        tables=tables,
        files=_files(),
        config=config.read_bytes() if config.exists() else None,
    )


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    found = []
    for label, count in after.counts.items():
        if count != before.counts[label]:
            found.append(f"{label}: {before.counts[label]} → {count} rows")
        elif after.tables[label] != before.tables[label]:
            found.append(f"{label}: rows changed")
    for path in sorted(before.files.keys() | after.files.keys()):
        if path not in before.files:
            found.append(f"file added: {path}")
        elif path not in after.files:
            found.append(f"file removed: {path}")
        elif before.files[path] != after.files[path]:
            found.append(f"file changed: {path}")
    if before.config != after.config:
        found.append("updates.cfg changed")
    return found


def assert_unchanged(before: Snapshot) -> None:
    changed = differences(before, take())
    assert not changed, "the bad input changed: " + "; ".join(changed)
