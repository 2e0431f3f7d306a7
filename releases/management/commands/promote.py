import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, no_translations

from releases import offers
from releases.access import require_approver
from releases.models import Build, Deployment, DeploymentStatus
from releases.reasons import Refused

POLL_SECONDS = 0.5


def find_user(username):
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"No active user named {username!r}.")
    return user


def find_approver(username):
    """The `--by` user, authorised here as a view would be (services assume it)."""
    user = find_user(username)
    try:
        require_approver(user)
    except Refused as refusal:
        raise CommandError(refusal.message) from None
    return user


def find_build(name):
    build = Build.objects.filter(name=name).first()
    if build is None:
        raise CommandError(f"No build is named {name!r}.")
    return build


def follow(command, deployment: Deployment, timeout: int):
    """Wait for the deployment (or the one it was coalesced into) and exit 1 on failure."""
    started = time.monotonic()
    while True:
        deployment.refresh_from_db()
        if deployment.status == DeploymentStatus.COALESCED and deployment.coalesced_into_id:
            deployment = Deployment.objects.get(pk=deployment.coalesced_into_id)
            continue
        if deployment.is_final:
            break
        if timeout and time.monotonic() - started > timeout:
            raise CommandError(
                f"Gave up waiting after {timeout} s; "
                f"deployment #{deployment.pk} is {deployment.status}."
            )
        time.sleep(POLL_SECONDS)
    if deployment.status == DeploymentStatus.SUCCEEDED:
        note = (
            " (restart skipped: no OATSLITE_RESTART_COMMAND)" if deployment.restart_skipped else ""
        )
        command.stdout.write(command.style.SUCCESS(f"Deployment #{deployment.pk} succeeded{note}."))
        return
    command.stderr.write(
        f"Deployment #{deployment.pk} {deployment.get_status_display()}: {deployment.error}"
    )
    sys.exit(1)


def add_common_arguments(parser):
    """The build, the approver and following the deployment: promote and withdraw alike."""
    parser.add_argument("name")
    parser.add_argument("--by", required=True, help="The approver's user name.")
    parser.add_argument(
        "--wait", action="store_true", help="Follow the deployment; exit 1 if it fails."
    )
    parser.add_argument(
        "--timeout", type=int, default=0, help="With --wait: give up after this many seconds."
    )


class Command(BaseCommand):
    help = "Promote a published build into updates.cfg, with the same rules as the web page."

    def add_arguments(self, parser):
        add_common_arguments(parser)
        parser.add_argument(
            "--priority", default="", help="Default: the first of OATSLITE_PRIORITIES."
        )
        parser.add_argument(
            "--reason",
            default="",
            help="Why, when coverage is below the minimum or the update is privileged or large.",
        )

    @no_translations
    def handle(self, *args, name, by, priority, reason, wait, timeout, **options):
        build = find_build(name)
        try:
            deployment = offers.build_promote(
                build=build, acting_user=find_approver(by), priority=priority, reason=reason
            )
        except Refused as refusal:
            raise CommandError(refusal.message) from None
        self.stdout.write(f"{build.name} promoted; deployment #{deployment.pk} queued.")
        if wait:
            follow(self, deployment, timeout)
