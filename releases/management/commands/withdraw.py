from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import offers
from releases.reasons import Refused

from .promote import add_common_arguments, find_approver, find_build, follow


class Command(BaseCommand):
    help = "Withdraw an offered build from updates.cfg."

    def add_arguments(self, parser):
        add_common_arguments(parser)
        parser.add_argument("--reason", required=True, help="Why (kept in the history).")

    @no_translations
    def handle(self, *args, name, by, reason, wait, timeout, **options):
        build = find_build(name)
        try:
            deployment = offers.build_withdraw(
                build=build, acting_user=find_approver(by), reason=reason
            )
        except Refused as refusal:
            raise CommandError(refusal.message) from None
        self.stdout.write(f"{build.name} withdrawn; deployment #{deployment.pk} queued.")
        if wait:
            follow(self, deployment, timeout)
