import itertools
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations
from django.utils import timezone

from schools import services
from schools.laptop_reports import CSV_COLUMNS, ReportInvalid, read_csv

# Lines read, checked and recorded together: memory stays flat however long the file is.
CHUNK_LINES = 5000


class Command(BaseCommand):
    help = (
        "Load laptops' reports from an export of Inventario's connection_events joined to "
        "the laptops' serial numbers, as CSV with the columns "
        + ", ".join(CSV_COLUMNS)
        + ". Bad lines are reported with their number and skipped; the good ones are "
        "imported. A report no newer than its laptop's last one is a repeat and changes "
        "nothing, so the file may be loaded twice; sort it by connected_at (reports older "
        f"than one already loaded, {CHUNK_LINES} lines or more before, are dropped as old)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    @no_translations
    def handle(self, *args, file, **options):
        try:
            lines = file.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from None
        totals = services.LaptopReportsResult()
        refused = 0
        with lines:
            try:
                parsed = read_csv(lines, now=timezone.now())
                while chunk := list(itertools.islice(parsed, CHUNK_LINES)):
                    for line in chunk:
                        if line.error:
                            refused += 1
                            self.stderr.write(f"{file}:{line.line}: {line.error}")
                    good = [line.report for line in chunk if line.report is not None]
                    result = services.laptop_reports_record(reports=good)
                    totals.received += result.received
                    totals.stored += result.stored
                    totals.repeats += result.repeats
            except ReportInvalid as problem:
                raise CommandError(f"{file}: {problem}.") from None
            except UnicodeDecodeError as exc:
                raise CommandError(f"{file} is not UTF-8 text: {exc}") from None
        self.stdout.write(
            f"{totals.stored} reports stored, {totals.repeats} repeats or older reports "
            f"ignored, {refused} lines refused."
        )
        if refused:
            raise CommandError(f"{refused} lines were refused (see above).", returncode=2)
