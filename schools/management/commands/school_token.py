from django.core.management.base import BaseCommand, CommandError, no_translations

from releases.management.commands.promote import find_user
from schools import services
from schools.models import SchoolServer


class Command(BaseCommand):
    help = (
        "Create a new report token for the school server HOSTNAME and print it (shown once; "
        "only its hash is kept). The previous token stops working. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("hostname")
        parser.add_argument(
            "--by", default="", help="Who is doing it, for the audit trail (a user name)."
        )

    @no_translations
    def handle(self, *args, hostname, by, **options):
        user = find_user(by) if by else None
        server = SchoolServer.objects.filter(
            hostname=SchoolServer.normal_hostname(hostname)
        ).first()
        if server is None:
            raise CommandError(f"No school server has the host name {hostname!r}.")
        self.stdout.write(services.server_token_rotate(server=server, acting_user=user))
