from django.core.management.base import BaseCommand

from releases import deploy


class Command(BaseCommand):
    help = "Print the updates.cfg the database implies. Writes nothing."

    def handle(self, *args, **options):
        self.stdout.write(deploy.render_current(), ending="")
