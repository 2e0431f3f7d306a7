"""The rollout funnel on a build's coverage page, the laptops column of the school-server
overview and a server's laptop versions: what they say, who sees them, and how many queries
they cost."""

import os
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from releases import offers
from releases.models import Build
from schools.models import Laptop, LaptopDay, SchoolServer

from ..factories import PASSWORD, compress, tree_tar

NEW = "b" * 64
OLD = "a" * 64
STRAY = "f" * 64


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def make_laptops(server, vhash, count, *, seen_days_ago=1, free_kib=None, start=0):
    now = timezone.now()
    seen = now - timedelta(days=seen_days_ago)
    prefix = server.hostname if server else "none"
    Laptop.objects.bulk_create(
        Laptop(
            serial=f"{prefix[:20]}-{vhash[:2]}-{start + n}",
            vhash=vhash,
            server=server,
            free_space_kib=free_kib,
            first_seen_at=seen,
            last_seen_at=seen,
            version_since=seen,
            received_at=now,
        )
        for n in range(count)
    )


def make_server(hostname, department="Cordillera"):
    return SchoolServer.objects.create(
        hostname=hostname, name=hostname, school=f"Escuela {hostname}", department=department
    )


@pytest.fixture
def rollout(cast, published):
    """py970-2 (hash NEW) offered three days ago, over py970-1 (hash OLD)."""
    build = published("py970-2", contents_hash=NEW)
    offers.build_promote(build=build, acting_user=cast.carol, reason="piloto")
    return build


def test_the_coverage_page_counts_the_active_laptops_running_the_build(client, cast, rollout):
    caacupe, central = make_server("xs-caacupe.local"), make_server("xs-luque.local", "Central")
    make_laptops(caacupe, NEW, 3)
    make_laptops(caacupe, OLD, 1)
    make_laptops(central, OLD, 4)
    make_laptops(central, NEW, 5, seen_days_ago=40)  # not active: left out
    response = login(client, cast.dave).get(reverse("schools:build_coverage", args=[rollout.name]))
    funnel = response.context["laptops"]
    assert (funnel.total.running, funnel.total.active) == (3, 8)
    assert [(d.label, d.running, d.active) for d in funnel.departments] == [
        ("Central", 0, 4),
        ("Cordillera", 3, 4),
    ]
    assert [s.key for s in funnel.servers] == ["xs-luque.local", "xs-caacupe.local"]
    body = response.content.decode()
    assert "38\u00a0%: 3 de 8 laptops vistas en los últimos 30 días la usan." in body
    assert 'id="laptops-by-server"' in body and "xs-luque.local" in body
    # Offered, the four steps of the funnel, in Spanish.
    steps = body[body.index('id="funnel-steps"') :]
    assert "Ofrecida en updates.cfg desde" in steps
    assert "Laptops activas que la usan: 38\u00a0%" in steps


def test_the_days_to_half_and_most_of_the_laptops_count_from_the_day_it_was_offered(
    client, cast, rollout
):
    today = timezone.localdate()
    for days_ago, running, seen in ((3, 1, 10), (2, 6, 10), (1, 8, 10), (0, 9, 10)):
        day = today - timedelta(days=days_ago)
        LaptopDay.objects.create(day=day, vhash=NEW, laptops=running)
        LaptopDay.objects.create(day=day, vhash=OLD, server_key=7, laptops=seen - running)
    offered = timezone.make_aware(datetime.combine(today - timedelta(days=3), time(9)))
    rollout.events.filter(to_status="offered").update(at=offered)
    Build.objects.filter(pk=rollout.pk).update(published_at=offered - timedelta(days=1))
    body = login(client, cast.dave).get(reverse("schools:build_coverage", args=[rollout.name]))
    funnel = body.context["laptops"]
    assert funnel.days_to == {0.5: 1, 0.9: 3}
    text = body.content.decode()
    assert '<dd id="days-to-50">1 día</dd>' in text
    assert '<dd id="days-to-90">3 días</dd>' in text
    assert 'id="laptop-chart"' in text and ">Ofrecida</text>" in text


def test_a_build_not_offered_says_so_and_nobody_seen_is_not_zero(client, cast, published):
    build = published("py971-1", contents_hash=NEW)
    body = (
        login(client, cast.dave)
        .get(reverse("schools:build_coverage", args=[build.name]))
        .content.decode()
    )
    assert "Todavía no se ofrece en updates.cfg" in body
    assert '<dd id="days-to-50">todavía no se ofrece</dd>' in body
    assert "Ninguna laptop informó en los últimos 30 días." in body
    assert "se desconoce: no hay impacto de actualización" in body


