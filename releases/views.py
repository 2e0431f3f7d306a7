"""The console's pages. Views authorise (`access`), then call one service each; the
services assume an authorised caller."""

import json
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from portal import roles
from portal.access import require_role

from . import chunks, deploy, offers, recheck, services, updates_cfg, usb, usbkit, xohelper
from .access import get_build_for_user, get_deployment_for_user, may_approve, may_edit
from .forms import ContentsHashForm, PromoteForm, StopAllForm, UploadForm
from .impact import compare_builds, diff_baseline, diff_choices, has_manifest
from .models import Build, BuildStatus, Deployment, DeploymentStatus, OfferedEntry
from .needs import needs_for
from .reasons import Refused
from .reasons import render as render_reason
from .receive import BODY_ERRORS, body_refused, receive_build, streamed_upload

# A message about work the live status then reports ("validation has started"): once the
# build is done it would contradict the page (green beside a red "invalid"), so it goes.
LIVE = "live"


@require_GET
def home(request):
    """What needs me: the landing page after login (see `needs`)."""
    return render(request, "releases/home.html", {"needs": needs_for(request.user)})


@require_GET
def build_list(request):
    builds = Build.objects.with_people().defer("status_params")
    page = Paginator(builds, 50).get_page(request.GET.get("page"))
    return render(request, "releases/build_list.html", {"page": page})


@csrf_exempt
def build_upload(request):
    """The upload page. CSRF is checked by the inner view, after our streaming upload
    handler is installed (the middleware would otherwise parse the body first)."""
    require_role(request, roles.UPLOADERS)
    if request.method != "POST":
        return _build_upload(request)
    with streamed_upload(request):
        try:
            return _build_upload(request)
        except BODY_ERRORS as exc:
            # The CSRF check reads the body first: one it cannot take apart (or too large to
            # read) is answered here, with the reason; nothing was kept.
            return _upload_refused(request, body_refused(request, exc))


# The upload page's script sends the archive in chunks (releases.chunks) before it posts the
# form with the finished upload's id instead of the file; with a session, so CSRF applies.


@require_http_methods(["POST"])
def upload_start(request):
    require_role(request, roles.UPLOADERS)
    return chunks.start(request, lambda pk: reverse("releases:upload_chunk", args=[pk]))


@require_http_methods(["GET", "PUT", "DELETE"])
def upload_chunk(request, upload_id):
    require_role(request, roles.UPLOADERS)
    return chunks.upload(request, upload_id, reverse("releases:upload_chunk", args=[upload_id]))


@csrf_protect
def _build_upload(request):
    if request.method != "POST":
        return render(request, "releases/build_upload.html", {"form": UploadForm()})
    build, errors = receive_build(request, via="web")
    if build is None:
        return _upload_refused(request, errors)
    messages.success(
        request,
        _("Build %(name)s received; validation has started.") % {"name": build.name},
        extra_tags=LIVE,
    )
    url = reverse("releases:build_detail", args=[build.name])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _upload_refused(request, errors):
    # Files cannot be put back into a file input; the typed values can.
    form = UploadForm(initial={key: request.POST.get(key, "") for key in ("name", "contents_hash")})
    context = {"form": form, "errors": errors}
    template = "releases/_upload_form.html" if request.htmx else "releases/build_upload.html"
    return render(request, template, context, status=400)


def _build_context(request, name):
    build = get_build_for_user(request, name, queryset=Build.objects.with_people())
    now = timezone.now()
    return {
        "build": build,
        "events": build.events.select_related("actor"),
        "hash_form": ContentsHashForm(),
        "xo_command": XO_COMMAND.format(file=build.contents_name),
        "build_contents_url": reverse("releases:build_contents_file", args=[build.name]),
        "xo_helper_ttl": timeuntil(now + timedelta(seconds=settings.XO_HELPER_TTL), now),
        "can_edit": may_edit(request.user),
        "promote_blocker": (
            offers.promotion_blocker(build=build, acting_user=request.user)
            if may_approve(request.user) and build.status in OFFERABLE_STATUSES
            else None
        ),
        "can_promote": may_approve(request.user) and build.status in OFFERABLE_STATUSES,
        "offer_waiting": (
            deploy.waiting_reason(build.offers.filter(active=True).values_list("pk", flat=True))
            if build.status == BuildStatus.OFFERED
            else ""
        ),
    }


OFFERABLE_STATUSES = (BuildStatus.PUBLISHED, BuildStatus.WITHDRAWN)


def _still_live(build) -> bool:
    return build.is_working or build.status == BuildStatus.VALID


@require_GET
def build_detail(request, name):
    context = _build_context(request, name)
    if not _still_live(context["build"]):
        context["messages"] = [m for m in messages.get_messages(request) if LIVE not in m.tags]
    context.update(_impact_context(context["build"], request.GET.get("against", "")))
    return render(request, "releases/build_detail.html", context)


