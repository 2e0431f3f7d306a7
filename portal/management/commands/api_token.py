from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, no_translations

from portal.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (shown once; only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--name", default="", help="What the token is for, e.g. the build host."
        )

    @no_translations
    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        _token, key = api_token_create(user=user, name=name)
        self.stdout.write(key)
