from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations
from django.utils import timezone

from schools import services


class Command(BaseCommand):
    help = (
        "Read an rsyncd log FILE (transfer logging on) and record which school server "
        "downloaded which build. Safe to run on the same file twice; reads the file "
        f"{services.LOG_CHUNK_LINES} lines at a time, so any size will do."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--year", type=int, default=None, help="For syslog lines, which carry no year."
        )

    @no_translations
    def handle(self, *args, file, year, **options):
        if not file.is_file():
            raise CommandError(f"{file} was not found.")
        with open(file, "rb") as lines:
            counts = services.rsync_log_record(
                lines=lines,
                tz=timezone.get_current_timezone(),
                year=year or timezone.localtime().year,
            )
        self.stdout.write(
            f"{counts.transfers} transfers, {counts.recorded} recorded, "
            f"{counts.unrelated} unrelated files, {len(counts.unknown_hosts)} unknown hosts"
            + (f": {', '.join(sorted(counts.unknown_hosts))}" if counts.unknown_hosts else "")
        )