def _impact_context(build, against: str) -> dict:
    """The build page's update impact: against the build picked in the selector, else the
    one laptops would update from (`impact.diff_baseline`). Not on the polled status part:
    a diff of a large tree is worth computing once a page."""
    if not has_manifest(build):
        return {}
    if against:
        old = Build.objects.filter(name=against).first()
        if old is None:
            return _impact_shown(build, None, _("No build is named %(name)s.") % {"name": against})
    else:
        old = diff_baseline(build)
    return _impact_shown(build, old)


def _impact_shown(build, old, problem="") -> dict:
    diff = None
    if old is not None and not problem:
        try:
            diff = compare_builds(old=old, new=build)
        except Refused as refusal:
            problem = refusal.message
    return {
        "show_impact": True,
        "diff": diff,
        "diff_problem": problem,
        "diff_selector": True,
        "diff_choices": diff_choices(build),
        "diff_lists": _diff_lists(diff),
    }


def _diff_lists(diff) -> list:
    if diff is None:
        return []
    return [
        (diff[key]["entries"], label, diff[key]["count"])
        for key, label in (
            ("added", _("Added")),
            ("removed", _("Removed")),
            ("changed", pgettext("build diff entries", "Changed")),
        )
    ]


@require_GET
def build_status(request, name):
    """The live part of the build page, polled while the build is being worked on; when the
    work ends it also clears the messages about that work (out of band)."""
    context = _build_context(request, name)
    context["clear_live_messages"] = not _still_live(context["build"])
    return render(request, "releases/_build_status.html", context)


@require_POST
def build_contents_hash(request, name):
    build = get_build_for_user(request, name, edit=True)
    form = ContentsHashForm(request.POST)
    if form.is_valid():
        try:
            services.build_set_contents_hash(
                build=build, acting_user=request.user, value=form.cleaned_data["contents_hash"]
            )
            messages.success(request, _("Contents hash saved."))
        except Refused as rejection:
            messages.error(request, rejection.message)
    else:
        for error in form.errors.get("contents_hash", [_("Enter a contents hash.")]):
            messages.error(request, error)
    return redirect("releases:build_detail", name=build.name)


# --- The contents hash on an XO ---------------------------------------------------------------

# The command an XO runs on the downloaded .contents file, the XO helper's by hand.
XO_COMMAND = (
    'python -c "import sys; from bitfrost.contents.utils import UnifiedContents; '
    'print(UnifiedContents(sys.argv[1]).contents_hash())" {file}'
)


# A .contents is JSON (checked at upload); said so, never as something a browser might run.
CONTENTS_TYPE = "application/json"


@require_GET
def build_contents_file(request, name):
    """The build's .contents file, to compute its hash on an XO."""
    build = get_build_for_user(request, name)
    try:
        handle = open(build.stored_contents, "rb")  # noqa: SIM115 (FileResponse closes it)
    except OSError:
        raise Http404(_("The stored .contents file of this build is missing.")) from None
    return FileResponse(
        handle, as_attachment=True, filename=build.contents_name, content_type=CONTENTS_TYPE
    )


@require_POST
def build_xo_helper(request, name):
    """Make a one-time XO helper link and show it, once."""
    build = get_build_for_user(request, name, edit=True)
    try:
        helper, token = xohelper.helper_create(build=build, acting_user=request.user)
    except Refused as refusal:
        messages.error(request, refusal.message)
        return redirect("releases:build_detail", name=build.name)
    link = request.build_absolute_uri(reverse("releases:xo_helper_script", args=[token]))
    response = render(
        request,
        "releases/xo_helper.html",
        {
            "build": build,
            "helper": helper,
            "link": link,
            "command": f"curl -so {XO_SCRIPT_NAME} {link} && python {XO_SCRIPT_NAME}",
        },
    )
    response["Cache-Control"] = "no-store"  # the link is shown once
    return response


XO_SCRIPT_NAME = "xo-hash.py"
# Plain text, like every other download of the portal: curl saves it whatever it is called, and
# a browser that opens the link shows the script instead of offering to run it.
XO_SCRIPT_TYPE = "text/plain; charset=utf-8"


