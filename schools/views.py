import csv
import hashlib
from datetime import datetime, time
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal import charts, roles
from portal.access import require_role
from portal.humanize import percent
from releases import impact
from releases.models import Build
from releases.reasons import Refused

from . import selectors, services
from .forms import ServerForm, ServersImportConfirmForm, ServersImportForm
from .models import SchoolServer
from .servers_csv import spreadsheet_safe

# Servers per page of the overview: each row is a card on a phone, and a page of them
# costs about 0.1 ms a row to draw.
PAGE_SIZE = 50
# Lines the import preview lists one by one (its totals count them all): a whole
# deployment's first import would otherwise be a page of megabytes.
PREVIEW_LINES = 500
CSV_FIELDS = (
    "hostname", "name", "school", "department", "contact", "address", "active", "notes", "state",
    "has_newest", "last_report_at", "last_refresh_status", "disk_free_bytes", "last_error",
)  # fmt: skip
CLIENT_SCRIPT = Path(__file__).resolve().parent / "client" / "xs-sync-report"


def _filters(request):
    return {
        "department": request.GET.get("department", "").strip(),
        "state": request.GET.get("state", "").strip(),
        "search": request.GET.get("q", "").strip()[:100],
    }


class UnknownBuild(Exception):
    """`?lacks=NAME` names no build (the exception's argument)."""


def _lacking(request):
    """The build of `?lacks=NAME` (the active servers without it: the whole list the
    coverage page starts), None without one; UnknownBuild when no build has the name."""
    name = request.GET.get("lacks", "").strip()
    if not name:
        return None
    build = Build.objects.filter(name=name).first() if len(name) <= 64 else None
    if build is None:
        raise UnknownBuild(name)
    return build


@require_GET
def overview(request):
    """Every school server at a glance: counts by state, filters, search, pages, CSV."""
    now = timezone.now()
    newest = selectors.newest_offered_build()
    servers = selectors.servers_with_state(now=now, newest=newest)
    filters = _filters(request)
    export = request.GET.get("format") == "csv"
    try:
        lacks = _lacking(request)
    except UnknownBuild as unknown:
        name = {"name": str(unknown)}
        if export:  # a file of every server would not be what was asked for
            return HttpResponseBadRequest(
                _("No build is named %(name)s.") % name, content_type="text/plain; charset=utf-8"
            )
        shown_instead = _("No build is named %(name)s: showing every school server.")
        messages.error(request, shown_instead % name)
        lacks = None
    shown = selectors.filter_servers(servers, **filters, lacks=lacks)
    if export:
        return _csv(shown, newest)
    counts, departments = selectors.state_counts_and_departments(servers)
    paginator = Paginator(shown.order_by("department", "school", "hostname"), PAGE_SIZE)
    if not (filters["department"] or filters["search"] or lacks):
        # Narrowed by state at most: the counts above already say how many (the same
        # moment, the same newest build), so the paginator need not count again.
        state = filters["state"]
        paginator.count = counts[state] if state in counts else sum(counts.values())
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    if lacks is None:
        query.pop("lacks", None)
    laptops = selectors.laptops_per_server([server.pk for server in page.object_list], newest)
    for server in page.object_list:
        server.laptops_running, server.laptops_active = laptops.get(server.pk, (0, 0))
        server.state_label = selectors.STATES.get(server.state, server.state)
    return render(
        request,
        "schools/overview.html",
        {
            "page": page,
            "counts": counts,
            "states": selectors.STATES,
            "departments": departments,
            "filters": filters,
            "lacks": lacks,
            "newest": newest,
            "active_days": settings.LAPTOP_ACTIVE_DAYS,
            "query": query.urlencode(),
            "can_manage": roles.has_role(request.user, roles.COORDINATORS),
        },
    )


