import json

from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import impact
from releases.management.commands.promote import find_build
from releases.reasons import Refused


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.1f} MiB"


class Command(BaseCommand):
    help = (
        "What NEW changes compared with OLD: added, removed and changed entries of the served "
        "tree, the laptop cost, the school-server transfer and privileged changes. --json "
        "prints what GET /api/builds/NEW/diff/OLD/ answers."
    )

    def add_arguments(self, parser):
        parser.add_argument("old")
        parser.add_argument("new")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the diff as JSON."
        )

    @no_translations
    def handle(self, *args, old, new, as_json: bool, **options):
        try:
            diff = impact.compare_builds(old=find_build(old), new=find_build(new))
        except Refused as refusal:
            raise CommandError(refusal.message) from None
        if as_json:
            self.stdout.write(_dumps(diff))
            return
        for line in summary(diff):
            self.stdout.write(line)


def _dumps(diff: dict) -> str:
    return json.dumps(diff, indent=2, ensure_ascii=False)


def summary(diff: dict) -> list[str]:
    """The diff for a terminal: totals, then the privileged entries first, then the rest."""
    changed = diff["changed"]
    lines = [
        f"{diff['old']} -> {diff['new']} (served tree)",
        f"  added     {diff['added']['count']:>7}  {_mib(diff['added']['bytes'])}",
        f"  removed   {diff['removed']['count']:>7}  {_mib(diff['removed']['bytes'])}",
        f"  changed   {changed['count']:>7}  {_mib(changed['bytes'])}  "
        f"(content {changed['content']}, mode {changed['mode']}, kind {changed['kind']}, "
        f"link {changed['link']}, owner {changed['owner']})",
        f"  unchanged {diff['unchanged']:>7}",
        f"Laptop cost: {_mib(diff['laptop_cost_bytes'])} "
        f"(including {_mib(diff['update_overhead_bytes'])} per update)",
        f"School-server transfer: {_mib(diff['school_server_transfer_bytes'])}",
        f"Changed share of the served tree: {diff['changed_share']:.1%}"
        + (
            f" - LARGE UPDATE (over {diff['large_update_share']:.0%})"
            if diff["large_update"]
            else ""
        ),
    ]
    privileged = diff["privileged"]
    if privileged["count"]:
        lines.append(f"PRIVILEGED CHANGES: {privileged['count']}")
        lines += [
            f"  {row['change']:<8} {row['mode'] or '':>5} {row['path']}  "
            f"({', '.join(row['reasons'])})"
            for row in privileged["entries"]
        ]
    if diff["top_directories"]:
        lines.append("Most changed bytes:")
        lines += [f"  {_mib(row['bytes']):>12}  {row['path']}" for row in diff["top_directories"]]
    for label, key in (("Added", "added"), ("Removed", "removed"), ("Changed", "changed")):
        rows = diff[key]["entries"]
        if rows:
            more = diff[key]["count"] - len(rows)
            lines.append(f"{label}:" + (f" (first {len(rows)}, {more} more)" if more else ""))
            lines += [
                f"  {row['path']}" + (f"  [{', '.join(row['what'])}]" if "what" in row else "")
                for row in rows
            ]
    return lines
