from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import checks
from releases.reasons import Refused


class Command(BaseCommand):
    help = "Print the contents hash of a .contents FILE, as CONTENTS_HASH_COMMAND computes it."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    @no_translations
    def handle(self, *args, file, **options):
        if not settings.CONTENTS_HASH_COMMAND:
            raise CommandError(
                "CONTENTS_HASH_COMMAND is not set; compute the hash on an XO and enter it on "
                "the build page."
            )
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        try:
            value = checks.run_contents_hash_command(
                settings.CONTENTS_HASH_COMMAND, file, timeout=settings.CONTENTS_HASH_TIMEOUT
            )
        except Refused as rejection:
            raise CommandError(rejection.message) from None
        except checks.HashCommandUnavailable as problem:
            raise CommandError(problem.params["error"]) from None
        self.stdout.write(value)