TREE = {
    "etc": ("dir", 0o755),
    "etc/issue": b"OLPC OS\n",
    "usr": ("dir", 0o755),
    "usr/lib": ("dir", 0o755),
    "usr/lib/libsugar.so.1": b"\x7fELF" + b"s" * 40_000,
}


def test_laptops_with_less_free_space_than_the_update_needs_are_counted(client, cast, published):
    cache.clear()
    old = published("py972-1", contents_hash=OLD, tarball=compress(tree_tar(TREE), "bz2"))
    offers.build_promote(build=old, acting_user=cast.carol, reason="en uso")
    changed = {**TREE, "usr/lib/libsugar.so.2": b"\x7fELF" + b"t" * 300_000}
    new = published("py972-2", contents_hash=NEW, tarball=compress(tree_tar(changed), "bz2"))
    server = make_server("xs-piribebuy.local")
    make_laptops(server, OLD, 2, free_kib=10)  # 10 KiB: short
    make_laptops(server, OLD, 3, free_kib=10**7, start=2)  # 10 GB: enough
    response = login(client, cast.dave).get(reverse("schools:build_coverage", args=[new.name]))
    funnel = response.context["laptops"]
    assert funnel.cost_bytes > 300_000
    assert funnel.total.short == 2
    body = response.content.decode()
    assert "2 laptops activas informan menos espacio libre del que la actualización" in body


def test_the_overview_shows_each_servers_laptops_on_the_newest_offered_build(client, cast, rollout):
    server = make_server("xs-caacupe.local")
    make_server("xs-vacio.local")
    make_laptops(server, NEW, 2)
    make_laptops(server, OLD, 3)
    make_laptops(server, OLD, 4, seen_days_ago=60, start=3)
    body = login(client, cast.dave).get(reverse("schools:overview"))
    servers = {s.hostname: s for s in body.context["page"].object_list}
    assert (
        servers["xs-caacupe.local"].laptops_running,
        servers["xs-caacupe.local"].laptops_active,
    ) == (2, 5)
    assert servers["xs-vacio.local"].laptops_active == 0
    assert 'class="laptops">2 / 5</td>' in body.content.decode()


def test_a_servers_page_lists_its_laptops_versions_with_the_builds_named(client, cast, rollout):
    server = make_server("xs-caacupe.local")
    make_laptops(server, NEW, 2)
    make_laptops(server, STRAY, 3)
    make_laptops(server, "", 1)
    make_laptops(server, STRAY, 2, seen_days_ago=45, start=3)
    response = login(client, cast.dave).get(
        reverse("schools:server_detail", args=[server.hostname])
    )
    versions = [
        (v.build.name if v.build else None, v.vhash, v.laptops, v.active)
        for v in response.context["laptop_versions"]
    ]
    assert versions == [(None, STRAY, 5, 3), (rollout.name, NEW, 2, 2), (None, "", 1, 1)]
    table = response.content.decode()
    table = table[table.index('id="laptop-versions"') :]
    assert f">{rollout.name}</a>" in table
    assert table.count("versión desconocida") == 2


@pytest.mark.parametrize("who", ["alice", "carol", "dave", "eve"])
def test_every_logged_in_user_sees_the_funnel(client, cast, rollout, who):
    url = reverse("schools:build_coverage", args=[rollout.name])
    assert login(client, getattr(cast, who)).get(url).status_code == 200


def test_anonymous_visitors_are_sent_to_log_in_from_the_funnel(client, rollout):
    url = reverse("schools:build_coverage", args=[rollout.name])
    assert client.get(url).status_code == 302


# --- A constant number of queries whatever the number of laptops, servers and builds ---------


