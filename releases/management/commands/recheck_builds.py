from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import recheck
from releases.models import Build


class Command(BaseCommand):
    help = (
        "Run today's archive checks on the stored archives of published, offered and "
        "withdrawn builds (their files are in the puppet content folder) and print, per "
        "build, OK or why it would break school servers. A build that fails is flagged on "
        "its page; nothing is withdrawn or removed (an approver recalls it from the build "
        "page). Exits with status 1 when any build fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", help="Check only this build.")

    @no_translations
    def handle(self, *args, name=None, **options):
        builds = Build.objects.filter(status__in=recheck.RECHECKED_STATUSES).order_by("pk")
        if name is not None:
            build = Build.objects.filter(name=name).first()
            if build is None:
                raise CommandError(f"No build is named {name!r}.")
            if build.status not in recheck.RECHECKED_STATUSES:
                raise CommandError(
                    f"{name} is {build.status}; only published, offered and withdrawn builds "
                    "are in the puppet content folder."
                )
            builds = [build]
        failed = checked = 0
        for build in builds:
            checked += 1
            problem = recheck.build_recheck(build=build)
            if problem is None:
                self.stdout.write(f"{build.name}: OK")
            else:
                failed += 1
                self.stdout.write(f"{build.name}: FAILS: {problem.message}")
        self.stdout.write(f"{checked} checked, {failed} would break school servers.")
        if failed:
            raise SystemExit(1)
