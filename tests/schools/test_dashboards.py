import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from releases.models import Build, BuildStatus
from schools.models import CheckIn, SchoolServer, SyncState
from schools.services import servers_import_csv

from ..factories import PASSWORD


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def seed(servers: int, builds: int, uploader):
    """`servers` reporting servers, each holding every one of `builds` published builds."""
    now = timezone.now()
    build_rows = Build.objects.bulk_create(
        Build(
            name=f"seed{index}",
            compression="bz2",
            status=BuildStatus.PUBLISHED,
            size=1,
            md5="0" * 32,
            sha256="0" * 64,
            contents_size=1,
            contents_sha256="0" * 64,
            store_dir=f"seed{index}",
            uploaded_by=uploader,
            original_filename="x",
            published_at=now - timedelta(days=3),
        )
        for index in range(builds)
    )
    server_rows = SchoolServer.objects.bulk_create(
        SchoolServer(
            hostname=f"xs-{index}.local",
            name=f"xs-{index}",
            school=f"Escuela {index}",
            department=("Cordillera", "Central", "Capital")[index % 3],
            last_report_at=now - timedelta(hours=index % 50),
        )
        for index in range(servers)
    )
    SyncState.objects.bulk_create(
        SyncState(server=s, build=b, build_name=b.name, status="present", held_since=now)
        for s in server_rows
        for b in build_rows
    )
    CheckIn.objects.bulk_create(CheckIn(server=s, body={"builds": []}) for s in server_rows)
    return server_rows, build_rows


PAGES = [
    ("overview", lambda servers, builds: reverse("schools:overview")),
    (
        "overview filtered",
        lambda servers, builds: (
            reverse("schools:overview") + "?department=Central&state=behind&q=xs"
        ),
    ),
    (
        "server",
        lambda servers, builds: reverse("schools:server_detail", args=[servers[0].hostname]),
    ),
    ("build", lambda servers, builds: reverse("schools:build_coverage", args=[builds[0].name])),
]


@pytest.mark.parametrize(("label", "url"), PAGES)
def test_dashboards_run_the_same_number_of_queries_whatever_the_size(
    client, cast, django_assert_num_queries, label, url
):
    login(client, cast.dave)
    small = seed(5, 2, cast.alice)
    client.get(url(*small))  # warm up sessions and caches
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert client.get(url(*small)).status_code == 200
    Build.objects.all().delete()
    SchoolServer.objects.all().delete()
    large = seed(150, 12, cast.alice)
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url(*large)).status_code == 200


@pytest.mark.parametrize("who", ["alice", "carol", "dave", "eve"])
def test_every_logged_in_user_sees_the_dashboards(client, cast, who):
    servers, builds = seed(3, 1, cast.alice)
    login(client, getattr(cast, who))
    assert client.get(reverse("schools:overview")).status_code == 200
    assert (
        client.get(reverse("schools:server_detail", args=[servers[0].hostname])).status_code == 200
    )
    assert client.get(reverse("schools:build_coverage", args=[builds[0].name])).status_code == 200


def test_anonymous_visitors_are_sent_to_log_in(client, db):
    assert client.get(reverse("schools:overview")).status_code == 302


def test_the_overview_counts_servers_by_state(client, cast):
    seed(6, 1, cast.alice)
    SchoolServer.objects.create(hostname="never.local", name="n", school="N")
    response = login(client, cast.dave).get(reverse("schools:overview"))
    assert response.context["counts"]["up_to_date"] == 6
    assert response.context["counts"]["never"] == 1


def test_the_overview_filters_by_department_and_searches(client, cast):
    seed(9, 1, cast.alice)
    response = login(client, cast.dave).get(
        reverse("schools:overview") + "?department=Central&q=xs-4"
    )
    assert [s.hostname for s in response.context["page"].object_list] == ["xs-4.local"]