def seed(published, cast, servers: int, laptops: int, builds: int):
    made = [
        make_server(f"xs-{n}-{servers}.local", ("Central", "Capital")[n % 2])
        for n in range(servers)
    ]
    for n in range(builds):
        published(f"py99{servers}-{n}", contents_hash=f"{n:064x}")
    for n, server in enumerate(made):
        make_laptops(server, NEW, laptops // servers, free_kib=1000)
        make_laptops(server, f"{n % max(builds, 1):064x}", 2, start=laptops)
        make_laptops(server, STRAY, 1, start=laptops + 2, seen_days_ago=50)
    today = timezone.localdate()
    LaptopDay.objects.bulk_create(
        LaptopDay(day=today - timedelta(days=d), vhash=v, server_key=s.pk, laptops=3)
        for d in range(5)
        for v in (NEW, OLD, STRAY)
        for s in made
    )
    return made


PAGES = {
    "funnel": lambda build, server: reverse("schools:build_coverage", args=[build.name]),
    "overview": lambda build, server: reverse("schools:overview"),
    "server": lambda build, server: reverse("schools:server_detail", args=[server.hostname]),
}


@pytest.mark.parametrize("page", PAGES)
def test_the_laptop_pages_run_the_same_number_of_queries_whatever_the_size(
    client, cast, rollout, published, django_assert_num_queries, page
):
    login(client, cast.dave)
    server = seed(published, cast, 2, 4, 1)[0]
    url = PAGES[page](rollout, server)
    client.get(url)  # warm up sessions and caches
    cache.clear()  # the laptop counts are counted afresh each time, as on a cold worker
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    server = seed(published, cast, 30, 600, 3)[0]
    url = PAGES[page](rollout, server)
    cache.clear()
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


@pytest.fixture
def kept(client, cast, rollout, settings):
    """Counts kept 300 s; a server with 2 laptops on the new build; Dave logged in. The
    server and the coverage page's address."""
    settings.LAPTOP_FUNNEL_CACHE_SECONDS = 300
    cache.clear()
    server = make_server("xs-caacupe.local")
    make_laptops(server, NEW, 2)
    login(client, cast.dave)
    return server, reverse("schools:build_coverage", args=[rollout.name])


def test_the_laptop_counts_are_kept_for_a_while_and_the_page_says_when_they_were_made(client, kept):
    server, url = kept
    first = client.get(url).context["laptops"]
    make_laptops(server, NEW, 3, start=2)
    again = client.get(url)
    assert again.context["laptops"].total.running == 2
    assert again.context["laptops"].counted_at == first.counted_at
    assert 'id="laptops-counted">Laptops contadas el' in again.content.decode()
    cache.clear()
    assert client.get(url).context["laptops"].total.running == 5


def test_the_kept_laptops_section_follows_the_kept_counts_and_the_readers_language(client, kept):
    server, url = kept

    def section(response):
        body = response.content.decode()
        start = body.index('id="laptops"')
        return body[start : body.index("</section>", start)]

    spanish = section(client.get(url))
    assert "Laptops que la usan" in spanish and 'id="laptops-by-server"' in spanish
    client.cookies["django_language"] = "en"
    english = section(client.get(url))
    assert "Laptops running it" in english and "Laptops que la usan" not in english
    # Counted afresh (the kept counts gone): the section says the new counts, not the
    # kept HTML of the old ones.
    make_laptops(server, NEW, 3, start=2)
    cache.delete(client.get(url).context["laptops"].key)
    fresh = client.get(url)
    assert fresh.context["laptops"].total.running == 5
    assert "5 of 5 laptops" in section(fresh)


def test_a_moment_is_stamped_in_the_deployments_time_zone(settings):
    from schools.templatetags.schools_tags import stamp

    settings.TIME_ZONE = "America/Asuncion"
    moment = datetime(2026, 12, 4, 20, 5, tzinfo=UTC)
    assert stamp(None) == ""
    assert stamp(moment) == "2026-12-04 17:05"


@pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
    reason="needs the Redis of a PostgreSQL + Redis run (CACHE_URL=redis://…)",
)
def test_with_a_shared_cache_every_worker_shows_the_same_counts(client, cast, rollout, settings):
    """CACHE_URL=redis://…: the counts one worker made are what the others show (a second
    cache connection here stands for another worker)."""
    from django.core.cache.backends.redis import RedisCache

    location = os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/13"
    prefix = f"test-funnel-{uuid.uuid4().hex}"
    config = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}
    settings.CACHES = {"default": {**config, "KEY_PREFIX": prefix}}
    settings.LAPTOP_FUNNEL_CACHE_SECONDS = 300
    server = make_server("xs-caacupe.local")
    make_laptops(server, NEW, 2)
    url = reverse("schools:build_coverage", args=[rollout.name])
    first = login(client, cast.dave).get(url).context["laptops"]
    other_worker = RedisCache(location, {"KEY_PREFIX": prefix})
    try:
        kept = other_worker.get(first.key)
        assert (kept.total.running, kept.counted_at) == (2, first.counted_at)
        make_laptops(server, NEW, 3, start=2)
        assert client.get(url).context["laptops"].total.running == 2
    finally:
        other_worker.delete_many([first.key])
        client_keys = other_worker._cache.get_client(write=True).keys(f"{prefix}:*")
        if client_keys:
            other_worker._cache.get_client(write=True).delete(*client_keys)
