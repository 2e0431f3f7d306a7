"""The install page tells a school server's admin the portal's real address."""

import pytest
from django.urls import reverse

from ..factories import english_client


@pytest.mark.parametrize(("secure", "scheme"), [(False, "http"), (True, "https")])
def test_the_install_page_shows_the_address_the_portal_is_reached_at(cast, secure, scheme):
    client = english_client()
    client.force_login(cast.dave)

    page = client.get(reverse("schools:client_install"), secure=secure).content.decode()

    assert f"PORTAL_URL={scheme}://testserver\n" in page
    assert reverse("schools:client_script") in page