def _csv(servers, newest):
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="school-servers.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "hostname",
            "name",
            "school",
            "department",
            "contact",
            "address",
            "active",
            "notes",
            "state",
            f"has {newest.name}" if newest else "has newest",
            "last_report_at",
            "last_refresh_status",
            "disk_free_bytes",
            "last_error",
        ]
    )
    # Tuples, not model instances: the export is every server, thousands of rows.
    servers = selectors.with_has_newest(servers, newest)
    rows = servers.order_by("department", "school", "hostname").values_list(*CSV_FIELDS)
    for row in rows.iterator(chunk_size=2000):
        server = dict(zip(CSV_FIELDS, row, strict=True))
        writer.writerow(
            [
                server["hostname"],
                spreadsheet_safe(server["name"]),
                spreadsheet_safe(server["school"]),
                spreadsheet_safe(server["department"]),
                spreadsheet_safe(server["contact"]),
                spreadsheet_safe(server["address"] or ""),
                "yes" if server["active"] else "no",
                spreadsheet_safe(server["notes"]),
                server["state"],
                "yes" if server["has_newest"] else "no",
                server["last_report_at"].isoformat() if server["last_report_at"] else "",
                "" if server["last_refresh_status"] is None else server["last_refresh_status"],
                "" if server["disk_free_bytes"] is None else server["disk_free_bytes"],
                spreadsheet_safe(server["last_error"]),
            ]
        )
    return response


@require_GET
def server_detail(request, hostname):
    newest = selectors.newest_offered_build()
    server = get_object_or_404(selectors.servers_with_state(newest=newest), hostname=hostname)
    return render(
        request,
        "schools/server_detail.html",
        {
            "server": server,
            "state_label": selectors.STATES.get(server.state, server.state),
            "syncs": server.syncs.select_related("build").order_by("-last_seen_at")[:200],
            "checkins": server.checkins.all()[:50],
            "laptop_versions": selectors.server_laptop_versions(server),
            "active_days": settings.LAPTOP_ACTIVE_DAYS,
            "newest": newest,
            "can_manage": roles.has_role(request.user, roles.COORDINATORS),
        },
    )


# --- Coordinators manage the servers (audited by the services) --------------------------------


@require_http_methods(["GET", "POST"])
def server_add(request):
    require_role(request, roles.COORDINATORS)
    form = ServerForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        server = services.server_add(server=form.save(commit=False), acting_user=request.user)
        messages.success(
            request,
            _("School server %(name)s added. Issue its report token below.")
            % {"name": server.hostname},
        )
        return redirect("schools:server_detail", hostname=server.hostname)
    return render(request, "schools/server_form.html", {"form": form, "hostname": None})


@require_http_methods(["GET", "POST"])
def server_edit(request, hostname):
    require_role(request, roles.COORDINATORS)
    server = get_object_or_404(SchoolServer, hostname=hostname)
    form = ServerForm(request.POST or None, instance=server)
    if request.method == "POST" and form.is_valid():
        changes = {name: form.cleaned_data[name] for name in services.EDITABLE_FIELDS}
        changed = services.server_update(server=server, acting_user=request.user, changes=changes)
        if changed:
            messages.success(request, _("Changes saved."))
        else:
            messages.info(request, _("Nothing changed."))
        return redirect("schools:server_detail", hostname=server.hostname)
    # The form may have changed `server` in memory: the page names it as stored.
    return render(request, "schools/server_form.html", {"form": form, "hostname": hostname})


@require_http_methods(["GET", "POST"])
def server_token(request, hostname):
    """Issue (or replace) the server's report token and show it, once. Replacing one stops
    the server's reports until its settings change, so GET asks first."""
    require_role(request, roles.COORDINATORS)
    server = get_object_or_404(SchoolServer, hostname=hostname)
    replaced = bool(server.token_hash)
    if request.method == "GET":
        return render(request, "schools/server_token_confirm.html", {"server": server})
    key = services.server_token_rotate(server=server, acting_user=request.user)
    response = render(
        request,
        "schools/server_token.html",
        {
            "server": server,
            "token": key,
            "replaced": replaced,
            "portal_url": request.build_absolute_uri("/").rstrip("/"),
        },
    )
    response["Cache-Control"] = "no-store"  # shown once
    return response


@require_http_methods(["GET", "POST"])
def servers_import(request):
    """Upload a CSV file and see, line by line, what importing it would do; nothing is
    written here (`servers_import_confirm` does it)."""
    require_role(request, roles.COORDINATORS)
    form = ServersImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        text = form.cleaned_data["file"]
        plan = services.servers_import_plan(text=text)
        if not plan.fatal:
            return _import_preview(request, text=text, name=form.file_name, plan=plan)
        # No header, or broken CSV: there is nothing to preview.
        form.add_error("file", _line_error(plan.errors[-1]))
    return render(request, "schools/servers_import.html", {"form": form})