def test_the_overview_pages_count_what_each_filter_leaves(client, cast):
    servers, _builds = seed(120, 1, cast.alice)
    SchoolServer.objects.filter(pk__in=[s.pk for s in servers[:55]]).update(last_report_at=None)
    login(client, cast.dave)

    def listed(query):
        """(what the pager says, every host name its pages list)."""
        first = client.get(reverse("schools:overview") + query).context
        hostnames = []
        for number in first["page"].paginator.page_range:
            page = client.get(reverse("schools:overview") + f"{query}&page={number}")
            hostnames += [server.hostname for server in page.context["page"].object_list]
        return (first["page"].paginator.count, first["page"].paginator.num_pages), hostnames

    for query in ("?", "?state=never", "?state=up_to_date", "?state=silent", "?state=nonsense",
                  "?state=never&department=Central", "?q=xs-11"):  # fmt: skip
        (count, pages), hostnames = listed(query)
        assert count == len(hostnames) == len(set(hostnames)), query
        assert pages == max(1, -(-count // 50)), query
    assert listed("?")[0] == (120, 3)
    assert listed("?state=never")[0] == (55, 2)
    assert listed("?q=xs-11")[0][0] == 11  # xs-11 and xs-110 … xs-119


def test_the_overview_lists_departments_as_a_reader_orders_them(client, cast):
    for index, department in enumerate(
        ["Ñeembucú", "Misiones", "Itapúa", "Guairá", "Central", "alto paraná", "", "Central"]
    ):
        SchoolServer.objects.create(hostname=f"d{index}.local", name="d", department=department)
    response = login(client, cast.dave).get(reverse("schools:overview"))
    assert response.context["departments"] == [
        "alto paraná", "Central", "Guairá", "Itapúa", "Misiones", "Ñeembucú",
    ]  # fmt: skip
    assert response.context["counts"]["never"] == 8


def test_the_overview_exports_csv_with_the_same_filters(client, cast):
    seed(6, 1, cast.alice)
    response = login(client, cast.dave).get(
        reverse("schools:overview") + "?department=Capital&format=csv"
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted(row["hostname"] for row in rows) == ["xs-2.local", "xs-5.local"]
    assert rows[0]["state"] == "up_to_date"


def test_the_csv_export_defuses_text_a_spreadsheet_would_run(client, cast):
    SchoolServer.objects.create(
        hostname="xs-calc.local",
        name="-2+3",
        school="Escuela =1",
        last_error='=HYPERLINK("http://evil.example/","x")',
    )
    response = login(client, cast.dave).get(reverse("schools:overview") + "?format=csv")
    [row] = csv.DictReader(io.StringIO(response.content.decode()))
    assert row["last_error"] == '\'=HYPERLINK("http://evil.example/","x")'
    assert row["name"] == "'-2+3"
    assert row["school"] == "Escuela =1"  # only a leading sign is a formula

    # Exported, then imported again (the import's columns are a subset): nothing gained.
    result = servers_import_csv(text=response.content.decode())
    assert (result.errors, result.updated) == ([], 1)
    assert SchoolServer.objects.get(hostname="xs-calc.local").name == "-2+3"


def test_the_build_page_lists_the_servers_that_lag(client, cast):
    servers, builds = seed(4, 1, cast.alice)
    SyncState.objects.filter(server=servers[1]).delete()
    response = login(client, cast.dave).get(
        reverse("schools:build_coverage", args=[builds[0].name])
    )
    body = response.content.decode()
    assert "75\u00a0%" in body
    assert 'id="lagging"' in body and "xs-1.local" in body


def test_the_build_page_lists_the_first_lagging_servers_and_links_to_them_all(client, cast):
    servers, builds = seed(40, 1, cast.alice)
    SyncState.objects.filter(server__in=servers[:35]).delete()
    response = login(client, cast.dave).get(
        reverse("schools:build_coverage", args=[builds[0].name])
    )
    body = response.content.decode()
    assert response.context["coverage"].missing_count == 35
    lagging = body[body.index('id="lagging"') :]
    assert lagging.count("<tr><td") == 25
    hint = body[body.index('id="lagging-all"') :]
    link = hint[hint.index("<a ") : hint.index("</a>")]
    assert f'href="/schools/?lacks={builds[0].name}"' in link
    assert ">Los 35 servidores" in link


def test_the_overview_lists_the_active_servers_without_a_build(client, cast):
    servers, builds = seed(6, 2, cast.alice)
    SyncState.objects.filter(server__in=servers[:3], build=builds[0]).delete()
    SyncState.objects.filter(server=servers[4], build=builds[0]).update(status="failed")
    SyncState.objects.filter(server=servers[5], build=builds[0]).update(status="verified")
    SchoolServer.objects.filter(pk=servers[1].pk).update(active=False)
    login(client, cast.dave)
    url = reverse("schools:overview") + f"?lacks={builds[0].name}"
    response = client.get(url)
    lacking = ["xs-0.local", "xs-2.local", "xs-4.local"]  # xs-1 is inactive
    assert sorted(s.hostname for s in response.context["page"].object_list) == lacking
    notice = response.content.decode().split('id="lacks-filter"')[1].split("</p>")[0]
    assert f"<strong>{builds[0].name}</strong>" in notice
    # Kept through a search and in the export.
    assert f'name="lacks" value="{builds[0].name}"' in response.content.decode()
    narrowed = client.get(url + "&q=xs-2")
    assert [s.hostname for s in narrowed.context["page"].object_list] == ["xs-2.local"]
    # The state links keep it too.
    assert f'href="?state=never&amp;lacks={builds[0].name}"' in response.content.decode()
    rows = list(csv.DictReader(io.StringIO(client.get(url + "&format=csv").content.decode())))
    assert sorted(row["hostname"] for row in rows) == lacking


def test_the_overview_says_when_no_build_has_the_name_it_filters_by(client, cast):
    seed(3, 1, cast.alice)
    response = login(client, cast.dave).get(reverse("schools:overview") + "?lacks=no-such")
    assert response.status_code == 200
    assert len(response.context["page"].object_list) == 3
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "no-such" in message.message
    assert "lacks" not in response.context["query"]
    # A longer name than any build's is no build, not the build of its first 64 characters.
    long = client.get(reverse("schools:overview") + "?lacks=seed0" + "x" * 64)
    assert len(long.context["page"].object_list) == 3
    # The export does not answer with every server instead, nor keep a message for later.
    export = client.get(reverse("schools:overview") + "?lacks=no-such&format=csv")
    assert export.status_code == 400 and "no-such" in export.content.decode()
    assert not list(client.get(reverse("schools:overview")).context["messages"])


def test_the_client_script_can_be_downloaded(client, cast):
    response = login(client, cast.dave).get(reverse("schools:client_script"))
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"#!/bin/sh")
    assert response["Content-Disposition"] == 'attachment; filename="xs-sync-report"'


def svg_numbers(body: str) -> list[str]:
    """Every coordinate attribute of the chart, as written."""
    import re

    svg = body[body.index("<svg") : body.index("</svg>")]
    return re.findall(r'\b(?:x|y|x1|x2|y1|y2)="([^"]*)"', svg) + re.findall(
        r'points="([^"]*)"', svg
    )


def test_the_coverage_chart_has_axes_the_threshold_and_the_moment_it_was_offered(
    client, cast, published
):
    from releases import offers

    build = published("py960-1")
    now = timezone.now()
    Build.objects.filter(pk=build.pk).update(published_at=now - timedelta(days=4))
    servers = [
        SchoolServer.objects.create(hostname=f"xs-{n}.local", name=f"xs{n}", school=f"E{n}")
        for n in range(4)
    ]
    for days, server in zip((3, 2, 1), servers[:3], strict=True):
        SyncState.objects.create(
            server=server,
            build=build,
            build_name=build.name,
            status="present",
            held_since=now - timedelta(days=days),
        )
    offers.build_promote(build=build, acting_user=cast.carol, reason="piloto en tres escuelas")
    build.refresh_from_db()
    assert build.status == BuildStatus.OFFERED

    body = (
        login(client, cast.dave)
        .get(reverse("schools:build_coverage", args=[build.name]))
        .content.decode()
    )
    chart = body[body.index('id="coverage-chart"') :]
    # The share axis in Spanish, the minimum to promote, and the moment it was offered.
    for label in ("0\u00a0%", "50\u00a0%", "100\u00a0%"):
        assert f">{label}</text>" in chart
    assert "90\u00a0% necesario para promover</text>" in chart
    assert 'class="chart-mark-label"' in chart and ">Ofrecida</text>" in chart
    # Days on the time axis, and the numbers as a table: 75 % now.
    assert chart.count('class="chart-label" x=') >= 5 + 3
    assert "75\u00a0%</td>" in chart
    # Coordinates are numbers, never localised with a decimal comma.
    numbers = svg_numbers(body)
    assert numbers and all("," not in n for n in numbers[:-1])
    assert all(float(n) >= 0 for n in numbers[:-1])


def test_the_coverage_page_is_linked_from_the_build_promote_and_overview_pages(
    client, cast, published
):
    from releases import offers

    build = published("py961-1")
    url = reverse("schools:build_coverage", args=[build.name])
    login(client, cast.carol)
    for page in (
        reverse("releases:build_detail", args=[build.name]),
        reverse("releases:build_promote", args=[build.name]),
    ):
        assert f'id="coverage-link" href="{url}"' in client.get(page).content.decode(), page
    offers.build_promote(build=build, acting_user=cast.carol, reason="piloto")
    overview = client.get(reverse("schools:overview")).content.decode()
    assert f'id="coverage-link" href="{url}"' in overview


def test_the_benchmarks_know_the_overviews_page_size():
    """bench/ runs without Django: its copy of the page size must follow the view's, or its
    "last page" is a middle one."""
    import importlib.util
    from pathlib import Path

    from schools.views import PAGE_SIZE

    path = Path(__file__).resolve().parents[2] / "bench" / "harness.py"
    spec = importlib.util.spec_from_file_location("bench_harness", path)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    assert harness.OVERVIEW_PAGE_SIZE == PAGE_SIZE
    assert harness.overview_pages(5000) == 100 and harness.overview_pages(0) == 1
