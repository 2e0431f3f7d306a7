from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.demo import DEMO_USERS
from schools.models import SchoolServer

DEMO_SERVERS = [
    ("xs-caacupe-1.local", "Escuela Básica 1234 Caacupé", "Cordillera"),
    ("xs-caacupe-2.local", "Colegio Nacional Caacupé", "Cordillera"),
    ("xs-piribebuy-1.local", "Escuela Graduada Piribebuy", "Cordillera"),
    ("xs-atyra-1.local", "Escuela Básica Atyrá", "Cordillera"),
    ("xs-tobati-1.local", "Escuela Tobatí Centro", "Cordillera"),
    ("xs-asuncion-1.local", "Escuela República de Chile", "Capital"),
]


class Command(BaseCommand):
    help = (
        "Create the demo accounts (one per role plus an admin) and a few school servers. "
        "Idempotent. Refuses to run with DJANGO_DEBUG=false unless --force: the demo "
        "passwords are public."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even when DEBUG is off.")

    def handle(self, *args, force, verbosity, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates accounts with public passwords; use --force.")
        User = get_user_model()
        with transaction.atomic():
            for username, password, role in DEMO_USERS:
                user, created = User.objects.get_or_create(username=username)
                if created:
                    user.set_password(password)
                    user.is_staff = role is None
                    user.is_superuser = role is None
                    user.save()
                if role:
                    user.groups.add(Group.objects.get(name=role))
            for hostname, school, department in DEMO_SERVERS:
                SchoolServer.objects.get_or_create(
                    hostname=hostname,
                    defaults={
                        "name": hostname.split(".")[0],
                        "school": school,
                        "department": department,
                    },
                )
        for username, password, role in DEMO_USERS if verbosity else []:
            self.stdout.write(f"  {username:<12} {password:<18} {role or 'superuser'}")