@require_POST
def servers_import_confirm(request):
    """Import the previewed file, as previewed: refused if the file is not the one the
    preview showed, or if the servers changed since (then the new preview is shown)."""
    require_role(request, roles.COORDINATORS)
    form = ServersImportConfirmForm(request.POST)
    if not form.is_valid():
        for message in form.errors.get("payload", [_("Upload the file again.")]):
            messages.error(request, message)
        return redirect("schools:servers_import")
    content = form.cleaned_data["payload"]
    text = content["text"]
    try:
        result = services.servers_import_csv(
            text=text, acting_user=request.user, expected=content["plan"]
        )
    except Refused as refusal:
        messages.error(request, refusal.message)
        plan = services.servers_import_plan(text=text)
        return _import_preview(request, text=text, name=content["name"], plan=plan)
    messages.success(
        request,
        _("Imported. Servers added: %(created)s; changed: %(changed)s; lines skipped: %(skipped)s.")
        % {"created": result.created, "changed": result.changed, "skipped": len(result.errors)},
    )
    return redirect("schools:overview")


def _import_preview(request, *, text, name, plan):
    payload = ServersImportConfirmForm.payload_for(text=text, name=name, plan=plan)
    notable = plan.notable
    response = render(
        request,
        "schools/servers_import_preview.html",
        {
            "plan": plan,
            "entries": notable[:PREVIEW_LINES],
            "not_shown": max(len(notable) - PREVIEW_LINES, 0),
            "name": name,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "confirm": ServersImportConfirmForm(initial={"payload": payload}),
        },
    )
    response["Cache-Control"] = "no-store"  # it carries the file
    return response


def _line_error(error) -> str:
    return _("Line %(line)s: %(message)s. %(hint)s") % {
        "line": error.line,
        "message": error.message,
        "hint": error.hint,
    }


@require_GET
def build_coverage(request, name):
    build = get_object_or_404(Build, name=name)
    coverage = selectors.build_coverage(build)
    minimum = settings.PROMOTION_MIN_COVERAGE
    changes = selectors.offer_changes(build)
    chart = charts.share_chart(
        selectors.coverage_series(build, total=coverage.active_servers),
        marks=selectors.offer_marks(changes),
        threshold=(minimum, _("%(share)s needed to promote") % {"share": percent(minimum)}),
    )
    offered_at = selectors.first_offered_at(changes)
    cost = _laptop_cost(build)
    laptops = selectors.laptop_funnel(build, cost_bytes=cost, offered_at=offered_at)
    laptop_chart = charts.share_chart(
        [(_day_start(day), share) for day, share in laptops.series],
        marks=[(offered_at, _("Offered"))] if offered_at else [],
        threshold=(0.9, percent(0.9)),
    )
    return render(
        request,
        "schools/build_coverage.html",
        {
            "build": build,
            "coverage": coverage,
            "chart": chart,
            "laptops": laptops,
            "laptop_chart": laptop_chart,
            "active_days": settings.LAPTOP_ACTIVE_DAYS,
            # The laptops' section is drawn from `laptops` alone: its HTML is kept as long.
            "laptops_kept_seconds": settings.LAPTOP_FUNNEL_CACHE_SECONDS,
        },
    )


def _laptop_cost(build) -> int | None:
    """The update's laptop cost against the build laptops update from, when it is known."""
    try:
        diff = impact.promotion_diff(build)
    except Refused:
        return None
    return diff["laptop_cost_bytes"] if diff else None


def _day_start(day):
    # A day's count drawn at its start (the deployment's midnight), so the moment it was
    # offered, during its first day, falls inside the chart.
    return timezone.make_aware(datetime.combine(day, time()))


@require_GET
def client_script(request):
    if not CLIENT_SCRIPT.is_file():
        raise Http404
    response = FileResponse(open(CLIENT_SCRIPT, "rb"), content_type="text/plain; charset=utf-8")  # noqa: SIM115
    response["Content-Disposition"] = 'attachment; filename="xs-sync-report"'
    return response


@require_GET
def client_install(request):
    # The portal's address as this request reached it: http:// for a portal served on plain
    # HTTP, https:// behind TLS (or a proxy that says so, SECURE_PROXY_SSL_HEADER).
    portal_url = request.build_absolute_uri("/").rstrip("/")
    return render(
        request,
        "schools/client_install.html",
        {"script_exists": CLIENT_SCRIPT.exists(), "portal_url": portal_url},
    )
