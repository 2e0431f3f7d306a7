"""An approver turns one kind of e-mail off on their own page, in Spanish, from the link in
the header, and the next event of that kind does not reach them; the others still do."""

import pytest
from django.core import mail

from releases import notify

from ..factories import make_user
from .test_upload_in_browser import log_in

pytestmark = pytest.mark.browser


def test_an_approver_turns_off_the_waiting_for_promotion_mail(
    page, live_server, transactional_db, unhashed, mailoutbox
):
    carol = make_user("carla", "approvers")
    carol.email = "carla@example.org"
    carol.save(update_fields=["email"])
    log_in(page, live_server, "carla")

    page.click("a[href='/profile/']")
    assert page.locator("h1").inner_text() == "Mis avisos"
    box = page.get_by_label("Una compilación publicada espera ser promovida")
    assert box.is_checked()
    box.uncheck()
    page.click("#notifications-save")
    assert "guardaron" in page.locator(".messages").first.inner_text()
    assert not page.get_by_label("Una compilación publicada espera ser promovida").is_checked()

    build = unhashed("py930-1")
    mail.outbox.clear()
    notify.build_notify(build_id=build.pk)  # it waits for its hash: still sent to her
    assert mail_to("carla@example.org")

    mail.outbox.clear()
    build.contents_hash = "a" * 64
    build.save(update_fields=["contents_hash"])
    notify.build_notify(build_id=build.pk)  # now it waits for promotion: turned off
    assert not mail_to("carla@example.org")


def mail_to(address) -> list:
    return [message for message in mail.outbox if address in message.to]
