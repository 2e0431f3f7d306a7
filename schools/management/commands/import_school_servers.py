from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations

from releases.management.commands.promote import find_user
from releases.reasons import Refused
from schools import services
from schools.servers_csv import CSV_COLUMNS


class Command(BaseCommand):
    help = (
        "Create or update school servers from a CSV file, matched by hostname. Columns: "
        + ", ".join(CSV_COLUMNS)
        + " (hostname and school required; active: yes/no). A column the file leaves out "
        "keeps what the portal has (a new server gets the default). Bad lines are reported with "
        "their number and skipped; the good ones are imported (nothing, if the file is not "
        "readable as CSV). Audited as one event. With --inventario, FILE is the output of "
        "the query in docs/inventario.md (Inventario's school_infos): servers are found by "
        "their Inventario place, then by hostname, and schools without a server hostname are "
        "skipped with a note."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--by", default="", help="Who is doing it, for the audit trail (a user name)."
        )
        parser.add_argument(
            "--inventario",
            action="store_true",
            help="FILE is the output of the query in docs/inventario.md (CSV, or tab-separated "
            "from mysql --batch --raw).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print what importing FILE would do, line by line, and write nothing.",
        )

    @no_translations
    def handle(self, *args, file, by, inventario, dry_run, **options):
        user = find_user(by) if by else None
        try:
            # Bytes, not read_text: its universal newlines would turn a note's "\r\n" (a
            # textarea's, quoted by the export) into "\n", a change to every such server.
            text = file.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from None
        if dry_run:
            self._preview(file, services.servers_import_plan(text=text, from_inventario=inventario))
            return
        try:
            result = services.servers_import_csv(
                text=text, acting_user=user, from_inventario=inventario
            )
        except Refused:
            # The only refusal without a preview to match: another import added some of
            # the file's new servers at the same moment (the service's message speaks of a
            # preview, which the command has none of).
            raise CommandError(
                "Another import added some of these servers at the same time; nothing was "
                "imported. Run the command again."
            ) from None
        for line, message in result.skipped:
            self.stdout.write(f"{file}:{line}: {message}")
        for line, message in result.errors:
            self.stderr.write(f"{file}:{line}: {message}")
        skipped = f", {len(result.skipped)} skipped (no server)" if inventario else ""
        self.stdout.write(
            f"{result.created} created, {result.updated} updated, "
            f"{len(result.errors)} lines refused{skipped}."
        )
        if result.errors:
            raise CommandError(
                f"{len(result.errors)} lines were refused (see above).", returncode=2
            )

    def _preview(self, file, plan) -> None:
        """The plan the import would apply: notes and new or changed servers on standard
        output, refused lines on standard error, in the file's order."""
        for entry in sorted([*plan.notes, *plan.new, *plan.changed], key=lambda e: e.line):
            if entry.kind == "note":
                said = entry.english
            elif entry.kind == "new":
                said = f"new server {entry.hostname}"
            else:
                changes = "; ".join(
                    f"{key}: {old!r} -> {new!r}" for key, (old, new) in entry.changes.items()
                )
                said = f"{entry.stored['hostname']} changes: {changes}"
            self.stdout.write(f"{file}:{entry.line}: {said}")
        for error in plan.errors:
            self.stderr.write(f"{file}:{error.line}: {error.english}")
        self.stdout.write(
            f"Dry run, nothing written: {len(plan.new)} to create, {len(plan.changed)} to "
            f"change, {len(plan.unchanged)} unchanged, {len(plan.errors)} lines refused, "
            f"{len(plan.notes)} skipped."
        )