def _xo_text(text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(f"{text}\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def _xo_gone_script(refusal: Refused) -> HttpResponse:
    """What an XO that fetched a dead link runs: a script that says so (curl saves it whatever
    the status, so the reader sees why), for Python 2 and 3."""
    message = json.dumps(refusal.message, ensure_ascii=True)
    script = (
        "import sys\n"
        f"message = u{message} + u'\\n'\n"
        "stream = getattr(sys.stderr, 'buffer', sys.stderr)\n"
        "stream.write(message.encode('utf-8'))\n"
        "sys.exit(2)\n"
    )
    response = HttpResponse(script, status=410, content_type=XO_SCRIPT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


@login_not_required
@require_GET
def xo_helper_script(request, token):
    try:
        helper = xohelper.helper_find(token)
    except Refused as refusal:
        return _xo_gone_script(refusal)
    urls = {
        "CONTENTS_URL": reverse("releases:xo_helper_contents", args=[token]),
        "HASH_URL": reverse("releases:xo_helper_hash", args=[token]),
        "BUILD_PAGE": reverse("releases:build_detail", args=[helper.build.name]),
    }
    script = xohelper.helper_script(
        helper, urls={key: request.build_absolute_uri(url) for key, url in urls.items()}
    )
    response = HttpResponse(script, content_type=XO_SCRIPT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{XO_SCRIPT_NAME}"'
    response["Cache-Control"] = "no-store"
    return response


@login_not_required
@require_GET
def xo_helper_contents(request, token):
    try:
        helper = xohelper.helper_find(token)
    except Refused as refusal:
        return _xo_text(refusal.message, status=410)
    try:
        handle = open(helper.build.stored_contents, "rb")  # noqa: SIM115 (FileResponse closes it)
    except OSError:
        return _xo_text(_("The stored .contents file of this build is missing."), status=404)
    return FileResponse(
        handle, as_attachment=True, filename=helper.build.contents_name, content_type=CONTENTS_TYPE
    )


@login_not_required
@csrf_exempt  # the token in the URL is the XO's only authority; there is no session
@require_POST
def xo_helper_hash(request, token):
    try:
        build = xohelper.helper_submit(
            token=token, value=request.POST.get("contents_hash", "")[:1000]
        )
    except Refused as refusal:
        return _xo_text(refusal.message, status=410 if refusal.code == "xo_helper_gone" else 400)
    return _xo_text(
        _("Saved: the contents hash of %(name)s is %(value)s. You can close this terminal.")
        % {"name": build.name, "value": build.contents_hash}
    )


@require_POST
def build_retry(request, name):
    build = get_build_for_user(request, name, edit=True)
    try:
        services.build_retry_publication(build=build, acting_user=request.user)
    except Refused as refusal:
        messages.error(request, refusal.message)
    else:
        messages.success(request, _("Publication queued again."), extra_tags=LIVE)
    return redirect("releases:build_detail", name=build.name)


# --- Promotion ------------------------------------------------------------------------------


def build_promote(request, name):
    """Preview (GET) and confirm (POST) a promotion: the exact diff of updates.cfg, the
    coverage, and the rules that apply, before anything changes."""
    build = get_build_for_user(request, name, approve=True, queryset=Build.objects.with_people())
    priorities = settings.OATSLITE_PRIORITIES
    form = PromoteForm(
        request.POST or None, priorities=priorities, initial={"priority": priorities[0]}
    )
    if request.method == "POST" and form.is_valid():
        try:
            deployment = offers.build_promote(
                build=build,
                acting_user=request.user,
                priority=form.cleaned_data["priority"],
                reason=form.cleaned_data["reason"],
            )
        except Refused as refusal:
            form.add_error(None, refusal.message)
        else:
            messages.success(
                request,
                _("%(name)s promoted; updates.cfg is being deployed.") % {"name": build.name},
            )
            return redirect("releases:deployment_detail", pk=deployment.pk)
    priority = form.data.get("priority") or priorities[0]
    if priority not in priorities:
        priority = priorities[0]
    preview = offers.promotion_preview(build=build, acting_user=request.user, priority=priority)
    return render(
        request,
        "releases/build_promote.html",
        {
            "build": build,
            "form": form,
            "preview": preview,
            "min_coverage": settings.PROMOTION_MIN_COVERAGE,
            "diff": preview.impact,
            "diff_lists": _diff_lists(preview.impact),
        },
        status=400 if request.method == "POST" else 200,
    )


def _required_reason(request) -> str:
    """The written reason an action that takes something away from the laptops needs."""
    reason = request.POST.get("reason", "").strip()
    if not reason:
        raise Refused("reason_required")
    return reason[:2000]


@require_POST
def build_withdraw(request, name):
    build = get_build_for_user(request, name, approve=True)
    try:
        reason = _required_reason(request)
        deployment = offers.build_withdraw(build=build, acting_user=request.user, reason=reason)
    except Refused as refusal:
        messages.error(request, refusal.message)
        return redirect("releases:build_detail", name=build.name)
    messages.success(
        request, _("%(name)s withdrawn; updates.cfg is being deployed.") % {"name": build.name}
    )
    return redirect("releases:deployment_detail", pk=deployment.pk)


@require_POST
def build_recall(request, name):
    """Take a build that would break school servers away from them (see `recheck`)."""
    build = get_build_for_user(request, name, approve=True)
    try:
        recheck.build_recall(
            build=build, acting_user=request.user, reason=request.POST.get("reason", "")
        )
    except Refused as refusal:
        messages.error(request, refusal.message)
    else:
        messages.success(
            request,
            _("%(name)s recalled: its files are being removed from the puppet content folder.")
            % {"name": build.name},
        )
    return redirect("releases:build_detail", name=build.name)


@require_GET
def deployment_list(request):
    deployments = Deployment.objects.select_related("requested_by", "build")
    page = Paginator(deployments, 50).get_page(request.GET.get("page"))
    last = Deployment.objects.last_deployed()
    latest = Deployment.objects.order_by("-id").first()
    return render(
        request,
        "releases/deployment_list.html",
        {
            "page": page,
            "last": last,
            "drift": latest if latest and latest.status == DeploymentStatus.DRIFT else None,
            "offered": OfferedEntry.objects.active().select_related("build"),
            "waiting": deploy.undeployed_entry_ids(),
            "waiting_reason": deploy.waiting_reason(deploy.undeployed_entry_ids()),
            "stop_form": StopAllForm(),
        },
    )


def _deployment_context(request, pk):
    # `is_approver` comes from the roles context processor, like on every page.
    deployment = get_deployment_for_user(
        request,
        pk,
        queryset=Deployment.objects.select_related("requested_by", "build", "coalesced_into"),
    )
    last = Deployment.objects.last_deployed()
    return {"deployment": deployment, "on_disk": last is not None and last.pk == deployment.pk}


@require_GET
def deployment_detail(request, pk):
    return render(request, "releases/deployment_detail.html", _deployment_context(request, pk))


@require_GET
def deployment_status(request, pk):
    return render(request, "releases/_deployment.html", _deployment_context(request, pk))


@require_POST
def deployment_rollback(request, pk):
    target = get_deployment_for_user(request, pk, approve=True)
    try:
        deployment = offers.deployment_rollback(
            deployment=target, acting_user=request.user, reason=_required_reason(request)
        )
    except Refused as refusal:
        messages.error(request, refusal.message)
        return redirect("releases:deployment_detail", pk=target.pk)
    messages.success(request, _("Restoring the updates.cfg of deployment #%(pk)s.") % {"pk": pk})
    return redirect("releases:deployment_detail", pk=deployment.pk)


@require_POST
def offers_stop_all(request):
    require_role(request, roles.APPROVERS)
    form = StopAllForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Write why everything must stop being offered."))
        return redirect("releases:deployment_list")
    deployment = offers.offers_stop_all(
        acting_user=request.user, reason=form.cleaned_data["reason"]
    )
    messages.warning(request, _("Nothing is offered any more; updates.cfg is being deployed."))
    return redirect("releases:deployment_detail", pk=deployment.pk)


@require_POST
def drift_resolve(request):
    """After a hand edit: adopt the file on disk, or overwrite it with the database's."""
    require_role(request, roles.APPROVERS)
    choice = request.POST.get("choice")
    if choice == "overwrite":
        deployment = offers.overwrite_drift(acting_user=request.user)
        messages.warning(request, _("The hand edits will be overwritten."))
        return redirect("releases:deployment_detail", pk=deployment.pk)
    if choice == "import":
        text = deploy.read_deployed_file()
        if text is None:
            messages.error(request, _("There is no updates.cfg on disk to import."))
            return redirect("releases:deployment_list")
        try:
            deployment = offers.updates_cfg_import(text=text, acting_user=request.user)
        except updates_cfg.ConfigProblem as exc:
            messages.error(request, render_reason("config_invalid", {"error": str(exc)}))
            return redirect("releases:deployment_list")
        messages.success(request, _("The hand-edited updates.cfg was imported."))
        return redirect("releases:deployment_detail", pk=deployment.pk)
    messages.error(request, _("Choose import or overwrite."))
    return redirect("releases:deployment_list")


# --- USB kit ---------------------------------------------------------------------------------


@require_GET
def build_usb_kit(request, name):
    """The build's USB kit (`usb`): one uncompressed tar of xs-xobuilds/, streamed from the
    published files with its length known up front, so the browser shows progress."""
    build = get_build_for_user(request, name, edit=True)
    try:
        kit = usb.kit_download(build=build, acting_user=request.user)
    except Refused as refusal:
        messages.error(request, refusal.message)
        return redirect("releases:build_detail", name=build.name)
    response = StreamingHttpResponse(usbkit.tar_stream(kit), content_type="application/x-tar")
    response["Content-Length"] = str(usbkit.tar_length(kit))
    response["Content-Disposition"] = f'attachment; filename="{build.name}-usb-kit.tar"'
    response["Cache-Control"] = "no-store"
    # nginx would otherwise spool up to 1 GB of it on its own disk (proxy_buffering).
    response["X-Accel-Buffering"] = "no"
    return response
