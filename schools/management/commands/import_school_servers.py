from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations

from schools import services


class Command(BaseCommand):
    help = (
        "Create or update school servers from a CSV file, matched by hostname. Columns: "
        + ", ".join(services.CSV_COLUMNS)
        + " (hostname and school required; active: yes/no). Bad lines are reported with "
        "their number and skipped; the good ones are imported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    @no_translations
    def handle(self, *args, file, **options):
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from None
        result = services.servers_import_csv(text=text)
        for line, message in result.errors:
            self.stderr.write(f"{file}:{line}: {message}")
        self.stdout.write(
            f"{result.created} created, {result.updated} updated, "
            f"{len(result.errors)} lines refused."
        )
        if result.errors:
            raise CommandError(
                f"{len(result.errors)} lines were refused (see above).", returncode=2
            )
