from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import offers, updates_cfg

from .import_build import system_user


class Command(BaseCommand):
    help = (
        "Adopt an existing hand-written updates.cfg: its preamble and every entry, in order, "
        "become what the portal offers (entries for builds the portal never saw are kept as "
        "legacy entries, rendered unchanged). The file is recorded as deployed; nothing is "
        "written or restarted."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)

    @no_translations
    def handle(self, *args, path, **options):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            deployment = offers.updates_cfg_import(text=text, acting_user=system_user())
        except updates_cfg.ConfigProblem as exc:
            raise CommandError(f"{path} is not a valid updates.cfg: {exc}") from None
        count = len(deployment.active_ids)
        self.stdout.write(f"Imported {count} entries from {path} (deployment #{deployment.pk}).")
