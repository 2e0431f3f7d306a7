from django.core.management.base import BaseCommand, CommandError, no_translations

from schools import services
from schools.models import SchoolServer


class Command(BaseCommand):
    help = (
        "Create a new report token for the school server HOSTNAME and print it (shown once; "
        "only its hash is kept). The previous token stops working."
    )

    def add_arguments(self, parser):
        parser.add_argument("hostname")

    @no_translations
    def handle(self, *args, hostname, **options):
        server = SchoolServer.objects.filter(hostname=hostname.strip().lower()).first()
        if server is None:
            raise CommandError(f"No school server has the host name {hostname!r}.")
        self.stdout.write(services.server_token_rotate(server=server))
